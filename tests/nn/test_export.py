"""Deploying bnlab layers: torch.export, torch.compile(fullgraph=True), torch.jit.trace, ONNX.

Every variant of the layer registry (``batch_normalization`` with each option that changes
its computation, ``batch_norm_act`` with each activation) runs in inference mode, after a
few training steps so that its moving statistics are not the initial ones. Each path is
checked against the eager module's output (float32 tolerances from conftest). Exporting
(and compiling) is slow on a small CPU, so ONNX and compile take one model holding every
variant (:class:`Zoo`), and compile in training mode is one model of plain BN and
BatchNormAct.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn

from bnlab.functional.act import list_activations
from bnlab.nn import BatchNormAct, BatchNormalization
from bnlab.nn.registry import LAYERS

SHAPE = (6, 4, 3, 3)  # (N, C, H, W) of the zoo's input


class Variant(nn.Module):
    """One layer and the view of a (N, 4, 3, 3) input that it normalizes."""

    def __init__(self, layer: nn.Module, view: Callable[[Tensor], Tensor]) -> None:
        super().__init__()
        self.layer = layer
        self.view = view

    def forward(self, x: Tensor) -> Tensor:
        return self.layer(self.view(x))


def _channels_first(x: Tensor) -> Tensor:
    return x


def _features(x: Tensor) -> Tensor:
    return x.mean(dim=(2, 3))  # (N, C)


def _sequence(x: Tensor) -> Tensor:
    return x.flatten(2)  # (N, C, L)


def _channels_last(x: Tensor) -> Tensor:
    return x.permute(0, 2, 3, 1)  # (N, H, W, C)


def _volume(x: Tensor) -> Tensor:
    return x.unsqueeze(2)  # (N, C, 1, H, W)


def _variants() -> dict[str, Callable[[], Variant]]:
    plain: dict[str, Callable[[], Variant]] = {
        "bn_2d": lambda: Variant(BatchNormalization(4), _channels_first),
        "bn_1d_features": lambda: Variant(BatchNormalization(4), _features),
        "bn_1d_sequence": lambda: Variant(BatchNormalization(4), _sequence),
        "bn_3d": lambda: Variant(BatchNormalization(4), _volume),
        "bn_axis_last": lambda: Variant(BatchNormalization(4, axis=-1), _channels_last),
        "bn_axes_1_2": lambda: Variant(BatchNormalization((4, 3), axis=(1, 2)), _channels_first),
        "bn_no_affine": lambda: Variant(BatchNormalization(4, center=False, scale=False),
                                        _channels_first),
        "bn_cumulative": lambda: Variant(BatchNormalization(4, momentum=None,
                                                            unbiased_moving_variance=True),
                                         _channels_first),
        "bn_frozen": lambda: Variant(BatchNormalization(4, trainable=False), _channels_first),
        "bn_renorm": lambda: Variant(BatchNormalization(4, renorm=True), _channels_first),
        "bn_ghost": lambda: Variant(BatchNormalization(4, virtual_batch_size=3),
                                    _channels_first),
        "bn_synchronized": lambda: Variant(BatchNormalization(4, synchronized=True),
                                           _channels_first),
    }
    acts = {
        f"act_{name}": (lambda name=name: Variant(BatchNormAct(4, activation=name),
                                                  _channels_first))
        for name in list_activations()
    }
    return plain | acts


VARIANTS = _variants()


def test_variants_cover_the_registry():
    """Every registered class appears (a new registry entry needs a line here)."""
    classes = {type(make().layer) for make in VARIANTS.values()}
    assert classes == set(LAYERS.values())


def _trained(model: nn.Module, seed: int = 0) -> nn.Module:
    """``model`` after three training steps on shifted data, then in eval mode."""
    generator = torch.Generator().manual_seed(seed)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(SHAPE, generator=generator) * 3 + 1)
    return model.eval()


def _input(batch: int = SHAPE[0], seed: int = 1) -> Tensor:
    return torch.randn((batch, *SHAPE[1:]), generator=torch.Generator().manual_seed(seed)) * 3 + 1


class Zoo(nn.Module):
    """Every variant on the same input; outputs flattened side by side."""

    def __init__(self) -> None:
        super().__init__()
        self.variants = nn.ModuleDict({name: make() for name, make in VARIANTS.items()})

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([v(x).flatten(1) for v in self.variants.values()], dim=1)


@pytest.fixture(scope="module")
def zoo() -> Zoo:
    return _trained(Zoo())


@pytest.mark.parametrize("name", list(VARIANTS), ids=list(VARIANTS))
def test_export_static_shape(name, assert_close):
    model = _trained(VARIANTS[name]())
    x = _input()
    program = torch.export.export(model, (x,))
    assert_close(program.module()(x), model(x))
    # The statistics are constants of the program, not recomputed: buffers unchanged.
    assert_close(program.module()(_input(seed=2)), model(_input(seed=2)))


def test_export_dynamic_batch_dimension(zoo, assert_close):
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(zoo, (_input(),), dynamic_shapes=({0: batch},))
    for n in (1, 2, 11):
        assert_close(program.module()(_input(n, seed=n)), zoo(_input(n, seed=n)))


@pytest.mark.parametrize("name", list(VARIANTS), ids=list(VARIANTS))
def test_jit_trace_with_check(name, assert_close):
    model = _trained(VARIANTS[name]())
    x = _input()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no TracerWarning: nothing data-dependent is baked in
        warnings.filterwarnings("ignore", "`torch.jit.trace.* is deprecated",
                                DeprecationWarning)
        traced = torch.jit.trace(model, (x,), check_trace=True, check_inputs=[(_input(3, 5),)])
    assert_close(traced(_input(9, seed=3)), model(_input(9, seed=3)))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_onnx_export_runs_in_onnxruntime(zoo, tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    path = tmp_path / "zoo.onnx"
    batch = torch.export.Dim("batch", min=1)
    torch.onnx.export(zoo, (_input(),), str(path), dynamo=True,
                      dynamic_shapes=({0: batch},), verbose=False)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    for n in (6, 2):
        x = _input(n, seed=10 + n)
        (got,) = session.run(None, {input_name: x.numpy()})
        torch.testing.assert_close(torch.from_numpy(got), zoo(x), rtol=1e-5, atol=1e-5)


# Inductor's own code calls a deprecated TorchScript decorator.
COMPILER_WARNINGS = pytest.mark.filterwarnings(
    "ignore:.*torch.jit.script_method.* is deprecated:DeprecationWarning")


@COMPILER_WARNINGS
def test_compile_fullgraph_inference(zoo, assert_close):
    # aot_eager: Dynamo's capture (where graph breaks happen) and AOT autograd's
    # functionalization, without Inductor's code generation (one minute on two cores for
    # this model; the training test below runs Inductor).
    torch._dynamo.reset()
    compiled = torch.compile(zoo, fullgraph=True, backend="aot_eager")
    x = _input()
    assert_close(compiled(x), zoo(x))


@COMPILER_WARNINGS
def test_compile_fullgraph_training_matches_eager(assert_close):
    """Plain BN and BatchNormAct, training: outputs, gradients, statistics, batch count;
    a batch with a NaN is skipped (statistics and count unchanged) without a graph break."""
    eager = nn.Sequential(BatchNormalization(4, momentum=0.9),
                          BatchNormAct(4, momentum=None, activation="leaky_relu"))
    twin = copy.deepcopy(eager)
    torch._dynamo.reset()
    compiled = torch.compile(twin, fullgraph=True)
    for step in range(2):
        x = _input(seed=20 + step).requires_grad_(True)
        x_twin = x.detach().clone().requires_grad_(True)
        assert_close(compiled(x_twin), eager(x))
        eager(x).square().sum().backward()
        compiled(x_twin).square().sum().backward()
        assert_close(x_twin.grad, x.grad, rtol=1e-4, atol=1e-4)
    for (name, a), (_, b) in zip(eager.named_parameters(), twin.named_parameters(), strict=True):
        assert_close(b.grad, a.grad, rtol=1e-4, atol=1e-4, msg=name)
    for (name, a), (_, b) in zip(eager.named_buffers(), twin.named_buffers(), strict=True):
        assert_close(b.double(), a.double(), dtype=torch.float32, msg=name)
    assert int(twin[0].num_batches_tracked) == 4
    before = {name: b.clone() for name, b in twin.named_buffers()}
    poisoned = _input(seed=30)
    poisoned[0, 1, 0, 0] = float("nan")
    compiled(poisoned)
    for name, b in twin.named_buffers():
        assert torch.equal(b, before[name]), name
