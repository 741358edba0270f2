"""Training around the LightningModule.

Callbacks, calibration, evaluation maths, plots, run directories and provenance, the recipe
sweep and the model card.
"""
