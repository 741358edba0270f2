"""Checkpoint -> served artefacts -> ``.mar``: the context, the steps and the build that runs them.

``python -m lightning_app.export`` (``make mar``) is :func:`lightning_app.export.cli.main`.
"""
