"""``bnlab init NAME [--from EXPERIMENT]``: a starting experiment file with comments.

`starter_text` returns the TOML text: a commented template of every section (data, model,
train, variants, grid, report), or a bundled experiment's own file with its name replaced.
`write_starter` writes it to ``NAME.toml`` after checking that it loads
(``bnlab.lab.load_experiment``), so a new user starts from a file that runs.
"""

from __future__ import annotations

import re
from pathlib import Path

from bnlab.lab.errors import LabError
from bnlab.lab.experiment import list_experiments, load_experiment

__all__ = ["TEMPLATE", "starter_text", "write_starter"]

TEMPLATE = '''# {name}: a bnlab experiment. Run it with `bnlab run {name}.toml`; `bnlab show {name}.toml`
# prints the settings as used and each variant's model summary.
name = "{name}"
description = "MLP on the circles toy data: without and with batch normalization"
seeds = 5                 # runs per variant (seeds 0..4); confidence intervals need 5 or more

[data]                    # a dataset by name: circles, moons, blobs, mnist, fashion_mnist,
name = "circles"          # npz (path = ...), image_folder (path = ..., image_size = ...)
n_samples = 1000
noise = 0.1
train_size = 500          # the first 500 rows train, the rest test

[model]                   # Keras layer names and arguments (see the README's layer list)
layers = [
  {{ type = "Dense", units = 50, activation = "relu" }},
  {{ type = "Dense", units = 1, activation = "sigmoid" }},
]

[train]
optimizer = {{ name = "sgd", learning_rate = 0.01, momentum = 0.9 }}
loss = "binary_crossentropy"
epochs = 30
batch_size = 32
# eval_every_steps = 50   # test accuracy within epochs too (curves then count steps)

[variants.baseline]       # a variant without edits is the [model] as written
description = "Dense(50, relu) -> Dense(1, sigmoid)"

[variants.bn]             # edits change the [model] layers by name or type
description = "BatchNormalization after the hidden Dense"
edits = [{{ insert_after = "dense", layer = {{ type = "BatchNormalization" }} }}]

# [grid]                  # every variant at every combination; use "$name" in a setting
# learning_rate = [0.001, 0.01, 0.1]

[report]
reference = "baseline"    # the variant the others are compared with
threshold_metric = "val_accuracy"
threshold = 0.80          # "epochs to reach 80% test accuracy"
'''


def starter_text(name: str, source: str | None = None) -> str:
    """The TOML text of a new experiment ``name``: the template, or bundled ``source``'s file.

    Raises:
        LabError: ``source`` is not a bundled experiment.
    """
    if source is None:
        return TEMPLATE.format(name=name)
    bundled = {info.name: info.path for info in list_experiments()}
    if source not in bundled:
        raise LabError(
            f"--from: no bundled experiment {source!r}; choose from: {', '.join(bundled)}"
        )
    text = bundled[source].read_text("utf-8")
    text, count = re.subn(r'^name = "[^"]*"', f'name = "{name}"', text, count=1, flags=re.M)
    if not count:
        raise LabError(f"--from {source}: the bundled file has no top-level name line")
    head = f"# {name}: started from the bundled experiment {source!r} (bnlab init --from).\n"
    return head + text


def write_starter(
    name: str, *, source: str | None = None, folder: str | Path = ".", force: bool = False
) -> Path:
    """Write ``folder/NAME.toml`` (`starter_text`) and check that it loads; returns the path.

    Raises:
        LabError: the name is not a plain file name, the file exists (without ``force``), or
            the written experiment does not load (it is removed again).
    """
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", name):
        raise LabError(
            f"bnlab init: name {name!r} must be letters, digits, '_', '.' or '-' (it becomes "
            "NAME.toml and the experiment's name)"
        )
    path = Path(folder) / f"{name}.toml"
    if path.exists() and not force:
        raise LabError(f"bnlab init: {path} exists; pass --force to overwrite it")
    path.write_text(starter_text(name, source), "utf-8")
    try:
        load_experiment(path)
    except LabError:
        path.unlink()
        raise
    return path
