"""Google Cloud: Vertex AI jobs, the cluster environment, GCS and the deploys.

``settings`` reads the shared cloud variables once (``CloudSettings.from_env``); ``gcs`` is
the one ``gs://`` door; ``deploy_model`` puts a ``.mar`` on Cloud Run and
``deploy_monitoring`` the log metrics, alerts and the drift job on Cloud Monitoring.
The model registry: ``registry`` (versions, atomic aliases), ``register``, ``promote`` (with
``gates``, ``golden``, ``canary``), ``rollout`` (the Cloud Run canary through ``cloud_run``)
and ``wandb_view`` (the registry's W&B view).
"""
