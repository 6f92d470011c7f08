-- test_lua_loss.lua: tensor math for Lua, losses written in Lua (rt.lua_loss)
-- through the checked calls, the gradient checker and rt.distill, and the
-- weight/temperature schedules of loss terms.
local T = dofile("tests/lua/t.lua")
local rt = require "retort"

local function close(a, b, tol)
  return math.abs(a - b) <= (tol or 1e-6) * math.max(1, math.abs(b))
end

-- Every entry of tensor t near the nested table want.
local function all_near(t, want, tol)
  local got = t:totable()
  local function walk(g, w)
    if type(w) == "number" then return close(g, w, tol) end
    if #g ~= #w then return false end
    for i = 1, #w do if not walk(g[i], w[i]) then return false end end
    return true
  end
  return walk(got, want)
end

-- Random logits [n, c] from a fixed stream.
local function randn(n, c, seed)
  math.randomseed(seed)
  local rows = {}
  for i = 1, n do
    rows[i] = {}
    for j = 1, c do rows[i][j] = 4 * math.random() - 2 end
  end
  return rt.tensor(rows)
end

T.test("tensor ops: arithmetic with broadcasting, numbers on either side", function()
  local a = rt.tensor{ { 1, 2, 3 }, { 4, 5, 6 } }
  T.check(all_near(a + 1, { { 2, 3, 4 }, { 5, 6, 7 } }), "t + n")
  T.check(all_near(10 - a, { { 9, 8, 7 }, { 6, 5, 4 } }), "n - t")
  T.check(all_near(a * a, { { 1, 4, 9 }, { 16, 25, 36 } }), "t * t elementwise")
  T.check(all_near(a / 2, { { 0.5, 1, 1.5 }, { 2, 2.5, 3 } }), "t / n")
  T.check(all_near(-a, { { -1, -2, -3 }, { -4, -5, -6 } }), "-t")
  local row = rt.tensor{ 10, 20, 30 }
  T.check(all_near(a + row, { { 11, 22, 33 }, { 14, 25, 36 } }), "[2,3] + [3]: per column")
  local col = rt.tensor{ { 1 }, { 2 } }
  T.check(all_near(a:sub(col), { { 0, 1, 2 }, { 2, 3, 4 } }), "[2,3] - [2,1]: per row")
  T.raises(function() return a + rt.tensor{ 1, 2 } end, "do not broadcast", "[2, 3]", "[2]")
  local b = a:clone()
  T.check(b:mul_(2) == b and all_near(b, { { 2, 4, 6 }, { 8, 10, 12 } }), "mul_ in place returns self")
  b:add_(row):sub_(1):div_(2)
  T.check(all_near(b, { { 5.5, 11.5, 17.5 }, { 8.5, 14.5, 20.5 } }), "add_/sub_/div_")
  T.raises(function() row:clone():add_(a) end, "cannot take the broadcast")
  -- views: a narrow view's math reads through its strides; in place writes through
  local v = a:narrow(2, 2, 2)
  T.check(all_near(v * 1, { { 2, 3 }, { 5, 6 } }), "strided view")
  v:mul_(0)
  T.check(all_near(a, { { 1, 0, 0 }, { 4, 0, 0 } }), "in place on a view writes the base")
  T.raises(function() return rt.tensor({ 1, 2 }, "i32") + 1 end, "needs f32")
end)

T.test("tensor ops: exp, log, abs, sqrt, square, pow, clamp", function()
  local a = rt.tensor{ -1, 0, 2 }
  T.check(all_near(a:exp(), { math.exp(-1), 1, math.exp(2) }), "exp")
  T.check(all_near(rt.tensor{ 1, math.exp(1) }:log(), { 0, 1 }), "log")
  T.check(all_near(a:abs(), { 1, 0, 2 }), "abs")
  T.check(all_near(rt.tensor{ 4, 9 }:sqrt(), { 2, 3 }), "sqrt")
  T.check(all_near(a:square(), { 1, 0, 4 }), "square")
  T.check(all_near(a:pow(3), { -1, 0, 8 }), "pow")
  T.check(all_near(a:clamp(0), { 0, 0, 2 }) and all_near(a:clamp(nil, 1), { -1, 0, 1 }), "clamp one side")
  T.check(all_near(a:clamp(-0.5, 0.5), { -0.5, 0, 0.5 }), "clamp both")
  T.raises(function() a:clamp(1, 0) end, "min")
end)

T.test("tensor ops: softmax / log_softmax with a temperature, by hand", function()
  local z = rt.tensor{ { 1, 2, 3 }, { 0, 0, 0 } }
  local e = { math.exp(1), math.exp(2), math.exp(3) }
  local s = e[1] + e[2] + e[3]
  T.check(all_near(z:softmax(), { { e[1] / s, e[2] / s, e[3] / s }, { 1 / 3, 1 / 3, 1 / 3 } }), "softmax T=1")
  local h = { math.exp(0.5), math.exp(1), math.exp(1.5) }
  local hs = h[1] + h[2] + h[3]
  T.check(all_near(z:log_softmax(2), { { math.log(h[1] / hs), math.log(h[2] / hs), math.log(h[3] / hs) },
    { -math.log(3), -math.log(3), -math.log(3) } }, 1e-5), "log_softmax T=2")
  T.raises(function() z:softmax(0) end, "temperature")
end)

T.test("tensor ops: sum/mean/max along a dim, item, gather, one_hot, *_like", function()
  local a = rt.tensor{ { 1, 2, 3 }, { 4, 5, 6 } }
  T.check(a:sum() == 21 and a:mean() == 3.5 and a:max() == 6, "over everything: numbers")
  T.check(all_near(a:sum(1), { 5, 7, 9 }) and all_near(a:sum(2), { 6, 15 }), "sum along dims, 1-based")
  T.check(all_near(a:mean(2, true), { { 2 }, { 5 } }), "mean keepdim")
  T.check(all_near(a:max(2), { 3, 6 }) and all_near(a:max(1), { 4, 5, 6 }), "max along dims")
  T.check(a:narrow(1, 2, 1):narrow(2, 3, 1):item() == 6, "item")
  T.raises(function() a:item() end, "one element")
  local y = rt.tensor({ 2, 0 }, "i32") -- class ids: 0-based data
  T.check(all_near(a:gather(y), { 3, 4 }), "gather picks t[n, y[n]]")
  T.check(all_near(rt.one_hot(y, 3), { { 0, 0, 1 }, { 1, 0, 0 } }), "one_hot")
  T.raises(function() a:gather(rt.tensor({ 3, 0 }, "i32")) end, "label 3 at row 1 is outside [0, 3)")
  T.check(all_near(rt.zeros_like(a), { { 0, 0, 0 }, { 0, 0, 0 } }) and all_near(rt.ones_like(y), { 1, 1 }), "*_like")
  T.check(rt.full_like(a, 7):sum() == 42, "full_like")
end)

-- Hinton KD written in Lua: T^2 KL(p_t || p_s), batchmean, as plugins/losses/kd.c.
local function lua_kd(extra)
  local spec = {
    name = "lua_kd",
    options = { temperature = { 4, min = 1e-4, max = 1e4, help = "softmax temperature" } },
    forward = function(s, t, y, ctx)
      local T_ = ctx.opts.temperature
      local lpt = t:log_softmax(T_)
      return (lpt:exp() * (lpt - s:log_softmax(T_))):sum() * T_ * T_ / s:size(1)
    end,
    backward = function(s, t, y, ctx)
      local T_ = ctx.opts.temperature
      return (s:softmax(T_) - t:softmax(T_)) * (T_ / s:size(1))
    end,
  }
  for k, v in pairs(extra or {}) do spec[k] = v end
  return rt.lua_loss(spec)
end

T.test("lua loss: matches the C kd plugin's value and gradient", function()
  local s, t = randn(8, 10, 1), randn(8, 10, 2)
  for _, temp in ipairs{ 1, 4 } do
    local l, c = lua_kd(), rt.loss("kd", { temperature = temp })
    l:set("temperature", temp)
    T.near(l:forward(s, t), c:forward(s, t), 1e-5, "value at T=" .. temp)
    local gl, gc = l:backward(s, t):clone(), c:backward(s, t)
    local diff = (gl - gc):abs():max()
    T.check(diff < 1e-6, ("gradient at T=%g differs by %g"):format(temp, diff))
    T.check(gl:abs():max() > 1e-4, "the gradient is not trivially zero")
  end
  local l = lua_kd()
  T.check(l:kind() == "loss" and l:name() == "lua_kd" and l:options_json() == '{"temperature":4}', l:options_json())
  T.raises(function() l:set("temperature", -1) end, "loss 'lua_kd'", "out of range")
  T.raises(function() l:set("temprature", 2) end, "temprature")
end)

T.test("lua loss: backward accumulates scale * grad into a given buffer", function()
  local s, t = randn(4, 5, 3), randn(4, 5, 4)
  local l = lua_kd()
  local g1 = l:backward(s, t):clone()
  local acc = rt.ones_like(s)
  l:backward(s, t, nil, 0, 0, 0.5, acc)
  T.check(((acc - 1) - g1 * 0.5):abs():max() < 1e-7, "grad += 0.5 * g")
end)

T.test("lua loss: passes the C gradient checker; a wrong backward does not", function()
  local r = rt.gradcheck(lua_kd(), { N = 4, C = 10, seed = 3 })
  T.check(r.max_rel_err <= 1e-3 and r.checked == 40, ("%g at %s"):format(r.max_rel_err, r.worst))
  local wrong = lua_kd{ name = "wrong_kd", backward = function(s, t, y, ctx)
    return (s:softmax(4) - t:softmax(4)) * (8 / s:size(1)) -- twice the gradient
  end }
  local w = rt.gradcheck(wrong, { N = 4, C = 10 })
  T.check(w.max_rel_err > 0.1, "a doubled gradient is caught: " .. w.max_rel_err)
end)

T.test("lua loss: errors are clean Lua errors naming the loss", function()
  local s, t = randn(2, 3, 5), randn(2, 3, 6)
  local boom = lua_kd{ name = "boom", forward = function() error("exploded here") end }
  T.raises(function() boom:forward(s, t) end, "loss 'boom': forward:", "exploded here")
  T.raises(function() rt.gradcheck(boom) end, "loss 'boom'", "exploded here")
  local shape = lua_kd{ name = "badshape", backward = function(s) return s:sum(2) end }
  T.raises(function() shape:backward(s, t) end, "loss 'badshape': backward", "[2]", "[2, 3]")
  local nonum = lua_kd{ name = "nonum", forward = function() return "x" end }
  T.raises(function() nonum:forward(s, t) end, "forward must return a number, got string")
  -- the host's checks come first, exactly as for a C plugin
  T.raises(function() lua_kd():forward(s, randn(2, 4, 7)) end, "loss 'lua_kd'", "[2, 3] vs teacher logits [2, 4]")
  T.raises(function() lua_kd():forward(s) end, "needs a teacher")
  T.raises(function() rt.lua_loss{ name = "Bad Name", forward = print, backward = print } end, "[a-z0-9_]+")
  T.raises(function() rt.lua_loss{ name = "x", forward = print } end, "must be functions")
  T.raises(function() rt.lua_loss{ name = "x", forward = print, backward = print, bogus = 1 } end, "unknown field 'bogus'")
  T.raises(function() lua_kd():forward(s, t); return rt.lua_loss({ name = "o", forward = print, backward = print,
    options = { temperature = 4 } }, { temprature = 1 }) end, "unknown option 'temprature'", "did you mean")
end)

T.test("lua loss: targets reach it only when it needs them; ctx has epoch and step", function()
  local seen = {}
  local l = rt.lua_loss{ name = "ce_lua", needs_teacher = false, needs_target = true,
    forward = function(s, t, y, ctx)
      seen.t, seen.y, seen.epoch, seen.step = t, y, ctx.epoch, ctx.step
      return -s:log_softmax():gather(y):mean()
    end,
    backward = function(s, t, y) return (s:softmax() - rt.one_hot(y, s:size(2))) / s:size(1) end }
  local s, y = randn(5, 4, 8), rt.tensor({ 0, 3, 1, 1, 2 }, "i32")
  local v = l:forward(s, nil, y, 2, 17)
  T.check(seen.t == nil and seen.y ~= nil and seen.epoch == 2 and seen.step == 17, "arguments")
  T.near(v, rt.loss("ce"):forward(s, nil, y), 1e-6, "CE in Lua equals the C ce plugin")
  T.check(rt.gradcheck(l, { N = 6, C = 5 }).max_rel_err <= 1e-3, "gradient")
  T.raises(function() l:forward(s, nil, rt.tensor({ 0, 9, 1, 1, 2 }, "i32")) end, "target label 9 at row 1")
end)

local train = rt.data.fashion_mnist("train", { limit = 3000 })
local test = rt.data.fashion_mnist("test", { limit = 2000 })
local tnet = rt.student("mlp", { sizes = { 784, 64, 10 }, seed = 5 })
rt.fit{ student = tnet, data = train, epochs = 2, quiet = true, optimizer = rt.optim.adam{ lr = 2e-3 } }
local teacher = rt.teacher("model", { student = tnet })

T.test("lua loss: trains a student inside rt.distill (beats chance by far)", function()
  local student = rt.student("mlp", { sizes = { 784, 32, 10 }, seed = 2 })
  local run = rt.distill{ teacher = teacher, student = student, data = train, eval = test, epochs = 2, quiet = true,
                          loss = { { lua_kd(), 1 } }, optimizer = rt.optim.adam{ lr = 2e-3 } }
  T.check(run.test.accuracy > 0.5, "accuracy " .. run.test.accuracy)
  T.check(run.history[2].train.lua_kd < run.history[1].train.lua_kd, "the Lua loss went down")
end)

T.test("schedules: a temperature function changes the loss's temperature; weights get (epoch, step)", function()
  local temps, calls = {}, {}
  local probe = lua_kd{ name = "probe", forward = function(s, t, y, ctx)
    temps[#temps + 1] = { ctx.epoch, ctx.opts.temperature }
    return 0
  end, backward = function(s) return rt.zeros_like(s) end }
  local student = rt.student("mlp", { sizes = { 784, 8, 10 }, seed = 3 })
  local small = rt.data.fashion_mnist("train", { limit = 512 })
  rt.distill{ teacher = teacher, student = student, data = small, epochs = 2, batch = 256, quiet = true,
              loss = { { probe, function(epoch, step)
                         calls[#calls + 1] = { epoch, step }
                         return 1
                       end, temperature = rt.schedule.steps{ values = { 4, 2 }, every = 1 } },
                       { rt.loss("ce"), 1 } } }
  T.check(#temps == 4 and temps[1][2] == 4 and temps[2][2] == 4 and temps[3][2] == 2 and temps[4][2] == 2,
    "temperature 4 in epoch 1, 2 in epoch 2: " .. rt.json_encode(temps))
  T.check(temps[3][1] == 1, "epochs count from 0")
  T.check(#calls == 4 and calls[1][1] == 0 and calls[1][2] == 0 and calls[4][1] == 1 and calls[4][2] == 3,
    "weight called with (epoch, step): " .. rt.json_encode(calls))
  -- a C loss too: its value follows the temperature it is set to
  local kd = rt.loss("kd", { temperature = 1 })
  local s, t = randn(4, 10, 9), randn(4, 10, 10)
  local at1 = kd:forward(s, t)
  rt.distill{ teacher = teacher, student = rt.student("mlp", { sizes = { 784, 8, 10 } }), data = small, epochs = 1,
              batch = 512, quiet = true, loss = { { kd, 1, temperature = function() return 3 end } } }
  T.check(not close(kd:forward(s, t), at1) and close(kd:forward(s, t), rt.loss("kd", { temperature = 3 }):forward(s, t)),
    "kd now runs at T = 3")
  T.raises(function()
    rt.distill{ teacher = teacher, student = student, data = small, epochs = 1, quiet = true,
                loss = { { rt.loss("ce"), 1, temperature = 2 } } }
  end, "loss 'ce' has no temperature option")
  T.raises(function()
    rt.distill{ teacher = teacher, student = student, data = small, epochs = 1, quiet = true,
                loss = { { rt.loss("kd"), 1, temperature = "hot" } } }
  end, "a temperature must be a number or a function")
end)

T.test("schedules: linear_warmup and steps by hand", function()
  local w = rt.schedule.linear_warmup{ from = 0, to = 1, steps = 10 }
  T.check(w(0, 0) == 0 and close(w(0, 5), 0.5) and w(3, 10) == 1 and w(9, 99) == 1, "by steps")
  local e = rt.schedule.linear_warmup{ from = 1, to = 3, epochs = 4 }
  T.check(e(0, 123) == 1 and close(e(2, 0), 2) and e(4, 0) == 3, "by epochs")
  local s = rt.schedule.steps{ values = { 8, 4, 2 }, every = 2 }
  T.check(s(0, 0) == 8 and s(1, 50) == 8 and s(2, 0) == 4 and s(5, 0) == 2 and s(50, 0) == 2, "steps by epoch")
  local u = rt.schedule.steps{ values = { 1, 0 }, every = 100, unit = "step" }
  T.check(u(5, 99) == 1 and u(0, 100) == 0, "steps by step")
  T.raises(function() rt.schedule.linear_warmup{ from = 0, to = 1 } end, "exactly one of 'steps' and 'epochs'")
  T.raises(function() rt.schedule.steps{ values = {}, every = 1 } end, "non-empty")
  T.raises(function() rt.schedule.steps{ values = { 1 }, evry = 1 } end, "did you mean 'every'")
end)

T.test("boolean and string options of a Lua loss: given at creation, changed by set, checked by type", function()
  local seen
  local l = rt.lua_loss({ name = "opt_kinds", needs_teacher = false,
    options = { squared = true, mode = "sum", scale = 2 },
    forward = function(s, t, y, ctx) seen = { ctx.opts.squared, ctx.opts.mode, ctx.opts.scale }; return 0 end,
    backward = function(s) return s * 0 end }, { mode = "mean" })
  local s = rt.tensor{ { 1, 2 }, { 3, 4 } }
  l:forward(s)
  T.check(seen[1] == true and seen[2] == "mean" and seen[3] == 2, "at creation: " .. rt.json_encode(seen))
  T.check(l:set("squared", false) == l and l:set("mode", "max") == l, "set returns the loss")
  l:set("scale", 3)
  l:forward(s)
  T.check(seen[1] == false and seen[2] == "max" and seen[3] == 3, "after set: " .. rt.json_encode(seen))
  local o = rt.json_decode(l:options_json())
  T.check(o.squared == false and o.mode == "max" and o.scale == 3, "options_json follows set: " .. l:options_json())
  T.raises(function() l:set("squared", "no") end, "option 'squared' takes a boolean, got a string")
  T.raises(function() l:set("mode", true) end, "option 'mode' takes a string, got a boolean")
  T.raises(function() l:set("scale", false) end, "option 'scale' takes a number, got a boolean")
  T.raises(function() l:set("squared", 1) end, "option 'squared' is a bool")
  T.raises(function() l:set("squard", false) end, "unknown option 'squard'", "did you mean 'squared'")
  T.raises(function() rt.loss("kd"):set("t2", false) end,
    "loss 'kd': option 't2' is a boolean, and only number options change after creation")
  T.raises(function() rt.lua_loss{ name = "bad_opt", forward = print, backward = print, options = { f = {} } } end,
    "option 'f' needs a default number, boolean or string")
end)

T.done("test_lua_loss.lua")
