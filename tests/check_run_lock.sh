#!/usr/bin/env bash
# One writer per run folder, and checked metrics writes (run_folder.lua,
# core/io/runfolder.c).  Two runs started at once into one folder: one
# refuses at once with a message naming the other's pid, the other
# completes and its folder is whole (tests/crash/check_folder.lua).  A full
# disk under metrics.jsonl (ENOSPC injected with strace on that file only):
# the run fails naming the file and the cause, the file holds whole lines
# only, and the next run into the folder works.  "N passed, N failed".
set -u
BUILD=${RETORT_TEST_BUILD:-build}
cd "$(dirname "$0")/.."
RETORT=$BUILD/bin/retort
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
dir=$(cd "$dir" && pwd -P) # strace -P matches the resolved path
passed=0; failed=0
check() { if eval "$2"; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "FAIL: $1"; fi; }

# run.lua OUT [GO]: 3 epochs into OUT.  With GO, the run, once it holds the
# folder, waits after its first epoch until the file GO exists (at most
# 60 s), so that the other run surely finds the folder taken.
cat > "$dir/run.lua" <<'LUA'
local rt = require "retort"
local out, go = arg[1], arg[2]
local train = rt.data.fashion_mnist("train", { limit = 600 })
rt.fit{ student = rt.student("mlp", { sizes = { 784, 16, 10 }, seed = 1 }), data = train, epochs = 3, batch = 50,
        out = out, quiet = true, log_every = 1, resume = true,
        on_epoch = function(row)
          if go and row.epoch == 1 then
            local t0 = rt.clock()
            while not rt.exists(go) and rt.clock() - t0 < 60 do os.execute("sleep 0.05") end
          end
        end }
LUA

# ------------------------------------------------ two runs at once
out="$dir/shared"
"$RETORT" run "$dir/run.lua" "$out" "$dir/go" >"$dir/a.log" 2>&1 & a=$!
"$RETORT" run "$dir/run.lua" "$out" "$dir/go" >"$dir/b.log" 2>&1 & b=$!
wait -n "$a" "$b"
touch "$dir/go"
wait "$a"; rc_a=$?
wait "$b"; rc_b=$?
if [ "$rc_a" = 0 ]; then win=$a; lose_log=$dir/b.log; else win=$b; lose_log=$dir/a.log; fi
check "exactly one of two runs at once refuses (exits $rc_a and $rc_b)" \
    '[ $((rc_a == 0)) != $((rc_b == 0)) ]'
check "the refusal names the folder and the holder's pid $win: $(head -c 300 "$lose_log")" \
    'grep -q "$out is in use by another run (pid $win holds $out/.lock)" "$lose_log"'
check "the other run completes and its folder is whole" \
    '"$RETORT" run tests/crash/check_folder.lua "$out" 3 >"$dir/check" 2>&1 || { cat "$dir/check"; false; }'
check "its manifest says finished" 'grep -q "\"status\":\"finished\"" "$out/manifest.json"'

# ------------------------------------------------ a full disk under metrics.jsonl
if ! command -v strace >/dev/null; then
    echo "strace is not installed (make deps-test installs it)"; failed=$((failed + 1))
else
    out="$dir/enospc"
    # the 5th write to metrics.jsonl fails; no other write does
    strace -f -o /dev/null -P "$out/metrics.jsonl" -e trace=write -e inject=write:error=ENOSPC:when=5 \
        "$RETORT" run "$dir/run.lua" "$out" >"$dir/enospc.log" 2>&1
    rc=$?
    check "ENOSPC on metrics.jsonl: the run fails" '[ $rc != 0 ]'
    check "ENOSPC on metrics.jsonl: the error names the file and the cause: $(tail -n 3 "$dir/enospc.log")" \
        'grep -q "metrics.jsonl: write at offset [0-9]*: No space left on device" "$dir/enospc.log"'
    check "ENOSPC on metrics.jsonl: 4 whole lines, none torn" \
        '[ "$(wc -l < "$out/metrics.jsonl")" = 4 ] && "$RETORT" run tests/crash/check_folder.lua "$out" >/dev/null 2>&1'
    check "after ENOSPC the next run into the folder completes whole" \
        '"$RETORT" run "$dir/run.lua" "$out" >/dev/null 2>&1 && "$RETORT" run tests/crash/check_folder.lua "$out" 3'
fi
echo "check_run_lock: $passed passed, $failed failed"
[ "$failed" = 0 ]
