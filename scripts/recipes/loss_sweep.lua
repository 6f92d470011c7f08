-- loss_sweep.lua: the same teacher and the same student, trained with each
-- logit loss in turn, compared in one table.
--
--   retort run scripts/recipes/loss_sweep.lua [--epochs 3] [--load x.so,y.so] [--help]
--
-- The teacher (MLP 784-1200-1200-10) is mlp_teacher.lua's when
-- runs/mlp_teacher/teacher holds one (that recipe trains it), else one
-- trained here once and reused by later sweeps.  Every student is the MLP
-- 784-128-10 from the same initial weights, in the same batch order (same
-- seeds), with the same optimizer and cosine schedule.  Each loss found in
-- rt.plugins() that needs the teacher is used with the weight alpha, plus
-- cross-entropy with 1 - alpha (as the demo); CE alone is the baseline.
-- Losses keep their default options (shown in the table); --load adds
-- plugin files (e.g. build/examples/margin_rank.so) to the sweep.
-- Prints the table and writes it to OUT/results.md.
local rt = require "retort"

local o = rt.util.args(arg, {
  epochs = 3,              -- epochs of each student
  teacher_epochs = 8,      -- if a teacher must be trained here
  batch = 128,
  lr = 1e-3,
  alpha = 0.9,             -- weight of the distillation term; CE gets 1 - alpha
  seed = 1,
  limit = 0,               -- only the first N training images (0: all)
  threads = 2,
  load = "",               -- comma-separated plugin files to load first
  only = "",               -- comma-separated loss names (default: every one)
  teacher = "runs/mlp_teacher/teacher/last.safetensors", -- reused if present
  out = "runs/loss_sweep",
  quiet = true,
}, "Trains one student per distillation loss from the same teacher, seeds and batches; one table.")

rt.set_threads(o.threads)
for path in o.load:gmatch("[^,]+") do rt.load_plugin(path) end
local train = rt.data.fashion_mnist("train", { limit = o.limit })
local test = rt.data.fashion_mnist("test")
rt.mkdir(o.out)

-- 1. The teacher: the demo's, or trained here once.
local teacher_path = o.teacher
if not rt.exists(teacher_path) then
  teacher_path = o.out .. "/teacher/last.safetensors"
  local marker = o.out .. "/teacher/settings.json"
  local net = rt.student("mlp", { sizes = { 784, 1200, 1200, 10 }, dropout = 0.2, seed = o.seed })
  local settings = rt.json_encode{ epochs = o.teacher_epochs, batch = o.batch, lr = o.lr, limit = o.limit,
                                   options = net:options_json() }
  if rt.util.read_file(marker) ~= settings or not rt.exists(teacher_path) then
    print(("training the teacher (%d epochs) into %s/teacher"):format(o.teacher_epochs, o.out))
    rt.fit{ student = net, data = train, eval = test, epochs = o.teacher_epochs, batch = o.batch, seed = o.seed,
            optimizer = rt.optim.adam{ lr = o.lr }, schedule = rt.schedule.cosine{ lr = o.lr },
            out = o.out .. "/teacher", name = "teacher", quiet = o.quiet, overwrite = true }
    rt.write_atomic(marker, settings)
  end
end
local teacher = rt.teacher("model", { checkpoint = teacher_path })
local teacher_acc = rt.evaluate(teacher, test).accuracy
print(("teacher %s: %s accuracy %.2f%%"):format(teacher_path, test:name(), 100 * teacher_acc))

-- 2. The losses: every loss plugin that needs a teacher and builds with
--    its defaults, in name order.
local wanted
if o.only ~= "" then
  wanted = {}
  for n in o.only:gmatch("[^,]+") do wanted[n] = true end
end
local names = {}
for _, p in ipairs(rt.plugins()) do
  if p.kind == "loss" and (not wanted or wanted[p.name]) then
    local ok, l = pcall(rt.loss, p.name)
    if ok and l:needs() then names[#names + 1] = p.name end
  end
end
table.sort(names)

-- 3. One student per loss, same everything else.
local student_opts = { sizes = { 784, 128, 10 }, seed = o.seed + 1 }
local function run(label, loss, dir)
  local student = rt.student("mlp", student_opts)
  local t0 = rt.clock()
  local ok, r = pcall(rt.distill, {
    teacher = teacher, eval_teacher = teacher, student = student, data = train, eval = test, loss = loss,
    optimizer = rt.optim.adam{ lr = o.lr }, schedule = rt.schedule.cosine{ lr = o.lr }, epochs = o.epochs,
    batch = o.batch, seed = o.seed, quiet = o.quiet, out = o.out .. "/" .. dir, name = label,
    overwrite = true, -- the sweep owns its folders: each run replaces the last sweep's
  })
  if not ok then
    io.stderr:write(("%s: failed: %s\n"):format(label, tostring(r)))
    return { label, "failed", "", "", "" }
  end
  local e = rt.evaluate(student, test, { teacher = teacher })
  print(("%-12s %s acc %.2f%%  agreement %.2f%%  KL %.4f  (%.0fs)"):format(label, test:name(), 100 * e.accuracy,
    100 * e.agreement, e.kl, rt.clock() - t0))
  return { label, ("%.2f"):format(100 * e.accuracy), ("%.2f"):format(100 * e.agreement), ("%.4f"):format(e.kl),
           ("%.2f"):format(r.epoch_seconds or 0) }
end

local rows = { run("ce (baseline)", { { rt.loss("ce"), 1 } }, "ce") }
for _, n in ipairs(names) do
  local l = rt.loss(n)
  local label = n
  local opts = rt.json_decode(l:options_json())
  if type(opts.temperature) == "number" then label = ("%s (T=%g)"):format(n, opts.temperature) end
  rows[#rows + 1] = run(label, { { l, o.alpha }, { rt.loss("ce"), 1 - o.alpha } }, n)
end

local headers = { "loss (+ CE, alpha " .. o.alpha .. ")", test:name() .. " acc %", "agreement %", "KL(t||s)",
                  "s/epoch" }
print()
print(rt.util.format_table(headers, rows))
local note = ("\nteacher %s: %.2f%%; student 784-128-10, %d epochs each, batch %d, Adam lr %g with cosine decay, seed %d\n")
  :format(teacher_path, 100 * teacher_acc, o.epochs, o.batch, o.lr, o.seed)
rt.write_atomic(o.out .. "/results.md", rt.util.format_table(headers, rows, true) .. "\n" .. note)
print(("\ntable written to %s/results.md"):format(o.out))
