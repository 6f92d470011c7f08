"""numpy_interop.py -- retort checkpoints read without retort.

Used by tests/check_pytorch_interop.sh, with Debian's python3-numpy only
(no PyTorch, no safetensors package): a plain safetensors parser, the
Fashion-MNIST IDX test images scaled as retort scales them (uint8 / 255),
and the forward of retort's mlp student written the way docs/pytorch.md's
nn.Module computes it.

    numpy_interop.py RUN_DIR LOGITS.safetensors ACTIVATION IMAGES.gz N

RUN_DIR holds best.safetensors and last.safetensors; LOGITS.safetensors
(written by retort) holds "last" and "best", the logits retort computed
for the first N test images with each checkpoint.  Prints one line per
check, "ok ..." or "FAIL ...", then "numpy_interop: N passed, N failed";
exits 1 on any failure.
"""
import gzip
import json
import math
import struct
import sys

import numpy as np

DTYPES = {"F32": np.float32, "I32": np.int32, "F64": np.float64, "I64": np.int64}
passed = failed = 0


def check(cond, msg):
    global passed, failed
    if cond:
        passed += 1
        print("ok   " + msg)
    else:
        failed += 1
        print("FAIL " + msg)
    return cond


def load_safetensors(path):
    """-> (tensors: name -> ndarray, metadata: dict).  The format: an
    8-byte little-endian header length, a JSON header mapping each name to
    dtype, shape and [begin, end) byte offsets into the data that follows,
    and an optional "__metadata__" string map."""
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    data = raw[8 + n:]
    meta = header.pop("__metadata__", {})
    out = {}
    end_max = 0
    for name, h in header.items():
        dt = np.dtype(DTYPES[h["dtype"]]).newbyteorder("<")
        b, e = h["data_offsets"]
        count = int(np.prod(h["shape"])) if h["shape"] else 1
        if e - b != count * dt.itemsize:
            raise ValueError("%s: %s: offsets do not match the shape" % (path, name))
        out[name] = np.frombuffer(data, dtype=dt, count=count, offset=b).reshape(h["shape"])
        end_max = max(end_max, e)
    if end_max != len(data):
        raise ValueError("%s: data is %d bytes, the header covers %d" % (path, len(data), end_max))
    return out, meta


def idx_images(path, n):
    """The first n images of an IDX3 file (gzip), as retort loads them:
    float32, each byte / 255, flattened to [n, rows * cols]."""
    with gzip.open(path, "rb") as f:
        magic, count, rows, cols = struct.unpack(">IIII", f.read(16))
        assert magic == 0x803, "not an IDX3 image file"
        buf = f.read(n * rows * cols)
    x = np.frombuffer(buf, dtype=np.uint8).reshape(n, rows * cols)
    return x.astype(np.float32) * np.float32(1 / 255)


def act(name, x):
    if name == "relu":
        return np.maximum(x, 0)
    if name == "tanh":
        return np.tanh(x)
    if name == "gelu":  # PyTorch's GELU(approximate="tanh")
        return 0.5 * x * (1 + np.tanh(np.float32(math.sqrt(2 / math.pi)) * (x + np.float32(0.044715) * x ** 3)))
    raise ValueError(name)


def mlp_forward(params, x, activation):
    """layers.i.weight [out, in], layers.i.bias [out]: y = x W^T + b, the
    activation after every layer but the last (dropout is off in eval)."""
    n = sum(1 for k in params if k.startswith("layers.") and k.endswith(".weight"))
    for i in range(n):
        x = x @ params["layers.%d.weight" % i].T + params["layers.%d.bias" % i]
        if i < n - 1:
            x = act(activation, x)
    return x


def main():
    run, logits_path, activation, images, n = sys.argv[1:6]
    n = int(n)
    x = idx_images(images, n)
    want, _ = load_safetensors(logits_path)
    for which in ("best", "last"):
        t, meta = load_safetensors("%s/%s.safetensors" % (run, which))
        params = {k: v for k, v in t.items() if not k.startswith("optim.")}
        optim = [k for k in t if k.startswith("optim.")]
        if which == "best":
            check(not optim, "best.safetensors holds weights only (%d tensors)" % len(t))
        else:  # Adam's moments under PyTorch's names, one pair per parameter
            want_optim = {"optim.%s.%s" % (p, s) for p in params for s in ("exp_avg", "exp_avg_sq")}
            check(set(optim) == want_optim, "last.safetensors holds the optimizer state too: %d optim.* tensors"
                  % len(optim))
            check(int(meta.get("run.optim_steps", "0")) > 0, "last.safetensors: run.optim_steps %s"
                  % meta.get("run.optim_steps"))
        names = sorted(params)
        check(all(k.startswith("layers.") for k in names), "%s: PyTorch state_dict names %s" % (which, names))
        check(meta.get("retort.plugin") == "mlp" and json.loads(meta["retort.options"])["activation"] == activation,
              "%s: metadata names the student: %s %s" % (which, meta.get("retort.plugin"), meta.get("retort.options")))
        got = mlp_forward(params, x, activation)
        ref = want[which]
        err = float(np.max(np.abs(got - ref) / np.maximum(1, np.abs(ref))))
        check(got.shape == ref.shape and err < 1e-4,
              "%s: numpy logits match retort's for %d images (max error %.2e)" % (which, n, err))
    print("numpy_interop: %d passed, %d failed" % (passed, failed))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
