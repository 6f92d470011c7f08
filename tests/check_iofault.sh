#!/usr/bin/env bash
# I/O faults in the checkpoint write (docs/reliability.md), injected with strace:
# ENOSPC on write, EIO on fsync, EIO on rename.  Pass: the run fails with an
# error naming the file, the previous checkpoint is byte-identical and
# still loads, and no temp file is left beside it.  "N passed, N failed".
set -u
BUILD=${RETORT_TEST_BUILD:-build}
cd "$(dirname "$0")/.."
RETORT=$BUILD/bin/retort
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
passed=0; failed=0
check() { if eval "$2"; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "FAIL: $1"; fi; }

if ! command -v strace >/dev/null; then
    echo "strace is not installed (make deps installs it)"; echo "check_iofault: 0 passed, 1 failed"; exit 1
fi
cat > "$dir/save.lua" <<'LUA'
-- save.lua PATH SEED: writes a student's parameters to PATH
local rt = require "retort"
local s = rt.student("mlp", { sizes = { 8, 6, 3 }, seed = tonumber(arg[2]) })
s:save(arg[1], { note = "seed " .. arg[2] })
LUA
printf 'local rt = require "retort"\nassert(rt.load(arg[1]))\n' > "$dir/load.lua"
ck="$dir/ck.safetensors"
"$RETORT" run "$dir/save.lua" "$ck" 1 || { echo "first save failed"; echo "check_iofault: 0 passed, 1 failed"; exit 1; }
good=$(sha256sum "$ck" | cut -d' ' -f1)

for fault in "write:error=ENOSPC" "fsync:error=EIO" "rename:error=EIO"; do
    name=${fault%%:*}
    strace -f -o /dev/null -e trace="${name}" -e inject="$fault" "$RETORT" run "$dir/save.lua" "$ck" 2 \
        >"$dir/out" 2>&1
    rc=$?
    check "$name fault: the run fails" '[ $rc != 0 ]'
    check "$name fault: the previous checkpoint is untouched" '[ "$(sha256sum "$ck" | cut -d" " -f1)" = "$good" ]'
    check "$name fault: it still loads" '"$RETORT" run "$dir/load.lua" "$ck" >/dev/null 2>&1'
    check "$name fault: no temp file left" '[ -z "$(ls "$dir" | grep tmp)" ]'
    if [ "$name" != write ]; then  # with write failing, stderr cannot carry the message
        check "$name fault: the error names the file and the call" \
            'grep -q "ck.safetensors" "$dir/out" && grep -qi "$name" "$dir/out"'
    fi
done
# and without a fault the same save replaces the file
"$RETORT" run "$dir/save.lua" "$ck" 2 >/dev/null 2>&1
check "no fault: the new checkpoint replaces the old" '[ "$(sha256sum "$ck" | cut -d" " -f1)" != "$good" ]'
echo "check_iofault: $passed passed, $failed failed"
[ "$failed" = 0 ]
