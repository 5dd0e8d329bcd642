"""The executors by name (an_lab.launch.registry): what the sweeps layer and the command line build them from, and
the facts about each that callers read without importing them."""

import yaml

from an_lab.cli import main
from an_lab.launch.base import Executor
from an_lab.launch.registry import NAMES, SCHEDULED, executor_class
from an_lab.sweeps.run import Options, make_executor
from an_lab.sweeps.spec import load_sweep


def test_every_name_builds_its_executor_and_the_registrys_facts_agree_with_the_classes(tmp_path):
    path = tmp_path / "one.yaml"
    path.write_text(yaml.safe_dump({"name": "one", "mode": "grid", "base": {"data": {"name": "fake"}}, "axes": {}}))
    sweep = load_sweep(path)
    for name in NAMES:
        kind = executor_class(name)
        assert issubclass(kind, Executor) and kind.name == name
        assert kind.scheduled == (name in SCHEDULED)
        executor = make_executor(sweep, Options(name, max_parallel=3))
        try:
            assert type(executor) is kind and executor.max_parallel >= 1
        finally:
            executor.close()
    assert "local" in NAMES and not executor_class("local").can_detach


def test_detach_with_an_executor_that_has_no_scheduler_is_refused_naming_those_that_do(tmp_path, capsys):
    path = tmp_path / "one.yaml"
    tree = {"name": "one", "mode": "grid", "base": {"data": {"name": "fake"}}, "axes": {}, "output_dir": "runs"}
    path.write_text(yaml.safe_dump(tree))
    assert main(["sweep", str(path), "--detach", "--executor", "local"]) == 2
    err = capsys.readouterr().err
    able = " or ".join(name for name in NAMES if executor_class(name).can_detach)
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert f"the local executor has none: use it with --executor {able}" in err
    assert not (tmp_path / "runs").exists()  # nothing launched, nothing written
