"""Run every benchmark and print one table of ratios (each against a baseline from the same run).

    bench/run_all [--quick] [--only NAME ...] [--markdown]

Run from the repository root; it drives ./pants. `--quick` shrinks every workload (a smoke test of
the benchmarks, not figures to publish). `--markdown` prints the table as Markdown, as pasted into
docs/performance.md. Each benchmark's own output is shown as it runs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RUNTIME_PEX = "dist/src.python.vero/vero.pex"

# name -> (full argv, quick argv)
BENCHES: dict[str, tuple[list[str], list[str]]] = {
    "mode_a_throughput": (
        ["./pants", "run", "bench/mode_a_throughput.py", "--", "--samples", "64", "--concurrency", "1", "4"],
        ["./pants", "run", "bench/mode_a_throughput.py", "--", "--samples", "8", "--concurrency", "2",
         "--repeats", "1"],
    ),
    "serve_load": (
        # 15 single-client pairs and 8 requests per client: with 5 and 4 the ratios moved by 0.2
        # between runs on an idle machine (the disk's fsync latency varies from one to the next).
        ["./pants", "run", "bench/serve_load.py", "--", "--clients", "50", "--requests", "8", "--repeats", "15"],
        ["./pants", "run", "bench/serve_load.py", "--", "--clients", "5", "--requests", "2",
         "--repeats", "2"],
    ),
    "compile": (
        ["./pants", "run", "bench/compile.py", "--", "--runtime-pex", RUNTIME_PEX],
        ["./pants", "run", "bench/compile.py", "--", "--runtime-pex", RUNTIME_PEX, "--dataset-mb", "5",
         "--files", "200", "--repeat", "1"],
    ),
    "collate": (
        ["./pants", "run", "bench/collate.py", "--", "--tasks", "10000", "--attempts", "3"],
        ["./pants", "run", "bench/collate.py", "--", "--tasks", "200", "--attempts", "2", "--repeat", "1"],
    ),
    "admission_overhead": (
        ["./pants", "run", "bench/admission_overhead.py", "--", "--records", "0", "100", "1000"],
        ["./pants", "run", "bench/admission_overhead.py", "--", "--records", "0", "20", "--repeats", "3"],
    ),
    "fetch_cost": (
        ["./pants", "run", "bench/fetch_cost.py", "--", "--repeats", "15"],
        ["./pants", "run", "bench/fetch_cost.py", "--", "--repeats", "2"],
    ),
    "session_archive": (
        ["./pants", "run", "bench/session_archive.py", "--", "--evaluations", "1000", "--commits", "200"],
        ["./pants", "run", "bench/session_archive.py", "--", "--evaluations", "50", "--commits", "10", "--repeat", "1"],
    ),
    "relay": (
        ["./pants", "run", "bench/relay.py"],
        ["./pants", "run", "bench/relay.py", "--", "--execs", "50", "--files", "20", "--mib", "2", "--rounds", "1"],
    ),
    "pants_cache": (
        [sys.executable, "-m", "bench.pants_cache"],
        [sys.executable, "-m", "bench.pants_cache", "--targets", "//tasks:foo"],
    ),
    # Two cold clones sharing only a local BuildGrid: no smaller workload exists.
    "remote_cache": (
        [sys.executable, "-m", "bench.remote_cache"],
        [sys.executable, "-m", "bench.remote_cache"],
    ),
}


def table(rows: list[dict[str, object]], markdown: bool) -> str:
    """The collected figures as a fixed-width or Markdown table."""
    header = ("benchmark", "measure", "ratio", "detail")
    cells = [(str(r["bench"]), str(r["measure"]), f"{float(str(r['ratio'])):.2f}", str(r["detail"]))
             for r in rows]
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|---|---|---:|---|"]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cells]
        return "\n".join(lines)
    widths = [max(len(row[i]) for row in [header, *cells]) for i in range(3)]
    return "\n".join(f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]:>{widths[2]}}  {row[3]}"
                     for row in [header, *cells])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small workloads: check the benches run")
    parser.add_argument("--only", nargs="+", choices=sorted(BENCHES), default=sorted(BENCHES))
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    args = parser.parse_args()
    if not Path("pants.toml").is_file():
        sys.exit("error: run bench/run_all from the repository root")
    if subprocess.run(["./pants", "package", "src/python/vero:vero"], check=False).returncode != 0:
        sys.exit(f"error: could not build {RUNTIME_PEX} (needed by the compile benchmark)")
    failed = []
    with tempfile.TemporaryDirectory(prefix="vero-bench-") as scratch:
        results = Path(scratch) / "results.jsonl"
        env = {**os.environ, "VERO_BENCH_RESULTS": str(results)}
        for name in args.only:
            argv = BENCHES[name][1 if args.quick else 0]
            print(f"\n=== {name}: {' '.join(argv)}", flush=True)
            started = time.perf_counter()
            if subprocess.run(argv, env=env, check=False).returncode != 0:
                failed.append(name)
            print(f"=== {name}: {time.perf_counter() - started:.0f} s", flush=True)
        rows = [json.loads(line) for line in results.read_text().splitlines()] if results.exists() else []
    print(f"\n{os.cpu_count()} cpus; ratios are against a baseline measured in the same run "
          f"(see docs/performance.md){' -- QUICK workloads' if args.quick else ''}\n")
    print(table(rows, args.markdown))
    if failed:
        sys.exit(f"error: these benchmarks failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
