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


def read_toml(path: Path, label: str) -> dict[str, Any]:
    """The TOML document at ``path``; ``label`` names it in errors.

    Raises:
        LabError: not valid TOML, or the file cannot be read.
    """
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise LabError(f"{label}: not valid TOML: {e}") from None
    except OSError as e:
        raise LabError(f"{label}: cannot read the file: {e.strerror}") from None


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
