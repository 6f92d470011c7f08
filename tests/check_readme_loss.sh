#!/usr/bin/env bash
# check_readme_loss.sh -- the README's ABI 2.0 loss, in its words alone:
# the C block after the "readme-loss" marker, built against the build's
# installed-style headers (build/include/retort) with -Werror and -z defs,
# passes `retort gradcheck` (its feature gradient included), and trains in
# rt.distill with a student and a teacher feature routed by the run.
# RETORT_TEST_BUILD (or BUILD) names the build folder; default "build".
set -u
build=${RETORT_TEST_BUILD:-${BUILD:-build}}
cd "$(dirname "$0")/.."
B=$(cd "$build" && pwd)
passed=0; failed=0
ok() { echo "ok   $1"; passed=$((passed + 1)); }
fail() { echo "FAIL $1"; [ -f "${2:-}" ] && sed 's/^/    /' "$2"; failed=$((failed + 1)); }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
chmod 755 "$tmp"

awk '/<!-- readme-loss/ {on = 1; next} on && /^```c/ {inb = 1; next} inb && /^```/ {exit} inb {print}' \
    README.md > "$tmp/hint_mse.c"
if [ -s "$tmp/hint_mse.c" ] &&
   cc -std=c11 -O2 -Wall -Wextra -Werror -fPIC -shared -I"$B/include/retort" -o "$tmp/hint_mse.so" \
      "$tmp/hint_mse.c" -lm -Wl,-z,defs > "$tmp/cc.log" 2>&1; then
    ok "the README's loss builds against the kit headers alone"
else
    fail "the README's loss builds against the kit headers alone" "$tmp/cc.log"
fi
if RETORT_PLUGIN_PATH="$tmp" "$B/bin/retort" gradcheck hint_mse > "$tmp/gc.log" 2>&1 &&
   grep -q "feature layers.0" "$tmp/gc.log" && grep -q "PASS" "$tmp/gc.log"; then
    ok "the README's loss passes gradcheck, feature gradient included"
else
    fail "the README's loss passes gradcheck, feature gradient included" "$tmp/gc.log"
fi
cat > "$tmp/run.lua" <<'LUA'
local rt = require "retort"
rt.load_plugin(arg[1])
math.randomseed(3)
local rows, ys = {}, {}
for i = 1, 64 do
  local r = {}
  for j = 1, 6 do r[j] = 2 * math.random() - 1 end
  rows[i], ys[i] = r, i % 3
end
local ds = rt.dataset(rt.tensor(rows), rt.tensor(ys, "i32"))
local teacher = rt.teacher("model", { arch = "mlp", options = { sizes = { 6, 8, 3 }, seed = 9 }, random_init = true })
local student = rt.student("mlp", { sizes = { 6, 8, 3 }, seed = 2 })
local hint = rt.loss("hint_mse")
local first, last
rt.distill{ teacher = teacher, student = student, data = ds, loss = { { hint, 1 } }, epochs = 8, batch = 16,
            quiet = true, optimizer = rt.optim.sgd{ lr = 0.2 },
            on_epoch = function(row) first = first or row.train.hint_mse; last = row.train.hint_mse end }
print(("hint_mse %.6f -> %.6f"):format(first or -1, last or -1))
assert(first and last and last < 0.5 * first, "the hint did not go down")
LUA
if "$B/bin/retort" run "$tmp/run.lua" "$tmp/hint_mse.so" > "$tmp/run.log" 2>&1; then
    ok "the README's loss trains the student's feature towards the teacher's ($(tail -n 1 "$tmp/run.log"))"
else
    fail "the README's loss trains the student's feature towards the teacher's" "$tmp/run.log"
fi
echo "check_readme_loss.sh: $passed passed, $failed failed"
[ "$failed" = 0 ]
