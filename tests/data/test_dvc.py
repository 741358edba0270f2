"""Data versioning: real DVC CLI against a real GCS emulator, in temporary copies of the repo.

Each test works in a fresh git repo holding the project's committed ``.dvc/config``,
``.dvcignore`` and (where said) ``data.dvc``; emulator endpoints go only into that copy's
``.dvc/config.local``. The real repository's ``.dvc`` is never touched.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from dvc_helpers import GcsEmulator, dvc, make_repo, snapshot, use_endpoint, wipe

from lightning_app.data import remote as rm
from lightning_app.data.sources import embedded_br35h
from lightning_app.data.validate import prepare
from lightning_app.data.versioning import folder_hash, main, tracked, verify
from lightning_app.training.runinfo import data_version
from tests.conftest import REPO, copy_subset, free_port


@pytest.fixture(scope="module")
def subset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A prepared root of 10 real scans per class (split.csv + validation.json)."""
    root = copy_subset(tmp_path_factory.mktemp("dvcsrc") / "br35h", 10)
    assert prepare(root, seed=0).ok
    return root


@pytest.fixture(scope="module")
def gcs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GcsEmulator]:
    with GcsEmulator(tmp_path_factory.mktemp("gcs") / "emulator.log") as emulator:
        yield emulator


@pytest.fixture
def pushed(tmp_path: Path, subset: Path, gcs: GcsEmulator, request: pytest.FixtureRequest) -> Path:
    """A repo copy whose data was pushed with ``make data-push``'s command to its own bucket."""
    repo = make_repo(tmp_path / "repo", subset)
    use_endpoint(repo, gcs.endpoint, gcs.create_bucket(request.node.name.lower().replace("_", "-")[:40]))
    assert main(["--repo", str(repo), "push"]) == 0
    return repo


def object_of(repo: Path, rel: str) -> str:
    """The bucket object name DVC stores the file ``data/<rel>`` under."""
    _, listing = folder_hash(repo / "data", repo)
    md5 = listing[rel]
    return f"files/md5/{md5[:2]}/{md5[2:]}"


def bucket_of(repo: Path) -> str:
    remote = rm.read_remote(repo)
    assert remote is not None
    return remote.url.removeprefix("gs://")


@pytest.mark.slow
def test_push_wipe_pull_is_byte_identical(pushed: Path, gcs: GcsEmulator) -> None:
    repo = pushed
    target = tracked(repo)
    assert target is not None
    folder, md5 = target
    assert folder == repo / "data"
    assert folder_hash(folder, repo)[0] == md5  # our hash is DVC's own
    assert data_version(repo / "data" / "br35h") == f"dvc:{md5}"  # what runs log
    files = snapshot(folder)
    assert "br35h/split.csv" in files
    versioned = {k: v for k, v in files.items() if not k.endswith("validation.json")}
    # every versioned file, plus the .dir listing, is an object in the bucket
    assert len(gcs.objects(bucket_of(repo))) == len(versioned) + 1

    wipe(repo)
    assert main(["--repo", str(repo), "fetch", "--source", "remote"]) == 0
    assert snapshot(folder) == versioned  # byte-identical; the report is not versioned
    status = dvc(repo, "status", "data.dvc")
    assert status.returncode == 0
    assert "up to date" in status.stdout


@pytest.mark.slow
def test_an_older_data_dvc_pulls_the_older_data_back(
    pushed: Path, subset: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = pushed
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "add", "data.dvc", ".dvc/config"], cwd=repo, check=True, timeout=30)
    subprocess.run([*git, "commit", "-qm", "v1"], cwd=repo, check=True, timeout=30)
    v1 = snapshot(repo / "data")
    changed = repo / "data" / "br35h" / "yes" / sorted(p.name for p in (subset / "yes").iterdir())[0]
    replacement = sorted((embedded_br35h() / "yes").iterdir())[-1]  # another real scan
    changed.chmod(0o644)
    changed.write_bytes(replacement.read_bytes())
    assert main(["--repo", str(repo), "push"]) == 0
    v2_md5 = tracked(repo)
    subprocess.run([*git, "commit", "-qam", "v2"], cwd=repo, check=True, timeout=30)
    assert v2_md5 is not None
    assert data_version(repo / "data" / "br35h") == f"dvc:{v2_md5[1]}"

    subprocess.run([*git, "checkout", "-q", "HEAD~1", "--", "data.dvc"], cwd=repo, check=True, timeout=30)
    assert main(["--repo", str(repo), "fetch"]) == 0  # the v2 folder is replaced by v1
    assert snapshot(repo / "data") == v1
    wipe(repo)
    assert main(["--repo", str(repo), "fetch", "--source", "remote"]) == 0
    assert changed.read_bytes() == v1[changed.relative_to(repo / "data").as_posix()]

    subprocess.run([*git, "checkout", "-q", "HEAD", "--", "data.dvc"], cwd=repo, check=True, timeout=30)
    changed.write_bytes(b"an edit nobody pushed")  # local work is never overwritten
    capsys.readouterr()
    assert main(["--repo", str(repo), "fetch"]) == 0
    assert "changes not saved in DVC, kept as is" in capsys.readouterr().err
    assert main(["--repo", str(repo), "fetch", "--source", "remote"]) == 1
    assert changed.read_bytes() == b"an edit nobody pushed"


@pytest.mark.slow
def test_a_corrupted_remote_object_fails_the_pull_loudly(
    pushed: Path, gcs: GcsEmulator, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = pushed
    victim = sorted(f for f in snapshot(repo / "data") if f.startswith("br35h/no/"))[0]
    name = object_of(repo, victim)
    bucket = bucket_of(repo)
    gcs.overwrite(bucket, name, b"\xff\xd8 not the scan that was pushed")
    assert gcs.read(bucket, name).startswith(b"\xff\xd8 not")
    wipe(repo)
    capsys.readouterr()
    for source in ("auto", "remote"):  # never a silent fallback once the remote was used
        assert main(["--repo", str(repo), "fetch", "--source", source]) == 1
        err = capsys.readouterr().err
        assert "corrupted" in err
        assert victim in err
        assert not (repo / "data").exists()  # no half-checked-out folder to train on
    assert dvc(repo, "pull").returncode != 0  # plain DVC refuses too (verify = true)


@pytest.mark.slow
def test_a_corrupted_cache_is_never_checked_out_silently(
    pushed: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = pushed
    good = {k: v for k, v in snapshot(repo / "data").items() if not k.endswith("validation.json")}
    rel = sorted(f for f in good if f.startswith("br35h/yes/"))[0]
    cached = repo / ".dvc" / "cache" / object_of(repo, rel)

    def rot() -> None:
        cached.chmod(0o644)
        cached.write_bytes(b"bit rot")
        shutil.rmtree(repo / "data")

    rot()  # make data: DVC re-hashes the damaged cache object and downloads it again
    assert main(["--repo", str(repo), "fetch"]) == 0
    assert snapshot(repo / "data") == good
    assert cached.read_bytes() == good[rel]

    rot()  # a plain offline `dvc checkout` copies the damaged object: verify reports it
    dvc(repo, "checkout")
    assert (repo / "data" / rel).read_bytes() == b"bit rot"
    capsys.readouterr()
    assert main(["--repo", str(repo), "verify"]) == 1
    assert f"differing: data/{rel}" in capsys.readouterr().err
    assert main(["--repo", str(repo), "fetch"]) == 1  # DVC trusts its own checkout; we do not
    err = capsys.readouterr().err
    assert f"differing: data/{rel}" in err
    assert "corrupted DVC cache" in err
    wipe(repo)  # what the message tells the user to do
    assert main(["--repo", str(repo), "fetch"]) == 0
    assert snapshot(repo / "data") == good


def test_a_fresh_clone_with_the_placeholder_remote_never_calls_google(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = make_repo(tmp_path / "clone", data_dvc=True)
    assert main(["--repo", str(repo), "fetch"]) == 0
    out = capsys.readouterr().out
    assert "placeholder gs://brain-mri-data" in out
    assert "using the local/embedded source" in out
    assert main(["--repo", str(repo), "fetch", "--source", "remote"]) == 1
    assert "SOURCE=remote but the remote is the repository's placeholder" in capsys.readouterr().err
    assert main(["--repo", str(repo), "push"]) == 1
    assert "cannot push" in capsys.readouterr().err
    assert main(["--repo", str(repo), "fetch", "--source", "embedded"]) == 0
    copy_subset(repo / "data" / "br35h", 1)  # someone's own data/, not what data.dvc names
    assert main(["--repo", str(repo), "fetch"]) == 0
    assert "data/ differs from data.dvc" in capsys.readouterr().out
    assert len(list((repo / "data" / "br35h").rglob("*.jpg"))) == 2  # left alone


def test_a_silent_endpoint_is_given_up_within_the_probe_timeout(tmp_path: Path) -> None:
    """A listening socket that never answers stands in for a black-holed remote."""
    repo = make_repo(tmp_path / "clone", data_dvc=True)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        use_endpoint(repo, f"http://127.0.0.1:{silent.getsockname()[1]}", "bucket")
        env = {**os.environ, "DVC_PROBE_TIMEOUT": "1"}
        cli = [sys.executable, "-m", "lightning_app.data.versioning", "--repo", str(repo), "fetch"]
        auto = subprocess.run(cli, capture_output=True, text=True, env=env, timeout=60)
        strict = subprocess.run(
            [*cli, "--source", "remote"], capture_output=True, text=True, env=env, timeout=60
        )
    assert auto.returncode == 0
    assert "not reachable within 1 s" in auto.stdout
    assert strict.returncode == 1
    assert "error: SOURCE=remote but remote endpoint" in strict.stderr
    assert "Traceback" not in auto.stderr + strict.stderr


@pytest.mark.slow
def test_make_data_with_an_unreachable_remote_builds_exactly_the_committed_version(tmp_path: Path) -> None:
    """Fresh clone + refused endpoint: ``make data`` explains, falls back, lands on data.dvc."""
    repo = make_repo(tmp_path / "clone", data_dvc=True)
    use_endpoint(repo, f"http://127.0.0.1:{free_port()}", "bucket")  # nothing listens there
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    make = ["make", "-o", "env", "data", "RUN=env"]  # the venv of this test run, not a new one
    result = subprocess.run(make, cwd=repo, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "not reachable" in result.stdout
    assert "using the local/embedded source" in result.stdout
    assert verify(repo) == []  # the committed data.dvc describes what the fallback builds
    assert (repo / "data" / "br35h" / "validation.json").is_file()
    strict = subprocess.run(
        [*make, "SOURCE=remote"], cwd=repo, capture_output=True, text=True, env=env, timeout=300
    )
    assert strict.returncode == 0  # data/ already is the named version: nothing to pull
    assert "matches data.dvc" in strict.stdout


def test_other_remote_kinds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gcs: GcsEmulator) -> None:
    assert "does not exist" in str(rm.problem(rm.Remote("s", str(tmp_path / "missing"))))
    assert rm.problem(rm.Remote("s", str(tmp_path))) is None
    assert rm.problem(rm.Remote("s", "s3://bucket/path")) is None  # left to DVC
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs.endpoint.removeprefix("http://"))
    placeholder = rm.Remote("s", rm.PLACEHOLDER_URL)
    assert placeholder.endpoint == gcs.endpoint
    assert "HTTP 404" in str(rm.problem(placeholder, timeout=5))  # no such bucket in the emulator
    gcs.create_bucket("brain-mri-data")
    assert rm.problem(placeholder, timeout=5) is None


def test_the_repository_data_dvc_tracks_the_data_folder() -> None:
    target = tracked(REPO)
    assert target is not None
    assert target[0] == REPO / "data"
    assert "endpointurl" not in (REPO / ".dvc" / "config").read_text()
