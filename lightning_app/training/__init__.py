"""Training around the LightningModule.

Callbacks, calibration, evaluation maths, plots, run directories and provenance, the recipe
sweep, cross-validation (cv, predictions) and the model card.
"""
