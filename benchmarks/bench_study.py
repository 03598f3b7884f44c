"""Time whole studies: the process executor against the vectorized one, side by side.

Run: ``python benchmarks/bench_study.py [--repeats 2] [--workers 2] [--large 100]
[--mnist-epochs 1] [--keras-python PATH]``.

Rows (each a full ``bnlab.lab.run`` into a fresh temporary folder, no report):

- circles, 6 variants x 10 seeds x 100 epochs: ``--executor process`` and
  ``--executor vectorized`` with the same workers, alternated ``--repeats`` times
  (medians), so both see the same machine load; wall time of the study (``lab.run``,
  no report), of its training (``StudyOutcome.training_seconds``: from the first run
  handed to the executor to the last result), models/s of training and the ratio;
- circles with ``--large`` seeds (default 100), vectorized only (0 skips it);
- mnist_cnn at its bundled data size, its first variant and grid point, 5 seeds,
  ``--mnist-epochs`` epochs (300 steps each): the five runs one after the other in
  one process against one stack of five, both on one thread; training steps per
  second per model;
- with ``--keras-python PATH``: the circles study's six variants, 1 seed, trained by
  Keras 3 in that Python (backend from ``KERAS_BACKEND``, default torch), and the
  ratio of its time per model to the vectorized executor's.

This is a script, not a test: timings depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from bnlab import lab
from bnlab.lab import load_experiment, plan_runs
from bnlab.lab.runs import build_run_model, load_variant_data
from bnlab.train import fit
from bnlab.train.vectorized import fit_replicas

KERAS_SCRIPT = r"""
import sys, time
import numpy as np
from sklearn.datasets import make_circles
import keras

x, y = make_circles(n_samples=1000, noise=0.1, random_state=1)
x_train, x_test, y_train, y_test = x[:500], x[500:], y[:500], y[500:]

def dense(**kw):
    return keras.layers.Dense(50, kernel_initializer="he_uniform", **kw)

VARIANTS = {
    "baseline": lambda: [dense(activation="relu")],
    "bn_after": lambda: [dense(activation="relu"), keras.layers.BatchNormalization()],
    "bn_before": lambda: [dense(), keras.layers.BatchNormalization(), keras.layers.Activation("relu")],
    "no_beta_gamma": lambda: [dense(activation="relu"), keras.layers.BatchNormalization(center=False, scale=False)],
    "no_momentum": lambda: [dense(activation="relu"), keras.layers.BatchNormalization(momentum=0.0)],
    "input_bn": lambda: [keras.layers.BatchNormalization(), dense(activation="relu")],
}
start = time.perf_counter()
for name, layers in VARIANTS.items():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((2,)), *layers(), keras.layers.Dense(1, activation="sigmoid")])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.01, momentum=0.9),
                  loss="binary_crossentropy", metrics=["accuracy"])
    model.fit(x_train, y_train, validation_data=(x_test, y_test), epochs=100, batch_size=32, verbose=0)
print(time.perf_counter() - start)
"""


def run_study(name: str, seeds: int, executor: str, workers: int, epochs: int | None = None) -> tuple[float, float, int]:
    """(study seconds, training seconds, runs) of one fresh study."""
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        outcome = lab.run(name, Path(out) / "study", seeds=seeds, epochs=epochs, executor=executor,
                          workers=workers, report=False)
        wall = time.perf_counter() - start
        if outcome.failed:
            raise RuntimeError(f"{outcome.failed} runs failed in the {executor} study")
        return wall, outcome.training_seconds, outcome.total


def median_of(repeats: int, *jobs: Callable[[], tuple[float, float, int]]) -> list[tuple[float, float, int]]:
    """Each job ``repeats`` times, alternated; the median study time of each."""
    times: list[list[tuple[float, float, int]]] = [[] for _ in jobs]
    for _ in range(repeats):
        for i, job in enumerate(jobs):
            times[i].append(job())
    return [sorted(t)[len(t) // 2] for t in times]


def mnist_steps_per_second(epochs: int, seeds: int = 5) -> tuple[float, float, int]:
    """Steps/s per model: five runs one by one against one stack of five (1 thread)."""
    exp = load_experiment("mnist_cnn").with_seeds(seeds).with_epochs(epochs)
    specs = [s for s in plan_runs(exp) if s.variant.name == exp.variants[0].name]
    data = load_variant_data(specs[0].variant)
    config = specs[0].variant.train_config()
    start = time.perf_counter()
    steps = 0
    for spec in specs:
        steps += fit(build_run_model(spec, data), data, config, seed=spec.seed).steps_per_epoch * epochs
    alone = time.perf_counter() - start
    models = [build_run_model(spec, data) for spec in specs]
    start = time.perf_counter()
    fit_replicas(models, data, config, seeds=[s.seed for s in specs])
    stacked = time.perf_counter() - start
    per_model = steps // len(specs)
    return per_model * len(specs) / alone / len(specs), per_model / stacked, per_model


def keras_seconds(python: str) -> float:
    env = {**os.environ, "KERAS_BACKEND": os.environ.get("KERAS_BACKEND", "torch")}
    done = subprocess.run([python, "-c", KERAS_SCRIPT], capture_output=True, text=True, env=env, check=True)
    return float(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2, help="alternated repeats (median)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes of both executors")
    parser.add_argument("--large", type=int, default=100, help="seeds of the large circles row (0: skip)")
    parser.add_argument("--mnist-epochs", type=int, default=1, help="epochs of the mnist_cnn row (0: skip)")
    parser.add_argument("--keras-python", help="a Python with Keras 3 for the Keras column")
    args = parser.parse_args()
    torch.set_num_threads(1)

    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; torch {torch.__version__}")
    print(f"{'row':<44} {'study s':>8} {'train s':>8} {'models/s':>9} {'ratio':>7}")
    process, vectorized = median_of(
        args.repeats,
        lambda: run_study("circles", 10, "process", args.workers),
        lambda: run_study("circles", 10, "vectorized", args.workers),
    )
    for label, (wall, runs, total), ratio in (
        (f"circles 6x10, process ({args.workers} workers)", process, 1.0),
        (f"circles 6x10, vectorized ({args.workers} workers)", vectorized, process[1] / vectorized[1]),
    ):
        print(f"{label:<44} {wall:8.1f} {runs:8.1f} {total / runs:9.1f} {ratio:6.1f}x")
    if args.large:
        wall, runs, total = run_study("circles", args.large, "vectorized", args.workers)
        label = f"circles 6x{args.large}, vectorized ({args.workers} workers)"
        print(f"{label:<44} {wall:8.1f} {runs:8.1f} {total / runs:9.1f} {'':>7}")
    if args.mnist_epochs:
        alone, stacked, steps = mnist_steps_per_second(args.mnist_epochs)
        print(f"mnist_cnn 5 seeds x {steps} steps, 1 thread: one by one {alone:.1f} steps/s per model, "
              f"stacked {stacked:.1f} steps/s per model ({stacked / alone:.2f}x)")
    if args.keras_python:
        seconds = keras_seconds(args.keras_python)
        per_model = seconds / 6
        ours = vectorized[1] / 60
        print(f"Keras 3 ({os.environ.get('KERAS_BACKEND', 'torch')} backend), circles 6 variants x 1 seed: "
              f"{seconds:.1f} s, {per_model:.1f} s per model; vectorized {ours:.3f} s per model "
              f"({per_model / ours:.0f}x)")
    print("command: python " + " ".join([sys.argv[0], *sys.argv[1:]]))


if __name__ == "__main__":
    main()
