"""GeoTIFF georeferences (read with tifffile, no GDAL) and detections as GeoJSON in map coordinates.

A GeoTIFF maps pixels to map coordinates by ModelPixelScale + ModelTiepoint (the usual north-up case) or by a
full ModelTransformation matrix; its GeoKeyDirectory names the coordinate system (EPSG code). Pixel (col, row)
here is the pixel's top-left corner, as box coordinates are. Written by hand: tifffile reads the tags but does
not interpret them, and rasterio/GDAL are heavy dependencies for six numbers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cvpipe.errors import DataError

SCALE, TIEPOINT, TRANSFORMATION, GEOKEYS = 33550, 33922, 34264, 34735
PROJECTED_CRS, GEOGRAPHIC_CRS = 3072, 2048  # GeoKey ids holding the EPSG code


@dataclass(frozen=True)
class Georeference:
    affine: tuple[float, float, float, float, float, float]  # x = a·col + b·row + c, y = d·col + e·row + f
    epsg: int | None

    def to_map(self, cols: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        a, b, c, d, e, f = self.affine
        return a * cols + b * rows + c, d * cols + e * rows + f

    def polygon(self, box) -> list[list[float]]:
        """An xyxy pixel box as a closed GeoJSON ring in map coordinates."""
        x1, y1, x2, y2 = box
        xs, ys = self.to_map(np.array([x1, x2, x2, x1, x1], np.float64), np.array([y1, y1, y2, y2, y1], np.float64))
        return [[float(x), float(y)] for x, y in zip(xs, ys)]

    def as_json(self) -> dict:
        return {"affine": list(self.affine), "epsg": self.epsg}

    @classmethod
    def from_json(cls, data: dict) -> Georeference:
        return cls(tuple(data["affine"]), data.get("epsg"))


def read_georeference(path: Path) -> Georeference | None:
    """The file's georeference, or None (not a TIFF, or a TIFF without one). Tags that are there but cannot be a
    georeference (a wrong count of values, text, NaN or infinite numbers, a zero pixel size) raise DataError
    naming the file and the tag: a wrong map position is worse than none."""
    if Path(path).suffix.lower() not in (".tif", ".tiff"):
        return None
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            tags = {tag.code: tag.value for tag in tif.pages[0].tags.values()}
    except (OSError, ValueError, IndexError, tifffile.TiffFileError):
        return None
    if TRANSFORMATION in tags:
        m = _numbers(tags[TRANSFORMATION], path, "ModelTransformationTag", exactly=16)
        affine = (m[0], m[1], m[3], m[4], m[5], m[7])
    elif SCALE in tags and TIEPOINT in tags:
        sx, sy = _numbers(tags[SCALE], path, "ModelPixelScaleTag", at_least=2)[:2]
        i, j, _, x, y, _ = _numbers(tags[TIEPOINT], path, "ModelTiepointTag", at_least=6)[:6]
        if sx == 0 or sy == 0:
            raise DataError(f"{path}: GeoTIFF ModelPixelScaleTag: a pixel size of 0; fix the file's georeference "
                            "(e.g. gdal_edit.py -a_ullr) or remove it")
        affine = (sx, 0.0, x - i * sx, 0.0, -sy, y + j * sy)
    else:
        return None
    return Georeference(affine, _epsg(tags.get(GEOKEYS)))


def _numbers(value, path: Path, tag: str, *, exactly: int | None = None, at_least: int = 0) -> list[float]:
    """A tag's values as finite floats, their count checked."""
    values = list(value) if isinstance(value, (tuple, list, np.ndarray)) else [value]
    try:
        numbers = [float(v) for v in values]
    except (TypeError, ValueError):
        numbers = None
    count_ok = numbers is not None and (len(numbers) == exactly if exactly is not None else len(numbers) >= at_least)
    if not count_ok or not all(np.isfinite(numbers)):
        wanted = f"{exactly}" if exactly is not None else f"at least {at_least}"
        raise DataError(f"{path}: GeoTIFF {tag}: expected {wanted} finite numbers, got {_shown(values)}; fix the "
                        "file's georeference (e.g. with gdal_edit.py) or remove it")
    return numbers


def _shown(values: list) -> str:
    text = repr(values)
    return text if len(text) <= 80 else text[:77] + "…"


def _epsg(keys) -> int | None:
    """The EPSG code from a GeoKeyDirectory (header of 4 shorts, then 4 per key: id, location, count, value); a
    malformed directory names none."""
    try:
        keys = [int(v) for v in (keys if isinstance(keys, (tuple, list, np.ndarray)) else [])]
    except (TypeError, ValueError):
        return None
    found = {keys[k]: keys[k + 3] for k in range(4, len(keys) - 3, 4) if keys[k + 1] == 0}
    code = found.get(PROJECTED_CRS) or found.get(GEOGRAPHIC_CRS)
    return code if code and 0 < code < 1_000_000 and code != 32767 else None  # 32767: user-defined


def detections_geojson(entries: list[tuple[str, dict]], classes: list[str]) -> str | None:
    """(file, predict journal entry) pairs → a FeatureCollection of box polygons for the georeferenced ones, or
    None where no image had a georeference. The legacy `crs` member names the EPSG code when all share one."""
    features, codes = [], set()
    for name, entry in entries:
        if "georeference" not in entry:
            continue
        geo = Georeference.from_json(entry["georeference"])
        codes.add(geo.epsg)
        for box, score, label in zip(entry["boxes"], entry["scores"], entry["labels"]):
            features.append({"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [geo.polygon(box)]},
                             "properties": {"file": name, "class": classes[label], "score": score}})
    if not codes:
        return None
    collection = {"type": "FeatureCollection", "features": features}
    if len(codes) == 1 and None not in codes:
        collection["crs"] = {"type": "name", "properties": {"name": f"urn:ogc:def:crs:EPSG::{codes.pop()}"}}
    return json.dumps(collection)
