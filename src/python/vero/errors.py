"""Expected failures, reported to users as one clear message instead of a traceback."""

from __future__ import annotations


class VeroError(Exception):
    """An expected failure: what went wrong, where, and how to fix it.

    CLI entry points catch it, print `render()` to stderr and exit with `exit_code`.
    `render()` never includes `detail`.
    """

    def __init__(self, what: str, *, where: str | None = None, fix: str | None = None,
                 exit_code: int = 2, detail: str | None = None, error_id: str | None = None) -> None:
        super().__init__(what)
        self.what = what
        self.where = where
        self.fix = fix
        self.exit_code = exit_code
        # What a trusted tool said (git, harbor, a scorer): for the admin log only, never for
        # the optimizer, who gets `what` and the error id that finds `detail` in that log.
        self.detail = detail
        self.error_id = error_id

    def render(self) -> str:
        """The user-facing message: `error: <where>: <what>` plus a `fix:` line when known."""
        head = f"error: {self.where}: {self.what}" if self.where else f"error: {self.what}"
        return f"{head}\n  fix: {self.fix}" if self.fix else head

    def __str__(self) -> str:
        return self.render()
