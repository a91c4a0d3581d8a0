#!/usr/bin/env python3
"""Exports the inference peers of benches/infer.ts: the bench architectures as ONNX (for
onnxruntime-node) plus the same weights in Keras layout (for cortex-nn), so both engines run the
same model on the same weights and the bench can check that their outputs agree.

For each model NAME it writes, into the output directory (argv[1], default benches/.onnx):
  NAME.onnx           exported by torch.onnx.export, batch axis dynamic, opset 17
  NAME.weights.bin    float32 little-endian, the Keras weights in getWeights() order
  NAME.weights.json   [{"name": ..., "shape": [...]}] for the .bin, in the same order

Models (as in bench, bench:models and the GAN bench):
  convnet    Conv2d(1,32,3)-ReLU-MaxPool2-Conv2d(32,64,3)-ReLU-MaxPool2-Flatten-Linear(1600,10)
             with softmax (the demo's MNIST convnet; dropout is identity at inference)
  lstm       Embedding(1000,64)-LSTM(128), last step-Linear(128,10) with softmax, 100 tokens
  generator  Linear(100,256)-LeakyReLU(0.2) x3 (256 wide)-Linear(256,784)-Tanh
  attention  LayerNorm(x + MultiheadAttention(x, x, x)), x [batch, 128, 256], 8 heads of 32

Layout conversions to Keras: conv OIHW -> HWIO; linear [out,in] -> [in,out]; the dense after
Flatten is permuted from PyTorch's (C,H,W) flattening to Keras' (H,W,C); LSTM gates keep their
order (i, f, g/c, o in both) with W_ih^T, W_hh^T and b_ih + b_hh as Keras' single bias.
The ONNX input of the convnet is NHWC, like cortex-nn's, so both get the same bytes.
"""

import json
import os
import sys

import numpy as np
import torch
from torch import nn

torch.manual_seed(0)
OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", ".onnx")
os.makedirs(OUT, exist_ok=True)


class ConvNet(nn.Module):
    """Takes NHWC like Keras; permutes to NCHW inside the graph."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(1, 32, 3)
        self.c2 = nn.Conv2d(32, 64, 3)
        self.fc = nn.Linear(1600, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 3, 1, 2)
        x = torch.max_pool2d(torch.relu(self.c1(x)), 2)
        x = torch.max_pool2d(torch.relu(self.c2(x)), 2)
        return torch.softmax(self.fc(x.flatten(1)), -1)

    def keras_weights(self):
        conv = lambda c: [c.weight.detach().permute(2, 3, 1, 0), c.bias.detach()]  # noqa: E731
        # PyTorch flattens [64, 5, 5] as (c, h, w); Keras flattens [5, 5, 64] as (h, w, c).
        w = self.fc.weight.detach().reshape(10, 64, 5, 5).permute(2, 3, 1, 0).reshape(1600, 10)
        return conv(self.c1) + conv(self.c2) + [w, self.fc.bias.detach()]


class LstmClassifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(1000, 64)
        self.lstm = nn.LSTM(64, 128, batch_first=True)
        self.out = nn.Linear(128, 10)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        _, (h, _) = self.lstm(self.embed(tokens.long()))
        return torch.softmax(self.out(h[-1]), -1)

    def keras_weights(self):
        l = self.lstm  # noqa: E741
        return [
            self.embed.weight.detach(),
            l.weight_ih_l0.detach().t(),
            l.weight_hh_l0.detach().t(),
            (l.bias_ih_l0 + l.bias_hh_l0).detach(),
            self.out.weight.detach().t(),
            self.out.bias.detach(),
        ]


class Generator(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(100, 256), nn.Linear(256, 256), nn.Linear(256, 256), nn.Linear(256, 784)])

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        for layer in self.layers[:-1]:
            z = torch.nn.functional.leaky_relu(layer(z), 0.2)
        return torch.tanh(self.layers[-1](z))

    def keras_weights(self):
        return [t for layer in self.layers for t in (layer.weight.detach().t(), layer.bias.detach())]


class AttentionBlock(nn.Module):
    """y = LayerNorm(x + MHA(x, x, x)), x [batch, 128, 256], 8 heads of 32."""

    def __init__(self) -> None:
        super().__init__()
        self.mha = nn.MultiheadAttention(256, 8, batch_first=True)
        self.norm = nn.LayerNorm(256, eps=1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, _ = self.mha(x, x, x, need_weights=False)
        return self.norm(x + a)

    def keras_weights(self):
        d, h = 256, 8
        w, b = self.mha.in_proj_weight.detach(), self.mha.in_proj_bias.detach()
        out = []
        for i in range(3):  # query, key, value: kernel [D, heads, head], bias [heads, head]
            out += [w[i * d : (i + 1) * d].t().reshape(d, h, d // h), b[i * d : (i + 1) * d].reshape(h, d // h)]
        out += [self.mha.out_proj.weight.detach().t().reshape(h, d // h, d), self.mha.out_proj.bias.detach()]
        return out + [self.norm.weight.detach(), self.norm.bias.detach()]


MODELS = {
    "convnet": (ConvNet(), torch.rand(2, 28, 28, 1)),
    # Token ids as float, as cortex-nn takes them; the graph casts to int64.
    "lstm": (LstmClassifier(), torch.randint(0, 1000, (2, 100)).float()),
    "generator": (Generator(), torch.randn(2, 100)),
    "attention": (AttentionBlock(), torch.randn(2, 128, 256)),
}

for name, (model, example) in MODELS.items():
    model.eval()
    path = os.path.join(OUT, f"{name}.onnx")
    torch.onnx.export(
        model,
        (example,),
        path,
        input_names=["x"],
        output_names=["y"],
        dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )
    weights = [w.contiguous().float().numpy() for w in model.keras_weights()]
    with open(os.path.join(OUT, f"{name}.weights.bin"), "wb") as f:
        for w in weights:
            f.write(np.ascontiguousarray(w, dtype="<f4").tobytes())
    with open(os.path.join(OUT, f"{name}.weights.json"), "w") as f:
        json.dump([{"shape": list(w.shape)} for w in weights], f)
    print(f"wrote {path} and its Keras-layout weights ({sum(w.size for w in weights)} values)")
