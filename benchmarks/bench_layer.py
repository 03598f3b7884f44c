"""Time bnlab's BatchNormalization against torch.nn.BatchNorm1d/2d on this CPU.

Run: ``python benchmarks/bench_layer.py [--repeats 25] [--threads N] [--clock wall|cpu]``.

Each row times one workload (training forward+backward, or inference forward) for
bnlab's layer (``implementation="auto"``), PyTorch's native module and bnlab's
reference path (the paper's Algorithm 1). The three are timed *interleaved*: every
repeat runs one batch of calls of each, in turn, so machine noise hits all of them
alike; the table shows the median time per call and the median of the per-repeat
ratios to native. Targets: bnlab <= 1.05x native on the convolution shapes, where the
kernel dominates; <= 1.15x on the small (256, 512) shape, where the few microseconds of
Python and small tensor operations that the layer adds per call (its checks: finite
statistics, ill-conditioned channels; Keras's moving update) are a visible share.

On a machine shared with other work, prefer ``--threads 1`` (timed by the CPU time
of the process, which being descheduled does not inflate): with several intra-op
threads a parallel kernel waits whenever one of its threads is descheduled, and wall
timings turn into scheduler noise.

The layers are equivalent: PyTorch's momentum 0.1 is bnlab's (Keras's) 0.9, both use
epsilon 1e-3; bnlab updates the variance with the biased estimate (Keras), which costs
nothing extra.

This is a script, not a test: timings depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from bnlab import BatchNormalization


@dataclass(frozen=True)
class Case:
    label: str
    shape: tuple[int, ...]
    channels_last: bool = False
    target: float = 1.05  # bnlab / native


CASES = (
    Case("(256,512)", (256, 512), target=1.15),
    Case("(32,64,56,56)", (32, 64, 56, 56)),
    Case("(32,64,56,56) channels_last", (32, 64, 56, 56), channels_last=True),
    Case("(64,256,14,14)", (64, 256, 14, 14)),
)


def make_input(case: Case) -> torch.Tensor:
    x = torch.randn(case.shape)
    if case.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def make_layers(case: Case) -> dict[str, nn.Module]:
    """Equivalent layers: PyTorch momentum 0.1 is Keras/bnlab momentum 0.9; same epsilon."""
    channels = case.shape[1]
    native = (nn.BatchNorm1d if len(case.shape) <= 3 else nn.BatchNorm2d)(channels, eps=1e-3)
    return {
        "bnlab": BatchNormalization(channels, momentum=0.9, epsilon=1e-3),
        "native": native,
        "reference": BatchNormalization(channels, momentum=0.9, epsilon=1e-3,
                                        implementation="reference"),
    }


def training_step(layer: nn.Module, x: torch.Tensor, grad: torch.Tensor) -> Callable[[], None]:
    layer.train()
    x = x.detach().requires_grad_(True)

    def step() -> None:
        x.grad = None
        for p in layer.parameters():
            p.grad = None
        layer(x).backward(grad)

    return step


def inference_step(layer: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    layer.eval()

    def step() -> None:
        with torch.no_grad():
            layer(x)

    return step


def calls_per_batch(fn: Callable[[], None], clock: Callable[[], float],
                    budget: float = 0.01) -> int:
    """Enough calls that one timed batch lasts about ``budget`` seconds."""
    start = clock()
    fn()
    once = max(clock() - start, 1e-6)
    return max(1, min(100, int(budget / once)))


def time_interleaved(
    fns: dict[str, Callable[[], None]], repeats: int, clock: Callable[[], float],
    baseline: str = "native",
) -> tuple[dict[str, float], dict[str, float]]:
    """Median seconds per call of each function, and median per-repeat ratio to ``baseline``.

    Every repeat times one batch of calls of each function back to back (the order
    alternates between repeats), so a ratio compares measurements taken a few
    milliseconds apart: load from other processes mostly cancels out. Short workloads
    get more repeats (their batches are short and noisier).
    """
    for fn in fns.values():  # warm-up: allocator, lazy kernels
        for _ in range(3):
            fn()
    calls = {name: calls_per_batch(fn, clock) for name, fn in fns.items()}
    start = clock()
    fns[baseline]()
    if clock() - start < 1e-3:
        repeats *= 4
    samples: dict[str, list[float]] = {name: [] for name in fns}
    order = list(fns)
    for r in range(repeats):
        for name in order if r % 2 == 0 else reversed(order):
            fn, n = fns[name], calls[name]
            start = clock()
            for _ in range(n):
                fn()
            samples[name].append((clock() - start) / n)
    medians = {name: statistics.median(s) for name, s in samples.items()}
    ratios = {
        name: statistics.median(a / b for a, b in zip(s, samples[baseline], strict=True))
        for name, s in samples.items()
    }
    return medians, ratios


def format_time(seconds: float) -> str:
    return f"{seconds * 1e6:9.1f} us" if seconds < 1e-2 else f"{seconds * 1e3:9.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=25, help="interleaved repeats (median)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--clock", choices=("wall", "cpu"), default=None,
                        help="wall time, or CPU time of the process (immune to being "
                             "descheduled; default with one thread)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    # With several threads, CPU time would count the workers' spin-waiting: use wall time.
    clock_name = args.clock or ("cpu" if torch.get_num_threads() == 1 else "wall")
    clock = time.process_time if clock_name == "cpu" else time.perf_counter

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32, "
          f"{clock_name} clock, median of >= {args.repeats} interleaved repeats")
    header = (f"{'workload':<40} {'bnlab':>12} {'native':>12} {'ratio':>7} "
              f"{'reference':>12} {'ref ratio':>9}")
    print(header)
    print("-" * len(header))
    misses = []
    for case in CASES:
        x = make_input(case)
        grad = torch.randn_like(x)
        for mode in ("train fwd+bwd", "inference fwd"):
            layers = make_layers(case)
            if case.channels_last:
                layers = {k: v.to(memory_format=torch.channels_last) for k, v in layers.items()}
            fns = {
                name: training_step(layer, x, grad) if mode.startswith("train")
                else inference_step(layer, x)
                for name, layer in layers.items()
            }
            t, ratios = time_interleaved(fns, args.repeats, clock)
            ratio = ratios["bnlab"]
            label = f"{mode} {case.label}"
            flag = "" if ratio <= case.target else f"  <-- above {case.target:.2f}x"
            print(f"{label:<40} {format_time(t['bnlab']):>12} {format_time(t['native']):>12} "
                  f"{ratio:6.2f}x {format_time(t['reference']):>12} "
                  f"{ratios['reference']:8.2f}x{flag}", flush=True)
            if ratio > case.target:
                misses.append(label)
    print()
    print("targets (1.15x on (256,512), 1.05x on the convolution shapes): "
          + ("met on every row" if not misses else f"missed on {', '.join(misses)}"))


if __name__ == "__main__":
    main()
