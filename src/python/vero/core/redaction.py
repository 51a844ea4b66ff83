"""Keeping secret values out of what the optimizer sees.

Candidate code runs with the declared secrets in its environment (an agent may need an API
key), so its output, errors and prints could carry them back. Every string shown to the
optimizer passes through a Redactor first. This stops accidental and naive leaks; a candidate
determined to encode a secret (split, reversed, base64, timing) is not stopped by it: that is
why docs/guide.md asks for scoped, revocable keys.
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import JsonValue

# Shorter values would blank out ordinary text; the sidecar warns about them at start.
MIN_REDACTED_LENGTH = 4


class Redactor:
    """Replaces each secret value (longest first) with `[redacted NAME]`."""

    def __init__(self, secrets: Mapping[str, str]) -> None:
        pairs = [(value, f"[redacted {name}]") for name, value in secrets.items()
                 if len(value) >= MIN_REDACTED_LENGTH]
        self._pairs = sorted(pairs, key=lambda pair: -len(pair[0]))

    @staticmethod
    def too_short(secrets: Mapping[str, str]) -> list[str]:
        """Names whose values are too short to redact safely."""
        return sorted(name for name, value in secrets.items() if 0 < len(value) < MIN_REDACTED_LENGTH)

    def text(self, text: str) -> str:
        """`text` with every secret value replaced."""
        for value, replacement in self._pairs:
            if value in text:
                text = text.replace(value, replacement)
        return text

    def json(self, value: JsonValue) -> JsonValue:
        """A JSON value with every string (and object key) redacted."""
        if not self._pairs:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list):
            return [self.json(item) for item in value]
        if isinstance(value, dict):
            return {self.text(key): self.json(item) for key, item in value.items()}
        return value
