"""The Gradio demo page: a pure HTTP client of TorchServe (imports no torch, no model code).

``python -m lightning_app.ui`` starts it; configuration comes from environment variables
only (see :mod:`lightning_app.ui.settings`).
"""
