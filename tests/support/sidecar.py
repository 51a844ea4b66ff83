"""Run a real `vero harbor serve` process on a loopback port for tests and benches."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.support.mode_a import ENTRYPOINT, LABEL_FIELDS, ModeABench, is_root

NOBODY_UID = 65534


def free_port() -> int:
    """A TCP port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve_config(root: Path, bench: ModeABench, **overrides: Any) -> dict[str, Any]:
    """A Mode A serve.json with every path under `root` (which the harness user can traverse)."""
    config: dict[str, Any] = {
        "version": 1, "mode": "A", "name": "test/arith", "host": "127.0.0.1", "port": free_port(),
        "paths": {"agent_repo": str(bench.agent_repo), "results_dir": str(root / "results"),
                  "admin_dir": str(root / "admin"), "token_file": str(root / "token" / "admin-token"),
                  "baseline_dir": str(bench.baseline_dir), "trusted_repo": str(root / "admin" / "repo"),
                  "work_dir": str(root / "work"), "log_dir": str(root / "log")},
        "baseline_commit": bench.baseline_commit,
        "splits": [{"split": "train", "access": "viewable"},
                   {"split": "validation", "access": "non_viewable"},
                   {"split": "test", "access": "no_access"}],
        "budgets": [{"split": "train", "total_run_budget": 2},
                    {"split": "validation", "total_sample_budget": 40, "max_samples_per_run": 8}],
        "reward_mode": "auto_best", "selection_split": "validation",
        "targets": [{"split": "test", "reward_key": "test_score"}],
        "submit_enabled": True, "score_baseline": False, "k_anonymity_floor": 5,
        "max_concurrency": 2, "harness_user": "nobody" if is_root() else None,
        # As in a compiled task, the optimizer's repo is read by another unprivileged uid.
        "fetch_uid": NOBODY_UID if is_root() else None,
        "mode_a": {"dataset_dir": str(bench.dataset_dir), "label_fields": LABEL_FIELDS,
                   "entrypoint": ENTRYPOINT, "scorer": str(bench.scorer), "sample_timeout": 30.0},
    }
    config.update(overrides)
    return config


@dataclass
class Sidecar:
    """A running sidecar process."""

    proc: subprocess.Popen[bytes]
    url: str
    config: dict[str, Any]
    log: Path

    @property
    def token_file(self) -> Path:
        return Path(self.config["paths"]["token_file"])

    @property
    def admin_dir(self) -> Path:
        return Path(self.config["paths"]["admin_dir"])

    @property
    def results_dir(self) -> Path:
        return Path(self.config["paths"]["results_dir"])

    def token(self) -> str:
        return self.token_file.read_text().strip()

    def admin_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token()}"}

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Send `sig` and wait for the process; return its exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def python_env() -> dict[str, str]:
    """This interpreter's import path, so the child imports the same vero."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}


CLI_CODE = "from vero.cli import main; main()"


def vero_argv(*args: str, code: str = CLI_CODE) -> list[str]:
    """Command line of the `vero` CLI run from these sources (`code` may patch vero first, then
    run the CLI: fault injection for drills)."""
    return [sys.executable, "-c", code, *args]


def start_sidecar(root: Path, config: dict[str, Any], name: str = "sidecar", wait: float = 60.0,
                  code: str = CLI_CODE, env: dict[str, str] | None = None) -> Sidecar:
    """Write `config` to `root/<name>.json`, start the server (with `env` added to its
    environment) and wait until /health answers."""
    config_path = root / f"{name}.json"
    config_path.write_text(json.dumps(config))
    log = root / f"{name}.log"
    with log.open("ab") as handle:
        proc = subprocess.Popen(vero_argv("harbor", "serve", "--config", str(config_path), code=code),
                                stdout=handle, stderr=subprocess.STDOUT, env={**python_env(), **(env or {})})
    url = f"http://127.0.0.1:{config['port']}"
    sidecar = Sidecar(proc=proc, url=url, config=config, log=log)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"sidecar exited with {proc.returncode}:\n{sidecar.log_text()}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return sidecar
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    sidecar.stop(signal.SIGKILL)
    raise AssertionError(f"sidecar did not become healthy:\n{sidecar.log_text()}")
