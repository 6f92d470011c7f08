-- test_errors.lua: a corpus of broken recipes, each run by the retort
-- command.  Every error must point at the recipe's line (the one marked
-- "--<" in the recipe), name the function the recipe called, say the
-- words that explain it, print no library frame, never double a prefix,
-- and exit 1.  Then the NaN entry points: data, weights from files,
-- teacher outputs, loss values, gradients, the update; none may finish,
-- and none may leave a checkpoint.
local T = dofile("tests/lua/t.lua")
local rt = require "retort"
local BUILD = os.getenv("RETORT_TEST_BUILD") or "build"
local ROOT = io.popen("pwd"):read("l")
local RETORT = (BUILD:sub(1, 1) == "/" and BUILD or (ROOT .. "/" .. BUILD)) .. "/bin/retort"
local DIR = T.tmpdir()

local function write(path, s)
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
end

-- A small labelled set every recipe can build: 8 samples of 3 features,
-- labels 0/1.
local PRELUDE = [[
local rt = require "retort"
local function toy(n, f, labels)
  local x = rt.zeros{ n or 8, f or 3 }
  for i = 1, n or 8 do for j = 1, f or 3 do x:set(i, j, ((i * j) % 5) / 5) end end
  local y = rt.zeros({ n or 8 }, "i32")
  for i = 1, n or 8 do y:set(i, labels and labels[i] or (i % 2)) end
  return rt.dataset(x, y)
end
]]

local PRELUDE_LINES = select(2, PRELUDE:gsub("\n", ""))

-- Runs PRELUDE .. src as DIR/<name>.lua from DIR; returns the output (stdout
-- and stderr), the exit status and the marked line ("--<"), 0 if none.
local function run(name, src, args)
  local text = PRELUDE .. src
  local line, n = 0, 0
  for l in (text .. "\n"):gmatch("([^\n]*)\n") do
    n = n + 1
    if l:find("--<", 1, true) then line = n end
  end
  write(DIR .. "/" .. name .. ".lua", text)
  local p = io.popen(("cd %s && RETORT_QUIET=1 %s run %s.lua %s 2>&1; echo \"exit=$?\""):format(DIR, RETORT, name,
    args or ""))
  local out = p:read("a")
  p:close()
  return out, tonumber(out:match("exit=(%d+)%s*$")), line
end

-- The checks every failing recipe must pass; `...` are the words of the
-- message, in order after the position.
local function fails(name, src, prefix, ...)
  local out, code, line = run(name, src)
  local pos = ("%s.lua:%d: "):format(name, line)
  T.check(code == 1, name .. ": exit 1: " .. out)
  T.check(line > 0, name .. ": the recipe marks its line")
  local first = out:match("^[^\n]*")
  T.check(first:sub(1, #("retort: " .. pos .. prefix)) == "retort: " .. pos .. prefix,
    ("%s: starts with %q: %s"):format(name, "retort: " .. pos .. prefix, first))
  local at = 1
  for _, w in ipairs{ ... } do
    local s, e = first:find(w, at, true)
    T.check(s ~= nil, ("%s: says %q (in order): %s"):format(name, w, first))
    at = e and e + 1 or at
  end
  T.check(not out:find("scripts/retort/", 1, true), name .. ": no library position or frame: " .. out)
  T.check(not out:find("[C]: in function 'error'", 1, true) and not out:find("rethrow", 1, true),
    name .. ": no rethrow frames: " .. out)
  T.check(out:find("\n\t" .. pos:sub(1, -2), 1, true) ~= nil, name .. ": the traceback shows the line: " .. out)
  T.check(not first:find("(%S+:%d+: )%1"), name .. ": no doubled position: " .. first)
  T.check(not first:find("([%w_.']+): %1: "), name .. ": no doubled prefix: " .. first)
  return out
end

-- ------------------------------------------------------ calls and options

T.test("corpus: bad settings name the function the recipe called", function()
  fails("fit_key", [[
rt.fit{ student = rt.student("mlp", { sizes = { 3, 2 } }), data = toy(), epoch = 1 } --<
]], "rt.fit: unknown field 'epoch'", "did you mean 'epochs'")
  fails("fit_batch", [[
local s = rt.student("mlp", { sizes = { 3, 2 } })
rt.fit{ student = s, data = toy(), batch = 0 } --<
]], "rt.fit: 'batch' must be an integer >= 1, got 0")
  fails("fit_data", [[
rt.fit{ student = rt.student("mlp", { sizes = { 3, 2 } }), --<
        data = 5 }
]], "rt.fit: 'data' must be a dataset")
  fails("distill_teacherless", [[
local s = rt.student("mlp", { sizes = { 3, 2 } })
local run = rt.distill{ student = s, data = toy(), loss = rt.loss("kd") } --<
]], "rt.distill: loss 'kd' needs a teacher and none was given")
  fails("loss_option", [[
local kd = rt.loss("kd", { temprature = 2 }) --<
]], "loss 'kd': unknown option 'temprature'", "did you mean 'temperature'")
  fails("evaluate_key", [[
local s = rt.student("mlp", { sizes = { 3, 2 } })
print(rt.evaluate(s, toy(), { batchsize = 2 }).accuracy) --<
]], "rt.evaluate: unknown field 'batchsize'")
  fails("student_opts", [[
local s = rt.student("mlp", 5) --<
]], "rt.student: the options must be a table, got number")
  fails("schedule_key", [[
local sched = rt.schedule.cosine{ lrr = 1e-3 } --<
]], "rt.schedule.cosine: unknown field 'lrr'", "did you mean 'lr'")
  fails("schedule_value", [[
local sched = rt.schedule.cosine{ lr = "fast" } --<
]], "rt.schedule.cosine: 'lr' must be a finite number, got fast")
  fails("fit_schedule", [[
rt.fit{ student = rt.student("mlp", { sizes = { 3, 2 } }), data = toy(), schedule = 0.1 } --<
]], "rt.fit: 'schedule' must be an rt.schedule or a function")
  fails("fit_loss_term", [[
rt.fit{ student = rt.student("mlp", { sizes = { 3, 2 } }), data = toy(), loss = { { "ce", 1 } } } --<
]], "rt.fit: each loss term needs a loss")
  fails("distill_teacher_type", [[
rt.distill{ student = rt.student("mlp", { sizes = { 3, 2 } }), data = toy(), teacher = 5 } --<
]], "rt.distill: 'teacher' must be a teacher")
  fails("fit_eval", [[
rt.fit{ student = rt.student("mlp", { sizes = { 3, 2 } }), data = toy(), eval = "test" } --<
]], "rt.fit: 'eval' must be a dataset")
  fails("evaluate_labels", [[
local s = rt.student("mlp", { sizes = { 3, 2 } })
print(rt.evaluate(s, toy(8, 3, { 0, 1, 0, 1, 0, 1, 0, 5 })).accuracy) --<
]], "rt.evaluate: the data has labels up to 5 (6 classes), but student 'mlp' gives 2 classes", "sizes = {3, 6}")
  fails("report_dir", [[
rt.report("]] .. DIR .. [[") --<
]], "rt.report: " .. DIR .. " has neither summary.json nor manifest.json")
end)

T.test("corpus: an error in the recipe's own callback keeps its one position", function()
  -- the callback is on the same line as the call: "x.lua:N: x.lua:N:" was the old message
  local out = fails("on_epoch", [[
rt.fit{ student = rt.student("mlp", { sizes = { 3, 2 } }), data = toy(), epochs = 1, on_epoch = function() error("stop here") end } --<
]], "stop here")
  T.check(select(2, out:gsub("on_epoch%.lua:%d+:", "")) == 2, "the position once, and once in the traceback: " .. out)
  fails("weight_fn", [[
local s = rt.student("mlp", { sizes = { 3, 2 } })
rt.fit{ student = s, data = toy(), epochs = 1, loss = { { rt.loss("ce"), function() return nil + 1 end } } } --<
]], "attempt to perform arithmetic")
  fails("lua_loss_error", [[
local bad = rt.lua_loss{ name = "bad", needs_teacher = false, needs_target = true,
  forward = function(s, t, y) return s.nope + 1 end,
  backward = function(s) return s end }
rt.fit{ student = rt.student("mlp", { sizes = { 3, 2 } }), data = toy(), epochs = 1, loss = bad } --<
]], "rt.fit: step 0 (epoch 1): loss 'bad': forward: lua_loss_error.lua:" .. (PRELUDE_LINES + 2) .. ":")
end)

-- ---------------------------------------- mismatches, before the first step

T.test("corpus: data, student and teacher that do not fit are named before the first step", function()
  fails("labels_vs_classes", [[
local s = rt.student("mlp", { sizes = { 3, 4, 2 } })
rt.fit{ student = s, data = toy(8, 3, { 0, 1, 2, 3, 4, 5, 6, 7 }), epochs = 1 } --<
]], "rt.fit: the training data has labels up to 7 (8 classes), but student 'mlp' gives 2 classes",
    "sizes = {3, 4, 8}")
  fails("negative_label", [[
rt.fit{ student = rt.student("mlp", { sizes = { 3, 2 } }), data = toy(8, 3, { 0, 1, -2, 1, 0, 1, 0, 1 }) } --<
]], "rt.fit: the training data has a negative label (-2)", "or -1 for an unlabelled sample")
  fails("features_vs_input", [[
local s = rt.student("mlp", { sizes = { 4, 2 } })
rt.fit{ student = s, data = toy(8, 3), epochs = 1 } --<
]], "rt.fit: the training data (samples of [3]) does not fit the student", "has 3 values per sample",
    "sizes = {3, 2}")
  fails("teacher_classes", [[
local t = rt.teacher("model", { student = rt.student("mlp", { sizes = { 3, 5 } }) })
local s = rt.student("mlp", { sizes = { 3, 2 } })
rt.distill{ teacher = t, student = s, data = toy(), epochs = 1, --<
            loss = { { rt.loss("kd"), 0.5 }, { rt.loss("ce"), 0.5 } } }
]], "rt.distill: teacher 'model' gives 5 classes, student 'mlp' gives 2", "sizes = {3, 5}")
  fails("teacher_input", [[
local t = rt.teacher("model", { student = rt.student("mlp", { sizes = { 6, 2 } }) })
rt.distill{ teacher = t, student = rt.student("mlp", { sizes = { 3, 2 } }), data = toy(), loss = rt.loss("kd") } --<
]], "rt.distill: the training data (samples of [3]) does not fit the teacher", "the student takes 6")
  fails("eval_labels", [[
local s = rt.student("mlp", { sizes = { 3, 2 } })
rt.fit{ student = s, data = toy(), eval = toy(4, 3, { 0, 1, 2, 0 }), epochs = 1 } --<
]], "rt.fit: the eval data has labels up to 2 (3 classes), but student 'mlp' gives 2")
  fails("eval_features", [[
local s = rt.student("mlp", { sizes = { 3, 2 } })
rt.fit{ student = s, data = toy(), eval = toy(4, 5), epochs = 1 } --<
]], "rt.fit: the eval data (samples of [5]) does not fit the student")
  fails("eval_teacher_classes", [[
local s = rt.student("mlp", { sizes = { 3, 2 } })
local t = rt.teacher("model", { student = rt.student("mlp", { sizes = { 3, 3 } }) })
rt.fit{ student = s, data = toy(), eval = toy(), eval_teacher = t, epochs = 1 } --<
]], "rt.fit: the eval teacher 'model' gives 3 classes, student 'mlp' gives 2")
end)

T.test("corpus: commands say their name once", function()
  local p = io.popen(("%s report %s 2>&1; echo \"exit=$?\""):format(RETORT, DIR))
  local out = p:read("a")
  p:close()
  T.check(out:find("^retort report: " .. DIR:gsub("%p", "%%%0") .. " has neither") ~= nil, "one prefix: " .. out)
  T.check(out:find("exit=1", 1, true), "exit 1: " .. out)
  p = io.popen(("%s compare %s 2>&1"):format(RETORT, DIR))
  out = p:read("a")
  p:close()
  T.check(out:find("^retort compare: " .. DIR:gsub("%p", "%%%0") .. " has neither") ~= nil, "no 'report:': " .. out)
end)

T.test("rt.save without metadata", function()
  rt.save(DIR .. "/plain.safetensors", { { "w", rt.full({ 2, 2 }, 1.5) } })
  local t, meta = rt.load(DIR .. "/plain.safetensors")
  T.check(t.w and t.w:get(2, 2) == 1.5 and next(meta) == nil, "saved and read back")
end)

-- --------------------------------------------------------- NaN entry points

-- A checkpoint of an mlp [3, 4, 2] whose last tensor's last element is
-- NaN (as another program could write it): the path, the tensor's name
-- and its index.
local function nan_checkpoint(path)
  local s = rt.student("mlp", { sizes = { 3, 4, 2 } })
  s:save(path)
  local f = assert(io.open(path, "r+b"))
  local hlen = string.unpack("<I8", f:read(8))
  local header = rt.json_decode(f:read(hlen))
  local last, name
  for k, v in pairs(header) do
    if k ~= "__metadata__" and (not last or v.data_offsets[2] > last.data_offsets[2]) then last, name = v, k end
  end
  f:seek("set", 8 + hlen + last.data_offsets[2] - 4)
  f:write(string.pack("<I4", 0x7fc00000))
  f:close()
  local index = {}
  for i, d in ipairs(last.shape) do index[i] = d - 1 end
  return name, "[" .. table.concat(index, ", ") .. "]"
end

T.test("NaN: data is refused where it enters, naming the sample", function()
  fails("nan_dataset", [[
local x = rt.zeros{ 8, 3 }
x:set(3, 2, 0 / 0)
local ds = rt.dataset(x) --<
]], "dataset: x [8, 3]: sample 2 (0-based), value 1 is nan")
  -- an IDX file of f32 [4, 2], big-endian, with +inf at sample 3, value 0
  local b = { "\0\0\13\2", string.pack(">I4>I4", 4, 2) }
  for i = 0, 7 do b[#b + 1] = string.pack(">f", i == 6 and math.huge or i / 8) end
  write(DIR .. "/images.idx", table.concat(b))
  fails("nan_idx", [[
local ds = rt.data.idx{ images = "images.idx", scale = 1 } --<
]], "images.idx: data: sample 3 (0-based), value 0 at offset 36 is inf")
end)

T.test("NaN: weights read from a file are refused, naming the tensor and index", function()
  local name, index = nan_checkpoint(DIR .. "/nan.safetensors")
  local what = ("tensor '%s' has a non-finite value: nan at %s"):format(name, index)
  fails("nan_load", [[
local t = rt.load("nan.safetensors") --<
]], "nan.safetensors: " .. what)
  fails("nan_student_load", [[
local s = rt.student("mlp", { sizes = { 3, 4, 2 } })
s:load("nan.safetensors") --<
]], "nan.safetensors: student 'mlp' cannot use its weights: " .. what)
  fails("nan_teacher", [[
local t = rt.teacher("model", { checkpoint = "nan.safetensors" }) --<
]], "teacher 'model'", "nan.safetensors", what)
  -- resume from a checkpoint that holds a NaN
  -- (a run of one epoch first: a folder without a manifest is refused)
  fails("nan_resume", [[
local s = rt.student("mlp", { sizes = { 3, 4, 2 } })
rt.fit{ student = s, data = toy(), epochs = 1, out = "resume", quiet = true }
assert(os.execute("cp nan.safetensors resume/last.safetensors"))
rt.fit{ student = s, data = toy(), epochs = 2, out = "resume", resume = true } --<
]], "rt.fit: resume/last.safetensors: " .. what)
end)

T.test("NaN: teacher outputs name the step and the sample", function()
  -- a teacher with finite weights whose logits overflow on sample 5 only
  local setup = [[
local ds = toy()
local x = ds:x():clone()
x:set(6, 1, 1e30)
ds = rt.dataset(x, ds:y())
local net = rt.student("mlp", { sizes = { 3, 4, 2 }, seed = 1 })
for _, p in ipairs(net:parameters()) do p.value:fill(1e10) end
local t = rt.teacher("model", { student = net })
local s = rt.student("mlp", { sizes = { 3, 2 } })
]]
  fails("nan_teacher_cached", setup .. [[
rt.distill{ teacher = t, student = s, data = ds, epochs = 1, batch = 2, loss = rt.loss("kd") } --<
]], "rt.distill: teacher 'model': its logit is inf for sample 5 (0-based), class 0")
  local out = fails("nan_teacher_step", setup .. [[
rt.distill{ teacher = t, student = s, data = ds, epochs = 1, batch = 2, loss = rt.loss("kd"), --<
            cache_teacher = false, out = "teacher_step" }
]], "rt.distill: step ", "(epoch 1): teacher 'model': its logit is inf for sample 5 (0-based), class 0")
  T.check(not rt.exists(DIR .. "/teacher_step/last.safetensors"), "no checkpoint: " .. out)
  -- evaluation: a teacher's inf is never a perfect agreement
  fails("nan_teacher_eval", setup .. [[
print(rt.evaluate(s, ds, { teacher = t }).agreement) --<
]], "rt.evaluate: teacher 'model': its logit is inf for sample 5 (0-based), class 0")
end)

T.test("NaN: loss values, gradients and updates name the step and the term", function()
  local out = fails("nan_loss_value", [[
local l = rt.lua_loss{ name = "flaky", needs_teacher = false, needs_target = true,
  forward = function(s, t, y, ctx) return ctx.step == 2 and 0 / 0 or 1 end,
  backward = function(s) return s * 0 end }
rt.fit{ student = rt.student("mlp", { sizes = { 3, 2 } }), data = toy(), epochs = 1, batch = 2, loss = l, --<
        out = "loss_value" }
]], "rt.fit: step 2 (epoch 1): loss term 'flaky' is nan, from finite student logits")
  T.check(not rt.exists(DIR .. "/loss_value/last.safetensors"), "no checkpoint: " .. out)
  fails("nan_gradient", [[
local l = rt.lua_loss{ name = "badgrad", needs_teacher = false, needs_target = true,
  forward = function() return 1 end,
  backward = function(s, t, y, ctx) local g = s * 0; if ctx.step == 1 then g:set(2, 2, 1 / 0) end; return g end }
local s = rt.student("mlp", { sizes = { 3, 2 } })
rt.fit{ student = s, data = toy(), epochs = 1, batch = 2, loss = { { rt.loss("ce"), 0.5 }, { l, 0.5 } } } --<
]], "rt.fit: step 1 (epoch 1): loss term 'badgrad': its gradient is inf for sample", ", class 1")
  for _, o in ipairs{ "sgd", "adam" } do
    out = fails("nan_update_" .. o, [[
local x = rt.full({ 8, 3 }, 1000)
local s = rt.student("mlp", { sizes = { 3, 2 } })
rt.fit{ student = s, data = rt.dataset(x, toy():y()), epochs = 2, batch = 4, --<
        optimizer = rt.optim.]] .. o .. [[{ lr = 3e37 }, out = "update_]] .. o .. [[" }
]], "rt.fit: step ", "(epoch 1): optimizer " .. o .. ": the update with lr 3e+37 overflowed a finite gradient",
      "lower the learning rate", "parameter 'layers.0.weight' has a non-finite value")
    T.check(not rt.exists(DIR .. "/update_" .. o .. "/last.safetensors")
      and not rt.exists(DIR .. "/update_" .. o .. "/best.safetensors"),
      "no checkpoint: " .. out)
  end
  -- the loss is not finite: from finite logits too large for it, or from
  -- logits the student's forward overflowed; each says which
  fails("nan_loss_big_logits", [[
local s = rt.student("mlp", { sizes = { 3, 2 } })
rt.fit{ student = s, data = rt.dataset(rt.full({ 8, 3 }, 1), toy():y()), epochs = 1, batch = 4, --<
        optimizer = rt.optim.sgd{ lr = 1e38 } }
]], "rt.fit: step 1 (epoch 1): loss term 'ce' is inf, from finite student logits (largest |logit|",
    "lower the learning rate")
  fails("nan_loss_inf_logits", [[
local s = rt.student("mlp", { sizes = { 3, 2 } })
for _, p in ipairs(s:parameters()) do p.value:fill(3e38) end
rt.fit{ student = s, data = toy(), epochs = 1 } --<
]], "rt.fit: step 0 (epoch 1): loss term 'ce' is nan: the student's logit is inf for sample",
    "the student's forward overflowed")
end)

T.test("NaN: agreement and KL of a NaN teacher are errors, not perfect scores", function()
  local s = rt.tensor{ { 1, 2, 3 }, { 3, 2, 1 } }
  local t = rt.tensor{ { 0 / 0, 0 / 0, 0 / 0 }, { 3, 2, 1 } }
  T.raises(function() rt.count_agree(s, t) end, "agreement: teacher logits has a non-finite value: nan at [0, 0]")
  T.raises(function() rt.kl_sum(t, s, 1) end, "KL: teacher logits has a non-finite value")
  T.raises(function() rt.js_sum(t, s, 1) end, "JS: teacher logits has a non-finite value")
  T.raises(function() rt.count_correct(t, rt.tensor({ 0, 0 }, "i32")) end, "accuracy: logits has a non-finite value")
  T.raises(function() rt.save(DIR .. "/bad.safetensors", { { "w", t } }) end,
    "not written: tensor 'w' has a non-finite value: nan at [0, 0]")
end)

os.execute("rm -rf " .. DIR)
T.done("test_errors.lua")
