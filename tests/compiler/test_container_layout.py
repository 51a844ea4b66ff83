"""The container layout (`vero.container.CONTAINER`) is what the compiled task really uses.

Each compiled file is parsed as its consumer reads it (Compose YAML, Dockerfile instructions,
shell words, TOML, serve.json) and every path, port, user and name in it is compared with the
layout, so the layout and the task cannot drift apart.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import tomllib
import yaml

from tests.support.benchmarks import (
    fake_runtime_pex,
    mode_b_config,
    write_local_registry,
    write_mode_a,
    write_mode_b,
    write_yaml,
)
from vero.compiler import layout
from vero.compiler.compiler import build_task
from vero.compiler.render import UnescapedValueError, environment
from vero.container import CONTAINER, ContainerLayout
from vero.serve.config import ServePaths, load_serve_config

C = CONTAINER


def _bench(kind: str, root: Path) -> Path:
    if kind == "A":
        return write_mode_a(root / "bench")
    config = write_mode_b(root / "bench")
    if kind == "B-registry":
        inner = root / "bench" / "inner"
        registry = write_local_registry(root / "registry", {d.name: d for d in sorted(inner.iterdir())}, git=False)
        data = mode_b_config(inner_task=None)
        data["harbor"] = {**data["harbor"], "task_source": "bench@1.0", "registry_path": str(registry)}
        write_yaml(config, data)
    return config


@pytest.fixture(scope="module", params=["A", "B-source", "B-registry"])
def task(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    kind = str(request.param)  # type: ignore[attr-defined]  # set for parametrized fixtures
    root = tmp_path_factory.mktemp(f"layout-{kind}")
    out = root / "out"
    build_task(_bench(kind, root), out, fake_runtime_pex(root / "pex" / "vero.pex"), {})
    return kind, out


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """Dockerfile instructions as (KEYWORD, arguments), continuation lines joined, comments dropped."""
    logical: list[str] = []
    pending = ""
    for line in dockerfile.read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    return [(text.split(None, 1)[0], text.split(None, 1)[1]) for text in logical]


def _copies(dockerfile: Path) -> dict[str, str]:
    """COPY source (relative to environment/) -> destination in the image."""
    copies = {}
    for keyword, args in _instructions(dockerfile):
        if keyword == "COPY":
            source, dest = args.split()
            copies[source] = dest
    return copies


# Shell keywords that can open a simple command's line: `then useradd ...` is a `useradd`.
_KEYWORDS = {"then", "else", "do"}


def _commands(dockerfile: Path) -> list[list[str]]:
    """Every simple command of every RUN, as shell words."""
    commands = []
    for keyword, args in _instructions(dockerfile):
        if keyword != "RUN":
            continue
        words: list[str] = []
        lexer = shlex.shlex(args, posix=True, punctuation_chars=";&|")
        for word in lexer:
            if word in (";", "&&", "||", "|"):
                commands.append(words)
                words = []
            elif words or word not in _KEYWORDS:
                words.append(word)
        commands.append(words)
    return commands


def _command(commands: list[list[str]], *prefix: str) -> list[str]:
    return next(c for c in commands if c[:len(prefix)] == list(prefix))


def _compose(out: Path) -> dict[str, Any]:
    compose: dict[str, Any] = yaml.safe_load((out / layout.COMPOSE).read_text())
    return compose


def test_the_compose_file_uses_the_layout(task: tuple[str, Path]) -> None:
    kind, out = task
    services = _compose(out)["services"]
    assert set(services) == {C.main_service, C.sidecar_service}
    main, side = services[C.main_service], services[C.sidecar_service]
    assert main["labels"]["io.vero.role"] == C.main_service and side["labels"]["io.vero.role"] == C.sidecar_service
    assert main["command"] == [C.seed_script]
    assert main["healthcheck"]["test"] == ["CMD", "test", "-f", C.seed_marker]
    assert main["environment"] == {C.eval_url_env: C.eval_url}
    url = urlsplit(C.eval_url)
    assert (url.hostname, url.port) == (C.sidecar_service, C.eval_port)
    assert list(main["depends_on"]) == [C.sidecar_service]
    assert main["volumes"] == [f"work:{C.work_volume}", f"results:{C.results_dir}:ro", f"token:{C.token_dir}:ro"]
    assert side["command"] == ["vero", "harbor", "serve", "--config", C.serve_json]
    assert side["volumes"][:4] == [f"work:{C.optimizer_work}:ro", f"results:{C.results_dir}",
                                   f"token:{C.token_dir}", f"admin:{C.admin_dir}"]
    assert [mount.split(":")[0] for mount in side["tmpfs"]] == list(C.scratch_dirs)
    assert C.health_url in side["healthcheck"]["test"][-1]
    assert urlsplit(C.health_url).port == C.eval_port
    if kind == "A":
        assert len(side["volumes"]) == 4 and C.nested_jobs_env not in side.get("environment", {})
        return
    # Mode B: the host's socket, and the nested jobs dir at its host path (Compose interpolates it).
    jobs = side["environment"][C.nested_jobs_env]
    assert jobs == C.nested_jobs_dir
    assert jobs.startswith(f"${{{C.nested_base_env}:-{C.nested_base_default}}}/")
    assert side["volumes"][4:] == [f"{C.docker_socket}:{C.docker_socket}",
                                   {"type": "bind", "source": jobs, "target": jobs,
                                    "bind": {"create_host_path": True}}]


def test_the_main_image_uses_the_layout(task: tuple[str, Path]) -> None:
    _, out = task
    dockerfile = out / layout.MAIN_DOCKERFILE
    copies = _copies(dockerfile)
    env_dir = out / layout.ENVIRONMENT
    assert copies == {"agent-seed/": f"{C.seed_dir}/", "main/seed.sh": C.seed_script,
                      "bin/vero.pex": C.pex_path, "bin/vero": C.vero_command}
    assert {env_dir / source for source in copies} == {
        out / layout.SEED_OUT, out / layout.SEED_SH, out / layout.PEX_OUT, out / layout.WRAPPER_OUT}
    assert all((env_dir / source).exists() for source in copies)
    commands = _commands(dockerfile)
    useradd = _command(commands, "useradd")
    assert useradd[useradd.index("--uid") + 1] == str(C.agent_uid) and useradd[-1] == C.agent_user
    assert {C.work_volume, C.seed_marker_dir, C.main_dir} <= set(_command(commands, "mkdir", "-p")[2:])
    assert C.venv_dir in _command(commands, "PEX_TOOLS=1")
    assert ("WORKDIR", C.work_volume) in _instructions(dockerfile)
    wrapper = (out / layout.WRAPPER_OUT).read_text().splitlines()[-1]
    assert shlex.split(wrapper) == ["exec", f"{C.venv_dir}/pex", "$@"]


def test_the_sidecar_image_uses_the_layout(task: tuple[str, Path]) -> None:
    kind, out = task
    dockerfile = out / layout.SIDECAR_DOCKERFILE
    copies = _copies(dockerfile)
    items = {"A": [C.dataset_dir, C.scorer_dir], "B-source": [C.inner_tasks_dir],
             "B-registry": [C.registry_dir]}[kind] + [C.identity_dir]
    expected = {"agent-baseline/": f"{C.baseline_dir}/", "sidecar/serve.json": C.serve_json,
                "bin/vero.pex": C.pex_path, "bin/vero": C.vero_command}
    expected.update({f"sidecar/{layout.sidecar_item(item)}/": f"{item}/" for item in items})
    assert copies == expected
    env_dir = out / layout.ENVIRONMENT
    assert all((env_dir / source).exists() for source in copies)
    assert (out / layout.sidecar_out(C.serve_json)).is_file() and (out / layout.IDENTITY_OUT).is_file()
    commands = _commands(dockerfile)
    assert _command(commands, "ln", "-s") == ["ln", "-s", C.optimizer_repo, C.repo_dir]
    assert C.optimizer_repo == f"{C.optimizer_work}/{Path(C.repo_dir).relative_to(C.work_volume)}"
    assert {C.work_dir, C.results_dir, C.token_dir, C.admin_dir, C.optimizer_work, C.work_volume} <= set(
        _command(commands, "mkdir", "-p")[2:])
    assert _command(commands, "chmod", "0700") == ["chmod", "0700", C.admin_dir]
    assert _command(commands, "chmod", "-R", "go-rwx") == ["chmod", "-R", "go-rwx", C.sidecar_dir]
    useradd = _command(commands, "useradd")
    assert useradd[-1] == C.harness_user
    if kind != "A":
        assert useradd[useradd.index("--uid") + 1] == str(C.mode_b_harness_id)


def test_the_scripts_and_task_toml_use_the_layout(task: tuple[str, Path]) -> None:
    _, out = task
    seed = dict(line.split("=", 1) for line in (out / layout.SEED_SH).read_text().splitlines()
                if line[:1].isalpha() and "=" in line and " " not in line.split("=", 1)[0])
    assert {key: shlex.split(value)[0] for key, value in seed.items() if key != "expected"} == {
        "seed_dir": C.seed_dir, "repo": C.repo_dir, "staging": C.seed_staging, "marker": C.seed_marker,
        "agent": C.agent_user}
    vero_lines = [shlex.split(line.rstrip("\\ ")) for line in (out / layout.TEST_SH).read_text().splitlines()
                  if line.startswith("vero harbor ")]
    finalize = next(words for words in vero_lines if words[2] == "finalize")
    archive = next(words for words in vero_lines if words[2] == "archive")
    for words, output in ((finalize, C.reward_file), (archive, C.session_archive)):
        assert words[words.index("--token-file") + 1] == C.token_file
        assert words[words.index("--output") + 1] == output
    assert Path(C.reward_file).parent == Path(C.session_archive).parent == Path(C.reward_dir)
    toml = tomllib.loads((out / layout.TASK_TOML).read_text())
    assert toml["agent"]["user"] == C.agent_user
    assert toml["artifacts"][0]["source"] == C.log_dir and toml["artifacts"][1]["source"] == C.rescue_archive
    assert {a["service"] for a in toml["artifacts"]} == {C.sidecar_service}
    [hook] = toml["verifier"]["collect"]
    assert hook["service"] == C.sidecar_service
    assert shlex.split(hook["command"]) == ["vero", "harbor", "archive", "--config", C.serve_json,
                                            "--output", C.rescue_archive]


def test_serve_json_uses_the_layout(task: tuple[str, Path]) -> None:
    kind, out = task
    serve = load_serve_config(out / layout.SERVE_JSON_OUT)
    assert serve.paths == ServePaths(
        agent_repo=C.repo_dir, results_dir=C.results_dir, admin_dir=C.admin_dir, token_file=C.token_file,
        baseline_dir=C.baseline_dir, trusted_repo=C.trusted_repo, work_dir=C.work_dir, log_dir=C.log_dir,
        identity_file=C.identity_file)
    assert (serve.port, serve.harness_user, serve.fetch_uid) == (C.eval_port, C.harness_user, C.agent_uid)
    if kind == "A":
        assert serve.mode_a is not None and serve.mode_a.dataset_dir == C.dataset_dir
        assert Path(serve.mode_a.scorer).parent == Path(C.scorer_dir)
        return
    assert serve.mode_b is not None
    if kind == "B-source":
        assert serve.mode_b.harbor.task_source == C.inner_tasks_dir
    else:
        assert serve.mode_b.harbor.registry_path == C.registry_json
        listing = json.loads((out / layout.sidecar_out(C.registry_json)).read_text())
        assert {Path(t["path"]).parent for t in listing[0]["tasks"]} == {Path(C.registry_tasks_dir)}


def test_templates_print_the_layout_only_through_a_filter() -> None:
    env = environment()
    with pytest.raises(UnescapedValueError, match="without a format filter"):
        env.from_string("cd {{ paths.repo_dir }}\n").render(paths=C)
    assert env.from_string("cd {{ paths.repo_dir|sh }}\n").render(paths=C) == f"cd {C.repo_dir}\n"


def test_the_layout_is_one_frozen_instance() -> None:
    assert ContainerLayout() == C
    with pytest.raises(AttributeError):
        C.vero_root = "/elsewhere"  # type: ignore[misc]
    with pytest.raises(ValueError, match="is not under"):
        layout.sidecar_item(C.admin_dir)
