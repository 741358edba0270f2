"""No orphans: when the launcher dies, even by SIGKILL, its servers die and free their ports.

Real processes: the tests SIGKILL a real ``python -m serve`` (with TorchServe's JVM and
Python worker), the ``uv run`` wrapper around it, the demo supervisor (TorchServe + the
Gradio page) and the JVM under the launcher. The watchdog itself, on a small process tree,
is tested in ``test_lifeline.py``.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, free_port
from tests.serve.test_lifeline import wait_until
from tests.ui.test_demo import demo_command, processes_mentioning


def accepts(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def serve_env(mar: Path, workdir: Path) -> tuple[dict[str, str], int]:
    port = free_port()
    env = {
        **os.environ,
        "SERVE_MAR": str(mar),
        "PORT": str(port),
        "SERVE_MANAGEMENT_PORT": str(free_port()),
        "SERVE_METRICS_PORT": str(free_port()),
        "SERVE_WORKDIR": str(workdir),
    }
    return env, port


def wait_ready(launcher: subprocess.Popen[bytes], out: Path, line: str, timeout: float) -> None:
    """Until ``line`` is in ``out``; a launcher that exits first, or a timeout, fails with the log's end."""

    def printed() -> bool:
        text = out.read_text()
        assert launcher.poll() is None, f"the launcher exited ({launcher.returncode}) first: {text[-3000:]}"
        return line in text

    try:
        wait_until(printed, timeout, f"{line!r} printed")
    except AssertionError as failed:
        raise AssertionError(f"{failed}; its output ends: {out.read_text()[-3000:]}") from None


def kill_and_check(victim: subprocess.Popen[bytes], ports: list[int], marker: str) -> float:
    """SIGKILL ``victim``; every port must be free and no process left within 10 s."""
    assert processes_mentioning(marker), "the servers were running"
    victim.kill()
    victim.wait(timeout=10)
    took = wait_until(
        lambda: not any(accepts(p) for p in ports) and not processes_mentioning(marker),
        10,
        f"ports {ports} free and no process mentioning {marker}",
    )
    return took


@pytest.mark.slow
@pytest.mark.parametrize("wrapper", ["python", "uv run"])
def test_sigkill_of_the_launcher_frees_the_port_within_10_s(
    four_class_mar: Path, tmp_path: Path, wrapper: str
) -> None:
    """``python -m serve`` (or ``uv run python -m serve``, as ``make serve`` runs it) SIGKILLed when ready."""
    env, port = serve_env(four_class_mar, tmp_path)
    if wrapper == "uv run":
        uv = shutil.which("uv")
        if uv is None:
            pytest.skip("uv is not on PATH")
        cmd = [uv, "run", "--frozen", "--no-sync", "python", "-m", "serve"]
    else:
        cmd = [sys.executable, "-m", "serve"]
    log = (tmp_path / "out.log").open("w")
    victim = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_ready(victim, tmp_path / "out.log", "serving brain_mri at", 180)
        assert accepts(port)
        took = kill_and_check(victim, [port], str(tmp_path))
    finally:
        victim.kill()
        log.close()
        for pid in processes_mentioning(str(tmp_path)):  # only if the test failed
            os.kill(pid, signal.SIGKILL)
    assert took < 10


@pytest.mark.slow
def test_sigkill_of_the_demo_supervisor_stops_torchserve_and_the_page(mar_file: Path, tmp_path: Path) -> None:
    ports = {name: free_port() for name in ("inference-port", "management-port", "metrics-port", "ui-port")}
    out = tmp_path / "demo.log"
    with out.open("w") as log:
        victim = subprocess.Popen(
            demo_command(mar_file, ports), cwd=REPO, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        wait_ready(victim, out, "Demo page:", 240)
        workdir = re.search(r"work dir (\S+),", out.read_text())
        assert workdir, out.read_text()
        took = kill_and_check(victim, list(ports.values()), workdir.group(1))
    finally:
        victim.kill()
    assert took < 10


@pytest.mark.slow
def test_a_killed_jvm_ends_the_launcher_non_zero_within_5_s_with_nothing_left(
    four_class_mar: Path, tmp_path: Path
) -> None:
    """The JVM SIGKILLed under ``python -m serve``: exit non-zero (Cloud Run restarts the instance)."""
    env, port = serve_env(four_class_mar, tmp_path)
    out = tmp_path / "out.log"
    with out.open("w") as log:
        launcher = subprocess.Popen(
            [sys.executable, "-m", "serve"], cwd=REPO, env=env, stdout=log, stderr=log
        )
    try:
        wait_ready(launcher, out, "serving brain_mri at", 180)
        (jvm,) = [
            p for p in processes_mentioning(str(tmp_path)) if "org.pytorch.serve.ModelServer" in cmdline(p)
        ]
        os.kill(jvm, signal.SIGKILL)
        took = wait_until(lambda: launcher.poll() is not None, 5, "the launcher exits")
        wait_until(lambda: not accepts(port) and not processes_mentioning(str(tmp_path)), 5, "nothing left")
    finally:
        launcher.kill()
        for pid in processes_mentioning(str(tmp_path)):  # only if the test failed
            os.kill(pid, signal.SIGKILL)
    assert launcher.returncode != 0
    assert "error: TorchServe stopped unexpectedly" in out.read_text()
    assert took < 5


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""
