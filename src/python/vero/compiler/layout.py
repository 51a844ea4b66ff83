"""Where things live: in the compiled task directory and inside the two containers.

The container side follows docs/design.md (the container contract); `ServePaths` owns the
sidecar paths that serve.json carries, and these constants are derived from it where they overlap.
"""

from __future__ import annotations

import posixpath

from vero.modeb.docker_access import DEFAULT_SOCKET, NESTED_JOBS_ENV
from vero.serve.config import ServePaths

_SERVE = ServePaths()

# Users: the optimizer in main, candidate code in the sidecar.
AGENT_USER = "agent"
AGENT_UID = 1000
HARNESS_USER = "harness"

# main
WORK_VOLUME = "/work"
REPO_DIR = _SERVE.agent_repo
MAIN_RESULTS = _SERVE.results_dir
SEED_DIR = "/opt/vero/agent-seed"
SEED_SCRIPT = "/opt/vero/main/seed.sh"
SEED_STAGING = "/work/.agent-seeding"
SEED_MARKER = "/run/vero/seeded"
REWARD_DIR = "/logs/verifier"
REWARD_FILE = f"{REWARD_DIR}/reward.json"
# The session archive test.sh takes after finalize (Harbor copies the verifier dir to the trial).
SESSION_ARCHIVE = f"{REWARD_DIR}/session.tar.gz"

# both
PEX_PATH = "/opt/vero/bin/vero.pex"
VENV_DIR = "/opt/vero/venv"
TOKEN_FILE = _SERVE.token_file
TOKEN_DIR = posixpath.dirname(TOKEN_FILE)
EVAL_PORT = 8100
EVAL_URL = f"http://eval-sidecar:{EVAL_PORT}"

# sidecar: the optimizer's work volume is mounted read-only at OPTIMIZER_WORK and reached through
# the symlink /work/agent, so the sidecar uses the same paths as main (/work/agent, /work/results):
# with the volume itself at /work, Docker could not create the results mount point inside it.
SIDECAR_DIR = "/opt/vero/sidecar"
SIDECAR_SERVICE = "eval-sidecar"
SIDECAR_LOG_DIR = _SERVE.log_dir
SERVE_JSON = f"{SIDECAR_DIR}/serve.json"
OPTIMIZER_WORK = "/var/lib/vero/optimizer"
OPTIMIZER_REPO = posixpath.join(OPTIMIZER_WORK, posixpath.relpath(REPO_DIR, WORK_VOLUME))
SIDECAR_RESULTS = _SERVE.results_dir
ADMIN_DIR = _SERVE.admin_dir
WORK_DIR = _SERVE.work_dir
BASELINE_DIR = _SERVE.baseline_dir
# The task's identity (vero.compiler.identity), copied like the other sidecar items.
IDENTITY_ITEM = posixpath.basename(posixpath.dirname(_SERVE.identity_file))
DATASET_ITEM = "dataset"
SCORER_ITEM = "scorer"
INNER_TASKS_ITEM = "inner_tasks"
# Mode B with a local registry: registry.json (the dataset, its partition tasks only) and tasks/<dir>/.
REGISTRY_ITEM = "registry"
REGISTRY_JSON = "registry.json"
REGISTRY_TASKS = "tasks"
# Mode B: the nested harbor's jobs dir is a host dir mounted at the same path (harbor bind-mounts
# trial dirs into the inner tasks' containers through the socket), one per outer trial: Compose
# interpolates the project name harbor gives each trial. VERO_NESTED_DIR on the host moves the base.
NESTED_BASE_VAR = "VERO_NESTED_DIR"
NESTED_BASE_DEFAULT = "/tmp/vero-nested"
NESTED_JOBS_DIR = f"${{{NESTED_BASE_VAR}:-{NESTED_BASE_DEFAULT}}}/${{COMPOSE_PROJECT_NAME}}"
NESTED_JOBS_VAR = NESTED_JOBS_ENV
DOCKER_SOCKET = DEFAULT_SOCKET
# A fixed harness uid/gid in the Mode B sidecar, far from the usual ids of a host's docker group.
MODE_B_HARNESS_ID = 61000
# Mode B: on SIGTERM the sidecar stops its nested harbor, which cancels and tears down its trials.
SIDECAR_STOP_GRACE = "10s"
MODE_B_SIDECAR_STOP_GRACE = "90s"
HEALTH_PROBE = (f"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{EVAL_PORT}/health', "
                "timeout=4).read()")

# Size-limited tmpfs mounts in the sidecar: every place candidate code can write (its HOME and
# checkout under WORK_DIR, /tmp, /var/tmp), so a disk flood fills a bounded tmpfs, never the host.
SIDECAR_SCRATCH_DIRS = (WORK_DIR, "/tmp", "/var/tmp")

# The compiled task directory.
TASK_TOML = "task.toml"
INSTRUCTION = "instruction.md"
COMPOSE = "environment/docker-compose.yaml"
MAIN_DOCKERFILE = "environment/Dockerfile"
SEED_SH = "environment/main/seed.sh"
SIDECAR_DOCKERFILE = "environment/sidecar/Dockerfile"
SIDECAR_OUT = "environment/sidecar"
SERVE_JSON_OUT = "environment/sidecar/serve.json"
IDENTITY_OUT = f"{SIDECAR_OUT}/{IDENTITY_ITEM}/{posixpath.basename(_SERVE.identity_file)}"
PEX_OUT = "environment/bin/vero.pex"
WRAPPER_OUT = "environment/bin/vero"
TEST_SH = "tests/test.sh"
SOLUTION_DIR = "solution"
SOLVE_SH = "solution/solve.sh"

# The rescue archive: a [[verifier.collect]] hook writes it in the sidecar after the agent phase,
# also when that phase failed, and an [[artifacts]] entry lands it in the trial's artifacts/ dir.
RESCUE_ARCHIVE = "/var/lib/vero/rescue/session-rescue.tar.gz"
RESCUE_DESTINATION = "session-rescue.tar.gz"
RESCUE_TIMEOUT_SEC = 300.0
# test.sh's archive request after finalize; Harbor's verifier timeout leaves FINALIZE_SLACK_SEC.
SESSION_ARCHIVE_TIMEOUT_SEC = 45.0

# Harbor timeouts the compiler derives: image builds and start-up, and slack around finalize.
BUILD_TIMEOUT_SEC = 900.0
VERIFIER_SLACK_SEC = 120.0
# The finalize client gives up this long before Harbor's verifier timeout, to write the floors.
FINALIZE_SLACK_SEC = 60.0
