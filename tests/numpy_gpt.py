#!/usr/bin/env python3
"""numpy_gpt.py -- a retort gpt checkpoint, read and run without retort.

    numpy_gpt.py CHECKPOINT.safetensors LOGITS.safetensors

Parses the checkpoint with the plain safetensors reader of
numpy_interop.py, rebuilds the forward of nanoGPT's GPT (the module
plugins/students/gpt.c documents: learned positions, pre-LayerNorm blocks,
causal multi-head attention over c_attn's q, k, v rows, GELU(tanh), the
output tied to transformer.wte.weight) from the parameter names alone, and
compares its logits on LOGITS' "ids" with LOGITS' "logits" (retort's).
Prints "ok ..." lines; exits 1 on a mismatch.
"""
import json
import math
import sys

import numpy as np

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from numpy_interop import load_safetensors  # noqa: E402


def layer_norm(x, w, b, eps=1e-5):
    m = x.mean(-1, keepdims=True)
    v = ((x - m) ** 2).mean(-1, keepdims=True)
    return (x - m) / np.sqrt(v + eps) * w + b


def gelu_tanh(x):
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


def forward(p, ids, heads):
    N, T = ids.shape
    x = p["transformer.wte.weight"][ids] + p["transformer.wpe.weight"][:T]
    D = x.shape[-1]
    hs = D // heads
    L = 0
    while "transformer.h.%d.ln_1.weight" % L in p:
        L += 1
    mask = np.tril(np.ones((T, T), dtype=bool))
    for l in range(L):
        g = lambda n: p["transformer.h.%d.%s" % (l, n)]  # noqa: E731
        h = layer_norm(x, g("ln_1.weight"), g("ln_1.bias"))
        qkv = h @ g("attn.c_attn.weight").T + g("attn.c_attn.bias")
        q, k, v = np.split(qkv, 3, axis=-1)
        q = q.reshape(N, T, heads, hs).transpose(0, 2, 1, 3)
        k = k.reshape(N, T, heads, hs).transpose(0, 2, 1, 3)
        v = v.reshape(N, T, heads, hs).transpose(0, 2, 1, 3)
        att = q @ k.transpose(0, 1, 3, 2) / math.sqrt(hs)
        att = np.where(mask, att, -np.inf)
        att = np.exp(att - att.max(-1, keepdims=True))
        att /= att.sum(-1, keepdims=True)
        y = (att @ v).transpose(0, 2, 1, 3).reshape(N, T, D)
        x = x + y @ g("attn.c_proj.weight").T + g("attn.c_proj.bias")
        h = layer_norm(x, g("ln_2.weight"), g("ln_2.bias"))
        u = gelu_tanh(h @ g("mlp.c_fc.weight").T + g("mlp.c_fc.bias"))
        x = x + u @ g("mlp.c_proj.weight").T + g("mlp.c_proj.bias")
    x = layer_norm(x, p["transformer.ln_f.weight"], p["transformer.ln_f.bias"])
    return x @ p["transformer.wte.weight"].T


def main():
    ckpt, logits_path = sys.argv[1], sys.argv[2]
    t, meta = load_safetensors(ckpt)
    p = {k: v.astype(np.float64) for k, v in t.items() if not k.startswith("optim.")}
    opts = json.loads(meta["retort.options"])
    want, _ = load_safetensors(logits_path)
    ids = want["ids"].astype(np.int64)
    got = forward(p, ids, opts["heads"])
    ref = want["logits"].astype(np.float64)
    err = np.abs(got - ref).max() / max(1.0, np.abs(ref).max())
    print("ok %s: %d parameters, logits %s, max error %.2e (relative to the largest logit)"
          % (meta.get("retort.plugin"), len(p), list(ref.shape), err))
    if not err < 1e-4:
        print("FAIL numpy's logits differ from retort's: %.3g" % err)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
