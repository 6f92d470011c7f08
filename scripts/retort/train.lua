-- train.lua: rt.distill and rt.fit.
--
-- distill runs the loop of the README by hand-written steps over the C
-- bindings.  Everything heavy is C; this file composes the pieces, each
-- in its own file and reached through rt.* at call time (the library's
-- files load in sorted order): the loss terms and their schedules
-- (terms.lua), one training step (step.lua: teacher signal, student
-- forward, every weighted term's forward and backward into one gradient,
-- student backward, optimizer step), the teacher cache (cache.lua), the
-- run folder (run_folder.lua), checkpoints and resume (checkpoint.lua),
-- and evaluation with the progress display (evaluate.lua).
local rt = ...
local util = rt.util

-- ------------------------------------------------------------- distill

local DISTILL_KEYS = {
  teacher = 1, student = 1, data = 1, eval = 1, loss = 1, optimizer = 1, schedule = 1, epochs = 1, batch = 1,
  seed = 1, out = 1, resume = 1, quiet = 1, log_every = 1, cache_teacher = 1, name = 1, eval_teacher = 1,
  on_epoch = 1, val = 1, patience = 1, overwrite = 1, augment = 1, clip_grad_norm = 1,
  on_policy = 1,
}

-- rt.distill{ teacher, student, data, val, eval, loss, optimizer, schedule,
--             epochs = 10, batch = 128, seed = 1, out, resume = false,
--             overwrite = false, quiet = false, log_every = 50, cache_teacher = true,
--             eval_teacher, patience, on_epoch = function(row),
--             augment = {shape = {C, H, W}, pad = 4, flip = true},
--             clip_grad_norm }
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
-- clip_grad_norm = c: before each optimizer step, scale the gradients of
-- every trained parameter (the student's and the losses' own) so that
-- their global L2 norm is at most c (torch.nn.utils.clip_grad_norm_); the
-- norm before clipping goes into each step row of metrics.jsonl
-- (grad_norm) and c into the manifest.  Left out: no clipping.
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
  local clip = cfg.clip_grad_norm
  if clip ~= nil and (type(clip) ~= "number" or not (clip > 0 and clip < math.huge)) then
    error(("rt.distill: 'clip_grad_norm' must be a finite number > 0 (the largest global gradient norm; leave it "
      .. "out for no clipping), got %s"):format(tostring(clip)), 2)
  end
  -- what lines, metrics and the manifest call each held-out dataset
  local val_name, eval_name = rt.data.name(cfg.val, "val"), rt.data.name(cfg.eval, "eval")
  -- best.safetensors and early stopping follow this row of each epoch
  local select_key = cfg.val and "val" or "test"
  local select_name = cfg.val and val_name or eval_name
  local terms = rt.terms.normalize_terms(cfg.loss or { { rt.loss("ce"), 1 } }, 2)
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
  -- on_policy (GKD): its settings, checked before the run folder is claimed (lm_distill.lua)
  local policy = rt.on_policy.check(cfg, terms, data, teacher)

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
    manifest.on_policy = policy and policy.record
    manifest.clip_grad_norm = clip
    local mode = at_caller(folder.claim, folder, manifest, { resume = cfg.resume, overwrite = cfg.overwrite })
    local ck = out .. "/" .. rt.checkpoint.CHECKPOINT
    if mode == "resume" then
      if rt.exists(ck) then
        start_epoch, step, history = rt.checkpoint.resume(ck, student, opt, plan, terms, teacher, data, epochs,
                                                          steps_per_epoch)
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
  -- Not for per-token outputs ([N, T, V]): they are V floats per token of
  -- the corpus (rt.lm_cacheable), so the teacher runs at each step; nor
  -- with augment (the inputs change every epoch).
  if teacher and cfg.cache_teacher ~= false and start_epoch < epochs and not plan.teacher_features
     and not cfg.augment and rt.lm_cacheable(teacher, data) then
    cache = rt.cache.teacher_cache(teacher, data, n, quiet)
  end

  -- what one step needs; grad and tbuf are its reused buffers
  local run = { student = student, teacher = teacher, cache = cache, bs = bs, terms = terms, plan = plan, opt = opt,
                lr_at = lr_at, clip = clip, unlabelled = data:y() ~= nil and rt.label_range(data:y()) == -1 }
  local name = cfg.name or (teacher and "distill" or "fit")
  local train_seconds, epochs_run = 0, 0
  for epoch = start_epoch, epochs - 1 do
    local sums, count = {}, 0
    for i = 1, #terms do sums[i] = 0 end
    local progress = rt.progress(("%s %d/%d"):format(name, epoch + 1, epochs), steps_per_epoch, quiet)
    local t0 = rt.clock()
    local b = 0
    for x, y, idx in data:batches(bs, { shuffle = true, seed = seed, epoch = epoch, augment = cfg.augment }) do
      at.step, at.epoch = step, epoch
      if policy then x, y = rt.on_policy.batch(policy, run, x, y, step) end
      local total, values, lr, norm = rt.step.train_step(run, x, y, idx, epoch, step, sums)
      count = count + #x
      b = b + 1
      if metrics and log_every > 0 and step % log_every == 0 then
        metrics.write{ event = "step", epoch = epoch + 1, step = step, lr = lr, loss = total, terms = values,
                       on_policy = run.policy_batch and run.policy_batch.count or nil, grad_norm = norm }
      end
      step = step + 1
      progress:update(b, rt.terms.progress_text(terms, values, total))
    end
    at.step = nil
    progress:finish()
    local seconds = rt.clock() - t0
    train_seconds = train_seconds + seconds
    epochs_run = epochs_run + 1
    local row = { epoch = epoch + 1, step = step, seconds = seconds, samples_per_second = count / seconds,
                  lr = lr_at(math.max(step - 1, 0)), train = {} }
    for i, t in ipairs(terms) do row.train[t.name] = sums[i] / count end
    last_eval = rt.evaluation.epoch_evals(row, student, cfg, eval_teacher, quiet, name, val_name, eval_name)
      or last_eval
    history[#history + 1] = row
    if metrics then
      -- data: the name of the dataset behind each of val and test
      metrics.write{ event = "epoch", epoch = row.epoch, step = step, seconds = seconds,
                     samples_per_second = row.samples_per_second, train = row.train, val = row.val, test = row.test,
                     data = (cfg.val or cfg.eval) and { val = cfg.val and val_name or nil,
                                                        test = cfg.eval and eval_name or nil } or nil }
    end
    if not quiet then
      io.stderr:write(rt.terms.epoch_line(name, epoch, epochs, terms, row, val_name, eval_name, seconds))
    end
    if out then
      rt.checkpoint.save_epoch(out, student, opt, plan, row, epoch, step, seed, history, prov_meta, select_key,
                               select_name, best_acc)
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
    if policy then manifest.on_policy.batches = rt.on_policy.count(policy, step) end
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
    checkpoint = out and (out .. "/" .. rt.checkpoint.CHECKPOINT), best = out and (out .. "/" .. rt.checkpoint.BEST),
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
