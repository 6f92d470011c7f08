-- test_report_runs.lua: reporting across runs.  `retort report DIR...`
-- draws one page with a section and a colour per run; `retort compare`
-- names runs by recipe and model, warns when they were measured on
-- different data or against different teachers, and leaves out empty
-- columns; `retort info` prints control characters escaped.
local T = dofile("tests/lua/t.lua")
local rt = require "retort"

local build = os.getenv("RETORT_TEST_BUILD") or "build"
local retort = build .. "/bin/retort"

local function run_cmd(cmd)
  local f = io.popen(cmd .. " 2>&1")
  local out = f:read("a")
  local ok = f:close()
  return out, ok
end

local function q(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

-- Two small "experiments", each a teacher and a distilled student; b's
-- eval data is smaller and its teacher another.
local dir = T.tmpdir()
local train = rt.data.fashion_mnist("train", { limit = 400 })
local function experiment(name, eval_limit, teacher_seed)
  local test = rt.data.fashion_mnist("test", { limit = eval_limit })
  local out = dir .. "/" .. name
  rt.fit{ student = rt.student("mlp", { sizes = { 784, 24, 10 }, seed = teacher_seed }), data = train, eval = test,
          epochs = 1, batch = 50, out = out .. "/teacher", quiet = true, name = "teacher" }
  local teacher = rt.teacher("model", { checkpoint = out .. "/teacher/last.safetensors" })
  rt.distill{ teacher = teacher, student = rt.student("mlp", { sizes = { 784, 12, 10 }, seed = 2 }), data = train,
              eval = test, epochs = 1, batch = 50, loss = { { rt.loss("kd"), 0.9 }, { rt.loss("ce"), 0.1 } },
              out = out .. "/kd", quiet = true, name = "kd" }
end
experiment("a", 300, 1)
experiment("b", 200, 3)
-- c: a copy of a's student, measured as a's
os.execute(("cp -r %s %s"):format(q(dir .. "/a/kd"), q(dir .. "/c_kd")))

T.test("report DIR...: one page, a section and a colour per run, names told apart", function()
  local page = dir .. "/all.html"
  local out, ok = run_cmd(("%s report %s %s %s --out %s"):format(retort, q(dir .. "/a/kd"), q(dir .. "/b/kd"),
    q(dir .. "/a/teacher"), q(page)))
  T.check(ok and out:find(page, 1, true), "report prints the page's path: " .. out)
  local html = rt.util.read_file(page) or ""
  local sections = {}
  for id in html:gmatch('<section class="run" id="(run%-%d+)"') do sections[#sections + 1] = id end
  T.check(#sections == 3, "three run sections, got " .. #sections)
  -- each model's colour, from its row in the results table
  local colours, names = {}, {}
  for c, name in html:gmatch('<td class="l"><span class="dot" style="background:(#%x+)"></span>([^<]*)</td>') do
    colours[#colours + 1], names[#names + 1] = c, name
  end
  T.check(#colours == 3, "three rows in the results table, got " .. #colours)
  T.check(colours[1] ~= colours[2] and colours[2] ~= colours[3] and colours[1] ~= colours[3],
    "three colours: " .. table.concat(colours, " "))
  -- both students are named kd: the folder tells them apart
  T.check(names[1] == "a/kd" and names[2] == "b/kd" and names[3] == "teacher", "names: " .. table.concat(names, ", "))
  for _, id in ipairs{ "loss-a-kd", "loss-b-kd", "confusion-a-kd", "confusion-b-kd", "accuracy" } do
    T.check(html:find('id="chart-' .. id .. '"', 1, true), "chart " .. id)
  end
  T.check(html:find("evaluated on different data", 1, true) and html:find('class="callout warning"', 1, true),
    "the page warns that the eval data differ")
  -- several folders need a page of their own; one folder writes into it
  out, ok = run_cmd(("cd %s && %s/%s report a/kd b/kd"):format(q(dir), q(os.getenv("PWD")), retort))
  T.check(ok and rt.exists(dir .. "/report.html"), "several folders: ./report.html: " .. out)
  T.raises(function() rt.report({ dir .. "/a/kd", dir .. "/b/kd" }) end, "need an output path")
end)

T.test("compare: no warning for runs measured alike", function()
  local out, ok = run_cmd(("%s compare %s %s"):format(retort, q(dir .. "/a/kd"), q(dir .. "/c_kd")))
  T.check(ok and not out:find("warning", 1, true), "no warning: " .. out)
end)

T.test("compare: warns about different eval data and teachers, naming recipe and model", function()
  local out, ok = run_cmd(("%s compare %s %s"):format(retort, q(dir .. "/a/kd"), q(dir .. "/b/kd")))
  T.check(ok, "compare exits 0: " .. out)
  T.check(out:find("warning: the runs were evaluated on different data", 1, true), "data warning: " .. out)
  T.check(out:find("warning: agreement, KL and JS were measured against different teachers", 1, true),
    "teacher warning: " .. out)
  -- each run named by recipe/run name and model, with its data and teacher
  T.check(out:find("test_report_runs/kd (mlp 784-12-10) in " .. dir .. "/a/kd: fashion-mnist/test, 300 samples", 1,
    true), "run a named with its data: " .. out)
  T.check(out:find("test_report_runs/kd (mlp 784-12-10) in " .. dir .. "/b/kd: fashion-mnist/test, 200 samples", 1,
    true), "run b named with its data")
  T.check(out:find(dir .. "/b/teacher/last.safetensors (sha256 " .. rt.sha256_file(dir .. "/b/teacher/last.safetensors")
    :sub(1, 12), 1, true), "run b's teacher named by path and hash")
  -- a teacher trained on labels alone has no teacher to disagree about
  out = run_cmd(("%s compare %s %s"):format(retort, q(dir .. "/a/kd"), q(dir .. "/a/teacher")))
  T.check(not out:find("warning", 1, true), "a's student and teacher share data: " .. out)
end)

T.test("compare and report leave out columns no run has", function()
  local out, ok = run_cmd(("%s compare %s %s --markdown"):format(retort, q(dir .. "/a/kd"), q(dir .. "/a/teacher")))
  T.check(ok and out:match("| run +| +recipe +| +model +| +data +| +acc %%"), "headers: " .. out)
  T.check(out:find("mlp 784-12-10", 1, true) and out:find("mlp 784-24-10", 1, true), "models named by plugin and sizes")
  for _, h in ipairs{ "p50 us", "p95 us", "runs", "speed-up", "compress" } do
    T.check(not out:find("| " .. h, 1, true) and not out:find(h .. " |", 1, true), "no empty column " .. h)
  end
  T.check(out:find("agree %", 1, true), "a column with one value is kept")
  local html = rt.util.read_file(dir .. "/all.html") or ""
  local head = html:match("<thead>(.-)</thead>") or ""
  T.check(head:find(" acc", 1, true) and head:find("agreement", 1, true), "report keeps filled columns")
  T.check(not head:find("p50", 1, true) and not head:find("speed-up", 1, true), "report drops empty columns: " .. head)
end)

T.test("util.printable: control characters escaped, text kept", function()
  local p = rt.util.printable
  T.check(p("a\27[31mb") == "a\\x1B[31mb", p("a\27[31mb"))
  T.check(p("x\ny\tz\r") == "x\\ny\\tz\\r", "named escapes")
  T.check(p("\127") == "\\x7F" and p("\0") == "\\x00", "DEL and NUL")
  T.check(p("\194\155[2J") == "\\u{9B}[2J", "C1 CSI: " .. p("\194\155[2J"))
  T.check(p("\255") == "\\xFF" and p("\226\130") == "\\xE2\\x82", "bytes that are not UTF-8")
  T.check(p("Größe 日本 784-128-10") == "Größe 日本 784-128-10", "printable UTF-8 kept")
  T.check(p(12) == "12", "numbers")
end)

T.test("info escapes control characters in tensor names and metadata", function()
  local path = dir .. "/ctl.safetensors"
  local esc = "\27]0;pwned\7\27[2J"
  rt.save(path, { { "w" .. esc, rt.tensor({ 1, 2 }) } }, { ["k" .. esc] = "v" .. esc .. "\n", provenance =
    rt.json_encode{ seed = esc, recipe = { path = "r" .. esc, sha256 = esc } } })
  local out, ok = run_cmd(retort .. " info " .. q(path))
  T.check(ok, "info runs: " .. out)
  T.check(not out:find("[\0-\9\11-\31\127]"), "no control character but newline in the output: " .. out)
  T.check(out:find("w\\x1B]0;pwned\\x07\\x1B[2J", 1, true), "the tensor name, escaped: " .. out)
  T.check(out:find("k\\x1B]0;pwned", 1, true) and out:find("v\\x1B]0;pwned\\x07\\x1B[2J\\n", 1, true),
    "metadata key and value escaped")
  T.check(out:find("recipe   r\\x1B]0;pwned", 1, true) and out:find("seed     \\x1B]0;pwned", 1, true),
    "provenance escaped")
end)

T.test("report: a run's samples.json is shown as generated text, escaped", function()
  local run = dir .. "/c_kd"
  local page = dir .. "/samples.html"
  local out0 = run_cmd(("%s report %s --out %s"):format(retort, q(run), q(page)))
  T.check(not (rt.util.read_file(page) or ""):find("Generated samples", 1, true), "no samples.json: no section: " .. out0)
  rt.write_atomic(run .. "/samples.json", rt.json_encode{ { prompt = "Q: ", text = "Q: <script>alert(1)</script>\nA & B",
    settings = "temperature 0.8" } })
  local out, ok = run_cmd(("%s report %s --out %s"):format(retort, q(run), q(page)))
  local html = rt.util.read_file(page) or ""
  T.check(ok, "report: " .. out)
  T.check(html:find("<h2>Generated samples</h2>", 1, true), "a samples section")
  T.check(html:find("<pre>Q: &lt;script&gt;alert(1)&lt;/script&gt;\nA &amp; B</pre>", 1, true), "the text, escaped")
  T.check(not html:find("<script>alert", 1, true), "no markup from the file")
  T.check(html:find("temperature 0.8", 1, true), "the sampling settings")
end)

os.execute("rm -rf " .. q(dir))
T.done("test_report_runs.lua")
