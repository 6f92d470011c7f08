#!/usr/bin/env bash
# check_layout.sh -- the source layout shows the architecture
# (docs/architecture.md).  Builds nothing: tests/run.sh runs it after the
# build, over the objects of $BUILD (default build).
#
# 1. No call cycle between object files.  A uses B when A has an undefined
#    symbol that B defines (nm); the check computes the strongly connected
#    components of that graph and fails on each one with more than one
#    object (A <-> B, or longer: A -> B -> C -> A), listing the arrows.
# 2. Arrows between the core's folders point down only.  The order it
#    enforces, lowest first:
#        core/base < core/kernels < core/io < core/data < core/train
#          < core/host < core/lua (the binding; gen/, its Lua library)
#    An object may use its own folder and those below it.  An object of
#    core/ that is in none of these folders fails too (move it into one).
# 3. No source file (core, plugins, scripts, tests/c) over 800 lines unless
#    one of its first 20 lines gives the reason: a line containing
#    "longer than 800 lines because".
# Objects whose source no longer exists (left in an old build tree by a
# move) are skipped.  Controls: a planted pair of objects that call each
# other, a planted upward arrow, and a planted long file must be caught by
# the same code.
set -u
BUILD=${BUILD:-build}
cd "$(dirname "$0")/.."
passed=0; failed=0
ok()  { passed=$((passed + 1)); echo "ok   $*"; }
bad() { failed=$((failed + 1)); echo "FAIL $*"; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
MAX_LINES=800

# The folder order, lowest first; gen/ (the embedded Lua library) is part
# of the binding.
LAYERS="core/base core/kernels core/io core/data core/train core/host core/lua"

# analyze ROOT OBJECT... -> one line per finding:
#   "cycle: A <-> B <-> C" then "    A -> B (symbol)" for its arrows
#   "upward: A -> B (symbol): FOLDER_A may not use FOLDER_B"
#   "no folder: A (core files belong in one of: ...)"
# Units are object paths relative to ROOT without ".o".
analyze() {
    local root=$1; shift
    [ $# -gt 0 ] || return 0
    nm -A -P "$@" 2>/dev/null | awk -v root="$root/" -v layers="$LAYERS" '
    function unit(f) { sub(/:$/, "", f); if (index(f, root) == 1) f = substr(f, length(root) + 1); sub(/\.o$/, "", f); return f }
    function layer(u,   i, best) {
        if (u ~ /^gen\//) return nl - 1;
        best = -1;
        for (i = 0; i < nl; i++) if (index(u, L[i] "/") == 1) best = i;
        return best
    }
    function strong(v,   i, w, n, k, m, j, t, comp) {
        idx[v] = low[v] = counter++; stack[++sp] = v; onst[v] = 1;
        for (i = 1; i <= nadj[v]; i++) {
            w = adj[v, i];
            if (!(w in idx)) { strong(w); if (low[w] < low[v]) low[v] = low[w] }
            else if (onst[w] && idx[w] < low[v]) low[v] = idx[w];
        }
        if (low[v] != idx[v]) return;
        n = 0;
        do { w = stack[sp--]; onst[w] = 0; m[++n] = w; incomp[w] = v } while (w != v);
        if (n < 2) return;
        for (i = 2; i <= n; i++) for (j = i; j > 1 && m[j] < m[j - 1]; j--) { t = m[j]; m[j] = m[j - 1]; m[j - 1] = t }
        comp = m[1]; for (i = 2; i <= n; i++) comp = comp " <-> " m[i];
        print "cycle: " comp;
        for (i = 1; i <= n; i++)
            for (k = 1; k <= nadj[m[i]]; k++)
                if (incomp[adj[m[i], k]] == v) print "    " m[i] " -> " adj[m[i], k] " (" why[m[i], adj[m[i], k]] ")";
    }
    BEGIN { nl = split(layers, tmpl, " "); for (i = 1; i <= nl; i++) L[i - 1] = tmpl[i] }
    {
        u = unit($1); units[u] = 1;
        if ($3 == "U" || $3 == "w") uses[++nu] = u SUBSEP $2;
        else if ($3 ~ /^[A-Z]$/ && !($2 in def)) def[$2] = u;
    }
    END {
        for (i = 1; i <= nu; i++) {
            split(uses[i], p, SUBSEP); a = p[1]; s = p[2];
            if (!(s in def) || def[s] == a) continue;
            b = def[s];
            if ((a, b) in why) continue;
            why[a, b] = s; adj[a, ++nadj[a]] = b;
        }
        for (u in units) if (u ~ /^core\// && layer(u) < 0) print "no folder: " u " (core files belong in one of: " layers ")";
        for (k in why) {
            split(k, p, SUBSEP); la = layer(p[1]); lb = layer(p[2]);
            if (la >= 0 && lb >= 0 && lb > la)
                print "upward: " p[1] " -> " p[2] " (" why[k] "): " L[la] " may not use " L[lb];
        }
        counter = 0; sp = 0;
        for (u in units) if (!(u in idx)) strong(u);
    }'
}

# The objects of the build whose source still exists.
objects() {
    find "$BUILD/obj" -name '*.o' 2>/dev/null | sort | while IFS= read -r o; do
        u=${o#"$BUILD"/obj/}; u=${u%.o}
        case $u in gen/*) echo "$o" ;; *) [ -f "$u.c" ] && echo "$o" ;; esac
    done
}

# Source files over MAX_LINES without a stated reason in their first 20.
long_files() { # file list on stdin
    while IFS= read -r f; do
        [ -f "$f" ] || continue
        n=$(wc -l <"$f")
        [ "$n" -gt "$MAX_LINES" ] || continue
        head -n 20 "$f" | grep -q "longer than $MAX_LINES lines because" && continue
        echo "$f: $n lines, and no \"longer than $MAX_LINES lines because\" in its first 20 lines"
    done
}

# ---- controls: the same code must catch planted faults.
CC=${CC:-cc}
mkdir -p "$tmp/obj/core/base" "$tmp/obj/core/host" "$tmp/obj/x"
printf 'int pb(void);\nint pa(void) { return pb() + 1; }\n' >"$tmp/a.c"
printf 'int pa(void);\nint pb(void) { return pa() + 2; }\n' >"$tmp/b.c"
printf 'int q2(void);\nint q1(void) { return q2(); }\n' >"$tmp/q1.c"
printf 'int q3(void);\nint q2(void) { return q3(); }\n' >"$tmp/q2.c"
printf 'int q1(void);\nint q3(void) { return q1(); }\n' >"$tmp/q3.c"
printf 'int pc(void);\nint pd(void) { return 3; }\nint pe(void) { return pc(); }\n' >"$tmp/d.c"
printf 'int pd(void);\nint pc(void) { return pd(); }\n' >"$tmp/c.c"
if $CC -c "$tmp/a.c" -o "$tmp/obj/x/a.o" && $CC -c "$tmp/b.c" -o "$tmp/obj/x/b.o" &&
    $CC -c "$tmp/q1.c" -o "$tmp/obj/x/q1.o" && $CC -c "$tmp/q2.c" -o "$tmp/obj/x/q2.o" &&
    $CC -c "$tmp/q3.c" -o "$tmp/obj/x/q3.o" &&
    $CC -c "$tmp/d.c" -o "$tmp/obj/core/base/d.o" && $CC -c "$tmp/c.c" -o "$tmp/obj/core/host/c.o"; then
    out=$(analyze "$tmp/obj" "$tmp/obj/x/a.o" "$tmp/obj/x/b.o")
    if grep -qx 'cycle: x/a <-> x/b' <<<"$out"; then ok "control: a planted cycle (x/a <-> x/b) is caught"
    else bad "control: a planted cycle x/a <-> x/b was not caught: $out"; fi
    out=$(analyze "$tmp/obj" "$tmp/obj/x/q1.o" "$tmp/obj/x/q2.o" "$tmp/obj/x/q3.o" "$tmp/obj/x/a.o")
    if grep -qx 'cycle: x/q1 <-> x/q2 <-> x/q3' <<<"$out" && [ "$(grep -c '^cycle' <<<"$out")" = 1 ]; then
        ok "control: a planted cycle of three (x/q1 -> x/q2 -> x/q3 -> x/q1) is caught, alone"
    else bad "control: the cycle x/q1 -> x/q2 -> x/q3 -> x/q1 was not caught alone: $out"; fi
    out=$(analyze "$tmp/obj" "$tmp/obj/core/base/d.o" "$tmp/obj/core/host/c.o")
    if grep -q '^upward: core/base/d -> core/host/c (pc)' <<<"$out"; then ok "control: a planted upward arrow (base -> host) is caught"
    else bad "control: a planted upward arrow core/base/d -> core/host/c was not caught: $out"; fi
else
    bad "control: $CC could not compile the planted objects"
fi
seq 1 $((MAX_LINES + 1)) >"$tmp/long.c"
{ echo "/* long.c is longer than $MAX_LINES lines because it is a control. */"; cat "$tmp/long.c"; } >"$tmp/long_ok.c"
out=$(printf '%s\n' "$tmp/long.c" "$tmp/long_ok.c" | long_files)
if grep -q "long\.c: $((MAX_LINES + 1)) lines" <<<"$out" && ! grep -q long_ok <<<"$out"; then
    ok "control: a planted long file is caught, one that states its reason is not"
else
    bad "control: the long-file check misjudged the planted files: $out"
fi

# ---- the build.
objects >"$tmp/objs"
if [ ! -s "$tmp/objs" ]; then
    bad "no objects under $BUILD/obj (build first: make all)"
else
    mapfile -t objs <"$tmp/objs"
    analyze "$BUILD/obj" "${objs[@]}" >"$tmp/found"
    echo "     ${#objs[@]} objects; folders, lowest first: $LAYERS"
    if grep -q '^cycle' "$tmp/found"; then bad "call cycles between objects:"; grep '^cycle\|^    ' "$tmp/found" | sed 's/^/     /'
    else ok "no call cycle between the ${#objs[@]} objects"; fi
    if grep -q '^upward' "$tmp/found"; then bad "arrows pointing up between core folders:"; grep '^upward' "$tmp/found" | sort | sed 's/^/     /'
    else ok "every arrow between core folders points down"; fi
    if grep -q '^no folder' "$tmp/found"; then bad "core objects outside the folders:"; grep '^no folder' "$tmp/found" | sort | sed 's/^/     /'
    else ok "every core object is in a folder"; fi
fi

if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git ls-files core plugins scripts tests/c
else
    find core plugins scripts tests/c -type f
fi | grep -E '\.(c|h|lua)$' | long_files >"$tmp/long"
if [ -s "$tmp/long" ]; then bad "source files over $MAX_LINES lines without a reason:"; sed 's/^/     /' "$tmp/long"
else ok "no source file over $MAX_LINES lines without a stated reason"; fi

echo "check_layout: $passed passed, $failed failed"
[ "$failed" = 0 ]
