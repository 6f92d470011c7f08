-- test_run_folder.lua: what a run tells its user.  Metrics on hand-made
-- logits against hand-computed values; a small teacher -> student run whose
-- manifest hashes match the files and whose student checkpoint names its
-- teacher's sha256; the report, compare, info and eval commands.
local T = dofile("tests/lua/t.lua")
local rt = require "retort"

local build = os.getenv("RETORT_TEST_BUILD") or "build"
local retort = build .. "/bin/retort"

-- ------------------------------------------------------------- metrics

-- 4 rows, 3 classes; labels 2, 1, 0, 1.
local z = rt.tensor({ { 1, 2, 3 }, { 3, 2, 1 }, { 0, 0, 5 }, { 2, 2, 1 } })
local y = rt.tensor({ 2, 1, 0, 1 }, "i32")

T.test("top-k counts: ranks by hand, ties to the lower class as argmax", function()
  T.check(rt.count_topk(z, y, 1) == 1, "top-1 " .. rt.count_topk(z, y, 1))
  T.check(rt.count_topk(z, y, 1) == rt.count_correct(z, y), "top-1 equals count_correct")
  -- row 1: label 1 second; row 2: label 0 tied with 1, ahead of it; row 3:
  -- label 1 tied with class 0, which ranks first
  T.check(rt.count_topk(z, y, 2) == 4, "top-2 " .. rt.count_topk(z, y, 2))
  T.check(rt.count_topk(z, y, 3) == 4, "top-3")
  T.raises(function() rt.count_topk(z, rt.tensor({ 0, 1, 3, 1 }, "i32"), 1) end, "label 3", "not a class")
  T.raises(function() rt.count_topk(z, y, 0) end, "k must be")
end)

T.test("confusion matrix and per-class accuracy", function()
  local s = rt.class_stats(3)
  s:add(z, y)
  local r = s:result()
  -- argmax per row: 2, 0, 2, 0
  local want = { { 0, 0, 1 }, { 2, 0, 0 }, { 0, 0, 1 } }
  for i = 1, 3 do
    for j = 1, 3 do T.check(r.confusion[i][j] == want[i][j], ("cm[%d][%d] = %d"):format(i, j, r.confusion[i][j])) end
  end
  T.check(r.per_class[1] == 0 and r.per_class[2] == 0 and r.per_class[3] == 1, "per class")
  T.check(r.samples == 4, "samples")
  -- a bad label changes nothing
  T.raises(function() s:add(z, rt.tensor({ 0, 0, 0, 7 }, "i32")) end, "label 7")
  T.check(s:result().samples == 4 and s:result().confusion[1][3] == 1, "unchanged after an error")
end)

T.test("ECE over 15 bins against a hand computation", function()
  local s = rt.class_stats(3, 15)
  s:add(z, y)
  local r = s:result()
  -- confidence = max softmax; hand-computed per row
  local function conf(row)
    local m = math.max(table.unpack(row))
    local sum = 0
    for _, v in ipairs(row) do sum = sum + math.exp(v - m) end
    return 1 / sum
  end
  local rows = { { 1, 2, 3 }, { 3, 2, 1 }, { 0, 0, 5 }, { 2, 2, 1 } }
  local hit = { true, false, false, false }
  local bins = {}
  for i, row in ipairs(rows) do
    local p = conf(row)
    local b = math.ceil(p * 15)
    bins[b] = bins[b] or { n = 0, c = 0, a = 0 }
    bins[b].n, bins[b].c, bins[b].a = bins[b].n + 1, bins[b].c + p, bins[b].a + (hit[i] and 1 or 0)
  end
  local ece = 0
  for _, b in pairs(bins) do ece = ece + math.abs(b.a - b.c) / 4 end
  T.near(r.ece, ece, 1e-9, "ECE")
  local counted = 0
  for b, bin in ipairs(r.bins) do
    counted = counted + bin.count
    if bins[b] then T.near(bin.confidence, bins[b].c / bins[b].n, 1e-9, "bin confidence " .. b) end
  end
  T.check(counted == 4 and #r.bins == 15, "15 bins holding every row")
end)

T.test("JS divergence: 0 for equal rows, by hand otherwise, symmetric", function()
  T.near(rt.js_sum(z, z), 0, 1e-12, "JS(p, p)")
  local a, b = rt.tensor({ { 0, 0 } }), rt.tensor({ { math.log(3), 0 } }) -- p = (.5,.5), q = (.75,.25)
  local p, q = { 0.5, 0.5 }, { 0.75, 0.25 }
  local js = 0
  for i = 1, 2 do
    local m = (p[i] + q[i]) / 2
    js = js + 0.5 * p[i] * math.log(p[i] / m) + 0.5 * q[i] * math.log(q[i] / m)
  end
  T.near(rt.js_sum(a, b), js, 1e-6, "JS by hand")
  T.near(rt.js_sum(b, a), js, 1e-6, "symmetric")
end)

-- ------------------------------------------------------------ a small run

local dir = T.tmpdir()
local train = rt.data.fashion_mnist("train", { limit = 1500 })
local test = rt.data.fashion_mnist("test", { limit = 500 })

local function run_cmd(cmd)
  local f = io.popen(cmd .. " 2>&1")
  local out = f:read("a")
  local ok = f:close()
  return out, ok
end

local teacher, student
T.test("a teacher and a distilled student leave manifests, best and last", function()
  local tn = rt.student("mlp", { sizes = { 784, 64, 10 }, seed = 1 })
  rt.fit{ student = tn, data = train, eval = test, epochs = 2, batch = 50, out = dir .. "/teacher", quiet = true,
          name = "teacher" }
  teacher = rt.teacher("model", { checkpoint = dir .. "/teacher/last.safetensors" })
  student = rt.student("mlp", { sizes = { 784, 16, 10 }, seed = 2 })
  local run = rt.distill{ teacher = teacher, student = student, data = train, eval = test, epochs = 2, batch = 50,
                          loss = { { rt.loss("kd"), 0.9 }, { rt.loss("ce"), 0.1 } }, out = dir .. "/kd",
                          quiet = true, name = "kd" }
  for _, f in ipairs{ "manifest.json", "metrics.jsonl", "last.safetensors", "best.safetensors", "eval.json" } do
    T.check(rt.exists(dir .. "/kd/" .. f), "kd/" .. f)
    T.check(rt.exists(dir .. "/teacher/" .. f), "teacher/" .. f)
  end
  T.check(run.best == dir .. "/kd/best.safetensors", "run.best")
  local m = rt.json_decode(rt.util.read_file(dir .. "/kd/manifest.json"))
  T.check(m.status == "finished" and m.started and m.finished, "times and status")
  T.check(m.seed == 1 and m.blas.core == rt.blas_core() and m.blas.threads == rt.threads(), "seed, BLAS")
  T.check(m.retort.version == rt.version and m.retort.abi == rt.abi, "retort version and ABI")
  T.check(m.student.plugin == "mlp" and m.student.version and m.student.abi, "student plugin, version, ABI")
  T.check(#m.losses == 2 and m.losses[1].plugin == "kd" and m.losses[1].abi and m.losses[1].weight == 0.9, "losses")
  T.check(m.data.train.license == "MIT" and m.data.train.samples == 1500 and m.data.train.origin, "data licence")
  T.check(m.checkpoints.best_selected_on == "eval" and m.checkpoints.best_epoch, "best on eval, said plainly")
  T.check(m.result and m.result.accuracy and m.result.top5 and m.result.ece and m.result.js, "result")
end)

T.test("the manifest's hashes match the files", function()
  local m = rt.json_decode(rt.util.read_file(dir .. "/kd/manifest.json"))
  T.check(m.teacher.checkpoint == dir .. "/teacher/last.safetensors", "teacher path")
  T.check(m.teacher.sha256 == rt.sha256_file(m.teacher.checkpoint), "teacher checkpoint sha256")
  local n = 0
  for _, split in ipairs{ "train", "eval" } do
    for _, f in ipairs(m.data[split].files) do
      T.check(f.sha256 == rt.sha256_file(f.path), "sha256 of " .. f.path)
      n = n + 1
    end
  end
  T.check(n == 4, "four data files")
  -- this file is the recipe: the command put it in arg[0]
  T.check(m.recipe.path == arg[0] and m.recipe.sha256 == rt.sha256_file(arg[0]), "recipe sha256")
end)

T.test("a student checkpoint names its teacher's sha256 (best and last)", function()
  local want = rt.sha256_file(dir .. "/teacher/last.safetensors")
  for _, f in ipairs{ "best", "last" } do
    local meta = rt.read_meta(dir .. "/kd/" .. f .. ".safetensors")
    T.check(meta["teacher.sha256"] == want, f .. ": teacher.sha256")
    T.check(meta["teacher.checkpoint"] == dir .. "/teacher/last.safetensors", f .. ": teacher.checkpoint")
    local p = rt.json_decode(meta.provenance)
    T.check(p.teacher.sha256 == want and p.data.train.license == "MIT", f .. ": provenance JSON")
    T.check(meta["data.license"] == "MIT" and meta["recipe.sha256"] == rt.sha256_file(arg[0]), f .. ": flat keys")
  end
  -- best holds weights only and loads as a model
  local t = rt.load(dir .. "/kd/best.safetensors")
  for name in pairs(t) do T.check(not name:match("^optim%."), "no optimizer state in best: " .. name) end
  local m = rt.teacher("model", { checkpoint = dir .. "/kd/best.safetensors" })
  T.check(rt.evaluate(m, test, { quiet = true }).accuracy > 0.3, "best loads and predicts")
end)

T.test("rt.evaluate gives every metric, consistent with each other", function()
  local r = rt.evaluate(student, test, { teacher = teacher, quiet = true })
  T.check(r.top5 >= r.accuracy and r.top5 <= 1, "top5 >= top1")
  local diag, total = 0, 0
  for i = 1, 10 do
    for j = 1, 10 do total = total + r.confusion[i][j] end
    diag = diag + r.confusion[i][i]
  end
  T.check(total == 500 and diag == math.floor(r.accuracy * 500 + 0.5), "confusion sums to the samples")
  T.check(r.ece >= 0 and r.ece <= 1 and #r.bins == 15, "ECE")
  T.check(r.js >= 0 and r.js <= math.log(2) and r.kl >= 0, "JS in [0, ln 2], KL >= 0")
  T.check(r.agreement > 0 and r.agreement <= 1, "agreement")
end)

T.test("latency: p50 <= p95, the number of runs, throughput", function()
  local l = rt.latency(student, test, { runs = 50, warmup = 5, batch = 200 })
  T.check(l.runs == 50 and l.warmup == 5 and l.batch == 200, "runs recorded")
  T.check(l.p50_ms > 0 and l.p50_ms <= l.p95_ms, ("p50 %g p95 %g"):format(l.p50_ms, l.p95_ms))
  T.check(l.throughput > 0, "throughput")
end)

T.test("summary, report, compare, info and eval", function()
  local s = rt.summarize{ out = dir, data = test, teacher = "teacher", quiet = true, latency = { runs = 20 },
                          models = { { name = "teacher", role = "teacher", model = teacher, run = "teacher" },
                                     { name = "kd", role = "student", model = student, run = "kd",
                                       checkpoint = dir .. "/kd/best.safetensors" } } }
  T.check(s.models[2].speedup > 0 and s.models[2].compression > 1, "speed-up and compression vs the teacher")
  T.check(s.models[1].latency.runs == 20, "runs in the summary")
  local out, ok = run_cmd(retort .. " report " .. dir)
  T.check(ok and out:match(dir .. "/report.html"), "report prints its path: " .. out)
  local html = rt.util.read_file(dir .. "/report.html") or ""
  for _, id in ipairs{ "loss-kd", "accuracy", "agreement", "confusion-teacher", "confusion-kd", "latency", "size",
                       "calibration", "per-class" } do
    T.check(html:find('id="chart-' .. id .. '"', 1, true), "chart " .. id)
  end
  T.check(html:find("p50 and p95 over 20 timed runs", 1, true), "the report states the runs")
  T.check(html:find(rt.sha256_file(dir .. "/teacher/last.safetensors"), 1, true), "the manifest's hashes shown")
  T.check(not html:find("<script", 1, true), "no script")
  -- a single run folder makes a report too
  out, ok = run_cmd(retort .. " report " .. dir .. "/kd")
  T.check(ok and rt.exists(dir .. "/kd/report.html"), "single-run report: " .. out)

  out, ok = run_cmd(retort .. " compare " .. dir .. " " .. dir .. "/teacher --markdown")
  T.check(ok and out:match("| run +| +recipe +| +model +| +data +| +acc %%") and out:match("| +test_run_folder/teacher |")
    and out:match("| +test_run_folder/kd | mlp 784%-16%-10 |") and out:find("| fashion-mnist/test |", 1, true),
    "compare --markdown: " .. out)
  local acc = ("%.2f"):format(100 * s.models[2].eval.accuracy)
  T.check(out:find(acc, 1, true), "compare shows the student's accuracy " .. acc)

  out, ok = run_cmd(retort .. " info " .. dir .. "/kd/best.safetensors")
  T.check(ok and out:match("layers%.0%.weight +f32 +%[16, 784%]"), "info lists tensors: " .. out)
  T.check(out:find("teacher.sha256", 1, true) and out:find("matches", 1, true), "info follows the chain")
  T.check(out:find("teacher  none (trained on labels)", 1, true), "the chain ends at the labels")

  out, ok = run_cmd(retort .. " eval " .. dir .. "/kd/last.safetensors --data fashion-mnist:test --limit 500 --teacher "
    .. dir .. "/teacher/last.safetensors --json")
  local e = ok and rt.json_decode(out:match("{.*}"))
  T.check(e and math.abs(e.accuracy - s.models[2].eval.accuracy) < 1e-12, "eval matches evaluate: " .. out:sub(1, 300))
  T.check(e and math.abs(e.agreement - s.models[2].eval.agreement) < 1e-12, "eval agreement")
  out, ok = run_cmd(retort .. " eval " .. dir .. "/kd/last.safetensors --data nonsense")
  T.check(not ok and out:find("expected fashion-mnist:train|test or IMAGES,LABELS", 1, true), "bad --data: " .. out)
end)

T.test("RETORT_QUIET=1 silences progress and epoch lines", function()
  local script = dir .. "/quiet.lua"
  rt.write_atomic(script, ([[
    local rt = require "retort"
    local d = rt.data.fashion_mnist("train", { limit = 300 })
    rt.fit{ student = rt.student("mlp", { sizes = { 784, 8, 10 } }), data = d, eval = d, epochs = 1 }
  ]]))
  -- judged by what the trainer prints, not by empty output: a sanitizer
  -- build may add its own report at exit
  local out, ok = run_cmd("RETORT_QUIET=1 " .. retort .. " run " .. script)
  T.check(ok and not out:find("epoch", 1, true) and not out:find("eta", 1, true), "quiet output: " .. out)
  out, ok = run_cmd(retort .. " run " .. script)
  T.check(ok and out:find("fit epoch 1/1", 1, true), "not quiet: " .. out)
end)

os.execute("rm -rf " .. dir)
T.done("test_run_folder.lua")
