"""Where cvpipe keeps what it fetches, where the bundled pipelines are, and how a pipeline's paths resolve.

Fetched data and weights go to a per-user cache, never silently into the current folder:

    $CVPIPE_CACHE (else $XDG_CACHE_HOME/cvpipe, else ~/.cache/cvpipe)   proposals and other caches
    $CVPIPE_DATA    (else <cache>/data)                                `cvpipe data fetch`
    $CVPIPE_WEIGHTS (else <cache>/weights)                             `cvpipe weights fetch`

Inputs a pipeline names (`data.root`, a style image) resolve against the pipeline file's folder, then against
the data folder, so `root: treecrowns` in a bundled pipeline finds `cvpipe data fetch treecrowns`. Outputs
(`output.dir`) stay relative to the current folder, as `runs/` is in every tool of this kind.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

BUNDLED_PIPELINES = Path(__file__).with_name("pipelines")  # the repo's pipelines/, shipped in the wheel
PIPELINE_SUFFIXES = (".yaml", ".yml")


def cache_dir() -> Path:
    if os.environ.get("CVPIPE_CACHE"):
        return Path(os.environ["CVPIPE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cvpipe"


def data_dir() -> Path:
    return Path(os.environ["CVPIPE_DATA"]) if os.environ.get("CVPIPE_DATA") else cache_dir() / "data"


def weights_dir() -> Path:
    return Path(os.environ["CVPIPE_WEIGHTS"]) if os.environ.get("CVPIPE_WEIGHTS") else cache_dir() / "weights"


def bundled_pipelines() -> list[str]:
    return sorted(p.stem for p in BUNDLED_PIPELINES.glob("*.yaml"))


def bundled_hint(name: str) -> str:
    """`; did you mean "coco_ssd_mobilenet_v2"?` for a mistyped bundled pipeline name (`coco_ssd` included)."""
    from cvpipe.suggest import did_you_mean

    bundled = bundled_pipelines()
    stem = Path(name).stem
    containing = [known for known in bundled if stem and stem in known]
    return (f'; did you mean "{containing[0]}"?' if len(containing) == 1 else did_you_mean(stem, bundled)) \
        or "; `cvpipe pipelines` lists the bundled ones"


def find_pipeline(target: str | Path) -> Path:
    """A pipeline file as given, else a bundled pipeline by name (`coco_ssd_mobilenet_v2`, with or without
    `.yaml`). A path that exists nowhere comes back unchanged, for the caller's "no such file" message."""
    path = Path(target)
    if path.exists() or path.parent != Path("."):
        return path
    name = path.stem if path.suffix in PIPELINE_SUFFIXES else path.name
    bundled = BUNDLED_PIPELINES / f"{name}.yaml"
    return bundled if bundled.is_file() else path


def resolve_input(value: Path, base: Path) -> tuple[Path, list[Path]]:
    """`value` from a pipeline: absolute as is; relative, the first of base/value and data_dir()/value that
    exists. Returns the path and the places looked in (for an error message when none exists)."""
    value = Path(value).expanduser()
    if value.is_absolute():
        return value, [value]
    candidates = [base / value, data_dir() / value]
    return next((c for c in candidates if c.exists()), candidates[0]), candidates


def part_path(path: Path, *, keep_suffix: bool = False) -> Path:
    """The hidden temporary file a write goes through before it is renamed to `path`: `.NAME.part` (or
    `.STEM.part.SUFFIX` where the suffix matters, as a video container's does), with NAME cut to 200 bytes so
    that a legal 255-byte name stays within the file system's limit once `.` and `.part` are added."""
    path = Path(path)
    stem = path.stem if keep_suffix else path.name
    cut = os.fsdecode(os.fsencode(stem)[:200])
    return path.with_name(f".{cut}.part{path.suffix}" if keep_suffix else f".{cut}.part")


@contextmanager
def atomic_path(path: Path, *, keep_suffix: bool = False, unique: bool = False) -> Iterator[Path]:
    """The one way cvpipe writes a file: through a temporary path beside `path` (`part_path`), renamed over it when
    the block ends, so a reader sees the old file or the new one; on any failure the temporary file is removed.
    For writers that take a file name (torch.save, savefig, safetensors); `io.images.atomic_open` gives an open
    file. `unique`: a name of this process's own, where several processes may write the same file at once."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = part_path(path, keep_suffix=keep_suffix)
    if unique:
        tmp = tmp.with_name(f"{tmp.name}.{os.getpid()}.{threading.get_ident()}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def find_data(source: str | Path) -> Path:
    """A file or folder named on the command line (`--source`, `--style`): as given where it exists, else the same
    relative path under the data folder, where `cvpipe data fetch` puts data, so that `videos/bikes.mp4` or
    `treecrowns/val` work from any folder. Neither existing, it comes back as given for the caller's message."""
    path = Path(source).expanduser()
    if path.exists() or path.is_absolute():
        return path
    fetched = data_dir() / path
    return fetched if fetched.exists() else path


def leaves_root(relative: str) -> bool:
    """Whether a path that data or a pipeline names relative to a root (a split) could lead outside it: absolute
    (`/x`, `C:x`, `\\x`), or with a `..` part. `.` is the root itself."""
    parts = PurePosixPath(str(relative).replace("\\", "/")).parts
    if str(relative) == ".":
        return False
    return not parts or parts[0] == "/" or ".." in parts or "\0" in str(relative) or ":" in parts[0]
