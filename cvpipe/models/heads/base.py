"""What heads share: the `Head` base that declares what the engine may ask of a model, torchvision-based
detectors' label shift (0-based outside, background 0 inside), and the one-size batch that classification and
segmentation stack."""

from __future__ import annotations

import torch
from torch import nn

from cvpipe.errors import DataError


class Head(nn.Module):
    """Every model `build_model` returns. The engine reads these instead of probing for attributes; a head sets
    those that apply to it (what a head can do beyond this is declared in its registration, registry.py)."""

    fixed_size: tuple[int, int] | None = None  # (h, w) images are resized to before the model, in uint8 (SSD, YOLO)
    region_proposals = None  # a RegionProposals where boxes are proposed outside the network (R-CNN, Fast R-CNN)
    # the transform that resizes inputs to min_size / max_size, which test-time views at other scales change (a
    # head registered with tta_scales sets it: Faster and Fast R-CNN)
    input_resizer = None


def stack_batch(images: list[torch.Tensor] | torch.Tensor) -> torch.Tensor:
    """A list of CHW images of one size → NCHW; a clear error if the pipeline left their sizes different."""
    if isinstance(images, torch.Tensor):
        return images
    sizes = {tuple(image.shape[-2:]) for image in images}
    if len(sizes) > 1:
        raise DataError(f"the images of a batch differ in size {sorted(sizes)}; resize or crop them in the pipeline's "
                        "augmentation (e.g. augment.eval: [{Resize: {height: 224, width: 224}}]) or use eval.batch_size 1")
    return torch.stack(images)


class TorchvisionDetector(Head):
    """`model(images, targets)` → loss dict in training; `model(images)` → `[{boxes, scores, labels}]` in eval.

    Subclasses set `self.model` to a torchvision detector, which reserves label 0 for background; images are
    float RGB in [0, 1], CHW; labels here are 0-based class indices.
    """

    model: nn.Module

    def forward(self, images: list[torch.Tensor], targets: list[dict] | None = None):
        if targets is not None:
            targets = [{**t, "labels": t["labels"] + 1} for t in targets]
        out = self.model(images, targets)
        if self.training:
            return out
        return [{**d, "labels": d["labels"] - 1} for d in out]


class OneStageDetector(Head):
    """A torchvision one-stage detector (RetinaNet, FCOS) in `self.model`: class indices are its own outputs (no
    background column), `model(images, targets)` → loss dict in training, `model(images)` →
    `[{boxes, scores, labels}]` in eval; images float RGB in [0, 1], CHW, resized by min_size / max_size."""

    model: nn.Module

    def forward(self, images: list[torch.Tensor], targets: list[dict] | None = None):
        out = self.model(images, targets)
        if self.training:  # torchvision's `classification`, `bbox_regression`, ... as every head names its losses
            return {f"loss_{name}": value for name, value in out.items()}
        return out

    @property
    def input_resizer(self):
        return self.model.transform


def renamed(state: dict[str, torch.Tensor], prefixes: tuple[tuple[str, str], ...]) -> dict[str, torch.Tensor]:
    """A torchvision detector's state dict under a cvpipe head's names (`prefixes`: (theirs, ours) pairs); tensors
    no prefix names keep their name."""
    out = {}
    for key, value in state.items():
        prefix = next((p for p in prefixes if key.startswith(p[0])), None)
        out[key if prefix is None else prefix[1] + key[len(prefix[0]):]] = value
    return out


def load_renamed(model: nn.Module, state: dict[str, torch.Tensor], entry, prefixes: tuple[tuple[str, str], ...],
                 *, in_order: str = "model.backbone.backbone.body.", optional: tuple[str, ...] = ()) -> list[str]:
    """A whole torchvision detector by its tensor names: the trunk must fit exactly, the rest where shapes fit (the
    class outputs of other classes start fresh, and `reuse_classes` may fill their shared rows); a tensor of the
    file with no place in the model is an error naming it, except under `optional` (ours: parts a pipeline may
    leave out, such as the deeper of SSD's extra blocks). Returns the tensors left fresh.

    The tensors under `in_order` (ours) load one by one in order where the two name them differently
    (torchvision's MobileNetV3 trunk in timm's); ResNets, named alike, load by name."""
    from cvpipe.errors import WeightsError
    from cvpipe.models.heads import load_fitting
    from cvpipe.models.weights import keyed_in_order

    own = model.state_dict()
    state = renamed(state, prefixes)
    theirs = {k: v for k, v in state.items() if k.startswith(in_order) and not k.endswith("num_batches_tracked")}
    mine = {k: v for k, v in own.items() if k.startswith(in_order)}
    if theirs and any(k not in theirs for k in mine if not k.endswith("num_batches_tracked")):
        state = {**{k: v for k, v in state.items() if not k.startswith(in_order)},
                 **keyed_in_order(mine, theirs, what=entry.id, owner=f"this pipeline's {in_order.rstrip('.')}")}
    unused = sorted(k for k in state if k not in own and not k.endswith("num_batches_tracked")
                    and not k.startswith(optional))
    if unused:
        raise WeightsError(f"{entry.id}: {len(unused)} tensors of the file have no place in this "
                           f"{type(model).__name__} (model.neck.extra_levels / norm, the head's settings?)", unused[:5])
    return load_fitting(model, state, what=entry.id)
