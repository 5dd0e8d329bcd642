"""AOGNets: the authors' parameter counts to the unit, AN placement, cost, and the grammar behind the blocks."""

import dataclasses
import math
import re

import pytest
import torch
from torch import nn

from an_lab.models.aognet import (
    CONFIGS,
    AOGNet,
    AOGraph,
    paper_an_sites,
    stage_of,
    with_attentive_norm,
    zero_init_norms,
)
from an_lab.nn import AttentiveNorm2d
from an_lab.profiling import count_cost, count_parameters


@pytest.fixture(scope="module", params=["aognet_12m", "aognet_40m"])
def imagenet(request) -> dict:
    """One build per model: counts with BN, its cost at 224x224 (one forward), then the counts with AN."""
    model = AOGNet(CONFIGS[request.param], num_classes=1000, norm_layer=nn.BatchNorm2d)
    facts = {"name": request.param, "bn": count_parameters(model), "sites": paper_an_sites(model)}
    facts["macs"], pointwise = count_cost(model, 224)
    facts["thop"] = facts["macs"] + pointwise
    with_attentive_norm(model, k=(10, 10, 20, 20), pooling="rsd", head="a2", activation="hsigmoid")
    facts["an"] = count_parameters(model)
    facts["model"] = model
    return facts


EXPECTED = {
    # name: (BN params, AN params, AN layers, MACs from the repo's profiler, the authors' published GFLOPs)
    "aognet_12m": (12_259_099, 12_373_355, 24, 2_107_919_991, 2.19),
    "aognet_40m": (40_153_004, 40_388_880, 28, 7_351_299_599, 7.51),
}


def test_parameter_counts_match_the_authors_code_to_the_unit(imagenet):
    bn, an, layers, _, _ = EXPECTED[imagenet["name"]]
    assert imagenet["bn"] == bn
    assert imagenet["an"] == an
    assert len(imagenet["sites"]) == layers
    assert sum(isinstance(m, AttentiveNorm2d) for m in imagenet["model"].modules()) == layers


def test_cost_at_224(imagenet):
    _, _, _, macs, published = EXPECTED[imagenet["name"]]
    # PyTorch's counter counts the convolutions and the classifier only: 2.11 G and 7.35 G ...
    assert imagenet["macs"] == macs
    # ... while the published 2.19 G and 7.51 G come from thop, which also counts norms (4 ops per element) and ReLUs
    # (an-lab profile prints both).
    assert imagenet["thop"] / 1e9 == pytest.approx(published, rel=0.01)


def test_an_sits_after_the_3x3_conv_of_full_width_nodes(imagenet):
    model, sites = imagenet["model"], imagenet["sites"]
    for name, stage in sites.items():
        width = CONFIGS[imagenet["name"]].primitives[stage]
        assert re.fullmatch(rf"stage{stage}\.block\d\.nodes\.(or|t|and)0(_\d)?_{width}\.bn2", name), name
        layer = model.get_submodule(name)
        assert layer.k == (10, 10, 20, 20)[stage]
        assert (layer.pooling, layer.head, layer.activation) == ("rsd", "a2", "hsigmoid")
    assert sorted(set(sites.values())) == [0, 1, 2, 3]
    assert {n for n, m in model.named_modules() if isinstance(m, AttentiveNorm2d)} == set(sites)
    assert isinstance(model.stage0.block0.nodes["or0_1"].bn2, nn.BatchNorm2d)  # half width: plain BN
    assert isinstance(model.stage3.block0.nodes["and0_3_4"].bn2, AttentiveNorm2d)
    assert isinstance(model.stage3.block0.nodes["and0_3_4"].bn3, nn.BatchNorm2d)
    assert isinstance(model.stage3.transition[1], nn.BatchNorm2d) and isinstance(model.stem[1], nn.BatchNorm2d)


def test_stage_of_names():
    assert stage_of("stem.1") == 0
    assert stage_of("stage0.block1.norm") == 0
    assert stage_of("stage2.block0.nodes.or0_4.bn2") == 2
    assert stage_of("stage3.transition.1") == 3
    assert stage_of("fc") == 0


def test_no_released_config_zero_initializes_a_norm():
    for name, config in CONFIGS.items():
        assert not config.zero_gamma_init, name
    model = AOGNet(CONFIGS["cifar_aognet"], num_classes=10)
    assert zero_init_norms(model) == []
    zeroed = AOGNet(dataclasses.replace(CONFIGS["cifar_aognet"], zero_gamma_init=True), num_classes=10)
    names = zero_init_norms(zeroed)
    assert len(names) == 21 * 3 and all(name.endswith(".bn3") for name in names)
    assert all(torch.count_nonzero(zeroed.get_submodule(name).weight) == 0 for name in names)


def test_the_grammar_of_the_blocks():
    two, four_left, four_right = AOGraph(2, 1), AOGraph(4, 1), AOGraph(4, 2)
    assert len(two.recipes) == 7 and len(four_left.recipes) == 21 and len(four_right.recipes) == 21
    kinds = [r.node.kind for r in four_left.recipes]
    assert (kinds.count("or"), kinds.count("and"), kinds.count("t")) == (8, 5, 8)
    assert four_left.order[-1].key == "or0_4"  # the root comes last
    recipes = {r.node.key: r for r in four_left.recipes}
    assert {r.node.key for r in four_left.recipes if r.node.kind == "and"} == {
        "and0_1_4",
        "and0_2_4",
        "and1_2_4",
        "and0_1_2",
        "and2_3_4",
    }
    assert recipes["or1_2"].laterals == (("or0_1", False),)  # siblings under and0_1_2: not in the residual
    assert recipes["or2_3"].laterals == (("or1_2", True),)
    assert recipes["and0_2_4"].laterals == (("and0_1_4", False),)
    assert recipes["and0_1_4"].children == (("or0_1", 0.5), ("or1_4", 1.0))  # or0_1 is reached by two paths
    assert {r.node.key for r in four_right.recipes if r.node.kind == "and"} == {
        "and0_3_4",
        "and0_2_4",
        "and0_2_3",
        "and0_1_2",
        "and2_3_4",
    }


def _cifar_step(model: nn.Module) -> None:
    model.train()
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    out.square().mean().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_cifar_model_trains_a_step_with_bn_and_with_an():
    torch.manual_seed(0)
    bn = AOGNet(CONFIGS["cifar_aognet"], num_classes=10)
    assert count_parameters(bn) == 790_285
    assert count_parameters(AOGNet(CONFIGS["cifar_aognet"], num_classes=100)) == 812_695  # the authors' 1M model
    _cifar_step(bn)
    an = with_attentive_norm(AOGNet(CONFIGS["cifar_aognet"], num_classes=10))  # K 10, 10, 20; a1 head, sigmoid
    assert sum(isinstance(m, AttentiveNorm2d) for m in an.modules()) == 12
    assert an.stage2.block0.nodes["or0_4"].bn2.k == 20 and an.stage0.block0.nodes["t0_4"].bn2.head == "a1"
    assert count_parameters(an) == 810_205
    _cifar_step(an)


def _group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(32, channels), channels)


def test_group_norm_backbone_builds_and_runs():
    model = AOGNet(CONFIGS["cifar_aognet"], num_classes=10, norm_layer=_group_norm)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    _cifar_step(model)
    big = AOGNet(CONFIGS["aognet_12m"], norm_layer=_group_norm)
    an = with_attentive_norm(big)
    assert sum(isinstance(m, AttentiveNorm2d) and m.norm == "group" for m in an.modules()) == 24
