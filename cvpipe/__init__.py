"""cvpipe: staged computer-vision pipelines declared in YAML."""

import os as _os

from cvpipe.paths import cache_dir as _cache_dir

__version__ = "0.1.0"

# `--backend compile`: inductor's compile cache under cvpipe's cache (not /tmp) unless the user chose one. Set
# here, on the package's import, because importing timm makes torch fix the directory.
_os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(_cache_dir() / "inductor"))
