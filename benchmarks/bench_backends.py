"""Inference backends by measurement: img/s at batch 1 and the serving batch, load time, parity.

``make bench-backends [CKPT=...]`` loads the fp32 network of a checkpoint and runs the
same real Br35H pixels (decoded by THE preprocessing) through each candidate:

* eager fp32, channels-last (what the handler ran before),
* ``torch.compile`` of it (inductor; compile time counted per batch shape),
* eager bf16 autocast (this CPU has AVX512-BF16),
* ONNX Runtime fp32,
* ONNX Runtime int8: static QDQ, per-channel int8 weights, uint8 activations calibrated
  on 100 TRAINING images (:func:`lightning_app.inference.backends.quantize_int8`).

Each is timed for ``--seconds`` per batch size after a warm-up, best of ``--rounds``;
"load s" is building it (export + quantisation for ONNX, first calls for compile).
Agreement and max |prob diff| are against eager fp32 on validation + test. The table
replaces the ``bench-backends`` section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import torch

from benchmarks.docsection import write_section
from lightning_app.data.pixels import split_pixels
from lightning_app.export.build import newest_best_checkpoint
from lightning_app.export.gate import CALIBRATION_IMAGES
from lightning_app.inference.backends import OnnxBackend, export_onnx, quantize_int8
from lightning_app.inference.tapped import Tapped
from lightning_app.transforms import EvalPreset

Run = Callable[[torch.Tensor], torch.Tensor]  # normalised batch -> logits


def rate(run: Run, x: torch.Tensor, seconds: float, rounds: int) -> float:
    """Best images/s of ``run`` on batch ``x`` over ``rounds`` timed windows."""
    for _ in range(3):
        run(x)
    best = 0.0
    for _ in range(rounds):
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            run(x)
            n += len(x)
        best = max(best, n / (time.perf_counter() - start))
    return best


def candidates(
    net: torch.nn.Module, calib: torch.Tensor, size: int, tmp: Path, batches: list[int]
) -> Iterator[tuple[str, Callable[[], Run]]]:
    """Yield ``(name, build)``; ``build()`` returns the runner (its time is the load time)."""
    net = net.eval()

    def eager() -> Run:
        model = net.to(memory_format=torch.channels_last)
        return lambda x: torch.inference_mode()(model)(x.contiguous(memory_format=torch.channels_last))

    def compiled() -> Run:
        model = torch.compile(Tapped(net.to(memory_format=torch.channels_last)), dynamic=False)

        def run(x: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode():
                return model(x.contiguous(memory_format=torch.channels_last))[0]

        for b in batches:  # compile every served shape up front: part of the load time
            run(torch.zeros(b, 1, size, size))
        return run

    def bf16() -> Run:
        model = net.to(memory_format=torch.channels_last)

        def run(x: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
                return model(x.contiguous(memory_format=torch.channels_last)).float()

        return run

    def onnx_fp32() -> Run:
        backend = OnnxBackend(
            export_onnx(net, tmp / "fp32.onnx", in_channels=1, image_size=size), name="onnx"
        )
        return lambda x: torch.from_numpy(backend(x).logits)

    def onnx_int8() -> Run:
        fp32 = tmp / "fp32.onnx"
        if not fp32.exists():
            export_onnx(net, fp32, in_channels=1, image_size=size)
        backend = OnnxBackend(quantize_int8(fp32, tmp / "int8.onnx", calib), name="int8")
        return lambda x: torch.from_numpy(backend(x).logits)

    yield "eager fp32, channels-last (before)", eager
    yield "torch.compile (inductor), channels-last", compiled
    yield "eager bf16 autocast, channels-last", bf16
    yield "ONNX Runtime fp32", onnx_fp32
    yield "ONNX Runtime int8 (static QDQ, per-channel)", onnx_int8


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", type=Path, help="default: newest best-*.ckpt under runs/")
    parser.add_argument("--data", type=Path, default=Path("data/br35h"))
    parser.add_argument("--batch", type=int, default=8, help="the serving batch size")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-doc", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from lightning_app.models.classifier import Classifier

    ckpt = args.ckpt or newest_best_checkpoint(Path("runs"))
    model = Classifier.load_from_checkpoint(ckpt, map_location="cpu")
    pre = dict(model.hparams.get("preprocessing") or {"image_size": 128, "mean": 0.5, "std": 0.25})
    size, normalise = int(pre["image_size"]), EvalPreset(mean=float(pre["mean"]), std=float(pre["std"]))
    train, _ = split_pixels(args.data, "train", image_size=size)
    held = [split_pixels(args.data, s, image_size=size) for s in ("val", "test")]
    x = normalise(torch.cat([p for p, _ in held]))
    pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:CALIBRATION_IMAGES]
    calib = normalise(train[pick])
    batches = [1, args.batch]
    rows, reference = [], None
    with tempfile.TemporaryDirectory() as tmp:
        for name, build in candidates(model.net, calib, size, Path(tmp), batches):
            start = time.perf_counter()
            run = build()
            load_s = time.perf_counter() - start
            probs = torch.cat([run(chunk).float().softmax(1) for chunk in x.split(args.batch)])
            reference = probs if reference is None else reference
            agree = float((probs.argmax(1) == reference.argmax(1)).float().mean())
            diff = float((probs - reference).abs().max())
            speeds = [rate(run, x[:b], args.seconds, args.rounds) for b in batches]
            rows.append((name, *speeds, load_s, agree, diff))
            print(rows[-1], flush=True)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"`make bench-backends` — {stamp}, {platform.machine()}, {args.threads} threads, torch "
        f"{torch.__version__}; `{ckpt}` ({model.hparams['backbone']}, {size} px); {len(x)} held-out "
        f"images (val + test) for agreement with eager fp32; best of {args.rounds} x {args.seconds:g} s.",
        "",
        f"| backend | img/s batch 1 | img/s batch {args.batch} | load/compile s | top-1 agreement "
        "| max abs prob diff |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {n} | {b1:.0f} | {bn:.0f} | {ld:.1f} | {ag:.2%} | {d:.4f} |" for n, b1, bn, ld, ag, d in rows
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_doc:
        write_section("bench-backends", text)


if __name__ == "__main__":
    main()
