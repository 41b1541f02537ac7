"""Where results go: checked before any work (a file in the way, no write permission, a full disk), and the one
wording of an operating-system error, so a command ends with the path and the cause instead of a traceback."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cvpipe.errors import CvpipeError
from cvpipe.paths import part_path

MIN_FREE_BYTES = 64 << 20  # below this a run would fail part-way through writing its results

CAUSES = {
    errno.ENOSPC: "disk full", errno.EDQUOT: "disk quota exceeded", errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted", errno.EROFS: "read-only file system",
    errno.ENOTDIR: "a file is in the way of a folder", errno.EEXIST: "a file is in the way",
    errno.EISDIR: "it is a folder", errno.ENAMETOOLONG: "name too long", errno.ENOENT: "no such file or folder",
    errno.EIO: "input/output error (a failing disk or a dropped network share)",
}


def cause(error: OSError) -> str:
    return CAUSES.get(error.errno, error.strerror or type(error).__name__)


def describe_os_error(error: OSError) -> str:
    """`PATH: cause` for an OSError a command did not expect (a disk filling up mid-run)."""
    where = error.filename if error.filename is not None else "a file"
    return f"{where}: {cause(error)}" + (" (nothing was written over; free some space and run again)"
                                        if error.errno in (errno.ENOSPC, errno.EDQUOT) else "")


def prepare_dir(path: Path | str, what: str) -> Path:
    """Create `path` (a folder) if needed and check that files can be written in it. `what` names the option or
    setting it came from (`--out`, `output.dir`) for the message."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise CvpipeError(f"{what} {path}: is a file, not a folder; name a folder (it is created if missing)")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path, prefix=".cvpipe-write-check-"):
            pass
    except OSError as e:
        blocker = f" ({e.filename} is a file)" if e.errno in (errno.EEXIST, errno.ENOTDIR) and e.filename else ""
        raise CvpipeError(f"{what} {path}: cannot write there: {cause(e)}{blocker}; choose another folder") from None
    free = shutil.disk_usage(path).free
    if free < MIN_FREE_BYTES:
        raise CvpipeError(f"{what} {path}: disk full ({free / 2**20:.0f} MB free, at least "
                          f"{MIN_FREE_BYTES >> 20} MB needed); free some space or choose another folder")
    return path


def prepare_file(path: Path | str, what: str) -> Path:
    """Check that the file `path` can be written: its folder is prepared, and `path` itself is not a folder."""
    path = Path(path)
    if path.is_dir():
        raise CvpipeError(f"{what} {path}: is a folder; name the file to write")
    prepare_dir(path.parent, what)
    if path.exists() and not os.access(path, os.W_OK):
        raise CvpipeError(f"{what} {path}: cannot write there: permission denied; choose another file")
    return path


def refuse_inside_or_over(out: Path | str, root: Path | str, what: str) -> None:
    """A dataset copy goes neither into its dataset (it would be read as part of it) nor over it."""
    out, root = Path(out).resolve(), Path(root).resolve()
    if out.is_relative_to(root) or root.is_relative_to(out):
        raise CvpipeError(f"{what} {out}: inside or over the dataset {root}; write the copy to a folder outside it")


@contextmanager
def new_dataset_dir(out: Path | str, source_root: Path | str, what: str) -> Iterator[Path]:
    """The folder a command builds a dataset copy in: never the source, nor inside it (the copy would be read as
    part of the dataset next time), nor over an existing non-empty folder. The copy is built in a hidden folder
    beside `out` and renamed to `out` whole when the block ends, so a run killed half-way leaves no images
    without their labels (a hidden folder left by `kill -9` is removed by the next run)."""
    out = Path(out)
    refuse_inside_or_over(out, source_root, what)
    if out.is_dir() and any(out.iterdir()):
        raise CvpipeError(f"{what} {out}: the folder exists and is not empty; choose a new folder or remove it first")
    prepare_dir(out.parent, what)
    building = part_path(out)
    shutil.rmtree(building, ignore_errors=True)
    prepare_dir(building, what)
    try:
        yield building
        if out.is_dir():
            out.rmdir()  # empty, checked above
        os.replace(building, out)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
