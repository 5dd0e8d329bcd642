"""The Optuna study a search sweep drives (an_lab.sweeps.search._study), asked and told as the orchestrator does."""

import optuna
import yaml

from an_lab.sweeps.search import _study, _suggest
from an_lab.sweeps.spec import load_sweep


def _search(tmp_path, sampler: str, **options):
    tree = {
        "name": "study",
        "mode": "search",
        "base": {"data": {"name": "fake"}},
        "axes": {"optim.base_lr": [0.1, 0.2, 0.4]},
        "search": {"metric": "val_top1_err", "n_trials": 3, "sampler": sampler, "sampler_options": options},
        "output_dir": str(tmp_path / "runs"),
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(tree))
    return load_sweep(path)


def test_a_grid_used_up_records_every_trial(tmp_path):
    """Optuna's grid sampler calls study.stop() after its last point, which raises outside study.optimize() and would
    leave the last trial unrecorded."""
    sweep = _search(tmp_path, "grid", search_space={"optim.base_lr": ["0.1", "0.2", "0.4"]})
    study = _study(sweep)
    asked = []
    for _ in range(3):
        trial = study.ask()
        asked.append(_suggest(sweep, trial)["optim.base_lr"])
        study.tell(trial, 1.0)
    assert sorted(asked) == [0.1, 0.2, 0.4]
    states = [trial.state for trial in _study(sweep).trials]
    assert states == [optuna.trial.TrialState.COMPLETE] * 3


def test_a_relaunched_orchestrator_does_not_ask_the_same_trials_again(tmp_path):
    def ranged(folder):
        sweep = _search(folder, "random")
        sweep.spec.search.space.update(load_sweep_space(folder))
        return sweep

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = _study(ranged(tmp_path / "a"))
    trial = first.ask()
    asked_first = _suggest(ranged(tmp_path / "a"), trial)
    first.tell(trial, 1.0)
    relaunched = _study(ranged(tmp_path / "a"))  # what a relaunch gets: the sampler goes on past the trials so far
    asked_again = _suggest(ranged(tmp_path / "a"), relaunched.ask())
    fresh = _study(ranged(tmp_path / "b"))  # a new study, seeded as at the start: the first trial again
    assert _suggest(ranged(tmp_path / "b"), fresh.ask()) == asked_first
    assert asked_again["optim.weight_decay"] != asked_first["optim.weight_decay"]


def load_sweep_space(folder):
    from an_lab.sweeps.spec import Range

    return {"optim.weight_decay": Range(low=1e-5, high=1e-2, log=True)}
