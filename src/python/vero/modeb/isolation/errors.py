"""The failures of Mode B isolation: one base, `IsolationError`, for every way the pipe between
harbor's process and the candidate's can fail; catch it where any of them means the same.

A `RuntimeError`, because harbor's own environment raises those, and a candidate's agent that
catches them around an environment operation must still catch `RelayError`. Stdlib only: the
candidate's process imports it too.
"""

from __future__ import annotations


class IsolationError(RuntimeError):
    """Any failure of the isolation of a candidate agent."""


class SpecError(IsolationError):
    """`IsolatedAgent` was started without a valid isolation spec (it runs only under vero)."""


class ProtocolError(IsolationError):
    """A frame that is too large, truncated or not a valid message."""


class TransferError(IsolationError):
    """An archive that is too large, malformed, or cannot be made."""


class CandidateAgentError(IsolationError):
    """The candidate's agent raised, its process died, or it broke the protocol."""


class RelayRefused(IsolationError):
    """A request the policy does not allow; the candidate gets the message as an error reply."""


class RelayError(IsolationError):
    """The candidate's side: the trusted side refused or failed an environment operation."""
