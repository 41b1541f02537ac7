"""The tools tasks and runners use: running a model on batches (inference), slices of large images, test-time
views and their fusion, devices, tracking, line and zone counting, the confidence threshold.

Layering: `ops` sits below `cvpipe.tasks` and never imports it (nor `cvpipe.engine`, the runners above tasks);
tests/test_layering.py holds this.
"""
