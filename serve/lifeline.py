"""No orphans: servers die with the process that started them, even when it is SIGKILLed.

``torchserve --start`` runs a Python script that starts a JVM that starts Python workers;
none of them notices when the launcher above them dies. Two mechanisms close the gap:

* :func:`spawn` starts a command under a small watchdog (``python -m serve.lifeline FD --
  CMD...``) in a new process group. The watchdog holds the read end of a pipe whose only
  write end stays in the launcher. The kernel closes that end when the launcher dies, for
  any reason (SIGKILL and the OOM killer included); the watchdog reads EOF and stops the
  whole group: SIGTERM (TorchServe's JVM then stops its workers), SIGKILL after
  ``GRACE_S`` seconds.
* :func:`exit_with_wrapper` makes the launcher itself follow a wrapper such as ``uv run``:
  when the parent it was started by goes away, the launcher gets SIGTERM and stops cleanly.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

#: Seconds between SIGTERM and SIGKILL once the launcher is gone.
GRACE_S = 5.0
#: Parent commands that are only wrappers: the launcher exits when they do.
WRAPPERS = frozenset({"uv", "uvx"})


class Lifeline:
    """The launcher's end of the pipe; dropping it (or dying) stops the watched group."""

    def __init__(self, write_fd: int) -> None:
        self.write_fd = write_fd

    def cut(self) -> None:
        """Close the write end now: the watchdog stops its group."""
        if self.write_fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.write_fd)
            self.write_fd = -1


def spawn(
    cmd: Sequence[str],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    stdout: IO[Any] | int | None = None,
    stderr: IO[Any] | int | None = None,
) -> tuple[subprocess.Popen[bytes], Lifeline]:
    """Start ``cmd`` under a watchdog in a new process group led by the watchdog.

    ``os.killpg(process.pid, ...)`` reaches the watchdog, ``cmd`` and everything ``cmd``
    starts. The watchdog exits with ``cmd``'s exit code. Keep the returned :class:`Lifeline`
    referenced for as long as the group should live.
    """
    read_fd, write_fd = os.pipe()  # both non-inheritable: only the watchdog gets read_fd
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "serve.lifeline", str(read_fd), "--", *cmd],
            cwd=cwd,
            env=dict(env) if env is not None else None,
            stdout=stdout,
            stderr=stderr,
            pass_fds=(read_fd,),
            start_new_session=True,
        )
    except BaseException:
        os.close(write_fd)
        raise
    finally:
        os.close(read_fd)
    return process, Lifeline(write_fd)


def group_alive(pgid: int) -> bool:
    """Whether any process of group ``pgid`` still exists."""
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def stop_group_when_closed(read_fd: int, pgid: int) -> None:
    """Block until the launcher's end of the pipe closes, then stop process group ``pgid``."""
    while True:
        try:
            if not os.read(read_fd, 1024):
                break
        except InterruptedError:
            continue
        except OSError:
            break
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + GRACE_S
    while time.monotonic() < deadline and _others_in_group(pgid):
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)  # in the watchdog: itself too


def _others_in_group(pgid: int) -> bool:
    """Whether a live process other than this one is in group ``pgid`` (from /proc)."""
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def watchdog(argv: Sequence[str]) -> int:
    """``FD -- CMD...``: run CMD; stop the process group when FD reads EOF; exit with CMD's code."""
    if len(argv) < 3 or argv[1] != "--":
        print("usage: python -m serve.lifeline FD -- CMD...", file=sys.stderr)
        return 2
    read_fd = int(argv[0])
    if os.getpgrp() != os.getpid():
        os.setpgid(0, 0)  # stop only our own group, whoever started us
    # The group gets SIGTERM from TorchServe.stop() and from _stop_group_when_closed: the
    # watchdog outlives it, so that it can still escalate and report CMD's exit code.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    child = subprocess.Popen(
        list(argv[2:]),
        preexec_fn=_default_signals,  # SIG_IGN would survive exec: CMD gets the defaults back
    )
    threading.Thread(target=stop_group_when_closed, args=(read_fd, os.getpgrp()), daemon=True).start()
    code = child.wait()
    return 128 - code if code < 0 else code


def _default_signals() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _parent_command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def exit_with_wrapper(env: Mapping[str, str], *, poll_s: float = 0.5) -> threading.Event | None:
    """SIGTERM this process when the wrapper that started it (``uv run``) goes away.

    ``SERVE_EXIT_WITH_PARENT``: ``auto`` [default] follows the parent only when it is a
    wrapper in :data:`WRAPPERS` (so ``nohup python -m serve &`` keeps running after its
    shell exits); ``1`` always follows it; ``0`` never. Returns an event that ends the
    watch when set, or ``None`` when the parent is not followed.
    """
    mode = env.get("SERVE_EXIT_WITH_PARENT", "auto").strip().lower()
    parent = os.getppid()
    follow = mode in ("1", "true", "yes") or (mode == "auto" and _parent_command(parent) in WRAPPERS)
    if not follow or parent == 1:
        return None
    done = threading.Event()

    def watch() -> None:
        while not done.wait(poll_s):
            if os.getppid() != parent:
                os.kill(os.getpid(), signal.SIGTERM)
                return

    threading.Thread(target=watch, name="exit-with-wrapper", daemon=True).start()
    return done


if __name__ == "__main__":
    sys.exit(watchdog(sys.argv[1:]))
