#!/usr/bin/env bash
# check_kit.sh -- the plugin author's kit builds where it is run:
#  - the build folder's retort.pc points at headers that exist;
#  - examples/custom_loss builds with that retort.pc, and RETORT_INCLUDE
#    wins over pkg-config;
#  - `retort new loss` from the build: the "next:" line it prints, run as
#    printed with no retort on PATH and no pkg-config path, builds the
#    plugin and its test recipe trains;
#  - `make install PREFIX=DIR` as a user other than root (nobody, through
#    setpriv, when this runs as root) succeeds with nothing about ldconfig
#    on stderr; the installed retort.pc points at the installed headers;
#    and `retort new loss` from the install works as printed for that user.
# RETORT_TEST_BUILD (or BUILD) names the build folder; default "build".
# KEEP=1 keeps the temporary folder (its logs) for a look after a failure.
set -u
build=${RETORT_TEST_BUILD:-${BUILD:-build}}
cd "$(dirname "$0")/.."
root=$PWD
B=$(cd "$build" && pwd)
passed=0; failed=0
ok() { echo "ok   $1"; passed=$((passed + 1)); }
fail() { # name, then files or text to show
    echo "FAIL $1"; shift
    for x in "$@"; do if [ -f "$x" ]; then tail -n 30 "$x"; else echo "$x"; fi; done | sed 's/^/    /'
    failed=$((failed + 1))
}
tmp=$(mktemp -d)
trap '[ -n "${KEEP:-}" ] || rm -rf "$tmp"' EXIT
chmod 755 "$tmp"
clean_env=(env -i PATH=/usr/bin:/bin HOME="$tmp" LANG=C)

# 1. retort.pc in the build folder
cflags=$(PKG_CONFIG_PATH=$B/lib/pkgconfig pkg-config --cflags retort 2>&1)
inc=${cflags#-I}; inc=${inc%% *}
if [ -f "$inc/rt_plugin.h" ] && [ -f "$inc/retort.h" ]; then ok "build retort.pc: $cflags has the headers"
else fail "build retort.pc: '$cflags' names no folder with rt_plugin.h"; fi

# 2. the example's Makefile: retort.pc of the build, and RETORT_INCLUDE first
cp -r examples/custom_loss "$tmp/ex"
rm -f "$tmp"/ex/*.so
if PKG_CONFIG_PATH=$B/lib/pkgconfig make -C "$tmp/ex" >"$tmp/ex.log" 2>&1 && [ -f "$tmp/ex/cosine_logits.so" ]
then ok "examples/custom_loss builds with the build's retort.pc"
else fail "examples/custom_loss with the build's retort.pc" "$tmp/ex.log"; fi
mkdir -p "$tmp/fakepc"
printf '%s\n' 'Name: retort' 'Description: elsewhere' 'Version: 0' 'Cflags: -I/nonexistent/retort' >"$tmp/fakepc/retort.pc"
make -C "$tmp/ex" clean >/dev/null 2>&1
if PKG_CONFIG_PATH=$tmp/fakepc make -C "$tmp/ex" RETORT_INCLUDE="$B/include/retort" >"$tmp/ex2.log" 2>&1 &&
    [ -f "$tmp/ex/margin_rank.so" ]
then ok "examples/custom_loss: RETORT_INCLUDE wins over pkg-config"
else fail "examples/custom_loss: RETORT_INCLUDE given, pkg-config elsewhere" "$tmp/ex2.log"; fi

# Runs `retort new loss NAME --dir DIR` (as "$@" before it), then the
# printed next step in a clean environment; checks the recipe's "NAME: ok".
new_and_follow() { # label, retort, name, dir, runner...
    local label=$1 retort=$2 name=$3 dir=$4; shift 4
    local out next
    if ! out=$("$@" "$retort" new loss "$name" --dir "$dir" 2>&1); then fail "$label: retort new" "$out"; return; fi
    next=$(sed -n 's/^next: *//p' <<<"$out")
    if [ -z "$next" ]; then fail "$label: no 'next:' line" "$out"; return; fi
    if "$@" "${clean_env[@]}" sh -c "$next" >"$tmp/$name.log" 2>&1 && grep -q "^$name: ok" "$tmp/$name.log"
    then ok "$label: '$next' works as printed"
    else fail "$label: '$next'" "$tmp/$name.log"; fi
}

# 3. from the source tree's build
new_and_follow "retort new loss (source tree)" "$B/bin/retort" kit_src "$tmp" env

# 4. make install to a private prefix as a user other than root
run_as=(env)
if [ "$(id -u)" = 0 ]; then
    run_as=(setpriv --reuid=nobody --regid=nogroup --clear-groups --)
    mkdir -p "$tmp/prefix" "$tmp/work"
    chown nobody:nogroup "$tmp/prefix" "$tmp/work"
else
    mkdir -p "$tmp/prefix" "$tmp/work"
fi
# From a copy of the tree with its build (timestamps kept, so nothing is
# rebuilt): that user may not be able to read this checkout (/root/...).
san=(); [ "$(basename "$B")" = build-san ] && san=(SAN=1)
mkdir -p "$tmp/src"
cp -a Makefile core plugins scripts examples "$tmp/src/"
cp -a "$B" "$tmp/src/$(basename "$B")"
if "${run_as[@]}" env -u MAKEFLAGS -u MAKELEVEL -u MFLAGS make --no-print-directory -C "$tmp/src" install \
        BUILD="$(basename "$B")" "${san[@]}" PREFIX="$tmp/prefix" >"$tmp/install.out" 2>"$tmp/install.err"; then
    if grep -qi "ldconfig\|error" "$tmp/install.err"
    then fail "make install as $("${run_as[@]}" id -un): stderr mentions ldconfig or an error" "$tmp/install.err"
    else ok "make install PREFIX=<private> as $("${run_as[@]}" id -un): exit 0, no ldconfig error"; fi
else
    fail "make install PREFIX=<private> as $("${run_as[@]}" id -un)" "$tmp/install.out" "$tmp/install.err"
fi
cflags=$(PKG_CONFIG_PATH=$tmp/prefix/lib/pkgconfig pkg-config --cflags retort 2>&1)
inc=${cflags#-I}; inc=${inc%% *}
if [ "$inc" = "$tmp/prefix/include/retort" ] && [ -f "$inc/rt_plugin.h" ]; then ok "installed retort.pc: $cflags"
else fail "installed retort.pc: '$cflags'"; fi
new_and_follow "retort new loss (install, as $("${run_as[@]}" id -un))" "$tmp/prefix/bin/retort" kit_inst \
    "$tmp/work" "${run_as[@]}"

echo "check_kit: $passed passed, $failed failed"
[ "$failed" = 0 ]
