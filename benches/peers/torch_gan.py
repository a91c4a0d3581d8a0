#!/usr/bin/env python3
"""Peer benchmark: one GAN training step in PyTorch (CPU), as benches/gan_bench.ts measures it.

The MNIST MLP GAN of examples/gan.ts:
  generator      100 -> 256 -> 256 -> 256 -> 784 (LeakyReLU 0.2 hidden, tanh output)
  discriminator  784 -> 256 -> 256 -> 256 -> 1   (LeakyReLU 0.2 + Dropout 0.3 hidden, a logit)
  Adam(lr 2e-4, betas (0.5, 0.999)) for each, binary cross-entropy on logits, batch 64.

One step (the Keras pattern):
  fake = G(z1) without gradients;
  one discriminator update on cat(real, fake) against (ones, zeros)   (batch 128);
  one generator update: D(G(z2)) against ones, only G's optimizer steps.

Prints ONE JSON line to stdout: gan_step_ms (median per step), threads, versions.
Threads: first argv, else $BENCH_THREADS, else 2.
Usage: python3 benches/peers/torch_gan.py [threads]
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
# BLAS thread pools read these at import time: set them before torch loads.
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = str(THREADS)

import torch  # noqa: E402
from torch import nn  # noqa: E402

torch.set_num_threads(THREADS)
torch.manual_seed(0)

BATCH = 64
LATENT = 100
PIXELS = 28 * 28


def generator() -> nn.Module:
    return nn.Sequential(
        nn.Linear(LATENT, 256),
        nn.LeakyReLU(0.2),
        nn.Linear(256, 256),
        nn.LeakyReLU(0.2),
        nn.Linear(256, 256),
        nn.LeakyReLU(0.2),
        nn.Linear(256, PIXELS),
        nn.Tanh(),
    )


def discriminator() -> nn.Module:
    return nn.Sequential(
        nn.Linear(PIXELS, 256),
        nn.LeakyReLU(0.2),
        nn.Dropout(0.3),
        nn.Linear(256, 256),
        nn.LeakyReLU(0.2),
        nn.Dropout(0.3),
        nn.Linear(256, 256),
        nn.LeakyReLU(0.2),
        nn.Dropout(0.3),
        nn.Linear(256, 1),
    )


def main() -> None:
    t_start = time.perf_counter()
    g = generator()
    d = discriminator()
    g.train()
    d.train()
    g_opt = torch.optim.Adam(g.parameters(), lr=2e-4, betas=(0.5, 0.999))
    d_opt = torch.optim.Adam(d.parameters(), lr=2e-4, betas=(0.5, 0.999))
    loss_fn = nn.BCEWithLogitsLoss()
    real = torch.rand(BATCH, PIXELS) * 2 - 1
    d_labels = torch.cat([torch.ones(BATCH, 1), torch.zeros(BATCH, 1)])
    ones = torch.ones(BATCH, 1)

    def step() -> None:
        with torch.no_grad():
            fake = g(torch.randn(BATCH, LATENT))
        d_opt.zero_grad(set_to_none=True)
        loss_fn(d(torch.cat([real, fake])), d_labels).backward()
        d_opt.step()
        g_opt.zero_grad(set_to_none=True)
        loss_fn(d(g(torch.randn(BATCH, LATENT))), ones).backward()
        g_opt.step()

    warmup = int(os.environ.get("GAN_WARMUP", "20"))
    runs = int(os.environ.get("GAN_RUNS", "200"))
    for _ in range(warmup):
        step()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    result = {
        "peer": "torch",
        "version": torch.__version__,
        "threads": THREADS,
        "batch": BATCH,
        "gan_step_ms": round(statistics.median(times) * 1e3, 3),
        "gan_step_min_ms": round(min(times) * 1e3, 3),
        "runs": runs,
        "wall_s": round(time.perf_counter() - t_start, 2),
    }
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
