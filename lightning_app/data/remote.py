"""The DVC remote of ``data.dvc``: which one is configured, and can it be used right now.

"Usable" is judged cheaply and with a short timeout (``DVC_PROBE_TIMEOUT`` seconds, default 5)
before DVC itself is started, so that ``make data`` never waits on an unreachable remote:

* no default remote, or the committed placeholder ``gs://brain-mri-data`` with no endpoint
  override -> not configured;
* ``gs://`` with an ``endpointurl`` (an emulator or a private endpoint, from
  ``.dvc/config.local`` or ``STORAGE_EMULATOR_HOST``) -> the bucket must answer
  ``GET <endpoint>/storage/v1/b/<bucket>`` in time;
* ``gs://`` on Google -> credentials must exist (``allow_anonymous_login``, the remote's
  ``credentialpath``, ``GOOGLE_APPLICATION_CREDENTIALS`` or gcloud's application-default
  credentials) and ``storage.googleapis.com:443`` must accept a connection in time;
* a local-path remote must be an existing folder; other schemes are left to DVC.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit

PLACEHOLDER_URL = "gs://brain-mri-data"
REMOTE_NAME = "storage"
GOOGLE_STORAGE = ("storage.googleapis.com", 443)
BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{1,61}[a-z0-9](/[A-Za-z0-9._/-]+)?$")


def probe_timeout() -> float:
    """Seconds a reachability check may take (``DVC_PROBE_TIMEOUT``, default 5)."""
    return float(os.environ.get("DVC_PROBE_TIMEOUT", "5"))


def dvc_env() -> dict[str, str]:
    """Return the environment DVC runs in: gcsfs's bucket-type probe off (it hangs), no analytics."""
    env = dict(os.environ)
    env.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
    env.setdefault("DVC_NO_ANALYTICS", "1")
    return env


def run_dvc(args: list[str], repo: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    """Run the DVC CLI of this environment in ``repo``; kill its whole group after ``timeout``.

    Raises :class:`subprocess.TimeoutExpired` when it ran out of time.
    """
    proc = subprocess.Popen(
        [sys.executable, "-m", "dvc", *args],
        cwd=repo,
        env=dvc_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        proc.communicate()
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@dataclass(frozen=True)
class Remote:
    """The default DVC remote, merged over every config level (local wins)."""

    name: str
    url: str
    options: dict[str, str] = field(default_factory=dict)

    @property
    def endpoint(self) -> str | None:
        """An explicit GCS endpoint (emulator), if any."""
        url = self.options.get("endpointurl") or os.environ.get("STORAGE_EMULATOR_HOST", "")
        if not url or url == "default":
            return None
        return url if "://" in url else f"http://{url}"


def read_remote(repo: Path, timeout: float = 60) -> Remote | None:
    """Return the default remote as ``dvc config --list`` reports it, or None when there is none."""
    result = run_dvc(["config", "--list"], repo, timeout)
    if result.returncode != 0:
        raise RuntimeError(result.stderr.strip() or "dvc config --list failed")
    values: dict[str, str] = {}
    for line in result.stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip()
    name = values.get("core.remote")
    if not name or f"remote.{name}.url" not in values:
        return None
    prefix = f"remote.{name}."
    options = {k[len(prefix) :]: v for k, v in values.items() if k.startswith(prefix)}
    return Remote(name, options.pop("url"), options)


def _google_credentials(remote: Remote) -> str | None:
    """Where usable Google credentials come from, or None."""
    if remote.options.get("allow_anonymous_login", "").lower() == "true":
        return "anonymous login"
    for source in (remote.options.get("credentialpath"), os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")):
        if source and Path(source).expanduser().is_file():
            return source
    gcloud = Path(os.environ.get("CLOUDSDK_CONFIG", Path.home() / ".config" / "gcloud"))
    adc = gcloud / "application_default_credentials.json"
    return str(adc) if adc.is_file() else None


def _probe_endpoint(endpoint: str, bucket: str, timeout: float) -> str | None:
    url = f"{endpoint.rstrip('/')}/storage/v1/b/{quote(bucket, safe='')}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            json.load(response)
        return None
    except urllib.error.HTTPError as exc:
        return f"bucket '{bucket}' not available at {endpoint} (HTTP {exc.code})"
    except (OSError, ValueError) as exc:
        return f"remote endpoint {endpoint} not reachable within {timeout:g} s ({exc})"


def problem(remote: Remote | None, timeout: float | None = None) -> str | None:
    """Why ``remote`` cannot be used now (one line), or None when it can."""
    timeout = probe_timeout() if timeout is None else timeout
    if remote is None:
        return "no DVC remote is configured (make data-remote BUCKET=<your-bucket>)"
    parts = urlsplit(remote.url)
    if parts.scheme == "gs":
        if remote.endpoint:
            return _probe_endpoint(remote.endpoint, parts.netloc, timeout)
        if remote.url.rstrip("/") == PLACEHOLDER_URL:
            return (
                f"the remote is the repository's placeholder {PLACEHOLDER_URL} "
                "(point it at your bucket: make data-remote BUCKET=<your-bucket>)"
            )
        if _google_credentials(remote) is None:
            return (
                f"no Google credentials for {remote.url} (run 'gcloud auth application-default login' "
                "or set GOOGLE_APPLICATION_CREDENTIALS)"
            )
        try:
            socket.create_connection(GOOGLE_STORAGE, timeout=timeout).close()
        except OSError as exc:
            return f"{GOOGLE_STORAGE[0]} not reachable within {timeout:g} s ({exc})"
        return None
    if not parts.scheme or len(parts.scheme) == 1:  # a local path (or a Windows drive letter)
        folder = Path(remote.url)
        return None if folder.is_dir() else f"remote folder {remote.url} does not exist"
    return None


def set_bucket(repo: Path, bucket: str) -> str:
    """Point the default remote at ``gs://<bucket>`` in ``.dvc/config``; return the new url.

    The url line is rewritten in place so the file's comments and other options
    (``verify``) survive; no credentials are written. Raises ValueError on a bad name.
    """
    name = bucket.removeprefix("gs://").strip("/")
    if not BUCKET_RE.match(name) or ".." in name:
        raise ValueError(f"not a valid GCS bucket name: {bucket!r} (e.g. BUCKET=my-mri-data)")
    url = f"gs://{name}"
    config = repo / ".dvc" / "config"
    lines = config.read_text().splitlines(keepends=True) if config.is_file() else []
    section, done = "", False
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith("["):
            section = stripped
        elif section == f"['remote \"{REMOTE_NAME}\"']" and re.match(r"url\s*=", stripped):
            indent = line[: len(line) - len(line.lstrip())]
            lines[i], done = f"{indent}url = {url}\n", True
    if done:
        config.write_text("".join(lines))
    else:
        result = run_dvc(["remote", "add", "--default", "--force", REMOTE_NAME, url], repo, 60)
        if result.returncode != 0:
            raise ValueError(result.stderr.strip())
    return url
