"""Training: the LightningModule, the DataModule, callbacks and `train()`, the one function that trains a run."""
