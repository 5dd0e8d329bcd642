"""`an-lab profile` as a user runs it: a real process."""

import functools
import json

from conftest import an_lab

an_lab = functools.partial(an_lab, timeout=300)


def test_profile_reports_the_papers_counts():
    result = an_lab("profile", "resnet50", "--norm", "an", "--json")
    assert result.returncode == 0, result.stderr
    counts = json.loads(result.stdout)
    assert counts["params"] == 25_755_420 and counts["params_over_bn"] == 198_388
    assert round(counts["macs"] / 1e9, 2) == 4.09 and counts["an_layers"] == 16

    text = an_lab("profile", "mobilenet_v2", "--k", "5,5,5,5,10,10,10").stdout
    assert "3,672,760" in text and "+167,888" in text


def test_profile_gives_the_aognet_papers_cost_convention_too():
    """AOGNet-12M with AN: the authors' count, 24 AN layers, and the 2.19 G their thop-based FLOPs column gives."""
    result = an_lab("profile", "aognet_12m", "--norm", "an", "--json")
    assert result.returncode == 0, result.stderr
    counts = json.loads(result.stdout)
    assert counts["params"] == 12_373_355 and counts["params_over_bn"] == 114_256 and counts["an_layers"] == 24
    assert counts["macs"] == 2_108_037_951
    assert abs(counts["macs_with_pointwise"] / 2.19e9 - 1) < 0.01
    text = an_lab("profile", "densenet161", "--norm", "an_gn").stdout
    assert "AN layers        78" in text and "thop" in text


def test_profile_usage_errors_exit_2_with_one_clear_line():
    result = an_lab("profile", "resnet50", "--k", "10,20")
    assert result.returncode == 2
    assert "k=(10, 20) has 2 entries but resnet50 has 4 stages" in result.stderr
    assert "Traceback" not in result.stderr
    result = an_lab("profile", "resnet99")
    assert result.returncode == 2 and "invalid choice: 'resnet99'" in result.stderr
