"""Base class for every pydantic model at a boundary (configs, HTTP bodies, files on disk)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """Unknown keys are errors and values are never coerced ("1" is not an int, 1 not a bool).

    Paths are plain `str` fields: loaders resolve them against the file they came from.
    """

    model_config = ConfigDict(extra="forbid", strict=True)
