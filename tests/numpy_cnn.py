"""numpy_cnn.py -- the cnn student's checkpoints both ways, without retort.

Used by tests/check_cnn_interop.sh, with Debian's python3-numpy only (no
PyTorch): the forward of retort's cnn student written as PyTorch's
nn.Sequential computes it in eval mode (conv2d by explicit im2col and
einsum, batch norm with running statistics, max / average / global pooling,
linear), over the state_dict names docs/pytorch.md gives.

    numpy_cnn.py gen DIR LAYERS       writes DIR/pt.safetensors, a state_dict
                                      as PyTorch's save_file writes it (no
                                      metadata, num_batches_tracked i64
                                      scalars, running statistics not 0/1),
                                      and DIR/x.safetensors ("x" [N, 1, 28, 28])
    numpy_cnn.py check DIR LAYERS CKPT LOGITS
                                      the logits numpy computes from CKPT for
                                      DIR/x.safetensors must match LOGITS'
                                      "logits" (written by retort) within 1e-4
Prints "ok ..." / "FAIL ..." lines and "numpy_cnn: N passed, N failed".
"""
import json
import struct
import sys

import numpy as np

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from numpy_interop import check, load_safetensors  # noqa: E402
import numpy_interop  # noqa: E402

NP2ST = {np.dtype(np.float32): "F32", np.dtype(np.int64): "I64"}
INPUT = (1, 28, 28)


def save_safetensors(path, tensors):
    """name -> ndarray, as safetensors.numpy.save_file writes them."""
    header, blobs, off = {}, [], 0
    for name, a in tensors.items():
        a = np.array(a, order="C")  # (ascontiguousarray would make a 0-d array 1-d)
        b = a.astype(a.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": NP2ST[a.dtype], "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def parse(layers):
    """The layer string as (section, index, kind, args) in module order."""
    out, sec, idx = [], "features", 0
    for tok in layers.split(","):
        if tok == "flatten":
            sec, idx = "classifier", 0
            continue
        out.append((sec, idx, tok))
        idx += 1
    return out


def conv_args(tok):
    """conv<out>x<k>[s<s>][p<p>][g<g>][n] -> out, k, stride, pad, groups, bias."""
    body = tok[4:]
    out, rest = body.split("x", 1)
    num = ""
    while rest and rest[0].isdigit():
        num += rest[0]
        rest = rest[1:]
    k = int(num)
    s, p, g, bias = 1, k // 2, 1, True
    while rest:
        c, rest = rest[0], rest[1:]
        if c == "n" and not rest:
            bias = False
            continue
        num = ""
        while rest and rest[0].isdigit():
            num += rest[0]
            rest = rest[1:]
        s, p, g = (int(num), p, g) if c == "s" else (s, int(num), g) if c == "p" else (s, p, int(num))
    return int(out), k, s, p, g, bias


def pool_args(tok):
    body = tok[7:]
    num = ""
    while body and body[0].isdigit():
        num += body[0]
        body = body[1:]
    k = int(num)
    s, p = k, 0
    while body:
        c, body = body[0], body[1:]
        num = ""
        while body and body[0].isdigit():
            num += body[0]
            body = body[1:]
        if c == "s":
            s = int(num)
        else:
            p = int(num)
    return k, s, p


def conv2d(x, w, b, stride, pad, groups):
    n, cin, h, wd = x.shape
    cout, cg, kh, kw = w.shape
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    ho = (h + 2 * pad - kh) // stride + 1
    wo = (wd + 2 * pad - kw) // stride + 1
    y = np.zeros((n, cout, ho, wo))
    og = cout // groups
    for g in range(groups):
        xs = xp[:, g * cg:(g + 1) * cg]
        # cols[n, c, i, j, oh, ow] = xs[n, c, oh*stride + i, ow*stride + j]
        cols = np.empty((n, cg, kh, kw, ho, wo))
        for i in range(kh):
            for j in range(kw):
                cols[:, :, i, j] = xs[:, :, i:i + stride * ho:stride, j:j + stride * wo:stride]
        y[:, g * og:(g + 1) * og] = np.einsum("ncijhw,ocij->nohw", cols, w[g * og:(g + 1) * og].astype(np.float64))
    if b is not None:
        y += b.astype(np.float64)[None, :, None, None]
    return y


def pool(x, k, s, p, mode):
    n, c, h, w = x.shape
    fill = -np.inf if mode == "max" else 0.0
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)), constant_values=fill)
    ho, wo = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    win = np.stack([xp[:, :, i:i + s * ho:s, j:j + s * wo:s] for i in range(k) for j in range(k)])
    return win.max(0) if mode == "max" else win.sum(0) / (k * k)  # count_include_pad


def forward(params, layers, x):
    x = x.reshape((-1,) + INPUT).astype(np.float64)
    for sec, i, tok in parse(layers):
        pre = "%s.%d." % (sec, i)
        if sec == "classifier" and x.ndim == 4:
            x = x.reshape(x.shape[0], -1)
        if tok.startswith("conv"):
            _, _, s, p, g, bias = conv_args(tok)
            x = conv2d(x, params[pre + "weight"], params.get(pre + "bias") if bias else None, s, p, g)
        elif tok == "bn":
            sh = (1, -1, 1, 1) if x.ndim == 4 else (1, -1)
            m, v = params[pre + "running_mean"].reshape(sh), params[pre + "running_var"].reshape(sh)
            x = (x - m) / np.sqrt(v.astype(np.float64) + 1e-5) * params[pre + "weight"].reshape(sh) \
                + params[pre + "bias"].reshape(sh)
        elif tok == "relu":
            x = np.maximum(x, 0)
        elif tok.startswith("maxpool") or tok.startswith("avgpool"):
            x = pool(x, *pool_args(tok), tok[:3])
        elif tok == "gap":
            x = x.mean(axis=(2, 3), keepdims=True)
        elif tok.startswith("fc"):
            x = x @ params[pre + "weight"].T.astype(np.float64) + params[pre + "bias"]
        elif tok.startswith("dropout"):
            pass  # eval
        else:
            raise ValueError(tok)
    return x


def state_dict(layers, rng):
    """Random parameters of the right shapes, as PyTorch would save them."""
    sd, shape = {}, INPUT
    for sec, i, tok in parse(layers):
        pre = "%s.%d." % (sec, i)
        if sec == "classifier" and len(shape) == 3:
            shape = (shape[0] * shape[1] * shape[2],)
        if tok.startswith("conv"):
            out, k, s, p, g, bias = conv_args(tok)
            sd[pre + "weight"] = rng.uniform(-0.4, 0.4, (out, shape[0] // g, k, k)).astype(np.float32)
            if bias:
                sd[pre + "bias"] = rng.uniform(-0.2, 0.2, out).astype(np.float32)
            shape = (out, (shape[1] + 2 * p - k) // s + 1, (shape[2] + 2 * p - k) // s + 1)
        elif tok == "bn":
            c = shape[0]
            sd[pre + "weight"] = rng.uniform(0.5, 1.5, c).astype(np.float32)
            sd[pre + "bias"] = rng.uniform(-0.3, 0.3, c).astype(np.float32)
            sd[pre + "running_mean"] = rng.uniform(-0.5, 0.5, c).astype(np.float32)
            sd[pre + "running_var"] = rng.uniform(0.5, 2.0, c).astype(np.float32)
            sd[pre + "num_batches_tracked"] = np.array(17, dtype=np.int64)
        elif tok.startswith("maxpool") or tok.startswith("avgpool"):
            k, s, p = pool_args(tok)
            shape = (shape[0], (shape[1] + 2 * p - k) // s + 1, (shape[2] + 2 * p - k) // s + 1)
        elif tok == "gap":
            shape = (shape[0], 1, 1)
        elif tok.startswith("fc"):
            out = int(tok[2:])
            b = 1 / np.sqrt(shape[0])
            sd[pre + "weight"] = rng.uniform(-b, b, (out, shape[0])).astype(np.float32)
            sd[pre + "bias"] = rng.uniform(-b, b, out).astype(np.float32)
            shape = (out,)
    return sd


def main():
    mode, d, layers = sys.argv[1:4]
    if mode == "gen":
        rng = np.random.default_rng(7)
        save_safetensors(d + "/pt.safetensors", state_dict(layers, rng))
        save_safetensors(d + "/x.safetensors", {"x": rng.uniform(0, 1, (6,) + INPUT).astype(np.float32)})
        return
    ckpt, logits = sys.argv[4:6]
    t, meta = load_safetensors(ckpt)
    params = {k: v for k, v in t.items() if not k.startswith("optim.")}
    want = set(state_dict(layers, np.random.default_rng(0)))
    check(set(params) == want, "%s: the state_dict names of the PyTorch module (%d)" % (ckpt.rsplit("/", 1)[-1],
                                                                                     len(params)))
    nbt = [k for k in params if k.endswith("num_batches_tracked")]
    check(all(params[k].dtype == np.int64 and params[k].shape == () for k in nbt),
          "num_batches_tracked: i64 scalars (%s)" % ", ".join("%s=%d" % (k, int(params[k])) for k in nbt))
    x, _ = load_safetensors(d + "/x.safetensors")
    ref, _ = load_safetensors(logits)
    got = forward(params, layers, x["x"])
    r = ref["logits"]
    err = float(np.max(np.abs(got - r) / np.maximum(1, np.abs(r))))
    check(got.shape == r.shape and err < 1e-4, "numpy logits match retort's for %d inputs (max error %.2e)"
          % (r.shape[0], err))
    print("numpy_cnn: %d passed, %d failed" % (numpy_interop.passed, numpy_interop.failed))
    sys.exit(1 if numpy_interop.failed else 0)


if __name__ == "__main__":
    main()
