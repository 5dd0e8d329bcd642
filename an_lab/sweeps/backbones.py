"""A detection run's backbone: `model.backbone_init: {sweep, cell, seed}` resolved to a classification run's folder.

    model: {name: resnet50, norm: an, backbone_init: {sweep: table1, cell: AN, seed: 0}}

The sweep is found by name: first its folder `<output_dir>/sweeps/<name>/manifest.json` (output_dir: the detection
run's), else a sweep file `<name>.yaml` beside the detection sweep file (or config file), expanded in memory. Finding
it is the job of an_lab.sweeps.manifest.find_sweep, which the resolver is handed (it sits above expansion). The cell is
matched by label or baseline name (case-insensitive), else by index; the run by seed. A backbone_init that gives no
seed follows the detection run's own seed; a seed the cell does not list (adaptive seeds asking for a fourth, a search
trial's seed) names the run that cell would have at that seed, its id computed as the classification sweep computes
it (and checked against a listed run first): `an-lab sweep` of the detection sweep trains it first, as one more seed of
that cell. The classification run must be a classification run and train the same network as the detection backbone.

The training layer reads only the resolved form: the run folder as an absolute path, written into the config before
the detection run's id is computed; the id names that folder by its run id (an_lab.identity), so that it depends on
the backbone run and not on the names that led to it or on where the command was typed. Mistakes are one UsageError
naming the file and the key.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from an_lab.config import BackboneInit, RunConfig
from an_lab.errors import UsageError
from an_lab.identity import run_id as config_run_id
from an_lab.launch.registry import CAN_WAIT
from an_lab.rundir import CONFIG, read_json, read_result, state
from an_lab.sweeps.records import Manifest, ManifestCell

if TYPE_CHECKING:
    from an_lab.launch.base import Executor

KEY = "model.backbone_init"

SweepFinder = Callable[[str, Path, Path, str], Manifest]
"""(sweep name, the detection run's output_dir, the folder its sweep file is looked for in, where) -> that sweep's
manifest, or a UsageError. Finding a sweep reads manifests and expands sweep files, which sit above expansion: the
finder is passed in from there (an_lab.sweeps.manifest.find_sweep), so that this module and expand.py import neither."""


@dataclass(frozen=True)
class Backbone:
    """The classification run a detection run starts from."""

    folder: str  # what model.backbone_init becomes: the run folder
    run_dir: Path  # the same folder, as this process reaches it
    sweep: str  # the classification sweep's name
    sweep_file: str  # its file, to launch it (`an-lab sweep FILE`)
    cell: str  # the cell's label
    seed: int
    cell_index: int = 0  # the cell's index in that sweep
    listed: bool = True  # whether the sweep lists this seed for the cell (else one more seed of it, trained first)

    def done(self) -> bool:
        return read_result(self.run_dir)[0] is not None

    def describe(self) -> str:
        current, _ = state(self.run_dir)
        extra = "" if self.listed else ", a seed that sweep does not list"
        return f"cell {self.cell!r} seed {self.seed} of sweep {self.sweep} ({self.folder}: {current}{extra})"


class BackboneResolver:
    """Resolves the backbone_init of run configs, reading each classification sweep once.

    search_dir: where `<name>.yaml` is looked for (the folder of the detection sweep file or config file).
    find: looks a sweep up by name (an_lab.sweeps.manifest.find_sweep); None where no config may name a sweep."""

    def __init__(self, search_dir: str | Path, find: SweepFinder | None = None) -> None:
        self.search_dir = Path(search_dir)
        self.find = find
        self._manifests: dict[tuple[str, str], Manifest] = {}

    def resolve(self, config: RunConfig, where: str) -> tuple[RunConfig, Backbone | None]:
        """(the config with model.backbone_init as a run folder, that run) for a BackboneInit; else (config, None).

        where: the file (and line) that sets the key, for error messages."""
        init = config.model.backbone_init
        if not isinstance(init, BackboneInit):
            return config, None
        given = "seed" in init.model_fields_set
        seed = init.seed if given else config.trainer.seed
        manifest = self._manifest(init.sweep, Path(config.output_dir), where)
        cell = _cell(manifest, init.cell, where)
        run_id, listed = _run_id(manifest, cell, seed, given, where)
        run_dir = Path(manifest["output_dir"]) / run_id
        label = str(cell.get("label") or cell.get("name") or cell["index"])
        _check_fits(config, _run_tree(manifest, cell, run_dir), manifest["name"], label, where)
        sweep_file = str(manifest.get("sweep_file") or self.search_dir / f"{init.sweep}.yaml")
        backbone = Backbone(
            _folder(run_dir), run_dir, manifest["name"], sweep_file, label, seed, int(cell["index"]), listed
        )
        model = config.model.model_copy(update={"backbone_init": backbone.folder})
        return config.model_copy(update={"model": model}), backbone

    def _manifest(self, name: str, output_dir: Path, where: str) -> Manifest:
        key = (str(output_dir), name)
        if key not in self._manifests:
            if self.find is None:
                raise TypeError(f"{where}: {KEY} names sweep {name!r}, but this resolver was given no sweep finder")
            self._manifests[key] = self.find(name, output_dir, self.search_dir, where)
        return self._manifests[key]


def _cell_choice(cell: ManifestCell) -> str:
    name = f" (baseline {cell['name']})" if cell.get("name") else ""
    return f"{cell['index']}: {cell.get('label')!r}{name}"


def _cell(manifest: Manifest, wanted: str, where: str) -> ManifestCell:
    """The cell whose label or baseline name is `wanted` (case-insensitive), else whose index it is."""
    text = wanted.strip().casefold()
    cells = manifest["cells"]
    found = [cell for cell in cells if text in (str(cell.get("label")).casefold(), str(cell.get("name")).casefold())]
    found = found or [cell for cell in cells if str(cell["index"]) == text]
    if len(found) == 1:
        return found[0]
    choices = "; ".join(_cell_choice(cell) for cell in cells) or "none"
    if found:
        raise UsageError(
            f"{where}: {KEY}.cell {wanted!r} names {len(found)} cells of sweep {manifest['name']}; give the index of "
            f"one of them: {'; '.join(_cell_choice(cell) for cell in found)}"
        )
    raise UsageError(
        f"{where}: {KEY}.cell {wanted!r}: sweep {manifest['name']} has no such cell; give a cell's label, baseline "
        f"name or index: {choices}"
    )


def _run_id(manifest: Manifest, cell: ManifestCell, seed: int, given: bool, where: str) -> tuple[str, bool]:
    """(the run id of the cell's run at this seed, whether the cell lists it). A seed the cell does not list, when the
    detection run's own seed chose it, names the run the cell would have at that seed."""
    for run in cell["runs"]:
        if run.get("seed") == seed:
            return run["run_id"], True
    if not given and (computed := _unlisted_run_id(manifest, cell, seed)) is not None:
        return computed, False
    seeds = ", ".join(str(run.get("seed")) for run in cell["runs"]) or "none"
    which = f"{seed}" if given else f"not given, so the detection run's own trainer.seed ({seed})"
    hint = "" if given else f"; set {KEY}.seed to one of them, or run the detection sweep on those seeds"
    raise UsageError(
        f"{where}: {KEY}.seed {which}: cell {cell.get('label')!r} of sweep {manifest['name']} has no run with that "
        f"seed; its seeds are {seeds}{hint}"
    )


def _unlisted_run_id(manifest: Manifest, cell: ManifestCell, seed: int) -> str | None:
    """The id of the cell's run at a seed it does not list: a listed run's config (its config.json, else the manifest's
    base config with the cell's changes) at that seed. None unless that config gives the listed run its own id back
    (then the id is the one the classification sweep would compute: nothing is guessed)."""
    for run in cell["runs"]:
        listed_id, listed_seed = run.get("run_id"), run.get("seed")
        if not isinstance(listed_id, str) or not isinstance(listed_seed, int):
            continue
        tree = _run_tree(manifest, cell, Path(manifest["output_dir"]) / listed_id)
        trainer = tree.get("trainer") if isinstance(tree, dict) else None
        if not isinstance(trainer, dict):
            continue
        try:
            config = RunConfig.model_validate({**tree, "trainer": {**trainer, "seed": listed_seed}})
            if config_run_id(config) != listed_id:
                continue
            trainer_at_seed = config.trainer.model_copy(update={"seed": seed})
            return config_run_id(config.model_copy(update={"trainer": trainer_at_seed}))
        except (ValidationError, ValueError, TypeError):
            continue
    return None


def _run_tree(manifest: Manifest, cell: ManifestCell, run_dir: Path) -> dict | None:
    """The classification run's config: its run folder's config.json, else the manifest's base config with the cell's
    changes (None when the manifest has no base config: a search)."""
    written = read_json(run_dir / CONFIG)
    if written is not None:
        return written
    base = manifest.get("base_config")
    if not isinstance(base, dict):
        return None
    tree = copy.deepcopy(base)
    for dotted, value in (cell.get("changes") or {}).items():
        *parents, last = str(dotted).split(".")
        node = tree
        for part in parents:
            child = node.get(part)
            node[part] = child = child if isinstance(child, dict) else {}
            node = child
        node[last] = value
    return tree


def _check_fits(config: RunConfig, tree: dict | None, sweep: str, label: str, where: str) -> None:
    """A backbone comes from a classification run of the same network as the detection backbone."""
    if tree is None:
        return
    task = tree.get("task") or "classification"
    if task != "classification":
        raise UsageError(
            f"{where}: {KEY}.sweep {sweep!r}: cell {label!r} of that sweep is a {task} run (task: {task}); a "
            "backbone comes from a classification run (task: classification): name a classification sweep"
        )
    model = tree.get("model")
    name = model.get("name") if isinstance(model, dict) else None
    if name is not None and name != config.model.name:
        raise UsageError(
            f"{where}: {KEY}: cell {label!r} of sweep {sweep} trains {name}, but model.name is {config.model.name}; "
            f"the backbone's weights fit only the same network: name a cell that trains {config.model.name}, or set "
            f"model.name to {name} if it is a detection backbone"
        )


def _folder(run_dir: Path) -> str:
    """The run folder as model.backbone_init holds it: absolute, wherever the command was typed (the run's identity
    names it by its run id: an_lab.identity.backbone_identity)."""
    return os.path.normpath(os.path.abspath(run_dir))


def require_done(backbones: list[Backbone], what: str, wait_hint: bool = False) -> None:
    """Refuse to start runs whose backbone has not finished training (a partial last.ckpt is no backbone)."""
    waiting = list({backbone.run_dir: backbone for backbone in backbones if not backbone.done()}.values())
    if not waiting:
        return
    files = sorted({backbone.sweep_file for backbone in waiting})
    first = "; ".join(backbone.describe() for backbone in waiting[:5])
    more = f" and {len(waiting) - 5} more" if len(waiting) > 5 else ""
    waiting_executors = " or ".join(f"--executor {name}" for name in sorted(CAN_WAIT))
    hint = f" (with {waiting_executors}, runs whose backbone is queued there wait for its job)" if wait_hint else ""
    if any(not backbone.listed for backbone in waiting):
        hint += (
            "; a seed a sweep does not list is trained as one more seed of its cell by `an-lab sweep` of a detection "
            "sweep that needs it"
        )
    raise UsageError(
        f"{what}: {len(waiting)} backbone run(s) of classification sweep(s) "
        f"{', '.join(sorted({b.sweep for b in waiting}))} are not done: {first}{more}; run "
        f"{' and '.join(f'`an-lab sweep {file}`' for file in files)} first, then launch this again{hint}"
    )


def backbone_jobs(
    what: str, waiting: dict[str, Backbone], executor: Executor | type[Executor]
) -> dict[str, tuple[str, ...]]:
    """For runs about to start (run id -> its backbone), those whose backbone (a classification run) is not done: the
    jobs training those backbones, which they must wait for (run id -> job ids). Where the executor cannot wait
    (locally) an unfinished backbone is an error that says which sweep to run first; where it can, so is one that no
    job is queued or running for. what: the sweep (file and name) the runs belong to, for the message."""
    waiting = {run: backbone for run, backbone in waiting.items() if not backbone.done()}
    if not waiting:
        return {}
    if not executor.can_wait_for_jobs:
        require_done(list(waiting.values()), what, wait_hint=True)
    jobs, problem = executor.training_jobs(sorted({backbone.run_dir for backbone in waiting.values()}))
    missing = list({b.run_dir: b for b in waiting.values() if b.run_dir not in jobs}.values())
    if missing:
        files = sorted({backbone.sweep_file for backbone in missing})
        why = f" (the queue could not be read: {problem})" if problem else ""
        raise UsageError(
            f"{what}: {len(missing)} backbone run(s) are neither done nor queued or running {executor.place}{why}: "
            f"{'; '.join(backbone.describe() for backbone in missing[:5])}"
            f"{f' and {len(missing) - 5} more' if len(missing) > 5 else ''}; submit them first with "
            f"{' and '.join(f'`an-lab sweep {file} --executor {executor.name}`' for file in files)}, then launch this "
            "again (its runs then wait for those jobs)"
        )
    return {run_id: (jobs[backbone.run_dir],) for run_id, backbone in waiting.items()}
