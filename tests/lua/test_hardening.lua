-- test_hardening.lua: what a red team broke (issue 8), from Lua: strings
-- with a NUL byte where they become paths, names or options; i32 tensors
-- given non-integers; narrow at the extreme integers; crafted resume
-- metadata; atomic writes over a symlink.
local T = dofile("tests/lua/t.lua")
local rt = require "retort"
local dir = T.tmpdir()

T.test("a NUL byte in a path, a name, an option or metadata is refused", function()
  local p = dir .. "/x.safetensors"
  rt.save(p, { { "w", rt.zeros{ 2 } } })
  T.raises(function() rt.load(p .. "\0ignored") end, "path contains a NUL byte at position " .. (#p + 1))
  T.raises(function() rt.read_meta(p .. "\0") end, "NUL byte")
  T.raises(function() rt.idx_read(p .. "\0") end, "NUL byte")
  T.raises(function() rt.save(p .. "\0.bak", { { "w", rt.zeros{ 2 } } }) end, "NUL byte")
  T.raises(function() rt.write_atomic(p .. "\0", "x") end, "NUL byte")
  T.raises(function() rt.save(p, { { "w\0hidden", rt.zeros{ 2 } } }) end, "tensor name contains a NUL byte")
  T.raises(function() rt.save(p, { { "w", rt.zeros{ 2 } } }, { ["k\0"] = "v" }) end, "metadata key contains a NUL")
  T.raises(function() rt.save(p, { { "w", rt.zeros{ 2 } } }, { k = "v\0" }) end, "metadata value contains a NUL")
  T.raises(function() rt.student("mlp\0evil") end, "plugin name contains a NUL byte")
  T.raises(function() rt.student("mlp", { activation = "relu\0x" }) end, "options: 'activation' contains a NUL byte")
  T.raises(function() rt.student("mlp", { ["sizes\0"] = { 4, 2 } }) end, "options: a key contains a NUL byte")
  T.raises(function() rt.lua_loss{ name = "l\0x", forward = function() return 0 end,
                                   backward = function(s) return s end } end, "'name' contains a NUL byte")
  local t = rt.tensor{ 1, 2, 3 }
  -- the file is unchanged by all of the above
  local ts = rt.load(p)
  T.check(ts.w ~= nil and ts.w:numel() == 2, "the file still holds w")
  T.check(t:numel() == 3)
end)

T.test("an i32 tensor takes integers only", function()
  T.raises(function() rt.full({ 2 }, 1.5, "i32") end, "not an integer", "i32")
  T.raises(function() rt.full({ 2 }, 1e300, "i32") end, "not an integer")
  T.raises(function() rt.full({ 2 }, 0 / 0, "i32") end, "not an integer")
  T.raises(function() rt.full({ 2 }, 2 ^ 31, "i32") end, "not an integer")
  local y = rt.full({ 2 }, -2 ^ 31, "i32")
  T.check(y:get(1) == -2147483648, "INT32_MIN is stored")
  T.raises(function() y:fill(0.5) end, "not an integer")
  T.raises(function() y:set(1, 7.25) end, "not an integer")
  T.raises(function() rt.tensor({ 1, 2.5 }, "i32") end, "not an integer")
  y:set(2, 7)
  T.check(y:get(2) == 7, "integers still go in")
  local f = rt.full({ 2 }, 1.5)
  T.check(f:get(1) == 1.5, "f32 takes any number")
end)

T.test("narrow, reshape and zeros at the extreme integers give clear errors", function()
  local t = rt.zeros{ 3, 4 }
  T.raises(function() t:narrow(1, math.mininteger, 1) end, "outside [3, 4]")
  T.raises(function() t:narrow(1, math.maxinteger, math.maxinteger) end, "outside [3, 4]")
  T.raises(function() t:narrow(2, 1, math.mininteger) end, "outside")
  T.raises(function() t:reshape{ math.maxinteger, 2 } end, "overflows")
  T.raises(function() t:reshape{ -1, 0 } end, "cannot infer")
  T.raises(function() rt.zeros{ math.maxinteger, math.maxinteger, 0 } end, "overflows")
  T.raises(function() rt.zeros{ 1 << 62, 4 } end, "overflows")
  T.raises(function() rt.zeros{ -1 } end, "non-negative")
  T.raises(function() rt.schedule_lr({ kind = "step", step_size = 1e300 }, 1) end, "step_size", "integer")
end)

T.test("atomic writes refuse a symlink and a folder", function()
  local target, link = dir .. "/target.json", dir .. "/link.json"
  rt.write_atomic(target, "keep")
  T.check(os.execute(("ln -s %q %q"):format(target, link)), "symlink made")
  T.raises(function() rt.write_atomic(link, "new") end, link, "symbolic link")
  T.raises(function() rt.save(link, { { "w", rt.zeros{ 1 } } }) end, "symbolic link")
  local f = assert(io.open(target)); local s = f:read("a"); f:close()
  T.check(s == "keep", "the link's target is untouched")
  rt.mkdir(dir .. "/folder")
  T.raises(function() rt.write_atomic(dir .. "/folder", "x") end, "is a folder")
end)

T.test("an error about files names the files", function()
  local function idx(path, bytes) local f = assert(io.open(path, "wb")); f:write(bytes); f:close() end
  local im, lb = dir .. "/three-images.idx", dir .. "/two-labels.idx"
  idx(im, "\0\0\8\2\0\0\0\3\0\0\0\2" .. ("\1"):rep(6))
  idx(lb, "\0\0\8\1\0\0\0\2\1\2")
  T.raises(function() rt.data.idx{ images = im, labels = lb } end, im, lb, "3 images", "2 labels")
  T.raises(function() rt.data.idx{ images = lb .. ".missing" } end, lb .. ".missing", "No such file")
  T.raises(function() rt.teacher("model", { checkpoint = im }) end, im)
  T.raises(function() rt.sha256_file(dir .. "/nope") end, dir .. "/nope")
end)

-- A tiny run to resume: 40 samples, 3 classes, 4 steps an epoch.
local x, y = rt.zeros{ 40, 6 }, rt.zeros({ 40 }, "i32")
for i = 1, 40 do
  y:set(i, i % 3)
  for j = 1, 6 do x:set(i, j, ((i * 7 + j * 3) % 11) / 11 - 0.5 + (i % 3 == j % 3 and 0.5 or 0)) end
end
local data = rt.dataset(x, y)
local function fit(out, epochs, resume)
  local s = rt.student("mlp", { sizes = { 6, 5, 3 }, seed = 3 })
  return rt.fit{ student = s, data = data, epochs = epochs, batch = 10, out = out, resume = resume, quiet = true,
                 optimizer = rt.optim.adam{ lr = 1e-2 } }
end

-- Rewrites the run's last checkpoint with metadata changed by edit(meta).
local function craft(out, edit)
  local ck = out .. "/last.safetensors"
  local tensors, meta, names = rt.load(ck)
  local list = {}
  for _, n in ipairs(names) do list[#list + 1] = { n, tensors[n] } end
  edit(meta, list)
  rt.save(ck, list, meta)
  return ck
end

T.test("crafted resume metadata gives a clear error naming the file, never a wrong run", function()
  local cases = {
    { function(m) m["run.epoch"] = "-1" end, "'run.epoch' is '-1', not a non-negative integer" },
    { function(m) m["run.epoch"] = nil end, "'run.epoch' is missing" },
    { function(m) m["run.epoch"] = "0.5" end, "not a non-negative integer" },
    { function(m) m["run.epoch"] = "99999999999999999999" end, "not a non-negative integer" },
    { function(m) m["run.epoch"] = "7" end, "ends epoch 8 at step 4; this run has 3 epochs of 4 steps" },
    { function(m) m["run.step"] = "400" end, "ends epoch 1 at step 400" },
    { function(m) m["run.step"] = "3" end, "(epoch 1 ends at step 4)" },
    { function(m) m["run.step"] = "-4" end, "'run.step' is '-4'" },
    { function(m) m["run.optim_steps"] = "-2" end, "'run.optim_steps' is '-2'" },
    { function(m) m["run.rng"] = "zz" end, "'run.rng' is not an RNG state" },
    { function(m) m["run.history"] = "{oops" end, "'run.history' is not a JSON list" },
    { function(m) m["retort.options"] = '{"sizes":[6,9,3]}' end, "holds a mlp student with options" },
    { function(m) m["retort.plugin"] = "other" end, "holds a other student" },
  }
  for i, c in ipairs(cases) do
    local out = dir .. "/resume" .. i
    fit(out, 1)
    local ck = craft(out, c[1])
    T.raises(function() fit(out, 3, true) end, ck, c[2])
  end
  -- an honest checkpoint still resumes
  local out = dir .. "/resume_ok"
  fit(out, 1)
  local run = fit(out, 2, true)
  T.check(#run.history == 2, "resumed to epoch 2")
end)

T.done("test_hardening.lua")
