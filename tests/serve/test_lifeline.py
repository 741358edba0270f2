"""The watchdog (:mod:`serve.lifeline`): a launcher's death, even by SIGKILL, takes its servers with it.

Real processes throughout: a small process tree (a child that starts a grandchild, like
torchserve -> java -> worker), real pipes and process groups. Killing real servers (a
SIGKILLed ``python -m serve``, ``uv run`` wrapper, demo supervisor or JVM) is in
``test_serve_orphans.py``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import REPO

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
