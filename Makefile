# cvpipe — every target sets itself up: `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DEMO   := pipelines/treecrowns_faster_rcnn.yaml

.PHONY: install test demo video bench lint clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e '.[dev]'
	$(BIN)/python -c "import torchvision.ops, timm; torchvision.ops.nms"  # fails fast on a broken torch/torchvision pair
	touch $@

test: install
	$(BIN)/python -m pytest

demo: install
	$(BIN)/cvpipe data fetch treecrowns
	$(BIN)/cvpipe weights fetch mobilenet_v2.imagenet
	$(BIN)/cvpipe validate $(DEMO)
	$(BIN)/cvpipe inspect $(DEMO) --input 3x400x400
	$(BIN)/cvpipe data check data/treecrowns --format voc --split val
	$(BIN)/cvpipe augment preview $(DEMO) --n 16 --out runs/demo/augment_preview.png
	$(BIN)/cvpipe train $(DEMO) --set output.dir=runs/demo
	$(BIN)/cvpipe eval $(DEMO) --set output.dir=runs/demo --json runs/demo/eval/metrics.json
	$(BIN)/cvpipe predict $(DEMO) --set output.dir=runs/demo --source data/treecrowns/val --out runs/demo/predict
	@echo "demo outputs (runs/demo/):"
	@echo "  $$(ls -d runs/demo/treecrowns_faster_rcnn* | tail -1)/  checkpoints, results.csv, loss_curves.png, pr_curve.png, per_class_ap.png"
	@echo "  eval/metrics.json        the 12 COCO stats + per-class AP with test-time augmentation (val_detections.json beside it)"
	@echo "  predict/images/          annotated val tiles; predict/results.json, detections.csv"
	@echo "  augment_preview.png      augmented training tiles with their boxes"

video: install
	$(BIN)/cvpipe data fetch videos
	$(BIN)/cvpipe weights fetch ssd_mobilenet_v2.coco
	$(BIN)/cvpipe video pipelines/coco_ssd_mobilenet_v2.yaml --source data/videos/bikes.mp4 --out runs/video/bikes.mp4 --set video.track=true
	@echo "  runs/video/bikes.mp4 (annotated, track ids), bikes.jsonl (per frame), bikes.summary.json"

bench: install  # each prints its table and writes benches/results/NAME.json; the GPU part skips without CUDA
	$(BIN)/python benches/data_loading.py
	$(BIN)/python benches/train_step.py
	$(BIN)/python benches/predict_speed.py
	$(BIN)/python benches/coco_eval.py
	$(BIN)/python benches/ssd_vs_opencv.py
	$(BIN)/python benches/export_speed.py
	$(BIN)/python benches/style_speed.py
	$(BIN)/python benches/stream.py
	$(BIN)/python benches/predict_scale.py
	$(BIN)/python benches/transfer.py --budgets 10
	$(BIN)/python benches/tta.py
	$(BIN)/python benches/detectors.py --minutes 8
	$(BIN)/python benches/gpu.py

lint: install
	$(BIN)/ruff check cvpipe tests benches

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
