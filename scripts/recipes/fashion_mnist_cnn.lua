-- fashion_mnist_cnn.lua: the demo's comparisons over several seeds, with
-- feature losses.  The CNN teacher of the demo (reused from its run
-- folder, or trained here with the same settings), then for each seed:
--
--   MLP 784-128-10:  baseline (CE), KD
--   CNN 16-32:       baseline (CE), KD, KD + hint (FitNet), KD + attention
--                    transfer, KD + RKD
--
-- each student of a seed from the same initial weights and batch order.
-- Prints test accuracy and agreement with the teacher per run, then mean
-- and standard deviation (over seeds, n - 1) per method, and writes them
-- to OUT/results.md.
--
--   retort run scripts/recipes/fashion_mnist_cnn.lua [--seeds 3] [--help]
local rt = require "retort"

local o = rt.util.args(arg, {
  seeds = 3,
  epochs = 20,             -- MLP students (as in the demo)
  cnn_epochs = 10,         -- CNN students (as in the demo)
  teacher_epochs = 12,     -- when the teacher is trained here
  teacher = "runs/fashion_mnist/teacher/best.safetensors", -- make demo writes it
  batch = 128,
  lr = 1e-3,
  temperature = 1,
  alpha = 0.9,
  hint_weight = 1e-3,      -- hint values are ~1e3 (a sum over 64 x 14 x 14)
  attention_weight = 500,
  rkd_weight = 1,
  only = "",               -- comma-separated methods to run (default: all)
  limit = 0,
  threads = 2,
  out = "runs/fashion_mnist_cnn",
  quiet = false,
}, "Baseline, KD and KD + feature losses for an MLP and a small CNN student over several seeds.")

rt.set_threads(o.threads)
local all = rt.data.fashion_mnist("train", { limit = o.limit })
local train, val = all:split{ n = math.min(5000, all:size() // 6), seed = 1 }
local test = rt.data.fashion_mnist("test")

if not rt.exists(o.teacher) then
  local dir = o.out .. "/teacher"
  print(("teacher: %s does not exist (make demo writes it); training it in %s"):format(o.teacher, dir))
  local net = rt.student("cnn", {
    layers = "conv32x3,bn,relu,maxpool2,conv64x3,bn,relu,maxpool2,flatten,fc256,relu,dropout0.3,fc10", seed = 1 })
  rt.fit{ student = net, data = train, val = val, eval = test, epochs = o.teacher_epochs, batch = o.batch,
          optimizer = rt.optim.adam{ lr = o.lr }, schedule = rt.schedule.cosine{ lr = o.lr }, seed = 1, out = dir,
          quiet = o.quiet, name = "teacher", overwrite = true }
  o.teacher = dir .. "/best.safetensors"
end
local teacher = rt.teacher("model", { checkpoint = o.teacher })
local teacher_acc = rt.evaluate(teacher, test).accuracy
print(("teacher %s: %s acc %.2f%%"):format(o.teacher, test:name(), 100 * teacher_acc))

local mlp = function(seed) return "mlp", { sizes = { 784, 128, 10 }, seed = seed + 1 } end
local cnn = function(seed)
  return "cnn", { layers = "conv16x3,bn,relu,maxpool2,conv32x3,bn,relu,maxpool2,flatten,fc10", seed = seed + 2 }
end
local function kd()
  return { { rt.loss("kd", { temperature = o.temperature }), o.alpha }, { rt.loss("ce"), 1 - o.alpha } }
end
local function with(extra)
  return function()
    local l = kd()
    l[#l + 1] = extra()
    return l
  end
end
-- student features.6 ([N, 32, 14, 14]) against the teacher's ([N, 64, 14, 14])
local methods = {
  { name = "mlp_baseline", model = mlp, epochs = o.epochs },
  { name = "mlp_kd", model = mlp, epochs = o.epochs, loss = kd },
  { name = "cnn_baseline", model = cnn, epochs = o.cnn_epochs },
  { name = "cnn_kd", model = cnn, epochs = o.cnn_epochs, loss = kd },
  { name = "cnn_kd_hint", model = cnn, epochs = o.cnn_epochs, loss = with(function()
      return { rt.loss("hint", { student = "features.6", teacher = "features.6" }), o.hint_weight } end) },
  { name = "cnn_kd_attention", model = cnn, epochs = o.cnn_epochs, loss = with(function()
      return { rt.loss("attention", { student = "features.6", teacher = "features.6" }), o.attention_weight } end) },
  { name = "cnn_kd_rkd", model = cnn, epochs = o.cnn_epochs, loss = with(function()
      return { rt.loss("rkd", { student = "features.7", teacher = "features.7" }), o.rkd_weight } end) },
}
local wanted
if o.only ~= "" then
  wanted = {}
  for m in o.only:gmatch("[^,]+") do wanted[m] = true end
  for m in pairs(wanted) do
    local known = false
    for _, x in ipairs(methods) do known = known or x.name == m end
    if not known then error(("--only: no method '%s'"):format(m), 0) end
  end
end

local results = {} -- method -> { acc = {...}, agree = {...} }
for seed = 1, o.seeds do
  for _, m in ipairs(methods) do
    if not wanted or wanted[m.name] then
      local plugin, opts = m.model(seed)
      local net = rt.student(plugin, opts)
      local cfg = { student = net, data = train, epochs = m.epochs, batch = o.batch, seed = seed,
                    quiet = o.quiet, optimizer = rt.optim.adam{ lr = o.lr }, schedule = rt.schedule.cosine{ lr = o.lr },
                    out = ("%s/seed%d/%s"):format(o.out, seed, m.name), name = ("%s seed %d"):format(m.name, seed),
                    overwrite = true, eval_teacher = teacher }
      if m.loss then
        cfg.teacher, cfg.loss = teacher, m.loss()
        rt.distill(cfg)
      else
        rt.fit(cfg)
      end
      local e = rt.evaluate(net, test, { teacher = teacher, quiet = o.quiet })
      local r = results[m.name] or { acc = {}, agree = {} }
      results[m.name] = r
      r.acc[#r.acc + 1], r.agree[#r.agree + 1] = 100 * e.accuracy, 100 * e.agreement
      print(("seed %d  %-18s acc %.2f%%  agreement %.2f%%"):format(seed, m.name, 100 * e.accuracy, 100 * e.agreement))
    end
  end
end

local function mean_sd(v)
  local s = 0
  for _, x in ipairs(v) do s = s + x end
  local mu = s / #v
  local q = 0
  for _, x in ipairs(v) do q = q + (x - mu) ^ 2 end
  return mu, #v > 1 and math.sqrt(q / (#v - 1)) or 0
end
local rows = {}
for _, m in ipairs(methods) do
  local r = results[m.name]
  if r then
    local a, sa = mean_sd(r.acc)
    local g, sg = mean_sd(r.agree)
    rows[#rows + 1] = { m.name, ("%.2f +- %.2f"):format(a, sa), ("%.2f +- %.2f"):format(g, sg), #r.acc }
  end
end
local headers = { "method", test:name() .. " acc %", "agreement %", "seeds" }
print(("\nteacher %.2f%%; mean +- standard deviation over seeds 1..%d"):format(100 * teacher_acc, o.seeds))
print(rt.util.format_table(headers, rows))
rt.mkdir(o.out)
rt.write_atomic(o.out .. "/results.md", ("teacher %.2f%%, seeds 1..%d\n\n"):format(100 * teacher_acc, o.seeds)
  .. rt.util.format_table(headers, rows, true) .. "\n")
print("results: " .. o.out .. "/results.md")
