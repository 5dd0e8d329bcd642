"""Resolving a cell: its dotted settings laid on the sweep's base as `config.resolve` would (recipe preset, then the
base, then the cell's keys), each distinct section validated once (fast enough for 10,000 cells), and one readable
sentence for a cell that does not make a valid run."""

from __future__ import annotations

import reprlib
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel, ValidationError

from an_lab.config import RECIPES, SHORTHAND, RunConfig, deep_merge
from an_lab.errors import UsageError
from an_lab.paths import anchor, is_path_key
from an_lab.sweeps.backbones import KEY as BACKBONE_KEY
from an_lab.sweeps.backbones import Backbone, BackboneResolver, SweepFinder
from an_lab.sweeps.labels import show
from an_lab.sweeps.spec import CONFIG_KEYS, Loc, Sweep, config_key_problem, show_loc


def dotted_leaves(key: str, value: Any) -> Iterator[tuple[str, Any]]:
    """A setting on a section (`model.an: {pooling: mean}`) as its dotted leaves."""
    if isinstance(value, dict) and CONFIG_KEYS.get(key):
        for inner, inner_value in value.items():
            yield from dotted_leaves(f"{key}.{inner}", inner_value)
    elif isinstance(value, str) and key in SHORTHAND:  # `model: resnet50` is `model.name: resnet50`
        yield f"{key}.{SHORTHAND[key]}", value
    else:
        yield key, value


def value_at(config: RunConfig, key: str) -> Any:
    """The value at a dotted key, as plain data (model.backbone_init: {sweep, cell} as written, seed if given)."""
    node: Any = config
    for part in key.split("."):
        node = getattr(node, part, None)
    return node.model_dump(mode="json", exclude_unset=True) if isinstance(node, BaseModel) else node


def problems(error: ValidationError) -> tuple[str, str]:
    """(the first key at fault, one readable sentence) from pydantic's errors about a run config."""
    sentences, first = [], ""
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"])
        first = first or key
        if item["type"] == "extra_forbidden":
            sentences.append(config_key_problem(key) or f"unknown key {key!r}")
        elif item["type"] == "literal_error":
            sentences.append(f"{key}: {item['input']!r} is not valid; choose one of {item['ctx']['expected']}")
        else:
            message = item["msg"].removeprefix("Value error, ")
            inner, colon, rest = message.partition(": ")
            if colon and f"{key}.{inner}" in CONFIG_KEYS:  # a section's check names its key: "an.k: ..."
                key, message = f"{key}.{inner}", rest
            quiet = isinstance(item["input"], dict) or item["type"] == "value_error"  # the message names the value
            got = "" if quiet else f" (got {reprlib.repr(item['input'])})"
            sentences.append(f"{key or 'run config'}: {message}{got}")
    return first, "; ".join(sentences)


# Keys whose value is a mapping that is not a section of the run config: a cell's mapping is laid over the base's, as a
# section's keys would be, rather than replacing it (a string replaces it).
MERGED = (BACKBONE_KEY,)
# The sections of a run config: each a model of its own, validated on its own (Resolver._sections).
SECTIONS = {
    key: info.annotation
    for key, info in RunConfig.model_fields.items()
    if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel)
}


class Resolver:
    """Resolves cell settings on the sweep's base as `config.resolve` does, fast enough for 10,000 cells."""

    def __init__(self, sweep: Sweep):
        self.sweep = sweep
        self._trees: dict[str, dict] = {}
        self._validated: dict[tuple[str, str], BaseModel | dict] = {}
        self._by_object: dict[int, tuple[dict, BaseModel | dict]] = {}  # sections no setting touched: by object
        wandb = sweep.base.get("wandb")
        self._wandb = dict(wandb) if isinstance(wandb, dict) else {}
        self._wandb_sections: dict[tuple[str, ...], dict] = {}

    def _tree(self, settings: dict[str, Any], tags: tuple[str, ...]) -> tuple[dict, dict]:
        """(the cell's tree, the recipe's tree before the cell's settings, whose section dicts the cell's tree
        shares where no setting touched them)"""
        recipe = settings.get("recipe", self.sweep.base.get("recipe", "custom"))
        key = recipe if isinstance(recipe, str) else repr(recipe)
        if key not in self._trees:
            self._trees[key] = deep_merge(RECIPES.get(key, {}), self.sweep.base)
        tree = dict(self._trees[key])
        for dotted, value in settings.items():
            parts = dotted.split(".")
            node = tree
            for depth, part in enumerate(parts[:-1]):
                child = node.get(part)
                if child is not None and not isinstance(child, dict):  # never replace a value by a section silently
                    raise UsageError(
                        f"{self.sweep.path}: {dotted} sets a key inside {'.'.join(parts[: depth + 1])}, which holds "
                        f"the value {child!r}; write that section as a mapping of keys"
                    )
                node[part] = child = dict(child) if isinstance(child, dict) else {}
                node = child
            previous = node.get(parts[-1])
            if isinstance(value, str) and is_path_key(dotted):  # an axis or cell's path: from the file's folder
                value = anchor(value, self.sweep.path.parent, f"{self.sweep.path}: {dotted}")
            if dotted in MERGED and isinstance(value, dict) and isinstance(previous, dict):
                value = {**previous, **value}  # `model.backbone_init: {cell: BN}` keeps the base's sweep (and seed)
            node[parts[-1]] = value
        if tags not in self._wandb_sections:
            self._wandb_sections[tags] = {**self._wandb, "group": self.sweep.name, "tags": tags}
        tree["wandb"] = self._wandb_sections[tags]
        return tree, self._trees[key]

    def validate(self, settings: dict[str, Any], tags: tuple[str, ...] = ()) -> RunConfig | ValidationError:
        tree, shared = self._tree(settings, tags)
        try:
            return RunConfig.model_validate(self._sections(tree, shared))
        except ValidationError:
            pass
        try:  # the whole tree again, so that the error reads as config.resolve's would
            return RunConfig.model_validate(tree)
        except ValidationError as error:
            return error

    def _sections(self, tree: dict, shared: dict) -> dict:
        """The tree with each section (model, data, optim, ...) replaced by its validated model, each distinct
        section validated once: cells share most of their sections, and the models are frozen. A section that does not
        validate alone is left as written, for the whole run config's validation to report in place."""
        out = dict(tree)
        for key, value in tree.items():
            model = SECTIONS.get(key)
            if model is None or not isinstance(value, dict):
                continue
            untouched = value is shared.get(key) or key == "wandb"  # the recipe's own dict: no setting touched it
            known = self._by_object.get(id(value)) if untouched else None
            if known is not None and known[0] is value:
                out[key] = known[1]
                continue
            cached = self._validated.get((key, repr(value)))
            if cached is None:
                try:
                    cached = model.model_validate(value)
                except ValidationError:
                    cached = value
                self._validated[(key, repr(value))] = cached
            if untouched:
                self._by_object[id(value)] = (value, cached)  # kept alive here, so that its id is not reused
            out[key] = cached
        return out

    def diagnose(self, settings: dict[str, Any], sources: dict[str, Loc], error: ValidationError) -> UsageError:
        """Blame the base, else the one setting that fails on its own, else the combination of the cell's settings."""
        sweep = self.sweep
        base_error = self.validate({})
        if isinstance(base_error, ValidationError):
            key, sentence = problems(base_error)
            loc = ("base", *key.split(".")) if key else ("base",)
            return sweep.error(f"base: {sentence}", loc, ("base",))
        for key, value in settings.items():
            alone = self.validate({key: value})
            if isinstance(alone, ValidationError):
                loc = sources.get(key, ())
                return sweep.error(f"{show_loc(loc)}: {problems(alone)[1]}", loc)
        together = ", ".join(f"{key}={show(value)}" for key, value in settings.items())
        lines = sorted({n for loc in sources.values() if (n := sweep.line(loc)) is not None})
        where = f" (lines {', '.join(map(str, lines))})" if lines else ""
        return UsageError(
            f"{sweep.path}: the cell {together}{where} is not a valid run: {problems(error)[1]}; "
            "every combination of the axes must make a valid run (use mode list to pick the valid ones)"
        )

    def resolve(self, settings: dict[str, Any], sources: dict[str, Loc], tags: tuple[str, ...] = ()) -> RunConfig:
        config = self.validate(settings, tags)
        if isinstance(config, ValidationError):
            raise self.diagnose(settings, sources, config)
        return config


def resolve_settings(
    sweep: Sweep, settings: dict[str, Any], tags: tuple[str, ...] = (), *, find: SweepFinder | None = None
) -> tuple[RunConfig, Backbone | None]:
    """One run config from dotted settings on the sweep's base (for search trials), and the classification run its
    model.backbone_init names (None if none); errors as UsageError.

    find: looks up the sweep a model.backbone_init names (an_lab.sweeps.manifest.find_sweep)."""
    flat = dict(leaf for key, value in settings.items() for leaf in dotted_leaves(key, value))
    config = Resolver(sweep).resolve(flat, {}, tags)
    backbones = BackboneResolver(sweep.path.parent, find)
    return backbones.resolve(config, sweep.where(sweep.base_key_loc(BACKBONE_KEY)))
