#!/usr/bin/env python3
"""Peer benchmark: PyTorch (CPU) and NumPy.

Prints ONE JSON line to stdout with:
  gemm_gflops                 torch.mm 1024x1024x1024, best of several (GFLOP/s)
  numpy_gemm_gflops           numpy.matmul 1024^3, best of several (GFLOP/s)
  train_samples_per_s         Keras MNIST convnet, Adam + cross-entropy, batch 128 (median)
  predict_b1_ms               eval + no_grad latency at batch 1 (median, ms)
  predict_b256_samples_per_s  eval + no_grad throughput at batch 256 (median)

Threads: first argv, else $BENCH_THREADS, else 2. Random input data.
Usage: python3 benches/peers/torch_bench.py [threads]
"""

import json
import os
import statistics
import sys
import time


def _threads() -> int:
    if len(sys.argv) > 1:
        return int(sys.argv[1])
    return int(os.environ.get("BENCH_THREADS", "2"))


THREADS = _threads()
# BLAS thread pools read these at import time: set them before numpy/torch load.
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = str(THREADS)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

torch.set_num_threads(THREADS)
torch.manual_seed(0)

N = 1024
GEMM_FLOP = 2.0 * N * N * N


def best_gflops(fn, reps: int = 8) -> float:
    fn()  # warmup
    fn()
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return GEMM_FLOP / best / 1e9


def torch_gemm() -> float:
    a = torch.randn(N, N)
    b = torch.randn(N, N)
    return best_gflops(lambda: torch.mm(a, b))


def numpy_gemm() -> float:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((N, N), dtype=np.float32)
    b = rng.standard_normal((N, N), dtype=np.float32)
    return best_gflops(lambda: a @ b)


def convnet() -> nn.Module:
    # keras.io "Simple MNIST convnet" (34,826 parameters).
    return nn.Sequential(
        nn.Conv2d(1, 32, 3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Dropout(0.5),
        nn.Linear(1600, 10),
    )


def median_time(fn, warmup: int, runs: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def train_throughput(batch: int = 128, steps_per_run: int = 5, runs: int = 9) -> float:
    model = convnet()
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    x = torch.rand(batch, 1, 28, 28)
    y = torch.randint(0, 10, (batch,))

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()

    def run() -> None:
        for _ in range(steps_per_run):
            step()

    t = median_time(run, warmup=2, runs=runs)
    return batch * steps_per_run / t


def predict() -> tuple[float, float]:
    model = convnet()
    model.eval()
    x1 = torch.rand(1, 1, 28, 28)
    x256 = torch.rand(256, 1, 28, 28)
    with torch.no_grad():
        t1 = median_time(lambda: model(x1), warmup=300, runs=300)
        t256 = median_time(lambda: model(x256), warmup=5, runs=40)
    return t1 * 1e3, 256 / t256


def main() -> None:
    t_start = time.perf_counter()
    gemm = torch_gemm()
    np_gemm = numpy_gemm()
    train = train_throughput()
    p1_ms, p256 = predict()
    result = {
        "peer": "torch",
        "version": torch.__version__,
        "numpy_version": np.__version__,
        "threads": THREADS,
        "gemm_gflops": round(gemm, 2),
        "numpy_gemm_gflops": round(np_gemm, 2),
        "train_samples_per_s": round(train, 1),
        "predict_b1_ms": round(p1_ms, 4),
        "predict_b256_samples_per_s": round(p256, 1),
        "wall_s": round(time.perf_counter() - t_start, 2),
    }
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
