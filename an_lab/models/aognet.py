"""AOGNets (Li, Song, Wu, CVPR 2019): networks whose building blocks unfold an AND-OR grammar over channel slices.

Facts taken from the authors' released code and configurations (the AOGNet-v2 release, with which the AN paper
trained its AOGNets; the CIFAR configuration comes from the first AOGNets release, whose network code is the same):

Grammar. Each stage's building block splits its channels into N equal slices ("primitives": N = 2, 2, 4, 4 for the
ImageNet models, 4, 4, 4 for CIFAR) and unfolds an AND-OR graph over the 1 x N grid with binary splits. An OR-node
over a span has a terminal (T) node over the same span and one AND-node per kept split point; an AND-node's two
children are the OR-nodes over its two halves; OR-nodes over the same span are shared. Symmetric splits are removed
per stage (setting 1, 2, 1, 2): setting 1 keeps the splits whose left part is not wider than the right one, setting 2
the mirror image. Lateral connections (the configs' node hierarchy 4) link the nodes of one type and width in
left-to-right order: among OR-nodes each node takes its left neighbour as an extra child, among AND-nodes (ordered by
split point) its right neighbour; widths are visited from narrow to wide, and the direction flips for a width that
follows a width with a single node of that type.

Node operation. Every node (T, AND and OR) owns a bottleneck unit: 1x1 conv (to round-half-up(C / 4) channels, at
least 4), norm, ReLU, 3x3 conv, norm, ReLU, 1x1 conv, norm, then Dropout2d with the stage's drop rate (0, 0, 0.1,
0.1; CIFAR 0, 0, 0.1), plus a residual input (through a 1x1 conv and norm when the channels change), then ReLU.
There is no drop-path (stochastic depth): the drop rate is channel-wise spatial dropout inside each node unit.
A T-node reads its slices of the block input. An AND-node reads the concatenation of its children, an OR-node their
sum. A lateral child's output is added to the unit's input, and to its residual too unless the two nodes share a
parent. Double counting: where a node is reached by more paths from the root than a child, the residual takes
that child scaled by paths(node) / paths(child), lateral edges not counted as paths. The root's output goes through
one more norm and ReLU. Only the 3x3 conv of nodes that span the full width gets the AN layer (the authors'
MixtureBatchNorm2d) in the AN configs; every other norm stays BatchNorm.

Around the blocks. ImageNet stem: three 3x3 conv-norm-ReLU (3 -> C/2 stride 2, C/2 -> C/2, C/2 -> C) and a 2x2
max pool; CIFAR stem: one 3x3 conv-norm-ReLU. A stage goes from filter_list[s] to filter_list[s + 1] channels in
equal steps per block (the step rounded to the nearest multiple of N, ties down; the last block ends at the stage
width). A stride-2 stage starts with a transition: 1x1 conv (C -> C), norm, ReLU, 2x2 average pooling; node units
never stride, so the configs' replace_stride_with_avgpool flag (False in the 40M BN config, True elsewhere) changes
nothing. Head: global average pooling and a linear classifier. Convolutions are Kaiming-normal (fan_out), norms
start at weight 1 and bias 0; every released config sets norm_zero_gamma_init to False (and the code leaves
zero-gamma as a to-do), so no norm starts at zero.

AN flavour. The ImageNet AN configs use attention mode 2: pooling mean / sqrt(unbiased variance + 1e-3), a 1x1 conv
C -> K without bias, BatchNorm over the K logits and a hard sigmoid, i.e. AttentiveNorm2d's pooling "rsd", head
"a2", activation "hsigmoid", with K = 10, 10, 20, 20 per stage. The CIFAR config uses attention mode 0: the same
pooling, a 1x1 conv with bias and a sigmoid (head "a1", activation "sigmoid"), K = 10, 10, 20.

One deliberate difference: an AND-node concatenates its children left to right. The authors' code concatenates them
in the iteration order of a Python set of node ids, which is not always spatial; that only permutes channels and
changes no count.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import pairwise

import torch
from torch import nn

from an_lab.models.convert import convert_norms

NormLayer = Callable[[int], nn.Module]


@dataclass(frozen=True)
class AOGNetConfig:
    """One AOGNet. Per-stage tuples have one entry per stage; filter_list has one more (the stem's width first)."""

    filter_list: tuple[int, ...]
    blocks: tuple[int, ...]  # AOG blocks per stage
    primitives: tuple[int, ...]  # N, the grammar's grid width per stage
    strides: tuple[int, ...]
    drop_rates: tuple[float, ...]  # Dropout2d after the last norm of every node unit
    symmetric_removal: tuple[int, ...]  # 0: keep all splits, 1: left part not wider, 2: left part not narrower
    stem: str = "imagenet"  # "imagenet" (three 3x3 convs and a max pool) or "cifar" (one 3x3 conv)
    lateral: bool = True  # lateral connections between nodes of one type and width
    handle_double_counting: bool = True
    bottleneck_ratio: float = 0.25
    zero_gamma_init: bool = False  # start the last norm of every node unit at 0 (off in every released config)
    an_k: tuple[int, ...] = (10, 10, 20, 20)  # the reference AN configs' K per stage
    an_pooling: str = "rsd"  # the reference AN configs' attention: pooling, head, activation
    an_head: str = "a2"
    an_activation: str = "hsigmoid"

    def __post_init__(self) -> None:
        stages = len(self.blocks)
        lengths = {len(t) for t in (self.primitives, self.strides, self.drop_rates, self.symmetric_removal, self.an_k)}
        if len(self.filter_list) != stages + 1 or lengths != {stages}:
            raise ValueError("an AOGNetConfig needs one entry per stage in each tuple and one more in filter_list")
        if not set(self.symmetric_removal) <= {0, 1, 2}:
            raise ValueError(f"symmetric_removal={self.symmetric_removal} is not valid; each entry is 0, 1 or 2")
        if self.stem not in ("imagenet", "cifar"):
            raise ValueError(f"stem={self.stem!r} is not valid; choose imagenet or cifar")

    @property
    def num_stages(self) -> int:
        return len(self.blocks)


CONFIGS: dict[str, AOGNetConfig] = {
    "aognet_12m": AOGNetConfig(
        filter_list=(32, 128, 256, 512, 824),
        blocks=(2, 2, 2, 1),
        primitives=(2, 2, 4, 4),
        strides=(1, 2, 2, 2),
        drop_rates=(0.0, 0.0, 0.1, 0.1),
        symmetric_removal=(1, 2, 1, 2),
    ),
    "aognet_40m": AOGNetConfig(
        filter_list=(56, 224, 448, 896, 1400),
        blocks=(2, 2, 3, 1),
        primitives=(2, 2, 4, 4),
        strides=(1, 2, 2, 2),
        drop_rates=(0.0, 0.0, 0.1, 0.1),
        symmetric_removal=(1, 2, 1, 2),
    ),
    # The authors' only released CIFAR configuration (AOGNet-1M on CIFAR-100).
    "cifar_aognet": AOGNetConfig(
        filter_list=(32, 64, 128, 248),
        blocks=(1, 1, 1),
        primitives=(4, 4, 4),
        strides=(1, 2, 2),
        drop_rates=(0.0, 0.0, 0.1),
        symmetric_removal=(1, 2, 1),
        stem="cifar",
        an_k=(10, 10, 20),
        an_head="a1",
        an_activation="sigmoid",
    ),
}


# -- the AND-OR graph ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Node:
    """A node over the half-open span [start, stop) of primitives; an AND-node splits it at `split`."""

    kind: str  # "or", "and" or "t"
    start: int
    stop: int
    split: int = -1

    @property
    def width(self) -> int:
        return self.stop - self.start

    @property
    def key(self) -> str:
        middle = f"_{self.split}" if self.kind == "and" else ""
        return f"{self.kind}{self.start}{middle}_{self.stop}"


@dataclass(frozen=True)
class Recipe:
    """How a node forms its unit's input and residual from the block input or from other nodes' outputs."""

    node: Node
    children: tuple[tuple[str, float], ...]  # (key, residual scale) of the structural children, left to right
    laterals: tuple[tuple[str, bool], ...]  # (key, also added to the residual)


def _kept_splits(width: int, removal: int) -> list[int]:
    """Widths of the left part of the binary splits an OR-node over `width` primitives keeps."""
    lefts = range(1, width)
    if removal == 1:
        return [left for left in lefts if left <= width - left]
    if removal == 2:
        return [left for left in reversed(lefts) if left >= width - left]
    return list(lefts)


def _unfold(width: int, removal: int) -> dict[Node, list[Node]]:
    """Structural children of every node, in the order the grammar creates the nodes (breadth first from the root)."""
    root = Node("or", 0, width)
    children: dict[Node, list[Node]] = {root: []}
    queue = deque([root])
    while queue:
        node = queue.popleft()
        if node.kind == "or":
            kids = [Node("t", node.start, node.stop)]
            kids += [
                Node("and", node.start, node.stop, node.start + left) for left in _kept_splits(node.width, removal)
            ]
        else:
            kids = [Node("or", node.start, node.split), Node("or", node.split, node.stop)]
        children[node] = kids
        for kid in kids:
            if kid not in children:
                children[kid] = []
                if kid.kind != "t":
                    queue.append(kid)
    return children


def _lateral_edges(nodes: list[Node], kind: str, direction: int) -> list[tuple[Node, Node]]:
    """(parent, child) lateral edges among the nodes of one kind, width by width from narrow to wide."""
    of_kind = [n for n in nodes if n.kind == kind]
    edges, flip = [], 0
    for width in sorted({n.width for n in of_kind}):
        group = sorted((n for n in of_kind if n.width == width), key=lambda n: (n.split, n.start))
        if len(group) < 2:
            flip = 1
            continue
        rightward = (direction ^ flip) == 1
        edges += [(a, b) if rightward else (b, a) for a, b in pairwise(group)]
        flip = 0
    return edges


def _post_order(root: Node, edges: dict[Node, list[Node]]) -> list[Node]:
    order: list[Node] = []
    seen: set[Node] = set()

    def visit(node: Node) -> None:
        seen.add(node)
        for child in edges[node]:
            if child not in seen:
                visit(child)
        order.append(node)

    visit(root)
    return order


def _path_counts(order: list[Node], structure: dict[Node, list[Node]]) -> dict[Node, int]:
    """Paths from the root (the last node of a post-order) along structural edges only."""
    paths = dict.fromkeys(order, 0)
    paths[order[-1]] = 1
    for node in reversed(order):
        for child in structure[node]:
            paths[child] += paths[node]
    return paths


class AOGraph:
    """The AND-OR graph of one stage's blocks: nodes in an order where every child comes before its parents."""

    def __init__(self, width: int, removal: int, lateral: bool = True, double_counting: bool = True) -> None:
        self.width = width
        structure = _unfold(width, removal)
        created = list(structure)
        laterals: dict[Node, list[Node]] = {n: [] for n in created}
        if lateral:
            for parent, child in _lateral_edges(created, "and", 1) + _lateral_edges(created, "or", 0):
                laterals[parent].append(child)
        everything = {n: structure[n] + laterals[n] for n in created}
        self.order = _post_order(created[0], everything)
        parents: dict[Node, set[Node]] = {n: set() for n in created}
        for node, kids in everything.items():
            for kid in kids:
                parents[kid].add(node)
        paths = _path_counts(self.order, structure)
        self.recipes = [self._recipe(n, structure[n], laterals[n], parents, paths, double_counting) for n in self.order]

    @staticmethod
    def _recipe(
        node: Node,
        kids: list[Node],
        lateral_kids: list[Node],
        parents: dict[Node, set[Node]],
        paths: dict[Node, int],
        double_counting: bool,
    ) -> Recipe:
        scales = [paths[node] / paths[kid] for kid in kids]
        if not double_counting or all(s == 1.0 for s in scales):
            scales = [1.0] * len(kids)
        ordered = sorted(zip(kids, scales, strict=True), key=lambda pair: pair[0].start)
        return Recipe(
            node=node,
            children=tuple((kid.key, scale) for kid, scale in ordered),
            laterals=tuple((kid.key, not (parents[node] & parents[kid])) for kid in lateral_kids),
        )


# -- modules ------------------------------------------------------------------------------------------------------


def _round_half_up(x: float) -> int:
    return math.floor(x + 0.5)


def _conv_norm_act(cin: int, cout: int, kernel: int, stride: int, norm_layer: NormLayer) -> list[nn.Module]:
    conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False)
    return [conv, norm_layer(cout), nn.ReLU(inplace=True)]


class NodeUnit(nn.Module):
    """A node's bottleneck residual unit; `bn2` follows the 3x3 conv (the AN site of full-width nodes)."""

    def __init__(self, cin: int, cout: int, norm_layer: NormLayer, drop_rate: float, ratio: float = 0.25) -> None:
        super().__init__()
        mid = max(4, _round_half_up(cout * ratio))
        self.conv1 = nn.Conv2d(cin, mid, 1, bias=False)
        self.bn1 = norm_layer(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, padding=1, bias=False)
        self.bn2 = norm_layer(mid)
        self.conv3 = nn.Conv2d(mid, cout, 1, bias=False)
        self.bn3 = norm_layer(cout)
        self.drop = nn.Dropout2d(drop_rate) if drop_rate > 0 else nn.Identity()
        self.shortcut = None
        if cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), norm_layer(cout))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.drop(self.bn3(self.conv3(y)))
        if self.shortcut is not None:
            residual = self.shortcut(residual)
        return self.relu(y + residual)


class AOGBlock(nn.Module):
    """One AOG building block: a unit per graph node, evaluated children first; the root's output is normalized."""

    def __init__(self, graph: AOGraph, cin: int, cout: int, norm_layer: NormLayer, drop_rate: float, ratio: float):
        super().__init__()
        n = graph.width
        if cin % n or cout % n:
            raise ValueError(f"an AOG block over {n} primitives needs channels divisible by {n}, got {cin} -> {cout}")
        self.graph, self.in_slice, out_slice = graph, cin // n, cout // n
        self.nodes = nn.ModuleDict()
        for recipe in graph.recipes:
            node = recipe.node
            cin_node = self.in_slice * node.width if node.kind == "t" else out_slice * node.width
            self.nodes[node.key] = NodeUnit(cin_node, out_slice * node.width, norm_layer, drop_rate, ratio)
        self.norm = norm_layer(cout)
        self.relu = nn.ReLU(inplace=True)

    def full_width_keys(self) -> list[str]:
        return [r.node.key for r in self.graph.recipes if r.node.width == self.graph.width]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs: dict[str, torch.Tensor] = {}
        for recipe in self.graph.recipes:
            node = recipe.node
            if node.kind == "t":
                unit_in = x[:, node.start * self.in_slice : node.stop * self.in_slice]
                residual = unit_in
            else:
                merge = torch.cat if node.kind == "and" else _sum
                unit_in = merge([outputs[key] for key, _ in recipe.children], 1)
                scaled = [outputs[key] * s if s != 1.0 else outputs[key] for key, s in recipe.children]
                residual = unit_in if all(s == 1.0 for _, s in recipe.children) else merge(scaled, 1)
            for key, into_residual in recipe.laterals:
                unit_in = unit_in + outputs[key]
                if into_residual:
                    residual = residual + outputs[key]
            outputs[node.key] = self.nodes[node.key](unit_in, residual)
        return self.relu(self.norm(outputs[self.graph.order[-1].key]))


def _sum(tensors: Sequence[torch.Tensor], _dim: int) -> torch.Tensor:
    total = tensors[0]
    for t in tensors[1:]:
        total = total + t
    return total


def _stage_widths(cin: int, cout: int, blocks: int, n: int) -> list[int]:
    """Output channels of each block of a stage: equal steps rounded to a multiple of n, the last at cout."""
    step = (cout - cin) // blocks
    if step % n:
        low = step // n * n
        step = low if step - low <= low + n - step else low + n
    return [cin + (j + 1) * step for j in range(blocks - 1)] + [cout]


class AOGNet(nn.Module):
    """AOGNet from an AOGNetConfig; stages are `stage0`..., each a Sequential of an optional `transition` and
    `block0`, `block1`, ... (AOGBlock), whose node units live under `nodes.<kind><start>[_<split>]_<stop>`."""

    def __init__(self, config: AOGNetConfig, num_classes: int = 1000, norm_layer: NormLayer = nn.BatchNorm2d) -> None:
        super().__init__()
        self.config = config
        self.stem = self._stem(config, norm_layer)
        for s in range(config.num_stages):
            self.add_module(f"stage{s}", self._stage(config, s, norm_layer))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(config.filter_list[-1], num_classes)
        self._init_parameters()

    @staticmethod
    def _stem(config: AOGNetConfig, norm_layer: NormLayer) -> nn.Sequential:
        c = config.filter_list[0]
        if config.stem == "cifar":
            return nn.Sequential(*_conv_norm_act(3, c, 3, 1, norm_layer))
        layers = _conv_norm_act(3, c // 2, 3, 2, norm_layer) + _conv_norm_act(c // 2, c // 2, 3, 1, norm_layer)
        return nn.Sequential(*layers, *_conv_norm_act(c // 2, c, 3, 1, norm_layer), nn.MaxPool2d(2, 2))

    @staticmethod
    def _stage(config: AOGNetConfig, s: int, norm_layer: NormLayer) -> nn.Sequential:
        cin, n = config.filter_list[s], config.primitives[s]
        graph = AOGraph(n, config.symmetric_removal[s], config.lateral, config.handle_double_counting)
        stage = nn.Sequential()
        if config.strides[s] > 1:
            stride = config.strides[s]
            stage.add_module(
                "transition", nn.Sequential(*_conv_norm_act(cin, cin, 1, 1, norm_layer), nn.AvgPool2d(stride))
            )
        for j, cout in enumerate(_stage_widths(cin, config.filter_list[s + 1], config.blocks[s], n)):
            block = AOGBlock(graph, cin, cout, norm_layer, config.drop_rates[s], config.bottleneck_ratio)
            stage.add_module(f"block{j}", block)
            cin = cout
        return stage

    def _init_parameters(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d | nn.GroupNorm) and m.weight is not None:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for name in zero_init_norms(self):
            nn.init.zeros_(self.get_submodule(name).weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for s in range(self.config.num_stages):
            x = getattr(self, f"stage{s}")(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


# -- AN placement -------------------------------------------------------------------------------------------------


def stage_of(name: str) -> int:
    """0-based stage of a layer from its qualified name: stage2.* -> 2; the stem (and anything else) -> 0."""
    head = name.split(".", 1)[0]
    return int(head[len("stage") :]) if head.startswith("stage") and head[len("stage") :].isdigit() else 0


def _blocks(model: nn.Module) -> list[tuple[str, AOGBlock]]:
    return [(name, m) for name, m in model.named_modules() if isinstance(m, AOGBlock)]


def paper_an_sites(model: nn.Module) -> dict[str, int]:
    """The norm after the 3x3 conv of every node unit whose span is the full width -> its stage."""
    return {
        f"{name}.nodes.{key}.bn2": stage_of(name) for name, block in _blocks(model) for key in block.full_width_keys()
    }


def unit_last_norms(model: nn.Module) -> list[str]:
    """The last norm (bn3) of every node unit: the residual units' last norms."""
    return [f"{name}.nodes.{key}.bn3" for name, block in _blocks(model) for key in block.nodes]


def zero_init_norms(model: nn.Module) -> list[str]:
    """Norms that start at zero: the last norm of every node unit if the config asks for it (no released one does)."""
    config = getattr(model, "config", None)
    if config is None or not config.zero_gamma_init:
        return []
    return unit_last_norms(model)


def with_attentive_norm(model: AOGNet, k: int | Sequence[int] | None = None, **an_options: str) -> AOGNet:
    """Replace the norms at paper_an_sites by AttentiveNorm2d in place and return the model.

    k: one K for all, one per stage, or None for the config's (10, 10, 20, 20 on ImageNet). an_options (pooling,
    head, activation) default to the flavour of the authors' AN config for this model.
    """
    config = model.config
    schedule = config.an_k if k is None else (k,) * config.num_stages if isinstance(k, int) else tuple(k)
    if len(schedule) != config.num_stages:
        raise ValueError(f"k={schedule} needs one K per stage ({config.num_stages} stages)")
    options = {"pooling": config.an_pooling, "head": config.an_head, "activation": config.an_activation, **an_options}
    k_of = {site: schedule[stage] for site, stage in paper_an_sites(model).items()}
    return convert_norms(model, select=k_of, k=k_of, **options)
