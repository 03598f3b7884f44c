"""recalibrate: population statistics of each BN layer's input, independent of the batch split."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import bnlab
from bnlab.functional.axes import kept_axes
from bnlab.nn.freeze import freeze
from bnlab.nn.recalibrate import recalibrate
from bnlab.nn.views import batch_norm_layers, view

F32 = {"rtol": 2e-6, "atol": 2e-6}
BN_NAMES = ["1", "5", "9"]


def _model() -> nn.Sequential:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5),
        nn.Conv2d(4, 5, 3), bnlab.BatchNormalization(5, momentum=0.9), nn.ReLU(),
        nn.Flatten(), nn.Linear(5 * 4 * 4, 6),
        bnlab.BatchNormalization(6, unbiased_moving_variance=True, center=False),
    )
    model.train()
    for _ in range(2):  # moving statistics far from the population ones
        model(torch.randn(4, 3, 6, 6))
    return model


def _data(n: int = 40) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 3, 6, 6, generator=g) * 2 + 3


def _split(x: torch.Tensor, sizes: list[int]) -> list[torch.Tensor]:
    assert sum(sizes) == len(x)
    return list(torch.split(x, sizes))


def _layer_inputs(model: nn.Module, batches: list[torch.Tensor], bn_train: bool) -> dict[str, torch.Tensor]:
    """Every BN layer's input over all batches as an (M, C) float64 matrix, via hooks."""
    model = copy.deepcopy(model).eval()
    seen: dict[str, list[torch.Tensor]] = {}
    for name, module in batch_norm_layers(model):
        module.train(bn_train)

        def hook(module, args, name=name):
            x = args[0].detach().double()
            (axis,) = kept_axes(view(module).axis, x.dim())
            seen.setdefault(name, []).append(x.movedim(axis, -1).reshape(-1, x.shape[axis]))

        module.register_forward_pre_hook(hook)
    with torch.no_grad():
        for x in batches:
            model(x)
    return {name: torch.cat(parts) for name, parts in seen.items()}


def _statistics(model: nn.Module) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    return {name: (view(m).mean.clone(), view(m).variance.clone()) for name, m in batch_norm_layers(model)}


def _check_population(model: nn.Module, inputs: dict[str, torch.Tensor]) -> None:
    for name, module in batch_norm_layers(model):
        matrix = inputs[name]
        layer = view(module)
        torch.testing.assert_close(layer.mean, matrix.mean(0).float(), **F32, msg=f"{name} mean")
        want = matrix.var(0, correction=1 if layer.unbiased else 0).float()
        torch.testing.assert_close(layer.variance, want, **F32, msg=f"{name} variance")


def test_train_mode_equals_float64_statistics_of_train_mode_inputs() -> None:
    model, batches = _model(), _split(_data(), [8, 8, 8, 16])
    counts = recalibrate(model, batches)
    _check_population(model, _layer_inputs(model, batches, bn_train=True))
    assert counts == {"1": 40 * 36, "5": 40 * 16, "9": 40}


def test_eval_mode_statistics_are_those_of_the_inference_network() -> None:
    # A fixed point: in eval mode every layer's moving statistics are exactly the
    # population statistics of the input it receives at inference.
    model, batches = _model(), _split(_data(), [10, 10, 20])
    recalibrate(model, batches, mode="eval")
    _check_population(model, _layer_inputs(model, batches, bn_train=False))


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_statistics_do_not_depend_on_the_batch_split(mode: str) -> None:
    x = _data()
    results = []
    for sizes in ([8, 8, 8, 8, 8], [5, 17, 3, 15], [40]):
        model = _model()
        recalibrate(model, _split(x, sizes), mode=mode)
        results.append(_statistics(model))
    # mode="train": only the first layer's input is independent of the batch
    # composition (later ones see batch-normalized features); mode="eval": all.
    names = ["1"] if mode == "train" else BN_NAMES
    for other in results[1:]:
        for name in names:
            for got, want in zip(other[name], results[0][name], strict=True):
                torch.testing.assert_close(got, want, **F32)
    if mode == "train":  # ... and the later ones really do depend on it
        assert not torch.allclose(results[1]["9"][1], results[0]["9"][1], rtol=1e-4)


def test_variance_correction_follows_each_layer() -> None:
    model, batches = _model(), [_data()]
    recalibrate(model, batches)
    inputs = _layer_inputs(model, batches, bn_train=True)
    # torch stores the unbiased variance; bnlab's Keras default the biased one.
    torch.testing.assert_close(model[1].running_var, inputs["1"].var(0, correction=1).float(), **F32)
    torch.testing.assert_close(model[5].moving_variance, inputs["5"].var(0, correction=0).float(), **F32)
    torch.testing.assert_close(model[9].moving_variance, inputs["9"].var(0, correction=1).float(), **F32)


def test_everything_else_is_left_as_it_was() -> None:
    model = _model()
    model[0].eval()  # a mix of modes to restore
    model[3].train()
    freeze(nn.Sequential(model[5]))  # frozen layers are left alone
    modes = {name: m.training for name, m in model.named_modules()}
    parameters = {k: v.clone() for k, v in model.named_parameters()}
    tracked = {k: v.clone() for k, v in model.state_dict().items() if "num_batches_tracked" in k}
    frozen = (model[5].moving_mean.clone(), model[5].moving_variance.clone())
    counts = recalibrate(model, [(x, torch.zeros(len(x))) for x in _split(_data(), [20, 20])])
    assert "5" not in counts
    assert {name: m.training for name, m in model.named_modules()} == modes
    for k, v in model.named_parameters():
        assert torch.equal(v, parameters[k]), k
    for k, v in model.state_dict().items():
        if "num_batches_tracked" in k:
            assert torch.equal(v, tracked[k]), k
    assert torch.equal(model[5].moving_mean, frozen[0])
    assert torch.equal(model[5].moving_variance, frozen[1])


def test_dropout_is_off_while_collecting() -> None:
    # Statistics are for inference, where dropout is off: same result with p=0.
    model = _model()
    no_dropout = copy.deepcopy(model)
    no_dropout[3].p = 0.0
    batches = _split(_data(), [20, 20])
    recalibrate(model, batches)
    recalibrate(no_dropout, batches)
    for (n1, a), (_, b) in zip(_statistics(model).items(), _statistics(no_dropout).items(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=n1)


def test_num_batches_and_tuples() -> None:
    model, reference = _model(), _model()
    batches = [(x, x.sum()) for x in _split(_data(), [10, 10, 20])]
    recalibrate(model, iter(batches), num_batches=2)
    recalibrate(reference, [x for x, _ in batches[:2]])
    for name in BN_NAMES:
        torch.testing.assert_close(_statistics(model)[name], _statistics(reference)[name], rtol=0, atol=0)


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_channel_last_masked_and_unbuilt_layers(mode: str) -> None:
    class Masked(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bn = bnlab.BatchNormalization(None, axis=-1)  # built by the first forward

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.bn(x, mask=x[..., 0] > 0)

    model = Masked()
    g = torch.Generator().manual_seed(2)
    batches = [torch.randn(n, 7, 3, generator=g) + 1 for n in (3, 5)]
    counts = recalibrate(model, batches, mode=mode)
    values = torch.cat([x.reshape(-1, 3) for x in batches]).double()
    kept = values[values[:, 0] > 0]
    assert counts == {"bn": len(kept)}
    torch.testing.assert_close(model.bn.moving_mean, kept.mean(0).float(), **F32)
    torch.testing.assert_close(model.bn.moving_variance, kept.var(0, correction=0).float(), **F32)
    assert int(model.bn.num_batches_tracked) == 0


def test_large_mean_small_spread_keeps_its_variance() -> None:
    # Sums of squares would cancel here; Chan-merged centred moments do not.
    layer = bnlab.BatchNormalization(2)
    g = torch.Generator().manual_seed(3)
    batches = [(torch.randn(50, 2, generator=g, dtype=torch.float64) * 1e-2 + 1e4).float()
               for _ in range(4)]
    recalibrate(layer, batches)
    values = torch.cat(batches).double()
    torch.testing.assert_close(layer.moving_variance, values.var(0, correction=0).float(), rtol=1e-4, atol=0)


def test_unreached_layer_warns_and_is_unchanged() -> None:
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.used, self.unused = nn.BatchNorm1d(3), nn.BatchNorm1d(3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.used(x)

    model = Branchy()
    with pytest.warns(RuntimeWarning, match="never reached BN layer.*'unused'"):
        counts = recalibrate(model, [torch.randn(4, 3) + 2])
    assert counts == {"used": 4, "unused": 0}
    assert torch.equal(model.unused.running_mean, torch.zeros(3))


def test_progress_bar_runs(capsys: pytest.CaptureFixture[str]) -> None:
    model = _model()
    recalibrate(model, _split(_data(), [20, 20]), progress=True, mode="eval")
    _check_population(model, _layer_inputs(model, _split(_data(), [20, 20]), bn_train=False))


def test_model_without_bn_and_bad_arguments() -> None:
    assert recalibrate(nn.Linear(2, 2), [torch.randn(3, 2)]) == {}
    model = _model()
    with pytest.raises(ValueError, match="num_batches must be an int >= 1 or None; got 0"):
        recalibrate(model, [torch.randn(2, 3, 6, 6)], num_batches=0)
    with pytest.raises(ValueError, match="mode must be 'train' or 'eval'; got 'test'"):
        recalibrate(model, [torch.randn(2, 3, 6, 6)], mode="test")
    with pytest.raises(ValueError, match="re-iterable; got a one-shot generator"):
        recalibrate(model, (x for x in [torch.randn(2, 3, 6, 6)]), mode="eval")
    before = _statistics(model)
    with pytest.raises(TypeError, match="got dict"):
        recalibrate(model, [torch.randn(2, 3, 6, 6), {"x": torch.randn(2, 3, 6, 6)}])
    for name, stats in _statistics(model).items():  # no half-done statistics after an error
        torch.testing.assert_close(stats, before[name], rtol=0, atol=0)


def test_renorm_layer_gets_a_consistent_stddev_and_keeps_its_renorm_state() -> None:
    layer = bnlab.BatchNormalization(3, renorm=True, renorm_clipping={"rmax": 2.0, "dmax": 1.0})
    layer.train()
    for _ in range(3):
        layer(torch.randn(6, 3) * 2 + 1)
    renorm_state = (layer.renorm_mean.clone(), layer.renorm_stddev.clone())
    batches = [torch.randn(10, 3) * 3 - 2 for _ in range(3)]
    recalibrate(layer, batches)
    values = torch.cat(batches).double()
    torch.testing.assert_close(layer.moving_variance, values.var(0, correction=0).float(), **F32)
    torch.testing.assert_close(layer.moving_stddev, (layer.moving_variance + layer.epsilon).sqrt())
    assert torch.equal(layer.renorm_mean, renorm_state[0])
    assert torch.equal(layer.renorm_stddev, renorm_state[1])
