#!/usr/bin/env bash
# Runs every test suite of a build and prints one closing line,
# "N passed, N failed".  BUILD names the build folder (build, build-san).
# Suites: tests/c/test_*.c binaries, tests/lua/test_*.lua under the retort
# command, and the shell checks (tests/check_*.sh).  Each prints its own
# "<suite>: N passed, N failed"; a suite that crashes counts as one failure.
set -u
BUILD=${BUILD:-build}
export RETORT_TEST_BUILD=$BUILD
cd "$(dirname "$0")/.."
passed=0; failed=0; bad_suites=()

tally() { # suite-name, output file, exit code
    local line p f
    line=$(grep -E '^[^ ]*:? ?[0-9]+ passed, [0-9]+ failed' "$2" | tail -n 1)
    if [ -z "$line" ]; then
        echo "$1: no summary (exit $3)"; failed=$((failed + 1)); bad_suites+=("$1"); return
    fi
    p=$(sed -E 's/.* ([0-9]+) passed.*/\1/' <<<"$line")
    f=$(sed -E 's/.* ([0-9]+) failed.*/\1/' <<<"$line")
    if [ "$3" != 0 ] && [ "$f" = 0 ]; then f=1; fi
    passed=$((passed + p)); failed=$((failed + f))
    [ "$f" = 0 ] || bad_suites+=("$1")
    echo "$line"
}

run_suite() { # name, command...
    local name=$1; shift
    local out; out=$(mktemp)
    "$@" >"$out" 2>&1; local rc=$?
    if [ "$rc" != 0 ]; then sed 's/^/    /' "$out" | tail -n 40; fi
    tally "$name" "$out" "$rc"
    rm -f "$out"
}

for t in "$BUILD"/tests/test_*; do
    [ -x "$t" ] || continue
    run_suite "$(basename "$t")" "$t"
done
for t in tests/lua/test_*.lua; do
    [ -f "$t" ] || continue
    run_suite "$(basename "$t")" "$BUILD/bin/retort" run "$t"
done
for t in tests/check_*.sh; do
    [ -f "$t" ] || continue
    run_suite "$(basename "$t")" bash "$t"
done

[ ${#bad_suites[@]} = 0 ] || echo "failing suites: ${bad_suites[*]}"
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
