"""The project's one strict pydantic base, and its frozen form (a run config is its identity)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """The project's one strict pydantic base: an unknown key is an error, never ignored (sweep files, launcher
    settings and run configs derive from it)."""

    model_config = ConfigDict(extra="forbid")


class Frozen(Strict):
    """A strict model that cannot be changed once made: a run config is its identity."""

    model_config = ConfigDict(extra="forbid", frozen=True)
