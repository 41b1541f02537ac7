from pathlib import Path
from typing import ClassVar, Literal

import pytest
import yaml

from cvpipe.cli import main
from cvpipe.config import HeadSettings
from cvpipe.errors import ConfigError
from cvpipe.loading import data_problems, load_pipeline, parse_override

REPO = Path(__file__).resolve().parents[1]

GOOD = """\
name: t
task: detect
data: {format: voc, root: DATA, classes: [Tree]}
model:
  backbone: {name: mobilenetv2_100, weights: mobilenet_v2.imagenet, out_indices: [2, 3, 4], freeze: 1}
  neck: {name: fpn}
  head: {name: faster_rcnn, anchor_sizes: [[16], [32], [64]]}
"""


def good(tmp_path) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(GOOD.replace("DATA", str(tmp_path)))
    return path


def problems_of(path, overrides=None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_pipeline(path, overrides)
    return info.value.problems or [str(info.value)]


def test_good_pipeline_merges_defaults(tmp_path):
    cfg = load_pipeline(good(tmp_path))
    assert cfg.model.head.anchor_sizes == [[16], [32], [64]]
    assert cfg.train.epochs == 10 and cfg.augment.min_visibility == 0.3  # from defaults.yaml
    assert cfg.model.neck.name == "fpn" and cfg.model.neck.out_channels == 128  # out_channels from defaults.yaml


@pytest.mark.parametrize("name", sorted(p.stem for p in (REPO / "pipelines").glob("*.yaml")))
def test_bundled_pipelines_load_by_name_from_any_folder(name, monkeypatch, tmp_path):
    """No dataset is needed to load a pipeline; a relative data.root finds a fetched dataset in the data folder."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CVPIPE_DATA", str(tmp_path / "datasets"))
    load_pipeline(name)
    root = yaml.safe_load((REPO / "pipelines" / f"{name}.yaml").read_text())["data"]["root"]
    if root is not None:
        (tmp_path / "datasets" / root).mkdir(parents=True)
    cfg = load_pipeline(name)
    assert cfg.data.root == (None if root is None else tmp_path / "datasets" / root)
    assert cfg.source == str(REPO / "cvpipe" / "pipelines" / f"{name}.yaml")


def test_every_problem_reported_with_file_line_and_path(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(
        "name: bad\ntask: detect\ndata:\n  format: vok\n  root: .\n  clases: [a]\n"
        "model:\n  backbone:\n    name: mobilenetv2_100\n    freeze: all\n    out_indices: [2, 3, 9]\n"
        "  head:\n    name: faster_rcnn\n    anchor_sizes: [[12], [-48]]\n"
    )
    got = problems_of(path)
    assert f"{path}:10: model.backbone.freeze: expected int 0..5, got \"all\"" in got
    assert f"{path}:4: data.format: expected one of coco | voc | yolo | folders | masks | instance_masks | images, got \"vok\"; did you mean \"voc\"?" in got
    assert f"{path}:6: data.clases: unknown key \"clases\"; did you mean \"classes\"?" in got
    assert f"{path}:11: model.backbone.out_indices[2]: expected int 0..5, got 9" in got
    assert f"{path}:14: model.head.anchor_sizes[1][0]: expected int >0, got -48" in got
    assert len(got) == 5


def test_overrides_apply_and_are_validated(tmp_path):
    cfg = load_pipeline(good(tmp_path), ["train.epochs=3", "model.head.score_thresh=0.3", "data.classes=[a, b]"])
    assert (cfg.train.epochs, cfg.model.head.score_thresh, cfg.data.classes) == (3, 0.3, ["a", "b"])
    got = problems_of(good(tmp_path), ["model.head.score_thresh=3", "train.epoch=2"])
    assert any("(--set): model.head.score_thresh: expected number 0.0..1.0, got 3" in p for p in got)
    assert any('unknown key "epoch"; did you mean "epochs"?' in p for p in got)
    assert parse_override("a.b.0=[1, 2]") == (("a", "b", 0), [1, 2])


def test_semantic_checks_weights_augment_and_data(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(GOOD.replace("DATA", str(tmp_path / "nowhere")).replace("mobilenet_v2.imagenet", "mobilenet_v2.imagenett")
                    + "augment:\n  train:\n    - HorizontalFlp: {p: 0.5}\n    - RandomCrop: {height: -3, width: 4}\n")
    got = problems_of(path)
    assert any(":10: augment.train[0]: unknown albumentations transform 'HorizontalFlp'; did you mean \"HorizontalFlip\"?" in p
               for p in got)
    assert any(":11: augment.train[1]: RandomCrop: invalid parameters" in p for p in got)
    assert any('model.backbone.weights: unknown weights id "mobilenet_v2.imagenett"; did you mean "mobilenet_v2.imagenet"?' in p
               for p in got)
    assert not any("data.root" in p for p in got)  # whether the dataset exists is the commands' business


def test_relative_inputs_resolve_against_the_pipeline_file_then_the_data_folder(tmp_path, monkeypatch):
    (tmp_path / "project" / "mydata").mkdir(parents=True)
    (tmp_path / "datasets" / "fetched").mkdir(parents=True)
    path = tmp_path / "project" / "p.yaml"
    path.write_text(GOOD.replace("DATA", "mydata"))
    monkeypatch.setenv("CVPIPE_DATA", str(tmp_path / "datasets"))
    monkeypatch.chdir(tmp_path)  # not the pipeline's folder
    assert load_pipeline(path).data.root == tmp_path / "project" / "mydata"
    assert load_pipeline(path, ["data.root=fetched"]).data.root == tmp_path / "datasets" / "fetched"
    (tmp_path / "here").mkdir()
    assert load_pipeline(path, ["data.root=here"]).data.root == tmp_path / "here"  # --set: the current folder
    cfg = load_pipeline(path, ["data.root=absent"])
    assert data_problems(cfg) == [
        f"{path} (--set): data.root: neither {tmp_path / 'absent'} nor {tmp_path / 'datasets' / 'absent'} exists; "
        "fetch a bundled dataset with `cvpipe data fetch NAME` (no NAME: the list) or fix the path"]
    cfg = load_pipeline(path, ["data.root=null"])
    assert data_problems(cfg)[0].startswith(f"{path} (--set): data.root: not set: this pipeline has no dataset")
    assert data_problems(load_pipeline(path)) == []


def test_commands_that_read_the_dataset_need_it_and_the_others_do_not(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CVPIPE_DATA", str(tmp_path / "empty"))
    assert main(["validate", "coco_ssd_mobilenet_v2"]) == 0  # a ready detector: no split, no dataset
    assert "no dataset: predict, video, export" in capsys.readouterr().out
    assert main(["validate", "treecrowns_faster_rcnn"]) == 2
    err = capsys.readouterr().err
    assert "treecrowns_faster_rcnn.yaml:11: data.root: neither " in err
    assert f"nor {tmp_path / 'empty' / 'treecrowns'} exists; fetch a bundled dataset with `cvpipe data fetch" in err
    for command in (["train", "treecrowns_faster_rcnn"], ["eval", "treecrowns_faster_rcnn"],
                    ["augment", "preview", "treecrowns_faster_rcnn"]):
        assert main(command) == 2, command
        assert "data.root:" in capsys.readouterr().err


def test_head_must_fit_task(tmp_path):
    got = problems_of(good(tmp_path), ["task=classify"])
    assert any("head 'faster_rcnn' does not do task 'classify'" in p for p in got)


def test_malformed_yaml_names_line(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("name: x\ntask: [detect\n")
    with pytest.raises(ConfigError, match=r"m.yaml:3:1: malformed YAML"):
        load_pipeline(path)


def test_yaml_is_never_executed(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("name: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="malformed YAML"):
        load_pipeline(path)


def test_cli_validate_exit_codes(tmp_path, capsys):
    from cvpipe.data.formats import write_dataset
    from cvpipe.data.synthetic import make_shapes

    assert main(["validate", str(good(tmp_path))]) == 2  # validate reads the dataset: there is none yet
    assert "voc: cannot read data.train" in capsys.readouterr().err
    for split in ("train", "val"):
        shapes = make_shapes(tmp_path / "src", split, n=2)
        shapes.classes = ["Tree", "disc"]
        write_dataset(shapes, tmp_path, "voc", split)
    assert main(["validate", str(good(tmp_path))]) == 0
    assert main(["validate", str(good(tmp_path)), "--set", "model.backbone.freeze=all"]) == 2
    assert 'model.backbone.freeze: expected int 0..5, got "all"' in capsys.readouterr().err


def test_the_schema_imports_nothing_of_models_or_data():
    import subprocess
    import sys

    code = ("import sys, cvpipe.config; "
            "print([m for m in sys.modules if m.startswith(('cvpipe.models', 'cvpipe.data'))])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_every_head_setting_has_one_registered_head_of_its_task():
    import typing

    from cvpipe.config import models_in
    from cvpipe.models.heads.registry import heads, heads_for_task
    from cvpipe.schema import pipeline_schema
    from cvpipe.tasks import tasks

    union = pipeline_schema().model_fields["model"].annotation.model_fields["head"].annotation
    settings = {typing.get_args(m.model_fields["name"].annotation)[0]: m for m in models_in(union)}
    assert set(settings) == set(heads())
    for name, spec in heads().items():
        assert spec.settings is settings[name] and name in heads_for_task(spec.task)
    assert heads_for_task("detect") == ["fast_rcnn", "faster_rcnn", "fcos", "rcnn", "retinanet", "ssd", "yolo"]
    assert {spec.task for spec in heads().values()} == set(tasks())  # every task has a head, every head a task


def test_the_detection_analysis_settings(tmp_path):
    cfg = load_pipeline(good(tmp_path), ["eval.conf=0.3", "eval.iou=0.6", "eval.area_ranges={tiny: [0, 256]}"])
    assert (cfg.eval.conf, cfg.eval.iou, cfg.eval.area_ranges) == (0.3, 0.6, {"tiny": (0.0, 256.0)})
    assert load_pipeline(good(tmp_path)).eval.conf == "auto"
    for override, message in (("eval.conf=1.5", "eval.conf: expected auto (the best-F1 confidence) or a number in "
                                                 "[0, 1], got 1.5"),
                              ("eval.conf=high", "got 'high'"),
                              ("eval.area_ranges={small: [0, 1]}", "'small' is one of COCO's own ranges"),
                              ("eval.area_ranges={tiny: [10, 1]}", "tiny: [10.0, 1.0] must be [min, max]"),
                              ("eval.area_ranges={a-b: [0, 1]}", "a range name is letters, digits and _")):
        got = problems_of(good(tmp_path), [override])
        assert len(got) == 1 and message in got[0], got


def test_the_task_chooses_its_defaults_without_writing_them_while_checking():
    from cvpipe.config import PipelineConfig
    from cvpipe.tasks import get_task

    loaded = load_pipeline("sample_faster_rcnn")  # the loader sets what the task chose, once every check passed
    assert (loaded.eval.batch_size, loaded.tiling.batch, loaded.eval.best) == (1, 1, "AP50")
    assert (loaded.tta.iou, loaded.tiling.merge) == (loaded.model.head.nms_thresh, "nms")
    raw = PipelineConfig.model_validate(loaded.model_dump() | {
        "eval": loaded.eval.model_dump() | {"batch_size": None, "best": "auto"},
        "tiling": loaded.tiling.model_dump() | {"batch": None, "merge": None},
        "tta": loaded.tta.model_dump() | {"iou": None}})
    before = raw.model_dump()
    chosen, problems = get_task("detect").settle(raw)
    assert raw.model_dump() == before and problems == []  # settle reads, it does not write
    assert chosen == {("eval", "batch_size"): 1, ("tiling", "batch"): 1, ("eval", "best"): "AP",
                      ("tta", "iou"): loaded.model.head.nms_thresh, ("tiling", "merge"): "nms"}


class CountingHead(HeadSettings):
    """Counts objects: one number per image (a head settings class, as a new head's module would hold it)."""

    task: ClassVar[str] = "classify"
    name: Literal["counter"]
    depth: int = 2  # layers of the counting branch


def test_a_new_head_is_one_registration_and_the_schema_and_reference_follow(tmp_path, monkeypatch):
    """What docs/adding-a-head.md asks for, done at run time: a settings class and a HeadSpec registered, and
    nothing else edited. The schema accepts the head by name (and its settings' bounds), the reference lists it."""
    from cvpipe import schema
    from cvpipe.models.heads.registry import HEADS, HeadSpec, head_spec
    from cvpipe.reference import config_reference

    classifier = head_spec("classifier")
    load_pipeline(REPO / "pipelines" / "faces_classify.yaml")  # the schema assembled before the head registers
    monkeypatch.setitem(HEADS.entries, "counter", HeadSpec("counter", CountingHead, classifier.build))
    try:
        path = tmp_path / "counter.yaml"
        path.write_text((REPO / "pipelines" / "faces_classify.yaml").read_text().replace("{name: classifier, dropout: 0.2}", "{name: counter}"))
        config = load_pipeline(path, ["model.head.depth=3"])
        assert type(config.model.head) is CountingHead and config.model.head.depth == 3
        assert any("model.head.depth:" in line for line in problems_of(path, ["model.head.depth=x"]))
        reference = config_reference()
        assert "`name: counter`" in reference, reference[:300]
        assert "layers of the counting branch" in reference, [line for line in reference.splitlines() if "depth" in line]
    finally:
        monkeypatch.undo()
    assert "counter" not in schema.head_settings()
    assert problems_of(path, []) and "classifier" in str(problems_of(path, []))  # unknown again once it is gone
