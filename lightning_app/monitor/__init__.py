"""Monitoring, read-only: prediction-log readers, drift tests and the drift report.

The reference profile they compare against is written by an export step
(:mod:`lightning_app.export.reference`).

* :mod:`.table` — prediction-log records <-> columns (the reference profile's layout);
* :mod:`.logs` — reads prediction logs: local JSONL or Cloud Logging exports, ``gs://``;
* :mod:`.drift` — the statistical tests and the verdict;
* :mod:`.report` — Markdown report with plots + JSON verdict; :mod:`.cli` the command.

Walls: never imports ``serve/`` or ``export/``; the drift path needs numpy, scipy and
matplotlib only.
"""
