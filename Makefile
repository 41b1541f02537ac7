# cvpipe — every target sets itself up: `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DEMO   := pipelines/treecrowns_faster_rcnn.yaml
LOCK   := requirements/lock.txt
FORMATS := .venv-formats
# training budget of `make demo` in minutes; CI runs `make demo DEMO_MINUTES=1`
DEMO_MINUTES ?= 8

# Fetched data and weights stay in this checkout's data/ and weights/ (outside make, cvpipe uses ~/.cache/cvpipe)
export CVPIPE_DATA    ?= $(CURDIR)/data
export CVPIPE_WEIGHTS ?= $(CURDIR)/weights
# a pip constraint this machine is configured with (e.g. torch capped at its on-disk build) also bounds the lock
PIP_CONSTRAINT_FILE = $(shell $(BIN)/pip config list 2>/dev/null | sed -n "s/^global.constraint='\(.*\)'/\1/p")

# `make video-live`: where the live page listens
LIVE_PORT ?= 8000

.PHONY: install lock test test-latest demo video video-live bench lint clean reference docs docs-serve pictures

install: $(VENV)/.installed

# the lock pins every package to the set CI passes with; `make lock` refreshes it
$(VENV)/.installed: pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -c $(LOCK) -e '.[dev]'
	$(BIN)/python -c "import torchvision.ops, timm; torchvision.ops.nms"  # fails fast on a broken torch/torchvision pair
	touch $@

lock:  # re-resolve the newest releases pyproject.toml allows (dev and ray extras), for every platform and Python ≥ 3.10
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q uv
	$(BIN)/uv pip compile pyproject.toml --extra dev --extra ray --universal --python-version 3.10 \
		$(if $(PIP_CONSTRAINT_FILE),-c $(PIP_CONSTRAINT_FILE)) -o $(LOCK)

# the labeling tools' own readers (Label Studio's SDK, Datumaro's CVAT importer), which the tests read cvpipe's files
# with; a venv of their own: they pin opencv-python-headless 4.x, which would replace cvpipe's OpenCV
$(FORMATS)/.installed: requirements/formats.txt
	$(PYTHON) -m venv $(FORMATS)
	$(FORMATS)/bin/pip install -q --upgrade pip
	$(FORMATS)/bin/pip install -q -r requirements/formats.txt
	touch $@

test: install $(FORMATS)/.installed
	$(BIN)/python -m pytest

reference: install  # docs/reference/cli.md and config.md from the argparse parser and the pydantic schema
	$(BIN)/python -m cvpipe.reference docs/reference

docs: install  # the site (MkDocs Material) into site/, offline; any warning (a broken link, a missing page) fails it
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

docs-serve: install  # the site at http://127.0.0.1:8001/, rebuilt on every edit
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve --dev-addr 127.0.0.1:8001

pictures: install  # docs/img/ from real runs: make demo's outputs (made first when missing), then short runs of the rest
	test -f runs/demo/eval/report.html || $(MAKE) demo
	$(BIN)/python docs/pictures.py runs/demo

test-latest:  # the suite on the newest releases (no lock) in .venv-latest: what breaks next, before users see it
	$(PYTHON) -m venv .venv-latest
	.venv-latest/bin/pip install -q --upgrade pip
	.venv-latest/bin/pip install --upgrade --upgrade-strategy eager -e '.[dev]'
	.venv-latest/bin/pip list --format=freeze > .venv-latest/versions.txt
	.venv-latest/bin/python -m pytest

demo: install
	$(BIN)/cvpipe data fetch treecrowns
	$(BIN)/cvpipe weights fetch mobilenet_v2.imagenet
	$(BIN)/cvpipe validate $(DEMO)
	$(BIN)/cvpipe inspect $(DEMO) --input 3x400x400
	$(BIN)/cvpipe data check $(CVPIPE_DATA)/treecrowns --format voc --split val
	$(BIN)/cvpipe augment preview $(DEMO) --n 16 --out runs/demo/augment_preview.png
	$(BIN)/cvpipe train $(DEMO) --set output.dir=runs/demo train.time_limit=$(DEMO_MINUTES)
	$(BIN)/cvpipe eval $(DEMO) --set output.dir=runs/demo --json runs/demo/eval/metrics.json --report
	$(BIN)/cvpipe predict $(DEMO) --set output.dir=runs/demo --source $(CVPIPE_DATA)/treecrowns/val --out runs/demo/predict
	@echo "demo outputs (runs/demo/):"
	@echo "  $$(ls -d runs/demo/treecrowns_faster_rcnn* | tail -1)/  checkpoints (best.pt carries the best-F1 threshold), results.csv, plots"
	@echo "  eval/metrics.json        the 12 COCO stats + per-class AP of the whole val image, sliced, with test-time augmentation,"
	@echo "                           the confusion matrix, P/R/F1 curves and the error breakdown (and their PNGs beside it)"
	@echo "  eval/report.html         all of it as one offline page, with the worst val image drawn"
	@echo "  predict/images/          the annotated val image at the carried threshold; predict/results.json, detections.csv"
	@echo "  augment_preview.png      augmented training images with their boxes"

video: install
	$(BIN)/cvpipe data fetch videos
	$(BIN)/cvpipe weights fetch ssd_mobilenet_v2.coco
	$(BIN)/cvpipe video coco_ssd_mobilenet_v2 --source $(CVPIPE_DATA)/videos/bikes.mp4 --out runs/video/bikes.mp4 --set video.track=true
	@echo "  runs/video/bikes.mp4 (annotated, track ids), bikes.jsonl (per frame), bikes.summary.json"

video-live: install  # the same footage watched live in a browser, objects crossing the middle counted; Ctrl-C ends it
	$(BIN)/cvpipe data fetch videos
	$(BIN)/cvpipe weights fetch ssd_mobilenet_v2.coco
	@echo "open http://127.0.0.1:$(LIVE_PORT)/ in a browser"
	$(BIN)/cvpipe video coco_ssd_mobilenet_v2 --source $(CVPIPE_DATA)/videos/bikes.mp4 --out runs/video-live/bikes.mp4 \
		--serve $(LIVE_PORT) --set video.track=true 'video.lines={middle: [[0.5, 0], [0.5, 1]]}'

bench: install  # each prints its table and writes benches/results/NAME.json; the GPU part skips without CUDA
	$(BIN)/python benches/data_loading.py
	$(BIN)/python benches/train_step.py
	$(BIN)/python benches/predict_speed.py
	$(BIN)/python benches/coco_eval.py
	$(BIN)/python benches/ssd_vs_opencv.py
	$(BIN)/python benches/inference_speed.py
	$(BIN)/python benches/export_speed.py
	$(BIN)/python benches/style_speed.py
	$(BIN)/python benches/live_viewers.py
	$(BIN)/python benches/stream.py
	$(BIN)/python benches/predict_scale.py
	$(BIN)/python benches/transfer.py --budgets 10
	$(BIN)/python benches/tta.py
	$(BIN)/python benches/detectors.py --minutes 8
	$(BIN)/python benches/sliced_predict.py
	$(BIN)/cvpipe data fetch nuclei && $(BIN)/cvpipe data fetch nuclei-tiles && $(BIN)/cvpipe weights fetch mobilenet_v2.imagenet
	$(BIN)/cvpipe train pipelines/nuclei_mask_rcnn.yaml && $(BIN)/cvpipe train pipelines/nuclei_fcn.yaml
	$(BIN)/python benches/mask_rcnn_speed.py
	$(BIN)/python benches/semantic_vs_instance.py
	$(BIN)/cvpipe train pipelines/treecrowns_yolo.yaml && $(BIN)/python benches/deploy.py --yolo-weights runs/treecrowns_yolo/best.pt
	$(BIN)/python benches/gpu.py

lint: install
	$(BIN)/ruff check cvpipe tests benches

clean:
	rm -rf $(VENV) .venv-latest $(FORMATS) runs site .pytest_cache .ruff_cache
