"""A loaded sweep: the validated sweep file, its base run config and where each of its keys is written."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from an_lab.errors import UsageError
from an_lab.sweeps.journal import JOURNAL
from an_lab.sweeps.spec.lines import Loc
from an_lab.sweeps.spec.schema import SweepSpec


@dataclass
class Sweep:
    """A validated sweep file, with the overrides applied, ready to expand into runs (`an_lab.sweeps.expand`)."""

    path: Path
    spec: SweepSpec
    base: dict  # run-config tree of the base: nested keys, --set overrides applied, output_dir set
    overrides: tuple[str, ...] = ()
    lines: dict[Loc, int] = field(default_factory=dict, repr=False)
    overridden: set[Loc] = field(default_factory=set, repr=False)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def mode(self) -> str:
        return self.spec.mode

    @property
    def output_dir(self) -> Path:
        return Path(self.base.get("output_dir", "runs"))

    @property
    def sweep_dir(self) -> Path:
        """The sweep's own folder (manifest, Optuna journal): <output_dir>/sweeps/<name>/; runs sit in <output_dir>/."""
        return self.output_dir / "sweeps" / self.name

    @property
    def storage(self) -> str | None:
        """Search mode: the Optuna storage URL, or the default journal file in the sweep folder."""
        if self.spec.search is None:
            return None
        return self.spec.search.storage or str((self.sweep_dir / JOURNAL).resolve())

    def line(self, loc: Loc) -> int | None:
        return self.lines.get(tuple(loc))

    def where(self, *locs: Loc) -> str:
        """`file, line N` for the first of `locs` found in the file (or `(from --set)`), else just the file."""
        for loc in locs:
            if any(tuple(loc[: len(o)]) == o for o in self.overridden):
                return f"{self.path} (from --set)"
            if loc[:1] == ("base",) and loc[1:] and all(isinstance(part, str) for part in loc[1:]):
                loc = self.base_key_loc(".".join(loc[1:]))  # type: ignore[arg-type]
            if (number := self.line(loc)) is not None:
                return f"{self.path}, line {number}"
        return str(self.path)

    def error(self, message: str, *locs: Loc) -> UsageError:
        return UsageError(f"{self.where(*locs)}: {message}")

    def base_key_loc(self, dotted: str) -> Loc:
        """Where a run-config key of the base is written: nested (`model: {an: {k: ...}}`) or dotted."""
        parts = dotted.split(".")
        for cut in range(len(parts), 0, -1):
            for loc in (("base", *parts[:cut]), ("base", ".".join(parts[:cut]))):
                if loc in self.lines:
                    return loc
        return ("base", *parts)
