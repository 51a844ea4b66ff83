"""`IsolatedAgent`: the Harbor agent vero's Mode B strategy runs instead of the candidate's class.

Harbor imports this module (vero's package alone is on its PYTHONPATH) and constructs one agent
per trial. `setup` starts the candidate's `module:Class` in its own process as the harness user
(`vero.modeb.isolation.trusted_side`), `run` relays the run and copies the AgentContext and the logs back.
The candidate's name and version are reported as the agent's. What the candidate's agent does not
get: Harbor's process and memory, the Docker socket, the inner tasks' files, the trial directory,
`resume`/`load` and trajectory capabilities, and direct access to `logs_dir` (it writes a private
copy that is copied back after each phase).

Runs in harbor's interpreter only (it imports harbor).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from harbor.agents.base import BaseAgent  # pants: no-infer-dep
from harbor.models.trial.paths import EnvironmentPaths  # pants: no-infer-dep

from vero.modeb.isolation.errors import CandidateAgentError
from vero.modeb.isolation.protocol import Ready, Start
from vero.modeb.isolation.spec import IsolationSpec
from vero.modeb.isolation.trusted_side import CandidateProcess

# Constructor arguments harbor injects for itself (or for the oracle), not for the candidate.
_NOT_FORWARDED = frozenset({"environment_logs_dir", "override_setup_timeout_sec", "load_trajectory",
                            "task_dir", "trial_paths", "agent_timeout_sec"})


def _is_json(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True


# Every process that `docker exec` started (each gets its own session) dies, and so does
# everything such a process spawned, even after `setsid`: only the container's own command
# (session 1: Harbor's `sh -c "sleep infinity"` and whatever the task's image runs) and this
# script's session survive. SIGSTOP first, so no victim forks a replacement; a few rounds for
# processes forked in flight.
KILL_EXECED_PROCESSES = r"""
session_of() { local s; s=$(cat "/proc/$1/stat" 2>/dev/null) || return 1; s=${s##*) }; set -- $s; echo "$4"; }
mine=$(session_of $$)
for _ in 1 2 3 4 5; do
  victims=()
  for d in /proc/[0-9]*; do
    p=${d#/proc/}
    sid=$(session_of "$p") || continue
    [[ "$sid" == 1 || "$sid" == "$mine" ]] || victims+=("$p")
  done
  (( ${#victims[@]} )) || break
  kill -STOP "${victims[@]}" 2>/dev/null
  kill -KILL "${victims[@]}" 2>/dev/null
  sleep 0.1
done
true
"""


class IsolatedAgent(BaseAgent):  # type: ignore[misc]
    """Runs the candidate's agent named by `VERO_ISOLATION` in a separate unprivileged process."""

    def __init__(self, logs_dir: Path, model_name: str | None = None, logger: logging.Logger | None = None,
                 mcp_servers: list[Any] | None = None, skills_dir: str | None = None, *,
                 extra_env: dict[str, str] | None = None, **kwargs: Any) -> None:
        forwarded = {key: value for key, value in kwargs.items()
                     if key not in _NOT_FORWARDED and _is_json(value)}
        super().__init__(logs_dir, model_name, logger, mcp_servers, skills_dir, extra_env=extra_env, **kwargs)
        self._spec = IsolationSpec.from_environ(os.environ)
        self._start = Start(candidate=self._spec.candidate, model_name=model_name, kwargs=forwarded,
                            extra_env=dict(extra_env or {}),
                            mcp_servers=[server.model_dump(mode="json") for server in self.mcp_servers],
                            skills_dir=skills_dir)
        self._process: CandidateProcess | None = None
        self._ready: Ready | None = None

    @staticmethod
    def name() -> str:
        """Harbor's name for this wrapper (results report the candidate's name, see `to_agent_info`)."""
        return "vero-isolated"

    def version(self) -> str | None:
        """The candidate's version, once its process reported it."""
        return self._ready.version if self._ready is not None else None

    def to_agent_info(self) -> Any:
        """Harbor's AgentInfo, with the candidate's name."""
        info = super().to_agent_info()
        if self._ready is not None:
            info.name = self._ready.name
        return info

    async def setup(self, environment: Any) -> None:
        """Start the candidate's process and run its `setup`."""
        self._process = await CandidateProcess.start(self._spec, self._start, self.logger)
        try:
            self._ready = await self._process.ready()
            await self._process.phase("setup", environment, logs_dir=Path(self.logs_dir))
        except BaseException:
            await self._close()
            raise

    async def run(self, instruction: str, environment: Any, context: Any) -> None:
        """Run the candidate's `run`; its process ends afterwards, also on a timeout (cancellation),
        and the verifier's directories in the task container are emptied."""
        if self._process is None:
            raise CandidateAgentError("run() was called before setup()")
        try:
            await self._process.phase("run", environment, logs_dir=Path(self.logs_dir),
                                      instruction=instruction, context=context)
        finally:
            try:
                await self._close()
            finally:
                await self._clear_verifier_dirs(environment)

    async def _clear_verifier_dirs(self, environment: Any) -> None:
        """Empty /logs/verifier and /tests in the task container, as root.

        Harbor 0.24 does not clear them before a single-step shared-mode verifier runs, so an
        agent could plant a `reward.json` there that outranks the verifier's `reward.txt` (seen
        in tests/compiler/test_e2e_modeb.py). Harbor's multi-step trials clear them the same way.
        First every process the agent started is killed (see KILL_EXECED_PROCESSES), so
        nothing it left running can race the verifier.
        """
        paths = EnvironmentPaths.for_os(environment.os)
        try:
            await environment.exec(KILL_EXECED_PROCESSES, user="root", timeout_sec=30)
            await environment.empty_dirs([paths.verifier_dir], chmod=True)
            await environment.empty_dirs([paths.tests_dir], chmod=False)
        except Exception as exc:
            # Not fatal here (the container may be gone; then the verifier fails on its own), and
            # it must not hide the exception the run itself ended with.
            self.logger.warning("could not empty the verifier's directories: %s", exc)

    async def _close(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            await process.close(Path(self.logs_dir))
