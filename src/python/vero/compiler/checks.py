"""What would fail at run time fails at build time: checks of a written (not yet sealed) task.

Mode A, in this order, each stopping the build with one message that names the file to fix:
1. the entrypoint's module imports from the baseline and defines the callable (`probes`);
2. the scorer imports with the runtime PEX's packages under the runtime interpreter and scores
   one real row of the first target split, given that row's own label as the output;
3. the dry run (unless switched off): the baseline on the first rows of the first viewable
   split (else the selection split), in the sidecar's Mode A strategy (`dry_run`); a failure on
   every row stops the build, a failure on some rows is a warning.
Mode B: the `harbor.agent` class is bound at the top level of its module (read, not imported:
agent modules import harbor, which the build host need not have).

Every check works on scratch copies, so nothing it runs can touch the task being written.
A clean Mode A pass is cached by the content of everything the checks ran on (`check_cache`):
a rebuild of unchanged inputs does not run them again.
"""

from __future__ import annotations

import ast
import difflib
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import JsonValue

from vero.baseline import BASELINE_FILES
from vero.compiler import layout
from vero.compiler.check_cache import PassedChecks, checks_key
from vero.compiler.config import ModeABuild, ModeBBuild
from vero.compiler.dataset import HEAD_ROWS, CheckedDataset
from vero.compiler.dry_run import run_mode_a_samples
from vero.compiler.inputs import Inputs
from vero.compiler.probes import Interpreter, ProbeReply, probe_entrypoint, probe_scorer, runtime_interpreter
from vero.compiler.tree import Entry
from vero.compiler.validation_cache import ValidationCache
from vero.container import CONTAINER
from vero.core.datasets import ModeADataset, Row
from vero.core.records import SampleResult, aggregate
from vero.errors import VeroError

DRY_RUN_ROWS = HEAD_ROWS
SCORER_FIX = ("the eval sidecar has only the Python standard library and the runtime PEX's packages "
              "(vero's own dependencies): remove the import, or ship the module inside a scorer package "
              "directory (scorer: a dir with __init__.py)")
NO_DRY_RUN_HINT = "`--no-dry-run` (harbor_task: `dry_run=False`) skips this run when the baseline is meant to fail"


@dataclass
class CheckReport:
    """What the checks found: lines saying what was checked, and warnings."""

    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def check_task(stage: Path, inputs: Inputs, dataset: CheckedDataset | None, *, dry_run: bool,
               entries: Mapping[str, Entry], commit: str, cache: ValidationCache) -> CheckReport:
    """Run the checks of the module docstring on the task written under `stage` (its files are
    `entries`, its baseline `commit`; Mode A: on the first rows of the `dataset` baked there),
    unless `cache` (a `PASSED_DIR` section) knows that they passed on the same content."""
    config = inputs.loaded.config
    report = CheckReport()
    if isinstance(config, ModeBBuild):
        _check_agent_class(stage / layout.SEED_OUT / BASELINE_FILES, config, inputs)
        report.notes.append(f"harbor.agent {config.harbor.agent} is defined in the baseline")
        return report
    assert isinstance(config, ModeABuild) and inputs.mode_a is not None and dataset is not None
    python = runtime_interpreter()
    key = checks_key(config=config, entries=entries, commit=commit, dataset_content_key=dataset.content_key,
                     python=python, dry_run_split=_dry_run_split(config) if dry_run else None)
    passed = cache.get(key, PassedChecks)
    if passed is not None and passed.key == key:
        report.notes = list(passed.notes)
    else:
        _run_mode_a_checks(stage, inputs, config, dataset.head_dataset(), python, dry_run, report)
        if not report.warnings:
            cache.put(key, PassedChecks(key=key, notes=report.notes))
    if not dry_run:
        report.warnings.append("dry run skipped (--no-dry-run): the baseline was not run on any row; the "
                               "entrypoint and scorer checks still ran")
    return report


def _run_mode_a_checks(stage: Path, inputs: Inputs, config: ModeABuild, rows: ModeADataset, python: Interpreter,
                       dry_run: bool, report: CheckReport) -> None:
    assert inputs.mode_a is not None
    with tempfile.TemporaryDirectory(prefix="vero-checks-") as scratch_dir:
        scratch = Path(scratch_dir)
        baseline = scratch / "baseline"
        # Modes matter, times and extended attributes do not: shutil.copy, not copy2.
        shutil.copytree(stage / layout.SEED_OUT / BASELINE_FILES, baseline, symlinks=True,
                        copy_function=shutil.copy)
        # The scorer as baked into the sidecar (its name is the user's file or package name).
        name = inputs.mode_a.scorer.name
        scorer = scratch / "scorer" / name
        _copy(stage / layout.sidecar_out(CONTAINER.scorer_dir) / name, scorer)
        _check_entrypoint(python, baseline, config, inputs)
        report.notes.append(f"entrypoint {config.entrypoint} imports from the baseline under {python.name}")
        _check_scorer(python, stage / layout.PEX_OUT, scorer, config, inputs, rows, report)
        if dry_run:
            (scratch / "dry-run").mkdir()
            _dry_run(python, baseline, scorer, scratch / "dry-run", config, inputs, rows, report)


def _copy(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        shutil.copytree(src, dest, symlinks=True)
    else:
        shutil.copy2(src, dest)


def _located(reply: ProbeReply, scratch_root: Path, user_root: Path) -> str | None:
    """`file:line` of the innermost traceback frame inside `scratch_root`, named by the user's path."""
    for name, line in reversed(reply.frames):
        path = Path(name)
        if path == scratch_root or path.is_relative_to(scratch_root):
            rel = path.relative_to(scratch_root)
            return f"{user_root / rel if str(rel) != '.' else user_root}:{line}"
    return None


def _closest(name: str, options: list[str]) -> str | None:
    close = difflib.get_close_matches(name, options, n=1, cutoff=0.6)
    return close[0] if close else None


def _did_you_mean(close: str | None) -> str:
    return f" (did you mean {close!r}?)" if close else ""


def _module_file(module: str, baseline: Path) -> str:
    base = module.replace(".", "/")
    return f"{base}.py" if (baseline / f"{base}.py").is_file() else f"{base}/__init__.py"


def _check_entrypoint(python: Interpreter, baseline: Path, config: ModeABuild, inputs: Inputs) -> None:
    module, attr = config.entrypoint.split(":")
    loaded = inputs.loaded
    field_name = loaded.field_at("entrypoint")
    rel = _module_file(module, baseline)
    reply = probe_entrypoint(python, baseline, config.entrypoint)
    if reply.stage == "ok":
        return
    if reply.stage == "missing":
        close = _closest(attr, [str(name) for name in reply.details.get("names", [])])
        fix = f"set entrypoint to {module}:{close}" if close else "fix entrypoint"
        raise VeroError(f"{field_name}: {config.entrypoint!r}: the baseline's {rel} defines no "
                        f"{attr!r}{_did_you_mean(close)}", where=str(loaded.path),
                        fix=f"{fix} in build.yaml, or define {attr}(row) in {inputs.agent_repo / rel}")
    if reply.stage == "not_callable":
        raise VeroError(f"{field_name}: {config.entrypoint!r}: {module}.{attr} is a {reply.details.get('type')}, "
                        "not a function", where=str(loaded.path),
                        fix=f"point entrypoint at a function taking one row, or define {attr}(row) in "
                            f"{inputs.agent_repo / rel}")
    where = _located(reply, baseline, inputs.agent_repo) or str(inputs.agent_repo / rel)
    raise VeroError(f"{field_name}: {config.entrypoint!r}: importing {module} from the baseline under "
                    f"{python.name} failed: {reply.error}", where=where,
                    fix=f"fix the baseline so that `import {module}` works: the sidecar runs it with {python.name} "
                        "and only the packages of the sidecar image")


def _label_output(row: Row, label_fields: list[str]) -> JsonValue:
    """The row's own label as a candidate output: the one label's value, or all of them by name."""
    if len(label_fields) == 1:
        return row.get(label_fields[0])
    return {name: row.get(name) for name in label_fields if name in row}


def _check_scorer(python: Interpreter, runtime_pex: Path, scorer: Path, config: ModeABuild, inputs: Inputs,
                  dataset: ModeADataset, report: CheckReport) -> None:
    assert inputs.mode_a is not None
    user_scorer = inputs.mode_a.scorer
    split = config.targets[0].split
    sample_id = dataset.sample_ids(split)[0]
    row = dataset.row(split, sample_id)
    call = bool(config.label_fields)
    output = _label_output(row, config.label_fields) if call else None
    reply = probe_scorer(python, runtime_pex, scorer, call=call, output=output, row=row)
    where = _located(reply, scorer, user_scorer) or str(user_scorer)
    if reply.stage == "import":
        error = (reply.error or "").removeprefix("importing the scorer failed: ")
        fix = SCORER_FIX if "ModuleNotFoundError" in error or "ImportError" in error else \
            "fix the scorer so that it imports (it must define score(output, row))"
        raise VeroError(f"scorer: cannot be loaded with the runtime PEX's packages under {python.name}: {error}",
                        where=where, fix=fix)
    if reply.stage == "call":
        raise VeroError(f"scorer: score(output, row) raised {reply.error} on row {sample_id!r} of split {split!r} "
                        f"(output: the row's own label, {_short(output)})", where=where,
                        fix=f"fix score(): `row` is the full dataset row, labels included (its fields: "
                            f"{', '.join(sorted(row))}); `output` is what the entrypoint returns")
    if reply.stage == "value":
        raise VeroError(f"scorer: score(output, row) returned an unusable value on row {sample_id!r}: "
                        f"{reply.error}", where=where,
                        fix="return a number (bool and int count) or a dict of numbers")
    if reply.stage != "ok":
        raise VeroError(f"scorer: the check under the runtime PEX failed: {reply.error}", where=where,
                        fix="check that --runtime-pex is a vero PEX that runs on this machine")
    if not call:
        report.notes.append(f"scorer imports with the runtime PEX under {python.name} (not called: no "
                            "label_fields to give it as an output)")
        return
    score = float(reply.details.get("score", 0.0))
    report.notes.append(f"scorer imports with the runtime PEX under {python.name} and scores row {sample_id!r} "
                        f"of split {split!r} with its own label: {score:g}")
    if score <= 0.0:
        report.warnings.append(f"scorer: row {sample_id!r} of split {split!r} scores {score:g} with its own label "
                               f"as the output ({_short(output)}); a correct output should score high: check "
                               f"which field score() compares ({user_scorer})")


def _short(value: JsonValue, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _dry_run_split(config: ModeABuild) -> str:
    for entry in config.splits:
        if entry.access == "viewable":
            return entry.split
    return config.selection_split


def _dry_run(python: Interpreter, baseline: Path, scorer_path: Path, scratch: Path, config: ModeABuild,
             inputs: Inputs, dataset: ModeADataset, report: CheckReport) -> None:
    split = _dry_run_split(config)
    sample_ids = dataset.sample_ids(split)[:DRY_RUN_ROWS]
    results = run_mode_a_samples(baseline=baseline, dataset=dataset, split=split, sample_ids=sample_ids,
                                 entrypoint=config.entrypoint, label_fields=config.label_fields,
                                 scorer=scorer_path, limits=config.limits.candidate,
                                 sample_timeout=config.sample_timeout, python=python.executable, scratch=scratch)
    failed = [r for r in results if not r.ok]
    rows = f"{len(results)} row(s) of split {split!r} ({', '.join(sample_ids)})"
    if failed and len(failed) == len(results):
        first = failed[0]
        raise VeroError(f"dry run: the baseline failed on every one of the first {rows}; "
                        f"row {first.sample_id!r}: {_describe(first, baseline, inputs)}",
                        where=_error_location(first, baseline, inputs) or str(inputs.loaded.path),
                        fix=f"fix the baseline's {config.entrypoint} (or the scorer) for these rows; "
                            + NO_DRY_RUN_HINT)
    for result in failed:
        report.warnings.append(f"dry run: the baseline failed on row {result.sample_id!r} of split {split!r}: "
                               f"{_describe(result, baseline, inputs)}")
    summary = aggregate(results)
    report.notes.append(f"dry run: the baseline ran on the first {rows}: mean score {summary.mean_score:g}, "
                        f"{summary.n_errors} error(s)")


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text


def _scorer_failed(result: SampleResult) -> bool:
    return (result.error or "").startswith("the scorer")


def _describe(result: SampleResult, baseline: Path, inputs: Inputs) -> str:
    """What went wrong, in the build owner's words: the candidate's or the scorer's own message
    (the sample's `error_detail`), with the baseline's scratch path shown as the user's."""
    detail = (result.error_detail or "").strip()
    if _scorer_failed(result) and detail:
        message = f"the scorer raised {_last_line(detail)}"
    elif detail:
        message = _first_line(detail) if not detail.startswith("Traceback") else _last_line(detail)
    else:
        message = _first_line(result.error or "no result")
    return message.replace(str(baseline), str(inputs.agent_repo))


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else text


def _error_location(result: SampleResult, baseline: Path, inputs: Inputs) -> str | None:
    """The innermost `File "...", line N` of the candidate's traceback inside the baseline, as the
    user's path; the scorer's file when the scorer raised."""
    assert inputs.mode_a is not None
    if _scorer_failed(result):
        return str(inputs.mode_a.scorer)
    location = None
    for line in (result.error_detail or "").splitlines():
        text = line.strip()
        if text.startswith('File "') and '", line ' in text:
            name, _, rest = text[len('File "'):].partition('", line ')
            number = rest.split(",")[0]
            path = Path(name)
            if path.is_relative_to(baseline) and number.isdigit():
                location = f"{inputs.agent_repo / path.relative_to(baseline)}:{number}"
    return location


def _bound_names(tree: ast.Module) -> list[str]:
    """Names bound at a module's top level (also inside top-level if/try blocks)."""
    names: list[str] = []
    pending: list[ast.stmt] = list(tree.body)
    while pending:
        node = pending.pop(0)
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            names.append(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names += [alias.asname or alias.name.split(".")[0] for alias in node.names]
        elif isinstance(node, ast.Assign):
            names += [t.id for t in node.targets if isinstance(t, ast.Name)]
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.append(node.target.id)
        elif isinstance(node, ast.If):
            pending += [*node.body, *node.orelse]
        elif isinstance(node, ast.Try):
            pending += [*node.body, *node.orelse, *node.finalbody,
                        *(stmt for handler in node.handlers for stmt in handler.body)]
    return names


def _check_agent_class(baseline: Path, config: ModeBBuild, inputs: Inputs) -> None:
    module, class_name = config.harbor.agent.split(":")
    rel = _module_file(module, baseline)
    loaded = inputs.loaded
    try:
        tree = ast.parse((baseline / rel).read_bytes(), filename=rel)
    except SyntaxError as exc:
        raise VeroError(f"harbor.agent {config.harbor.agent!r}: {rel} does not parse: {exc.msg}",
                        where=f"{inputs.agent_repo / rel}:{exc.lineno}", fix="fix the syntax error") from None
    names = _bound_names(tree)
    if class_name not in names:
        hint = _did_you_mean(_closest(class_name, names))
        raise VeroError(f"{loaded.field_at('harbor')}: agent {config.harbor.agent!r}: the baseline's {rel} defines "
                        f"no {class_name!r}{hint}", where=str(loaded.path),
                        fix=f"fix harbor.agent in build.yaml, or define class {class_name} in "
                            f"{inputs.agent_repo / rel}")
