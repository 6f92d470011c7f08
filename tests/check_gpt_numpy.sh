#!/usr/bin/env bash
# check_gpt_numpy.sh -- a gpt checkpoint is a nanoGPT state_dict: retort
# trains a small gpt for a few steps on a text file (so no parameter keeps
# its initial value), saves it, and writes its logits for a few token
# sequences; tests/numpy_gpt.py reads the checkpoint without retort, runs
# the forward written from plugins/students/gpt.c's description in numpy,
# and must match.  Python with numpy missing is a failure (make deps-test).
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
RETORT=$BUILD/bin/retort
PY=${PYTHON:-/usr/bin/python3}
passed=0; failed=0
ok()   { passed=$((passed + 1)); echo "ok   $*"; }
bad()  { failed=$((failed + 1)); echo "FAIL $*"; }
tmp=$(mktemp -d)
finish() { echo "check_gpt_numpy: $passed passed, $failed failed"; rm -rf "$tmp"; [ "$failed" = 0 ]; exit $?; }

if ! "$PY" -c "import numpy" 2>/dev/null; then
    bad "$PY with numpy is not installed (make deps-test installs python3-numpy)"
    finish
fi
for i in $(seq 1 60); do echo "Line $i: the quick brown fox jumps over the lazy dog."; done >"$tmp/text.txt"
cat >"$tmp/run.lua" <<'EOF2'
local rt = require "retort"
local dir = arg[1]
local train = rt.data.text{ path = dir .. "/text.txt", context = 10, windows = 64, seed = 1 }
local s = rt.student("gpt", { width = 16, heads = 4, layers = 2, context = 10, seed = 7 })
rt.fit{ student = s, data = train, epochs = 2, batch = 16, out = dir .. "/run", quiet = true,
        optimizer = rt.optim.adam{ lr = 0.01 } }
local ids = train:x():narrow(1, 1, 3)
rt.save(dir .. "/logits.safetensors", { { "ids", ids:clone() }, { "logits", s:forward(ids, false):clone() } }, {})
EOF2
if ! "$RETORT" run "$tmp/run.lua" "$tmp" >"$tmp/log" 2>&1; then
    bad "retort failed: $(tail -n 3 "$tmp/log")"; finish
fi
if "$PY" tests/numpy_gpt.py "$tmp/run/last.safetensors" "$tmp/logits.safetensors" >"$tmp/py" 2>&1
then ok "numpy forward of last.safetensors: $(grep '^ok' "$tmp/py")"
else bad "numpy disagrees:"; sed 's/^/    /' "$tmp/py" | tail -n 8; fi
finish
