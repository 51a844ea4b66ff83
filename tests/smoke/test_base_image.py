"""The local base image has what every compiled task relies on."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from testcontainers.core.container import DockerContainer

from tests.support.tools import require_base_image


@pytest.fixture(scope="module")
def base_container() -> Iterator[DockerContainer]:
    image = require_base_image()
    container = DockerContainer(image).with_command("sleep infinity")
    container.start()
    try:
        yield container
    finally:
        container.stop()


def _run(container: DockerContainer, command: str) -> str:
    code, output = container.exec(["bash", "-c", command])
    text: str = output.decode()
    assert code == 0, f"{command!r} exited {code}: {text}"
    return text.strip()


def test_python_is_3_11(base_container: DockerContainer) -> None:
    version = _run(base_container, "python3 -c 'import sys; print(\"%d.%d\" % sys.version_info[:2])'")
    assert version == "3.11"


def test_git_and_bash_work(base_container: DockerContainer) -> None:
    assert _run(base_container, "git --version").startswith("git version 2.")
    assert _run(base_container, "echo $BASH_VERSION").startswith("5.")
    # seeding a repo is what every task does first
    _run(base_container, "cd /tmp && git init -q r && cd r && git -c user.name=a -c user.email=a@b "
         "commit -q --allow-empty -m x && git rev-parse HEAD")


def test_runuser_for_unprivileged_candidates(base_container: DockerContainer) -> None:
    out = _run(base_container, "setpriv --reuid=65534 --regid=65534 --clear-groups id -u")
    assert out == "65534"
