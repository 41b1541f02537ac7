"""Which of a pretrained head's classes are the target dataset's: names compared case- and separator-insensitively
over each source label's synonyms (ImageNet's WordNet labels: "tabby, tabby cat"), with an explicit
`model.head.class_map: {mine: theirs}` first. Hand-written: a dictionary lookup over normalised strings."""

from __future__ import annotations

import re

from cvpipe.errors import ConfigError


def normalised(name: str) -> str:
    """"Traffic_Light", "traffic-light", "traffic light" and "trafficlight" alike (VOC's "diningtable" is COCO's
    "dining table")."""
    return re.sub(r"[\s_\-/]+", "", name.strip().lower())


def synonyms(label: str) -> list[str]:
    """A source label's names: an ImageNet description's comma-separated WordNet synonyms, else the label."""
    return [normalised(part) for part in label.split(", ") if part.strip()]


def cannot_reuse(head, why: str) -> dict[str, str]:
    """What a head's `reuse_classes` does when it cannot reuse: nothing under auto, an error under true."""
    if head.reuse_classes is True:
        raise ConfigError(f"model.head.reuse_classes: {why}; set it to auto or false")
    return {}


def reusable_labels(head, weights_id: str | None, catalog, what: str, key: str = "model.weights") -> list[str] | None:
    """The pretrained head's labels where `reuse_classes` asks for its rows and the weights (at `key`) have a known
    label set; None where not (an error under `reuse_classes: true`, see cannot_reuse). `what` names the
    pretrained head in the message."""
    if head.reuse_classes is False:
        return None
    if weights_id is None:
        cannot_reuse(head, f"{key} is null, so there is no pretrained {what} to take class rows from")
        return None
    entry = catalog.get(weights_id)
    labels = entry.class_names()
    if not labels:
        cannot_reuse(head, f"{weights_id} has no known label set (trained on {entry.trained_on or 'unknown'})")
        return None
    return labels


def class_rows(rows: dict[int, int], own: int, source: int, groups: int, *, background: bool
                ) -> tuple[list[int], list[int]]:
    """(own rows, source rows) to copy in a predictor whose outputs are `groups` blocks (one per anchor) of `own`
    / `source` class columns each (with `background`, column 0 is background and class k is column k + 1)."""
    shift = int(background)
    pairs = [(0, 0)] if background else []
    pairs += [(i + shift, k + shift) for i, k in rows.items()]
    return ([g * own + i for g in range(groups) for i, _ in pairs], [g * source + k for g in range(groups) for _, k in pairs])


def match_classes(targets: list[str], sources: list[str], class_map: dict[str, str] | None = None
                  ) -> dict[int, int]:
    """Target index → source index for every target class that names a source class (through `class_map` where
    it lists the target). A name two source labels share goes to the first, in index order."""
    index: dict[str, int] = {}
    for k, label in enumerate(sources):
        for name in synonyms(label):
            index.setdefault(name, k)
    class_map = class_map or {}
    for mine, theirs in class_map.items():
        if mine not in targets:
            raise ConfigError(f"model.head.class_map: {mine!r} is not one of the data's classes {targets[:10]}")
        if normalised(theirs) not in index:
            raise ConfigError(f"model.head.class_map.{mine}: {theirs!r} is not a class of the pretrained head "
                              f"(its names: {', '.join(sources[:5])}, ...; any synonym of a label is accepted)")
    found = {}
    for i, target in enumerate(targets):
        k = index.get(normalised(class_map.get(target, target)))
        if k is not None:
            found[i] = k
    return found
