"""The bundled experiments and experiment files, found without importing torch.

``bnlab list`` and the lookup of an experiment by name need only the TOML files, so
this module imports nothing beyond the standard library (:mod:`bnlab.lab.experiment`
parses and validates what it finds).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from bnlab.lab.errors import LabError

__all__ = ["ExperimentInfo", "bundled_dir", "find_experiment", "list_experiments", "read_toml"]


@dataclass(frozen=True)
class ExperimentInfo:
    """A bundled experiment, as `bnlab list` shows it."""

    name: str
    description: str
    path: Path


def bundled_dir() -> Path:
    """The folder of the bundled experiment files."""
    return Path(str(resources.files("bnlab").joinpath("experiments")))


MAX_FILE_BYTES = 1_000_000
"""Largest experiment file read."""


def read_toml(path: Path, label: str) -> dict[str, Any]:
    """The TOML document at ``path``; ``label`` names it in errors.

    Refuses files over `MAX_FILE_BYTES`, anything but a regular file (a FIFO would block),
    text that is not UTF-8 (a Latin-1 byte, a binary file) and nesting too deep to parse.

    Raises:
        LabError: one line for each of those, for TOML errors and unreadable files.
    """
    try:
        if not path.is_file():
            raise LabError(f"{label}: not a regular file; give a .toml file")
        with path.open("rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    except OSError as e:
        raise LabError(f"{label}: cannot read the file: {e.strerror or e}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise LabError(
            f"{label}: the file is larger than {MAX_FILE_BYTES} bytes; an experiment file "
            "is a few kilobytes of TOML"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise LabError(
            f"{label}: not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start}); "
            "save the file as UTF-8 TOML"
        ) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise LabError(f"{label}: not valid TOML: {e}") from None
    except RecursionError:
        raise LabError(f"{label}: not valid TOML: arrays or tables nested too deeply") from None


def list_experiments() -> list[ExperimentInfo]:
    """The experiments bundled with bnlab, sorted by name."""
    infos = []
    for path in sorted(bundled_dir().glob("*.toml")):
        doc = read_toml(path, path.name)
        name = doc.get("name", path.stem)
        infos.append(ExperimentInfo(str(name), str(doc.get("description", "")), path))
    return sorted(infos, key=lambda info: info.name)


def find_experiment(path_or_name: str | Path) -> Path:
    """The file of a bundled experiment name, or `path_or_name` itself when it is a file.

    Raises:
        LabError: neither a bundled name nor an existing ``.toml`` file.
    """
    text = str(path_or_name)
    path = Path(text).expanduser()
    if path.suffix == ".toml" or "/" in text or "\\" in text:
        if path.is_file():
            return path
        raise LabError(f"experiment file {text!r} does not exist; give a path to a .toml file")
    bundled = bundled_dir() / f"{text}.toml"
    if bundled.is_file():
        return bundled
    names = ", ".join(info.name for info in list_experiments()) or "(none)"
    raise LabError(
        f"unknown experiment {text!r}; bundled experiments: {names}; or give a path to a .toml file"
    )
