"""Detection's side of the training layer: Mask R-CNN, Cascade Mask R-CNN and HTC as a LightningModule
(detector.py), COCO evaluation of its outputs (coco_eval.py) and the DataModule that feeds it by iterations (data.py).
Import from the modules: this package imports nothing, so that a classification run never loads the detection stack."""
