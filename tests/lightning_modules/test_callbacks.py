"""Callbacks of the training layer, on a real Lightning Trainer."""

import os
import signal
import sys

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from an_lab.lightning_modules.callbacks import SigtermStop


class Regression(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)
        self.batches = 0

    def training_step(self, batch, batch_idx):
        self.batches += 1
        x, y = batch
        return torch.nn.functional.mse_loss(self.layer(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class SigtermInsideDel(pl.Callback):
    """At the end of batch `at`, SIGTERM this process from inside a `__del__`: the handler runs there, and Python
    prints and drops the SystemExit it raises (as when a signal lands in a weakref callback or a finalizer)."""

    def __init__(self, at: int) -> None:
        self.at = at

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if batch_idx != self.at:
            return

        class Finalized:
            def __del__(self) -> None:
                os.kill(os.getpid(), signal.SIGTERM)

        Finalized()  # collected at once: its __del__ swallows the handler's SystemExit


def test_a_sigterm_whose_exit_python_drops_still_ends_the_run_with_143_at_the_next_batch(tmp_path, monkeypatch):
    dropped = []
    monkeypatch.setattr(sys, "unraisablehook", dropped.append)  # where Python reports what it drops
    data = DataLoader(TensorDataset(torch.randn(64, 4), torch.randn(64, 1)), batch_size=4)
    closed = []
    stop = SigtermStop(on_stop=lambda: closed.append(True))
    module = Regression()
    trainer = pl.Trainer(
        max_epochs=1,
        callbacks=[SigtermInsideDel(at=2)],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as stopped, stop:
        trainer.fit(module, data)
    assert [type(d.exc_value) for d in dropped] == [SystemExit]  # the first exit was dropped, as in any __del__
    assert stopped.value.code == SigtermStop.EXIT_CODE
    assert module.batches == 3  # batches 0, 1 and 2 ran; Lightning stopped before the next one, as 143
    assert closed == [True]  # the loggers were closed once
    assert signal.getsignal(signal.SIGTERM) is before  # the handler is the caller's again
