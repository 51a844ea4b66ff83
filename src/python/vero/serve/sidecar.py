"""The sidecar's state: built once at start from a ServeConfig, shared by every request.

Start-up order: directories (admin 0700, work 0711 so the harness user can reach its worktree
but not list others; a results view that a previous stop left half-swapped is put back), the
trusted repo (restored from the baseline on first start, its SHA checked against
`baseline_commit`), the dataset loaded and checked against the config, the ledger loaded (a
corrupt one stops the start), experiments a previous stop cut short settled against the
ledger's charges, the strategy built, and finally a fresh admin token.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from vero.baseline import restore_baseline
from vero.core import mode_a
from vero.core.benchmark import AccessTier
from vero.core.checkouts import SharedCheckouts
from vero.core.confine import Confinement, numeric_user, require_namespaces, resolve_user
from vero.core.datasets import ModeADataset, Partition, load_mode_a_dataset, make_partition
from vero.core.engine import Engine, EvalRequest
from vero.core.experiments import ExperimentDB
from vero.core.fetch import FetchSettings
from vero.core.gitops import TrustedRepo
from vero.core.incidents import INCIDENTS, IncidentLog
from vero.core.ledger import Ledger
from vero.core.records import Aggregate, all_errored
from vero.core.redaction import MIN_REDACTED_LENGTH, Redactor
from vero.core.rejections import Conflict
from vero.core.strategy import EvaluationStrategy, StrategyEnv
from vero.core.tiers import TierPolicy, disclose
from vero.errors import VeroError
from vero.fsutil import atomic_write_model
from vero.modeb import strategy as mode_b
from vero.models import parse_model
from vero.serve.api import EvalResponse, StatusResponse, Submission, SubmitRequest
from vero.serve.config import ServeConfig
from vero.serve.results_view import recover_views, write_agent_view
from vero.serve.token import write_admin_token

log = logging.getLogger(__name__)

SUBMISSION = "submission.json"


@dataclass(frozen=True)
class AdminScore:
    """A trusted score (the mean over samples) and, when every sample errored, a line saying so."""

    score: float
    all_errored: str | None


def _catalog(config: ServeConfig) -> ModeADataset | Partition:
    """The samples of each split: Mode A's dataset, or Mode B's partition of task names."""
    if config.mode_a is not None:
        return load_mode_a_dataset(Path(config.mode_a.dataset_dir))
    assert config.mode_b is not None
    return make_partition(config.mode_b.partition, "serve.json: mode_b.partition")


def _build_strategy(config: ServeConfig, catalog: ModeADataset | Partition, env: StrategyEnv) -> EvaluationStrategy:
    """The strategy of the config's mode, built from its section (`ServeConfig` allows exactly one)."""
    if config.mode_a is not None:
        assert isinstance(catalog, ModeADataset)
        return mode_a.build_strategy(config.mode_a, catalog, env)
    assert config.mode_b is not None and isinstance(catalog, Partition)
    return mode_b.build_strategy(config.mode_b, catalog, env)


def _confinements(config: ServeConfig) -> tuple[Confinement, FetchSettings]:
    """How candidate processes and the fetch of the optimizer's commits are confined. With a harness
    user (a real sidecar, root) both get their own pid namespace, which must work."""
    user = resolve_user(config.harness_user)
    namespaces = user is not None
    if namespaces:
        require_namespaces()
    limits = config.limits
    fetch_user = numeric_user(config.fetch_uid) if config.fetch_uid is not None else None
    fetch = FetchSettings(confinement=Confinement(user=fetch_user, limits=limits.candidate, namespaces=namespaces),
                          scratch_parent=Path(config.paths.work_dir), limits=limits.repo)
    return Confinement(user=user, limits=limits.candidate, namespaces=namespaces), fetch


def _secret_env(names: list[str]) -> dict[str, str]:
    missing = [name for name in names if name not in os.environ]
    if missing:
        raise VeroError(f"declared secrets are not set: {', '.join(missing)}", where="sidecar environment",
                        fix="pass them to the sidecar container "
                            "(the compose file guards them with ${NAME:?})")
    return {name: os.environ[name] for name in names}


def _prepare_dirs(config: ServeConfig) -> None:
    paths = config.paths
    for directory, mode in ((paths.admin_dir, 0o700), (paths.work_dir, 0o711), (paths.results_dir, 0o755)):
        Path(directory).mkdir(parents=True, exist_ok=True)
        os.chmod(directory, mode)


def _clean_work_dir(work_dir: Path) -> None:
    """Remove the checkouts and scratch dirs a killed sidecar left behind (ours by name)."""
    for path in sorted([*work_dir.glob("wt-*"), *work_dir.glob("sample-*"), *work_dir.glob("fetch-*")]):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
            log.warning("removed the stale directory %s", path)


def _trusted_repo(config: ServeConfig, fetch: FetchSettings) -> TrustedRepo:
    path = Path(config.paths.trusted_repo)
    if not path.exists():
        sha = restore_baseline(Path(config.paths.baseline_dir), path)
        if sha != config.baseline_commit:
            raise VeroError(f"the baseline files produce commit {sha}, "
                            f"serve.json says {config.baseline_commit}",
                            where=config.paths.baseline_dir, fix="rebuild the task with `vero harbor build`")
    repo = TrustedRepo(path, fetch)
    if repo.commit_of(config.baseline_commit) != config.baseline_commit:
        raise VeroError(f"the trusted repo lacks the baseline commit {config.baseline_commit}",
                        where=str(path),
                        fix="the admin volume belongs to another task: use a fresh volume")
    return repo


def _check_splits(config: ServeConfig, catalog: ModeADataset | Partition) -> None:
    known = set(catalog.split_names())
    wanted = {"selection_split": [config.selection_split],
              "targets": [target.split for target in config.targets],
              "budgets": [budget.split for budget in config.budgets]}
    for field, splits in wanted.items():
        for split in splits:
            if split not in known:
                raise VeroError(f"{field} names split {split!r}, which the dataset does not have",
                                where="serve.json", fix=f"use one of: {', '.join(sorted(known))}")
    for target in config.targets:
        missing = sorted(set(target.sample_ids or []) - set(catalog.sample_ids(target.split)))
        if missing:
            raise VeroError(f"target {target.reward_key!r} lists samples not in split {target.split!r}: "
                            f"{', '.join(missing[:5])}", where="serve.json",
                            fix="list sample ids of that split (see docs/design.md, Sample ids)")


class Sidecar:
    """Everything a request needs; thread-safe."""

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        paths = config.paths
        _prepare_dirs(config)
        for split in recover_views(Path(paths.results_dir)):
            log.warning("put back the results view of split %s, which a previous stop left aside", split)
        confinement, fetch = _confinements(config)
        self.repo = _trusted_repo(config, fetch)
        _clean_work_dir(Path(paths.work_dir))
        self.incidents = IncidentLog(Path(paths.admin_dir) / INCIDENTS)
        self.db = ExperimentDB(Path(paths.admin_dir) / "experiments")
        self.catalog = _catalog(config)
        _check_splits(config, self.catalog)
        self.ledger = Ledger(Path(paths.admin_dir) / "ledger.json", config.budgets)
        for experiment_id in self.db.recover(self.ledger.charges()):
            log.warning("settled experiment %s, which a previous stop left unfinished", experiment_id)
        secret_env = _secret_env(config.secrets)
        self.redactor = Redactor(secret_env)
        for name in Redactor.too_short(secret_env):
            log.warning("secret %s is shorter than %d characters: it cannot be redacted from results", name,
                        MIN_REDACTED_LENGTH)
        self.strategy = _build_strategy(config, self.catalog, StrategyEnv(
            confinement=confinement, secret_env=secret_env, work_dir=Path(paths.work_dir),
            admin_dir=Path(paths.admin_dir), max_concurrency=config.max_concurrency,
            evaluation_timeout=config.timeout))
        self.policy = TierPolicy(config.splits, config.k_anonymity_floor)
        # Mode A candidates run as the harness user and cannot write a checkout, so the
        # evaluations of one commit can share it; Mode B hands the checkout to harbor instead.
        shared = config.mode == "A" and confinement.user is not None
        self.engine = Engine(catalog=self.catalog, policy=self.policy, ledger=self.ledger, db=self.db,
                             strategy=self.strategy, repo=self.repo, agent_repo=Path(paths.agent_repo),
                             work_dir=Path(paths.work_dir), baseline_commit=config.baseline_commit,
                             read_only_paths=config.read_only_paths,
                             checkouts=SharedCheckouts(self.repo, Path(paths.work_dir)) if shared else None)
        self.submission_path = Path(paths.admin_dir) / SUBMISSION
        self._submit_lock = threading.Lock()
        self._submission_cache: tuple[tuple[int, int, int], Submission] | None = None
        self.token = write_admin_token(Path(paths.token_file))

    def stop(self) -> None:
        """Kill running candidates at once; evaluations in flight end as interrupted."""
        self.strategy.stop()

    def close(self) -> None:
        """Stop and release the strategy's resources, the ref resolver and the kept checkouts."""
        self.strategy.close()
        self.repo.fetch.close()
        if self.engine.checkouts is not None:
            self.engine.checkouts.clear()

    def evaluate(self, request: EvalRequest) -> EvalResponse:
        """An optimizer evaluation: rules, run, then the agent's view of the results."""
        outcome = self.engine.evaluate(request, origin="agent")
        record = outcome.record
        assert record.aggregate is not None
        inputs = self.strategy.agent_inputs(record.split, record.sample_ids) if outcome.tier == "viewable" else None
        disclosure = disclose(outcome.tier, experiment_id=record.experiment_id, split=record.split,
                              commit=record.commit, aggregate=record.aggregate, results=outcome.results,
                              inputs=inputs, redactor=self.redactor)
        results_dir = Path(self.config.paths.results_dir)
        try:
            view = write_agent_view(results_dir, disclosure) if disclosure else None
        except OSError as exc:
            # The run is paid and recorded; its aggregate (all any tier shows) must not be lost.
            raise VeroError(f"evaluation {record.experiment_id} finished (mean score "
                            f"{record.aggregate.mean_score:g} over {record.aggregate.n_samples} samples) but "
                            f"its results could not be written: {exc.strerror}", where=str(results_dir),
                            fix="check the results volume (free space, permissions); the next evaluation "
                                "writes its view again") from exc
        errored = all_errored(outcome.results) is not None
        return EvalResponse(experiment_id=record.experiment_id, split=record.split, commit=record.commit,
                            tier=outcome.tier, aggregate=record.aggregate, free_baseline=record.free_baseline,
                            remaining=outcome.remaining, results_dir=str(view) if view else None,
                            all_errored=errored, warning=_all_errored_warning(outcome.tier, record.aggregate, view)
                            if errored else None)

    def submission(self) -> Submission | None:
        """The current submission, if any. A corrupt file is a loud error.

        The file is read again only when its (inode, mtime, size) changed: /status asks on every call.
        """
        try:
            with open(self.submission_path, "rb") as handle:
                info = os.fstat(handle.fileno())
                version = (info.st_ino, info.st_mtime_ns, info.st_size)  # a rename brings a new inode
                cached = self._submission_cache
                if cached is not None and cached[0] == version:
                    return cached[1]
                raw = handle.read()
        except FileNotFoundError:
            return None
        submission = parse_model(raw, Submission, what="submission file", where=str(self.submission_path),
                                 fix="inspect it; submit again to replace it", problem="corrupt")
        self._submission_cache = (version, submission)
        return submission

    def submit(self, request: SubmitRequest) -> Submission:
        """Nominate a commit: copied into the trusted repo now, so later history edits cannot change it."""
        if not self.config.submit_enabled:
            raise Conflict("submission is disabled for this task",
                           fix="the best evaluated candidate is selected automatically")
        ref = request.commit if request.commit is not None else "HEAD"
        commit = self.repo.import_commit(Path(self.config.paths.agent_repo), ref)
        self.engine.check_read_only_paths(commit)
        submission = Submission(commit=commit, requested_ref=ref, submitted_at=time.time())
        with self._submit_lock:
            atomic_write_model(self.submission_path, submission, mode=0o600)
        return submission

    def status(self) -> StatusResponse:
        """Splits with tier, evaluability and budget; submission; baseline. From memory (and one
        `open` of the submission file), so the server answers it on its event loop."""
        splits = [self.engine.split_status(split) for split in self.catalog.split_names()]
        submission = self.submission()
        return StatusResponse(
            name=self.config.name, mode=self.config.mode, dataset_id=self.catalog.dataset_id,
            baseline_commit=self.config.baseline_commit, reward_mode=self.config.reward_mode,
            selection_split=self.config.selection_split, submit_enabled=self.config.submit_enabled,
            submission=submission.commit if submission else None,
            k_anonymity_floor=self.config.k_anonymity_floor,
            free_baseline_available=any(s.budget is not None and s.budget.free_baseline_available
                                        for s in splits),
            splits=splits)

    def admin_evaluate(self, split: str, sample_ids: list[str] | None, commit: str, purpose: str) -> AdminScore:
        """A trusted score (no gate, no budget) of `commit` on `split`; the mean over samples."""
        outcome = self.engine.evaluate(EvalRequest(split=split, commit=commit, sample_ids=sample_ids),
                                       origin="admin", purpose=purpose)
        assert outcome.record.aggregate is not None
        errored = all_errored(outcome.results)
        if errored is not None:
            log.warning("%s evaluation %s of %s on %s: %s", purpose, outcome.record.experiment_id, commit, split,
                        errored)
        return AdminScore(score=outcome.record.aggregate.mean_score, all_errored=errored)


def _all_errored_warning(tier: AccessTier, aggregate: Aggregate, view: Path | None) -> str:
    """What the optimizer reads when its evaluation scored nothing (no sample data: the tier rules)."""
    head = f"every sample errored ({aggregate.n_errors} of {aggregate.n_samples}): nothing was scored"
    if tier == "viewable" and view is not None:
        return f"{head}; each sample's error is in {view}/samples/"
    return f"{head}; a {tier} split shows no per-sample errors: reproduce the failure on a viewable split"
