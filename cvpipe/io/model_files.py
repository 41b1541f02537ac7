"""Exported model files (`cvpipe export`): their formats by suffix, their cvpipe metadata, and how a rejected
export is set aside."""

from __future__ import annotations

import os
from pathlib import Path

from cvpipe.errors import ConfigError

EXPORTED = {".onnx": "onnx", ".xml": "openvino"}  # suffix → format; an OpenVINO IR's weights are the .bin beside it
PRECISION_KEY = "cvpipe_precision"  # fp32 | fp16 | int8, as exported (absent: fp32)


def exported_files(path: Path) -> list[Path]:
    """The files one export is made of: the .onnx, or the IR's .xml and .bin."""
    path = Path(path)
    return [path, path.with_suffix(".bin")] if path.suffix == ".xml" else [path]


def exported_metadata(path: Path) -> dict[str, str]:
    """cvpipe's metadata entries of an exported file (ONNX metadata_props; an OpenVINO IR's runtime info), without
    loading the weights."""
    path = Path(path)
    if path.suffix == ".onnx":
        import onnx

        try:
            proto = onnx.load(str(path), load_external_data=False)
        except Exception as e:  # protobuf's DecodeError and friends
            raise ConfigError(f"{path}: not a readable ONNX file ({str(e)[:120]})") from None
        return {p.key: p.value for p in proto.metadata_props}
    if path.suffix == ".xml":
        try:
            return openvino_metadata(openvino_core().read_model(str(path)))
        except ConfigError:
            raise
        except Exception as e:  # OpenVINO's RuntimeError for a foreign or broken IR
            raise ConfigError(f"{path}: OpenVINO cannot read it ({str(e)[:160]})") from None
    raise ConfigError(f"{path}: not an exported model (expected {' or '.join(EXPORTED)})")


def openvino_core():
    try:
        import openvino
    except ImportError:
        raise ConfigError("OpenVINO is not installed: pip install 'cvpipe[openvino]'") from None
    return openvino.Core()


def openvino_metadata(model) -> dict[str, str]:
    """cvpipe's entries of an OpenVINO model's runtime info (written by `cvpipe export`), else the ONNX metadata
    OpenVINO keeps when it reads an ONNX graph."""
    for section in ("cvpipe", "framework"):
        if model.has_rt_info([section]):
            entries = model.get_rt_info()[section]
            return {key: model.get_rt_info([section, key]).astype(str) for key in entries}
    return {}


def rejected_name(path: Path) -> Path:
    """best.int8.onnx → best.int8.rejected.onnx"""
    return path.with_name(f"{path.stem}.rejected{path.suffix}")


def set_aside(path: Path) -> Path:
    """Rename an export (both files of an IR) to its `.rejected` name, replacing an earlier rejected one."""
    for part in exported_files(path):
        os.replace(part, rejected_name(part))
    return rejected_name(path)
