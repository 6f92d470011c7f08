-- test_split.lua: validation data and splits.  ds:split and ds:subset
-- (sizes, disjointness, determinism, provenance, bad ids); `val` on
-- rt.fit/rt.distill (best checkpoint on it, early stopping with
-- patience); every printed line, metrics row and manifest names its data.
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

-- x[i] = i, y[i] = i % 7: a row's x tells which source row it is
local function counting(n)
  local x, y = rt.zeros{ n, 2 }, rt.zeros({ n }, "i32")
  for i = 1, n do x:set(i, 1, i); x:set(i, 2, -i); y:set(i, i % 7) end
  return rt.dataset(x, y)
end

local function ids_of(ds)
  local ids = {}
  for i = 1, ds:size() do ids[i] = math.tointeger(ds:x():get(i, 1)) end
  return ids
end

-- ------------------------------------------------------------- split

T.test("split: sizes by fraction and by n; both parts keep the source order", function()
  local ds = counting(103)
  local rest, held = ds:split{ fraction = 0.1, seed = 1 }
  T.check(held:size() == 10 and rest:size() == 93, ("fraction 0.1 of 103: %d + %d"):format(rest:size(), held:size()))
  rest, held = ds:split{ n = 25, seed = 3 }
  T.check(held:size() == 25 and rest:size() == 78, "n = 25")
  for _, part in ipairs{ rest, held } do
    local ids = ids_of(part)
    for i = 2, #ids do T.check(ids[i - 1] < ids[i], "ascending source order") end
    for i = 1, part:size() do
      T.check(part:x():get(i, 2) == -ids[i] and part:y():get(i) == ids[i] % 7, "x and y rows stay together")
    end
  end
end)

T.test("split: the parts are disjoint and cover every sample once", function()
  local ds = counting(57)
  local rest, held = ds:split{ n = 11, seed = 5 }
  local seen = {}
  for _, part in ipairs{ rest, held } do
    for _, id in ipairs(ids_of(part)) do
      T.check(not seen[id], "sample " .. id .. " in one part only")
      seen[id] = true
    end
  end
  for i = 1, 57 do T.check(seen[i], "sample " .. i .. " is in a part") end
end)

T.test("split: deterministic per seed, another seed another split; training stream untouched", function()
  local ds = counting(200)
  rt.seed(42)
  local before = rt.rng_state()
  local _, a = ds:split{ fraction = 0.2, seed = 7 }
  T.check(rt.rng_state() == before, "split draws nothing from the training stream")
  local _, b = ds:split{ fraction = 0.2, seed = 7 }
  local _, c = ds:split{ fraction = 0.2, seed = 8 }
  T.check(table.concat(ids_of(a), ",") == table.concat(ids_of(b), ","), "same seed, same held ids")
  T.check(table.concat(ids_of(a), ",") ~= table.concat(ids_of(c), ","), "another seed, other ids")
  T.check(rt.data.info[a].subset.ids_sha256 == rt.data.info[b].subset.ids_sha256, "same hash for the same ids")
  T.check(rt.data.info[a].subset.ids_sha256 ~= rt.data.info[c].subset.ids_sha256, "another hash for other ids")
end)

T.test("split: bad settings are errors at the caller's line", function()
  local ds = counting(10)
  T.raises(function() ds:split{ seed = 1 } end, "either 'fraction' or 'n'")
  T.raises(function() ds:split{ fraction = 0.1, n = 2 } end, "either 'fraction' or 'n'")
  T.raises(function() ds:split{ fraction = 1.5 } end, "'fraction' must be in (0, 1)")
  T.raises(function() ds:split{ n = 10 } end, "10 of 10 samples")
  T.raises(function() ds:split{ n = 0 } end, "0 of 10 samples")
  T.raises(function() ds:split{ n = 2, sede = 1 } end, "unknown field 'sede'", "did you mean 'seed'")
  local err = T.raises(function() ds:split{ n = 2.5 } end, "'n' must be an integer")
  T.check(err and err:find("test_split.lua:%d+:"), "points at the test's line: " .. tostring(err))
end)

local fm = rt.data.fashion_mnist("test", { limit = 300 })

T.test("split and subset keep provenance: files, hashes, licence, classes, which ids", function()
  local rest, held = fm:split{ fraction = 0.25, seed = 3 }
  T.check(held:name() == "fashion-mnist/test:held" and rest:name() == "fashion-mnist/test:rest",
    "default names: " .. tostring(held:name()) .. ", " .. tostring(rest:name()))
  local p, parent = rt.data_provenance(held), rt.data_provenance(fm)
  T.check(p.license == "MIT" and p.origin == parent.origin and p.samples == 75, "licence, origin, size")
  T.check(#p.files == 2 and p.files[1].path == parent.files[1].path and p.files[1].sha256 == parent.files[1].sha256
    and p.files[1].sha256 == rt.sha256_file(p.files[1].path), "source files with their sha256")
  T.check(p.classes and p.classes[1] == "T-shirt/top" and #p.classes == 10, "class names")
  local s = p.subset
  T.check(s and s.of == "fashion-mnist/test" and s.of_samples == 300 and s.count == 75 and s.seed == 3
    and s.part == "held" and s.how == "split fraction 0.25, seed 3", "which rows, how: " .. rt.json_encode(s or {}))
  -- the hash is over the 1-based ids, recomputed here from the rows
  local function key(ds, i)
    local t = ds:x():narrow(1, i, 1):reshape{ 784 }:totable()
    return table.concat(t, ",") .. "|" .. ds:y():get(i)
  end
  local row_of, want = {}, {}
  for j = fm:size(), 1, -1 do row_of[key(fm, j)] = j end -- the first of equal rows
  for i = 1, held:size() do want[i] = row_of[key(held, i)] end
  T.check(#want == 75 and s.ids_sha256 == rt.sha256(table.concat(want, ",")), "ids_sha256 = sha256 of the id list")
  T.check(#rt.json_encode(p) < 2000, "the manifest entry stays small")
  -- names given, and a subset of a subset remembers both steps
  local r2, h2 = fm:split{ n = 30, seed = 1, names = { "fm/train-part", "fm/val" } }
  T.check(r2:name() == "fm/train-part" and h2:name() == "fm/val", "names given to split")
  local sub = h2:subset({ 3, 1, 3 }, "three")
  local q = rt.data_provenance(sub)
  T.check(q.name == "three" and q.subset.how == "subset" and q.subset.count == 3 and q.subset.of == "fm/val"
    and q.subset.parent and q.subset.parent.part == "held", "subset of a split: " .. rt.json_encode(q.subset))
  T.check(q.subset.ids_sha256 == rt.sha256("3,1,3") and q.license == "MIT", "subset ids and licence")
  T.check(sub:x():get(1, 15, 14) == h2:x():get(3, 15, 14) and sub:x():get(2, 8, 4) == h2:x():get(1, 8, 4)
    and sub:y():get(2) == h2:y():get(1), "rows in the ids' order")
  T.check(fm:name() == "fashion-mnist/test" and counting(3):name() == nil, "a dataset's own name, or none")
  T.check(counting(3):name("mine"):name() == "mine", "ds:name(new) sets it")
end)

T.test("subset: ids outside [1, N] or not integers are errors naming the id and its position", function()
  local ds = counting(10)
  T.raises(function() ds:subset{ 1, 0 } end, "id 0 at position 2 is outside [1, 10]", "1-based")
  T.raises(function() ds:subset{ 11 } end, "id 11 at position 1 is outside [1, 10]")
  T.raises(function() ds:subset{ 2, 1.5 } end, "id 1.5 at position 2")
  T.raises(function() ds:subset{} end, "non-empty list")
  local sub = ds:subset{ 10, 1 }
  T.check(table.concat(ids_of(sub), ",") == "10,1", "ids 1 and N are in range")
end)

-- ---------------------------------------------------- val in training

local dir = T.tmpdir()
local train_all = rt.data.fashion_mnist("train", { limit = 1200 })
local train, val = train_all:split{ n = 200, seed = 1, names = { "fm-train/rest", "fm-train/val" } }

T.test("val: best.safetensors is the epoch of the best val accuracy; rows keep test and add val", function()
  local s = rt.student("mlp", { sizes = { 784, 16, 10 }, seed = 2 })
  local run = rt.fit{ student = s, data = train, val = val, eval = fm, epochs = 4, batch = 50, out = dir .. "/v",
                      quiet = true, name = "v" }
  local best, best_epoch = -1, nil
  for _, row in ipairs(run.history) do
    T.check(row.val and row.val.accuracy and row.test and row.test.accuracy, "val and test per epoch")
    if row.val.accuracy > best then best, best_epoch = row.val.accuracy, row.epoch end
  end
  T.check(run.best_epoch == best_epoch, ("best epoch %s, argmax of val %s"):format(run.best_epoch, best_epoch))
  local meta = rt.read_meta(dir .. "/v/best.safetensors")
  T.check(tonumber(meta["run.epoch"]) + 1 == best_epoch, "best.safetensors holds that epoch")
  local sel = meta["run.selected_on"]
  T.check(sel:find("val accuracy", 1, true) and sel:find("fm-train/val", 1, true), "selected_on: " .. sel)
  local m = rt.teacher("model", { checkpoint = dir .. "/v/best.safetensors" })
  T.near(rt.evaluate(m, val, { quiet = true }).accuracy, best, 1e-12, "best reproduces its val accuracy")
  local man = rt.json_decode(rt.util.read_file(dir .. "/v/manifest.json"))
  T.check(man.checkpoints.best_selected_on == "val" and man.checkpoints.best_selected_on_data == "fm-train/val",
    "manifest: best on val, named")
  T.check(man.checkpoints.best_epoch == best_epoch and man.checkpoints.best_test
    and man.checkpoints.best_test.accuracy == run.history[best_epoch].test.accuracy, "the best epoch's test figures")
  T.check(man.data.val.name == "fm-train/val" and man.data.val.subset.count == 200 and man.data.val.license == "MIT",
    "manifest: val data with its provenance")
  T.check(man.data.train.name == "fm-train/rest" and man.data.train.samples == 1000, "manifest: train part")
  T.check(man.data.eval.name == "fashion-mnist/test" and man.result.accuracy == run.test.accuracy, "eval is the test")
  local epochs = {}
  for line in io.lines(dir .. "/v/metrics.jsonl") do
    local r = rt.json_decode(line)
    if r.event == "epoch" then epochs[#epochs + 1] = r end
  end
  T.check(#epochs == 4 and epochs[1].val.accuracy == run.history[1].val.accuracy
    and epochs[1].test.accuracy == run.history[1].test.accuracy, "metrics.jsonl: val and test rows")
  T.check(epochs[1].data.val == "fm-train/val" and epochs[1].data.test == "fashion-mnist/test", "rows name their data")
end)

T.test("val: patience stops after k epochs without improvement, says so in the manifest", function()
  -- lr 0: the weights never change, so val accuracy never improves after
  -- epoch 1 and the run must stop at epoch 1 + patience
  local s = rt.student("mlp", { sizes = { 784, 8, 10 }, seed = 3 })
  local seen = {}
  local run = rt.fit{ student = s, data = train, val = val, eval = fm, epochs = 10, batch = 100, patience = 3,
                      schedule = function() return 0 end, out = dir .. "/p", quiet = true,
                      on_epoch = function(row) seen[#seen + 1] = row.epoch end }
  T.check(#run.history == 4 and #seen == 4 and run.stopped_at == 4, "stopped after epoch " .. tostring(run.stopped_at))
  T.check(run.best_epoch == 1, "best stays epoch 1")
  local man = rt.json_decode(rt.util.read_file(dir .. "/p/manifest.json"))
  local e = man.early_stopping
  T.check(e and e.patience == 3 and e.on == "fm-train/val" and e.stopped == true and e.stopped_at_epoch == 4,
    "manifest early_stopping: " .. rt.json_encode(e or {}))
  T.check(man.epochs == 10 and man.status == "finished", "asked 10 epochs, finished")
  -- resuming a stopped run trains no further
  local again = rt.fit{ student = s, data = train, val = val, eval = fm, epochs = 10, batch = 100, patience = 3,
                        schedule = function() return 0 end, out = dir .. "/p", quiet = true, resume = true }
  T.check(#again.history == 4 and again.stopped_at == 4, "resume keeps the stop")
  -- without patience, the same run trains every epoch
  local full = rt.fit{ student = rt.student("mlp", { sizes = { 784, 8, 10 }, seed = 3 }), data = train, val = val,
                       epochs = 6, batch = 100, schedule = function() return 0 end, quiet = true }
  T.check(#full.history == 6 and full.stopped_at == nil, "no patience, no stop")
end)

T.test("val and patience: bad settings are errors", function()
  local s = rt.student("mlp", { sizes = { 784, 8, 10 } })
  T.raises(function() rt.fit{ student = s, data = train, eval = fm, patience = 2, epochs = 1 } end,
    "'patience' stops on validation data: give 'val'")
  T.raises(function() rt.fit{ student = s, data = train, val = val, patience = 0, epochs = 1 } end,
    "'patience' must be an integer >= 1")
  T.raises(function() rt.fit{ student = s, data = train, val = "val", epochs = 1 } end, "'val' must be a dataset")
end)

T.test("only eval: best is chosen on it, flagged, and labelled by its name", function()
  local s = rt.student("mlp", { sizes = { 784, 8, 10 }, seed = 4 })
  rt.fit{ student = s, data = train, eval = fm, epochs = 2, batch = 100, out = dir .. "/e", quiet = true }
  local man = rt.json_decode(rt.util.read_file(dir .. "/e/manifest.json"))
  T.check(man.checkpoints.best_selected_on == "eval" and man.checkpoints.best_selected_on_data == "fashion-mnist/test",
    "best on eval, named")
  T.check(man.data.val == nil and man.early_stopping == nil, "no val, no early stopping")
end)

T.test("printed lines, the report and compare name the data, never a hard-coded 'test'", function()
  local script = dir .. "/named.lua"
  rt.write_atomic(script, [[
    local rt = require "retort"
    local d = rt.data.fashion_mnist("train", { limit = 400 })
    local rest, held = d:split{ fraction = 0.25, seed = 2 }
    local t = rt.data.fashion_mnist("test", { limit = 200 }):name("holdout-b")
    held:name("holdout-a")
    rt.fit{ student = rt.student("mlp", { sizes = { 784, 8, 10 } }), data = rest, val = held, eval = t,
            epochs = 3, patience = 1, schedule = function() return 0 end, out = arg[1] }
  ]])
  local out, ok = run_cmd(retort .. " run " .. script .. " " .. dir .. "/named")
  T.check(ok and out:find("fit epoch 1/3", 1, true), "ran: " .. out)
  T.check(out:find("holdout-a acc ", 1, true) and out:find("holdout-b acc ", 1, true), "epoch lines name val and eval: "
    .. out)
  T.check(out:find("early stop after epoch 2: holdout-a accuracy has not improved for 1 epochs (patience 1)", 1, true),
    "the stop is logged with the data's name: " .. out)
  T.check(not out:find("test acc", 1, true), "no 'test acc' in the lines: " .. out)
  out, ok = run_cmd(retort .. " report " .. dir .. "/named")
  local html = rt.util.read_file(dir .. "/named/report.html") or ""
  T.check(ok and html:find("holdout-b accuracy", 1, true) and html:find("holdout-a", 1, true),
    "the report names the data: " .. out)
  T.check(not html:find("Test accuracy", 1, true) and not html:find("test acc", 1, true)
    and not html:find("(test set)", 1, true), "no hard-coded test in the report")
  out, ok = run_cmd(retort .. " compare " .. dir .. "/named")
  T.check(ok and out:find("holdout-b", 1, true) and not out:find("test acc", 1, true), "compare names it: " .. out)
end)

os.execute("rm -rf " .. dir)
T.done("test_split.lua")
