"""Why the core refuses a request, independent of HTTP.

Every rejection is a `VeroError` (one clear message) with a `kind` that the sidecar maps to a
status code (SPEC §5). A rejected request never spends budget.
"""

from __future__ import annotations

from typing import Literal

from vero.errors import VeroError

RejectionKind = Literal["bad_input", "unknown", "forbidden", "budget", "conflict"]


class Rejected(VeroError):
    """A request the core refuses; `kind` says which rule refused it."""

    kind: RejectionKind = "bad_input"


class BadInput(Rejected):
    """Malformed or contradictory request fields (HTTP 422)."""

    kind: RejectionKind = "bad_input"


class UnknownSplit(Rejected):
    """A split or dataset the sidecar does not serve (HTTP 400)."""

    kind: RejectionKind = "unknown"


class Forbidden(Rejected):
    """The tier policy forbids the request: no_access split or k-anonymity floor (HTTP 403)."""

    kind: RejectionKind = "forbidden"


class BudgetExceeded(Rejected):
    """The split's budget cannot cover the request (HTTP 429)."""

    kind: RejectionKind = "budget"


class Conflict(Rejected):
    """The request conflicts with the configuration, e.g. submit is disabled (HTTP 409)."""

    kind: RejectionKind = "conflict"
