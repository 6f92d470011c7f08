-- tiny_lm.lua: token-level distillation of a small GPT on the fortunes
-- corpus (issue 11).  Trains a teacher gpt (3 layers, 4 heads, width 128,
-- context 64) on byte-level windows of /usr/share/games/fortunes, then a
-- student about 5x smaller twice, with the same steps, seed and batch
-- order: on the next tokens alone (CE), and with token-level KD (forward
-- KL at T = 1, weight 0.5, plus CE 0.5).  Prints validation bits per byte,
-- next-token accuracy and agreement with the teacher, training tokens/s,
-- and a generated sample of each.  Two more rows with the same student
-- init and step budget: (c) sequence-level KD (Kim & Rush 2016): CE on a
-- corpus the teacher wrote (rt.lm_corpus: 4 * steps continuations of
-- 16-token prompts from the training windows, temperature 1), and (d)
-- on-policy KD (GKD as TRL: JSD(beta = 0.5), half the batches the
-- student's own continuations of 16-token prompts at temperature 0.9).
--
--   retort run scripts/recipes/tiny_lm.lua [--quick] [--steps 600]
--     [--methods ce,kd,seq,onpolicy] [--help]
--
-- --quick: 300 steps of batch 16 and 500 validation windows (a couple of
-- minutes on two cores); the defaults (600 steps of batch 32) are the
-- PyTorch reference's budget.
local rt = require "retort"

local o = rt.util.args(arg, {
  steps = 600,          -- optimizer steps of each model (one epoch of steps * batch random windows)
  batch = 32,
  context = 64,
  lr = 6e-3,            -- Adam's peak learning rate, after the warm-up, cosine-decayed to min_lr
  warmup = 100,         -- steps of linear warm-up from lr / warmup to lr
  lr_floor = 0.1,       -- the cosine ends at lr_floor * lr
  beta2 = 0.99,         -- Adam's second-moment decay (betas = {0.9, beta2})
  clip = 1.0,           -- clip_grad_norm: the gradients' global norm limit (0: no clipping)
  val_windows = 2000,   -- validation windows of `context` tokens (0: all)
  seed = 1,
  threads = 2,
  quick = false,
  quiet = true,
  methods = "all",      -- students after the teacher: ce, kd, seq, onpolicy, comma-separated (all: every one)
  out = "runs/tiny_lm",
}, "Distils a 3-layer GPT into a 5x smaller one on the fortunes corpus, token by token.")
if o.quick then o.steps, o.batch, o.val_windows = 300, 16, 500 end

-- --methods: the student rows to train (the teacher always is)
local METHODS = { ce = true, kd = true, seq = true, onpolicy = true }
local methods = {}
for m in o.methods:gmatch("[^,%s]+") do
  if m ~= "all" and not METHODS[m] then
    error(("--methods: unknown method '%s' (ce, kd, seq, onpolicy or all, comma-separated)"):format(m), 0)
  end
  methods[m] = true
end
local function want(m) return methods.all or methods[m] end

rt.set_threads(o.threads)
local train, val = rt.data.fortunes{ context = o.context, windows = o.steps * o.batch, seed = o.seed,
                                     val_windows = o.val_windows }
local info = rt.data.info[train].text
print(("retort %s: fortunes, %d files, %d bytes (%d train, %d validation tokens); %d steps of %d windows of %d"
  .. " tokens"):format(rt.version, info.files, info.bytes, info.train_tokens, info.val_tokens, o.steps, o.batch,
  o.context))

local run_dir = {} -- net -> its run folder's name under o.out
local eval_teacher -- the teacher, once trained: agreement in each student's eval.json
local function fit(name, net, loss, teacher, extra)
  local t0 = rt.clock()
  run_dir[net] = name
  local cfg = { student = net, data = train, epochs = 1, batch = o.batch, seed = o.seed, quiet = o.quiet,
                optimizer = rt.optim.adam{ lr = o.lr, betas = { 0.9, o.beta2 } },
                schedule = rt.schedule.cosine{ lr = o.lr, warmup = o.warmup, min_lr = o.lr_floor * o.lr },
                clip_grad_norm = o.clip > 0 and o.clip or nil,
                out = o.out .. "/" .. name, overwrite = true, name = name,
                eval = val, eval_teacher = eval_teacher } -- eval.json: bpb, agreement, for the report
  for k, v in pairs(extra or {}) do cfg[k] = v end -- (c) and (d): other data, on_policy
  local run
  if teacher then
    cfg.teacher, cfg.loss, cfg.cache_teacher = teacher, loss, false
    run = rt.distill(cfg)
  else
    run = rt.fit(cfg)
  end
  -- the epoch's training time, without the evaluation at its end
  return o.steps * o.batch * o.context / (run.epoch_seconds or (rt.clock() - t0))
end

local big = { width = 128, heads = 4, layers = 3, context = o.context, seed = o.seed }
local small = { width = 64, heads = 4, layers = 2, context = o.context, seed = o.seed }
local rows, samples = {}, {}
local function row(name, net, tps, teacher)
  local r = rt.evaluate(net, val, { teacher = teacher, quiet = true, batch = 256 })
  local text, g = rt.generate(net, "Q: ", { max_tokens = 60, seed = o.seed, temperature = 0.8 })
  rows[#rows + 1] = { name, ("%d"):format(net:param_count()), ("%.3f"):format(r.bpb),
                      ("%.1f%%"):format(100 * r.accuracy), r.agreement and ("%.1f%%"):format(100 * r.agreement) or "-",
                      r.kl and ("%.4f"):format(r.kl) or "-",
                      ("%.0f"):format(tps), ("%.0f"):format(g.tokens_per_s or 0) }
  print(("%s sample: %q"):format(name, "Q: " .. (text or "")))
  -- the sample beside the model's run folder, for `retort report`
  rt.write_atomic(o.out .. "/" .. run_dir[net] .. "/samples.json", rt.json_encode{ { prompt = "Q: ",
    text = "Q: " .. (text or ""), settings = ("temperature 0.8, seed %d, 60 tokens"):format(o.seed) } })
  samples[#samples + 1] = ("%s:\n\n    %s\n"):format(name, (("Q: " .. (text or "")):gsub("\n", "\n    ")))
end

local teacher_net = rt.student("gpt", big)
local tps = fit("teacher", teacher_net)
local teacher = rt.teacher(teacher_net)
eval_teacher = teacher
row("teacher", teacher_net, tps)
if want("ce") then
  local alone = rt.student("gpt", small)
  row("student alone (CE)", alone, fit("student_ce", alone, nil, nil), teacher)
end
if want("kd") then
  local kd = rt.student("gpt", small)
  row("student KD 0.5 + CE 0.5", kd, fit("student_kd", kd, { { rt.loss("kd", { temperature = 1 }), 0.5, name = "kd" },
                                                         { rt.loss("ce"), 0.5, name = "ce" } }, teacher), teacher)
end
-- (c) sequence-level: the teacher writes 4 * steps samples of 16 prompt
-- tokens and context - 16 sampled ones (within its context, so every
-- token is one step of the key/value cache); the student learns them by
-- CE over the same number of random windows of the corpus.
if want("seq") then
  local c = rt.lm_corpus{ teacher = teacher, prompts = train, count = 4 * o.steps, prompt_tokens = 16,
                          max_tokens = o.context - 16, temperature = 1, seed = o.seed, out = o.out .. "/corpus",
                          quiet = o.quiet }
  print(("corpus: %d tokens from the teacher at %.0f tokens/s -> %s"):format(c.tokens, c.tokens_per_s or 0, c.path))
  local corpus = rt.data.lm_corpus{ path = c.dir, context = o.context, windows = o.steps * o.batch, seed = o.seed }
  local seq = rt.student("gpt", small)
  row("student seq-level KD (CE on teacher text)", seq, fit("student_seq", seq, nil, nil, { data = corpus }), teacher)
end
-- (d) on-policy (GKD as TRL): JSD(beta = 0.5); lambda = 0.5 of the
-- batches are the student's continuations of the windows' first 16 tokens.
if want("onpolicy") then
  local op = rt.student("gpt", small)
  row("student on-policy GKD (JSD 0.5)", op, fit("student_onpolicy", op,
    { { rt.loss("jsd", { beta = 0.5 }), 1, name = "jsd" } }, teacher,
    { on_policy = { lambda = 0.5, temperature = 0.9, prompt_tokens = 16, seed = o.seed } }), teacher)
end
local headers = { "model", "params", "val bpb", "next-token acc", "agreement", "KL(t||s)", "train tok/s",
                  "gen tok/s" }
print(rt.util.format_table(headers, rows))
-- OUT/results.md: the table and each model's sample (temperature 0.8).
rt.write_atomic(o.out .. "/results.md", ("%d steps of %d windows of %d tokens, seed %d\n\n%s\n\nSamples:\n\n%s")
  :format(o.steps, o.batch, o.context, o.seed, rt.util.format_table(headers, rows, true),
          table.concat(samples, "\n")))
print("results: " .. o.out .. "/results.md")
