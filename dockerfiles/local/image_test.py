"""``make image-test``: run the four images built by ``make images`` as a user would.

Each image runs with ``buildah run --isolation chroot --network host`` (``podman run``
cannot set rlimits here), as the image's own non-root USER with its ENV:

* serve, with ``PORT`` set: ``/ping`` Healthy, a real Br35H scan classified with the
  version of the archive built in, a bad input answered 4xx with JSON, and on the
  machine's public address inference answers while management and metrics do not;
* serve-lite (LitServe on the torch-free core): the same scan classified with the same
  version, a bad input answered 4xx with JSON, and ``import torch`` fails inside it; its
  start-to-ready time and the image size are printed;
* ui, with ``INFERENCE_URL`` at that server: the page loads and a scan sent through the
  page's API (``/classify``) comes back classified;
* train: ``fit`` of the smoke config with ``AIP_MODEL_DIR``/``AIP_CHECKPOINT_DIR`` set
  writes the exported model and ``brain_mri.mar`` there; the run records the commit the
  image was built from (``GIT_COMMIT``), never ``unknown``; W&B stays offline without a key.

``--build`` runs ``dockerfiles/local/build.sh`` first. Exit code 1 on any failed check.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("IMAGE_CACHE", REPO / ".cache/images"))
BUILDAH = shlex.split(os.environ.get("BUILDAH", "buildah --storage-driver vfs"))
#: a real Br35H tumour scan: the first bundled example of the page
SCAN = sorted((REPO / "lightning_app/ui/examples").glob("tumor-*.jpg"))[0]
FAILURES: list[str] = []


def check(ok: bool, what: str, detail: str = "") -> None:
    """Print one check's result; remember failures."""
    print(f"{'PASS' if ok else 'FAIL'}  {what}{'' if ok else f'  ({detail})'}", flush=True)
    if not ok:
        FAILURES.append(what)


def free_port() -> int:
    """A TCP port free on this machine right now."""
    with socket.socket() as sock:
        sock.bind(("0.0.0.0", 0))
        return int(sock.getsockname()[1])


def public_address() -> str:
    """The machine's first non-loopback IPv4 address (what another host would reach)."""
    out = subprocess.run(["hostname", "-I"], capture_output=True, text=True, check=False).stdout.split()
    addresses = [a for a in out if "." in a and not a.startswith("127.")]
    if not addresses:
        raise SystemExit("image-test: this machine has no non-loopback IPv4 address to test exposure on")
    return addresses[0]


def http(url: str, data: bytes | None = None, timeout: float = 10.0) -> tuple[int, bytes]:
    """(status, body) of a GET, or a POST of ``data`` as application/octet-stream; 0 if refused."""
    headers = {"Content-Type": "application/octet-stream"} if data is not None else {}
    request = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (OSError, TimeoutError):
        return 0, b""


@contextmanager
def container(
    image: str, env: dict[str, str], command: list[str], volumes: list[str] = ()
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``command`` in a fresh working container of ``image``; stop and remove it afterwards."""
    made = subprocess.run(
        [*BUILDAH, "from", "--pull-never", image], capture_output=True, text=True, check=True
    )
    ctr = made.stdout.strip().splitlines()[-1]
    log = (CACHE / f"run-{image.split('/')[-1].replace(':', '-')}.log").open("wb")
    args = [*BUILDAH, "run", "--isolation", "chroot", "--network", "host"]
    for key, value in env.items():
        args += ["--env", f"{key}={value}"]
    for volume in volumes:
        args += ["-v", volume]
    proc = subprocess.Popen(
        [*args, ctr, "--", *command], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
        log.close()
        subprocess.run([*BUILDAH, "rm", ctr], capture_output=True, check=False)


def wait_for(url: str, proc: subprocess.Popen[bytes], timeout: float, data: bytes | None = None) -> int:
    """Poll ``url`` until it answers 200; the last status (0: never answered)."""
    deadline, status = time.monotonic() + timeout, 0
    while time.monotonic() < deadline and proc.poll() is None:
        status, _ = http(url, data, timeout=5)
        if status == 200:
            return status
        time.sleep(1)
    return status


def mar_version(mar: Path) -> str:
    """The model version in a ``.mar``'s manifest."""
    with zipfile.ZipFile(mar) as archive:
        return str(json.loads(archive.read("MAR-INF/MANIFEST.json"))["model"]["modelVersion"])


def test_serve_and_ui() -> None:
    """The serve image on PORT as its user; the ui image against it."""
    port, ui_port = free_port(), free_port()
    mgmt, metrics = free_port(), free_port()
    mar = REPO / (CACHE / "serve.mar").read_text().strip()
    env = {"PORT": str(port), "SERVE_MANAGEMENT_PORT": str(mgmt), "SERVE_METRICS_PORT": str(metrics)}
    # the image's own CMD, as its USER (buildah run applies both)
    with container("brain-mri-serve:local", env, ["python", "-m", "serve"]) as proc:
        local = f"http://127.0.0.1:{port}"
        scan = SCAN.read_bytes()
        status = wait_for(f"{local}/predictions/brain_mri", proc, 180, data=scan)
        check(status == 200, "serve: a real scan is classified", f"status {status}, see {CACHE}/run-*.log")
        if status != 200:
            return
        _, ping = http(f"{local}/ping")
        check(json.loads(ping or b"{}").get("status") == "Healthy", "serve: /ping is Healthy", ping.decode())
        _, body = http(f"{local}/predictions/brain_mri", scan)
        answer = json.loads(body)
        check(
            answer.get("version") == mar_version(mar)
            and {p["label"] for p in answer.get("probabilities", [])} >= {"tumor"},
            f"serve: the answer names the archive's version ({mar_version(mar)}) and the classes",
            body.decode()[:200],
        )
        status, body = http(f"{local}/predictions/brain_mri", b"this is not an image")
        bad_ok = 400 <= status < 500 and body.strip().startswith(b"{")
        check(bad_ok, "serve: a bad input gets a 4xx with a JSON body", f"{status} {body[:100]!r}")
        public = public_address()
        status, _ = http(f"http://{public}:{port}/ping")
        check(status == 200, f"serve: inference answers on the public address {public}", f"status {status}")
        for name, p in (("management", mgmt), ("metrics", metrics)):
            status, _ = http(f"http://{public}:{p}/{'models' if name == 'management' else 'metrics'}")
            check(status == 0, f"serve: {name} is not reachable on {public}", f"status {status}")
        pid = str(_java_pid(proc.pid))
        user = subprocess.run(["ps", "-o", "user=", "-p", pid], capture_output=True, text=True).stdout.strip()
        check(user not in ("", "root"), "serve: TorchServe runs as a non-root user", user)
        test_ui(ui_port, local, mar_version(mar))


def test_serve_lite() -> None:
    """The lean image on PORT as its user: LitServe answers without torch."""
    port, metrics = free_port(), free_port()
    mar = REPO / (CACHE / "serve.mar").read_text().strip()
    env = {"PORT": str(port), "SERVE_METRICS_PORT": str(metrics)}
    started = time.monotonic()
    with container("brain-mri-serve-lite:local", env, ["python", "-m", "serve"]) as proc:
        local = f"http://127.0.0.1:{port}"
        status = wait_for(f"{local}/predictions/brain_mri", proc, 180, data=SCAN.read_bytes())
        ready = time.monotonic() - started
        check(
            status == 200, "serve-lite: a real scan is classified", f"status {status}, see {CACHE}/run-*.log"
        )
        if status != 200:
            return
        print(f"serve-lite: start-to-ready {ready:.1f} s (container start to the first answer)", flush=True)
        _, body = http(f"{local}/predictions/brain_mri", SCAN.read_bytes())
        version = json.loads(body).get("version")
        check(
            version == mar_version(mar),
            "serve-lite: the answer names the archive's version",
            body.decode()[:200],
        )
        status, body = http(f"{local}/predictions/brain_mri", b"this is not an image")
        bad_ok = 400 <= status < 500 and body.strip().startswith(b"{")
        check(bad_ok, "serve-lite: a bad input gets a 4xx with a JSON body", f"{status} {body[:100]!r}")
    with container("brain-mri-serve-lite:local", {}, ["python", "-c", "import torch"]) as proc:
        check(proc.wait(timeout=120) != 0, "serve-lite: torch is not in the image")
    sizes = subprocess.run(
        [*BUILDAH, "images", "--format", "{{.Name}}:{{.Tag}} {{.Size}}"], capture_output=True, text=True
    )
    size = [line for line in sizes.stdout.splitlines() if "brain-mri-serve-lite:local" in line]
    print(f"serve-lite: image size {size[0].split(' ', 1)[1] if size else 'unknown'}", flush=True)


def _java_pid(root: int) -> int:
    """The TorchServe JVM among ``root``'s descendants (the process that serves)."""
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid=,comm="], capture_output=True, text=True).stdout
    children: dict[int, list[tuple[int, str]]] = {}
    for line in out.splitlines():
        pid, ppid, comm = line.split(None, 2)
        children.setdefault(int(ppid), []).append((int(pid), comm))
    todo = [root]
    while todo:
        for pid, comm in children.get(todo.pop(), []):
            if comm.startswith("java"):
                return pid
            todo.append(pid)
    return root


def test_ui(ui_port: int, inference_url: str, version: str) -> None:
    """The page loads and classifies a scan through INFERENCE_URL."""
    env = {"PORT": str(ui_port), "INFERENCE_URL": inference_url, "MANAGEMENT_URL": ""}
    with container("brain-mri-ui:local", env, ["python", "-m", "lightning_app.ui"]) as proc:
        page = f"http://127.0.0.1:{ui_port}/"
        status = wait_for(page, proc, 120)
        _, html = http(page)
        check(status == 200 and b"gradio" in html.lower(), "ui: the page loads", f"status {status}")
        if status != 200:
            return
        from gradio_client import Client, handle_file

        result = Client(page, verbose=False).predict(handle_file(str(SCAN)), api_name="/classify")
        text = json.dumps(result)
        ok = "Prediction: **" in text and version in text
        check(ok, "ui: a scan is classified through INFERENCE_URL (the served version shown)", text[:300])


def test_train(commit: str) -> None:
    """The train image: smoke fit with Vertex's variables writes the model into AIP_MODEL_DIR."""
    job = Path(tempfile.mkdtemp(prefix="image-test-job-", dir=CACHE))
    job.chmod(0o777)
    env = {"AIP_MODEL_DIR": "/job/model", "AIP_CHECKPOINT_DIR": "/job/checkpoints"}
    script = (
        "python -m lightning_app.data prepare --root /tmp/br35h --embedded >/dev/null && "
        "python -m lightning_app.train_entry fit --config configs/smoke.yaml --data.data_dir /tmp/br35h "
        "--trainer.enable_progress_bar false"
    )
    with container("brain-mri-train:local", env, ["bash", "-c", script], [f"{job}:/job"]) as proc:
        code = proc.wait(timeout=900)
    check(code == 0, "train: fit of the smoke config exits 0", f"exit {code}, see {CACHE}/run-*train*.log")
    model = job / "model"
    names = {p.name for p in model.iterdir()} if model.is_dir() else set()
    wanted = {"brain_mri.mar", "state_dict.pt", "model_meta.json", "index_to_name.json", "model.ckpt"}
    what = "train: AIP_MODEL_DIR holds the .mar, the exported model and the checkpoint"
    check(wanted <= names, what, str(names))
    metrics = sorted(job.glob("checkpoints/version_*/metrics.json"))
    recorded = json.loads(metrics[-1].read_text()).get("git_commit") if metrics else None
    check(recorded == commit, f"train: the run records the image's commit {commit[:12]}", f"got {recorded!r}")
    offline = list(job.glob("checkpoints/version_*/wandb/offline-run-*"))
    check(bool(offline), "train: without a W&B key the run logs offline")


def main() -> int:
    """Build (with --build), then run every image check; exit 1 on a failure."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--build", action="store_true", help="run dockerfiles/local/build.sh first")
    parser.add_argument("--only", choices=["serve", "serve-lite", "train"], help="run one part")
    args = parser.parse_args()
    if args.build:
        subprocess.run([str(REPO / "dockerfiles/local/build.sh")], check=True)
    commit = (CACHE / "git-commit").read_text().strip()  # what build.sh passed as GIT_COMMIT
    check(len(commit.split("+")[0]) == 40, "build: the images were given a commit", commit)
    start = time.monotonic()
    if args.only in (None, "serve"):
        test_serve_and_ui()
    if args.only in (None, "serve-lite"):
        test_serve_lite()
    if args.only in (None, "train"):
        test_train(commit)
    print(f"image-test: {len(FAILURES)} failed in {time.monotonic() - start:.0f} s", flush=True)
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
