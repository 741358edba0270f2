"""Inference without Lightning: load the exported artefacts, run a backend, shape answers.

Everything that happens at inference time lives here, so that the TorchServe handler,
the benchmarks and the monitoring jobs call one piece of code:

* :mod:`.settings` reads the serving environment, once (the handler passes it down),
* :mod:`.artefacts` names the exported files (the export writes them, the engine reads them),
* :mod:`.forward`, :mod:`.backends` and :mod:`.engine` load them and run the forward pass,
* :mod:`.explain` and :mod:`.ood` build heatmaps and OOD scores on that same pass,
* :mod:`.features`, :mod:`.records` and :mod:`.predlog` turn it into prediction-log lines.

Walls: serving an ONNX export needs numpy, Pillow and ONNX Runtime only: the modules a
server imports never import torch at module level. torch (and
:mod:`lightning_app.models.backbones`) is imported inside the paths that need it: the eager
backend (:mod:`.eager`), the second pass of Grad-CAM (:mod:`.gradcam`), the ``Tapped``
module (:mod:`.tapped`) and the export-time writers. Never Lightning, ``data/`` or the
LightningModule. Only :mod:`.settings` reads ``os.environ``.
"""
