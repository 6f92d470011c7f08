-- fashion_mnist.lua: the demo.  A CNN teacher on Fashion-MNIST (2 conv
-- blocks of 32 and 64 channels with batch norm, a 256-unit head; its best
-- epoch chosen on a 5,000-image validation split of the training set,
-- never on the test set), then three distillations, each beside its
-- baseline trained from the same initial weights in the same batch order:
--
--   (a) every label: the MLP 784-128-10, and a small CNN (16 and 32
--       channels, no hidden layer in the head), each on the labels alone
--       and distilled (KD + CE);
--   (b) data distillation: the MLP with only 2,000 labels, alone versus
--       trained on the same 2,000 labels plus the teacher's soft labels
--       for every training image (the other 53,000 images have no label;
--       ds:keep_labels marks them -1 and the CE term skips them).
--
-- One table: test accuracy, top-1 agreement with the teacher, KL to the
-- teacher, parameters, seconds per epoch; then the share of the
-- 2,000-label student's gap to the teacher that the teacher's labels
-- closed, and the report.
--
--   retort run scripts/recipes/fashion_mnist.lua [--teacher-epochs 12] [--help]
--
-- Why T = 1: on Fashion-MNIST with cosine-decayed baselines this strong,
-- softer targets (T >= 2) cost the MLP student accuracy (README: the sweep
-- of scripts/recipes/mlp_teacher.lua, and the PyTorch reference).
local rt = require "retort"

local o = rt.util.args(arg, {
  teacher_epochs = 12,     -- epochs of teacher training
  epochs = 20,             -- epochs of each MLP student (and of the 2,000-label KD student)
  cnn_epochs = 10,         -- epochs of each small CNN student
  labels = 2000,           -- labels kept for (b)
  few_epochs = 50,         -- epochs of the baseline with only those labels
  batch = 128,
  lr = 1e-3,               -- Adam, decayed to 0 by a cosine schedule
  teacher_dropout = 0.3,
  temperature = 1,         -- KD temperature (see above)
  alpha = 0.9,             -- weight of the KD term; CE gets 1 - alpha
  seed = 1,
  limit = 0,               -- use only the first N training samples (0: all)
  threads = 2,             -- BLAS threads
  out = "runs/fashion_mnist",
  retrain_teacher = false, -- ignore a teacher checkpoint from an earlier run
  quiet = false,
}, "Distils a CNN teacher into an MLP and a small CNN on Fashion-MNIST, with every label and with 2,000.")

rt.set_threads(o.threads)
local all = rt.data.fashion_mnist("train", { limit = o.limit })
local train, val = all:split{ n = math.min(5000, all:size() // 6), seed = o.seed }
local test = rt.data.fashion_mnist("test")
local n_labels = math.min(o.labels, train:size() // 2)
print(("retort %s: Fashion-MNIST, %d training, %d validation and %d test images, %d BLAS threads (%s)")
  :format(rt.version, train:size(), val:size(), test:size(), rt.threads(), rt.blas_core()))

-- 1. The teacher, trained once and reused by later runs (a checkpoint
--    whose settings match is loaded instead of retrained); its best epoch
--    on the validation split.
local teacher_dir = o.out .. "/teacher"
local teacher_layers = ("conv32x3,bn,relu,maxpool2,conv64x3,bn,relu,maxpool2,flatten,fc256,relu,dropout%g,fc10")
  :format(o.teacher_dropout)
local teacher_net = rt.student("cnn", { layers = teacher_layers, seed = o.seed })
local settings = rt.json_encode{ epochs = o.teacher_epochs, batch = o.batch, lr = o.lr, limit = o.limit, schedule = "cosine",
                                 val = val:size(), seed = o.seed, options = teacher_net:options_json() }
local marker = teacher_dir .. "/settings.json"
local teacher_seconds
if not o.retrain_teacher and rt.util.read_file(marker) == settings and rt.exists(teacher_dir .. "/best.safetensors") then
  print("teacher: reusing " .. teacher_dir .. "/best.safetensors (--retrain-teacher to train it again)")
else
  local run = rt.fit{ student = teacher_net, data = train, val = val, eval = test, epochs = o.teacher_epochs,
                      batch = o.batch, optimizer = rt.optim.adam{ lr = o.lr }, schedule = rt.schedule.cosine{ lr = o.lr },
                      seed = o.seed, out = teacher_dir, quiet = o.quiet, name = "teacher", overwrite = true }
  teacher_seconds = run.epoch_seconds
  rt.write_atomic(marker, settings)
end
local teacher = rt.teacher("model", { checkpoint = teacher_dir .. "/best.safetensors" })

-- 2. Pairs of students: the same initial weights (seed) and batch order
--    (the run's seed), one on the labels alone and one distilled.
-- overwrite: the demo owns its run folders and trains them again each time.
local function cosine() return rt.schedule.cosine{ lr = o.lr } end
local function kd_loss()
  return { { rt.loss("kd", { temperature = o.temperature }), o.alpha }, { rt.loss("ce"), 1 - o.alpha } }
end
local runs = {}
local function train_pair(p)
  for _, kd in ipairs{ false, true } do
    local name = p.name .. (kd and "_kd" or "_baseline")
    local net = rt.student(p.plugin, p.opts)
    local cfg = { student = net, data = kd and p.kd_data or p.data, eval = test, epochs = kd and p.kd_epochs or p.epochs,
                  batch = o.batch, seed = o.seed, quiet = o.quiet, eval_teacher = teacher, overwrite = true,
                  optimizer = rt.optim.adam{ lr = o.lr }, schedule = cosine(), out = o.out .. "/" .. name, name = name }
    local run
    if kd then
      cfg.teacher, cfg.loss = teacher, kd_loss()
      run = rt.distill(cfg)
    else
      run = rt.fit(cfg)
    end
    runs[name] = { model = net, run = run, label = kd and p.kd_label or p.label }
  end
end

local mlp = { sizes = { 784, 128, 10 }, seed = o.seed + 1 }
local small_cnn = { layers = "conv16x3,bn,relu,maxpool2,conv32x3,bn,relu,maxpool2,flatten,fc10", seed = o.seed + 2 }
-- (a) every label
train_pair{ name = "mlp", plugin = "mlp", opts = mlp, data = train, kd_data = train, epochs = o.epochs,
            kd_epochs = o.epochs, label = "MLP 784-128-10, labels (CE)",
            kd_label = ("MLP 784-128-10, KD (T=%g, alpha=%g)"):format(o.temperature, o.alpha) }
train_pair{ name = "cnn", plugin = "cnn", opts = small_cnn, data = train, kd_data = train, epochs = o.cnn_epochs,
            kd_epochs = o.cnn_epochs, label = "CNN 16-32, labels (CE)",
            kd_label = ("CNN 16-32, KD (T=%g, alpha=%g)"):format(o.temperature, o.alpha) }
-- (b) data distillation: the same labelled images in both; the KD run
--     also sees the other images, through the teacher only
local few, only = train:keep_labels{ n = n_labels, seed = o.seed }
train_pair{ name = "few", plugin = "mlp", opts = mlp, data = only, kd_data = few, epochs = o.few_epochs,
            kd_epochs = o.epochs, label = ("MLP, %d labels (CE)"):format(n_labels),
            kd_label = ("MLP, %d labels + teacher on %d images"):format(n_labels, few:size()) }

-- 3. The table: every model's last weights (the teacher's best on val).
local order = { "mlp_baseline", "mlp_kd", "cnn_baseline", "cnn_kd", "few_baseline", "few_kd" }
local function pct(x) return x and ("%.2f"):format(100 * x) or "-" end
local function secs(x) return x and ("%.2f"):format(x) or "(reused)" end
local teacher_eval = rt.evaluate(teacher, test, { quiet = o.quiet })
local rows = { { "teacher CNN 32-64-256 (best on val)", pct(teacher_eval.accuracy), "-", "-", teacher:param_count(),
                 secs(teacher_seconds) } }
local acc = {}
for _, k in ipairs(order) do
  local r = runs[k]
  local e = rt.evaluate(r.model, test, { teacher = teacher, quiet = o.quiet })
  acc[k] = e.accuracy
  rows[#rows + 1] = { r.label, pct(e.accuracy), pct(e.agreement), ("%.4f"):format(e.kl), r.model:param_count(),
                      secs(r.run.epoch_seconds) }
end
local headers = { "model", test:name() .. " acc %", "agreement %", "KL(t||s)", "params", "s/epoch" }
print()
print(rt.util.format_table(headers, rows))
local gap = teacher_eval.accuracy - acc.few_baseline
local closed = gap > 0 and (acc.few_kd - acc.few_baseline) / gap or 0 / 0
local verdict = ("\n(a) KD - baseline: MLP %+.2f, CNN %+.2f points.  (b) the teacher's labels closed %.0f%% of the "
  .. "%d-label MLP's gap to the teacher (%.2f of %.2f points).")
  :format(100 * (acc.mlp_kd - acc.mlp_baseline), 100 * (acc.cnn_kd - acc.cnn_baseline), 100 * closed, n_labels,
          100 * (acc.few_kd - acc.few_baseline), 100 * gap)
print(verdict)
print(("runs and checkpoints in %s"):format(o.out))
rt.write_atomic(o.out .. "/results.md", rt.util.format_table(headers, rows, true) .. "\n" .. verdict .. "\n")

-- 4. What the run tells its user: every model evaluated on the test set
--    (top-5, calibration, confusion, fidelity to the teacher), its size and
--    its latency at batch 1 and throughput at batch 1000, all measured here
--    in one process so the figures compare; then the report.
local models = { { name = "teacher", role = "teacher", model = teacher, run = "teacher",
                   checkpoint = teacher_dir .. "/best.safetensors" } }
for _, k in ipairs(order) do
  models[#models + 1] = { name = k, role = k:find("baseline") and "baseline" or "student", model = runs[k].model, run = k,
                          checkpoint = o.out .. "/" .. k .. "/last.safetensors" }
end
rt.summarize{
  out = o.out, data = test, teacher = "teacher", quiet = o.quiet,
  title = "Fashion-MNIST: distilling a CNN teacher into an MLP and a small CNN, with every label and with "
    .. n_labels,
  note = ("Teacher %d epochs (best on a %d-image validation split); MLP students %d epochs, small CNN %d, each pair "
    .. "from the same initial weights and batch order; KD at T=%g, alpha=%g, plus CE.  The %d-label baseline "
    .. "%d epochs; its KD twin %d epochs over all %d images, CE on the labelled ones only.")
    :format(o.teacher_epochs, val:size(), o.epochs, o.cnn_epochs, o.temperature, o.alpha, n_labels, o.few_epochs,
            o.epochs, few:size()),
  models = models,
}
print("report: " .. rt.report(o.out))
