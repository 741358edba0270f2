"""Read prediction logs: local JSONL files or folders, or ``gs://`` objects and prefixes.

Accepted lines (one JSON value per line; a file holding one JSON array is accepted too,
as ``gcloud logging read --format=json`` writes it):

* the bare record the handler prints (:mod:`lightning_app.inference.predlog`);
* a Cloud Logging ``LogEntry`` (a log sink's export to Cloud Storage, or
  ``gcloud logging read``), whose ``jsonPayload`` is the record (Cloud Logging moves
  ``severity``, ``time`` and the labels out of it).

Other events (``bad_request``) are counted, not compared. A line that is not JSON, or
not a prediction record of a known schema, raises :class:`LogError` naming the file, the
line and why; with ``skip_malformed`` it is counted and listed instead. Nothing here
raises anything else for bad content.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from lightning_app.cloud import gcs

#: Record layouts this reader understands (``schema`` in the record).
SCHEMAS = {1}
LOG_SUFFIXES = (".json", ".jsonl", ".log", ".ndjson")


class LogError(ValueError):
    """Logs that cannot be read (one line for the user)."""


@dataclass
class Parsed:
    """Prediction records read from the logs, and what was left out."""

    records: list[dict[str, Any]] = field(default_factory=list)
    events: Counter[str] = field(default_factory=Counter)
    malformed: list[str] = field(default_factory=list)
    files: int = 0


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_record(record: Any) -> str | None:
    """Why ``record`` is not a usable prediction record, or ``None`` when it is."""
    if not isinstance(record, Mapping):
        return "not a JSON object"
    if record.get("schema") not in SCHEMAS:
        return f"unknown record schema {record.get('schema')!r} (this reader knows {sorted(SCHEMAS)})"
    pred = record.get("prediction")
    if not isinstance(pred, Mapping) or not isinstance(pred.get("class"), str):
        return "no prediction.class"
    conf = pred.get("confidence")
    if not (isinstance(conf, int | float) and not isinstance(conf, bool) and 0.0 <= conf <= 1.0):
        return "prediction.confidence is not a number in [0, 1]"
    probs = pred.get("probabilities")
    if not isinstance(probs, Mapping) or not all(_number(p) for p in probs.values()):
        return "prediction.probabilities is not a map of numbers"
    if not isinstance(record.get("model"), Mapping) or not isinstance(record.get("input"), Mapping):
        return "no model or input block"
    emb = record.get("embedding")
    if emb is not None and not (isinstance(emb, list) and all(v is None or _number(v) for v in emb)):
        return "embedding is not a list of numbers"
    return None


def unwrap(entry: Any) -> tuple[Mapping[str, Any] | None, str | None]:
    """``(record, timestamp)`` of a bare record or a LogEntry; ``(None, None)`` if neither."""
    if not isinstance(entry, Mapping):
        return None, None
    if isinstance(entry.get("jsonPayload"), Mapping):
        return entry["jsonPayload"], entry.get("timestamp") or entry["jsonPayload"].get("time")
    if "event" in entry:
        return entry, entry.get("time")
    return None, None


def _timestamp(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def parse_lines(
    lines: Iterator[str],
    source: str,
    parsed: Parsed,
    *,
    skip_malformed: bool = False,
    since: datetime | None = None,
) -> None:
    """Add the prediction records among ``lines`` (of file ``source``) to ``parsed``."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except (ValueError, RecursionError) as exc:
            why = exc.msg if isinstance(exc, json.JSONDecodeError) else type(exc).__name__
            _malformed(parsed, f"{source}:{number}: not JSON ({why})", skip_malformed)
            continue
        for entry in value if isinstance(value, list) else [value]:
            record, stamp = unwrap(entry)
            if record is None:
                _malformed(
                    parsed,
                    f"{source}:{number}: neither a prediction record nor a LogEntry with jsonPayload",
                    skip_malformed,
                )
                continue
            event = str(record.get("event", ""))
            if event != "prediction":
                parsed.events[event or "unknown"] += 1
                continue
            problem = check_record(record)
            if problem:
                _malformed(parsed, f"{source}:{number}: {problem}", skip_malformed)
                continue
            when = _timestamp(stamp)
            if since is not None and when is not None and when < since:
                parsed.events["before_window"] += 1
                continue
            parsed.events["prediction"] += 1
            parsed.records.append(dict(record))


def _malformed(parsed: Parsed, message: str, skip: bool) -> None:
    if not skip:
        raise LogError(f"malformed log line: {message} (pass --skip-malformed to skip such lines)")
    parsed.malformed.append(message)


def _local_files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in LOG_SUFFIXES)
    if path.is_file():
        return [path]
    raise LogError(f"no such log file or folder: {path}")


def _open_text(source: str) -> Iterator[tuple[str, Iterator[str]]]:
    if source.startswith("gs://"):
        try:
            fs = gcs.connect()
            uris = gcs.list_objects(source, fs)
        except gcs.StorageError as exc:
            raise LogError(str(exc)) from None
        for uri in uris:
            if uri.endswith(LOG_SUFFIXES) or uri == source:
                with gcs.open_text(uri, fs) as f:
                    yield uri, iter(f)
        return
    for path in _local_files(Path(source)):
        with path.open(encoding="utf-8", errors="replace") as f:
            yield str(path), iter(f)


def read_logs(sources: list[str], *, skip_malformed: bool = False, since: datetime | None = None) -> Parsed:
    """Read every prediction record in ``sources`` (files, folders, ``gs://`` paths)."""
    parsed = Parsed()
    for source in sources:
        for name, lines in _open_text(source):
            parsed.files += 1
            text = list(lines)
            joined = "".join(text).strip()
            if joined.startswith("[") and len(text) > 1:  # one pretty-printed JSON array
                text = [joined]
            parse_lines(iter(text), name, parsed, skip_malformed=skip_malformed, since=since)
    if parsed.files == 0:
        raise LogError(f"no log files found in {', '.join(sources)}")
    return parsed
