"""A run's identity: what determines its result, hashed into its run id (the owner of run ids; torch-free).

A run is its resolved config, normalised so that one result has one id:

- Keys that change how a run is executed or logged, not what it computes, are left out (NON_IDENTITY_KEYS), and so
  are keys that the run does not read: `model.an` for a network without AN, the detection keys of a classification
  run and the reverse, `data.fake_size` for anything but fake data, `data.train` / `data.val` outside COCO-format
  data, `model.head_k` without AN heads, and keys added later at the value that means what earlier runs did
  (LATER_KEYS: `model.detector` naming Mask R-CNN, `optim.lr_steps` unset), whose ids they leave as they were.
- Equivalent spellings are written one way: `an.k: null` and `an.k: 10` as the K schedule they resolve to,
  `trainer.devices: auto` as 1 with `accelerator: cpu`.
- The data is named by what it is, not by how its folder was spelled (`data.root` text): generated data (digits,
  shapes, fake) and checksummed downloads (CIFAR) by their name alone, wherever they are written; data folders
  (imagefolder, COCO) by their location with symbolic links resolved, plus a fingerprint of what is there
  (`fingerprint`). A `model.backbone_init` run folder is named by its run id.

IDENTITY_SCHEME counts changes to these rules; an_lab.migrate moves runs recorded under an earlier scheme.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from an_lab import catalog
from an_lab.errors import UsageError
from an_lab.rundir import read_json, write_json_atomic

if TYPE_CHECKING:  # the config's schema (pydantic) is imported when a config is at hand, not to read IDENTITY_SCHEME
    from an_lab.config import RunConfig

IDENTITY_SCHEME = 2
# Keys that change how a run is executed or logged but not what it computes.
NON_IDENTITY_KEYS = (
    ("data", "num_workers"),
    ("data", "download"),
    ("wandb",),
    ("output_dir",),
    ("trainer", "diagnostics"),
    ("model", "an", "impl"),  # the same maths in other kernels
)
GENERATED_DATA = ("digits", "shapes", "fake")  # written by an-lab from a fixed generator: the same anywhere
CHECKSUMMED_DATA = ("cifar10", "cifar100")  # torchvision's downloads, checked against their published checksums
AN_NORMS = ("an", "an_gn")
# Keys added after runs were recorded, with the values that mean what those runs did: at one of them a key stays out
# of the identity, so that the runs keep their ids (Mask R-CNN, the 2/3 and 8/9 learning-rate steps).
LATER_KEYS = {
    ("model", "detector"): (None, "mask_rcnn"),
    ("optim", "lr_steps"): (None,),
    ("model", "trainable_layers"): (None, catalog.TRAINABLE_STAGES),
}
ANNOTATIONS = "annotations"
DATA_FILE = ".an-lab-data.json"  # in an output folder: the last fingerprint seen of each data folder its runs read


@functools.cache
def _task_keys() -> tuple[tuple, tuple]:
    from an_lab.config import CLASSIFICATION_KEYS, DETECTION_KEYS

    return CLASSIFICATION_KEYS, DETECTION_KEYS


def identity(config: RunConfig) -> dict:
    """The part of the resolved config that determines what a run computes, normalised (see the module)."""
    dropped = _dropped(config)
    return {key: part for key in type(config).model_fields if (part := _part(config, key, dropped)) is not _LEFT_OUT}


_LEFT_OUT = object()  # a top-level key that is no part of the identity


def _part(config: RunConfig, key: str, dropped: list[tuple[str, ...]]):
    """One top-level key of the identity (_LEFT_OUT if none), with `dropped` the config's _dropped(): what it holds
    depends on that section and, beyond it, on the task alone (and the data section on output_dir, where its
    fingerprints are recorded)."""
    if (key,) in NON_IDENTITY_KEYS:
        return _LEFT_OUT
    value = getattr(config, key)
    tree = value.model_dump(mode="json") if hasattr(value, "model_dump") else value
    if key == "model":
        tree = _model_part(config, tree)
    elif key == "trainer" and config.trainer.devices == "auto" and config.trainer.accelerator == "cpu":
        tree["devices"] = 1  # Lightning runs "auto" on one process on the CPU
    elif key == "data":
        tree = data_identity(tree, config.output_dir)
    for path in dropped:
        if path[0] != key:
            continue
        if len(path) == 1:
            return _LEFT_OUT
        node = tree
        for part in path[1:-1]:
            node = node.get(part, {})
        node.pop(path[-1], None)
    return tree


def _model_part(config: RunConfig, tree: dict) -> dict:
    model = config.model
    if model.norm in AN_NORMS:
        tree["an"]["k"] = list(catalog.resolve_k(model.name, model.an.k))
    if model.head_norm == "an_gn" and (model.head_k is None or isinstance(model.head_k, int)):
        tree["head_k"] = list(catalog.HEAD_K if model.head_k is None else (model.head_k,) * catalog.HEAD_CONVS)
    if isinstance(model.backbone_init, str):
        tree["backbone_init"] = backbone_identity(model.backbone_init)
    return tree


def _dropped(config: RunConfig) -> list[tuple[str, ...]]:
    """The keys (paths from the top) that the run does not read or that do not change what it computes."""
    dropped = list(NON_IDENTITY_KEYS)
    classification, detection = _task_keys()
    dropped += classification if config.task == "detection" else detection
    if config.task == "classification":
        dropped.append(("optim", "warmup_iterations"))
    if config.model.norm not in AN_NORMS:
        dropped.append(("model", "an"))
    dropped += [
        path for path, unchanged in LATER_KEYS.items() if getattr(getattr(config, path[0]), path[1]) in unchanged
    ]
    if config.model.head_norm != "an_gn":
        dropped.append(("model", "head_k"))
    return dropped


def data_identity(data: dict, output_dir: str | None = None) -> dict:
    """The data section of an identity: the keys the data set reads, its root replaced by what is there."""
    name = data["name"]
    out = {key: value for key, value in data.items() if key not in ("root", "fake_size", "train", "val", "num_classes")}
    if name == "fake":
        out["fake_size"] = data.get("fake_size")
    if name in ("fake", "imagefolder") and data.get("num_classes") is not None:
        out["num_classes"] = data["num_classes"]
    if name in ("coco", "shapes"):
        out["train"], out["val"] = data.get("train"), data.get("val")
    if name not in GENERATED_DATA and name not in CHECKSUMMED_DATA:
        location = os.path.realpath(str(data.get("root") or "."))
        out["location"] = location
        out["fingerprint"] = _known(location, name, data.get("train"), data.get("val"), output_dir)
    return out


def _known(location: str, name: str, train, val, output_dir: str | None) -> str:
    """The folder's fingerprint; where nothing is there now (unmounted, or deleted after training), the last one
    recorded in the output folder (DATA_FILE), so that finished runs keep their ids."""
    found = fingerprint(location, name, train, val)
    if output_dir is None:
        return found
    path = Path(output_dir) / DATA_FILE
    key = f"{name}|{location}|{train}|{val}"
    recorded = _recorded(str(path))
    if found == "absent":
        return recorded.get(key, found)
    if recorded.get(key) != found and path.parent.is_dir():
        recorded[key] = found
        with contextlib.suppress(UsageError):  # a read-only output folder: the next writer records it
            write_json_atomic(path, recorded)
    return found


def remember_data(config: RunConfig) -> None:
    """Record the fingerprint of the run's data folder in its output folder (which exists by now: its run folder is
    being made), so that the run keeps its id while the data is away."""
    _recorded.cache_clear()
    data = config.data
    if data.name not in GENERATED_DATA and data.name not in CHECKSUMMED_DATA:
        _known(os.path.realpath(data.root), data.name, data.train, data.val, config.output_dir)


@functools.cache
def _recorded(path: str) -> dict:
    return read_json(Path(path)) or {}


@functools.cache
def fingerprint(location: str, name: str, train: str | None = None, val: str | None = None) -> str:
    """A cheap fingerprint of a data folder: the sorted list of its image files by name (imagefolder: train/ and val/
    with their class folders; COCO: the two image folders) and the names and sizes of COCO's annotation files.
    Computed once per process; "absent" for a folder that does not exist (a run planned before its data)."""
    root = Path(location)
    if not root.is_dir():
        return "absent"
    digest = hashlib.sha256()
    if name == "coco":
        splits = [root / str(train), root / str(val)]
        for split in (train, val):
            annotation = root / ANNOTATIONS / f"instances_{split}.json"
            size = annotation.stat().st_size if annotation.is_file() else -1
            digest.update(f"{annotation.name}\t{size}\n".encode())
    else:
        splits = [root / "train", root / "val"]
    for split in splits:
        for relative in sorted(_files(split)):
            digest.update(f"{split.name}/{relative}\n".encode())
    return digest.hexdigest()[:16]


def _files(folder: Path) -> list[str]:
    """Every file under `folder`, as paths relative to it (names from the directory listing, no per-file stat)."""
    found: list[str] = []
    stack = [(folder, "")]
    while stack:
        current, prefix = stack.pop()
        try:
            entries = list(os.scandir(current))
        except OSError:
            continue
        for entry in entries:
            if entry.is_dir(follow_symlinks=True):
                stack.append((Path(entry.path), f"{prefix}{entry.name}/"))
            else:
                found.append(prefix + entry.name)
    return found


def backbone_identity(text: str) -> str:
    """A backbone_init path: a checkpoint file by its resolved location; anything else is a run folder, named by its
    run id (its last part), whether or not it has been trained yet: a detection run planned before its backbone
    trains keeps its id once it has."""
    if Path(text).is_file():
        return f"file:{os.path.realpath(text)}"
    return f"run:{os.path.basename(os.path.normpath(text))}"


def config_hash(config: RunConfig) -> str:
    canonical = json.dumps(identity(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def run_id(config: RunConfig) -> str:
    model = config.model
    return f"{model.name}-{model.norm}-{config_hash(config)}"


_SEED = "\x00seed\x00"  # stands for trainer.seed in a canonical identity, to be replaced by each seed's number


class RunIds:
    """Run ids of many configs that share their sections (a sweep's cells: a grid of 10,000 cells has some tens of
    distinct sections). Each distinct section's part of the identity is written out once, as the canonical JSON text
    it contributes (the parts depend on their section and the task alone, the data's also on output_dir: _part), and
    a config's canonical identity is those texts joined in key order: the same text as json.dumps of identity(config)
    with sorted keys. Sections are told apart by object, which the cache keeps alive: one instance per expansion."""

    def __init__(self) -> None:
        self._parts: dict[tuple, tuple[object, str | None]] = {}
        self._keys: dict[type, list[tuple[str, str]]] = {}

    def _text(self, config: RunConfig, key: str) -> str | None:
        value = getattr(config, key)
        slot = (key, id(value), config.task, config.output_dir if key == "data" else None)
        known = self._parts.get(slot)
        if known is None or known[0] is not value:
            part = _part(config, key, _dropped(config))
            if key == "trainer":
                part["seed"] = _SEED
            text = None if part is _LEFT_OUT else json.dumps(part, sort_keys=True, separators=(",", ":"))
            known = self._parts[slot] = (value, text)
        return known[1]

    def seeded(self, config: RunConfig, seeds) -> list[str]:
        """run_id(config with trainer.seed = seed) for each seed: the seed is one number in the canonical JSON, so
        each id hashes that text with the seed's number in place (10 seeds of 10,000 cells cost 10,000 texts)."""
        keys = self._keys.get(type(config))
        if keys is None:  # (key, its JSON text) in key order, less the top-level keys never part of an identity
            names = sorted(key for key in type(config).model_fields if (key,) not in NON_IDENTITY_KEYS)
            keys = self._keys[type(config)] = [(key, json.dumps(key) + ":") for key in names]
        texts = [(written, self._text(config, key)) for key, written in keys]
        canonical = "{" + ",".join(written + text for written, text in texts if text is not None) + "}"
        head, marker, tail = canonical.partition(json.dumps(_SEED))
        if not marker or json.dumps(_SEED) in tail:  # the marker text written by the user somewhere: one at a time
            return [
                run_id(config.model_copy(update={"trainer": config.trainer.model_copy(update={"seed": seed})}))
                for seed in seeds
            ]
        prefix = f"{config.model.name}-{config.model.norm}-"
        return [prefix + hashlib.sha256(f"{head}{int(seed)}{tail}".encode()).hexdigest()[:12] for seed in seeds]


def seeded_run_ids(config: RunConfig, seeds) -> list[str]:
    """run_id(config with trainer.seed = seed) for each seed, the identity built and written out once."""
    return RunIds().seeded(config, seeds)


def run_dir(config: RunConfig) -> Path:
    return Path(config.output_dir) / run_id(config)
