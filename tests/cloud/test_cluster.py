"""Vertex AI's environment -> Lightning, from fake environment dicts.

Vertex AI itself cannot exist here: its variables (``CLUSTER_SPEC``, ``AIP_*``) are dicts
shaped like the documented ones, and the metadata server and Secret Manager are a small
HTTP server on 127.0.0.1 (only the GCP APIs are stand-ins; the code under test is real).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lightning_app.cloud.cluster import (
    Topology,
    VertexEnvironment,
    VertexPaths,
    fetch_secret,
    fit_args,
    gcs_to_local,
    topology_from_env,
)
from lightning_app.errors import ConfigError


def cluster_spec(task: str, index: int, workers: int = 2) -> str:
    return json.dumps(
        {
            "cluster": {
                "workerpool0": ["cmle-training-workerpool0-1a2b-0:2222"],
                "workerpool1": [f"cmle-training-workerpool1-1a2b-{i}:2222" for i in range(workers)],
            },
            "environment": "cloud",
            "task": {"type": task, "index": index, "trial": ""},
            "job": "{}",
        }
    )


def test_primary_replica_is_node_zero_and_hosts_the_rendezvous() -> None:
    topo = topology_from_env({"CLUSTER_SPEC": cluster_spec("workerpool0", 0)})
    assert topo == Topology(0, 3, "cmle-training-workerpool0-1a2b-0", 2222)


def test_workers_follow_the_primary() -> None:
    assert topology_from_env({"CLUSTER_SPEC": cluster_spec("workerpool1", 0)}).node_rank == 1  # type: ignore[union-attr]
    assert topology_from_env({"CLUSTER_SPEC": cluster_spec("workerpool1", 1)}).node_rank == 2  # type: ignore[union-attr]


def test_prebuilt_container_variables_are_the_fallback() -> None:
    env = {"MASTER_ADDR": "10.0.0.2", "MASTER_PORT": "3333", "WORLD_SIZE": "4", "RANK": "3"}
    assert topology_from_env(env) == Topology(3, 4, "10.0.0.2", 3333)
    assert topology_from_env({}) is None


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CLUSTER_SPEC": "{not json"}, "not a Vertex AI cluster spec"),
        ({"CLUSTER_SPEC": json.dumps({"cluster": {}})}, "not a Vertex AI cluster spec"),
        ({"CLUSTER_SPEC": cluster_spec("workerpool3", 0)}, "takes no part in DDP"),
        ({"CLUSTER_SPEC": cluster_spec("workerpool0", 0).replace(":2222", "", 1)}, "expected host:port"),
        ({"MASTER_ADDR": "h", "WORLD_SIZE": "two"}, "must be integers"),
    ],
)
def test_malformed_cluster_descriptions_are_one_line_errors(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        topology_from_env(env)
    assert "\n" not in str(info.value)


def test_two_primaries_are_refused() -> None:
    spec = json.loads(cluster_spec("workerpool0", 0))
    spec["cluster"]["workerpool0"].append("other:2222")
    with pytest.raises(ConfigError, match="exactly 1 replica"):
        topology_from_env({"CLUSTER_SPEC": json.dumps(spec)})


def test_vertex_environment_tells_lightning_its_node_and_rendezvous(monkeypatch: pytest.MonkeyPatch) -> None:
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    # set_global_rank() below sets Lightning's process-wide rank: later tests in this process are rank 0
    monkeypatch.setattr(rank_zero_only, "rank", getattr(rank_zero_only, "rank", 0))
    monkeypatch.setenv("CLUSTER_SPEC", cluster_spec("workerpool1", 1))
    assert VertexEnvironment.detect()
    environment = VertexEnvironment()
    assert (environment.main_address, environment.main_port, environment.node_rank()) == (
        "cmle-training-workerpool0-1a2b-0",
        2222,
        2,
    )
    environment.validate_settings(num_devices=1, num_nodes=3)
    with pytest.raises(ConfigError, match="num_nodes=2 but the Vertex AI job has 3 replicas"):
        environment.validate_settings(num_devices=1, num_nodes=2)
    # Lightning sets ranks per process; the environment keeps them.
    environment.set_world_size(6)
    environment.set_global_rank(5)
    assert (environment.world_size(), environment.global_rank()) == (6, 5)


def test_outside_vertex_the_environment_is_a_single_node(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("CLUSTER_SPEC", "MASTER_ADDR", "WORLD_SIZE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("MASTER_PORT", "4567")
    assert not VertexEnvironment.detect()
    environment = VertexEnvironment()
    assert (environment.node_rank(), environment.main_address, environment.main_port) == (
        0,
        "127.0.0.1",
        4567,
    )


def test_gs_uris_map_to_the_fuse_mount() -> None:
    assert gcs_to_local("gs://bucket/a/b/") == "/gcs/bucket/a/b"
    assert gcs_to_local("gs://bucket/a", mount="/tmp/m/") == "/tmp/m/bucket/a"
    assert gcs_to_local("/already/local") == "/already/local"
    with pytest.raises(ConfigError, match="no bucket"):
        gcs_to_local("gs://")


def test_vertex_directories_and_cli_arguments() -> None:
    env = {
        "AIP_MODEL_DIR": "gs://b/job/model/",
        "AIP_CHECKPOINT_DIR": "gs://b/job/checkpoints/",
        "AIP_TENSORBOARD_LOG_DIR": "gs://b/job/logs/",
        "CLUSTER_SPEC": cluster_spec("workerpool0", 0, workers=1),
    }
    assert VertexPaths.from_env(env) == VertexPaths(
        "/gcs/b/job/model", "/gcs/b/job/checkpoints", "/gcs/b/job/logs"
    )
    assert fit_args(env) == [
        "--trainer.default_root_dir", "/gcs/b/job/checkpoints",
        "--trainer.num_nodes", "2",
        "--trainer.plugins", "lightning_app.cloud.cluster.VertexEnvironment",
    ]  # fmt: skip
    assert fit_args({}) == []
    assert VertexPaths.from_env({}) == VertexPaths(None, None, None)


def test_the_wandb_key_is_read_from_secret_manager(google: dict[str, str]) -> None:
    assert fetch_secret("projects/p/secrets/wandb/versions/latest", google, timeout=5) == "wandb-key-123"


def test_an_unreadable_secret_is_a_one_line_error_without_the_token(google: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="cannot read secret projects/p/secrets/nope") as info:
        fetch_secret("projects/p/secrets/nope/versions/latest", google, timeout=5)
    assert "\n" not in str(info.value)


def test_train_entry_publishes_model_and_reports(trained_run: Path, tmp_path: Path) -> None:
    from lightning_app.train_entry import is_rank_zero, publish

    paths = VertexPaths(str(tmp_path / "model"), None, str(tmp_path / "logs"))
    written = publish(trained_run, paths)
    model = {p.name for p in (tmp_path / "model").iterdir()}
    wanted = {"state_dict.pt", "index_to_name.json", "model_meta.json", "model.ckpt", "metrics.json"}
    assert wanted | {"brain_mri.mar"} <= model
    assert {p.name for p in (tmp_path / "logs").iterdir()} >= {"metrics.json", "confusion_matrix.png"}
    assert len(written) == len(model) + len(list((tmp_path / "logs").iterdir()))
    meta = json.loads((tmp_path / "model/model_meta.json").read_text())
    assert meta["class_names"] == ["no_tumor", "tumor"]
    assert is_rank_zero({})
    assert not is_rank_zero({"LOCAL_RANK": "1"})
    assert not is_rank_zero({"CLUSTER_SPEC": cluster_spec("workerpool1", 0)})


def test_publish_without_a_best_checkpoint_says_so(tmp_path: Path) -> None:
    from lightning_app.errors import UserError
    from lightning_app.train_entry import publish

    (tmp_path / "run/checkpoints").mkdir(parents=True)
    with pytest.raises(UserError, match="no best-"):
        publish(tmp_path / "run", VertexPaths(str(tmp_path / "model"), None, None))


def test_train_entry_fails_in_one_line_when_the_secret_cannot_be_read(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from lightning_app.train_entry import main

    env = {"WANDB_API_KEY_SECRET": "projects/p/secrets/x/versions/1", "GCE_METADATA_HOST": "127.0.0.1:9"}
    with pytest.raises(SystemExit) as info:
        main(["fit", "--config", "configs/smoke.yaml"], env)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: cannot read secret projects/p/secrets/x/versions/1")
    assert "\n" not in err


@pytest.mark.slow
def test_train_entry_on_one_vertex_replica_trains_into_the_job_dirs(
    small_br35h: Path, tmp_path: Path
) -> None:
    """One replica, no CLUSTER_SPEC: AIP_* URIs become /gcs/ paths (a temp dir stands in)."""
    from lightning_app.train_entry import main
    from tests.conftest import REPO

    env = {
        "GCS_FUSE_ROOT": str(tmp_path / "gcs"),
        "AIP_MODEL_DIR": "gs://bucket/job/model/",
        "AIP_CHECKPOINT_DIR": "gs://bucket/job/checkpoints/",
        "AIP_TENSORBOARD_LOG_DIR": "gs://bucket/job/logs/",
    }
    main(
        [
            "fit", "--config", str(REPO / "configs/smoke.yaml"),
            "--data.data_dir", str(small_br35h), "--data.cache_dir", str(tmp_path / "cache"),
            "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
            "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2",
            "--trainer.limit_val_batches", "2", "--trainer.limit_test_batches", "2",
            # the config's own root is overridden by AIP_CHECKPOINT_DIR
            "--trainer.default_root_dir", str(tmp_path / "not-used"),
        ],
        env,
    )  # fmt: skip
    job = tmp_path / "gcs/bucket/job"
    assert not (tmp_path / "not-used").exists()
    assert (job / "checkpoints/version_0/metrics.json").is_file()
    assert {
        "state_dict.pt",
        "index_to_name.json",
        "model_meta.json",
        "model.ckpt",
        "metrics.json",
        "config.yaml",
        "brain_mri.mar",
    } <= {p.name for p in (job / "model").iterdir()}
    assert (job / "logs/confusion_matrix.png").is_file()
