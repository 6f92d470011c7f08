#!/usr/bin/env bash
# check_plugins.sh -- plugins link nothing of the host (docs/abi.md):
# for every .so in the built-in plugin folder, `nm -D --undefined-only` must
# show no symbol of the retort core (rt_*), Lua (lua_*, luaL_*, luaopen_*),
# BLAS (cblas_*, openblas*, sgemm*), cJSON or zlib.  Everything a plugin
# needs arrives through the rt_api table.  One test per plugin; prints
# "N passed, N failed" and exits non-zero on any failure.
# RETORT_TEST_BUILD (or BUILD) names the build folder; default "build".
set -u
build=${RETORT_TEST_BUILD:-${BUILD:-build}}
cd "$(dirname "$0")/.."
dir=$build/lib/retort/plugins
forbidden='^(rt_|lua_|luaL_|luaopen_|cblas_|openblas|sgemm|cJSON|deflate|inflate|gz|zlib|compress|uncompress|crc32|adler32)'
passed=0; failed=0
shopt -s nullglob
plugins=("$dir"/*.so)
if [ ${#plugins[@]} = 0 ]; then
    echo "check_plugins: no plugins in $dir"
    echo "0 passed, 1 failed"
    exit 1
fi
for so in "${plugins[@]}"; do
    # nm prints "U name" or "U name@VERSION"; keep the bare name.
    if ! undef=$(nm -D --undefined-only "$so" 2>&1); then
        echo "FAIL $so: nm: $undef"; failed=$((failed + 1)); continue
    fi
    bad=$(awk '{print $NF}' <<<"$undef" | sed 's/@.*//' | grep -E "$forbidden" | tr '\n' ' ')
    if [ -n "$bad" ]; then
        echo "FAIL $(basename "$so"): links host symbols: $bad"
        failed=$((failed + 1))
    else
        echo "ok   $(basename "$so")"
        passed=$((passed + 1))
    fi
done
echo "check_plugins: $passed passed, $failed failed"
[ "$failed" = 0 ]
