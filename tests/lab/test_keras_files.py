"""The lab and Keras files: `bnlab export` of a trained run, `[model] from = "model.keras"`."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import jsonschema
import keras
import numpy as np
import pytest
import torch

from bnlab import lab
from bnlab.cli import main
from bnlab.lab import LabError
from bnlab.lab.vectorized import VectorizationFallbackWarning
from bnlab.models import build_model, get_keras_weights

pytestmark = [
    # Keras's torch backend converts variables with np.array(tensor), which numpy 2 flags.
    pytest.mark.filterwarnings(
        "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"),
    # A saved file keeps its compile settings but no optimizer state (weights only).
    pytest.mark.filterwarnings("ignore:Skipping variable loading for optimizer:UserWarning"),
]

GRID = """
name = "tiny_export"
seeds = 2

[data]
name = "circles"
n_samples = 200
train_size = 100

[model]
layers = [
  { type = "Dense", units = 8, activation = "relu" },
  { type = "BatchNormalization", momentum = 0.9 },
  { type = "Dense", units = 1, activation = "sigmoid" },
]

[train]
optimizer = { name = "sgd", learning_rate = "$learning_rate", momentum = 0.9 }
loss = "binary_crossentropy"
epochs = 2
batch_size = 32

[variants.bn]

[grid]
learning_rate = [0.05, 0.1]
"""


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("export_run")
    (root / "tiny.toml").write_text(GRID)
    outcome = lab.run(root / "tiny.toml", root / "out", workers=1, executor="sequential",
                      report=False)
    assert outcome.failed == 0
    return root / "out"


def export(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    code = main(["export", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def test_exported_file_computes_what_the_lab_model_computes(run_dir, tmp_path, capsys) -> None:
    target = tmp_path / "bn.keras"
    code, out, err = export(capsys, run_dir, "--variant", "bn", "--grid", "learning_rate=0.1",
                            "--seed", "1", "--to", target)
    assert (code, err) == (0, "")
    assert f"keras: {target} (variant bn[learning_rate=0.1], seed 1;" in out
    ours = lab.load_run_model(run_dir, "bn[learning_rate=0.1]", 1)
    theirs = keras.saving.load_model(target)
    x = np.random.default_rng(0).normal(size=(64, 2)).astype(np.float32)
    with torch.no_grad():
        expected = ours(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(keras.ops.convert_to_numpy(theirs(x, training=False)), expected,
                               rtol=1e-5, atol=1e-6)
    bn = theirs.get_layer("batch_normalization")
    assert bn.momentum == pytest.approx(0.9)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(bn.moving_mean),
                               ours.get_layer("batch_normalization").moving_mean.numpy(),
                               rtol=1e-6)


def test_export_selects_by_full_name_and_refuses_ambiguity(run_dir, tmp_path, capsys) -> None:
    target = tmp_path / "m.keras"
    code, out, _ = export(capsys, run_dir, "--variant", "bn[learning_rate=0.05]", "--to", target)
    assert code == 0 and "seed 0" in out  # default: the first completed seed
    cases = [
        (("--variant", "bn", "--to", tmp_path / "a.keras"),
         "has 2 grid points of variant 'bn'; pass --grid AXIS=VALUE for each axis or the full "
         "name, one of: bn[learning_rate=0.05], bn[learning_rate=0.1]"),
        (("--variant", "bn", "--grid", "learning_rate=0.3", "--to", tmp_path / "a.keras"),
         "has no variant 'bn' at grid point {'learning_rate': 0.3}"),
        (("--variant", "bn[learning_rate=0.05]", "--seed", "5", "--to", tmp_path / "a.keras"),
         "no completed run with seed 5; completed seeds: [0, 1]"),
        (("--variant", "bn[learning_rate=0.05]", "--to", target),
         f"{target} exists; give another file name or --overwrite"),
        (("--variant", "bn[learning_rate=0.05]", "--to", tmp_path / "m.h5"),
         "give a file name ending in .keras"),
        (("--variant", "bn[learning_rate=0.05]", "--to", tmp_path / "no" / "m.keras"),
         "does not exist; create it first"),
        (("--variant", "bn[learning_rate=0.05]", "--csv", tmp_path / "a.csv"),
         "--variant selects the run whose model --to MODEL.keras writes; give --to too"),
    ]
    for args, message in cases:
        code, out, err = export(capsys, run_dir, *args)
        assert code == 2 and out == "" and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "a.keras").exists()
    code, _, _ = export(capsys, run_dir, "--variant", "bn[learning_rate=0.05]", "--to", target,
                        "--overwrite")
    assert code == 0


def test_select_run_is_shared_with_the_doctor(run_dir) -> None:
    from bnlab.lab.keras_export import select_run

    selected = select_run(run_dir, variant="bn", grid={"learning_rate": 0.1}, seed=0)
    assert (selected.variant["name"], selected.seed) == ("bn[learning_rate=0.1]", 0)
    with pytest.raises(LabError, match="has no completed run with seed 9"):
        select_run(run_dir, variant="bn[learning_rate=0.1]", seed=9)


FROM_FILE = """
name = "from_keras"
seeds = 1

[data]
name = "npz"
path = "IMAGES"

[model]
from = "student.keras"


[train]
optimizer = { name = "adam", learning_rate = 0.001 }
loss = "sparse_categorical_crossentropy"
epochs = 3
batch_size = 32

[variants.as_saved]
[variants.momentum_0_8]
edits = [{ set = { type = "BatchNormalization" }, args = { momentum = 0.8 } }]
"""


@pytest.fixture(scope="module")
def keras_experiment(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved (untrained) Keras Sequential CNN with BN at 0.99, an .npz of images, a TOML."""
    root = tmp_path_factory.mktemp("from_keras")
    layers = keras.layers
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((8, 8, 1)),
        layers.Conv2D(4, 3, use_bias=False, name="conv2d"),  # names: see keras_training
        layers.BatchNormalization(name="batch_normalization"),
        layers.Activation("relu", name="activation"),
        layers.Flatten(name="flatten"),
        layers.Dense(3, activation="softmax", name="dense"),
    ], name="student")
    model.save(root / "student.keras")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (96, 8, 8), dtype=np.uint8)
    np.savez(root / "images.npz", x_train=x[:64], y_train=np.arange(64) % 3, x_test=x[64:],
             y_test=np.arange(32) % 3)
    # [data] paths are relative to the working folder; [model] from to the TOML's folder.
    (root / "exp.toml").write_text(FROM_FILE.replace("IMAGES", str(root / "images.npz")))
    return root


def test_model_from_a_keras_file_with_a_momentum_variant(keras_experiment, capsys) -> None:
    root = keras_experiment
    exp = lab.load_experiment(root / "exp.toml")
    base, edited = exp.variants
    assert [s.type for s in base.layers] == ["Conv2D", "BatchNormalization", "Activation",
                                           "Flatten", "Dense"]
    assert base.input_shape == (8, 8, 1)
    bn_args = [s.resolved_args()["momentum"] for s in edited.layers
               if s.type == "BatchNormalization"]
    assert bn_args == [pytest.approx(0.8)]
    assert [s.resolved_args()["momentum"] for s in base.layers
            if s.type == "BatchNormalization"] == [pytest.approx(0.99)]
    # Architecture only: each seed initializes afresh (not the file's weights).
    saved = keras.saving.load_model(root / "student.keras").get_layer("conv2d").get_weights()[0]
    first, second = (build_model(base.layers, base.input_shape, seed=s) for s in (0, 1))
    kernel = lambda m: m.get_layer("conv2d").weight.detach().permute(2, 3, 1, 0).numpy()  # noqa: E731
    assert not np.allclose(kernel(first), kernel(second))
    assert not np.allclose(kernel(first), saved)

    code = main(["run", str(root / "exp.toml"), "--seeds", "1", "--epochs", "1", "--out",
                 str(root / "out"), "--workers", "1", "--no-report", "--quiet"])
    assert code == 0, capsys.readouterr().err
    results = json.loads((root / "out" / "results.json").read_text())
    assert [r["status"] for r in results["runs"]] == ["completed", "completed"]
    resolved = {v["name"]: v for v in results["experiment"]["variants"]}
    layers = resolved["momentum_0_8"]["layers"]
    assert [layer["type"] for layer in layers][:2] == ["Conv2D", "BatchNormalization"]
    assert layers[1]["momentum"] == pytest.approx(0.8)


@pytest.mark.parametrize(("model", "message"), [
    ('from = "missing.keras"', "model.from: 'missing.keras' is not a file"),
    ('from = "student.keras"\nlayers = []', "model: give either layers or from"),
    ('from = "exp.toml"', "model.from: "),
], ids=["missing", "both", "not-keras"])
def test_model_from_errors(keras_experiment, model, message) -> None:
    toml = FROM_FILE.replace('from = "student.keras"', model).replace(
        "IMAGES", str(keras_experiment / "images.npz"))
    path = keras_experiment / f"bad_{abs(hash(model))}.toml"
    path.write_text(toml)
    with pytest.raises(LabError) as e:
        lab.load_experiment(path)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_doctor_saves_a_fixed_run_as_a_keras_file(run_dir, tmp_path, capsys) -> None:
    fixed, unfixed = tmp_path / "fixed.keras", tmp_path / "unfixed.keras"
    variant = "bn[learning_rate=0.1]"
    code = main(["doctor", str(run_dir), "--variant", variant, "--fix", "recalibrate",
                 "--save", str(fixed), "--json"])
    out, err = capsys.readouterr()
    assert (code, err) == (0, "")
    assert json.loads(out)["details"]["saved"] == str(fixed)
    assert export(capsys, run_dir, "--variant", variant, "--to", unfixed)[0] == 0
    mean = {name: keras.ops.convert_to_numpy(
                keras.saving.load_model(path).get_layer("batch_normalization").moving_mean)
            for name, path in (("fixed", fixed), ("unfixed", unfixed))}
    assert not np.allclose(mean["fixed"], mean["unfixed"])
    # The fixed statistics are the population mean of the BN layer's input on the
    # training data (the first Dense's output), as recalibration promises.
    data = lab.runs.load_variant_data(lab.Variant.from_dict(
        next(v for v in json.loads((run_dir / "results.json").read_text())["experiment"][
            "variants"] if v["name"] == variant)))
    model = lab.load_run_model(run_dir, variant, 0)
    with torch.no_grad():
        h = model.get_layer("dense")(torch.from_numpy(data.x_train))
    np.testing.assert_allclose(mean["fixed"], h.mean(0).numpy(), rtol=1e-4, atol=1e-5)
    code = main(["doctor", str(run_dir), "--variant", variant, "--fix", "recalibrate",
                 "--save", str(fixed)])
    assert code == 2 and "exists; give another file name or --overwrite" in capsys.readouterr().err


FUNCTIONAL = """
name = "from_functional"
seeds = 2

[data]
name = "npz"
path = "IMAGES"

[model]
from = "residual.keras"

[train]
optimizer = { name = "adam", learning_rate = 0.001 }
loss = "sparse_categorical_crossentropy"
epochs = 1
batch_size = 16
probes = [{ layer = "add", where = "output" }]

[variants.as_saved]
[variants.momentum_0_8]
edits = [{ set = { type = "BatchNormalization" }, args = { momentum = 0.8 } }]
[variants.bn_after_add]
edits = [{ insert_after = "add", layer = { type = "BatchNormalization" } }]
[variants.no_bn]
edits = [{ remove = "BatchNormalization" }]
"""


def residual_model() -> keras.Model:
    """A Functional CNN with a residual Add around a 1x1 convolution and BN at 0.99."""
    layers = keras.layers
    image = keras.Input((8, 8, 1), name="image")
    x = layers.Conv2D(4, 3, padding="same", use_bias=False, name="conv2d")(image)
    x = layers.BatchNormalization(name="batch_normalization")(x)
    stem = layers.ReLU(name="re_lu")(x)
    branch = layers.Conv2D(4, 1, name="conv2d_1")(stem)
    x = layers.Add(name="add")([stem, branch])
    x = layers.GlobalAveragePooling2D(name="global_average_pooling2d")(x)
    return keras.Model(image, layers.Dense(3, activation="softmax", name="dense")(x),
                       name="residual")


@pytest.fixture(scope="module")
def functional_study(keras_experiment: Path) -> Path:
    """The residual model saved next to the Sequential one, its TOML, and a finished study."""
    root = keras_experiment
    keras.utils.set_random_seed(0)
    residual_model().save(root / "residual.keras")
    (root / "functional.toml").write_text(
        FUNCTIONAL.replace("IMAGES", str(root / "images.npz")))
    # The stacked trainer takes layer stacks only: a graph's runs train one at a time.
    with pytest.warns(VectorizationFallbackWarning, match="not stacked: the model is a GraphModel"):
        outcome = lab.run(root / "functional.toml", root / "functional", workers=1, report=False)
    assert outcome.failed == 0
    return root


def test_model_from_a_functional_keras_file_edits_its_graph(functional_study) -> None:
    exp = lab.load_experiment(functional_study / "functional.toml")
    variants = {v.name: v for v in exp.variants}
    kmodel = keras.saving.load_model(functional_study / "residual.keras")
    base = variants["as_saved"]
    assert [n.name for n in base.graph.nodes] == [layer.name for layer in kmodel.layers[1:]]
    assert base.input_shape == (8, 8, 1)
    assert lab_counts(base) == kmodel.count_params()
    bn = lambda v: [n.layer.resolved_args()["momentum"] for n in v.graph.nodes  # noqa: E731
                    if n.layer.type == "BatchNormalization"]
    assert bn(base) == [pytest.approx(0.99)] and bn(variants["momentum_0_8"]) == [pytest.approx(0.8)]
    inbound = lambda v: {n.name: n.inbound for n in v.graph.nodes}  # noqa: E731
    after = inbound(variants["bn_after_add"])
    assert after["batch_normalization_1"] == ("add",)
    assert after["global_average_pooling2d"] == ("batch_normalization_1",)
    removed = inbound(variants["no_bn"])
    assert "batch_normalization" not in removed and removed["re_lu"] == ("conv2d",)
    assert removed["add"] == ("re_lu", "conv2d_1")


def lab_counts(variant: lab.Variant) -> int:
    return sum(p.numel() for p in variant.build(variant.input_shape, seed=0).state_dict().values()
               if p.dtype.is_floating_point)


def test_functional_study_stores_its_graphs_and_resumes(functional_study) -> None:
    out = functional_study / "functional"
    results = json.loads((out / "results.json").read_text())
    jsonschema.validate(results, lab.load_schema())
    assert [r["status"] for r in results["runs"]] == ["completed"] * 8
    assert {r["executor"] for r in results["runs"]} == {"sequential"}
    for entry in results["experiment"]["variants"]:
        assert lab.Variant.from_dict(entry).config_hash == entry["config_hash"]
        assert entry["graph"]["nodes"][0]["name"] == "conv2d"
    probes = results["runs"][0]["history"]["probes"]
    assert list(probes) == ["add.output"] and len(probes["add.output"]["values"]) == 4
    outcome = lab.run(functional_study / "functional.toml", out, workers=1, report=False)
    assert (outcome.reused, outcome.completed) == (8, 0)


def test_functional_run_exports_to_a_keras_file_with_its_edit(functional_study, tmp_path,
                                                              capsys) -> None:
    out, target = functional_study / "functional", tmp_path / "bn_after_add.keras"
    code, _, err = export(capsys, out, "--variant", "bn_after_add", "--seed", "1", "--to", target)
    assert (code, err) == (0, "")
    theirs = keras.saving.load_model(target)
    assert theirs.get_layer("batch_normalization_1").input.name == theirs.get_layer("add").output.name
    ours = lab.load_run_model(out, "bn_after_add", 1)
    x = np.random.default_rng(1).uniform(size=(16, 8, 8, 1)).astype(np.float32)
    with torch.no_grad():
        expected = ours(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(theirs.predict(x, verbose=0), expected, atol=1e-5)


def test_model_from_a_functional_file_with_two_inputs_is_refused(keras_experiment) -> None:
    layers = keras.layers
    a, b = keras.Input((4,), name="a"), keras.Input((4,), name="b")
    model = keras.Model([a, b], layers.Dense(1, name="dense")(layers.Add(name="add")([a, b])))
    model.save(keras_experiment / "two_inputs.keras")
    path = keras_experiment / "two_inputs.toml"
    path.write_text(FROM_FILE.replace("student.keras", "two_inputs.keras").replace(
        "IMAGES", str(keras_experiment / "images.npz")))
    with pytest.raises(LabError) as e:
        lab.load_experiment(path)
    assert "model.from: 'two_inputs.keras' holds a Functional model" in str(e.value)
    assert "with 2 inputs and 1 outputs; the lab trains models of one input and one output" in str(e.value)
    assert "\n" not in str(e.value)


def test_functional_study_report_lists_each_node_with_its_inputs(functional_study) -> None:
    from bnlab.lab.report import write_report

    html = Path(write_report(functional_study / "functional")).read_text("utf-8")
    # What the Keras calls said, not every argument the file holds
    assert ("conv2d = Conv2D(filters=4, kernel_size=[3, 3], padding=same, use_bias=false) "
            "\u2190 image</code>") in html
    assert "batch_normalization_1 = BatchNormalization() \u2190 add</code>" in html
    assert ("global_average_pooling2d = GlobalAveragePooling2D() "
            "\u2190 batch_normalization_1</code>") in html


PRETRAINED = """
name = "pretrained"
seeds = 2

[data]
name = "npz"
path = "IMAGES"

[model]
from = "trained.keras"
weights = "file"

[train]
optimizer = { name = "sgd", learning_rate = 0.01 }
loss = "sparse_categorical_crossentropy"
epochs = 1
batch_size = 32

[variants.as_saved]
[variants.momentum_0_8]
edits = [{ set = { type = "BatchNormalization" }, args = { momentum = 0.8 } }]
[variants.new_head]
edits = [
  { insert_after = "flatten", layer = { type = "BatchNormalization" } },
  { set = "dense", args = { units = 3, use_bias = false } },
]
"""


@pytest.fixture(scope="module")
def pretrained(keras_experiment: Path) -> Path:
    """The student CNN with random weights and moving statistics, as if trained, and a TOML
    whose runs start from them."""
    root = keras_experiment
    model = keras.saving.load_model(root / "student.keras")
    rng = np.random.default_rng(7)
    for layer in model.layers:  # BN's arrays (gamma, beta, mean, variance) in 0.5..1.5
        scale = 1.0 if isinstance(layer, keras.layers.BatchNormalization) else 0.01
        layer.set_weights([(rng.uniform(0.5, 1.5, w.shape) * scale).astype(np.float32)
                           for w in layer.get_weights()])
    model.save(root / "trained.keras")
    (root / "pretrained.toml").write_text(PRETRAINED.replace("IMAGES", str(root / "images.npz")))
    return root


def test_runs_start_from_the_file_weights_where_the_layers_match(pretrained, capsys) -> None:
    kmodel = keras.saving.load_model(pretrained / "trained.keras")
    exp = lab.load_experiment(pretrained / "pretrained.toml")
    variants = {v.name: v for v in exp.variants}
    data = lab.runs.load_variant_data(variants["as_saved"])
    x = data.x_train[:8]
    for seed in (0, 1):
        model = lab.runs.build_run_model(lab.RunSpec("pretrained", variants["as_saved"], seed),
                                         data).eval()
        with torch.no_grad():  # the file's model, moving statistics included
            ours = model(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(ours, kmodel.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
        edited = lab.runs.build_run_model(lab.RunSpec("pretrained", variants["new_head"], seed),
                                          data)
        bn = edited.get_layer("batch_normalization_1")  # new: the seed's (Keras's initial values)
        assert torch.equal(bn.moving_mean, torch.zeros(144)) and torch.equal(bn.gamma, torch.ones(144))
        np.testing.assert_array_equal(  # unchanged in shape: the file's
            edited.get_layer("batch_normalization").moving_variance.numpy(),
            kmodel.get_layer("batch_normalization").moving_variance.numpy())
        kernel = get_keras_weights(edited.get_layer("dense"))  # no bias now: fresh, not the file's
        assert len(kernel) == 1 and not np.allclose(kernel[0], kmodel.get_layer("dense").get_weights()[0])
    first, second = (lab.runs.build_run_model(lab.RunSpec("pretrained", variants["new_head"], s),
                                              data).get_layer("dense").weight for s in (0, 1))
    assert not torch.equal(first, second)  # fresh layers differ by seed

    assert main(["show", str(pretrained / "pretrained.toml")]) == 0
    out = capsys.readouterr().out
    file = str((pretrained / "trained.keras").resolve())
    assert f"starting weights: {file} for 3 of 3 layers with weights\n" in out
    assert (f"starting weights: {file} for 2 of 4 layers with weights; from the seed: "
            "batch_normalization_1, dense\n") in out
    digest = hashlib.sha256((pretrained / "trained.keras").read_bytes()).hexdigest()
    assert variants["momentum_0_8"].to_dict()["file_weights"] == {"path": file, "sha256": digest}
    outcome = lab.run(exp, pretrained / "pretrained", seeds=1, workers=1, report=False)
    assert outcome.completed == 3
    jsonschema.validate(outcome.results, lab.load_schema())


def test_a_run_refuses_a_starting_file_that_changed(pretrained, tmp_path) -> None:
    source = tmp_path / "copy.keras"
    source.write_bytes((pretrained / "trained.keras").read_bytes())
    toml = tmp_path / "copy.toml"
    toml.write_text((pretrained / "pretrained.toml").read_text().replace("trained.keras",
                                                                        str(source)))
    variant = lab.load_experiment(toml).variants[0]
    data = lab.runs.load_variant_data(variant)
    with source.open("ab") as f:
        f.write(b"\0")
    with pytest.raises(LabError) as e:
        lab.runs.build_run_model(lab.RunSpec("pretrained", variant, 0), data)
    assert f"{source.resolve()}: the Keras file this variant starts from changed since" in str(e.value)


@pytest.mark.parametrize(("model", "message"), [
    ('from = "student.keras"\nweights = "imagenet"',
     'model.weights: expected "fresh" (each run initializes from its seed) or "file"'),
    ('layers = [{ type = "Dense", units = 3 }]\nweights = "file"',
     "model.weights: starting weights come from a Keras file; give from = FILE too"),
], ids=["value", "without-file"])
def test_starting_weights_errors(keras_experiment, model, message) -> None:
    toml = FROM_FILE.replace('from = "student.keras"', model).replace(
        "IMAGES", str(keras_experiment / "images.npz"))
    path = keras_experiment / f"weights_{abs(hash(model))}.toml"
    path.write_text(toml)
    with pytest.raises(LabError) as e:
        lab.load_experiment(path)
    assert message in str(e.value) and "\n" not in str(e.value)


RESCALING = """
name = "rescaling"
[data]
name = "image_folder"
path = "IMAGES"
image_size = [8, 8]
[model]
from = "rescaling.keras"
[train]
optimizer = { name = "adam" }
loss = "sparse_categorical_crossentropy"
epochs = 1
[variants.as_saved]
[variants.rescaled_outside]
edits = [{ remove = "rescaling" }]
"""


def test_an_image_folder_feeds_keras_pixels_to_a_model_that_rescales(tmp_path) -> None:
    """image_dataset_from_directory yields 0..255 and the file's Rescaling(1/255) divides
    them: the lab feeds that model 0..255, and 0..1 once the Rescaling is gone."""
    image = pytest.importorskip("PIL.Image")
    for cls in ("a", "b"):
        (tmp_path / "images" / cls).mkdir(parents=True)
        for i in range(5):
            image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(
                tmp_path / "images" / cls / f"{i}.png")
    layers = keras.layers
    keras.Sequential([keras.Input((8, 8, 3)), layers.RandomFlip(name="random_flip"),
                      layers.Rescaling(1 / 255, name="rescaling"),
                      layers.Conv2D(2, 3, name="conv2d"), layers.Flatten(name="flatten"),
                      layers.Dense(2, activation="softmax", name="dense")]).save(
        tmp_path / "rescaling.keras")
    toml = tmp_path / "rescaling.toml"
    toml.write_text(RESCALING.replace("IMAGES", str(tmp_path / "images")))
    pixels = {v.name: v.data["pixels"] for v in lab.load_experiment(toml).variants}
    assert pixels == {"as_saved": "0..255", "rescaled_outside": "0..1"}
    data = lab.runs.load_variant_data(lab.load_experiment(toml).variants[0])
    assert data.x_train.max() == 160.0  # the largest pixel value written
    toml.write_text(RESCALING.replace("IMAGES", str(tmp_path / "images")).replace(
        "image_size = [8, 8]", 'image_size = [8, 8]\npixels = "0..1"'))
    assert {v.data["pixels"] for v in lab.load_experiment(toml).variants} == {"0..1"}


def test_init_from_a_keras_model_asks_its_bn_questions(keras_experiment, tmp_path, monkeypatch,
                                                       capsys) -> None:
    monkeypatch.chdir(tmp_path)
    code = main(["init", "mine", "--model", str(keras_experiment / "student.keras"),
                 "--data", str(keras_experiment / "images.npz")])
    assert code == 0 and "wrote mine.toml; run it with: bnlab run mine.toml" in capsys.readouterr().out
    text = (tmp_path / "mine.toml").read_text()
    assert f'from = "{(keras_experiment / "student.keras").as_posix()}"' in text  # not below
    assert 'weights = "fresh"' in text and 'loss = "sparse_categorical_crossentropy"' in text
    assert "# set these to how the model is trained" in text  # saved uncompiled
    exp = lab.load_experiment(tmp_path / "mine.toml")
    variants = {v.name: v for v in exp.variants}
    assert list(variants) == ["as_saved", "momentum_0_9", "no_bn"]
    assert [s.resolved_args()["momentum"] for s in variants["momentum_0_9"].layers
            if s.type == "BatchNormalization"] == [pytest.approx(0.9)]
    assert "BatchNormalization" not in [s.type for s in variants["no_bn"].layers]
    data = exp.variants[0].data
    assert (data["name"], data["path"]) == ("npz", str(keras_experiment / "images.npz"))
    outcome = lab.run(exp, tmp_path / "out", seeds=1, epochs=1, workers=1, report=False)
    assert outcome.completed == 3


def test_init_from_a_model_without_bn_adds_it_after_each_hidden_layer(tmp_path, monkeypatch,
                                                                       capsys) -> None:
    layers = keras.layers
    mlp = keras.Sequential([keras.Input((2,)), layers.Dense(8, activation="relu", name="hidden"),
                            layers.Dense(8, activation="relu", name="hidden_2"),
                            layers.Dense(1, activation="sigmoid", name="out")])
    mlp.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9), loss="binary_crossentropy")
    mlp.save(tmp_path / "mlp.keras")
    mlp.compile(optimizer="rmsprop", loss=keras.losses.BinaryCrossentropy(from_logits=True))
    mlp.save(tmp_path / "logits.keras")
    monkeypatch.chdir(tmp_path)
    assert main(["init", "mlp", "--model", "mlp.keras", "--data", "circles"]) == 0
    text = (tmp_path / "mlp.toml").read_text()
    assert 'from = "mlp.keras"' in text
    assert ('[train]                   # as the file was compiled\n'
            'optimizer = { name = "sgd", learning_rate = 0.05, momentum = 0.9 }\n'
            'loss = "binary_crossentropy"\n') in text
    assert main(["init", "logits", "--model", "logits.keras", "--data", "circles"]) == 0
    text = (tmp_path / "logits.toml").read_text()  # bnlab's losses take probabilities
    assert "# set these to how the model is trained" in text
    with_bn = lab.load_experiment(tmp_path / "mlp.toml").variants[1]
    assert with_bn.name == "with_bn"
    assert [s.type for s in with_bn.layers] == ["Dense", "BatchNormalization", "Dense",
                                               "BatchNormalization", "Dense"]
    for args, message in (
        (["--model", "mlp.keras"], "bnlab init: --model needs --data"),
        (["--data", "circles"], "bnlab init: --data and --image-size go with --model FILE"),
        (["--model", "mlp.keras", "--data", "nothing/here"], "DATA 'nothing/here' is not a folder"),
    ):
        assert main(["init", "again", *args]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "again.toml").exists()
