"""Vertex AI -> Lightning: the custom job's cluster, its storage paths and its W&B key.

What Vertex AI gives a custom container (https://cloud.google.com/vertex-ai/docs/training/
distributed-training and the ``CustomJobSpec.baseOutputDirectory`` reference):

* ``CLUSTER_SPEC`` on every replica of a multi-replica job, JSON such as
  ``{"cluster": {"workerpool0": ["host-0:2222"], "workerpool1": ["host-1:2222", ...]},
  "task": {"type": "workerpool1", "index": 0}}``. ``workerpool0`` holds the single primary
  replica, ``workerpool1`` the workers (``workerpool2``/``3`` are parameter servers and
  evaluators, which DDP does not use).
* ``MASTER_ADDR``, ``MASTER_PORT``, ``WORLD_SIZE`` (replicas) and ``RANK`` (replica index)
  in Vertex's prebuilt PyTorch containers: the fallback when ``CLUSTER_SPEC`` is absent.
* ``AIP_MODEL_DIR``, ``AIP_CHECKPOINT_DIR``, ``AIP_TENSORBOARD_LOG_DIR`` (``gs://`` URIs)
  when the job has a ``baseOutputDirectory``; Cloud Storage FUSE mounts every bucket
  under ``/gcs/``, so ``gs://b/p`` is the local path ``/gcs/b/p``.

One replica is one Lightning *node*: Lightning starts one process per device on each
node, and :class:`VertexEnvironment` tells it which node it is and where rank 0 listens.
"""

from __future__ import annotations

import base64
import json
import os
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass

from lightning.fabric.plugins.environments.lightning import LightningEnvironment

from lightning_app.errors import ConfigError

#: Where Vertex AI mounts Cloud Storage (``GCS_FUSE_ROOT`` overrides it for local runs).
GCS_MOUNT = "/gcs"
POOLS = ("workerpool0", "workerpool1")


def gcs_to_local(uri: str, mount: str | None = None) -> str:
    """``gs://bucket/path`` -> ``/gcs/bucket/path`` (the FUSE mount); other paths unchanged."""
    if not uri.startswith("gs://"):
        return uri
    rest = uri[len("gs://") :].strip("/")
    if not rest:
        raise ConfigError(f"not a Cloud Storage path (no bucket): {uri!r}")
    root = mount or os.environ.get("GCS_FUSE_ROOT", GCS_MOUNT)
    return f"{root.rstrip('/')}/{rest}"


@dataclass(frozen=True)
class Topology:
    """A replica's place in the job: node rank, node count and rank 0's address."""

    node_rank: int
    num_nodes: int
    main_address: str
    main_port: int


def _host_port(entry: str) -> tuple[str, int]:
    host, _, port = entry.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"CLUSTER_SPEC: expected host:port, got {entry!r}")
    return host, int(port)


def topology_from_env(env: Mapping[str, str]) -> Topology | None:
    """Read ``CLUSTER_SPEC`` (else ``MASTER_ADDR``/``RANK``/``WORLD_SIZE``); ``None`` on one machine."""
    raw = env.get("CLUSTER_SPEC")
    if raw:
        try:
            spec = json.loads(raw)
            cluster, task = spec["cluster"], spec["task"]
            primary = list(cluster["workerpool0"])
            workers = list(cluster.get("workerpool1") or [])
            kind, index = str(task["type"]), int(task.get("index", 0))
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"CLUSTER_SPEC is not a Vertex AI cluster spec: {exc}") from None
        if kind not in POOLS:
            raise ConfigError(
                f"CLUSTER_SPEC: task type {kind!r} takes no part in DDP (only {', '.join(POOLS)})"
            )
        if len(primary) != 1:
            raise ConfigError(f"CLUSTER_SPEC: workerpool0 must hold exactly 1 replica, got {len(primary)}")
        host, port = _host_port(primary[0])
        node_rank = 0 if kind == "workerpool0" else 1 + index
        return Topology(node_rank, 1 + len(workers), host, port)
    if "MASTER_ADDR" in env and "WORLD_SIZE" in env:
        try:
            return Topology(
                int(env.get("RANK", "0")),
                int(env["WORLD_SIZE"]),
                env["MASTER_ADDR"],
                int(env.get("MASTER_PORT", "2222")),
            )
        except ValueError as exc:
            raise ConfigError(f"MASTER_PORT/RANK/WORLD_SIZE must be integers: {exc}") from None
    return None


class VertexEnvironment(LightningEnvironment):
    """Lightning's cluster environment for the worker pools of a Vertex AI custom job.

    Lightning still launches one process per device on each replica (like its default
    environment); node rank, node count and the rendezvous address come from Vertex.
    Use it with ``--trainer.plugins lightning_app.cloud.cluster.VertexEnvironment``
    (:mod:`lightning_app.train_entry` adds it whenever Vertex describes a cluster).
    """

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        super().__init__()
        topology = topology_from_env(os.environ if env is None else env)
        self.topology = topology or Topology(0, 1, "127.0.0.1", -1)

    @property
    def main_address(self) -> str:
        """Rank 0's host: the primary replica."""
        return self.topology.main_address

    @property
    def main_port(self) -> int:
        """Rank 0's port (the one Vertex gives the primary replica)."""
        return self.topology.main_port if self.topology.main_port > 0 else super().main_port

    @staticmethod
    def detect() -> bool:
        """Whether this process runs inside a Vertex AI multi-replica job."""
        return "CLUSTER_SPEC" in os.environ

    def node_rank(self) -> int:
        """Return the node index: 0 for the primary replica, 1 + index for workers."""
        return self.topology.node_rank

    def validate_settings(self, num_devices: int, num_nodes: int) -> None:
        """Refuse a ``trainer.num_nodes`` that disagrees with the job's replica count."""
        if num_nodes != self.topology.num_nodes:
            raise ConfigError(
                f"trainer.num_nodes={num_nodes} but the Vertex AI job has {self.topology.num_nodes} replicas"
            )


@dataclass(frozen=True)
class VertexPaths:
    """Local (FUSE) paths of the job's model, checkpoint and log directories (or ``None``)."""

    model_dir: str | None
    checkpoint_dir: str | None
    log_dir: str | None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> VertexPaths:
        """Map ``AIP_MODEL_DIR``, ``AIP_CHECKPOINT_DIR``, ``AIP_TENSORBOARD_LOG_DIR``."""

        def local(key: str) -> str | None:
            value = env.get(key, "").strip()
            return gcs_to_local(value, env.get("GCS_FUSE_ROOT")) if value else None

        return cls(local("AIP_MODEL_DIR"), local("AIP_CHECKPOINT_DIR"), local("AIP_TENSORBOARD_LOG_DIR"))


def fit_args(env: Mapping[str, str]) -> list[str]:
    """LightningCLI arguments that point a run at Vertex's directories and cluster.

    They are appended after the user's arguments, so they win over the config file.
    """
    args: list[str] = []
    paths = VertexPaths.from_env(env)
    if paths.checkpoint_dir:
        args += ["--trainer.default_root_dir", paths.checkpoint_dir]
    topology = topology_from_env(env)
    if topology:
        args += ["--trainer.num_nodes", str(topology.num_nodes)]
        args += ["--trainer.plugins", "lightning_app.cloud.cluster.VertexEnvironment"]
    return args


def fetch_secret(name: str, env: Mapping[str, str], timeout: float = 10.0) -> str:
    """Read a Secret Manager secret version with the job's service account.

    ``name`` is ``projects/<p>/secrets/<s>/versions/<v>``. The access token comes from
    the metadata server (``GCE_METADATA_HOST``, as google-auth reads it), the secret
    from ``SECRET_MANAGER_ENDPOINT`` [https://secretmanager.googleapis.com].
    """
    metadata = env.get("GCE_METADATA_HOST", "metadata.google.internal")
    endpoint = env.get("SECRET_MANAGER_ENDPOINT", "https://secretmanager.googleapis.com").rstrip("/")
    token_url = f"http://{metadata}/computeMetadata/v1/instance/service-accounts/default/token"
    try:
        req = urllib.request.Request(token_url, headers={"Metadata-Flavor": "Google"})
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            token = json.loads(resp.read())["access_token"]
        req = urllib.request.Request(
            f"{endpoint}/v1/{name}:access", headers={"Authorization": f"Bearer {token}"}
        )
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            payload = json.loads(resp.read())["payload"]["data"]
        return base64.b64decode(payload).decode().strip()
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(f"cannot read secret {name}: {type(exc).__name__}: {exc}") from None
