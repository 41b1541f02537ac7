"""`cvpipe label`: the labeling loop around a trained pipeline.

- export: pre-labels for a folder of images, as Label Studio tasks, CVAT XML, COCO, YOLO or VOC (prelabel.py);
- import: corrected annotations from Label Studio or CVAT back into a dataset folder (importing.py);
- the tools' files themselves: label_studio.py, cvat.py; what they share: regions.py.
"""
