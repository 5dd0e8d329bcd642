"""The one entry point that trains a run (an_lab.launch.entry): a run folder's config must still resolve to it."""

import json

from an_lab.config import load_config
from an_lab.identity import fingerprint, run_dir
from an_lab.launch.entry import main


def test_data_that_changed_after_planning_is_refused_before_training_and_recorded(tmp_path, capsys):
    data = tmp_path / "data"
    for split in ("train", "val"):
        for name in ("a", "b"):
            (data / split / name).mkdir(parents=True)
            (data / split / name / "1.png").write_bytes(b"png")
    config = load_config(None, ["data.name=imagefolder", f"data.root={data}", f"output_dir={tmp_path / 'runs'}"])
    folder = run_dir(config)
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config.model_dump(mode="json")))
    (data / "train" / "a" / "2.png").write_bytes(b"png")  # an image added after the run was planned
    fingerprint.cache_clear()
    assert main([str(folder / "config.json")]) == 2
    said = capsys.readouterr().err
    assert f"not {folder.name}: its data ({data}) or its backbone changed after the run was planned" in said
    assert "changed after the run was planned" in json.loads((folder / "failed.json").read_text())["reason"]
    assert not (folder / "logs").exists()


def test_lightnings_eval_mode_notice_is_hidden_unless_verbose(monkeypatch):
    """Detection freezes BN and AN layers in eval mode by design (the papers' fine-tuning rule): Lightning's
    "Found N module(s) in eval mode" notice is noise there, shown with --verbose only."""
    import warnings

    from an_lab.launch.entry import VERBOSE_ENV, quiet_third_parties

    notice = "Found 68 module(s) in eval mode at the start of training. This may lead to unexpected behavior"
    for verbose, shown in (("0", 0), ("1", 1)):
        monkeypatch.setenv(VERBOSE_ENV, verbose)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            quiet_third_parties()
            warnings.warn(notice, UserWarning, stacklevel=1)
        assert len(caught) == shown, [str(w.message) for w in caught]
