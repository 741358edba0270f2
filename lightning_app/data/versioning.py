"""``python -m lightning_app.data.versioning``: the DVC side of ``make data`` / ``data-push``.

``fetch`` makes ``data/`` hold exactly the version ``data.dvc`` names: nothing to do when the
folder already hashes to it; ``dvc pull`` when the remote is usable (see
:mod:`lightning_app.data.remote`); otherwise a one-line reason and exit 0 so ``make data``
builds from the embedded source (``--source remote``: exit 1 instead). Every DVC call has a
timeout (``DVC_TIMEOUT`` seconds, default 900). After a pull the folder is hashed again, so
a corrupted local cache is reported instead of trained on.
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from lightning_app.data import remote as rm

DVC_FILE = "data.dvc"


def dvc_timeout() -> float:
    """Seconds one DVC pull/push/add may take (``DVC_TIMEOUT``, default 900)."""
    return float(os.environ.get("DVC_TIMEOUT", "900"))


def tracked(repo: Path) -> tuple[Path, str] | None:
    """Return the folder ``data.dvc`` tracks and its DVC hash (``<md5>.dir``), or None."""
    dvc_file = repo / DVC_FILE
    if not dvc_file.is_file():
        return None
    text = dvc_file.read_text()
    md5 = re.search(r"md5:\s*([0-9a-f]{32}(?:\.dir)?)", text)
    path = re.search(r"path:\s*(\S+)", text)
    return (repo / path.group(1), md5.group(1)) if md5 and path else None


def _ignored(rel_to_repo: str, patterns: list[str]) -> bool:
    name = rel_to_repo.rsplit("/", 1)[-1]
    for pattern in patterns:
        anchored = pattern.strip("/")
        if ("/" in anchored and fnmatch.fnmatchcase(rel_to_repo, anchored)) or fnmatch.fnmatchcase(
            name, anchored
        ):
            return True
    return False


def ignore_patterns(repo: Path) -> list[str]:
    """Return the ``.dvcignore`` patterns (plain and anchored globs; negations unsupported)."""
    path = repo / ".dvcignore"
    lines = path.read_text().splitlines() if path.is_file() else []
    return [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith(("#", "!"))]


def folder_hash(folder: Path, repo: Path) -> tuple[str, dict[str, str]]:
    """DVC's hash of a folder (``<md5>.dir``) and its ``relpath -> md5`` listing.

    Same algorithm as ``dvc add``: the MD5 of the JSON list of ``{"md5", "relpath"}``
    sorted by path, honouring ``.dvcignore``.
    """
    patterns = ignore_patterns(repo)
    entries: dict[tuple[str, ...], str] = {}
    for path in folder.rglob("*"):
        rel = path.relative_to(folder)
        if path.is_file() and not _ignored(path.relative_to(repo).as_posix(), patterns):
            digest = hashlib.md5(usedforsecurity=False)
            with path.open("rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(chunk)
            entries[rel.parts] = digest.hexdigest()
    listing = [{"md5": md5, "relpath": "/".join(parts)} for parts, md5 in sorted(entries.items())]
    blob = json.dumps(listing, sort_keys=True).encode()
    return hashlib.md5(blob, usedforsecurity=False).hexdigest() + ".dir", {
        item["relpath"]: item["md5"] for item in listing
    }


def _dvc(args: list[str], repo: Path) -> subprocess.CompletedProcess[str]:
    try:
        return rm.run_dvc(args, repo, dvc_timeout())
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(
            args, 124, "", f"ERROR: dvc {args[0]} ran past {dvc_timeout():g} s"
        )


def _dvc_errors(result: subprocess.CompletedProcess[str]) -> str:
    lines = [
        ln.split("ERROR: ", 1)[1] for ln in (result.stderr + result.stdout).splitlines() if "ERROR: " in ln
    ]
    return " ".join(lines).strip() or f"dvc exited with {result.returncode}"


def _corrupted(result: subprocess.CompletedProcess[str], listing: dict[str, str]) -> list[str]:
    by_md5 = {md5: rel for rel, md5 in listing.items()}
    found = re.findall(
        r"corrupted cache file '.*?([0-9a-f]{2})[/\\]([0-9a-f]{30})'", result.stdout + result.stderr
    )
    return sorted({by_md5.get(a + b, a + b) for a, b in found})


def _expected_listing(repo: Path, md5: str) -> dict[str, str]:
    """``relpath -> md5`` of a version from the ``.dir`` object in the DVC cache, if present."""
    cache = repo / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]
    try:
        blob = cache.read_bytes()
    except OSError:
        return {}
    if hashlib.md5(blob, usedforsecurity=False).hexdigest() + ".dir" != md5:
        return {}
    return {item["relpath"]: item["md5"] for item in json.loads(blob)}


def verify(repo: Path) -> list[str]:
    """Problems with ``data/`` against ``data.dvc`` after a checkout (empty when identical)."""
    target = tracked(repo)
    if target is None:
        return [f"no {DVC_FILE} in {repo}"]
    folder, md5 = target
    actual, listing = folder_hash(folder, repo)
    if actual == md5:
        return []
    expected = _expected_listing(repo, md5)
    bad = [rel for rel, digest in expected.items() if listing.get(rel) != digest]
    detail = ", ".join(f"{folder.name}/{rel}" for rel in bad[:5]) or "the file list"
    return [f"{folder.name}/ hashes to {actual}, {DVC_FILE} names {md5}; differing: {detail}"]


def fetch(repo: Path, source: str) -> int:
    """Bring the ``data.dvc`` version into the workspace; 0 means ``make data`` may go on."""
    required = source == "remote"

    def skip(reason: str) -> int:
        if required:
            print(f"error: SOURCE=remote but {reason}", file=sys.stderr)
            return 1
        print(f"data: not pulling with DVC: {reason}; using the local/embedded source")
        return 0

    target = tracked(repo)
    if source == "embedded":
        return 0
    if target is None:
        return skip(f"there is no {DVC_FILE} to pull")
    folder, md5 = target
    existed = folder.is_dir() and any(folder.iterdir())
    if existed and folder_hash(folder, repo)[0] == md5:
        print(f"data: {folder.name}/ matches {DVC_FILE} (dvc:{md5})")
        return 0
    try:
        reason = rm.problem(rm.read_remote(repo))
    except (OSError, RuntimeError, subprocess.TimeoutExpired) as exc:
        reason = f"DVC is not usable here ({exc})"
    if reason:
        if existed:
            print(f"data: note: {folder.name}/ differs from {DVC_FILE} (dvc:{md5}); keeping it as is")
        return skip(reason)
    print(f"data: dvc pull {DVC_FILE} (dvc:{md5}) ...", flush=True)
    result = _dvc(["pull", "-v", DVC_FILE], repo)
    if result.returncode != 0:
        if not existed:
            shutil.rmtree(folder, ignore_errors=True)  # never leave a half-checked-out folder
        corrupted = _corrupted(result, _expected_listing(repo, md5))
        if corrupted:
            names = ", ".join(corrupted[:5])
            print(
                f"error: dvc pull rejected corrupted remote objects (hash mismatch): {names}", file=sys.stderr
            )
        elif "without confirmation" in result.stdout + result.stderr:
            print(
                f"{'error' if required else 'data: warning'}: {folder.name}/ has changes not saved in DVC, "
                f"kept as is; version them (make data-push) or delete {folder.name}/ "
                f"to get {DVC_FILE}'s version",
                file=sys.stderr,
            )
            return 1 if required else 0
        print(f"error: dvc pull failed: {_dvc_errors(result)}", file=sys.stderr)
        return 1
    problems = verify(repo)
    for line in problems:
        hint = "corrupted DVC cache: delete data/ and .dvc/cache, then make data again"
        print(f"error: after dvc pull, {line} ({hint})", file=sys.stderr)
    if not problems:
        print(f"data: pulled {folder.name}/ = dvc:{md5}")
    return 1 if problems else 0


def push(repo: Path, folder: str = "data") -> int:
    """``dvc add`` the data folder and ``dvc push`` it; print what to commit."""
    reason = rm.problem(rm.read_remote(repo))
    if reason:
        print(f"error: cannot push: {reason}", file=sys.stderr)
        return 1
    for args in (["add", folder], ["push", DVC_FILE]):
        result = _dvc(args, repo)
        if result.returncode != 0:
            print(f"error: dvc {args[0]} failed: {_dvc_errors(result)}", file=sys.stderr)
            return 1
    target = tracked(repo)
    print(f"data: pushed dvc:{target[1] if target else '?'}; now commit it: git add {DVC_FILE} && git commit")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the command, return the exit code."""
    parser = argparse.ArgumentParser(prog="python -m lightning_app.data.versioning", description=__doc__)
    parser.add_argument("--repo", type=Path, default=Path("."), help="repository root (default: .)")
    sub = parser.add_subparsers(dest="command", required=True)
    fetch_p = sub.add_parser("fetch", help="pull data.dvc's version when a remote is usable")
    fetch_p.add_argument("--source", choices=("auto", "remote", "embedded"), default="auto")
    sub.add_parser("push", help="dvc add data + dvc push")
    sub.add_parser("verify", help="check data/ hashes to what data.dvc names")
    remote_p = sub.add_parser("set-remote", help="point the DVC remote at gs://BUCKET")
    remote_p.add_argument("bucket")
    args = parser.parse_args(argv)
    repo: Path = args.repo
    if args.command == "fetch":
        return fetch(repo, args.source)
    if args.command == "push":
        return push(repo)
    if args.command == "verify":
        problems = verify(repo)
        for line in problems:
            print(f"error: {line}", file=sys.stderr)
        if not problems:
            print(f"data: matches {DVC_FILE}")
        return 1 if problems else 0
    try:
        url = rm.set_bucket(repo, args.bucket)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"data: DVC remote is now {url} (.dvc/config); commit it, then make data-push")
    return 0


if __name__ == "__main__":
    sys.exit(main())
