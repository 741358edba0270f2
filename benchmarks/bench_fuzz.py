"""``make bench-fuzz``: coverage-guided fuzzing (atheris/libFuzzer) of the decoder and the serving core.

Seeds: one real Br35H scan as JPEG, PNG, 16-bit PNG, TIFF and WebP, plus an original
scan's bytes. Each input goes through :func:`lightning_app.transforms.decode` (full and
reduced decode: only :class:`~lightning_app.transforms.ImageDecodeError` may escape) and
through :meth:`ModelService.serve` of the ``--mar``'s model, as the raw body and as the
multipart ``data`` field (every reply must be 200 or 4xx with a JSON body). Any other
exception is a crash: libFuzzer stops and writes the input as ``crash-*``.

The fuzzer runs in a child process (libFuzzer exits its process when done); this reads
its summary (executions, seconds, coverage) and writes the ``bench-fuzz`` section of
docs/benchmarks.md with the command.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.docsection import save_report, write_section


def write_seeds(corpus: Path) -> int:
    """The seed corpus: a real scan in every accepted format; returns the number of files."""
    from PIL import Image

    from lightning_app.data.sources import embedded_br35h

    original = sorted((embedded_br35h() / "yes").glob("*.jpg"))[0].read_bytes()
    scan = Image.open(io.BytesIO(original)).convert("L").resize((96, 96))
    corpus.mkdir(parents=True, exist_ok=True)
    (corpus / "original.jpg").write_bytes(original)
    for name, image, fmt in [
        ("scan.jpg", scan, "JPEG"), ("scan.png", scan, "PNG"), ("scan16.png", scan.convert("I;16"), "PNG"),
        ("scan.tif", scan, "TIFF"), ("scan.webp", scan, "WEBP"),
    ]:  # fmt: skip
        buffer = io.BytesIO()
        image.save(buffer, format=fmt)
        (corpus / name).write_bytes(buffer.getvalue())
    return len(list(corpus.iterdir()))


def child(mar: Path, libfuzzer_args: list[str]) -> None:
    """The fuzzing process: load the model, then hand control to libFuzzer (which exits)."""
    import atheris
    import numpy  # noqa: F401 - the big libraries first: imported before, they stay uninstrumented
    import onnxruntime  # noqa: F401
    import torch  # noqa: F401

    with atheris.instrument_imports(include=["PIL", "lightning_app"]):  # the parsers and our code
        from lightning_app import transforms
        from lightning_app.inference import service
    from lightning_app.inference.settings import LogSettings, ServeSettings
    from serve.litserve_app import unpack

    model = service.ModelService()
    work = Path(tempfile.mkdtemp(prefix="bench-fuzz-"))
    model.load(unpack(mar, work / "model"), ServeSettings(log=LogSettings(enabled=False)))

    def one_input(data: bytes) -> None:
        for target in (None, 64):
            with contextlib.suppress(transforms.ImageDecodeError):
                transforms.decode(data, target_size=target)
        batch = [service.Incoming({"body": data}), service.Incoming({"data": data})]
        for reply in model.serve(batch):
            body = json.loads(reply.body)
            if not (reply.status == 200 or (400 <= reply.status < 500 and body["code"] == reply.status)):
                raise AssertionError(f"reply {reply.status}: {reply.body[:200]}")

    atheris.Setup([sys.argv[0], *libfuzzer_args], one_input)
    atheris.Fuzz()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mar", type=Path, default=Path("model_store/brain_mri.mar"))
    parser.add_argument("--runs", type=int, default=100_000, help="executions (libFuzzer -runs)")
    parser.add_argument("--max-time", type=int, default=3600, help="seconds at most (-max_total_time)")
    parser.add_argument("--note", default="", help="how the machine was loaded (printed in the doc)")
    parser.add_argument("--no-doc", action="store_true")
    parser.add_argument("--child", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.mar, args.child)
        return
    with tempfile.TemporaryDirectory() as work:
        corpus, seeds = Path(work) / "corpus", write_seeds(Path(work) / "corpus")
        flags = [
            f"-runs={args.runs}",
            f"-max_total_time={args.max_time}",
            "-max_len=65536",
            "-rss_limit_mb=4096",
        ]
        cmd = [sys.executable, "-m", "benchmarks.bench_fuzz", "--mar", str(args.mar), "--child", *flags]
        cmd += [f"-artifact_prefix={work}/", str(corpus)]
        run = subprocess.run(
            cmd, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"}
        )
        crashes = sorted(p.name for p in Path(work).glob("crash-*")) + sorted(
            p.name for p in Path(work).glob("oom-*")
        )
    log = run.stdout + run.stderr
    done = re.search(r"Done (\d+) runs in (\d+) second", log)
    cov = re.findall(r"cov: (\d+) ft: (\d+)", log)
    report = {
        "executions": int(done.group(1)) if done else None, "seconds": int(done.group(2)) if done else None,
        "crashes": len(crashes) + (run.returncode != 0 and not crashes), "exit_code": run.returncode,
        "coverage_edges": int(cov[-1][0]) if cov else None, "features": int(cov[-1][1]) if cov else None,
        "seeds": seeds,
    }  # fmt: skip
    print(log[-3000:] if run.returncode else json.dumps(report, indent=2))
    command = "python -m benchmarks.bench_fuzz " + shlex.join(sys.argv[1:])
    executions, seconds = (int(done.group(1)), int(done.group(2))) if done else (0, 0)
    text = (
        f"`{command}` — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, "
        f"{os.cpu_count()} cores; `{args.mar}`. {args.note}\n\n"
        "| executions | seconds | exec/s | crashes (an exception other than the decode error, "
        "or a reply neither 200 nor 4xx JSON) | coverage edges / features | seeds |\n"
        "|---|---|---|---|---|---|\n"
        f"| {executions:,} | {seconds} | {executions / max(1, seconds):.0f} | {report['crashes']} "
        f"| {report['coverage_edges']} / {report['features']} | {seeds} real-scan files |"
    )
    save_report("bench-fuzz", report)
    if not args.no_doc:
        write_section("bench-fuzz", text)
    sys.exit(1 if report["crashes"] else 0)


if __name__ == "__main__":
    main()
