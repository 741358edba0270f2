"""TorchServe packaging of the classifier: handler, configuration, launcher and load test.

``python -m serve`` (``make serve``) starts TorchServe in the foreground with
``model_store/brain_mri.mar``; :func:`serve.launcher.start_torchserve` does the same for
tests and benchmarks and returns a handle.
"""
