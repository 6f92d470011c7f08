-- mlp_teacher.lua: the first demo (before issue 10).  Trains a teacher MLP 784-1200-1200-10 on
-- Fashion-MNIST, then the student MLP 784-128-10 twice from the same
-- initial weights and the same batch order: once on the labels alone (the
-- baseline) and once distilled from the teacher (KD + CE).  Prints one
-- table: test accuracy, top-1 agreement with the teacher, KL to the
-- teacher, parameters, seconds per epoch.
--
--   retort run scripts/recipes/mlp_teacher.lua [--epochs 10] [--help]
--
-- Why T = 1: with a cosine-decayed baseline this strong, softer targets
-- (T = 2..4) lower the student's top-1 agreement with the teacher below the
-- baseline's on this pair; T = 1 raises it and lowers KL(t||s).  The README
-- has the sweep and the command that made it.
local rt = require "retort"

local o = rt.util.args(arg, {
  teacher_epochs = 12,     -- epochs of teacher training
  epochs = 20,             -- epochs of each student
  batch = 128,
  lr = 1e-3,               -- Adam, decayed to 0 by a cosine schedule
  teacher_dropout = 0.2,
  temperature = 1,         -- KD temperature (see below)
  alpha = 0.9,             -- weight of the KD term; CE gets 1 - alpha
  seed = 1,
  limit = 0,               -- use only the first N training samples (0: all)
  threads = 2,             -- BLAS threads
  out = "runs/mlp_teacher",
  retrain_teacher = false, -- ignore a teacher checkpoint from an earlier run
  quiet = false,
}, "Distils a 784-1200-1200-10 MLP teacher into a 784-128-10 student on Fashion-MNIST.")

rt.set_threads(o.threads)
local train = rt.data.fashion_mnist("train", { limit = o.limit })
local test = rt.data.fashion_mnist("test")
print(("retort %s: Fashion-MNIST, %d training and %d test images, %d BLAS threads (%s)")
  :format(rt.version, train:size(), test:size(), rt.threads(), rt.blas_core()))

-- 1. The teacher, trained once and reused by later runs (a checkpoint
--    whose settings match is loaded instead of retrained).
local teacher_dir = o.out .. "/teacher"
local teacher_opts = { sizes = { 784, 1200, 1200, 10 }, dropout = o.teacher_dropout, seed = o.seed }
local teacher_net = rt.student("mlp", teacher_opts)
local settings = rt.json_encode{ epochs = o.teacher_epochs, batch = o.batch, lr = o.lr, limit = o.limit, schedule = "cosine",
                                 options = teacher_net:options_json() }
local marker = teacher_dir .. "/settings.json"
local teacher_seconds
if not o.retrain_teacher and rt.util.read_file(marker) == settings and rt.exists(teacher_dir .. "/last.safetensors") then
  print("teacher: reusing " .. teacher_dir .. "/last.safetensors (--retrain-teacher to train it again)")
else
  local run = rt.fit{ student = teacher_net, data = train, eval = test, epochs = o.teacher_epochs, batch = o.batch,
                      optimizer = rt.optim.adam{ lr = o.lr }, schedule = rt.schedule.cosine{ lr = o.lr },
                      seed = o.seed, out = teacher_dir, quiet = o.quiet,
                      name = "teacher", overwrite = true }
  teacher_seconds = run.epoch_seconds
  rt.write_atomic(marker, settings)
end
local teacher = rt.teacher("model", { checkpoint = teacher_dir .. "/last.safetensors" })
local teacher_eval = rt.evaluate(teacher, test)

-- 2. Two students from the same initial weights and batch order.
local student_opts = { sizes = { 784, 128, 10 }, seed = o.seed + 1 }
-- overwrite: the demo owns its run folders and trains them again each time,
-- whatever settings an earlier run used.
local common = { data = train, eval = test, epochs = o.epochs, batch = o.batch, seed = o.seed, quiet = o.quiet,
                 eval_teacher = teacher, overwrite = true }
-- A schedule object keeps its position per run: each student gets its own.
local function cosine() return rt.schedule.cosine{ lr = o.lr } end
local function with_common(t)
  for k, v in pairs(common) do if t[k] == nil then t[k] = v end end
  return t
end

local baseline = rt.student("mlp", student_opts)
local base_run = rt.fit(with_common{ student = baseline, optimizer = rt.optim.adam{ lr = o.lr }, schedule = cosine(),
                                     out = o.out .. "/baseline", name = "baseline" })

local kd_student = rt.student("mlp", student_opts)
local kd_run = rt.distill(with_common{
  teacher = teacher, student = kd_student, optimizer = rt.optim.adam{ lr = o.lr }, schedule = cosine(),
  loss = { { rt.loss("kd", { temperature = o.temperature }), o.alpha }, { rt.loss("ce"), 1 - o.alpha } },
  out = o.out .. "/kd", name = "kd",
})

-- 3. The table.
local base_eval = rt.evaluate(baseline, test, { teacher = teacher })
local kd_eval = rt.evaluate(kd_student, test, { teacher = teacher })
local tp = teacher:param_count()
local sp = baseline:param_count()
local function pct(x) return x and ("%.2f"):format(100 * x) or "-" end
local function secs(x) return x and ("%.2f"):format(x) or "(reused)" end
local rows = {
  { "teacher 784-1200-1200-10", pct(teacher_eval.accuracy), "-", "-", tp, secs(teacher_seconds) },
  { "baseline 784-128-10 (CE)", pct(base_eval.accuracy), pct(base_eval.agreement), ("%.4f"):format(base_eval.kl), sp,
    secs(base_run.epoch_seconds) },
  { ("KD 784-128-10 (T=%g, alpha=%g)"):format(o.temperature, o.alpha), pct(kd_eval.accuracy), pct(kd_eval.agreement),
    ("%.4f"):format(kd_eval.kl), sp, secs(kd_run.epoch_seconds) },
}
local headers = { "model", test:name() .. " acc %", "agreement %", "KL(t||s)", "params", "s/epoch" }
print()
print(rt.util.format_table(headers, rows))
print(("\ncompression %.1fx in parameters; runs and checkpoints in %s"):format(tp / sp, o.out))
rt.write_atomic(o.out .. "/results.md", rt.util.format_table(headers, rows, true) .. "\n")

-- 4. What the run tells its user: every model evaluated on the test set
--    (top-5, calibration, confusion, fidelity to the teacher), its size and
--    its latency at batch 1 (p50/p95 over 200 runs) and throughput at batch
--    1000, all measured here in one process so the figures compare; then
--    the report.  The students' figures are their last weights, as above.
rt.summarize{
  out = o.out, data = test, teacher = "teacher", quiet = o.quiet,
  title = "Fashion-MNIST: distilling a 784-1200-1200-10 MLP into 784-128-10",
  note = ("Teacher %d epochs; each student %d epochs from the same initial weights and batch order; "
    .. "KD at T=%g, alpha=%g, plus CE."):format(o.teacher_epochs, o.epochs, o.temperature, o.alpha),
  models = {
    { name = "teacher", role = "teacher", model = teacher, run = "teacher", checkpoint = teacher_dir .. "/best.safetensors" },
    { name = "baseline", role = "baseline", model = baseline, run = "baseline",
      checkpoint = o.out .. "/baseline/best.safetensors" },
    { name = "kd", role = "student", model = kd_student, run = "kd", checkpoint = o.out .. "/kd/best.safetensors" },
  },
}
print("report: " .. rt.report(o.out))
