"""Monitoring: the reference profile, prediction-log readers, drift tests and the drift report.

* :mod:`.reference` — the export step writing the PCA basis of the prediction log's
  embedding and the reference profile (train and val splits) into the ``.mar``;
* :mod:`.table` — prediction-log records <-> columns (the reference profile's layout);
* :mod:`.logs` — reads prediction logs: local JSONL or Cloud Logging exports, ``gs://``;
* :mod:`.drift` — the statistical tests and the verdict;
* :mod:`.report` — Markdown report with plots + JSON verdict; :mod:`.cli` the command.

Walls: never imports ``serve/``; the drift path needs numpy, scipy and matplotlib only
(the export step, :mod:`.reference`, also torch and the inference package).
"""
