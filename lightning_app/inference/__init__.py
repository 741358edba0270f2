"""Inference without Lightning: load the exported artefacts, run a backend, shape answers.

Everything that happens at inference time lives here, so that the TorchServe handler,
the benchmarks and the monitoring jobs call one piece of code:

* :mod:`.settings` reads the serving environment, once (the handler passes it down),
* :mod:`.artefacts` names the exported files (the export writes them, the engine reads them),
* :mod:`.forward`, :mod:`.backends` and :mod:`.engine` load them and run the forward pass,
* :mod:`.explain` and :mod:`.ood` build heatmaps and OOD scores on that same pass,
* :mod:`.features`, :mod:`.records` and :mod:`.predlog` turn it into prediction-log lines.

Walls: this package imports ``torch``, :mod:`lightning_app.transforms` and
:mod:`lightning_app.models.backbones` only; never Lightning, ``data/`` or the LightningModule.
Only :mod:`.settings` reads ``os.environ``.
"""
