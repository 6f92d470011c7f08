-- test_provenance.lua: what a manifest says about how a model was made.
-- The optimizer and its settings, the learning-rate schedule, every loss
-- term's options (after set()) and weight/temperature schedules, the
-- file and sha256 of every plugin and Lua loss; and a trained student used
-- as a teacher (rt.teacher(net)): the weights' sha256, the run it came
-- from, and the chain `retort info` follows.  Every hash is recomputed here.
local T = dofile("tests/lua/t.lua")
local rt = require "retort"

local build = os.getenv("RETORT_TEST_BUILD") or "build"
local retort = build .. "/bin/retort"
local dir = T.tmpdir()

local function run_cmd(cmd)
  local f = io.popen(cmd .. " 2>&1")
  local out = f:read("a")
  local ok = f:close()
  return out, ok
end

local function read_json(path) return rt.json_decode(rt.util.read_file(path)) end

-- The f32 the core computes with, as a double (string.pack rounds).
local function f32(v) return (string.unpack("f", string.pack("f", v))) end

-- ------------------------------------------------------- options and set

T.test("options_json follows set(), for a C loss and a Lua loss", function()
  local kd = rt.loss("kd", { temperature = 4 })
  kd:set("temperature", 2.5)
  local o = rt.json_decode(kd:options_json())
  T.check(o.temperature == 2.5 and o.t2 == true, "kd after set: " .. kd:options_json())
  -- a refused value changes nothing
  T.raises(function() kd:set("temperature", -1) end, "temperature")
  T.check(rt.json_decode(kd:options_json()).temperature == 2.5, "unchanged after a refused set")
  local l = rt.lua_loss({ name = "probe", options = { temperature = 4, scale = { 1, min = 0, max = 10 } },
                          forward = function() return 0 end, backward = function(s) return rt.zeros_like(s) end })
  l:set("scale", 3)
  o = rt.json_decode(l:options_json())
  T.check(o.scale == 3 and o.temperature == 4, "Lua loss after set: " .. l:options_json())
end)

-- ------------------------------------------------------------- weights

T.test("rt.weights_sha256: the documented byte stream, from a model or from a file's tensors", function()
  local s = rt.student("mlp", { sizes = { 3, 2, 2 }, seed = 4 })
  -- names sorted; name NUL dtype NUL shape NUL, then the f32 values little-endian
  local params = s:parameters()
  table.sort(params, function(a, b) return a.name < b.name end)
  local parts = {}
  for _, p in ipairs(params) do
    local shape = p.value:shape()
    parts[#parts + 1] = p.name .. "\0f32\0" .. table.concat(shape, ",") .. "\0"
    local flat = p.value:reshape({ p.value:numel() }):totable()
    for _, v in ipairs(flat) do parts[#parts + 1] = string.pack("<f", v) end
  end
  local want = rt.sha256(table.concat(parts))
  T.check(rt.weights_sha256(s) == want, "by hand " .. want .. " vs " .. rt.weights_sha256(s))
  local t = rt.teacher(s)
  T.check(rt.weights_sha256(t) == want, "the teacher's copy has the same weights")
  s:save(dir .. "/w.safetensors")
  T.check(rt.weights_sha256((rt.load(dir .. "/w.safetensors"))) == want, "the file's tensors hash the same")
  s:parameters()[1].value:set(1, 1, 0.5)
  T.check(rt.weights_sha256(s) ~= want and rt.weights_sha256(t) == want, "a change shows; the teacher keeps its copy")
end)

-- ------------------------------------------------------------ a teacher

local train = rt.data.fashion_mnist("train", { limit = 1000 })
local test = rt.data.fashion_mnist("test", { limit = 300 })
local net = rt.student("mlp", { sizes = { 784, 48, 10 }, seed = 1 })
rt.fit{ student = net, data = train, eval = test, epochs = 2, batch = 50, out = dir .. "/teacher", quiet = true,
        name = "teacher", optimizer = rt.optim.sgd{ lr = 0.05, momentum = 0.9, weight_decay = 1e-4 } }

T.test("a fit's manifest: SGD settings, no schedule, the final weights' sha256", function()
  local m = read_json(dir .. "/teacher/manifest.json")
  local o = m.optimizer or {}
  T.check(o.kind == "sgd" and o.lr == 0.05 and o.momentum == 0.9 and o.weight_decay == 1e-4 and o.nesterov == false
    and o.dampening == 0, "optimizer: " .. rt.json_encode(o))
  local s = m.lr_schedule or {}
  T.check(s.kind == "none" and s.start == 0.05 and s["end"] == 0.05 and s.steps == 40, "lr: " .. rt.json_encode(s))
  T.check(m.weights_sha256 == rt.weights_sha256(net), "final weights")
end)

-- ------------------------------------------------------- the science

-- A Lua loss in a file of its own, as a user would keep it.
local lua_file = dir .. "/my_kd.lua"
rt.write_atomic(lua_file, [[
local rt = require "retort"
return rt.lua_loss{
  name = "my_kd", options = { temperature = { 4, min = 1e-3, max = 100 } },
  forward = function(s, t, y, ctx)
    local T = ctx.opts.temperature
    local lpt = t:log_softmax(T)
    return (lpt:exp() * (lpt - s:log_softmax(T))):sum() * T * T / s:size(1)
  end,
  backward = function(s, t, y, ctx)
    local T = ctx.opts.temperature
    return (s:softmax(T) - t:softmax(T)) * (T / s:size(1))
  end,
}
]])

local kd_run
T.test("rt.teacher(trained student) distils; the manifest records the science", function()
  local teacher = rt.teacher(net)
  local kd = rt.loss("kd", { temperature = 4 })
  kd:set("temperature", 3)                  -- the manifest must say 3
  local my_kd = dofile(lua_file)
  local student = rt.student("mlp", { sizes = { 784, 16, 10 }, seed = 2 })
  local sched = rt.schedule.cosine{ lr = 4e-3, min_lr = 1e-4, warmup = 3 }
  kd_run = rt.distill{
    teacher = teacher, student = student, data = train, eval = test, epochs = 3, batch = 100, quiet = true,
    out = dir .. "/kd", name = "kd", schedule = sched,
    optimizer = rt.optim.adamw{ lr = 4e-3, betas = { 0.8, 0.99 }, eps = 1e-7, weight_decay = 0.05 },
    loss = { { kd, rt.schedule.linear_warmup{ from = 0.2, to = 0.8, epochs = 2 } },
             { my_kd, 0.5, temperature = rt.schedule.steps{ values = { 6, 3, 2 }, every = 1 } },
             { rt.loss("ce"), 0.1 } },
  }
  T.check(kd_run.test.accuracy > 0.4 and kd_run.test.agreement > 0.4, "it distils: " .. rt.json_encode(kd_run.test))
  local m = read_json(dir .. "/kd/manifest.json")

  local o = m.optimizer or {}
  T.check(o.kind == "adamw" and o.lr == 4e-3 and o.betas and o.betas[1] == 0.8 and o.betas[2] == 0.99
    and o.eps == 1e-7 and o.weight_decay == 0.05, "optimizer: " .. rt.json_encode(o))

  -- the LR schedule: 30 steps; warm-up (step + 1) / 3 of lr, then cosine by hand
  local s = m.lr_schedule or {}
  local total, last = 30, 29
  local lr, min_lr = f32(4e-3), f32(1e-4) -- the core holds them as f32, computes in double
  local want_end = min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * (last - 3) / (total - 3)))
  T.check(s.kind == "cosine" and s.lr == 4e-3 and s.min_lr == 1e-4 and s.warmup == 3 and s.total == total
    and s.steps == total, "schedule settings: " .. rt.json_encode(s))
  T.check(type(s.description) == "string" and s.description:find("cosine", 1, true)
    and s.description:find("warm-up over 3 steps", 1, true), "description: " .. tostring(s.description))
  T.check(f32(s.start or 0) == f32(lr * 1 / 3), "start " .. tostring(s.start))
  T.check(f32(s["end"] or 0) == f32(want_end), ("end %s vs %s"):format(tostring(s["end"]), want_end))

  -- loss terms: options as set, weights and temperatures with start and end
  local l1, l2, l3 = m.losses[1], m.losses[2], m.losses[3]
  T.check(l1.options.temperature == 3, "kd's temperature after set(): " .. rt.json_encode(l1.options))
  local w = l1.weight
  T.check(type(w) == "table" and w.kind == "linear_warmup" and w.start == 0.2 and w["end"] == 0.8
    and w.description:find("linear from 0.2 to 0.8 over 2 epochs", 1, true), "kd weight: " .. rt.json_encode(w))
  T.check(l2.weight == 0.5 and l3.weight == 0.1, "constant weights stay numbers")
  local tt = l2.temperature
  T.check(type(tt) == "table" and tt.kind == "steps" and tt.start == 6 and tt["end"] == 2
    and tt.description:find("6, 3, 2", 1, true), "my_kd temperature: " .. rt.json_encode(tt))

  -- every plugin's file, hashed again here
  local paths = {}
  for _, p in ipairs(rt.plugins()) do paths[p.kind .. "/" .. p.name] = p.path end
  for _, e in ipairs{ { l1, "loss/kd" }, { l3, "loss/ce" }, { m.student, "student/mlp" }, { m.teacher, "teacher/model" },
                      { m.teacher.arch or {}, "student/mlp" } } do
    local r, key = e[1], e[2]
    T.check(r.file == paths[key] and r.file:match("/" .. key:match("/(.*)") .. "%.so$"), key .. " file " .. tostring(r.file))
    T.check(r.file and r.file_sha256 == rt.sha256_file(r.file), key .. " file_sha256")
  end
  -- the Lua loss: its file, hashed, and where forward and backward start
  T.check(l2.plugin == "my_kd" and l2.abi == "lua" and l2.file == lua_file, "Lua loss file " .. tostring(l2.file))
  T.check(l2.file_sha256 == rt.sha256_file(lua_file) and l2.line == 4 and l2.backward_line == 9,
    "Lua loss sha256 and lines: " .. rt.json_encode(l2))
end)

T.test("the teacher's manifest entry: weights sha256, its run, no random_init", function()
  local m = read_json(dir .. "/kd/manifest.json")
  local t = m.teacher
  local w = rt.weights_sha256(net)
  T.check(t.weights_sha256 == w and t.options.student == w, "weights sha256 " .. tostring(t.weights_sha256))
  T.check(t.options.random_init ~= true and not rt.json_encode(m):find('"random_init":true', 1, true),
    "no random_init for a trained net")
  T.check(t.source and t.source:find("live student", 1, true), "source " .. tostring(t.source))
  local run = t.run or {}
  T.check(run.dir == dir .. "/teacher" and run.manifest_sha256 == rt.sha256_file(dir .. "/teacher/manifest.json"),
    "the run and its manifest's sha256: " .. rt.json_encode(run))
  T.check(read_json(run.manifest or "").weights_sha256 == w, "that run ended with these weights")
  local ck = dir .. "/teacher/last.safetensors"
  T.check(t.checkpoint == ck and t.sha256 == rt.sha256_file(ck), "its checkpoint holds them: " .. tostring(t.checkpoint))
  local meta = rt.read_meta(dir .. "/kd/best.safetensors")
  T.check(meta["teacher.weights_sha256"] == w and meta["teacher.run"] == dir .. "/teacher"
    and meta["teacher.sha256"] == rt.sha256_file(ck), "flat keys in the student's checkpoint")
end)

T.test("retort info follows the chain from the student to its teacher's run", function()
  local out, ok = run_cmd(retort .. " info " .. dir .. "/kd/best.safetensors")
  local w = rt.weights_sha256(net)
  T.check(ok and out:find("weights  sha256 " .. w .. ", trained in run " .. dir .. "/teacher", 1, true),
    "the teacher's weights and run: " .. out)
  T.check(out:find("sha256 " .. rt.sha256_file(dir .. "/teacher/last.safetensors") .. ": matches", 1, true),
    "the teacher's checkpoint checked")
  T.check(out:find(dir .. "/teacher/last.safetensors: student 'mlp'", 1, true)
    and out:find("teacher  none (trained on labels)", 1, true), "down to the labels")
end)

T.test("a student changed after its run: the teacher names the run but not as its source", function()
  local s = rt.student("mlp", { sizes = { 784, 8, 10 }, seed = 5 })
  rt.fit{ student = s, data = train, epochs = 1, batch = 100, out = dir .. "/s", quiet = true }
  rt.fit{ student = s, data = train, epochs = 1, batch = 100, quiet = true } -- more training, no run folder
  local p = rt.model_provenance(rt.teacher(s))
  T.check(p.weights_sha256 == rt.weights_sha256(s) and p.run and p.run.dir == dir .. "/s" and p.run.note
    and not p.checkpoint and not p.sha256, "no checkpoint claimed: " .. rt.json_encode(p))
  -- a student never trained in a run: weights only
  local fresh = rt.student("mlp", { sizes = { 784, 8, 10 }, seed = 6 })
  p = rt.model_provenance(rt.teacher(fresh))
  T.check(p.weights_sha256 == rt.weights_sha256(fresh) and p.run == nil and p.options.random_init == false,
    "weights only: " .. rt.json_encode(p))
end)

T.test("the model teacher's 'student' option: listed, checked", function()
  local out, ok = run_cmd(retort .. " plugins model")
  T.check(ok and out:match("\n +student +string") and out:find("rt.teacher(net)", 1, true), "listed: " .. out)
  T.raises(function() rt.teacher("model", { arch = "mlp", student = "abc" }) end, "sha256", "rt.teacher(net)")
  T.raises(function()
    rt.teacher("model", { arch = "mlp", student = ("a"):rep(64), random_init = true, options = { sizes = { 3, 2 } } })
  end, "excludes")
  T.raises(function() rt.teacher(rt.loss("ce")) end, "must be a student")
  T.raises(function() rt.teacher(net, {}) end, "takes the student alone")
end)

os.execute("rm -rf " .. dir)
T.done("test_provenance.lua")
