"""The Harbor agent: plan with the skills, run the commands in the environment, log everything."""

from __future__ import annotations

import json

from harbor.agents.base import BaseAgent
from harbor.environments.base import BaseEnvironment
from harbor.models.agent.context import AgentContext

from rule_agent.skills import plan


class RuleAgent(BaseAgent):
    """Solves the tasks its skills recognise by running shell commands; no model is called."""

    @staticmethod
    def name() -> str:
        return "rule-agent"

    def version(self) -> str | None:
        return "1.0.0"

    async def setup(self, environment: BaseEnvironment) -> None:
        return None

    async def run(self, instruction: str, environment: BaseEnvironment, context: AgentContext) -> None:
        skill, commands = plan(instruction)
        steps = []
        for command in commands:
            result = await environment.exec(command=command, timeout_sec=60)
            steps.append({"command": command, "return_code": result.return_code,
                          "stdout": (result.stdout or "")[-2000:], "stderr": (result.stderr or "")[-2000:]})
            if result.return_code != 0:
                break
        log = {"skill": skill, "steps": steps}
        (self.logs_dir / "rule-agent.json").write_text(json.dumps(log, indent=2) + "\n")
        context.metadata = {"skill": skill, "n_commands": len(steps)}
