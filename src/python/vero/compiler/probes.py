"""Running parts of a task on the build host the way its containers will run them.

Each probe is a subprocess with a timeout that answers through a JSON reply file in a private
directory, so whatever the code under test prints never mixes with the answer:

- `probe_entrypoint`: the candidate's `module:function` imported as the Mode A harness imports
  it (the runtime interpreter, the baseline as working directory and on `PYTHONPATH`, no user
  site-packages), then the callable looked up;
- `probe_scorer`: the trusted scorer loaded with vero's own loader *from the runtime PEX*, i.e.
  with exactly the packages the sidecar image will have, under the runtime interpreter, and
  called once.

The runtime interpreter is the one the images' runtime Dockerfile picks: python3.11, else
python3.13 (the PEX carries wheels for those two).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import JsonValue

from vero.errors import VeroError

RUNTIME_PYTHONS = ("python3.11", "python3.13")
PEX_ROOT_VAR = "VERO_PEX_ROOT"  # where the scorer probe unpacks the runtime PEX
PROBE_TIMEOUT_SEC = 120.0
_REPLY = "reply.json"

# Runs under the runtime interpreter with the baseline on the path, like the Mode A harness.
_ENTRYPOINT_PROBE = r"""
import importlib, json, sys, traceback
entrypoint, reply = sys.argv[1], sys.argv[2]
module_name, attr = entrypoint.split(":")
def answer(**fields):
    with open(reply, "w", encoding="utf-8") as handle:
        json.dump(fields, handle)
try:
    module = importlib.import_module(module_name)
except BaseException as exc:
    frames = [(f.filename, f.lineno) for f in traceback.extract_tb(exc.__traceback__)]
    if isinstance(exc, SyntaxError) and exc.filename:
        frames.append((exc.filename, exc.lineno))
    answer(stage="import", error=f"{type(exc).__name__}: {exc}"[:2000], frames=frames)
    sys.exit(0)
where = getattr(module, "__file__", None)
if not hasattr(module, attr):
    names = sorted(n for n in vars(module) if not n.startswith("_") and callable(getattr(module, n)))
    answer(stage="missing", file=where, names=names)
elif not callable(getattr(module, attr)):
    answer(stage="not_callable", file=where, type=type(getattr(module, attr)).__name__)
else:
    answer(stage="ok", file=where)
"""

# Runs inside the runtime PEX (PEX_INTERPRETER=1): vero's own scorer loader and score rules.
_SCORER_PROBE = r"""
import json, sys, traceback
request_path, reply = sys.argv[1], sys.argv[2]
def answer(**fields):
    with open(reply, "w", encoding="utf-8") as handle:
        json.dump(fields, handle)
def frames(exc):
    found = [(f.filename, f.lineno) for f in traceback.extract_tb(exc.__traceback__)] if exc else []
    if isinstance(exc, SyntaxError) and exc.filename:
        found.append((exc.filename, exc.lineno))
    return found
from vero.core.scorer import load_scorer, normalize_score
from vero.errors import VeroError
with open(request_path, encoding="utf-8") as handle:
    request = json.load(handle)
try:
    score = load_scorer(request["scorer"])
except VeroError as exc:
    # load_scorer raises `from None`; the import error itself is still the context.
    answer(stage="import", error=exc.what, frames=frames(exc.__context__))
    sys.exit(0)
if not request["call"]:
    answer(stage="ok")
    sys.exit(0)
try:
    value = score(request["output"], request["row"])
except BaseException as exc:
    answer(stage="call", error=f"{type(exc).__name__}: {exc}"[:2000], frames=frames(exc))
    sys.exit(0)
try:
    result, metrics = normalize_score(value)
except ValueError as exc:
    answer(stage="value", error=str(exc))
else:
    answer(stage="ok", score=result, metrics=metrics)
"""


# sys._base_executable (CPython >= 3.7) is the interpreter a venv was created from, and the
# interpreter itself outside a venv.
_BASE_EXECUTABLE = "import sys; print(getattr(sys, '_base_executable', None) or sys.executable)"


@dataclass(frozen=True)
class Interpreter:
    """The interpreter the task's images will run: its command name and resolved executable."""

    name: str
    executable: str


@dataclass(frozen=True)
class ProbeReply:
    """What a probe found: `stage` is "ok" or where it failed; `frames` are (file, line) pairs."""

    stage: str
    error: str | None = None
    frames: list[tuple[str, int]] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)


def runtime_interpreter() -> Interpreter:
    """The first of python3.11 and python3.13 on PATH, resolved to its real executable (a
    version-manager shim would otherwise run once per sample) and, for a venv's interpreter (a
    venv-mode PEX, vero's own included, puts its venv first on PATH), to the interpreter the venv
    was made from: the images' interpreter has no third-party packages."""
    return _resolve(os.environ.get("PATH", os.defpath))


@functools.lru_cache(maxsize=8)
def _resolve(search_path: str) -> Interpreter:
    for name in RUNTIME_PYTHONS:
        found = shutil.which(name, path=search_path)
        if found is None:
            continue
        try:
            probe = subprocess.run([found, "-c", _BASE_EXECUTABLE], capture_output=True, text=True,
                                   timeout=PROBE_TIMEOUT_SEC, check=False)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if probe.returncode == 0 and probe.stdout.strip():
            return Interpreter(name=name, executable=probe.stdout.strip())
    raise VeroError(f"none of {', '.join(RUNTIME_PYTHONS)} is on PATH", where="build host",
                    fix="install CPython 3.11 (or 3.13): the build runs the entrypoint and the scorer under the "
                        "interpreter the task's images use")


def _run_probe(argv: list[str], *, cwd: Path, env: Mapping[str, str], reply: Path, what: str) -> ProbeReply:
    try:
        run = subprocess.run(argv, cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL, capture_output=True,
                             timeout=PROBE_TIMEOUT_SEC, check=False)
    except subprocess.TimeoutExpired:
        return ProbeReply(stage="timeout", error=f"{what} did not finish within {PROBE_TIMEOUT_SEC:g} s")
    except OSError as exc:
        return ProbeReply(stage="start", error=f"cannot start {argv[0]}: {exc.strerror}")
    try:
        raw = json.loads(reply.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        tail = run.stderr.decode("utf-8", "replace").strip()[-1500:]
        return ProbeReply(stage="crash", error=f"{what} exited {run.returncode} without an answer"
                                               + (f": {tail}" if tail else ""))
    frames = [(str(name), int(line)) for name, line in raw.pop("frames", []) if line is not None]
    return ProbeReply(stage=raw.pop("stage"), error=raw.pop("error", None), frames=frames, details=raw)


def probe_entrypoint(python: Interpreter, baseline: Path, entrypoint: str) -> ProbeReply:
    """Import `entrypoint`'s module from the baseline at `baseline` and look up its callable."""
    with tempfile.TemporaryDirectory(prefix="vero-probe-") as private:
        reply = Path(private) / _REPLY
        env = {"PATH": os.defpath, "HOME": private, "LANG": "C.UTF-8", "PYTHONPATH": str(baseline),
               "PYTHONDONTWRITEBYTECODE": "1", "PYTHONNOUSERSITE": "1", "TMPDIR": private}
        return _run_probe([python.executable, "-B", "-c", _ENTRYPOINT_PROBE, entrypoint, str(reply)],
                          cwd=baseline, env=env, reply=reply, what=f"importing {entrypoint}")


def probe_scorer(python: Interpreter, runtime_pex: Path, scorer: Path, *, call: bool, output: JsonValue = None,
                 row: Mapping[str, JsonValue] | None = None) -> ProbeReply:
    """Load the scorer at `scorer` inside the runtime PEX; with `call`, score `output` for `row`."""
    env = os.environ
    with tempfile.TemporaryDirectory(prefix="vero-probe-") as private:
        request = Path(private) / "request.json"
        request.write_text(json.dumps({"scorer": str(scorer), "call": call, "output": output,
                                       "row": dict(row or {})}), encoding="utf-8")
        reply = Path(private) / _REPLY
        # HOME or PEX_ROOT locate the PEX's unpacked venv, built once and reused by every probe (a
        # fresh one costs seconds). A running PEX hides PEX_* variables from its own environment, so
        # the Pants plugin passes its cache as VERO_PEX_ROOT.
        probe_env = {"PATH": env.get("PATH", os.defpath), "HOME": env.get("HOME", private), "LANG": "C.UTF-8",
                     "PEX_INTERPRETER": "1", "PYTHONDONTWRITEBYTECODE": "1", "TMPDIR": private}
        pex_root = env.get(PEX_ROOT_VAR) or env.get("PEX_ROOT")
        if pex_root:
            # A relative one (the Pants sandbox's cache) must survive the probe's other cwd.
            probe_env["PEX_ROOT"] = os.path.abspath(pex_root)
        # The working directory is empty: the scorer gets no sys.path entry the sidecar lacks.
        workdir = Path(private) / "cwd"
        workdir.mkdir()
        return _run_probe([python.executable, str(runtime_pex), "-c", _SCORER_PROBE, str(request), str(reply)],
                          cwd=workdir, env=probe_env, reply=reply, what="the scorer")
