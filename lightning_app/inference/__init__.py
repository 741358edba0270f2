"""Inference without Lightning: load the exported artefacts, run a backend, shape answers.

Everything that happens at inference time lives here, so that the TorchServe handler,
the benchmarks and the monitoring jobs call one piece of code:

* :mod:`.artefacts` names the exported files (the export writes them, the engine reads them),
* :mod:`.engine` loads them and runs the forward pass (logits + penultimate features).

Walls: this package imports ``torch``, :mod:`lightning_app.transforms` and
:mod:`lightning_app.models.backbones` only; never Lightning, ``data/`` or the LightningModule.
"""
