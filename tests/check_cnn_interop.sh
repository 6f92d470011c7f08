#!/usr/bin/env bash
# check_cnn_interop.sh -- the cnn student and PyTorch's state_dict, both ways.
#
# 1. tests/numpy_cnn.py writes a checkpoint as PyTorch's save_file would
#    (the nn.Sequential names of docs/pytorch.md, batch-norm running
#    statistics away from 0 and 1, num_batches_tracked i64 scalars, no
#    metadata) and an input; retort loads it into the `model` teacher
#    (arch cnn) and writes its logits; numpy's forward must match them.
# 2. retort trains the same cnn one epoch on 600 Fashion-MNIST images (train
#    mode: batch statistics, running statistics updated, dropout); numpy
#    reads last.safetensors and best.safetensors and must compute the
#    logits retort computes with them.
# Python with numpy missing is a failure, as in check_pytorch_interop.sh.
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
RETORT=$BUILD/bin/retort
PY=${PYTHON:-/usr/bin/python3}
LAYERS="conv8x3,bn,relu,maxpool2,conv12x3s2p1g2,bn,relu,avgpool3s1p1,conv6x1n,gap,flatten,fc16,bn,relu,dropout0.2,fc10"
passed=0; failed=0
ok()   { passed=$((passed + 1)); echo "ok   $*"; }
bad()  { failed=$((failed + 1)); echo "FAIL $*"; }
tmp=$(mktemp -d)
finish() { echo "check_cnn_interop: $passed passed, $failed failed"; rm -rf "$tmp"; [ "$failed" = 0 ]; exit $?; }

if ! "$PY" -c "import numpy" 2>/dev/null; then
    bad "$PY with numpy is not installed (make deps-test installs python3-numpy)"
    finish
fi
if ! "$PY" tests/numpy_cnn.py gen "$tmp" "$LAYERS" 2>"$tmp/gen.log"; then
    bad "numpy_cnn.py gen: $(tail -n 3 "$tmp/gen.log")"; finish
fi

cat >"$tmp/run.lua" <<'EOF'
local rt = require "retort"
local dir, layers, mode = arg[1], arg[2], arg[3]
local x = rt.load(dir .. "/x.safetensors").x
local opts = { layers = layers }
if mode == "load" then
  -- a PyTorch file: no metadata, so the architecture is named
  local t = rt.teacher("model", { checkpoint = dir .. "/pt.safetensors", arch = "cnn", options = opts })
  rt.save(dir .. "/pt_logits.safetensors", { { "logits", t:forward(x):clone() } }, {})
else
  local train = rt.data.fashion_mnist("train", { limit = 600 })
  local test = rt.data.fashion_mnist("test", { limit = 200 })
  opts.seed = 5
  local s = rt.student("cnn", opts)
  rt.fit{ student = s, data = train, eval = test, epochs = 1, batch = 50, out = dir .. "/run", quiet = true }
  rt.save(dir .. "/last_logits.safetensors", { { "logits", s:forward(x, false):clone() } }, {})
  local best = rt.teacher("model", { checkpoint = dir .. "/run/best.safetensors" })
  rt.save(dir .. "/best_logits.safetensors", { { "logits", best:forward(x):clone() } }, {})
end
EOF
if "$RETORT" run "$tmp/run.lua" "$tmp" "$LAYERS" load 2>"$tmp/load.log"; then
    if "$PY" tests/numpy_cnn.py check "$tmp" "$LAYERS" "$tmp/pt.safetensors" "$tmp/pt_logits.safetensors" >"$tmp/a.out" 2>&1
    then ok "a PyTorch-named file loads into retort: $(grep -o 'max error [^)]*' "$tmp/a.out")"
    else bad "PyTorch file in retort:"; sed 's/^/    /' "$tmp/a.out" | tail -n 6; fi
else
    bad "retort could not load the PyTorch file: $(tail -n 3 "$tmp/load.log")"
fi
if "$RETORT" run "$tmp/run.lua" "$tmp" "$LAYERS" train 2>"$tmp/train.log"; then
    for w in last best; do
        if "$PY" tests/numpy_cnn.py check "$tmp" "$LAYERS" "$tmp/run/$w.safetensors" "$tmp/${w}_logits.safetensors" \
            >"$tmp/$w.out" 2>&1
        then ok "retort's $w.safetensors in numpy: $(grep -o 'max error [^)]*' "$tmp/$w.out"); $(grep -o 'features.1.num_batches_tracked=[0-9]*' "$tmp/$w.out")"
        else bad "retort's $w.safetensors in numpy:"; sed 's/^/    /' "$tmp/$w.out" | tail -n 6; fi
    done
else
    bad "retort training failed: $(tail -n 3 "$tmp/train.log")"
fi
finish
