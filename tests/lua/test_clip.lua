-- test_clip.lua: clip_grad_norm in rt.fit / rt.distill (gradient clipping
-- by global norm): rt.clip_grad_norm scales every trained gradient, the
-- losses' own included, to the limit when above it and leaves them alone
-- below it; a run records the limit in its manifest and the norm before
-- clipping in metrics.jsonl; a limit that never bites trains the same
-- weights as no clipping; bad limits are refused naming the option.
local T = dofile("tests/lua/t.lua")
local rt = require "retort"

local function data(n)
  math.randomseed(5)
  local rows, ys = {}, {}
  for i = 1, n do
    local r = {}
    for j = 1, 6 do r[j] = math.random() * 2 - 1 end
    rows[i], ys[i] = r, (r[1] + r[2] > 0) and 1 or 0
  end
  return rt.dataset(rt.tensor(rows), rt.tensor(ys, "i32"))
end

-- The gradients of a parameter list, as flat Lua tables, and their norm.
local function grads(list)
  local out, s = {}, 0
  for i, p in ipairs(list) do
    out[i] = p.grad and p.grad:reshape{ p.grad:numel() }:totable() or {}
    for _, v in ipairs(out[i]) do s = s + v * v end
  end
  return out, math.sqrt(s)
end

local function fill(list, seed)
  for i, p in ipairs(list) do
    if p.grad then p.grad:fill(((i + seed) % 5 - 2) * 0.25 + 0.1) end
  end
end

T.test("rt.clip_grad_norm: above the limit the global norm becomes the limit, below nothing changes", function()
  local s = rt.student("mlp", { sizes = { 6, 5, 2 }, seed = 1 })
  fill(s:parameters(), 1)
  local g0, n0 = grads(s:parameters())
  local norm = rt.clip_grad_norm(s, n0 * 2)
  T.near(norm, n0, 1e-6, "the norm before clipping")
  local g1 = grads(s:parameters())
  for i = 1, #g0 do
    for k = 1, #g0[i] do T.check(g1[i][k] == g0[i][k], "below the limit: untouched") end
  end
  norm = rt.clip_grad_norm(s, n0 / 3)
  T.near(norm, n0, 1e-6, "the norm before clipping")
  local g2, n2 = grads(s:parameters())
  T.near(n2, n0 / 3, 1e-5, "clipped to the limit")
  for i = 1, #g0 do
    for k = 1, #g0[i] do T.near(g2[i][k], g0[i][k] / 3, 1e-5, "scaled") end
  end
  for _, bad in ipairs{ -1, 0, 0 / 0, math.huge } do
    T.raises(function() rt.clip_grad_norm(s, bad) end, "clip_grad_norm")
  end
end)

T.test("rt.clip_grad_norm with a loss's own parameters: they count and are scaled", function()
  local ds = rt.dataset(rt.tensor((function()
    math.randomseed(2)
    local r = {}
    for i = 1, 16 do r[i] = {} for j = 1, 64 do r[i][j] = math.random() end end
    return r
  end)()), rt.tensor({ 0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2, 0 }, "i32"))
  local teacher = rt.teacher("model", { arch = "cnn", options = { input = { 1, 8, 8 },
    layers = "conv6x3,bn,relu,maxpool2,flatten,fc8,relu,fc3", seed = 3 }, random_init = true })
  local student = rt.student("cnn", { input = { 1, 8, 8 }, layers = "conv4x3,bn,relu,maxpool2,flatten,fc5,relu,fc3",
                                      seed = 2 })
  local loss = rt.loss("hint", { student = "features.2", teacher = "features.2" })
  rt.distill{ teacher = teacher, student = student, data = ds, loss = { { loss, 1, name = "hint" } }, epochs = 1,
              batch = 16, quiet = true, optimizer = rt.optim.adam{ lr = 0.01 }, clip_grad_norm = 1 }
  T.check(#loss:parameters() > 0, "the hint loss has its regressor")
  fill(student:parameters(), 2)
  fill(loss:parameters(), 3)
  local sg, sn = grads(student:parameters())
  local lg, ln = grads(loss:parameters())
  local extras = { { "loss.hint.", loss } }
  local total = math.sqrt(sn * sn + ln * ln)
  T.near(rt.clip_grad_norm(student, total / 2, extras), total, 1e-6, "the norm counts the loss's parameters")
  local _, sn2 = grads(student:parameters())
  local _, ln2 = grads(loss:parameters())
  T.near(math.sqrt(sn2 * sn2 + ln2 * ln2), total / 2, 1e-5, "both clipped together")
  T.near(ln2, ln / 2, 1e-5, "the loss's gradients scaled")
  T.check(#sg > 0 and #lg > 0, "gradients listed")
end)

T.test("rt.fit clip_grad_norm: manifest, per-step norm, SGD step of the clipped size, off = unchanged", function()
  local ds = data(32)
  local function run(clip, dir)
    local s = rt.student("mlp", { sizes = { 6, 5, 2 }, seed = 1 })
    local w0 = {}
    for i, p in ipairs(s:parameters()) do w0[i] = p.value:clone() end
    rt.fit{ student = s, data = ds, epochs = 1, batch = 32, quiet = true, out = dir, log_every = 1,
            optimizer = rt.optim.sgd{ lr = 0.5 }, clip_grad_norm = clip }
    local d2, w = 0, {}
    for i, p in ipairs(s:parameters()) do
      w[i] = p.value:reshape{ p.value:numel() }:totable()
      local a = w0[i]:reshape{ p.value:numel() }:totable()
      for k = 1, #a do d2 = d2 + (w[i][k] - a[k]) ^ 2 end
    end
    return math.sqrt(d2), w
  end
  local dir = T.tmpdir()
  local moved = run(1e-3, dir)
  -- one SGD step of lr 0.5 on gradients clipped to norm 1e-3
  T.near(moved, 0.5e-3, 1e-4, "the step is lr times the limit")
  local m = rt.json_decode(assert(io.open(dir .. "/manifest.json")):read("a"))
  T.check(m.clip_grad_norm == 1e-3, "manifest: clip_grad_norm " .. tostring(m.clip_grad_norm))
  local rows = 0
  for l in io.lines(dir .. "/metrics.jsonl") do
    local r = rt.json_decode(l)
    if r.event == "step" then
      rows = rows + 1
      T.check(type(r.grad_norm) == "number" and r.grad_norm > 1e-3, "grad_norm logged before clipping")
    end
  end
  T.check(rows == 1, "one step row")
  local _, wa = run(nil, T.tmpdir())
  local _, wb = run(1e9, T.tmpdir())
  for i = 1, #wa do
    for k = 1, #wa[i] do T.check(wa[i][k] == wb[i][k], "a limit that never bites changes nothing") end
  end
end)

T.test("clip_grad_norm: bad values are refused naming the option", function()
  local ds = data(8)
  for _, bad in ipairs{ -1, 0, 0 / 0, math.huge, "1", true } do
    local s = rt.student("mlp", { sizes = { 6, 2 } })
    T.raises(function() rt.fit{ student = s, data = ds, epochs = 1, batch = 8, quiet = true, clip_grad_norm = bad } end,
      "rt.fit", "'clip_grad_norm' must be a finite number > 0")
  end
end)

T.test("opt:step(student, lr) without extras steps (its parameter box no longer read as extras)", function()
  local s = rt.student("mlp", { sizes = { 6, 2 }, seed = 1 })
  fill(s:parameters(), 1)
  local before = s:parameters()[1].value:clone()
  local opt = rt.optim.sgd{ lr = 0.1 }
  opt:step(s, 0.1)
  local moved = (s:parameters()[1].value - before):abs():sum()
  T.check(moved > 0, "the step moved the weights: " .. moved)
end)

T.done("clip")
