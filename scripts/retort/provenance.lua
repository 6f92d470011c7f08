-- provenance.lua: the parts of a manifest that say how a model was made,
-- beyond metrics.lua's recipe, data and plugin names:
--   * each plugin's file and its sha256 (a C plugin's .so, the Lua file
--     that defines a Lua loss's forward and backward);
--   * the optimizer with every setting, the learning-rate schedule (its
--     description and its values at the first and the last step), each
--     loss term's weight and temperature schedules likewise;
--   * a teacher's lineage: the sha256 of its weights (rt.weights_sha256,
--     independent of any file) and where they came from: a checkpoint, or
--     a live student (rt.teacher(net)) and the run that trained it.
local rt = ...
local util = rt.util

-- ------------------------------------------------------------ plugin files

-- Adds file and file_sha256 (and, for a Lua loss, the lines of forward
-- and backward) to r, a plugin_info table of metrics.lua for obj.  Not
-- "sha256": a teacher's sha256 is its checkpoint's.
function rt.plugin_file_info(obj, r)
  local src = obj:kind() == "loss" and rt.lua_loss_source(obj)
  if src then
    local f, b = src.forward, src.backward
    r.file, r.line = f.file or f.chunk, f.line
    r.file_sha256 = f.file and rt.exists(f.file) and util.call(rt.sha256_file, f.file) or nil
    if b.file ~= f.file then
      r.backward_file = b.file or b.chunk
      r.backward_file_sha256 = b.file and rt.exists(b.file) and util.call(rt.sha256_file, b.file) or nil
    end
    r.backward_line = b.line
    return r
  end
  for _, p in ipairs(rt.plugins()) do
    if p.kind == r.kind and p.name == r.plugin then
      r.file = p.path
      r.file_sha256 = p.path and rt.exists(p.path) and util.call(rt.sha256_file, p.path) or nil
    end
  end
  return r
end

-- The registry's entry for a student plugin by name, with its file.
local function student_plugin(name)
  for _, p in ipairs(rt.plugins()) do
    if p.kind == "student" and p.name == name then
      return { plugin = name, version = p.version, abi = p.abi, file = p.path,
               file_sha256 = p.path and rt.exists(p.path) and util.call(rt.sha256_file, p.path) or nil }
    end
  end
  return { plugin = name }
end

-- ------------------------------------------------------------ lineage

-- Weak keys: the records go with the objects.
local runs = setmetatable({}, { __mode = "k" })    -- student -> { dir, weights_sha256 } of its last run
local teachers = setmetatable({}, { __mode = "k" }) -- teacher -> { weights_sha256, run } (rt.teacher(net))

-- rt.fit/rt.distill with out = dir call this at the end of a run.
function rt.note_run(student, dir, weights_sha256)
  runs[student] = { dir = dir, weights_sha256 = weights_sha256 }
end

-- rt.teacher(net) calls this: the teacher t holds a copy of net's weights,
-- whose sha256 is sha.  The run that trained net is recorded when net's
-- weights are still the ones that run ended with; its last.safetensors is
-- recorded as the teacher's checkpoint only when it holds those weights
-- (a later run into the same folder may have replaced it), so that
-- `retort info` can follow the chain from a student to the teacher's run.
function rt.note_teacher(t, net, sha)
  local rec = { weights_sha256 = sha }
  local r = runs[net]
  if r and r.weights_sha256 == sha then
    local run = { dir = r.dir, manifest = r.dir .. "/manifest.json" }
    if rt.exists(run.manifest) then run.manifest_sha256 = util.call(rt.sha256_file, run.manifest) end
    local ck = r.dir .. "/last.safetensors"
    local ok, tensors = pcall(rt.load, ck)
    if ok then
      local weights = {}
      for name, v in pairs(tensors) do
        if not name:match("^optim%.") then weights[name] = v end
      end
      if rt.weights_sha256(weights) == sha then
        run.checkpoint, run.checkpoint_sha256 = ck, util.call(rt.sha256_file, ck)
      end
    end
    rec.run = run
  elseif r then
    rec.run = { dir = r.dir, note = "the student changed after this run; its weights are not the run's result" }
  end
  teachers[t] = rec
end

-- Adds to r (metrics.lua's rt.model_provenance of teacher m): source,
-- weights_sha256, the architecture's plugin and file, and the run.
function rt.teacher_lineage(m, r)
  if m:param_count() > 0 then r.weights_sha256 = util.call(rt.weights_sha256, m) end
  local o = type(r.options) == "table" and r.options or {}
  local arch = o.arch
  if (arch == nil or arch == "") and r.checkpoint then
    local ok, meta = pcall(rt.read_meta, r.checkpoint)
    arch = ok and meta["retort.plugin"] or nil
  end
  if m:name() == "model" and arch and arch ~= "" then r.arch = student_plugin(arch) end
  local rec = teachers[m]
  if rec then
    r.source = "a live student's weights, copied (rt.teacher(net)); not saved by the teacher"
    r.run = rec.run
    if rec.run and rec.run.checkpoint then
      -- the same weights are in that file: the chain goes on from there
      r.checkpoint, r.sha256 = rec.run.checkpoint, rec.run.checkpoint_sha256
    end
  elseif r.checkpoint then
    r.source = "checkpoint"
    local dir = r.checkpoint:match("^(.*)/[^/]*$") or "."
    local man = dir .. "/manifest.json"
    if rt.exists(man) then
      r.run = { dir = dir, manifest = man, manifest_sha256 = util.call(rt.sha256_file, man),
                note = "the run folder that holds the checkpoint" }
    end
  elseif o.random_init then
    r.source = "the architecture's random initialisation (untrained)"
  end
  return r
end

-- ------------------------------------------------------------ training

-- The learning-rate schedule of a run of `steps` optimizer steps.
local function lr_schedule(s, opt, steps)
  local last = math.max(steps - 1, 0)
  if s == nil then
    local lr = opt and opt:config().lr
    return { kind = "none", description = "none: the optimizer's lr at every step", start = lr, ["end"] = lr,
             steps = steps }
  end
  if rt.schedule.is(s) then
    local d = { description = s:describe(), start = tonumber(rt.schedule.f32_text(s(0))),
                ["end"] = tonumber(rt.schedule.f32_text(s(last))), steps = steps }
    for k, v in pairs(s) do d[k] = v end
    return d
  end
  local d = rt.schedule.describe(function(_, step) return s(step) end, 1, steps)
  local i = type(s) == "function" and debug.getinfo(s, "S")
  d.kind, d.description = "function", i and ("a Lua function of the step (%s:%d)"):format(i.short_src, i.linedefined)
    or "a callable object of the step"
  return d
end

-- rt.provenance calls this with the manifest part p and its arguments o
-- (optimizer, schedule, epochs, steps_per_epoch, terms).
function rt.provenance_training(p, o)
  local epochs, per_epoch = o.epochs or 0, o.steps_per_epoch or 0
  local steps = epochs * per_epoch
  if o.optimizer then p.optimizer = o.optimizer:config() end
  if o.optimizer or o.schedule then p.lr_schedule = lr_schedule(o.schedule, o.optimizer, steps) end
  for i, t in ipairs(o.terms or {}) do
    local l = p.losses[i]
    if l then
      l.weight = rt.schedule.describe(t.weight, epochs, steps)
      if t.temperature ~= nil then l.temperature = rt.schedule.describe(t.temperature, epochs, steps) end
    end
  end
  return p
end
