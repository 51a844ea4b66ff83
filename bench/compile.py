"""Compile time against the I/O floor: `vero harbor build` of a big benchmark versus copying and
hashing the same input bytes.

The benchmark is generated in a temp dir: a Mode A dataset of about 200 MB (three JSON Lines
splits) and a 2,000-file agent repo, plus a scorer and the runtime PEX. The floor reads every
input file once, hashes it with sha256 and writes it to a fresh directory: the least any
compiler that copies and seals its inputs must do. Both run in this process on the same file
system with a warm page cache; the best of `--repeat` interleaved runs counts (the median ratio
is printed too). The compiler additionally renders, seals, runs its checks (entrypoint import,
scorer, dry run) and flushes its output to disk before renaming it into place. The figure is a
rebuild of an unchanged dataset (its validation found in the cache, as on every build after the
first); a first build, which also parses every row with the sidecar's rules, is timed too.

    ./pants package src/python/vero:vero
    ./pants run bench/compile.py -- --runtime-pex dist/src.python.vero/vero.pex [--dataset-mb 200]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.results import record
from vero.compiler.compiler import build_task
from vero.compiler.dataset import content_key, validate_split_files
from vero.compiler.tree import walk_tree

CHUNK = 1 << 20
SPLITS = {"train": 0.6, "validation": 0.2, "test": 0.2}
WORDS = ("alpha", "beta", "gamma", "delta", "epsilon", "zeta", "theta", "kappa", "lambda", "sigma")


def make_dataset(root: Path, megabytes: int, rng: random.Random) -> None:
    """Rows of ~1 KB (an id, a question, a long context and the answer) until `megabytes`."""
    root.mkdir(parents=True)
    for split, share in SPLITS.items():
        target = int(megabytes * share * 1_000_000)
        written = 0
        with open(root / f"{split}.jsonl", "w", encoding="utf-8") as handle:
            index = 0
            while written < target:
                context = " ".join(rng.choice(WORDS) for _ in range(150))
                row = {"id": f"{split}-{index}", "question": f"What is {index} plus 1?",
                       "context": context, "answer": str(index + 1)}
                line = json.dumps(row) + "\n"
                handle.write(line)
                written += len(line)
                index += 1


def make_agent_repo(root: Path, n_files: int, rng: random.Random) -> None:
    """`n_files` Python modules of 1-5 KB in nested packages, with the entrypoint module."""
    for index in range(n_files - 1):
        package = root / f"pkg{index % 40:02d}" / f"sub{index % 7}"
        package.mkdir(parents=True, exist_ok=True)
        body = "\n".join(f"VALUE_{i} = {rng.randint(0, 10**9)!r}  # {rng.choice(WORDS)}"
                         for i in range(rng.randint(30, 150)))
        (package / f"module_{index:04d}.py").write_text(f'"""Module {index}."""\n{body}\n', encoding="utf-8")
    (root / "solver.py").write_text("def solve(row):\n    return ''\n", encoding="utf-8")


def make_benchmark(root: Path, dataset_mb: int, n_files: int, pex: Path) -> Path:
    """The whole benchmark under `root`; returns build.yaml."""
    rng = random.Random(7)
    make_dataset(root / "data", dataset_mb, rng)
    make_agent_repo(root / "agent", n_files, rng)
    (root / "scorer.py").write_text("def score(output, row):\n    return float(output == row['answer'])\n",
                                    encoding="utf-8")
    shutil.copy(pex, root / "vero.pex")
    config = {
        "mode": "A", "name": "bench/compile", "agent_repo": "agent", "dataset": "data",
        "label_fields": ["answer"], "entrypoint": "solver:solve", "scorer": "scorer.py",
        "splits": [{"split": "train", "access": "viewable"},
                   {"split": "validation", "access": "non_viewable"}],
        "budgets": [{"split": "train", "total_run_budget": 10},
                    {"split": "validation", "total_run_budget": 5}],
        "selection_split": "validation",
        "targets": [{"split": "test", "reward_key": "accuracy"}],
    }
    path = root / "build.yaml"
    path.write_text(json.dumps(config), encoding="utf-8")  # JSON is YAML
    return path


def input_files(root: Path) -> list[Path]:
    """Every file the compiler reads from the benchmark."""
    agent = [path for _, path, _ in walk_tree(root / "agent", where="bench")]
    return [*agent, *sorted((root / "data").glob("*.jsonl")), root / "scorer.py", root / "vero.pex"]


def io_floor(files: list[Path], dest: Path) -> None:
    """Read, sha256 and write each input file once into `dest`."""
    for index, path in enumerate(files):
        digest = hashlib.sha256()
        target = dest / f"{index:05d}"
        with open(path, "rb") as source, open(target, "wb") as out:
            while chunk := source.read(CHUNK):
                digest.update(chunk)
                out.write(chunk)
        digest.hexdigest()


def timed(run: Callable[[Path], object], dest: Path) -> float:
    """Seconds for `run(dest)`; `dest` is removed afterwards."""
    started = time.perf_counter()
    run(dest)
    elapsed = time.perf_counter() - started
    shutil.rmtree(dest)
    return elapsed


def main() -> None:
    """Generate the benchmark, time the floor and the compiler, print the ratio."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runtime-pex", type=Path, default=Path("dist/src.python.vero/vero.pex"))
    parser.add_argument("--dataset-mb", type=int, default=200)
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if not args.runtime_pex.is_file():
        sys.exit(f"no runtime PEX at {args.runtime_pex}: run `./pants package src/python/vero:vero` first")
    with tempfile.TemporaryDirectory(prefix="vero-bench-compile-") as tmp:
        root = Path(tmp) / "bench"
        config = make_benchmark(root, args.dataset_mb, args.files, args.runtime_pex)
        files = input_files(root)
        total = sum(path.stat().st_size for path in files)

        def floor(dest: Path) -> None:
            dest.mkdir()
            io_floor(files, dest)

        cache = Path(tmp) / "cache"

        def compile_(dest: Path) -> None:
            build_task(config, dest, args.runtime_pex, {}, cache_dir=cache)

        def first_compile(dest: Path) -> None:
            shutil.rmtree(cache, ignore_errors=True)
            compile_(dest)

        def validate(dest: Path) -> None:
            files = sorted(path.name for path in (root / "data").glob("*.jsonl"))
            validate_split_files(root / "data", files, content_key({}), root / "data")
            dest.mkdir()

        timed(floor, Path(tmp) / "warm")  # page cache warm for both sides
        runs: dict[str, list[float]] = {"floor": [], "compile": [], "first": [], "validate": []}
        for attempt in range(args.repeat):  # interleaved, so both see the same machine state
            runs["floor"].append(timed(floor, Path(tmp) / f"floor-{attempt}"))
            runs["first"].append(timed(first_compile, Path(tmp) / f"first-{attempt}"))
            runs["compile"].append(timed(compile_, Path(tmp) / f"compile-{attempt}"))
            runs["validate"].append(timed(validate, Path(tmp) / f"validate-{attempt}"))
        t_floor, t_compile, t_first, t_validate = (min(runs[k]) for k in ("floor", "compile", "first", "validate"))
        print(f"inputs: {len(files)} files, {total / 1e6:.1f} MB "
              f"(dataset {args.dataset_mb} MB, agent repo {args.files} files, PEX "
              f"{args.runtime_pex.stat().st_size / 1e6:.1f} MB)")
        print(f"I/O floor (read + sha256 + write each input once): {t_floor:.2f} s")
        print(f"vero harbor build, dataset unchanged (cached):     {t_compile:.2f} s")
        print(f"vero harbor build, first build of the dataset:     {t_first:.2f} s")
        print(f"  dataset validation alone (sidecar's rules):      {t_validate:.2f} s")
        print(f"ratio compile / floor: {t_compile / t_floor:.2f}x  (best of {args.repeat} interleaved runs; "
              f"median ratio {statistics.median(runs['compile']) / statistics.median(runs['floor']):.2f}x); "
              f"first build / floor: {t_first / t_floor:.2f}x")
        record("compile", f"vero harbor build vs I/O floor, {total / 1e6:.0f} MB in {len(files)} files",
               t_compile / t_floor,
               f"{t_compile:.2f} vs {t_floor:.2f} s; first build of the dataset {t_first:.2f} s "
               f"(validation {t_validate:.2f} s)")


if __name__ == "__main__":
    main()
