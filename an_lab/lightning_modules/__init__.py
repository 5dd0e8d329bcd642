"""Training: the LightningModule, the DataModule, callbacks and `train()`, the one function that trains a run.

The training machinery lives here; what a run reads is in data/ (DataModules, data sets, COCO, the shapes set) and
detection's side in detection/ (the detector, its COCO evaluation and its iteration-trained DataModule)."""
