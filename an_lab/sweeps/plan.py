"""`an-lab plan`: the runs of a sweep as a table, their state read from the run directories, and a compute estimate.

It launches nothing and writes nothing; it imports neither torch nor lightning nor wandb.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from an_lab import catalog, rundir
from an_lab.config import DataConfig, RunConfig
from an_lab.data_sources import annotation_path
from an_lab.launch.registry import SCHEDULED
from an_lab.sweeps.backbones import Backbone
from an_lab.sweeps.chain import backbones_of, trial_backbones
from an_lab.sweeps.expand import PlannedRun, base_config, check_data_paths
from an_lab.sweeps.labels import show
from an_lab.sweeps.seeding import plan_seeds, planned_runs, render_seeds
from an_lab.sweeps.spec import SeedPolicy, Sweep
from an_lab.sweeps.timing import WallTime, measured

# Multiply-accumulates of one forward pass of one image, norm=bn, 1000 classes, at the model's native input side
# (catalog.INPUT_SIZE: 224, or 32 for the CIFAR models). Produced once with torch (an_lab.profiling.count_macs):
#   python -c "from an_lab.catalog import MODEL_NAMES, INPUT_SIZE; from an_lab.models import create;
#              from an_lab.profiling import count_macs;
#              [print(n, count_macs(create(n, norm='bn'), INPUT_SIZE[n])) for n in MODEL_NAMES]"
# AN, SE, GN and SN add well under 1% to these; a smaller classifier head (10 or 100 classes) changes them a little.
MACS_PER_IMAGE: dict[str, int] = {
    "resnet18": 1_814_073_344,
    "resnet34": 3_663_761_408,
    "resnet50": 4_089_184_256,
    "resnet101": 7_801_405_440,
    "resnet152": 11_513_626_624,
    "mobilenet_v2": 300_774_272,
    "cifar_resnet20": 40_614_400,
    "cifar_resnet32": 68_925_952,
    "cifar_resnet56": 125_549_056,
    "aognet_12m": 2_107_919_991,
    "aognet_40m": 7_351_299_599,
    "cifar_aognet": 121_276_032,
    "densenet161": 7_727_907_072,
    "cifar_densenet100": 288_268_272,
}
NATIVE_SIZE = {name: 32 if name.startswith("cifar_") else 224 for name in MACS_PER_IMAGE}
# Training images per epoch of the data sets whose size is known without reading them.
TRAIN_IMAGES = {"digits": 1_437, "cifar10": 50_000, "cifar100": 50_000, "imagenet": 1_281_167}
TRAINING_FACTOR = 3  # forward + backward (about twice the forward) per training image


def train_images(data: DataConfig) -> int | None:
    """Training images per epoch, or None where only reading the folder could tell (imagefolder other than ImageNet)."""
    if data.name == "fake":
        return data.fake_size
    if data.name == "shapes":  # a classification run on shapes: its objects, counted once the set is written
        return _object_count(data)
    if data.name == "imagefolder":
        parts = [part.lower() for part in Path(data.root).parts]
        is_imagenet = any("imagenet" in part or "ilsvrc" in part for part in parts)
        return TRAIN_IMAGES["imagenet"] if is_imagenet else None
    return TRAIN_IMAGES.get(data.name)


# Mask R-CNN + FPN, per training image (an estimate from the layer shapes, checked against torch's FLOP counter in
# tests/sweeps/test_sweeps_plan.py): the backbone (MACS_PER_IMAGE scaled to the resized image: shorter side
# data.image_size, longer side 4/3 of it as COCO's typical 640 x 480, at most data.max_size), the FPN and RPN per input
# pixel, the box head per sampled RoI (box_batch_size_per_image, 512) and the mask head per positive RoI (a quarter of
# them), at the detector's widths (detector_options fpn_channels F, box_fc_channels B; torchvision's 256 and 1024):
# per input pixel, the 1x1 laterals from strides 4-32 (about 7,700 MACs at F = 256, linear in F) and the 3x3 F-channel
# convs of the FPN outputs (strides 4-32) and of the RPN (strides 4-64; 98,300 at 256, quadratic in F); per RoI, 7x7xF
# features into the 2fc head (fc6 49 F B, fc7 B B) or through the 4conv1fc head (four 3x3 convs at 7x7, then fc 49 F B);
# per positive RoI, the mask head's four 3x3 convs at 14x14 and its 2x2 deconvolution (40 x 196 F^2).
FPN_LATERAL_MACS_PER_PIXEL = 7_700
FPN_RPN_3X3_MACS_PER_PIXEL = 98_300
POSITIVE_FRACTION = 0.25


def _box_head_macs(box_head: str, fpn: int, box_fc: int) -> int:
    if box_head == "2fc":
        return 49 * fpn * box_fc + box_fc * box_fc
    return 4 * 9 * 49 * fpn * fpn + 49 * fpn * box_fc


def _mask_head_macs(fpn: int) -> int:
    return 40 * 196 * fpn * fpn


# How often a detector runs its box head and its mask head on a stage's sampled RoIs: a cascade once per stage (3);
# HTC's mask information flow runs the earlier stages' mask heads again at each stage (1 + 2 + 3 = 6).
HEAD_RUNS = {"mask_rcnn": (1, 1), "cascade_mask_rcnn": (3, 3), "htc": (3, 6)}


def detection_macs_per_image(config: RunConfig) -> float:
    data, model = config.data, config.model
    short = data.image_size
    long = min(data.max_size or round(short * 1333 / 800), round(short * 4 / 3))
    pixels = short * long
    backbone = MACS_PER_IMAGE[model.name] * pixels / NATIVE_SIZE[model.name] ** 2
    options = model.detector_options
    rois = options.get("box_batch_size_per_image", 512)
    fpn, box_fc = (options.get(name, catalog.DETECTOR_SIZES[name][0]) for name in ("fpn_channels", "box_fc_channels"))
    kind = model.box_head or ("2fc" if (model.head_norm or "none") == "none" else "4conv1fc")
    box_runs, mask_runs = HEAD_RUNS[model.detector or "mask_rcnn"]
    heads = rois * (box_runs * _box_head_macs(kind, fpn, box_fc) + mask_runs * POSITIVE_FRACTION * _mask_head_macs(fpn))
    scale = fpn / 256
    fpn_rpn = FPN_LATERAL_MACS_PER_PIXEL * scale + FPN_RPN_3X3_MACS_PER_PIXEL * scale * scale
    return backbone + fpn_rpn * pixels + heads


def training_macs_per_image(config: RunConfig) -> float:
    """Multiply-accumulates of one training image (forward and backward) as run_macs counts them."""
    if config.task == "detection":
        return TRAINING_FACTOR * detection_macs_per_image(config)
    name = config.model.name
    return TRAINING_FACTOR * MACS_PER_IMAGE[name] * (config.data.image_size / NATIVE_SIZE[name]) ** 2


def _object_count(data: DataConfig) -> int | None:
    try:
        content = json.loads(annotation_path(data.root, data.train).read_text())
        return sum(1 for a in content["annotations"] if not a.get("iscrowd", 0) and min(a["bbox"][2:]) >= 1)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def run_macs(config: RunConfig) -> int | None:
    """Multiply-accumulates to train one run: epochs x training images x 3 x MACs per image at the run's image size;
    for detection, iterations x global batch x 3 x the detector's MACs per image."""
    trainer = config.trainer
    if config.task == "detection":
        devices = trainer.devices if isinstance(trainer.devices, int) else 1
        images = trainer.iterations * config.data.batch_size * devices * trainer.num_nodes
        return round(images * training_macs_per_image(config))
    images = train_images(config.data)
    if images is None:
        return None
    if trainer.limit_train_batches is not None:
        devices = trainer.devices if isinstance(trainer.devices, int) else 1
        images = min(images, trainer.limit_train_batches * config.data.batch_size * devices * trainer.num_nodes)
    return round(trainer.epochs * images * training_macs_per_image(config))


@dataclass
class ComputeEstimate:
    """Multiply-accumulates of the runs a plan still has to run (an_lab.stats.Estimate is a cell's statistics)."""

    macs: int = 0  # summed over the runs to run whose size is known
    counted: int = 0
    unknown: list[str] = field(default_factory=list)  # why some runs could not be counted

    def words(self) -> str:
        if not self.counted and not self.unknown:
            return "nothing to run"
        amount = f"~{self.macs:.1e}".replace("e+", "e")
        text = f"{amount} multiply-accumulates to run" if self.counted else "compute unknown"
        text += " (training: epochs x train images, or detection iterations x batch, x 3 x MACs per image"
        text += f"; BN network MACs scaled to each run's image size; {self.counted} runs)"
        if self.unknown:
            text += f"; not counted: {len(self.unknown)} runs ({'; '.join(sorted(set(self.unknown)))})"
        return text


@dataclass
class Plan:
    sweep: Sweep
    runs: list[PlannedRun]
    states: list[tuple[str, str | None]]  # rundir.state of each run
    estimate: ComputeEstimate
    wall: WallTime = field(default_factory=WallTime)

    def count(self, *states: str) -> int:
        return sum(state in states for state, _ in self.states)

    @property
    def cells(self) -> int:
        return len({id(run.cell) for run in self.runs})


TO_RUN = ("pending", "interrupted", "failed")


def make_plan(sweep: Sweep, *, check_data: bool = True, runs: list[PlannedRun] | None = None) -> Plan:
    """Expand the sweep (unless its runs are given), read each run's state from its directory and estimate the
    compute of what is left to run."""
    runs = planned_runs(sweep) if runs is None else runs
    if check_data:
        check_data_paths(sweep, runs)
    states = run_states(runs)
    estimate, wall = ComputeEstimate(), WallTime()
    timings = measured(sweep.output_dir, run_macs) if any(state in TO_RUN for state, _ in states) else None
    sizes: dict[int, int | None] = {}  # by cell: a run's seed, all that sets it apart, changes none of its sizes
    for run, (state, _) in zip(runs, states, strict=True):
        if state not in TO_RUN:
            continue
        config = run.cell.config
        if id(run.cell) not in sizes:
            sizes[id(run.cell)] = run_macs(config)
        macs = sizes[id(run.cell)]
        wall.add(config, macs, timings)
        if macs is None:
            data = config.data
            why = "written on first use" if data.name == "shapes" else f"{data.name} of unknown size"
            estimate.unknown.append(f"{data.root}: {why}")
        else:
            estimate.macs += macs
            estimate.counted += 1
    if sweep.mode == "search" and sweep.spec.search is not None:
        trials = sweep.spec.search.n_trials * len(sweep.spec.initial_seeds() or [0])
        macs = run_macs(base_config(sweep))
        if macs is None:
            estimate.unknown += ["search trials: imagefolder of unknown size"] * trials
        else:
            estimate.macs += macs * trials
            estimate.counted += trials
    return Plan(sweep, runs, states, estimate, wall)


def run_states(runs: list[PlannedRun]) -> list[tuple[str, str | None]]:
    """rundir.state of each run, each output folder listed once (rundir.states)."""
    by_folder: dict[str, list[int]] = {}  # by the text of the folder: 10,000 runs' Paths cost more than their states
    for position, run in enumerate(runs):
        by_folder.setdefault(run.cell.config.output_dir, []).append(position)
    found: list[tuple[str, str | None]] = [("pending", None)] * len(runs)
    for folder, positions in by_folder.items():
        ids = [runs[p].run_id for p in positions]
        for position, state in zip(positions, rundir.states(Path(folder), ids), strict=True):
            found[position] = state
    return found


def state_text(state: str, detail: str | None) -> str:
    return f"{state}({detail})" if detail else state


def align(rows: list[tuple[str, ...]]) -> list[str]:
    """Rows of text cells as left-aligned columns (the last column is not padded)."""
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]) - 1)]
    return [
        "  ".join(text.ljust(width) for text, width in zip(row, widths, strict=False)) + "  " + row[-1] for row in rows
    ]


def _seed_words(seeds) -> str:
    if isinstance(seeds, SeedPolicy):
        return f"{seeds.min}-{seeds.max} adaptive seeds"
    count = len(seeds) if seeds else 1
    return f"{count} seed{'s' if count > 1 else ''}"


def _chain_lines(backbones: list[Backbone]) -> list[str]:
    """The sweeps this sweep's backbones come from: how many of those runs are done, and what `an-lab sweep` does."""
    chains: dict[str, dict] = {}
    for backbone in backbones:
        entry = chains.setdefault(backbone.sweep_file, {"name": backbone.sweep, "folders": {}, "unlisted": set()})
        entry["folders"][backbone.run_dir] = backbone.done()
        if not backbone.listed and not backbone.done():
            entry["unlisted"].add(backbone.run_dir)
    lines = []
    for file, entry in sorted(chains.items()):
        done, total = sum(entry["folders"].values()), len(entry["folders"])
        unlisted = len(entry["unlisted"])
        more = f", {unlisted} of them seeds that sweep does not list" if unlisted else ""
        then = ""
        if done < total:
            alone = " trains the listed ones alone" if unlisted else ""
            then = f"; `an-lab sweep` runs the {total - done} missing first{more} (`an-lab sweep {file}`{alone})"
        lines.append(f"backbones: {done} of {total} runs of sweep {entry['name']} ({file}) done{then}")
    return lines


def _backbones(plan: Plan) -> list[Backbone]:
    """Every backbone the sweep's runs (and, in a search, its trials) start from."""
    backbones = backbones_of(plan.runs)
    if plan.sweep.mode == "search":
        backbones += trial_backbones(plan.sweep)
    return backbones


def render(plan: Plan) -> str:
    """Plain text: a header, one row per run, counts, the compute estimate."""
    sweep = plan.sweep
    seeds = sweep.spec.seeds
    header = (
        f"sweep {sweep.name} ({sweep.mode}, {sweep.path}): {plan.cells} cells x "
        f"{_seed_words(seeds)} = {len(plan.runs)} runs "
        f"in {sweep.output_dir}/"
    )
    rows = [("#", "cell", "changes", "seed", "run id", "state")]
    for number, (run, (state, detail)) in enumerate(zip(plan.runs, plan.states, strict=True), start=1):
        rows.append(
            (str(number), run.cell.label, run.cell.describe(), str(run.seed), run.run_id, state_text(state, detail))
        )
    lines = [header, "", *align(rows), ""]
    done, failed, running = plan.count("done"), plan.count("failed"), plan.count("running")
    to_run = plan.count(*TO_RUN)
    counts = f"cells {plan.cells}, runs {len(plan.runs)}, done {done}, to run {to_run}"
    if failed:
        counts += f" (of which failed {failed}: rerun with --retry-failed)"
    if running:
        counts += f", running {running}"
    lines.append(counts)
    search = sweep.spec.search
    if sweep.mode == "search" and search is not None:
        space = [f"{axis} in {show(values)}" for axis, values in sweep.spec.axes.items()]
        space += [
            f"{key} in [{bounds.low:g}, {bounds.high:g}]{' log' if bounds.log else ''} ({bounds.type})"
            for key, bounds in search.space.items()
        ]
        lines.append(
            f"search: {search.n_trials} trials chosen by Optuna ({search.sampler} sampler, {search.pruner} pruner), "
            f"{search.direction} {search.metric}; space: {'; '.join(space) or 'empty'}; study: {sweep.storage}"
        )
    if isinstance(seeds, SeedPolicy):
        lines += render_seeds(plan_seeds(sweep)[1], seeds)
    lines += _chain_lines(_backbones(plan))
    lines.append(f"compute: {plan.estimate.words()}")
    launcher = sweep.spec.launcher
    lines.append(f"wall time: {plan.wall.words(launcher.max_parallel, launcher.executor in SCHEDULED)}")
    lines.append(f"sweep folder: {sweep.sweep_dir}/ (manifest written by `an-lab sweep`; plan writes nothing)")
    return "\n".join(lines)
