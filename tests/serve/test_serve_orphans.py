"""No orphans: when the launcher dies, even by SIGKILL, its servers die and free their ports.

Real processes throughout: the watchdog test uses a small process tree (a child that
starts a grandchild); the slow tests SIGKILL a real ``python -m serve`` (with TorchServe's
JVM and Python worker), the ``uv run`` wrapper around it, and the demo supervisor
(TorchServe + the Gradio page).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, free_port
from tests.ui.test_demo import demo_command, processes_mentioning

LAUNCHER = """
import sys, time
from serve.lifeline import spawn
process, line = spawn([sys.executable, "-c", sys.argv[1]])
print(process.pid, flush=True)
time.sleep(600)
"""
# A child that starts a grandchild (like torchserve -> java -> worker) and ignores nothing.
TREE = (
    "import subprocess, sys, time; "
    "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); time.sleep(600)"
)


def accepts(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def wait_until(predicate, timeout: float, what: str) -> float:
    """Poll ``predicate`` until true; return the seconds it took, fail after ``timeout``."""
    start = time.monotonic()
    while not predicate():
        assert time.monotonic() - start < timeout, f"not within {timeout:.0f} s: {what}"
        time.sleep(0.1)
    return time.monotonic() - start


def group_members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(entry.name))
    return members


def test_sigkilled_launcher_takes_the_whole_watched_tree_with_it() -> None:
    launcher = subprocess.Popen(
        [sys.executable, "-c", LAUNCHER, TREE], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    try:
        assert launcher.stdout is not None
        pgid = int(launcher.stdout.readline())
        wait_until(lambda: len(group_members(pgid)) >= 3, 30, "watchdog, child and grandchild running")
        launcher.kill()
        launcher.wait(timeout=10)
        took = wait_until(lambda: not group_members(pgid), 10, "the watched group is gone")
    finally:
        launcher.kill()
    assert took < 10


def test_watchdog_passes_on_the_exit_code_and_gives_usage() -> None:
    read_fd, write_fd = os.pipe()
    try:
        code = subprocess.run(
            [
                sys.executable,
                "-m",
                "serve.lifeline",
                str(read_fd),
                "--",
                sys.executable,
                "-c",
                "raise SystemExit(7)",
            ],
            cwd=REPO,
            pass_fds=(read_fd,),
            timeout=60,
        ).returncode
    finally:
        os.close(read_fd)
        os.close(write_fd)
    assert code == 7
    usage = subprocess.run(
        [sys.executable, "-m", "serve.lifeline", "x"], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert usage.returncode == 2 and "usage" in usage.stderr


FOLLOWER = """
import os, subprocess, sys, time
code = "from serve.lifeline import exit_with_wrapper; import sys, time; "
code += "w = exit_with_wrapper({'SERVE_EXIT_WITH_PARENT': sys.argv[1]}, poll_s=0.1); "
code += "print(w is not None, flush=True); time.sleep(600)"
child = subprocess.Popen([sys.executable, "-c", code, sys.argv[1]], stdout=sys.stdout)
print(child.pid, flush=True)
time.sleep(600)
"""


@pytest.mark.parametrize(("mode", "follows"), [("1", True), ("0", False), ("auto", False)])
def test_a_launcher_follows_its_wrapper_only_when_asked_or_when_it_is_uv(mode: str, follows: bool) -> None:
    """The middle process plays ``uv run``; ``auto`` follows only a parent named uv/uvx."""
    wrapper = subprocess.Popen(
        [sys.executable, "-c", FOLLOWER, mode], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    assert wrapper.stdout is not None
    child = int(wrapper.stdout.readline())
    try:
        assert wrapper.stdout.readline().strip() == str(follows)
        wrapper.kill()
        wrapper.wait(timeout=10)
        if follows:
            wait_until(lambda: not alive(child), 10, "the launcher stops with its wrapper")
        else:
            time.sleep(0.5)
            assert alive(child)
    finally:
        wrapper.kill()
        if alive(child):
            os.kill(child, signal.SIGKILL)


def alive(pid: int) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] != "Z"


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
        wait_until(lambda: "serving brain_mri at" in (tmp_path / "out.log").read_text(), 180, "ready")
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
        wait_until(lambda: "Demo page:" in out.read_text(), 240, "both up")
        workdir = re.search(r"work dir (\S+),", out.read_text())
        assert workdir, out.read_text()
        took = kill_and_check(victim, list(ports.values()), workdir.group(1))
    finally:
        victim.kill()
    assert took < 10


def test_in_process_pieces_of_the_lifeline(capsys: pytest.CaptureFixture[str]) -> None:
    """The parts that can run inside pytest without stopping its process group."""
    from serve.lifeline import Lifeline, _others_in_group, _parent_command, exit_with_wrapper, watchdog

    assert _parent_command(os.getpid()) == Path("/proc/self/comm").read_text().strip()
    assert _parent_command(-1) == ""

    assert watchdog(["3"]) == 2 and "usage" in capsys.readouterr().err
    assert _others_in_group(os.getpgrp()) in (True, False)
    lonely = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"], start_new_session=True)
    try:
        wait_until(lambda: bool(group_members(lonely.pid)), 10, "the child runs")
        assert _others_in_group(lonely.pid)  # seen from outside its group
    finally:
        lonely.kill()
        lonely.wait()
    assert exit_with_wrapper({"SERVE_EXIT_WITH_PARENT": "0"}) is None
    watch = exit_with_wrapper({"SERVE_EXIT_WITH_PARENT": "1"}, poll_s=0.01)
    assert watch is not None
    watch.set()
    read_fd, write_fd = os.pipe()
    os.close(read_fd)
    line = Lifeline(write_fd)
    line.cut()
    line.cut()  # idempotent
    assert line.write_fd == -1


def test_closing_the_pipe_stops_a_group_that_ignores_sigterm() -> None:
    """The watchdog's loop, run here against another group: SIGTERM first, SIGKILL after the grace."""
    from serve import lifeline

    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
    group = subprocess.Popen([sys.executable, "-c", stubborn], start_new_session=True)
    read_fd, write_fd = os.pipe()
    try:
        wait_until(lambda: bool(group_members(group.pid)), 10, "the group runs")
        time.sleep(0.3)  # its SIGTERM handler is installed
        waiter = threading.Thread(target=lifeline.stop_group_when_closed, args=(read_fd, group.pid))
        waiter.start()
        os.close(write_fd)
        start = time.monotonic()
        waiter.join(timeout=lifeline.GRACE_S + 10)
        assert not waiter.is_alive()
        assert group.wait(timeout=5) == -signal.SIGKILL
        assert lifeline.GRACE_S - 0.5 < time.monotonic() - start < lifeline.GRACE_S + 5
    finally:
        group.kill()
        os.close(read_fd)


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
        wait_until(lambda: "serving brain_mri at" in out.read_text(), 180, "ready")
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
