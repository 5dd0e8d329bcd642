"""What a run trains and is evaluated on: the classification DataModule and its data sets (classification.py), COCO
loading and checks (coco.py), the generated shapes set (coco_shapes.py) and its objects as classification samples
(object_crops.py). Import from the modules: this package imports nothing, so that reading the shapes set or COCO
does not load Lightning."""
