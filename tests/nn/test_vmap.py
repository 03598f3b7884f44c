"""``torch.func.vmap`` over models holding bnlab layers, in training mode.

The recipe (README, "vmap over models"): stack the models' parameters and buffers with
``torch.func.stack_module_state``, call the model with ``functional_call`` inside ``vmap``
and return the buffers; the layer updates the stacked buffers it was given. vmap over the
module itself in training mode fails with one line naming that recipe.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from bnlab.nn import BatchNormAct, BatchNormalization


def _models(count: int) -> list[nn.Module]:
    torch.manual_seed(0)
    return [nn.Sequential(nn.Linear(3, 5), BatchNormalization(5, momentum=0.8), nn.ReLU(),
                          nn.Linear(5, 4), BatchNormAct(4, momentum=None), nn.Linear(4, 2))
            for _ in range(count)]


def test_vmap_training_via_functional_call_matches_each_model(assert_close):
    models = _models(3)
    eager = copy.deepcopy(models)
    params, buffers = stack_module_state(models)
    skeleton = copy.deepcopy(models[0]).to("meta")

    def step(params, buffers, x):
        return functional_call(skeleton, (params, buffers), (x,)), buffers

    g = torch.Generator().manual_seed(1)
    for _ in range(2):
        x = torch.randn(3, 8, 3, generator=g)  # one batch per model
        out, buffers = vmap(step)(params, buffers, x)
        for i, model in enumerate(eager):
            assert_close(out[i], model(x[i]))
    for i, model in enumerate(eager):
        for name, value in model.named_buffers():
            if value.is_floating_point():
                assert_close(buffers[name][i], value, msg=name)
            else:
                assert int(buffers[name][i]) == int(value) == 2, name


def test_vmap_over_the_module_in_training_names_the_recipe():
    layer = BatchNormalization(4)
    with pytest.raises(RuntimeError, match=r"batch_normalization: vmap over the layer in "
                                           r"training mode .*torch.func.functional_call inside vmap.*"
                                           r"bnlab.functional.batch_norm"):
        vmap(layer)(torch.randn(2, 8, 4))
    layer.eval()  # inference changes nothing: vmap over the module works
    x = torch.randn(2, 8, 4)
    torch.testing.assert_close(vmap(layer)(x), layer(x.reshape(16, 4)).reshape(2, 8, 4))
