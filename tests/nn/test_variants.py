"""The renorm and ghost-batch options of ``BatchNormalization`` and the renorm warm-up.

The math is tested in ``tests/functional/test_renorm.py`` and ``test_ghost.py``;
here: the module stores what the functions return, its buffers and Keras weights
match Keras's layer, options are validated, and the schedule follows the paper.
"""

from __future__ import annotations

import itertools
import os

import pytest
import torch
from torch import nn

from bnlab.functional import ghost_batch_norm
from bnlab.nn import (
    BatchNormAct,
    BatchNormalization,
    RenormClippingScheduler,
    renorm_clipping_schedule,
    set_renorm_clipping,
)


def sample(shape, seed, shift=0.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g) * (1 + seed % 3) + shift


@pytest.fixture(scope="module")
def keras():
    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "torch":
        pytest.skip("Keras is imported with a backend other than torch")
    return keras


# ----------------------------------------------------------------------- renorm
def test_renorm_layer_matches_keras_layer_over_steps(keras, assert_close):
    """Channel-last (Keras's layout): outputs, gradients, all 7 Keras weights per step."""
    clipping = {"rmax": 1.5, "rmin": 0.6, "dmax": 0.8}
    ours = BatchNormalization(3, axis=-1, momentum=0.9, renorm=True, renorm_clipping=clipping,
                              renorm_momentum=0.6, gamma_initializer="random_uniform",
                              beta_initializer="random_normal")
    theirs = keras.layers.BatchNormalization(momentum=0.9, renorm=True, renorm_clipping=clipping,
                                             renorm_momentum=0.6)
    theirs.build((6, 4, 3))
    theirs.set_weights(ours.get_keras_weights())
    for step in range(4):
        x = sample((6, 4, 3), seed=step, shift=step)
        x1, x2 = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
        y1, y2 = ours(x1), theirs(x2, training=True)
        assert_close(y1, y2)
        w = sample((6, 4, 3), seed=50 + step)
        assert_close(torch.autograd.grad(y1, [x1, ours.gamma, ours.beta], w),
                     torch.autograd.grad(y2, [x2, theirs.gamma.value, theirs.beta.value], w))
        # Keras's get_weights() warns under numpy 2; read the torch values of its variables.
        assert_close(ours.get_keras_weights(), [v.value.detach() for v in theirs.weights])
    ours.eval()
    x = sample((2, 4, 3), seed=9)
    assert_close(ours(x), theirs(x, training=False))
    assert int(ours.num_batches_tracked) == 4


def test_renorm_buffers_exist_only_with_renorm():
    plain = set(BatchNormalization(3).state_dict())
    renorm = set(BatchNormalization(3, renorm=True).state_dict())
    assert renorm - plain == {"moving_stddev", "renorm_mean", "renorm_stddev"}
    assert "moving_stddev" not in plain


def test_renorm_state_starts_from_the_moving_initializers():
    layer = BatchNormalization(3, renorm=True, moving_mean_initializer="constant(0.5)",
                               moving_variance_initializer="constant(4.0)")
    torch.testing.assert_close(layer.moving_stddev, torch.full((3,), 2.0))
    torch.testing.assert_close(layer.renorm_stddev, torch.full((3,), 2.0))
    torch.testing.assert_close(layer.renorm_mean, torch.full((3,), 0.5))
    layer(sample((8, 3), seed=1))
    layer.reset_moving_statistics()
    torch.testing.assert_close(layer.renorm_stddev, torch.full((3,), 2.0))
    assert int(layer.num_batches_tracked) == 0


def test_renorm_lazy_build_and_checkpoint_round_trip():
    layer = BatchNormalization(renorm=True, renorm_clipping={"rmax": 2.0})
    for step in range(2):
        layer(sample((8, 3, 2), seed=step, shift=1.0))
    fresh = BatchNormalization(renorm=True, renorm_clipping={"rmax": 2.0})
    fresh.load_state_dict(layer.state_dict())
    x = sample((8, 3, 2), seed=5)
    assert torch.equal(fresh(x), layer(x))
    assert torch.equal(fresh.renorm_stddev, layer.renorm_stddev)


def test_frozen_renorm_layer_is_inference():
    layer = BatchNormalization(3, renorm=True).freeze()
    before = {k: v.clone() for k, v in layer.state_dict().items()}
    layer.train()
    layer(sample((8, 3), seed=2, shift=3.0))
    for key, value in layer.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_clipping_setter_validates_and_reports_the_value():
    layer = BatchNormalization(3, renorm=True)
    layer.renorm_clipping = {"rmax": 2.0, "dmax": 1.0}
    assert layer.renorm_clipping == {"rmax": 2.0, "dmax": 1.0}
    with pytest.raises(ValueError, match=r"rmax >= rmin; got rmax=0.5, rmin=1.0"):
        layer.renorm_clipping = {"rmax": 0.5, "rmin": 1.0}
    assert layer.renorm_clipping == {"rmax": 2.0, "dmax": 1.0}


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"renorm": True, "virtual_batch_size": 4},
     r"renorm=True and virtual_batch_size cannot be combined"),
    ({"renorm": True, "synchronized": True},
     r"synchronized=True and renorm=True cannot be combined"),
    ({"renorm": True, "unbiased_moving_variance": True},
     r"unbiased_moving_variance=True does not apply"),
    ({"renorm_momentum": 1.5}, r"renorm_momentum must be in \[0, 1\]; got 1.5"),
    ({"renorm_clipping": {"rmaxx": 3}}, r"unknown renorm_clipping key\(s\) \['rmaxx'\]"),
    ({"virtual_batch_size": 0}, r"virtual_batch_size must be a positive int.*got 0"),
], ids=["renorm_ghost", "renorm_sync", "renorm_unbiased", "renorm_momentum", "clipping_key",
        "virtual_batch_size"])
def test_bad_options_fail_at_construction(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BatchNormalization(3, name="bn", **kwargs)


# ------------------------------------------------------------------------ ghost
def test_ghost_layer_stores_the_functional_result():
    layer = BatchNormalization(3, virtual_batch_size=4, momentum=0.5)
    x = sample((12, 3, 5), seed=3)
    expected = ghost_batch_norm(x, layer.gamma, layer.beta, layer.moving_mean.clone(),
                                layer.moving_variance.clone(), virtual_batch_size=4,
                                training=True, momentum=0.5)
    y = layer(x)
    assert torch.equal(y, expected.output)
    assert torch.equal(layer.moving_mean, expected.moving_mean)
    assert torch.equal(layer.moving_variance, expected.moving_variance)
    assert int(layer.num_batches_tracked) == 1


def test_ghost_layer_error_names_the_sizes():
    layer = BatchNormalization(3, virtual_batch_size=4, name="bn3")
    with pytest.raises(ValueError, match=r"^bn3: the batch size 6 is not a multiple of "
                                         r"virtual_batch_size=4"):
        layer(torch.randn(6, 3))


def test_ghost_layer_in_eval_takes_any_batch_size():
    layer = BatchNormalization(3, virtual_batch_size=4).eval()
    plain = BatchNormalization(3).eval()
    x = sample((5, 3), seed=4)
    assert torch.equal(layer(x), plain(x))


def test_extra_repr_shows_the_options():
    assert "virtual_batch_size=4" in repr(BatchNormalization(3, virtual_batch_size=4))
    text = repr(BatchNormalization(3, renorm=True, renorm_clipping={"rmax": 3.0}))
    assert "renorm=True, renorm_clipping={'rmax': 3.0}, renorm_momentum=0.99" in text


# ------------------------------------------------------------- renorm schedule
SCHEDULE = {
    0: (1.0, 0.0), 5000: (1.0, 0.0), 22_500: (2.0, 4.375), 25_000: (1 + 2 * 20 / 35, 5.0),
    40_000: (3.0, 5.0), 10**6: (3.0, 5.0),
}


@pytest.mark.parametrize(("step", "expected"), SCHEDULE.items(), ids=map(str, SCHEDULE))
def test_schedule_follows_the_paper(step, expected):
    """rmax 1 -> 3 by step 40k, dmax 0 -> 5 by step 25k, after 5k steps of plain BN."""
    clipping = renorm_clipping_schedule(step)
    assert clipping["rmax"] == pytest.approx(expected[0])
    assert clipping["rmin"] == pytest.approx(1 / expected[0])
    assert clipping["dmax"] == pytest.approx(expected[1])


def test_schedule_is_monotone():
    values = [renorm_clipping_schedule(t, warmup_steps=10, rmax_steps=50, dmax_steps=30)
              for t in range(60)]
    assert all(a["rmax"] <= b["rmax"] and a["dmax"] <= b["dmax"]
               for a, b in itertools.pairwise(values))


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"step": -1}, r"step must be an int >= 0; got -1"),
    ({"step": 0, "rmax": 0.5}, r"rmax must be a finite number >= 1; got 0.5"),
    ({"step": 0, "dmax": -1.0}, r"dmax must be a finite number >= 0; got -1.0"),
    ({"step": 0, "warmup_steps": 100, "dmax_steps": 50},
     r"dmax_steps must be an int >= warmup_steps=100; got 50"),
], ids=["step", "rmax", "dmax", "end_before_warmup"])
def test_schedule_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        renorm_clipping_schedule(**kwargs)


def test_scheduler_sets_every_renorm_layer_each_step():
    model = nn.Sequential(nn.Linear(4, 3), BatchNormalization(3, renorm=True),
                          BatchNormAct(3, renorm=True), BatchNormalization(3))
    scheduler = RenormClippingScheduler(model, warmup_steps=2, rmax_steps=4, dmax_steps=4,
                                        rmax=3.0, dmax=2.0)
    assert model[1].renorm_clipping == {"rmax": 1.0, "rmin": 1.0, "dmax": 0.0}
    for _ in range(3):
        model(torch.randn(8, 4))
        scheduler.step()
    expected = renorm_clipping_schedule(3, warmup_steps=2, rmax_steps=4, dmax_steps=4,
                                        rmax=3.0, dmax=2.0)
    assert expected == {"rmax": 2.0, "rmin": 0.5, "dmax": 1.0}
    assert model[1].renorm_clipping == expected == model[2].renorm_clipping
    assert model[3].renorm_clipping == {}
    resumed = RenormClippingScheduler(model)
    resumed.load_state_dict(scheduler.state_dict())
    assert resumed.clipping == scheduler.clipping


def test_scheduler_needs_a_renorm_layer():
    with pytest.raises(ValueError, match=r"no BatchNormalization with renorm=True"):
        RenormClippingScheduler(nn.Sequential(BatchNormalization(3)))


def test_set_renorm_clipping_counts_layers():
    model = nn.Sequential(BatchNormalization(3, renorm=True), BatchNormalization(3))
    assert set_renorm_clipping(model, {"rmax": 2.0}) == 1
    assert model[0].renorm_clipping == {"rmax": 2.0}
