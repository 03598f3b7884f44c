"""The bundled studies: each parses, `bnlab show` prints it, and each runs end to end.

The end-to-end runs use the study files as they are, with the short mode a user has
(``--seeds 1 --epochs 1``) and ``--set`` pointing the dataset at tiny files written here
(a Nielsen-format ``mnist.pkl.gz``, Fashion-MNIST IDX files, a folder of PNGs), so they do
not depend on the real downloads. `bnlab show` on the real data runs where it is installed
and is skipped, with the reason, where it is not.
"""

from __future__ import annotations

import gzip
import json
import math
import pickle
import re
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bnlab.cli import main
from bnlab.data import DatasetError, load_dataset
from bnlab.lab import list_experiments, load_experiment, read_results
from bnlab.lab.results import STATISTICS_FILE
from bnlab.models import build_model, summary
from bnlab.models.spec import layer_names

STUDIES = (
    "dropout_order",
    "dropout_order_cnn",
    "input_scaling",
    "lr_range",
    "mnist_cnn",
    "placement",
    "placement_mnist",
    "pool_order",
    "scenes_momentum",
    "sequences",
    "small_batch",
)


@pytest.fixture(autouse=True)
def _private_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Decoded arrays of the tiny files go to a throwaway cache, not the user's.
    monkeypatch.setenv("BNLAB_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))


def _totals(text: str) -> tuple[int, int, int]:
    """(total, trainable, non-trainable) params from a Keras-style summary."""
    found = [
        int(re.search(rf"{kind} params: ([\d,]+)", text).group(1).replace(",", ""))  # type: ignore[union-attr]
        for kind in ("Total", "Trainable", "Non-trainable")
    ]
    return found[0], found[1], found[2]


# --------------------------------------------------------------------------- parsing


def test_every_study_is_bundled_and_listed(capsys: pytest.CaptureFixture[str]) -> None:
    names = {info.name for info in list_experiments()}
    assert set(STUDIES) | {"circles"} <= names
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in STUDIES:
        assert re.search(rf"^{name}\s+— \S", out, re.MULTILINE), out


@pytest.mark.parametrize(
    ("name", "variants", "seeds"),
    [
        ("mnist_cnn", 8, 5),
        ("scenes_momentum", 3, 10),
        ("placement", 6, 10),
        ("placement_mnist", 6, 5),
        ("lr_range", 36, 5),
        ("small_batch", 16, 5),
        ("sequences", 5, 5),
        ("dropout_order", 5, 5),
        ("dropout_order_cnn", 5, 5),
        ("pool_order", 3, 5),
        ("input_scaling", 24, 5),
    ],
    ids=lambda v: str(v),
)
def test_study_parses(name: str, variants: int, seeds: int) -> None:
    exp = load_experiment(name)
    assert exp.name == name
    assert exp.description
    assert len(exp.variants) == variants
    assert len(exp.seeds) == seeds >= 5
    bases = {v.base for v in exp.variants}
    for a, b in exp.report.comparisons:
        assert {a, b} <= bases


def test_mnist_cnn_grid_and_parameter_counts() -> None:
    exp = load_experiment("mnist_cnn")
    assert exp.grid == {"learning_rate": (0.001, 0.01), "activation": ("sigmoid", "relu")}
    by_name = {v.name: v for v in exp.variants}
    plain = by_name["no_bn[learning_rate=0.01,activation=sigmoid]"]
    bn = by_name["bn[learning_rate=0.01,activation=sigmoid]"]
    assert plain.train["optimizer"] == {"name": "adam", "learning_rate": 0.01}
    assert plain.train["batch_size"] == 32 and plain.train["epochs"] == 3
    assert plain.train["eval_every_steps"] is not None
    # The notebook's figures: 93,322 without BN; 94,024 with BN after every Conv2D/Dense
    # (biases dropped: -234; gamma, beta, moving mean/variance of 234 channels: +936).
    assert _totals(summary(build_model(plain.layers, (28, 28, 1), seed=0))) == (93_322, 93_322, 0)
    text = summary(build_model(bn.layers, (28, 28, 1), seed=0))
    assert _totals(text) == (94_024, 93_556, 468)
    types = [spec.type for spec in bn.layers]
    assert types.count("BatchNormalization") == 5
    last = bn.layers[-3:]
    assert [s.type for s in last] == ["Dense", "BatchNormalization", "Activation"]
    assert last[0].args["use_bias"] is False and last[2].args["activation"] == "softmax"
    hidden = [s.args["activation"] for s in bn.layers if s.type == "Activation"][:-1]
    assert hidden == ["sigmoid"] * 4


def test_scenes_momentum_is_the_six_class_cnn_of_the_summary_figures() -> None:
    # The 224x224x3 figures of the 6-class CNN (lab issue): 279,382 without BN; with BN
    # after each Conv2D 279,638 of which 128 non-trainable (moving statistics of 64 channels).
    exp = load_experiment("scenes_momentum")
    by_name = {v.name: v for v in exp.variants}
    assert _totals(summary(build_model(by_name["no_bn"].layers, (224, 224, 3), seed=0))) == (
        279_382,
        279_382,
        0,
    )
    for name, momentum in (("bn_momentum_0_99", 0.99), ("bn_momentum_0_8", 0.8)):
        layers = by_name[name].layers
        text = summary(build_model(layers, (224, 224, 3), seed=0))
        assert _totals(text) == (279_638, 279_510, 128)
        bns = [s for s in layers if s.type == "BatchNormalization"]
        assert [s.args["momentum"] for s in bns] == [momentum] * 3
    # A few dozen steps per epoch: the point of the study (stale moving statistics).
    data = by_name["no_bn"].data
    assert data["name"] == "fashion6"
    steps = math.ceil(6 * data["train_per_class"] / by_name["no_bn"].train["batch_size"])
    epochs = by_name["no_bn"].train["epochs"]
    assert 10 <= steps <= 50 and steps * epochs < math.log(0.05) / math.log(0.99)


def test_small_batch_variants_use_the_layer_options() -> None:
    exp = load_experiment("small_batch")
    assert exp.grid == {"batch_size": (2, 4, 8, 32)}
    by_name = {v.name: v for v in exp.variants}
    for b in (2, 4, 8, 32):
        assert by_name[f"bn[batch_size={b}]"].train["batch_size"] == b
        assert by_name[f"no_bn[batch_size={b}]"].data["limit_train"] % b == 0
    ghost = [s for s in by_name["ghost_bn[batch_size=8]"].layers if s.type == "BatchNormalization"]
    assert [s.args["virtual_batch_size"] for s in ghost] == [2, 2, 2]
    renorm = [s for s in by_name["renorm[batch_size=8]"].layers if s.type == "BatchNormalization"]
    assert all(s.args["renorm"] is True for s in renorm) and len(renorm) == 3
    assert renorm[0].args["renorm_clipping"] == {"rmax": 3.0, "rmin": 0.3333333, "dmax": 5.0}


def test_lr_range_is_a_log_grid_from_1e4_to_1() -> None:
    exp = load_experiment("lr_range")
    rates = exp.grid["learning_rate"]
    assert rates[0] == 1e-4 and rates[-1] == 1.0
    ratios = np.diff(np.log10(rates))
    np.testing.assert_allclose(ratios, 0.5, atol=0.03)  # half decades: 1, 3, 10, 30, ...
    by_name = {v.name: v for v in exp.variants}
    assert by_name["cnn[learning_rate=1.0]"].data["flatten"] is False
    assert by_name["mlp[learning_rate=1.0]"].data["flatten"] is True


def test_dropout_order_places_dropout_before_and_after_bn() -> None:
    by_name = {v.name: v for v in load_experiment("dropout_order").variants}
    bn = "BatchNormalization"
    assert _hidden_steps(by_name["no_dropout"].layers) == ["Dense", bn, "relu"] * 2
    for rate in (0.2, 0.5):
        after = by_name[f"bn_then_dropout[rate={rate}]"].layers
        before = by_name[f"dropout_then_bn[rate={rate}]"].layers
        assert _hidden_steps(after) == ["Dense", bn, "relu", "Dropout"] * 2
        assert _hidden_steps(before) == ["Dense", "Dropout", bn, "relu"] * 2
        assert {s.args["rate"] for s in after + before if s.type == "Dropout"} == {rate}


def test_pool_order_places_bn_before_and_after_pooling() -> None:
    by_name = {v.name: v for v in load_experiment("pool_order").variants}
    bn, pool = "BatchNormalization", "MaxPooling2D"
    expected = {
        "no_bn": ["Conv2D", "relu", pool] * 2,
        "bn_before_pool": ["Conv2D", bn, "relu", pool] * 2,
        "bn_after_pool": ["Conv2D", "relu", pool, bn] * 2,
    }
    for name, steps in expected.items():
        assert _hidden_steps(by_name[name].layers) == [*steps, "Flatten"], name
        # same parameter count apart from BN's 4 per channel (16 + 32 or 16 + 32 channels)
        text = summary(build_model(by_name[name].layers, (28, 28, 3), seed=0))
        bn_params = 0 if name == "no_bn" else 4 * (16 + 32)
        assert _totals(text)[0] == 448 + 4_640 + 1_568 * 6 + 6 + bn_params


def test_sequences_models_and_masking() -> None:
    by_name = {v.name: v for v in load_experiment("sequences").variants}
    types = {name: [s.type for s in v.layers] for name, v in by_name.items()}
    assert types["lstm"] == ["Masking", "LSTM", "Dense"]
    assert types["lstm_bn"] == ["Masking", "LSTM", "BatchNormalization", "Dense"]
    assert types["input_bn"] == ["Masking", "BatchNormalization", "LSTM", "Dense"]
    assert types["conv_bn"] == [
        *(["Conv1D", "BatchNormalization", "Activation"] * 2),
        "GlobalAveragePooling1D",
        "Dense",
    ]
    assert by_name["lstm"].layers[0].args["mask_value"] == 0.0
    assert by_name["lstm"].data == {"name": "japanese_vowels"}
    # LSTM(32) on 12 channels: 4 * 32 * (12 + 32 + 1) = 5,760 weights; BN adds 4 * 32.
    text = summary(build_model(by_name["lstm_bn"].layers, (29, 12), seed=0))
    assert _totals(text) == (5_760 + 128 + 297, 5_760 + 64 + 297, 64)


def _hidden_steps(layers) -> list[str]:
    """The hidden layers as steps, Dense(activation) written as Dense + its activation."""
    steps = []
    for spec in layers[:-1]:  # the last Dense is the classifier
        if spec.type == "Dense":
            steps.append("Dense")
            act = spec.args.get("activation", "linear")
            if act != "linear":
                steps.append(act)
        elif spec.type == "Activation":
            steps.append(spec.args["activation"])
        else:
            steps.append(spec.type)
    return steps


def test_placement_puts_bn_before_and_after_the_activation() -> None:
    for name, hidden in (("placement", 1), ("placement_mnist", 3)):
        exp = load_experiment(name)
        by_name = {v.name: v for v in exp.variants}
        for act in ("relu", "sigmoid"):
            bn = "BatchNormalization"
            no_bn = _hidden_steps(by_name[f"no_bn[activation={act}]"].layers)
            after = _hidden_steps(by_name[f"bn_after[activation={act}]"].layers)
            before = _hidden_steps(by_name[f"bn_before[activation={act}]"].layers)
            assert no_bn == ["Dense", act] * hidden, name
            assert after == ["Dense", act, bn] * hidden, name
            assert before == ["Dense", bn, act] * hidden, name


def test_placement_mnist_probes_the_last_hidden_activation_input() -> None:
    """The BN paper's Figure 1: percentiles of the last hidden sigmoid's input in every variant."""
    exp = load_experiment("placement_mnist")
    for variant in exp.variants:
        (probe,) = variant.train["probes"]
        assert (probe["layer"], probe["where"], probe["percentiles"]) == (
            "activation_2",
            "input",
            [15, 50, 85],
        )
        names = layer_names(variant.layers)
        last = names.index("activation_2")
        assert variant.layers[last].type == "Activation"
        assert names.index("dense_2") < last and names.index("dense_3") > last


# --------------------------------------------------------------------------- bnlab show


def _installed(dataset: str) -> str | None:
    """None when `dataset` loads here, else the reason to skip."""
    try:
        load_dataset(dataset, **({"limit_train": 1, "limit_test": 1} if dataset == "mnist" else {}))
    except DatasetError as e:
        return str(e)
    return None


@pytest.mark.parametrize("name", STUDIES)
def test_show_on_the_installed_data(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    dataset = load_experiment(name).variants[0].data["name"]
    reason = _installed(dataset)
    if reason is not None:
        pytest.skip(f"{dataset} is not installed: {reason}")
    assert main(["show", name]) == 0
    out = capsys.readouterr().out
    exp = load_experiment(name)
    for v in exp.variants:
        assert f"== variant {v.name}" in out
    assert out.count("Total params:") == len(exp.variants)
    if name == "mnist_cnn":
        assert "Total params: 93,322" in out and "Total params: 94,024" in out


# --------------------------------------------------------------------------- end to end


def _write_mnist_pickle(path: Path, rng: np.random.Generator, n_train: int, n_test: int) -> None:
    """A tiny ``mnist.pkl.gz`` in Nielsen's layout: pixels k/256, ten classes in turn."""

    def part(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.arange(n, dtype=np.int64) % 10
        k = rng.integers(0, 64, size=(n, 784))
        for i, label in enumerate(y):  # a bright block whose place depends on the class
            k[i, label * 70 : label * 70 + 60] = 250
        return (k / 256).astype(np.float32), y

    train = part(n_train)
    with gzip.open(path, "wb") as f:
        pickle.dump((train, part(10), part(n_test)), f)


def _write_idx(path: Path, array: np.ndarray) -> None:
    magic = 0x0800 | array.ndim
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def _write_fashion(folder: Path, rng: np.random.Generator, per_class: int) -> None:
    folder.mkdir()
    for prefix in ("train", "t10k"):
        y = np.repeat(np.arange(10), per_class).astype(np.uint8)
        x = rng.integers(0, 80, size=(len(y), 28, 28))
        for i, label in enumerate(y):
            x[i, label * 2 : label * 2 + 8, :] = 240
        _write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", x)
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", y)


def _write_image_folder(folder: Path, rng: np.random.Generator, per_class: int) -> None:
    from PIL import Image

    for c in range(6):
        sub = folder / f"class_{c}"
        sub.mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 90, size=(20, 20, 3)).astype(np.uint8)
            pixels[c * 3 : c * 3 + 4] = 230
            Image.fromarray(pixels).save(sub / f"{i}.png")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny-data")
    rng = np.random.default_rng(0)
    _write_mnist_pickle(root / "mnist.pkl.gz", rng, n_train=64, n_test=32)
    _write_fashion(root / "fashion", rng, per_class=4)
    _write_image_folder(root / "scenes", rng, per_class=5)
    return {"mnist": root / "mnist.pkl.gz", "fashion": root / "fashion", "scenes": root / "scenes"}


def _short_run(name: str, out: Path, sets: list[str]) -> dict[str, Any]:
    argv = ["run", name, "--seeds", "1", "--epochs", "1", "--workers", "1", "--quiet"]
    argv += ["--out", str(out)]
    for s in sets:
        argv += ["--set", s]
    assert main(argv) == 0
    return read_results(out)


# Each study's short mode: its own [data] table, pointed at the tiny files, and limits
# that fit them (64 training rows: 2 steps of 32, 32 of 2).
SHORT = {
    "mnist_cnn": ["data.limit_train=64", "data.limit_test=32", "train.eval_every_steps=1"],
    "placement_mnist": ["data.limit_train=64", "train.eval_every_steps=1"],
    "lr_range": ["data.limit_train=64", "data.limit_test=32"],
    "small_batch": ["data.limit_train=64", "data.limit_test=32"],
    "dropout_order": ["data.limit_train=64", "data.limit_test=32"],
}


@pytest.mark.parametrize("name", sorted(SHORT))
def test_mnist_study_runs_end_to_end(
    name: str, tiny: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = _short_run(
        name, tmp_path, [f"data.path={json.dumps(str(tiny['mnist']))}", *SHORT[name]]
    )
    exp = load_experiment(name)
    runs = results["runs"]
    assert len(runs) == len(exp.variants)
    assert all(r["status"] == "completed" for r in runs), [r["error"] for r in runs]
    for run in runs:
        h = run["history"]
        variant = _variant_of(exp, run)
        bs = variant.train["batch_size"]
        assert h["steps_per_epoch"] == 64 // bs
        has_bn = any(s.type == "BatchNormalization" for s in variant.layers)
        assert (h["epochs"]["val_accuracy_train_mode"] is not None) == has_bn
        if not h["diverged"]:
            assert 0.0 <= h["final"]["test_accuracy"] <= 1.0
            assert 0.0 <= h["final"]["train_accuracy"] <= 1.0
        if variant.train["eval_every_steps"] == 1:
            assert [e["step"] for e in h["evals"]] == list(range(1, h["steps_per_epoch"] + 1))
    html = (tmp_path / "report.html").read_text()
    for base in results["variants"]:
        assert base in html
    assert (tmp_path / "curves.png").stat().st_size > 0
    assert (tmp_path / "grid.png").is_file()
    assert "runs" in capsys.readouterr().out
    if exp.report.doctor:  # dropout_order: every run's BN layers measured, in the report
        assert (tmp_path / STATISTICS_FILE).is_file()
        _check_in_chromium(tmp_path, sections=("bn-statistics",))


def _variant_of(exp: Any, run: dict[str, Any]) -> Any:
    """The resolved variant a stored run belongs to: same base name and grid point."""
    return next(v for v in exp.variants if v.base == run["variant"] and dict(v.grid) == run["grid"])


def test_placement_runs_end_to_end(tmp_path: Path) -> None:
    results = _short_run("placement", tmp_path, [])
    runs = results["runs"]
    assert {(r["variant"], r["grid"]["activation"]) for r in runs} == {
        (v, a) for v in ("no_bn", "bn_after", "bn_before") for a in ("relu", "sigmoid")
    }
    assert all(r["status"] == "completed" for r in runs)
    # circles: 500 training points, batch 32 -> 16 steps (the last batch has 20 points)
    assert {r["history"]["steps_per_epoch"] for r in runs} == {16}


def _fashion6_runs(name: str, tiny: dict[str, Path], out: Path) -> dict[str, Any]:
    """A 6-class study's short run on the tiny Fashion files (4 training and 2 test images
    per class: one step of 24 per epoch): its runs by variant, each checked completed,
    with batch-statistics accuracies exactly for the variants with BN (all but no_bn)."""
    sets = [
        f"data.path={json.dumps(str(tiny['fashion']))}",
        "data.train_per_class=4",
        "data.test_per_class=2",
    ]
    runs = {r["variant"]: r for r in _short_run(name, out, sets)["runs"]}
    for variant, run in runs.items():
        assert run["status"] == "completed", run["error"]
        h = run["history"]
        assert h["steps_per_epoch"] == 1  # 24 images, batch 32
        assert (h["epochs"]["val_accuracy_train_mode"] is None) == (variant == "no_bn")
    return runs


def test_scenes_momentum_runs_end_to_end_on_fashion6_files(
    tiny: dict[str, Path], tmp_path: Path
) -> None:
    runs = _fashion6_runs("scenes_momentum", tiny, tmp_path)
    assert set(runs) == {"no_bn", "bn_momentum_0_99", "bn_momentum_0_8"}
    html = (tmp_path / "report.html").read_text()
    assert "training mode" in html


def test_pool_order_runs_end_to_end_on_fashion6_files(
    tiny: dict[str, Path], tmp_path: Path
) -> None:
    runs = _fashion6_runs("pool_order", tiny, tmp_path)
    assert set(runs) == {"no_bn", "bn_before_pool", "bn_after_pool"}
    assert all(0.0 <= r["history"]["final"]["test_accuracy"] <= 1.0 for r in runs.values())
    # [report] doctor = true: every run's BN layers measured, shown in the report
    measured = json.loads((tmp_path / STATISTICS_FILE).read_text())["runs"]
    assert {r["variant"]: len(r["layers"]) for r in measured} == {
        "no_bn": 0, "bn_before_pool": 2, "bn_after_pool": 2
    }
    assert all(layer["steps_seen"] == 1 for r in measured for layer in r["layers"])
    summary = json.loads((tmp_path / "summary.json").read_text())
    for group in summary["groups"]:  # time per step: the run's seconds over its 1 step
        run = runs[group["variant"]]
        assert group["step_seconds"]["mean"] == pytest.approx(run["seconds"])
    _check_in_chromium(tmp_path, sections=("bn-statistics",))


def test_dropout_order_cnn_runs_end_to_end_on_fashion_mnist_files(
    tiny: dict[str, Path], tmp_path: Path
) -> None:
    sets = [
        f"data.path={json.dumps(str(tiny['fashion']))}",
        "data.limit_train=40",
        "data.limit_test=40",
    ]
    results = _short_run("dropout_order_cnn", tmp_path, sets)
    runs = {(r["variant"], r["grid"].get("rate")): r for r in results["runs"]}
    assert set(runs) == {("no_dropout", None)} | {
        (v, rate) for v in ("bn_then_dropout", "dropout_then_bn") for rate in (0.2, 0.5)
    }
    for run in runs.values():
        assert run["status"] == "completed", run["error"]
        assert run["history"]["steps_per_epoch"] == 2  # 40 images, batch 32
    measured = {
        (r["variant"], r["grid"].get("rate"), r["seed"]): r
        for r in json.loads((tmp_path / STATISTICS_FILE).read_text())["runs"]
    }
    assert set(measured) == {(v, rate, 0) for v, rate in runs}
    for (variant, _, _), record in measured.items():
        first, second = record["layers"]
        # Dropout before BN: the first BN layer follows a dropout module only then; the
        # second follows one in both dropout variants (after the first block's dropout).
        assert (first["dropout_variance_ratio"] is not None) == (variant == "dropout_then_bn")
        assert (second["dropout_variance_ratio"] is not None) == (variant != "no_dropout")
        assert ("dropout_before_bn" in record["findings"]) == (variant != "no_dropout")
    _check_in_chromium(tmp_path, sections=("bn-statistics",))


def _check_in_chromium(out: Path, sections: tuple[str, ...] = ()) -> None:
    """The study's report.html loads in headless Chromium: every image decodes, no script,
    no console error, no request beyond the file itself; the named sections are there."""
    from tests.lab.test_report import CHROMIUM, open_in_chromium, page_problems

    html = (out / "report.html").read_text()
    for section in ("summary", "comparisons", "plots", "settings", *sections):
        assert f'<section id="{section}">' in html
    if CHROMIUM is None:
        return  # the HTML checks above still ran; test_report says chromium is missing
    state, events, _ = open_in_chromium((out / "report.html").as_uri(), out / "profile")
    assert page_problems(events) == []
    assert state["scripts"] == 0 and state["tables"] >= 3
    assert state["images"] and all(ok and w > 300 and h > 200 for ok, w, h in state["images"])


# Masked sequences are trained one run at a time, and the lab says so.
@pytest.mark.filterwarnings("ignore:variant .* not stacked:UserWarning")
def test_sequences_runs_end_to_end_on_japanese_vowels(tmp_path: Path) -> None:
    reason = _installed("japanese_vowels")
    if reason is not None:
        pytest.skip(f"japanese_vowels is not installed: {reason}")
    results = _short_run("sequences", tmp_path, [])
    runs = {r["variant"]: r for r in results["runs"]}
    assert set(runs) == {"lstm", "lstm_bn", "input_bn", "conv", "conv_bn"}
    for name, run in runs.items():
        assert run["status"] == "completed", run["error"]
        h = run["history"]
        assert h["steps_per_epoch"] == 9  # 270 series, batch 32
        assert (h["epochs"]["val_accuracy_train_mode"] is None) == (name in ("lstm", "conv"))
        assert 0.0 <= h["final"]["test_accuracy"] <= 1.0
    assert "lstm_bn" in (tmp_path / "report.html").read_text()
    _check_in_chromium(tmp_path)


def test_input_scaling_runs_end_to_end(tmp_path: Path) -> None:
    results = _short_run("input_scaling", tmp_path, [])
    runs = results["runs"]
    grid = {(r["variant"], *(r["grid"][a] for a in ("optimizer", "feature_scale", "batch_size")))
            for r in runs}
    assert grid == {
        (v, o, f, b)
        for v in ("raw", "standardized", "input_bn")
        for o in ("sgd", "adam")
        for f in (1.0, 10.0)
        for b in (32, 4)
    }
    exp = load_experiment("input_scaling")
    for run in runs:
        assert run["status"] == "completed", run["error"]
        variant = _variant_of(exp, run)
        assert variant.data["standardize"] == (run["variant"] == "standardized")
        assert variant.data["feature_scale"] == run["grid"]["feature_scale"]
        assert variant.train["optimizer"]["name"] == run["grid"]["optimizer"]
        assert variant.train["batch_size"] == run["grid"]["batch_size"]
        h = run["history"]
        # 398 training rows: 13 steps of 32, 100 of 4 (the last batch of 2 is kept)
        assert h["steps_per_epoch"] == {32: 13, 4: 100}[run["grid"]["batch_size"]]
        has_bn = run["variant"] == "input_bn"
        assert (h["epochs"]["val_accuracy_train_mode"] is not None) == has_bn
    _check_in_chromium(tmp_path)


def test_scenes_momentum_runs_on_an_image_folder(tiny: dict[str, Path], tmp_path: Path) -> None:
    # The documented way to run the study on one's own images: replace the [data] table.
    table = f'{{ name = "image_folder", path = {json.dumps(str(tiny["scenes"]))}, image_size = [28, 28] }}'
    results = _short_run("scenes_momentum", tmp_path, [f"data={table}"])
    resolved = results["experiment"]["variants"][0]["data"]
    assert resolved["name"] == "image_folder" and list(resolved["image_size"]) == [28, 28]
    for run in results["runs"]:
        assert run["status"] == "completed", run["error"]
        # 30 images, validation_split 0.2 -> 24 for training: one step of 24
        assert run["history"]["steps_per_epoch"] == 1
