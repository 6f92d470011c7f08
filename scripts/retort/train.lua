-- train.lua: evaluate, fit and distill.
--
-- distill runs the loop of the README by hand-written steps over the C
-- bindings: teacher signal, student forward, every weighted loss term's
-- forward and backward into one gradient, student backward, optimizer
-- step.  Everything heavy is C; this file is bookkeeping: schedules,
-- logging each term separately, evaluation, checkpoints and resume.
local rt = ...
local util = rt.util

-- ------------------------------------------------------------- evaluate

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
  for x, y, idx in data:batches(bs) do
    local z = forward_eval(model, x)
    rt.check_finite(z, "the model's logit", idx)
    if has_labels then
      local C = z:size(2)
      if not stats then util.check_labels(model, C, data:y(), "the data") end
      stats = stats or rt.class_stats(C, o.bins or 15)
      correct = correct + rt.count_correct(z, y)
      top5 = top5 + rt.count_topk(z, y, math.min(5, C))
      stats:add(z, y)
    end
    if o.teacher then
      local tz = o.teacher:forward(x, idx)
      agree = agree + rt.count_agree(z, tz)
      kl = kl + rt.kl_sum(tz, z, 1)
      js = js + rt.js_sum(tz, z, 1)
    end
    n = n + #x
    progress:update(math.ceil(n / bs))
  end
  progress:finish()
  local r = { samples = n, seconds = rt.clock() - t0 }
  if has_labels and n > 0 then
    r.accuracy = correct / n
    r.top5 = top5 / n
    local s = stats:result()
    r.per_class, r.confusion, r.ece, r.bins = s.per_class, s.confusion, s.ece, s.bins
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

-- ----------------------------------------------------------- loss terms

-- Accepts {{loss, weight}, ...}, {loss = l, weight = w}, a single loss, or
-- a list of losses (weight 1).  weight: number or function(epoch, step).
-- A term may carry temperature = number | function(epoch, step): distill
-- calls loss:set("temperature", T) before a step whenever T changes (the
-- loss needs a temperature option it can change: checked here, up front).
local function normalize_terms(spec, level)
  local terms = {}
  local function add(l, w, name, temperature)
    if type(l) ~= "userdata" or not pcall(l.needs, l) then
      error("rt.distill: each loss term needs a loss (from rt.loss or a Lua loss)", level + 2)
    end
    w = w == nil and 1 or w
    if type(w) ~= "number" and type(w) ~= "function" then
      error("rt.distill: a loss weight must be a number or a function(epoch, step)", level + 2)
    end
    if temperature ~= nil then
      if type(temperature) ~= "number" and type(temperature) ~= "function" then
        error("rt.distill: a temperature must be a number or a function(epoch, step)", level + 2)
      end
      local T0 = rt.json_decode(l:options_json()).temperature
      if type(T0) ~= "number" then
        error(("rt.distill: loss '%s' has no temperature option to schedule"):format(l:name()), level + 2)
      end
      local ok, err = pcall(l.set, l, "temperature", T0)
      if not ok then
        error(("rt.distill: loss '%s' cannot change its temperature: %s"):format(l:name(), tostring(err)), level + 2)
      end
    end
    local needs_teacher, needs_target = l:needs()
    terms[#terms + 1] = { loss = l, weight = w, name = name or l:name(), needs_teacher = needs_teacher,
                          needs_target = needs_target, temperature = temperature }
  end
  if type(spec) == "userdata" then
    add(spec, 1)
  elseif type(spec) == "table" then
    if spec.loss then
      add(spec.loss, spec.weight, spec.name, spec.temperature)
    else
      for _, t in ipairs(spec) do
        if type(t) == "userdata" then add(t, 1)
        elseif type(t) == "table" then add(t[1] or t.loss, t[2] or t.weight, t.name, t.temperature)
        else error("rt.distill: 'loss' entries are {loss, weight}", level + 1) end
      end
    end
  else
    error("rt.distill: 'loss' must be a loss or a list of {loss, weight}", level + 1)
  end
  -- Two terms from the same plugin get distinct names in the logs.
  local seen = {}
  for _, t in ipairs(terms) do
    seen[t.name] = (seen[t.name] or 0) + 1
    if seen[t.name] > 1 then t.name = t.name .. seen[t.name] end
  end
  return terms
end

-- ---------------------------------------------------------- checkpoints

local CHECKPOINT = "last.safetensors"
local BEST = "best.safetensors"

-- Writes params + optimizer state + the run's position atomically.
local function save_checkpoint(path, student, opt, meta_extra, plan)
  local list = {}
  for _, p in ipairs(student:parameters()) do list[#list + 1] = { p.name, p.value } end
  rt.run_abi.save_list(plan, list) -- losses' own parameters, "loss.<term>.<name>"
  local state, steps = opt:state()
  for _, s in ipairs(state) do list[#list + 1] = { "optim." .. s.name, s.value } end
  local meta = {
    ["retort.kind"] = "student", ["retort.plugin"] = student:name(),
    ["retort.options"] = student:options_json(), ["retort.version"] = rt.version,
    ["run.optim_steps"] = tostring(steps), ["run.rng"] = rt.rng_state(),
  }
  for k, v in pairs(meta_extra) do meta[k] = v end
  rt.save(path, list, meta)
end

-- A non-negative integer from checkpoint metadata, or an error naming the
-- file and the key (crafted metadata must give a clear error, not a run
-- from a wrong position).
local function meta_count(meta, key, path)
  local v = meta[key]
  local n = type(v) == "string" and v:match("^%d+$") and #v <= 15 and tonumber(v)
  if not n then
    error(("resume: %s: metadata '%s' is %s, not a non-negative integer"):format(path, key,
      v == nil and "missing" or ("'" .. v:sub(1, 40) .. "'")), 0)
  end
  return math.tointeger(n)
end

local function load_checkpoint(path, student, opt, plan)
  local tensors, meta = rt.load(path)
  if meta["retort.plugin"] ~= student:name() or meta["retort.options"] ~= student:options_json() then
    error(("resume: %s holds a %s student with options %s, this run has %s with %s"):format(path,
      tostring(meta["retort.plugin"]), tostring(meta["retort.options"]), student:name(), student:options_json()), 0)
  end
  for _, p in ipairs(student:parameters()) do
    local t = tensors[p.name]
    if not t then error(("resume: %s has no tensor '%s'"):format(path, p.name), 0) end
    p.value:copy(t)
  end
  rt.run_abi.load(plan, tensors, path)
  local steps = meta["run.optim_steps"] and meta_count(meta, "run.optim_steps", path) or 0
  if steps > 0 then
    local state = {}
    for name, t in pairs(tensors) do
      local s = name:match("^optim%.(.*)$")
      if s then state[s] = t end
    end
    opt:restore(student, state, steps, plan and plan.extras)
  end
  if type(meta["run.rng"]) ~= "string" or not pcall(rt.set_rng_state, meta["run.rng"]) then
    error(("resume: %s: metadata 'run.rng' is not an RNG state (64 hex digits)"):format(path), 0)
  end
  return meta
end

-- ------------------------------------------------------------- distill

-- The progress bar's text: the weighted total and every term's value.
local function progress_text(terms, values, total)
  local parts = { ("loss %.4f"):format(total) }
  for _, t in ipairs(terms) do
    local v = values[t.name]
    if v and #terms > 1 then parts[#parts + 1] = ("%s %.4f"):format(t.name, v) end
  end
  return table.concat(parts, " ")
end

local DISTILL_KEYS = {
  teacher = 1, student = 1, data = 1, eval = 1, loss = 1, optimizer = 1, schedule = 1, epochs = 1, batch = 1,
  seed = 1, out = 1, resume = 1, quiet = 1, log_every = 1, cache_teacher = 1, name = 1, eval_teacher = 1,
  on_epoch = 1, val = 1, patience = 1, overwrite = 1, augment = 1,
}

-- rt.distill{ teacher, student, data, val, eval, loss, optimizer, schedule,
--             epochs = 10, batch = 128, seed = 1, out, resume = false,
--             overwrite = false, quiet = false, log_every = 50, cache_teacher = true,
--             eval_teacher, patience, on_epoch = function(row),
--             augment = {shape = {C, H, W}, pad = 4, flip = true} }
-- Returns { history = {per-epoch rows}, test = last eval row, val = last
--           val row, out = dir, epoch_seconds = mean training seconds per
--           epoch, steps, best_epoch, stopped_at (epoch, or nil) }.
-- val: held-out data (e.g. from data:split) evaluated every epoch (row.val);
-- best.safetensors is the epoch of its best accuracy.  eval: the final
-- test data (row.test); without val, best is chosen on it, and the
-- manifest says so.  patience = k: stop after k epochs without a better val
-- accuracy (needs val).  Lines, rows and the manifest name each dataset.
-- out: the run folder (run_folder.lua): locked while the run writes it;
-- one that holds another run is refused unless overwrite = true; resume =
-- true continues the same run from out/last.safetensors.
-- augment: random crop with zero padding and horizontal flip of the
-- training batches (ds:batches' augment), drawn from (seed, epoch): the
-- same in every run and after a resume.  The inputs then change every
-- epoch, so the teacher runs on each augmented batch; cache_teacher = true
-- with augment is refused.
-- eval_teacher: the teacher to measure agreement against (defaults to
-- teacher); lets a plain-CE baseline report its agreement too.
-- at: where the loop is ({step, epoch}), for the error message.
local function distill(cfg, at)
  if type(cfg) ~= "table" then error("rt.distill: needs a table of settings", 2) end
  util.check_keys(cfg, DISTILL_KEYS, "rt.distill", 2)
  if cfg.augment ~= nil and type(cfg.augment) ~= "table" then
    error("rt.distill: 'augment' is a table {shape = {C, H, W}, pad = 4, flip = true}", 2)
  end
  if cfg.augment and cfg.cache_teacher == true and cfg.teacher then
    error("rt.distill: cache_teacher = true with augment: the inputs change every epoch, so logits cached "
          .. "once would belong to other images; leave cache_teacher out (the teacher then runs on each "
          .. "augmented batch)", 2)
  end
  local student, teacher, data = cfg.student, cfg.teacher, cfg.data
  if type(student) ~= "userdata" or not pcall(student.kind, student) or student:kind() ~= "student" then
    error("rt.distill: 'student' must be a student (rt.student)", 2)
  end
  if teacher ~= nil and (type(teacher) ~= "userdata" or not pcall(teacher.kind, teacher) or teacher:kind() ~= "teacher") then
    error("rt.distill: 'teacher' must be a teacher (rt.teacher)", 2)
  end
  if type(data) ~= "userdata" or not pcall(data.size, data) then
    error("rt.distill: 'data' must be a dataset (rt.data.idx, rt.dataset)", 2)
  end
  for _, k in ipairs{ "val", "eval" } do
    local d = cfg[k]
    if d ~= nil and (type(d) ~= "userdata" or not pcall(d.size, d)) then
      error(("rt.distill: '%s' must be a dataset (rt.data.idx, ds:split)"):format(k), 2)
    end
  end
  local patience = cfg.patience
  if patience ~= nil then
    if math.type(patience) ~= "integer" or patience < 1 then
      error(("rt.distill: 'patience' must be an integer >= 1, got %s"):format(tostring(patience)), 2)
    end
    if not cfg.val then
      error("rt.distill: 'patience' stops on validation data: give 'val' (e.g. local rest, val = "
        .. "data:split{fraction = 0.1, seed = 1})", 2)
    end
  end
  -- what lines, metrics and the manifest call each held-out dataset
  local val_name, eval_name = rt.data.name(cfg.val, "val"), rt.data.name(cfg.eval, "eval")
  -- best.safetensors and early stopping follow this row of each epoch
  local select_key = cfg.val and "val" or "test"
  local select_name = cfg.val and val_name or eval_name
  local terms = normalize_terms(cfg.loss or { { rt.loss("ce"), 1 } }, 2)
  for _, t in ipairs(terms) do
    if t.needs_teacher and not teacher then
      error(("rt.distill: loss '%s' needs a teacher and none was given"):format(t.name), 2)
    end
    if t.needs_target and data:y() == nil then
      error(("rt.distill: loss '%s' needs labels and the data has none"):format(t.name), 2)
    end
  end
  -- ABI 2.0: features the losses read, taps, losses with parameters
  local plan = rt.run_abi.plan(terms, student, teacher, 2)
  local epochs, bs, seed = cfg.epochs or 10, cfg.batch or 128, cfg.seed or 1
  for _, f in ipairs{ { "epochs", epochs, 0 }, { "batch", bs, 1 }, { "seed", seed, 0 } } do
    if math.type(f[2]) ~= "integer" or f[2] < f[3] then
      error(("rt.distill: '%s' must be an integer >= %d, got %s"):format(f[1], f[3], tostring(f[2])), 2)
    end
  end
  if epochs == 0 then
    error("rt.distill: epochs = 0 would train nothing; give epochs >= 1 (rt.evaluate measures a model as it is)", 2)
  end
  local opt = cfg.optimizer or rt.optim.adam{}
  local n = data:size()
  local steps_per_epoch = math.ceil(n / bs)
  local schedule = cfg.schedule
  if schedule ~= nil and not rt.schedule.is(schedule) and type(schedule) ~= "function" then
    error(("rt.distill: 'schedule' must be an rt.schedule or a function(step) -> lr, got %s"):format(type(schedule)), 2)
  end
  if rt.schedule.is(schedule) and schedule.kind == "cosine" and not schedule.total then
    schedule.total = epochs * steps_per_epoch
  end
  local function lr_at(step)
    if schedule == nil then return opt:lr() end
    return schedule(step)
  end
  local eval_teacher = cfg.eval_teacher or teacher
  local log_every = cfg.log_every or 50
  util.check_run{ student = student, teacher = teacher, terms = terms, data = data, eval = cfg.eval,
                  eval_teacher = eval_teacher }

  -- run folder, metrics, resume (which restores the RNG seeded here)
  rt.seed(seed)
  local quiet = rt.quiet(cfg.quiet)
  local out, metrics = cfg.out, nil
  local manifest, prov_meta, best_acc, best_epoch, last_eval, stopped_at
  local since_best = 0 -- epochs since the best one, for patience
  local history, start_epoch, step = {}, 0, 0
  -- The run folder is locked until distill returns or raises (<close>).
  -- Its refusals are raised at distill's caller (rt.fit's re-raises them).
  local function at_caller(f, ...)
    local r = table.pack(pcall(f, ...))
    if not r[1] then error(r[2], 3) end
    return table.unpack(r, 2, r.n)
  end
  local folder <close> = out and at_caller(rt.run_folder.open, out, teacher and "rt.distill" or "rt.fit") or nil
  if out then
    -- manifest.json now, so that a run that dies still says what it was;
    -- rewritten at the end with the times, the result and the best epoch.
    manifest = rt.provenance{ student = student, teacher = teacher, eval_teacher = eval_teacher, data = data,
                              val = cfg.val, eval = cfg.eval, terms = terms, seed = seed,
                              name = cfg.name or (teacher and "distill" or "fit"),
                              optimizer = opt, schedule = schedule, epochs = epochs,
                              steps_per_epoch = steps_per_epoch }
    manifest.epochs, manifest.batch = epochs, bs
    local mode = at_caller(folder.claim, folder, manifest, { resume = cfg.resume, overwrite = cfg.overwrite })
    local ck = out .. "/" .. CHECKPOINT
    if mode == "resume" then
      if rt.exists(ck) then
        rt.run_abi.bind(plan, terms, student, teacher, data) -- losses' own parameters exist before they load
        local meta = load_checkpoint(ck, student, opt, plan)
        local e, s = meta_count(meta, "run.epoch", ck), meta_count(meta, "run.step", ck)
        if e >= epochs or s ~= (e + 1) * steps_per_epoch then
          error(("resume: %s ends epoch %d at step %d; this run has %d epochs of %d steps (epoch %d ends at step %d)")
            :format(ck, e + 1, s, epochs, steps_per_epoch, e + 1, (e + 1) * steps_per_epoch), 0)
        end
        start_epoch, step = e + 1, s
        local ok, h = pcall(rt.json_decode, meta["run.history"] or "[]")
        if not ok or type(h) ~= "table" then
          error(("resume: %s: metadata 'run.history' is not a JSON list"):format(ck), 0)
        end
        history = h
      end
      folder:trim_metrics(step, start_epoch)
      if start_epoch >= epochs and not quiet then
        io.stderr:write(("%s: nothing to train: %s holds %d of %d epochs\n"):format(cfg.name or "distill", ck,
          start_epoch, epochs))
      end
    end
    if not quiet and folder.replaced then
      io.stderr:write(("%s: replacing the run %s in %s (overwrite = true)\n"):format(cfg.name or "distill",
        folder.replaced, out))
    end
    metrics = folder:metrics()
    prov_meta = rt.provenance_meta(manifest)
    manifest.started, manifest.status = rt.utc_now(), "running"
    manifest.resumed_at_epoch = start_epoch > 0 and start_epoch or nil
    manifest.checkpoints = { best_selected_on = cfg.val and "val" or cfg.eval and "eval"
                               or "none (no eval data: best = last)",
                             best_selected_on_data = (cfg.val or cfg.eval) and select_name or nil }
    if patience then manifest.early_stopping = { patience = patience, on = val_name, metric = "accuracy" } end
    folder:write_manifest(manifest)
  end
  -- a resumed run picks up the best epoch and the patience count
  for _, row in ipairs(history) do
    local a = row[select_key] and row[select_key].accuracy
    if a and (best_acc == nil or a > best_acc) then best_acc, best_epoch, since_best = a, row.epoch, 0
    else since_best = since_best + 1 end
  end
  if patience and since_best >= patience then start_epoch, stopped_at = epochs, history[#history].epoch end

  -- The teacher's logits for the whole training set, once: the data has
  -- no augmentation, so they do not change between epochs.
  local cache
  rt.run_abi.bind(plan, terms, student, teacher, data) -- once; nothing unless a loss reads features or binds
  if teacher and cfg.cache_teacher ~= false and start_epoch < epochs and not plan.teacher_features
      and not cfg.augment then
    local t0 = rt.clock()
    local pos = 1
    local progress = rt.progress("teacher labels", math.ceil(n / 1000), quiet)
    for x, _, idx in data:batches(1000) do
      local z = teacher:forward(x, idx)
      if not cache then cache = rt.zeros({ n, z:size(2) }) end
      cache:narrow(1, pos, #x):copy(z)
      pos = pos + #x
      progress:update(math.ceil((pos - 1) / 1000))
    end
    progress:finish()
    cache = rt.dataset(cache)
    if not quiet then
      io.stderr:write(("teacher logits cached for %d samples in %.1fs\n"):format(n, rt.clock() - t0))
    end
  end

  local grad, tbuf
  local name = cfg.name or (teacher and "distill" or "fit")
  local train_seconds, epochs_run = 0, 0
  for epoch = start_epoch, epochs - 1 do
    local sums, count = {}, 0
    for i = 1, #terms do sums[i] = 0 end
    local progress = new_progress(quiet, ("%s %d/%d"):format(name, epoch + 1, epochs), steps_per_epoch)
    local t0 = rt.clock()
    local b = 0
    for x, y, idx in data:batches(bs, { shuffle = true, seed = seed, epoch = epoch, augment = cfg.augment }) do
      at.step, at.epoch = step, epoch
      local tz
      if teacher then
        if cache then
          if #idx == bs then
            tbuf = tbuf or cache:gather(idx)
            tz = cache:gather(idx, tbuf)
          else
            tz = cache:gather(idx)
          end
        else
          tz = teacher:forward(x, idx)
        end
      end
      local s = student:forward(x, true)
      if plan.active then rt.run_abi.begin_step(plan, student) end
      if grad == nil or #grad ~= #s then grad = rt.zeros(s:shape()) else grad:fill(0) end
      local total = 0
      local values = {}
      for i, t in ipairs(terms) do
        local w = t.weight
        if type(w) == "function" then w = w(epoch, step) end
        if t.temperature ~= nil then
          local T = t.temperature
          if type(T) == "function" then T = T(epoch, step) end
          if T ~= t.current_temperature then
            t.loss:set("temperature", T)
            t.current_temperature = T
          end
        end
        local v
        local routed = t.features and (#t.features > 0 or t.binds)
        if routed then
          v = rt.run_abi.term(plan, t, student, teacher, s, tz, y, epoch, step, w, grad)
        else
          v = t.loss:forward(s, t.needs_teacher and tz or nil, t.needs_target and y or nil, epoch, step)
        end
        if v ~= v or v == math.huge or v == -math.huge then error(util.nonfinite_loss(t, v, s, idx), 0) end
        if w ~= 0 and not routed then
          t.loss:backward(s, t.needs_teacher and tz or nil, t.needs_target and y or nil, epoch, step, w, grad)
          t.grad_what = t.grad_what or ("loss term '%s': its gradient"):format(t.name)
          rt.check_finite(grad, t.grad_what, idx)
        end
        sums[i] = sums[i] + v * #x
        values[t.name] = v
        total = total + w * v
      end
      student:backward(grad, plan.active and rt.run_abi.taps(plan) or nil)
      local lr = lr_at(step)
      opt:step(student, lr, plan.extras)
      count = count + #x
      b = b + 1
      if metrics and log_every > 0 and step % log_every == 0 then
        metrics.write{ event = "step", epoch = epoch + 1, step = step, lr = lr, loss = total, terms = values }
      end
      step = step + 1
      progress:update(b, progress_text(terms, values, total))
    end
    at.step = nil
    progress:finish()
    local seconds = rt.clock() - t0
    train_seconds = train_seconds + seconds
    epochs_run = epochs_run + 1
    local row = { epoch = epoch + 1, step = step, seconds = seconds, samples_per_second = count / seconds,
                  lr = lr_at(math.max(step - 1, 0)), train = {} }
    for i, t in ipairs(terms) do row.train[t.name] = sums[i] / count end
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
    history[#history + 1] = row
    if metrics then
      -- data: the name of the dataset behind each of val and test
      metrics.write{ event = "epoch", epoch = row.epoch, step = step, seconds = seconds,
                     samples_per_second = row.samples_per_second, train = row.train, val = row.val, test = row.test,
                     data = (cfg.val or cfg.eval) and { val = cfg.val and val_name or nil,
                                                        test = cfg.eval and eval_name or nil } or nil }
    end
    if not quiet then
      local parts = {}
      for _, t in ipairs(terms) do parts[#parts + 1] = ("%s %.4f"):format(t.name, row.train[t.name]) end
      local held = {}
      for _, h in ipairs{ { row.val, val_name }, { row.test, eval_name } } do
        local r = h[1]
        if r then
          held[#held + 1] = ("  %s acc %.2f%%"):format(h[2], 100 * (r.accuracy or 0))
          if r.agreement then held[#held + 1] = ("  agree %.2f%%"):format(100 * r.agreement) end
        end
      end
      io.stderr:write(("%s epoch %d/%d  %s%s  %.1fs\n"):format(name, epoch + 1, epochs, table.concat(parts, "  "),
        table.concat(held), seconds))
    end
    if out then
      local extra = {
        ["run.epoch"] = tostring(epoch), ["run.step"] = tostring(step), ["run.history"] = rt.json_encode(history),
        ["run.seed"] = tostring(seed),
      }
      for k, v in pairs(prov_meta) do extra[k] = v end
      save_checkpoint(out .. "/" .. CHECKPOINT, student, opt, extra, plan)
      -- best: weights only, by held-out accuracy (val, else eval); with
      -- neither, the last weights.  Selecting on the test set flatters
      -- it: the manifest and the report say "best on eval".
      local acc = row[select_key] and row[select_key].accuracy
      if acc == nil or best_acc == nil or acc > best_acc then
        local meta = { ["run.epoch"] = tostring(epoch), ["run.seed"] = tostring(seed),
                       ["run.selected_on"] = acc and ("%s accuracy %.6f (%s)"):format(select_key == "val" and "val"
                         or "eval", acc, select_name) or "last (no eval data)" }
        for k, v in pairs(prov_meta) do meta[k] = v end
        student:save(out .. "/" .. BEST, meta)
      end
    end
    local acc = row[select_key] and row[select_key].accuracy
    if acc and (best_acc == nil or acc > best_acc) then best_acc, best_epoch, since_best = acc, row.epoch, 0
    else since_best = since_best + 1 end
    if cfg.on_epoch then cfg.on_epoch(row) end
    if patience and since_best >= patience and epoch < epochs - 1 then
      stopped_at = row.epoch
      if not quiet then
        io.stderr:write(("%s: early stop after epoch %d: %s accuracy has not improved for %d epochs (patience %d); "
          .. "best %.2f%% at epoch %d\n"):format(name, row.epoch, val_name, since_best, patience, 100 * best_acc,
          best_epoch))
      end
      break
    end
  end
  if metrics then metrics.close() end
  if manifest then
    manifest.finished, manifest.status, manifest.steps = rt.utc_now(), "finished", step
    manifest.checkpoints.best_epoch, manifest.checkpoints.best_accuracy = best_epoch, best_acc
    for _, row in ipairs(history) do
      -- the best weights' figures on the test data, when chosen on val
      if cfg.val and row.epoch == best_epoch then manifest.checkpoints.best_test = row.test end
    end
    if manifest.early_stopping then
      manifest.early_stopping.stopped_at_epoch = stopped_at
      manifest.early_stopping.stopped = stopped_at ~= nil
    end
    manifest.result = history[#history] and history[#history].test
    manifest.val_result = history[#history] and history[#history].val
    manifest.epoch_seconds = epochs_run > 0 and train_seconds / epochs_run or nil
    -- the final weights' sha256: rt.teacher(student) links back to this run
    manifest.weights_sha256 = rt.weights_sha256(student)
    rt.note_run(student, out, manifest.weights_sha256)
    folder:write_manifest(manifest)
    -- the final model's full evaluation (confusion matrix, calibration bins)
    if last_eval then
      last_eval.seconds = nil
      rt.write_atomic(out .. "/eval.json", rt.json_encode(last_eval) .. "\n")
    end
  end
  return {
    history = history, test = history[#history] and history[#history].test, out = out, steps = step,
    val = history[#history] and history[#history].val, best_epoch = best_epoch, stopped_at = stopped_at,
    epoch_seconds = epochs_run > 0 and train_seconds / epochs_run or nil,
    checkpoint = out and (out .. "/" .. CHECKPOINT), best = out and (out .. "/" .. BEST),
    manifest = out and (out .. "/manifest.json"),
  }
end

-- Runs distill as the user's function api ("rt.distill" or "rt.fit"): an
-- error reads "api: step S (epoch E): ..." at the recipe's line.
local function run(api, cfg)
  local at = {}
  local r = table.pack(pcall(distill, cfg, at))
  if not r[1] then util.rethrow(util.api_message(api, r[2], util.run_position(at))) end
  return table.unpack(r, 2, r.n)
end

function rt.distill(cfg) return run("rt.distill", cfg) end

-- rt.fit{ student, data, eval, loss = ce, ... }: supervised training (no
-- teacher), e.g. of a teacher.  Same settings and result as distill.
function rt.fit(cfg)
  if type(cfg) ~= "table" then error("rt.fit: needs a table of settings", 2) end
  if cfg.teacher then error("rt.fit: trains without a teacher; use rt.distill", 2) end
  cfg.name = cfg.name or "fit"
  return run("rt.fit", cfg)
end
