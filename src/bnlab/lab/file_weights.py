"""Runs that start from a Keras file's weights: ``[model] from = FILE`` with ``weights = "file"``.

A study of a pretrained model (a transfer-learning classifier on a frozen base, a model
trained elsewhere) must start each run from the file's weights: fresh weights would
study another model. Each run builds its variant's model from its seed, then
:func:`start_from_file` copies the file's weights into every layer that has a layer of
the same name, type and weight shapes in the file (BatchNormalization layers bring
their moving statistics). The other layers keep the weights of the run's seed: layers
the variant's edits add, and layers whose type or weight shapes an edit changed. What
differs between seeds is then the data order, dropout and augmentation draws, and the
fresh layers.

The file's SHA-256 is part of the variant's configuration (:class:`FileWeights`), so a
changed file makes new runs instead of reusing old ones, and a run refuses a file that
changed after the experiment was resolved.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from bnlab.lab.errors import LabError

__all__ = ["FileWeights", "StartingWeights", "start_from_file"]


@dataclass(frozen=True)
class FileWeights:
    """Where a variant's starting weights come from: a Keras file and its SHA-256."""

    path: str
    sha256: str

    @classmethod
    def of(cls, path: Path) -> FileWeights:
        """The file at ``path`` (made absolute: runs may start in other folders)."""
        return cls(str(path.resolve()), _digest(path))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FileWeights:
        return cls(str(d["path"]), str(d["sha256"]))

    def to_dict(self) -> dict[str, str]:
        return {"path": self.path, "sha256": self.sha256}


class StartingWeights(NamedTuple):
    """Which layers with weights took the file's (``taken``) and which kept the seed's."""

    taken: tuple[str, ...]
    fresh: tuple[str, ...]


def start_from_file(model: Any, source: FileWeights) -> StartingWeights:
    """Copy ``source``'s weights into the matching layers of ``model`` (see the module
    docstring); ``model`` is a :class:`~bnlab.models.SequentialModel` or
    :class:`~bnlab.models.GraphModel`.

    Raises:
        LabError: the file is gone or no longer has the recorded SHA-256.
    """
    from bnlab.keras_io import KerasFileError, read_keras_weights
    from bnlab.models import get_keras_weights, get_layer_type, set_keras_weights

    path = Path(source.path)
    if not path.is_file() or _digest(path) != source.sha256:
        state = "is gone" if not path.is_file() else "changed"
        raise LabError(
            f"{source.path}: the Keras file this variant starts from {state} since the "
            "experiment was resolved; restore it, or run the experiment again into a new "
            "--out folder"
        )
    try:
        theirs = read_keras_weights(path)
    except KerasFileError as error:
        raise LabError(str(error)) from None
    taken, fresh = [], []
    for name, spec, module in model.named_layers():
        ours = get_keras_weights(module)
        if not ours:
            continue
        class_name, arrays = theirs.get(name, ("", ()))
        try:
            same_type = bool(class_name) and get_layer_type(class_name).name == spec.type
        except ValueError:  # a class name that is no layer type of bnlab's
            same_type = False
        if same_type and [a.shape for a in arrays] == [a.shape for a in ours]:
            set_keras_weights(module, arrays)
            taken.append(name)
        else:
            fresh.append(name)
    return StartingWeights(tuple(taken), tuple(fresh))


def _digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
