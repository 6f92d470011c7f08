-- evaluate.lua: rt.evaluate (a model's accuracy, calibration and fidelity
-- over a dataset) and the progress display (rt.progress, rt.quiet) that
-- evaluation and training share.  Moved whole out of train.lua (issue 9:
-- rt.distill composes small pieces).
local rt = ...
local util = rt.util

local function forward_eval(model, x)
  if model:kind() == "student" then return model:forward(x, false) end
  return model:forward(x)
end

-- rt.evaluate(model, data [, {teacher = t, batch = 1000, bins = 15, quiet}]) ->
--   { accuracy, top5, samples, seconds, per_class, confusion, ece, bins
--     [, agreement, kl, js] }
-- accuracy: top-1 against the labels; top5: label among the 5 largest
-- logits (top-C when there are fewer classes); per_class[c]: accuracy on
-- the samples labelled c (false if none); confusion[label][prediction]:
-- counts; ece: expected calibration error over `bins` equal confidence bins,
-- bins[b] = {lo, hi, count, confidence, accuracy} for a reliability curve.
-- agreement: top-1 equal to the teacher's; kl: mean over samples of
-- KL(teacher || model) at T = 1; js: mean Jensen-Shannon divergence.
-- The label-dependent fields are absent for data without labels.  Logits
-- of the model or the teacher that are NaN or inf are an error naming the
-- sample (a broken model never scores as a perfect match).
local function evaluate(model, data, o)
  o = o or {}
  util.check_keys(o, { teacher = 1, batch = 1, bins = 1, quiet = 1, label = 1 }, "rt.evaluate", 2)
  local correct, top5, agree, kl, js, n = 0, 0, 0, 0.0, 0.0, 0
  local has_labels = data:y() ~= nil
  local stats
  local bs = o.batch or 1000
  local progress = rt.progress(o.label or "evaluate", math.ceil(data:size() / bs), o.quiet)
  local t0 = rt.clock()
  local seq, ce, nll, nb = false, nil, 0.0, 0
  for x, y, idx in data:batches(bs) do
    local z = forward_eval(model, x)
    rt.check_finite(z, "the model's logit", idx)
    -- [N, T, V] (a language model): every position is a sample (rt.lm_flat)
    local tz = o.teacher and o.teacher:forward(x, idx)
    if z:dim() > 2 then
      seq = true
      z, y, tz = rt.lm_flat(z), y and rt.lm_flat(y), tz and rt.lm_flat(tz)
    end
    if has_labels then
      local C = z:size(2)
      if not seq then
        if not stats then util.check_labels(model, C, data:y(), "the data") end
        stats = stats or rt.class_stats(C, o.bins or 15)
        stats:add(z, y)
      end
      correct = correct + rt.count_correct(z, y)
      top5 = top5 + rt.count_topk(z, y, math.min(5, C))
      if seq then
        ce = ce or rt.loss("ce")
        nll = nll + ce:forward(z, nil, y) * #z
      end
    end
    if o.teacher then
      agree = agree + rt.count_agree(z, tz)
      kl = kl + rt.kl_sum(tz, z, 1)
      js = js + rt.js_sum(tz, z, 1)
    end
    n, nb = n + #z, nb + 1
    progress:update(nb)
  end
  progress:finish()
  local r = { samples = n, seconds = rt.clock() - t0 }
  if has_labels and n > 0 then
    r.accuracy = correct / n
    r.top5 = top5 / n
    if stats then
      local s = stats:result()
      r.per_class, r.confusion, r.ece, r.bins = s.per_class, s.confusion, s.ece, s.bins
    end
    if seq then rt.lm_eval_fields(r, nll / n) end
  end
  if o.teacher then
    r.agreement = agree / n
    r.kl = kl / n
    r.js = js / n
  end
  return r
end
rt.evaluate = util.api("rt.evaluate", evaluate)

-- ------------------------------------------------------------- progress

local Progress = {}
Progress.__index = Progress

-- RETORT_QUIET=1 silences every progress display, as quiet = true does.
function rt.quiet(quiet)
  return quiet == true or os.getenv("RETORT_QUIET") == "1"
end

-- rt.progress(label, total [, quiet]) -> p; p:update(done [, text]) and
-- p:finish().  On a terminal (stderr): a bar with the rate, the ETA and
-- `text` (the loss terms), redrawn at most 10 times a second; otherwise a
-- plain line every 5 seconds, so a log file gets a heartbeat, not a flood.
local function new_progress(quiet, label, total)
  return setmetatable({ quiet = rt.quiet(quiet), tty = rt.isatty(2), label = label, total = math.max(total, 1),
                        last = 0, t0 = rt.clock() }, Progress)
end
function rt.progress(label, total, quiet) return new_progress(quiet, label, total) end

function Progress:update(done, text)
  if self.quiet then return end
  local now = rt.clock()
  if self.tty then
    if now - self.last < 0.1 and done < self.total then return end
    local width = 24
    local fill = math.floor(width * done / self.total)
    local rate = done / math.max(now - self.t0, 1e-9)
    local eta = (self.total - done) / math.max(rate, 1e-9)
    io.stderr:write(("\r%s [%s%s] %d/%d %5.0f/s eta %3.0fs %s\27[K"):format(self.label, ("#"):rep(fill),
      (" "):rep(width - fill), done, self.total, rate, eta, text or ""))
    self.last = now
  elseif now - self.last >= 5 then
    -- not a terminal: a plain line every few seconds
    if self.last > 0 then
      local rate = done / math.max(now - self.t0, 1e-9)
      io.stderr:write(("%s %d/%d %.0f/s eta %.0fs %s\n"):format(self.label, done, self.total, rate,
        (self.total - done) / math.max(rate, 1e-9), text or ""))
    end
    self.last = now
  end
end

function Progress:finish()
  if not self.quiet and self.tty then io.stderr:write("\r\27[K") end
end

-- The pieces of rt.distill's epoch that evaluate: row.val and row.test
-- (the held-out figures the history keeps); returns the test evaluation.
local function epoch_evals(row, student, cfg, eval_teacher, quiet, name, val_name, eval_name)
  local last_eval
  if cfg.val then
    local r = evaluate(student, cfg.val, { teacher = eval_teacher, quiet = quiet,
                                              label = name .. " " .. val_name })
    row.val = { accuracy = r.accuracy, agreement = r.agreement, kl = r.kl, top5 = r.top5, ece = r.ece, js = r.js }
  end
  if cfg.eval then
    local r = evaluate(student, cfg.eval, { teacher = eval_teacher, quiet = quiet,
                                            label = name .. " " .. eval_name })
    row.test = { accuracy = r.accuracy, agreement = r.agreement, kl = r.kl, top5 = r.top5, ece = r.ece, js = r.js }
    last_eval = r
  end
  return last_eval
end
rt.evaluation = { epoch_evals = epoch_evals }
