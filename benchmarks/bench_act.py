"""Time bnlab's BatchNormAct against torch.nn.BatchNorm2d followed by the activation.

Run: ``python benchmarks/bench_act.py [--repeats 25] [--threads N] [--clock wall|cpu]``.

Each row times one workload (training forward+backward, or inference forward)
for four equivalent computations, interleaved (see ``bench_layer.py``):

- ``fused``: ``bnlab.nn.BatchNormAct`` (activation in place where the backward allows);
- ``bnlab+act``: ``bnlab.BatchNormalization`` then the ``torch.nn`` activation;
- ``torch+act``: ``torch.nn.BatchNorm2d`` then the activation module;
- ``torch+act_``: the same with ``inplace=True`` (ReLU/SiLU), as torchvision writes it.

Ratios are to ``torch+act``. Target: fused <= 1.10x.
This is a script, not a test: timings depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from torch import nn

from bench_layer import format_time, inference_step, time_interleaved, training_step
from bnlab.nn import BatchNormAct, BatchNormalization

TARGET = 1.10
SHAPES = ((32, 64, 56, 56), (64, 256, 14, 14))
ACTIVATIONS: dict[str, Callable[[bool], nn.Module]] = {
    "relu": lambda inplace: nn.ReLU(inplace=inplace),
    "silu": lambda inplace: nn.SiLU(inplace=inplace),
    "gelu": lambda inplace: nn.GELU(),  # no in-place gelu in PyTorch
}


def make_layers(activation: str, channels: int) -> dict[str, nn.Module]:
    """Equivalent layers: bnlab momentum 0.9 is PyTorch's 0.1; same epsilon."""
    act = ACTIVATIONS[activation]
    return {
        "fused": BatchNormAct(channels, activation=activation, momentum=0.9, epsilon=1e-3),
        "bnlab+act": nn.Sequential(BatchNormalization(channels, momentum=0.9, epsilon=1e-3),
                                   act(False)),
        "torch+act": nn.Sequential(nn.BatchNorm2d(channels, eps=1e-3), act(False)),
        "torch+act_": nn.Sequential(nn.BatchNorm2d(channels, eps=1e-3), act(True)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=25, help="interleaved repeats (median)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--activations", default="relu,silu,gelu",
                        help=f"comma-separated, from {', '.join(ACTIVATIONS)}")
    parser.add_argument("--clock", choices=("wall", "cpu"), default=None,
                        help="cpu (process time) suits single-thread runs on a shared machine; "
                             "default: cpu with 1 thread, else wall")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    clock_name = args.clock or ("cpu" if torch.get_num_threads() == 1 else "wall")
    clock = time.process_time if clock_name == "cpu" else time.perf_counter
    torch.manual_seed(0)
    activations = [a.strip() for a in args.activations.split(",") if a.strip()]
    unknown = sorted(set(activations) - set(ACTIVATIONS))
    if unknown:
        parser.error(f"unknown activation(s) {unknown}; choose from {', '.join(ACTIVATIONS)}")

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32, "
          f"{clock_name} clock, median of {args.repeats} interleaved repeats; "
          "ratios to torch+act")
    names = ("fused", "bnlab+act", "torch+act", "torch+act_")
    header = f"{'workload':<40}" + "".join(f"{n:>13}" for n in names) + \
        f"{'fused/torch':>12}{'fused/torch_':>13}"
    print(header)
    print("-" * len(header))
    misses = []
    for activation in activations:
        for shape in SHAPES:
            x = torch.randn(shape)
            grad = torch.randn_like(x)
            for mode in ("train fwd+bwd", "inference fwd"):
                layers = make_layers(activation, shape[1])
                fns = {name: training_step(layer, x, grad) if mode.startswith("train")
                       else inference_step(layer, x) for name, layer in layers.items()}
                t, ratios = time_interleaved(fns, args.repeats, clock, baseline="torch+act")
                ratio = ratios["fused"]
                ratio_inplace = ratios["fused"] / ratios["torch+act_"]
                label = f"{activation} {mode} {tuple(shape)}"
                flag = "" if ratio <= TARGET else "  <-- above target"
                print(f"{label:<40}" + "".join(f"{format_time(t[n]):>13}" for n in names)
                      + f"{ratio:11.2f}x{ratio_inplace:12.2f}x{flag}")
                if ratio > TARGET:
                    misses.append(label)
    print()
    print(f"target fused <= {TARGET:.2f}x torch+act: "
          + ("met on every row" if not misses else f"missed on {', '.join(misses)}"))


if __name__ == "__main__":
    main()
