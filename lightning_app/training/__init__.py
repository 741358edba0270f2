"""Training around the model: calibration, evaluation, cross-validation, run reports."""
