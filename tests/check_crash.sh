#!/usr/bin/env bash
# Crash consistency (docs/reliability.md): kill -9 a training run at random
# moments, then resume it.  Pass: every checkpoint left behind loads (none
# is torn), and the resumed run ends with parameters bit-identical to a run
# that was never interrupted; its folder then holds no temp file (each kill
# also leaves one, as a kill in mid-write would: the next start removes it)
# and its metrics.jsonl no torn line and no step or epoch twice
# (tests/crash/check_folder.lua).  Prints "N passed, N failed".
set -u
BUILD=${RETORT_TEST_BUILD:-build}
cd "$(dirname "$0")/.."
RETORT=$BUILD/bin/retort
KILLS=${CRASH_KILLS:-8}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
passed=0; failed=0
ok() { passed=$((passed + 1)); }
bad() { failed=$((failed + 1)); echo "FAIL: $*"; }

printf 'local rt = require "retort"\nrt.load(arg[1])\n' > "$dir/load.lua"
start=$(date +%s%N)
"$RETORT" run tests/crash/recipe.lua "$dir/ref" || { echo "reference run failed"; echo "0 passed, 1 failed"; exit 1; }
ms=$(( ($(date +%s%N) - start) / 1000000 ))
ref=$(sha256sum "$dir/ref/final.safetensors" | cut -d' ' -f1)
echo "reference run: ${ms} ms"

for k in $(seq 1 "$KILLS"); do
    run="$dir/run$k"
    # one to three kills at random moments, each followed by a resume
    for kill in 1 2 3; do
        [ -f "$run/final.safetensors" ] && break
        "$RETORT" run tests/crash/recipe.lua "$run" >/dev/null 2>&1 &
        pid=$!
        sleep "$(awk -v r=$RANDOM -v ms="$ms" 'BEGIN { printf "%.3f", (r / 32768) * ms / 1000 }')"
        kill -9 "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
        # what a kill in the middle of an atomic write leaves behind
        [ -d "$run" ] && echo torn > "$run/last.safetensors.tmp.$pid"
        if [ -f "$run/last.safetensors" ]; then
            if "$RETORT" run "$dir/load.lua" "$run/last.safetensors" >/dev/null 2>&1; then ok
            else bad "run $k kill $kill: last.safetensors does not load"; fi
        fi
    done
    if "$RETORT" run tests/crash/recipe.lua "$run" >/dev/null 2>"$dir/err"; then
        got=$(sha256sum "$run/final.safetensors" | cut -d' ' -f1)
        if [ "$got" = "$ref" ]; then ok; else bad "run $k: resumed parameters differ from the uninterrupted run"; fi
        if "$RETORT" run tests/crash/check_folder.lua "$run" 12 >"$dir/check" 2>&1; then ok
        else bad "run $k: the folder is not whole after kills and resumes: $(head -n 5 "$dir/check")"; fi
    else
        bad "run $k: resume failed: $(tail -n 3 "$dir/err")"
    fi
done
echo "check_crash: $passed passed, $failed failed"
[ "$failed" = 0 ]
