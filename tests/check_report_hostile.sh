#!/usr/bin/env bash
# check_report_hostile.sh -- the report never executes what a run folder
# holds.  A run folder and a summary folder are written by hand with
# markup in every string field (names, keys, paths, licences, loss-term
# names, class names, hashes, the folder's own name): `"><script>alert(1)`,
# an <img onerror>, quotes of both kinds and `javascript:`.  retort report
# draws them (one page each, and one page of both: warnings, run sections).
#
# Each page is then loaded in headless Chromium with two added scripts
# (this test's): the first, at the top of <head>, turns alert() into a
# counter (a real alert would hang headless Chromium); the last counts, once
# the page has loaded, the <script> elements other than the two, the
# elements carrying an on* attribute, the attributes whose value starts with
# javascript:, the alerts, and the marker the payload's script would set.
# All must be 0.
# Control: the same page with one escaped payload turned back into markup
# (what a missing escape gives) must be caught.
#
# Chromium missing is a failure, not a skip (see check_report.sh).
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
RETORT=$BUILD/bin/retort
passed=0; failed=0
ok()   { passed=$((passed + 1)); echo "ok   $*"; }
bad()  { failed=$((failed + 1)); echo "FAIL $*"; }
finish() { echo "check_report_hostile: $passed passed, $failed failed"; [ -n "${KEEP_TMP:-}" ] || rm -rf "$tmp"; [ "$failed" = 0 ]; exit $?; }

tmp=$(mktemp -d)
CHROMIUM=$(command -v chromium || command -v chromium-browser || true)
if [ -z "$CHROMIUM" ]; then
    bad "chromium is not installed (make deps-test installs it)"
    finish
fi
CR=("$CHROMIUM" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run
    --disable-background-networking --disable-component-update --disable-sync
    --disable-default-apps --mute-audio "--host-resolver-rules=MAP * ~NOTFOUND"
    --force-device-scale-factor=1 --hide-scrollbars)
browse() { timeout 120 "${CR[@]}" --user-data-dir="$(mktemp -d -p "$tmp")" "$@" 2>>"$tmp/chromium.log"; }

# 1. the hostile folders.  The folder names carry markup too (no '/').
cat >"$tmp/make.lua" <<'EOF'
local rt = require "retort"
local root = arg[1]
local P = [["><script>window.pwned=1;alert(1)</script><img src=x onerror="window.pwned=1">']]
local Q = [[' onmouseover='window.pwned=1' x="]]
local J = [[javascript:window.pwned=1]]
local function h(i) return ("%s %s %d"):format(P, Q, i) end
local function write(path, v) rt.write_atomic(path, rt.json_encode(v) .. "\n") end
local hash = P .. ("a"):rep(64)
local function data(i)
  return { name = h(i), license = P, origin = Q, samples = 4,
           files = { { path = J, sha256 = hash }, { path = h(i + 1), sha256 = P } } }
end
local function prov(i)
  return { plugin = P, version = Q, abi = J, options = { [P] = Q, checkpoint = h(i), sizes = { 784, 16, 10 } },
           checkpoint = h(i), sha256 = hash .. i }
end
local eval = { accuracy = 0.5, top5 = 1, agreement = 0.75, kl = 0.1, js = 0.02, ece = 0.05, samples = 4,
               confusion = { { 1, 1 }, { 0, 2 } }, per_class = { 0.5, 1 },
               bins = { { count = 2, confidence = 0.6, accuracy = 0.5 }, { count = 2, confidence = 0.9, accuracy = 1 } },
               [P] = Q }
local function run(dir, i)
  rt.mkdir(dir)
  write(dir .. "/manifest.json", {
    format = P, name = h(i), status = Q, started = P, finished = Q, seed = P, [P] = { [Q] = J },
    recipe = { path = h(i) .. ".lua", sha256 = hash, arguments = { P, Q, J } },
    retort = { version = P, abi = Q }, blas = { core = P, threads = Q },
    student = prov(i), teacher = prov(i + 1), eval_teacher = prov(i + 2),
    losses = { { name = P, plugin = Q, weight = J, options = { [Q] = P } } },
    data = { train = data(i), eval = data(i + 3) },
    checkpoints = { last = P, best = Q, best_selected_on = J }, result = eval })
  local f = io.open(dir .. "/metrics.jsonl", "w")
  for s = 0, 3 do
    f:write(rt.json_encode{ event = "step", epoch = 1, step = s, loss = 1 / (s + 1), terms = { [P] = 1 / (s + 1), [Q] = 0.5 } }, "\n")
  end
  for e = 1, 2 do
    f:write(rt.json_encode{ event = "epoch", epoch = e, step = 4 * e, test = { accuracy = 0.4 + e / 10, agreement = 0.5 } }, "\n")
  end
  f:close()
  write(dir .. "/eval.json", eval)
end
local single = root .. "/" .. [[run"'><script>alert(1)<img src=x onerror=alert(1)>]]
run(single, 1)
local sum = root .. "/sum"
run(sum .. "/" .. [[t"><script>alert(2)]], 10)
run(sum .. "/" .. [[s'><img src=x onerror=alert(2)>]], 20)
local lat = { p50_ms = 0.02, p95_ms = 0.03, mean_ms = 0.02, runs = 20, warmup = 2, throughput = 1e5, batch = 4,
              batch_runs = 3, threads = P, blas = Q }
write(sum .. "/summary.json", {
  format = P, title = h(30), note = Q, created = J, teacher = h(31), classes = { P, Q },
  eval_data = data(32), eval_teacher = prov(33),
  models = {
    { name = h(31), role = "teacher", run = [[t"><script>alert(2)]], eval = eval, latency = lat,
      size = { params = 100, flops = 200, disk_bytes = 400, file = P } },
    { name = h(34), role = P, run = [[s'><img src=x onerror=alert(2)>]], eval = eval, latency = lat,
      size = { params = 10, flops = 20, disk_bytes = 40, file = Q }, speedup = 2, compression = 10 },
  } })
print(single)
EOF
single=$("$RETORT" run "$tmp/make.lua" "$tmp")
[ -d "$single" ] || { bad "could not write the hostile folders: $single"; finish; }
pages=()
if "$RETORT" report "$single" >"$tmp/r1.log" 2>&1; then pages+=("$single/report.html"); ok "report of a hostile run folder"
else bad "report of a hostile run folder failed: $(tail -n 3 "$tmp/r1.log")"; fi
if "$RETORT" report "$tmp/sum" >"$tmp/r2.log" 2>&1; then pages+=("$tmp/sum/report.html"); ok "report of a hostile summary folder"
else bad "report of a hostile summary folder failed: $(tail -n 3 "$tmp/r2.log")"; fi
if "$RETORT" report "$single" "$tmp/sum" --out "$tmp/both.html" >"$tmp/r3.log" 2>&1; then pages+=("$tmp/both.html")
    ok "one report of both"
else bad "report of both failed: $(tail -n 3 "$tmp/r3.log")"; fi
grep -q 'class="callout warning"' "$tmp/both.html" 2>/dev/null && ok "the page of both warns (different data)" ||
    bad "the page of both has no warning"

# 2. in Chromium: what the page's DOM holds once loaded
cat >"$tmp/probe.js" <<'EOF'
<script id="rt-probe">
var bad = 0, detail = [];
document.querySelectorAll("script").forEach(function (s) {
  if (s.id !== "rt-probe" && s.id !== "rt-probe-head") { bad++; detail.push("script"); } });
document.querySelectorAll("*").forEach(function (e) {
  for (var i = 0; i < e.attributes.length; i++) {
    var a = e.attributes[i];
    if (/^on/i.test(a.name)) { bad++; detail.push(e.tagName + "@" + a.name); }
    if (/^\s*javascript:/i.test(a.value)) { bad++; detail.push(e.tagName + "@" + a.name + "=js"); }
  } });
if (window.pwned) { bad++; detail.push("payload ran"); }
if (window.rtAlerts) { bad++; detail.push(window.rtAlerts + " alert(s)"); }
var out = document.createElement("pre");
out.id = "rt-probe-out";
out.textContent = "found " + bad + " " + detail.slice(0, 5).join(",");
document.body.appendChild(out);
</script>
EOF
probe() { # page -> "found N ..."
    sed -e 's|<head>|<head><script id="rt-probe-head">window.rtAlerts = 0; window.alert = function () { window.rtAlerts++; };</script>|' \
        -e "/<\/body>/{r $tmp/probe.js" -e "}" "$1" | sed 's|</body>||' >"$tmp/probe.html"
    printf '</body></html>\n' >>"$tmp/probe.html"
    browse --window-size=1280,1000 --dump-dom "file://$tmp/probe.html" | sed -n 's:.*<pre id="rt-probe-out">\([^<]*\)</pre>.*:\1:p'
}
for page in "${pages[@]}"; do
    name=$(basename "$(dirname "$page")")/$(basename "$page")
    if grep -qi '<script' "$page"; then bad "$name: the HTML has a <script>"; else ok "$name: no <script> in the HTML"; fi
    ids=$(grep -o ' id="[^"]*"' "$page" | grep -vE '^ id="[A-Za-z0-9_.-]+"$' | head -n 3)
    if [ -z "$ids" ]; then ok "$name: every id is made of [A-Za-z0-9_.-] ($(grep -o ' id="' "$page" | wc -l) ids)"
    else bad "$name: ids with other characters: $ids"; fi
    got=$(probe "$page")
    if [ "$got" = "found 0 " ]; then ok "$name: in Chromium no script element, no on* handler, no javascript: URL"
    else bad "$name: in Chromium: '${got:-no answer}'"; fi
done

# 3. control: one payload in the body left unescaped is caught (in <title>
#    markup is only text)
perl -0pe 's/(<body>.*?)&quot;&gt;&lt;script&gt;(.*?)&lt;\/script&gt;/$1"><script>$2<\/script>/s' "$tmp/both.html" \
    >"$tmp/control.html"
got=$(probe "$tmp/control.html")
case "$got" in
    "found 0 "|"") bad "control: an unescaped payload was not caught ('$got')" ;;
    *) ok "control: an unescaped payload is caught ($got)" ;;
esac

[ -n "${SHOT:-}" ] && browse --window-size=1280,2400 --screenshot="$SHOT" "file://$tmp/both.html" >/dev/null
finish
