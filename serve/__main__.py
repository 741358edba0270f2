"""``python -m serve`` (``make serve``): TorchServe or LitServe in the foreground, model loaded.

Environment (defaults in brackets): ``SERVE_RUNTIME`` [torchserve; or litserve],
``SERVE_MAR`` [model_store/brain_mri.mar], ``PORT`` [8080], ``SERVE_HOST`` [127.0.0.1;
0.0.0.0 on Cloud Run], ``SERVE_MANAGEMENT_PORT`` [8081; TorchServe only],
``SERVE_METRICS_PORT`` [8082], ``SERVE_WORKDIR`` [a new temp dir; logs go there],
``SERVE_START_TIMEOUT`` [120 s].
"""

import sys

from serve.cli import main

sys.exit(main())
