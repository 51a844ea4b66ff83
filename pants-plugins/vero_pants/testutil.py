"""What the plugin's tests share: the pex CLI options for a RuleRunner, and a stand-in compiler."""

from __future__ import annotations

import hashlib
import os
import subprocess
import textwrap
from pathlib import Path

import pytest
from pants.testutil.rule_runner import RuleRunner

PEX_CLI = os.environ.get("VERO_PEX_CLI", "")

# A stand-in compiler with the real CLI's shape. `harbor describe -c CFG` answers from build.yaml
# written as JSON (a YAML subset); `harbor build -c CFG -o OUT --runtime-pex PEX` lists the files it
# was given, so a test sees exactly what the sandbox held.
FAKE_COMPILER = textwrap.dedent(
    """
    import json, os, sys
    args = sys.argv[1:]
    value = lambda flag: args[args.index(flag) + 1]
    if args[:2] == ["harbor", "describe"]:
        with open(value("--config")) as f:
            config = json.load(f)
        if "invalid" in config:
            sys.exit(print("error: " + config["invalid"], file=sys.stderr) or 2)
        fields = ["agent_repo", "dataset", "scorer", "inner_task", "solution"]
        inputs = [{"field": k, "path": config[k]} for k in fields if k in config]
        print(json.dumps({"inputs": inputs, "secrets": config.get("secrets", [])}))
        sys.exit(0)
    assert args[:2] == ["harbor", "build"], args
    config, out, pex = value("-c"), value("-o"), value("--runtime-pex")
    inputs = sorted(os.path.join(d, f) for d, _, fs in os.walk(".") for f in fs
                    if not d.startswith(("./.cache", "./__vero_out")))
    os.makedirs(os.path.join(out, "environment", "bin"))
    with open(os.path.join(out, "inputs.json"), "w") as f:
        seen = {"config": config, "inputs": inputs, "secret": os.environ.get("API_KEY"), "argv": args}
        json.dump(seen, f, sort_keys=True)
    with open(pex, "rb") as src, open(os.path.join(out, "environment", "bin", "vero.pex"), "wb") as dst:
        dst.write(src.read())
    print("checked: nothing real")
    """
)
FAKE_COMPILER_BUILD = "python_sources(name='lib')\npex_binary(name='bin', entry_point='compile.py')\n"


def require_pex_cli() -> None:
    """Skip (a failure under CI=true) without the pex CLI that ./pants bootstrapped."""
    if not PEX_CLI or not os.path.exists(PEX_CLI):
        pytest.skip("VERO_PEX_CLI (build-support/bin/pex, built by ./pants) is needed")


def set_options(runner: RuleRunner, env: dict[str, str], *extra: str) -> None:
    """Options under which `runner` builds PEXes with the bootstrapped pex CLI, and `env` for rules."""
    data = Path(PEX_CLI).read_bytes()
    version = subprocess.run([PEX_CLI, "--version"], capture_output=True, text=True, check=True).stdout.strip()
    known = f"v{version}|linux_x86_64|{hashlib.sha256(data).hexdigest()}|{len(data)}"
    runner.set_options(
        [
            f"--pex-cli-url-template=file://{PEX_CLI}",
            f"--pex-cli-version=v{version}",
            f"--pex-cli-known-versions=['{known}']",
            "--python-interpreter-constraints=['CPython>=3.9,<3.12']",
            "--python-bootstrap-search-path=['<PYENV>', '<PATH>']",
            *extra,
        ],
        env_inherit={"PATH", "PYENV_ROOT", "HOME"},
        env=env,
    )
