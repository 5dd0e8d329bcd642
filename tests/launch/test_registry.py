"""The executors by name (an_lab.launch.registry): what the sweeps layer and the command line build them from, and
the facts about each that callers read without importing them."""

import yaml

from an_lab.cli import main
from an_lab.launch.base import Executor, JobRecords
from an_lab.launch.registry import CAN_WAIT, NAMES, RECORDS, SCHEDULED, executor_class, job_records
from an_lab.sweeps.run import Options, make_executor
from an_lab.sweeps.spec import load_sweep


def test_every_name_builds_its_executor_and_the_registrys_facts_agree_with_the_classes(tmp_path):
    path = tmp_path / "one.yaml"
    path.write_text(yaml.safe_dump({"name": "one", "mode": "grid", "base": {"data": {"name": "fake"}}, "axes": {}}))
    sweep = load_sweep(path)
    for name in NAMES:
        kind = executor_class(name)
        assert issubclass(kind, Executor) and kind.name == name
        assert kind.scheduled == (name in SCHEDULED) == (name in RECORDS)  # a scheduler's jobs have their records
        assert kind.can_wait_for_jobs == (name in CAN_WAIT)
        executor = make_executor(sweep, Options(name, max_parallel=3))
        try:
            assert type(executor) is kind and executor.max_parallel >= 1
        finally:
            executor.close()
    assert "local" in NAMES and not executor_class("local").can_detach
    assert [type(records) for records in job_records()] and all(isinstance(r, JobRecords) for r in job_records())


def test_records_find_nothing_in_a_folder_no_launch_wrote(tmp_path):
    """status and cancel ask every scheduled executor's records: in a sweep folder of local runs each finds none,
    without calling its scheduler (no squeue here would be an error note, not a silent empty answer)."""
    rows = [{"run_id": "cifar_resnet20-an-0123456789ab", "state": "pending", "detail": None}]
    for records in job_records():
        assert records.refine(tmp_path, rows, lambda run_id: None) == []
        assert records.orchestrator_line(tmp_path) is None
        lines, errors = records.cancel(tmp_path, "local-sweep", {}, 0.0)
        assert errors == [] and len(lines) == 1 and lines[0].endswith(f"recorded in {tmp_path}; nothing to cancel")
    assert rows == [{"run_id": "cifar_resnet20-an-0123456789ab", "state": "pending", "detail": None}]


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
