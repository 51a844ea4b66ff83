"""Where things live inside the two containers of a compiled task: the one owner of those paths.

The compiler renders them into the compose file, the Dockerfiles and the scripts; the sidecar's
`ServePaths` defaults, the `vero harbor` client and the Mode B Docker checks read them from here,
so both sides of the contract are the same values. The compiled task directory's own files are
`vero.compiler.layout`.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass


@dataclass(frozen=True)
class ContainerLayout:
    """The paths, port, users and names of the two services of a compiled task (`CONTAINER`).

    ```
    main: the optimizer's workbench (user agent, uid 1000; Harbor's agent and verifier run here)
      /work/                        volume `work`
        agent/                      the optimizer's git repo, seeded once by seed.sh
        .agent-seeding/             seed.sh's staging copy, renamed to agent/ when complete
        results/                    volume `results`, read-only: the optimizer's view of its evaluations
      /opt/vero/
        agent-seed/                 files/ + BASELINE.json: the baseline commit
        main/seed.sh                the service's command: seeds /work/agent, then sleeps
        bin/vero.pex, venv/         the vero runtime (both images); /usr/local/bin/vero runs it
      /run/vero/seeded              seed.sh's marker (main's health check)
      /var/lib/vero/token/          volume `token`, read-only: admin-token (0600 root)
      /logs/verifier/               Harbor's verifier dir: reward.json, session.tar.gz
      env VERO_EVAL_URL=http://eval-sidecar:8100

    eval-sidecar: the trusted evaluator (root; candidate code runs as user harness)
      /opt/vero/
        sidecar/                    root-only (0700)
          serve.json                what `vero harbor serve --config` reads
          dataset/, scorer/         Mode A
          inner_tasks/              Mode B, a local task source
          registry/                 Mode B, a local registry: registry.json + tasks/<dir>/
          identity/task.json        the task's identity (its digest)
        agent-baseline/             files/ + BASELINE.json: the trusted repo's first commit
        bin/vero.pex, venv/
      /work/agent                   -> /var/lib/vero/optimizer/agent (a symlink in the image)
      /work/results/                volume `results`
      /var/lib/vero/
        optimizer/                  volume `work`, read-only
        token/admin-token           volume `token`: written by the sidecar at start
        admin/                      volume `admin` (0700): ledger, experiments, repo/ (trusted repo)
        work/                       tmpfs (0711): candidate checkouts and scratch
        rescue/session-rescue.tar.gz  the rescue archive of the collect hook
      /var/log/vero/                why the sidecar stopped (Harbor collects it)
      /tmp, /var/tmp                tmpfs (1777)
      :8100                         `vero harbor serve` (GET /health)
      Mode B: /var/run/docker.sock (the host's), and the nested jobs dir at its host path
        (${VERO_NESTED_DIR:-/tmp/vero-nested}/${COMPOSE_PROJECT_NAME}, named in VERO_NESTED_JOBS_DIR)
    ```
    """

    vero_root: str = "/opt/vero"       # what the images bake (both)
    state_root: str = "/var/lib/vero"  # volumes and scratch of the sidecar, the token volume in main
    work_volume: str = "/work"         # the optimizer's volume in main

    # --- users and names ---------------------------------------------------------------------------

    @property
    def agent_user(self) -> str:
        """The optimizer's user in main (Harbor's `[agent] user`)."""
        return "agent"

    @property
    def agent_uid(self) -> int:
        """The optimizer's uid; the sidecar's fetcher reads its repo as this uid."""
        return 1000

    @property
    def harness_user(self) -> str:
        """The sidecar's unprivileged user for candidate code."""
        return "harness"

    @property
    def mode_b_harness_id(self) -> int:
        """The harness uid/gid in the Mode B sidecar, far from the usual ids of a host's docker group."""
        return 61000

    @property
    def main_service(self) -> str:
        """Harbor's service name of the optimizer's container."""
        return "main"

    @property
    def sidecar_service(self) -> str:
        """The compose service (and host name) of the eval sidecar."""
        return "eval-sidecar"

    # --- the sidecar's HTTP endpoint -----------------------------------------------------------------

    @property
    def eval_port(self) -> int:
        """The port `vero harbor serve` listens on."""
        return 8100

    @property
    def eval_url(self) -> str:
        """The sidecar's URL as main reaches it."""
        return f"http://{self.sidecar_service}:{self.eval_port}"

    @property
    def eval_url_env(self) -> str:
        """The variable that gives `vero harbor eval|status|submit|finalize` the sidecar's URL."""
        return "VERO_EVAL_URL"

    @property
    def health_url(self) -> str:
        """The sidecar's health check, from inside the sidecar."""
        return f"http://127.0.0.1:{self.eval_port}/health"

    # --- main --------------------------------------------------------------------------------------

    @property
    def repo_dir(self) -> str:
        """The optimizer's repo; the sidecar reaches it at the same path through a symlink."""
        return posixpath.join(self.work_volume, "agent")

    @property
    def results_dir(self) -> str:
        """The results volume: read-only in main, written by the sidecar."""
        return posixpath.join(self.work_volume, "results")

    @property
    def seed_staging(self) -> str:
        """seed.sh builds the repo here, on the same volume, then renames it into place."""
        return posixpath.join(self.work_volume, ".agent-seeding")

    @property
    def seed_dir(self) -> str:
        """The baseline files and BASELINE.json that seed.sh commits."""
        return posixpath.join(self.vero_root, "agent-seed")

    @property
    def main_dir(self) -> str:
        """main's own scripts."""
        return posixpath.join(self.vero_root, "main")

    @property
    def seed_script(self) -> str:
        """main's command."""
        return posixpath.join(self.main_dir, "seed.sh")

    @property
    def seed_marker(self) -> str:
        """Written when the repo is seeded: main is healthy once it exists."""
        return "/run/vero/seeded"

    @property
    def seed_marker_dir(self) -> str:
        """The seed marker's directory, created in main's image."""
        return posixpath.dirname(self.seed_marker)

    @property
    def reward_dir(self) -> str:
        """Harbor's verifier dir in main, copied to the trial."""
        return "/logs/verifier"

    @property
    def reward_file(self) -> str:
        """The reward test.sh has `vero harbor finalize` write."""
        return posixpath.join(self.reward_dir, "reward.json")

    @property
    def session_archive(self) -> str:
        """The session archive test.sh takes after finalize."""
        return posixpath.join(self.reward_dir, "session.tar.gz")

    # --- both ----------------------------------------------------------------------------------------

    @property
    def pex_path(self) -> str:
        """The runtime PEX baked into both images."""
        return posixpath.join(self.vero_root, "bin", "vero.pex")

    @property
    def venv_dir(self) -> str:
        """The runtime PEX unpacked at image build time, so any user can run it."""
        return posixpath.join(self.vero_root, "venv")

    @property
    def vero_command(self) -> str:
        """The `vero` wrapper on PATH in both images."""
        return "/usr/local/bin/vero"

    @property
    def token_dir(self) -> str:
        """The token volume: written by the sidecar, read-only in main."""
        return posixpath.join(self.state_root, "token")

    @property
    def token_file(self) -> str:
        """The admin token (0600 root): only root in main, the verifier, can read it."""
        return posixpath.join(self.token_dir, "admin-token")

    # --- the sidecar ---------------------------------------------------------------------------------

    @property
    def sidecar_dir(self) -> str:
        """Sidecar-only data, root-only (0700)."""
        return posixpath.join(self.vero_root, "sidecar")

    @property
    def serve_json(self) -> str:
        """The ServeConfig the sidecar's command reads."""
        return posixpath.join(self.sidecar_dir, "serve.json")

    @property
    def dataset_dir(self) -> str:
        """Mode A: the baked splits."""
        return posixpath.join(self.sidecar_dir, "dataset")

    @property
    def scorer_dir(self) -> str:
        """Mode A: holds the baked scorer (a file or a package)."""
        return posixpath.join(self.sidecar_dir, "scorer")

    @property
    def inner_tasks_dir(self) -> str:
        """Mode B with a local task source: the partition's task dirs."""
        return posixpath.join(self.sidecar_dir, "inner_tasks")

    @property
    def registry_dir(self) -> str:
        """Mode B with a local registry: the partition's tasks and a registry.json listing them."""
        return posixpath.join(self.sidecar_dir, "registry")

    @property
    def registry_json(self) -> str:
        """The baked registry's listing."""
        return posixpath.join(self.registry_dir, "registry.json")

    @property
    def registry_tasks_dir(self) -> str:
        """The baked registry's task dirs."""
        return posixpath.join(self.registry_dir, "tasks")

    @property
    def identity_dir(self) -> str:
        """The task's identity (vero.compiler.identity)."""
        return posixpath.join(self.sidecar_dir, "identity")

    @property
    def identity_file(self) -> str:
        """The task's identity file, named in every session archive."""
        return posixpath.join(self.identity_dir, "task.json")

    @property
    def baseline_dir(self) -> str:
        """The baseline files and BASELINE.json the trusted repo starts from."""
        return posixpath.join(self.vero_root, "agent-baseline")

    @property
    def optimizer_work(self) -> str:
        """The work volume, read-only: Docker could not mount results inside a read-only /work."""
        return posixpath.join(self.state_root, "optimizer")

    @property
    def optimizer_repo(self) -> str:
        """The optimizer's repo on the read-only volume; `repo_dir` links here."""
        return posixpath.join(self.optimizer_work, posixpath.relpath(self.repo_dir, self.work_volume))

    @property
    def admin_dir(self) -> str:
        """The admin volume (0700): ledger, experiments, submission, incidents."""
        return posixpath.join(self.state_root, "admin")

    @property
    def trusted_repo(self) -> str:
        """The sidecar's own repo, created from `baseline_dir` at first start."""
        return posixpath.join(self.admin_dir, "repo")

    @property
    def work_dir(self) -> str:
        """Candidate checkouts and scratch (a 0711 tmpfs), reachable by the harness user."""
        return posixpath.join(self.state_root, "work")

    @property
    def scratch_dirs(self) -> tuple[str, ...]:
        """Every place candidate code can write, each a size-limited tmpfs (`work_dir` first)."""
        return (self.work_dir, "/tmp", "/var/tmp")

    @property
    def log_dir(self) -> str:
        """Why the sidecar could not start or stopped; Harbor collects it on every path."""
        return "/var/log/vero"

    @property
    def rescue_archive(self) -> str:
        """The session archive the collect hook writes after the agent phase, failed or not."""
        return posixpath.join(self.state_root, "rescue", "session-rescue.tar.gz")

    # --- the Mode B sidecar ----------------------------------------------------------------------------

    @property
    def docker_socket(self) -> str:
        """The host's Docker socket, mounted at the same path."""
        return "/var/run/docker.sock"

    @property
    def nested_jobs_env(self) -> str:
        """Names the nested harbor's jobs dir inside the sidecar."""
        return "VERO_NESTED_JOBS_DIR"

    @property
    def nested_base_env(self) -> str:
        """On the host: moves the base of the nested jobs dirs."""
        return "VERO_NESTED_DIR"

    @property
    def nested_base_default(self) -> str:
        """The host's base of the nested jobs dirs when `nested_base_env` is not set."""
        return "/tmp/vero-nested"

    @property
    def nested_jobs_dir(self) -> str:
        """The nested jobs dir as Compose interpolates it: a host dir at the same path inside
        (harbor bind-mounts trial dirs into the inner tasks' containers), one per outer trial."""
        return f"${{{self.nested_base_env}:-{self.nested_base_default}}}/${{COMPOSE_PROJECT_NAME}}"


CONTAINER = ContainerLayout()
