"""Synchronized batch normalization against plain BN on the concatenated batch.

One group of three processes (gloo on loopback, file:// rendezvous in a temporary
folder) runs every scenario; each rank saves what it computed and the tests
below compare it with a single process running ordinary BN on the concatenation
of the ranks' batches (float64, tight tolerance). The processes come from a
forkserver that has torch preloaded, so the whole group costs about as much as
one interpreter start.
"""

from __future__ import annotations

import copy
import datetime
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import bnlab
from bnlab.functional import batch_norm
from bnlab.functional.sync import (
    SynchronizationError,
    _Link,
    _synchronized_training,
    sync_batch_norm,
)
from bnlab.nn.freeze import freeze
from bnlab.nn.recalibrate import recalibrate
from bnlab.nn.sync import SyncBatchNorm, convert_sync

WORLD = 3
STEPS = 2
TOL = {"rtol": 1e-10, "atol": 1e-10}
SIZES = {"unequal": (3, 5, 2), "empty": (4, 0, 3)}
CASES = [
    ("bnlab_conv_input", "unequal"),
    ("bnlab_conv_input", "empty"),
    ("torch_net", "unequal"),
    ("torch_net", "empty"),
    ("masked_sequence", "unequal"),
    ("masked_sequence", "empty"),
]


# ---------------------------------------------------------------- scenarios
def _model(kind: str) -> nn.Module:
    """The same initial model on every process (seeded, float64)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        if kind == "bnlab_conv_input":
            model = bnlab.BatchNormalization(4, momentum=0.9, gamma_initializer="random_normal",
                                             beta_initializer="random_normal",
                                             name="bn_conv", dtype=torch.float64)
        elif kind == "torch_net":
            model = nn.Sequential(
                nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                nn.Conv2d(4, 3, 1), nn.BatchNorm2d(3, momentum=None),
            ).double()
        elif kind == "masked_sequence":
            model = bnlab.BatchNormalization(5, axis=-1, momentum=None, unbiased_moving_variance=True,
                                             center=False, name="bn_seq", dtype=torch.float64)
        else:
            raise ValueError(kind)
    return model


def _data(kind: str, sizes: tuple[int, ...], step: int) -> dict[str, torch.Tensor]:
    """Full-batch input, loss weights and (for sequences) mask for one step."""
    total = sum(sizes)
    g = torch.Generator().manual_seed(1000 * step + total)
    shape = {"bnlab_conv_input": (4, 3, 3), "torch_net": (2, 4, 4), "masked_sequence": (6, 5)}[kind]
    x = torch.randn(total, *shape, generator=g, dtype=torch.float64) * 3 + 5
    out = (3, 4, 4) if kind == "torch_net" else shape
    w = torch.randn(total, *out, generator=g, dtype=torch.float64)
    data = {"x": x, "w": w}
    if kind == "masked_sequence":
        data["mask"] = torch.rand(total, shape[0], generator=g) > 0.3
    return data


def _slice(data: dict[str, torch.Tensor], sizes: tuple[int, ...], rank: int) -> dict[str, torch.Tensor]:
    start = sum(sizes[:rank])
    return {k: v[start:start + sizes[rank]] for k, v in data.items()}


def _train(model: nn.Module, kind: str, sizes: tuple[int, ...], rank: int | None) -> dict[str, Any]:
    """STEPS training steps; rank None = the whole batch in one process."""
    model.train()
    record: dict[str, Any] = {"y": [], "x_grad": [], "param_grads": []}
    for step in range(STEPS):
        data = _data(kind, sizes, step)
        if rank is not None:
            data = _slice(data, sizes, rank)
        x = data["x"].clone().requires_grad_(True)
        model.zero_grad()
        y = model(x, data["mask"]) if "mask" in data else model(x)
        (y * data["w"]).sum().backward()
        record["y"].append(y.detach())
        record["x_grad"].append(x.grad.detach())
        record["param_grads"].append({n: p.grad.detach().clone() for n, p in model.named_parameters()})
    record["buffers"] = {n: b.detach().clone() for n, b in model.named_buffers()}
    return record


RECALIBRATION_SIZES = [(3, 2, 0), (1, 4, 2)]  # per step, per rank


def _recalibration_model() -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(11)
        return nn.Sequential(
            nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(),
            nn.Linear(3 * 2 * 2, 4), bnlab.BatchNormalization(4, dtype=torch.float64),
        ).double()


def _recalibration_batches(rank: int | None) -> list[torch.Tensor]:
    """Rank ``rank``'s batch of each step, or (None) each step's concatenated batch."""
    batches = []
    for step, sizes in enumerate(RECALIBRATION_SIZES):
        g = torch.Generator().manual_seed(50 + step)
        x = torch.randn(sum(sizes), 2, 4, 4, generator=g, dtype=torch.float64) * 2 + 1
        batches.append(x if rank is None else _slice({"x": x}, sizes, rank)["x"])
    return batches


def _recalibrated(model: nn.Module, rank: int | None, mode: str) -> dict[str, torch.Tensor]:
    recalibrate(model, _recalibration_batches(rank), mode=mode)
    return {n: b.clone() for n, b in model.named_buffers()}


# ------------------------------------------------------------------ worker
def _worker(rank: int, world: int, folder: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=rank,
                            world_size=world, timeout=datetime.timedelta(seconds=20))
    results: dict[str, Any] = {}
    for kind, split in CASES:
        model = _model(kind)
        model = convert_sync(model)
        results[f"{kind}/{split}"] = _train(model, kind, SIZES[split], rank)

    for mode in ("train", "eval"):
        model = convert_sync(_recalibration_model())
        results[f"recalibrate/{mode}"] = _recalibrated(model, rank, mode)

    # One value per channel over all ranks together: every rank gets the same error.
    layer = bnlab.BatchNormalization(3, synchronized=True, name="tiny")
    try:
        layer(torch.randn(1 if rank == 0 else 0, 3))
        results["single_value"] = None
    except ValueError as error:
        results["single_value"] = str(error)

    # Two ranks running different layers of the same width are caught, not mixed.
    layer = bnlab.BatchNormalization(3, synchronized=True, name="left" if rank == 0 else "right")
    try:
        layer(torch.randn(4, 3))
        results["mismatch"] = None
    except SynchronizationError as error:
        results["mismatch"] = str(error)

    # A rank that skips the layer: the other waits sync_timeout seconds, then raises.
    # Both cases run at once, on two pairs of ranks.
    forward_pair, backward_pair = dist.new_group([0, 1]), dist.new_group([1, 2])
    if rank == 0:  # rank 1 never runs this layer
        layer = bnlab.BatchNormalization(3, synchronized=True, sync_timeout=1.0, name="block3.bn")
        layer.process_group = forward_pair
        started = time.monotonic()
        try:
            layer(torch.randn(4, 3))
            results["skipped_forward"] = None
        except SynchronizationError as error:
            results["skipped_forward"] = (str(error), time.monotonic() - started)
    if rank in (1, 2):  # both run forward; rank 1 skips backward
        layer = bnlab.BatchNormalization(3, synchronized=True, sync_timeout=1.0, name="head.bn")
        layer.process_group = backward_pair
        x = torch.randn(4, 3, requires_grad=True)
        y = layer(x)
        if rank == 2:
            try:
                y.sum().backward()
                results["skipped_backward"] = None
            except SynchronizationError as error:
                results["skipped_backward"] = str(error)
    torch.save(results, Path(folder) / f"rank{rank}.pt")
    dist.barrier()
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """Run the group once; every rank's saved results, in rank order."""
    folder = tmp_path_factory.mktemp("sync")
    mp.set_forkserver_preload(["torch", "bnlab"])
    context = mp.start_processes(_worker, args=(WORLD, str(folder)), nprocs=WORLD,
                                 join=False, start_method="forkserver")
    deadline = time.monotonic() + 90
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail("the synchronized-BN process group did not finish within 90 s")
    return [torch.load(folder / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


# ------------------------------------------------------------------- tests
@pytest.mark.parametrize(("kind", "split"), CASES, ids=[f"{k}-{s}" for k, s in CASES])
def test_equals_plain_bn_on_concatenated_batch(ranks: list[dict[str, Any]], kind: str, split: str) -> None:
    sizes = SIZES[split]
    reference = _train(_model(kind), kind, sizes, None)
    got = [r[f"{kind}/{split}"] for r in ranks]
    for step in range(STEPS):
        torch.testing.assert_close(torch.cat([g["y"][step] for g in got]), reference["y"][step], **TOL)
        torch.testing.assert_close(torch.cat([g["x_grad"][step] for g in got]),
                                   reference["x_grad"][step], **TOL)
        for name, want in reference["param_grads"][step].items():
            # Each rank holds its share of a parameter's gradient; DDP adds them up.
            summed = sum(g["param_grads"][step][name] for g in got)
            torch.testing.assert_close(summed, want, **TOL, msg=f"{name} gradient, step {step}")
    for name, want in reference["buffers"].items():
        for rank, g in enumerate(got):
            torch.testing.assert_close(g["buffers"][name], want, **TOL,
                                       msg=f"{name} on rank {rank}")
            assert torch.equal(g["buffers"][name], got[0]["buffers"][name]), (
                f"{name} differs between rank 0 and rank {rank}"
            )


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_recalibrate_merges_every_rank(ranks: list[dict[str, Any]], mode: str) -> None:
    # Synchronized layers normalize each step's global batch, so the population
    # statistics equal one process recalibrating on the concatenated batches.
    reference = _recalibrated(_recalibration_model(), None, mode)
    for rank, got in enumerate(ranks):
        for name, want in reference.items():
            torch.testing.assert_close(got[f"recalibrate/{mode}"][name], want, **TOL,
                                       msg=f"{name} on rank {rank}")


def test_moving_statistics_moved(ranks: list[dict[str, Any]]) -> None:
    # Guards against a vacuous comparison: the statistics really were updated.
    buffers = ranks[1]["bnlab_conv_input/empty"]["buffers"]
    assert int(buffers["num_batches_tracked"]) == STEPS
    assert buffers["moving_mean"].abs().min() > 0.5


def test_one_value_per_channel_over_all_ranks_is_an_error(ranks: list[dict[str, Any]]) -> None:
    for rank in ranks:
        message = rank["single_value"]
        assert message is not None and "tiny" in message and "all 3 ranks together gave 1" in message


def test_ranks_running_different_layers_raise(ranks: list[dict[str, Any]]) -> None:
    message = ranks[0]["mismatch"]
    assert message is not None and "left" in message and "[1, 2]" in message
    assert ranks[1]["mismatch"] is not None and "right" in ranks[1]["mismatch"]


def test_skipped_layer_times_out_with_the_layer_name(ranks: list[dict[str, Any]]) -> None:
    message, seconds = ranks[0]["skipped_forward"]
    assert "block3.bn" in message and "sync_timeout=1 s" in message
    assert "batch statistics" in message
    assert seconds < 10


def test_skipped_backward_times_out_with_the_layer_name(ranks: list[dict[str, Any]]) -> None:
    message = ranks[2]["skipped_backward"]
    assert message is not None and "head.bn" in message and "gradient sums" in message


# ------------------------------------------------- one process, no spawning
@pytest.fixture
def single_rank_group(tmp_path: Path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/rendezvous", rank=0,
                            world_size=1, timeout=datetime.timedelta(seconds=20))
    yield
    dist.destroy_process_group()


@pytest.mark.parametrize(
    ("shape", "kept", "masked", "affine"),
    [((5, 3, 4), (1,), False, True), ((4, 6, 3), (2,), True, True),
     ((5, 3, 4), (0, 2), False, False)],
    ids=["channel-first", "channel-last-masked", "two-kept-axes-no-affine"],
)
def test_gradcheck_in_a_group_of_one(single_rank_group: None, shape, kept, masked, affine) -> None:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(*shape, generator=g, dtype=torch.float64, requires_grad=True)
    stat = tuple(shape[d] for d in kept)
    gamma = torch.randn(*stat, generator=g, dtype=torch.float64, requires_grad=True) if affine else None
    beta = torch.randn(*stat, generator=g, dtype=torch.float64, requires_grad=True) if affine else None
    mask = None
    if masked:
        mask = torch.rand(*(n for d, n in enumerate(shape) if d not in kept), generator=g) > 0.3
    moving = torch.zeros(stat, dtype=torch.float64), torch.ones(stat, dtype=torch.float64)

    def synchronized(x, gamma=None, beta=None):
        return _synchronized_training(
            x, gamma, beta, *moving, kept=kept, momentum=0.9, epsilon=1e-3, num_batches_tracked=0,
            unbiased_moving_variance=False, mask=mask, on_nonfinite="skip",
            link=_Link(None, 10.0, "bn"),
        )

    inputs = (x, gamma, beta) if affine else (x,)
    assert torch.autograd.gradcheck(lambda *a: synchronized(*a).output, inputs)
    # ... and the collective path gives plain BN's numbers.
    got = synchronized(*inputs)
    want = batch_norm(x, gamma, beta, *moving, training=True, axis=kept, momentum=0.9, mask=mask)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, **TOL)


def test_group_of_one_and_no_group_behave_as_plain_bn(tmp_path: Path) -> None:
    x = torch.randn(6, 4, 5)
    plain = bnlab.BatchNormalization(4)
    synced = bnlab.BatchNormalization(4, synchronized=True, sync_timeout=5)
    torch.testing.assert_close(synced(x), plain(x), rtol=0, atol=0)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/rendezvous", rank=0,
                            world_size=1)
    try:
        torch.testing.assert_close(synced(x), plain(x), rtol=0, atol=0)
        torch.testing.assert_close(synced.moving_variance, plain.moving_variance, rtol=0, atol=0)
    finally:
        dist.destroy_process_group()


def test_convert_sync_keeps_torch_keys_parameters_and_behaviour() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, momentum=None),
                          nn.Sequential(nn.BatchNorm2d(4, affine=False), bnlab.BatchNormalization(4)))
    reference = copy.deepcopy(model)
    weight = model[1].weight
    converted = convert_sync(model, sync_timeout=30)
    assert converted is model
    assert isinstance(model[1], SyncBatchNorm) and isinstance(model[2][0], SyncBatchNorm)
    assert model[1].weight is weight  # an existing optimizer keeps working
    assert model[1].name == "1" and model[2][0].name == "2.0"
    assert model[2][1].synchronized and model[2][1].sync_timeout == 30
    assert model.state_dict().keys() == reference.state_dict().keys()
    x = torch.randn(5, 3, 6, 6, dtype=torch.float32)
    for _ in range(3):
        torch.testing.assert_close(model(x), reference(x))
    torch.testing.assert_close(model[1].running_var, reference[1].running_var)
    assert int(model[1].num_batches_tracked) == 3
    model.eval(), reference.eval()
    torch.testing.assert_close(model(x), reference(x))


def test_convert_sync_of_a_bare_layer_returns_its_replacement() -> None:
    layer = convert_sync(nn.BatchNorm1d(3))
    assert isinstance(layer, SyncBatchNorm) and layer.name == "sync_batch_norm"


def test_frozen_torch_layer_stays_frozen_after_conversion() -> None:
    model = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))
    freeze(model)
    convert_sync(model)
    before = model[1].running_mean.clone()
    model.train()
    model(torch.randn(8, 3))
    assert torch.equal(model[1].running_mean, before)
    assert not model[1].weight.requires_grad


@pytest.mark.parametrize("timeout", [0, -1.0, "5"], ids=["zero", "negative", "string"])
def test_bad_timeout_is_rejected_with_the_value(timeout) -> None:
    with pytest.raises(ValueError, match="sync_timeout must be seconds > 0") as info:
        bnlab.BatchNormalization(3, synchronized=True, sync_timeout=timeout)
    assert repr(timeout) in str(info.value)
    with pytest.raises(ValueError, match="timeout must be a number of seconds > 0"):
        sync_batch_norm(torch.randn(4, 3), None, None, torch.zeros(3), torch.ones(3),
                        training=True, timeout=timeout)


def test_convert_sync_refuses_renorm_and_ghost_layers_and_changes_nothing() -> None:
    model = nn.Sequential(nn.BatchNorm1d(3), bnlab.BatchNormalization(3, renorm=True, name="rn"),
                          bnlab.BatchNormalization(3, virtual_batch_size=2))
    with pytest.raises(ValueError, match=r"layer\(s\) '1', '2' use renorm or virtual_batch_size"):
        convert_sync(model)
    assert type(model[0]) is nn.BatchNorm1d and not model[1].synchronized
