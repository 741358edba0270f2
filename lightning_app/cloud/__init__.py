"""Google Cloud: Vertex AI jobs, the cluster environment, GCS and the deploys.

``settings`` reads the shared cloud variables once (``CloudSettings.from_env``); ``gcs`` is
the one ``gs://`` door; ``deploy_model`` puts a ``.mar`` on Cloud Run and
``deploy_monitoring`` the log metrics, alerts and the drift job on Cloud Monitoring.
"""
