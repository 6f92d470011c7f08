#!/usr/bin/env bash
# check_pytorch_interop.sh -- a retort checkpoint is read without retort.
#
# For each student activation (relu, gelu, tanh), retort trains a small
# MLP (784-32-16-10, dropout on) for two epochs, then writes the logits it
# computes for the first test images with the last weights and with
# best.safetensors.  tests/numpy_interop.py (Debian's python3 + numpy: no
# PyTorch, no safetensors package) parses both checkpoints with a plain
# safetensors reader, loads the same images from the IDX file scaled as
# docs/pytorch.md says, runs the forward docs/pytorch.md's nn.Module
# computes, and must match retort's logits.
#
# Python missing is a failure, not a skip: `make test` installs
# python3-numpy.  `make demo` does not need it.
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
RETORT=$BUILD/bin/retort
PY=${PYTHON:-/usr/bin/python3}
N=64
passed=0; failed=0
ok()   { passed=$((passed + 1)); echo "ok   $*"; }
bad()  { failed=$((failed + 1)); echo "FAIL $*"; }
tmp=$(mktemp -d)
finish() { echo "check_pytorch_interop: $passed passed, $failed failed"; rm -rf "$tmp"; [ "$failed" = 0 ]; exit $?; }

if ! "$PY" -c "import numpy" 2>/dev/null; then
    bad "$PY with numpy is not installed (make deps-test installs python3-numpy)"
    finish
fi

cat >"$tmp/train.lua" <<'EOF'
local rt = require "retort"
local out, act, n = arg[1], arg[2], tonumber(arg[3])
local train = rt.data.fashion_mnist("train", { limit = 600 })
local test = rt.data.fashion_mnist("test", { limit = n })
local s = rt.student("mlp", { sizes = { 784, 32, 16, 10 }, activation = act, dropout = 0.1, seed = 3 })
rt.fit{ student = s, data = train, eval = test, epochs = 2, batch = 50, out = out, quiet = true }
local best = rt.teacher("model", { checkpoint = out .. "/best.safetensors" })
-- the logits of the weights in memory (= last.safetensors) and of best
rt.save(out .. "/logits.safetensors", { { "last", s:forward(test:x(), false):clone() },
                                        { "best", best:forward(test:x()):clone() } }, {})
print(rt.data.fashion_mnist_dir .. "/t10k-images-idx3-ubyte.gz")
EOF
for act in relu gelu tanh; do
    if ! images=$("$RETORT" run "$tmp/train.lua" "$tmp/$act" "$act" "$N" 2>"$tmp/$act.log"); then
        bad "$act: retort failed: $(tail -n 3 "$tmp/$act.log")"; continue
    fi
    if "$PY" tests/numpy_interop.py "$tmp/$act" "$tmp/$act/logits.safetensors" "$act" "$images" "$N" >"$tmp/$act.py" 2>&1
    then ok "$act: $(grep -c '^ok' "$tmp/$act.py") checks in numpy ($(grep -o 'max error [^)]*' "$tmp/$act.py" | paste -sd ' '))"
    else bad "$act: numpy disagrees:"; sed 's/^/    /' "$tmp/$act.py" | grep -v '^    ok' | tail -n 8; fi
done
finish
