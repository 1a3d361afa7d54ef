"""The base of every config section."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """Base for every config section: no unknown keys, assignments re-validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
