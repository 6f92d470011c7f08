#!/usr/bin/env bash
# check_report.sh -- report.html in a real browser (Debian's chromium,
# headless): every chart draws marks, and the page makes no network request.
#
# 1. The demo recipe runs on a Fashion-MNIST subset (a few seconds) and
#    writes its report, as `make demo` does.
# 2. Static: the HTML has no <script>, and no src/href/url()/@import that
#    points off the page (http:, https:, ftp:, ws:, or protocol-relative //).
# 3. Layout: a copy of the page with one added script (this test's, not the
#    report's) measures every chart's box, then appends the figures to the
#    end of the body, where --dump-dom prints them.  The same window size gives the original the same layout.
# 4. Marks: a screenshot of the original; inside each chart's box, the
#    coloured pixels (tests/png_marks.c) must number >= MIN_MARKS.  The
#    report draws data in colour and axes, grid and text in grey, so an empty
#    chart scores 0.  Control: the page with its data hidden
#    (.marks{display:none}) must score 0 in every box, or the check could
#    not tell a chart from its frame.
# 5. Network: the screenshot run records Chromium's NetLog; a request the
#    page starts carries an initiator (the file:// origin, "null"), one the
#    browser starts for itself (component updates, time sync) carries "not
#    an origin".  The page must start none.  Control: a page with an <img>
#    from http://example.invalid must be caught.  --host-resolver-rules maps
#    every host to NOTFOUND, so nothing leaves the machine either way.
#
# Chromium missing is a failure, not a skip: CI installs it (.ci/run, make
# deps), and a skipped acceptance check would read as a pass.
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
RETORT=$BUILD/bin/retort
PNG_MARKS=$BUILD/tests/png_marks
MIN_MARKS=100
passed=0; failed=0
ok()   { passed=$((passed + 1)); echo "ok   $*"; }
bad()  { failed=$((failed + 1)); echo "FAIL $*"; }
finish() { echo "check_report: $passed passed, $failed failed"; [ -n "${KEEP_TMP:-}" ] || rm -rf "$tmp"; [ "$failed" = 0 ]; exit $?; }

tmp=$(mktemp -d)
CHROMIUM=$(command -v chromium || command -v chromium-browser || true)
if [ -z "$CHROMIUM" ]; then
    bad "chromium is not installed (make deps installs it)"
    finish
fi
[ -x "$PNG_MARKS" ] || { bad "$PNG_MARKS not built (make check builds it)"; finish; }

# Flags: no sandbox (CI runs as root), no GPU, no first-run or background
# traffic, every host unresolvable, 1 CSS px = 1 screenshot px.
CR=("$CHROMIUM" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run
    --disable-background-networking --disable-component-update --disable-sync
    --disable-default-apps --mute-audio "--host-resolver-rules=MAP * ~NOTFOUND"
    --force-device-scale-factor=1 --hide-scrollbars)
browse() { timeout 120 "${CR[@]}" --user-data-dir="$(mktemp -d -p "$tmp")" "$@" 2>>"$tmp/chromium.log"; }

# 1. a small demo run and its report
if RETORT_QUIET=1 "$RETORT" run scripts/recipes/fashion_mnist.lua --limit 2000 --epochs 2 --teacher-epochs 2 --cnn-epochs 1 --few-epochs 2 \
     --batch 32 --threads 1 --quiet --out "$tmp/run" >"$tmp/demo.log" 2>&1 && [ -s "$tmp/run/report.html" ]; then
    ok "the demo recipe writes report.html and prints its path"
    grep -q "^report: $tmp/run/report.html$" "$tmp/demo.log" || bad "the demo did not print the report's path"
else
    bad "the demo recipe failed:"; tail -n 20 "$tmp/demo.log"; finish
fi
page=$tmp/run/report.html

# 2. static: nothing in the HTML can fetch
if grep -qi '<script' "$page"; then bad "report.html contains a <script>"; else ok "no <script> in report.html"; fi
if grep -Eio '(src|href|action|poster|srcset)[[:space:]]*=[[:space:]]*["'\'']?[[:space:]]*(https?:|ftp:|wss?:|//)|url\([[:space:]]*["'\'']?[[:space:]]*(https?:|//)|@import' "$page" >"$tmp/urls"; then
    bad "report.html refers to outside resources: $(head -n 3 "$tmp/urls" | tr '\n' ' ')"
else
    ok "report.html refers to no outside resource"
fi

# 3. layout: chart boxes in CSS px (= screenshot px)
cat >"$tmp/measure.js" <<'EOF'
<script>
var out = document.createElement("pre");
out.id = "rt-layout";
out.textContent = document.documentElement.scrollHeight + ";" + Array.from(
  document.querySelectorAll("figure.chart")).map(function (f) {
    var r = f.querySelector("svg").getBoundingClientRect();
    return [f.id, Math.round(r.left), Math.round(r.top + window.scrollY), Math.round(r.width),
            Math.round(r.height)].join(",");
  }).join(";");
document.body.appendChild(out);
</script>
EOF
sed -e "/<\/body>/{r $tmp/measure.js" -e "}" "$page" | sed 's|</body>||' >"$tmp/measure.html"
printf '</body></html>\n' >>"$tmp/measure.html"
layout=$(browse --window-size=1280,1000 --dump-dom "file://$tmp/measure.html" | sed -n 's:.*<pre id="rt-layout">\([^<]*\)</pre>.*:\1:p')
height=${layout%%;*}
boxes=${layout#*;}
nboxes=$(tr ';' '\n' <<<"$boxes" | grep -c .)
if [[ "$height" =~ ^[0-9]+$ ]] && [ "$nboxes" -ge 12 ]; then
    ok "layout measured: $nboxes charts on a page $height px tall"
else
    bad "could not measure the layout (got '$layout')"; finish
fi

# 4. marks in every chart
browse --window-size=1280,"$height" --log-net-log="$tmp/net.json" --screenshot="$tmp/report.png" "file://$page" \
    >/dev/null
[ -s "$tmp/report.png" ] || { bad "no screenshot"; finish; }
args=(); ids=()
while IFS=, read -r id x y w h; do ids+=("$id"); args+=("$x" "$y" "$w" "$h"); done < <(tr ';' '\n' <<<"$boxes")
mapfile -t counts < <("$PNG_MARKS" "$tmp/report.png" "${args[@]}" | awk '{print $5}')
empty=0
for i in "${!ids[@]}"; do
    if [ "${counts[$i]:-0}" -lt "$MIN_MARKS" ]; then bad "chart ${ids[$i]} has ${counts[$i]:-no} coloured pixels"; empty=1; fi
done
[ "$empty" = 0 ] && ok "every chart has marks (${counts[*]} coloured pixels)"

sed 's|</style>|.marks{display:none}</style>|' "$page" >"$tmp/nomarks.html"
browse --window-size=1280,"$height" --screenshot="$tmp/nomarks.png" "file://$tmp/nomarks.html" >/dev/null
mapfile -t zero < <("$PNG_MARKS" "$tmp/nomarks.png" "${args[@]}" | awk '{print $5}')
nonzero=$(printf '%s\n' "${zero[@]}" | awk '$1 > 0' | wc -l)
if [ "${#zero[@]}" = "${#ids[@]}" ] && [ "$nonzero" = 0 ]; then
    ok "control: with the data hidden every chart counts 0 coloured pixels"
else
    bad "control: with the data hidden the charts count ${zero[*]} (frames, axes or legends are coloured)"
fi

# 5. no network request from the page
cat >"$tmp/netlog.lua" <<'EOF'
-- prints each request a page started (initiator is an origin), then the count
local rt = require "retort"
local text = assert(rt.util.read_file(arg[1]))
local ok, log = pcall(rt.json_decode, text)
if not ok then print("unreadable netlog") os.exit(2) end
local start = log.constants.logEventTypes.URL_REQUEST_START_JOB
local n = 0
for _, e in ipairs(log.events or {}) do
  local p = e.params
  -- a START_JOB's begin event has the url; its end event only net_error
  if e.type == start and p and p.url and p.initiator ~= "not an origin" then
    n = n + 1
    print("request " .. tostring(p.url))
  end
end
print("page requests: " .. n)
EOF
page_requests() { "$RETORT" run "$tmp/netlog.lua" "$1" | sed -n 's/^page requests: //p'; }
n=$(page_requests "$tmp/net.json")
if [ "$n" = 0 ]; then ok "the report made no network request (NetLog)"; else
    bad "the report made ${n:-?} network request(s):"; "$RETORT" run "$tmp/netlog.lua" "$tmp/net.json" | head -n 5; fi

printf '<!doctype html><html><body><img src="http://example.invalid/pixel.png"></body></html>\n' >"$tmp/fetch.html"
browse --window-size=400,300 --log-net-log="$tmp/net-control.json" --screenshot="$tmp/fetch.png" \
    "file://$tmp/fetch.html" >/dev/null
n=$(page_requests "$tmp/net-control.json")
if [ "${n:-0}" -ge 1 ]; then ok "control: a page that fetches an image is caught ($n request)"; else
    bad "control: the NetLog check missed a page's request"; fi

finish
