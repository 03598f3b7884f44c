"""freeze/unfreeze: inference statistics and no updates, even under model.train()."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
from torch import nn

import bnlab
from bnlab.nn.freeze import freeze, is_frozen, unfreeze


def _model() -> nn.Sequential:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1),
        bnlab.BatchNormalization(4, momentum=0.5, name="keras_bn"), nn.ReLU(),
        nn.Flatten(), nn.Linear(4 * 6 * 6, 5), nn.BatchNorm1d(5, momentum=None),
    )
    model.train()
    for _ in range(3):  # non-trivial statistics to freeze
        model(torch.randn(8, 3, 6, 6) * 2 + 1)
    return model


def _bn_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()
            if any(s in k for s in ("1.", "4.", "8."))}


def test_freeze_returns_the_layers_it_froze() -> None:
    model = _model()
    assert freeze(model) == ["1", "4", "8"]
    assert all(is_frozen(model[i]) for i in (1, 4, 8))


def test_training_steps_change_no_bn_parameter_or_statistic() -> None:
    model = _model()
    freeze(model)
    before = _bn_state(model)
    conv_before = model[0].weight.detach().clone()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1,
                                momentum=0.9, weight_decay=1e-2)
    model.train()
    for _ in range(3):
        optimizer.zero_grad()
        model(torch.randn(8, 3, 6, 6)).square().mean().backward()
        optimizer.step()
    after = _bn_state(model)
    for key, value in before.items():
        assert torch.equal(after[key], value), f"{key} changed"
    assert not torch.equal(model[0].weight, conv_before)  # the rest did train
    for i in (1, 4, 8):
        assert all(not p.requires_grad for p in model[i].parameters())


def test_frozen_train_mode_output_equals_eval_mode_output() -> None:
    model = _model()
    reference = copy.deepcopy(model).eval()
    freeze(model)
    model.train()
    x = torch.randn(5, 3, 6, 6)
    torch.testing.assert_close(model(x), reference(x), rtol=0, atol=0)
    # Samples are independent, as in inference: one sample alone gives the same row.
    torch.testing.assert_close(model(x[:1]), reference(x)[:1], rtol=1e-6, atol=1e-6)


def test_frozen_model_deep_copies_and_pickles_frozen() -> None:
    model = _model()
    freeze(model)
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        clone.train()
        before = clone[1].running_mean.clone()
        clone(torch.randn(4, 3, 6, 6))
        assert torch.equal(clone[1].running_mean, before)
        assert is_frozen(clone[1]) and is_frozen(clone[4])


def test_unfreeze_restores_batch_statistics_and_gradients() -> None:
    model = _model()
    reference = copy.deepcopy(model)
    freeze(model)
    freeze(model)  # idempotent: one hook, not two
    assert len(model[1]._forward_pre_hooks) == 1
    assert unfreeze(model) == ["1", "4", "8"]
    model.train()
    x = torch.randn(6, 3, 6, 6)
    torch.testing.assert_close(model(x), reference(x), rtol=0, atol=0)
    torch.testing.assert_close(model[1].running_mean, reference[1].running_mean, rtol=0, atol=0)
    assert all(p.requires_grad for p in model.parameters())
    assert not any(is_frozen(model[i]) for i in (1, 4, 8))


def test_bare_layer_and_models_without_bn() -> None:
    layer = nn.BatchNorm1d(3)
    assert freeze(layer) == [""]
    layer.train()
    layer(torch.randn(4, 3))
    assert torch.equal(layer.running_mean, torch.zeros(3))
    assert freeze(nn.Linear(2, 2)) == []


def test_layer_without_running_statistics_is_rejected_and_nothing_changes() -> None:
    model = nn.Sequential(nn.BatchNorm1d(3), nn.BatchNorm1d(3, track_running_stats=False))
    with pytest.raises(ValueError, match=r"layer '1' has track_running_stats=False"):
        freeze(model)
    assert not is_frozen(model[0])


def test_is_frozen_rejects_other_modules() -> None:
    with pytest.raises(TypeError, match="got Linear"):
        is_frozen(nn.Linear(2, 2))
