-- metrics.lua: what a run tells its user beyond accuracy: provenance
-- (where the recipe, the teacher and the data came from), size, latency,
-- and the demo's summary.json that `retort report` draws.
--
-- The heavy sums (top-k, confusion, calibration, KL, JS) are C
-- (core/train/metrics.c); this file is glue.
local rt = ...
local util = rt.util

-- ----------------------------------------------------------- provenance

local function utc_now() return os.date("!%Y-%m-%dT%H:%M:%SZ") end
rt.utc_now = utc_now

-- Installed dataset files do not change while a process runs, so each is
-- hashed once (Fashion-MNIST's training images are 26 MB).  Checkpoints are
-- always hashed afresh: a recipe may rewrite them.
local data_hashes = {}
local function data_sha256(path)
  if not data_hashes[path] then data_hashes[path] = util.call(rt.sha256_file, path) end
  return data_hashes[path]
end

-- The file size in bytes, or nil if it cannot be opened.
function rt.file_size(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local n = f:seek("end")
  f:close()
  return n
end

-- Plugin name -> { version, abi } from the registry; Lua losses (not in a
-- registry) report abi "lua".
local function plugin_info(obj)
  local kind, name = obj:kind(), obj:name()
  local r = { plugin = name, version = obj:version(), kind = kind, abi = "lua" }
  for _, p in ipairs(rt.plugins()) do
    if p.kind == kind and p.name == name then r.abi = p.abi break end
  end
  return rt.plugin_file_info(obj, r) -- provenance.lua: file, file_sha256
end

-- A dataset's provenance: name, declared licence, origin, size, class
-- names and every file with its sha256 (rt.data.info; a dataset made in
-- memory has none).
function rt.data_provenance(ds)
  if ds == nil then return nil end
  local info = rt.data.info[ds] or {}
  local files = {}
  for _, path in ipairs(info.files or {}) do
    files[#files + 1] = { path = path, sha256 = rt.exists(path) and data_sha256(path) or nil }
  end
  -- subset: which rows of which parent (ds:split, ds:subset): count,
  -- sha256 of the 1-based id list, how it was made; labels: which labels
  -- ds:keep_labels kept (the others are -1, unlabelled); generated: a
  -- teacher-generated corpus's provenance (rt.data.lm_corpus)
  return { name = info.name or "(in memory)", license = info.license or "(not declared)", origin = info.origin,
           samples = ds:size(), files = files, classes = info.classes, subset = info.subset, labels = info.labels,
           generated = info.generated }
end

-- A teacher's provenance: plugin, options and, when an option names a
-- checkpoint file, its path and sha256: what a student checkpoint points to.
function rt.model_provenance(m)
  if m == nil then return nil end
  local r = plugin_info(m)
  r.options = rt.json_decode(m:options_json())
  r.params = m:param_count()
  r.flops = m:flops()
  local ck = type(r.options) == "table" and (r.options.checkpoint or r.options.path)
  if type(ck) == "string" and ck ~= "" and rt.exists(ck) then
    r.checkpoint = ck
    r.sha256 = util.call(rt.sha256_file, ck)
  end
  return rt.teacher_lineage(m, r) -- provenance.lua: weights sha256, source, run
end

-- The recipe that runs: the command sets the global `arg`, arg[0] the
-- recipe's path; a library call without it records none.
local function recipe_provenance()
  local a = rawget(_G, "arg")
  if type(a) ~= "table" or type(a[0]) ~= "string" then return nil end
  local args = {}
  for i = 1, #a do args[i] = tostring(a[i]) end
  return { path = a[0], sha256 = rt.exists(a[0]) and util.call(rt.sha256_file, a[0]) or nil, arguments = args }
end

-- rt.provenance{ student, teacher, eval_teacher, data, val, eval, terms,
--                seed, name, optimizer, schedule, epochs, steps_per_epoch }
-- -> the manifest's provenance part (a table).
function rt.provenance(o)
  local losses = {}
  for _, t in ipairs(o.terms or {}) do
    local l = plugin_info(t.loss)
    l.name = t.name
    l.options = rt.json_decode(t.loss:options_json())
    l.weight = type(t.weight) == "number" and t.weight or "schedule (a function of epoch and step)"
    losses[#losses + 1] = l
  end
  local student = plugin_info(o.student)
  student.options = rt.json_decode(o.student:options_json())
  student.params = o.student:param_count()
  student.flops = o.student:flops()
  local p = {
    format = "retort.manifest/1",
    name = o.name,
    recipe = recipe_provenance(),
    seed = o.seed,
    retort = { version = rt.version, abi = rt.abi },
    blas = { core = rt.blas_core(), threads = rt.threads() },
    student = student,
    teacher = rt.model_provenance(o.teacher),
    losses = losses,
    data = { train = rt.data_provenance(o.data), val = rt.data_provenance(o.val), eval = rt.data_provenance(o.eval) },
  }
  if o.eval_teacher and o.eval_teacher ~= o.teacher then p.eval_teacher = rt.model_provenance(o.eval_teacher) end
  return rt.provenance_training(p, o) -- provenance.lua: optimizer, schedules
end

-- Checkpoint metadata (a flat string map) carrying the provenance: the
-- whole of it as JSON under "provenance", and the links a tool follows
-- without parsing it: teacher.sha256 / teacher.checkpoint (the teacher the
-- student learned from), recipe.sha256, data.sha256 (the training files'
-- hashes, comma-separated), data.license, and data.ids_sha256 when the
-- training data is a split or subset of those files.
function rt.provenance_meta(p)
  local m = { provenance = rt.json_encode(p) }
  if p.teacher and p.teacher.sha256 then
    m["teacher.sha256"] = p.teacher.sha256
    m["teacher.checkpoint"] = p.teacher.checkpoint
  end
  if p.teacher and p.teacher.weights_sha256 then m["teacher.weights_sha256"] = p.teacher.weights_sha256 end
  if p.teacher and p.teacher.run then m["teacher.run"] = p.teacher.run.dir end
  if p.recipe and p.recipe.sha256 then m["recipe.sha256"] = p.recipe.sha256 end
  local d = p.data and p.data.train
  if d then
    local hashes = {}
    for _, f in ipairs(d.files) do hashes[#hashes + 1] = f.sha256 or "?" end
    m["data.sha256"] = table.concat(hashes, ",")
    m["data.license"] = d.license
    m["data.name"] = d.name
    if d.subset then m["data.ids_sha256"] = d.subset.ids_sha256 end -- trained on these rows of the files
  end
  return m
end

-- -------------------------------------------------------- size, latency

local function forward(model, x)
  if model:kind() == "student" then return model:forward(x, false) end
  return model:forward(x)
end

local function percentile(sorted, q)
  -- nearest rank: the smallest value with at least q of the runs at or below
  local i = math.max(1, math.ceil(q * #sorted))
  return sorted[i]
end

-- rt.latency(model, data [, {runs = 200, warmup = 20, batch = 1000,
--                            batch_runs = 5}]) ->
--   { p50_ms, p95_ms, mean_ms, runs, warmup, throughput, batch, batch_runs,
--     threads, blas }
-- Times one forward at batch 1, `runs` times after `warmup` untimed runs,
-- each on a different sample; p50/p95 of those.  Throughput: samples per
-- second of a forward at `batch`, the median of batch_runs timed runs.
-- Timings depend on the machine and its load: compare models measured in
-- the same process, as the report does.
function rt.latency(model, data, o)
  o = o or {}
  util.check_keys(o, { runs = 1, warmup = 1, batch = 1, batch_runs = 1 }, "rt.latency", 2)
  local runs, warmup = o.runs or 200, o.warmup or 20
  local n = data:size()
  local X = data:x()
  local times = {}
  for i = 1, warmup + runs do
    local x = X:narrow(1, (i - 1) % n + 1, 1)
    local t0 = rt.clock()
    forward(model, x)
    local dt = rt.clock() - t0
    if i > warmup then times[#times + 1] = dt end
  end
  table.sort(times)
  local sum = 0
  for _, t in ipairs(times) do sum = sum + t end
  local bs = math.min(o.batch or 1000, n)
  local xb = X:narrow(1, 1, bs)
  local bt = {}
  forward(model, xb) -- warm-up
  for i = 1, o.batch_runs or 5 do
    local t0 = rt.clock()
    forward(model, xb)
    bt[i] = rt.clock() - t0
  end
  table.sort(bt)
  return { p50_ms = 1e3 * percentile(times, 0.5), p95_ms = 1e3 * percentile(times, 0.95),
           mean_ms = 1e3 * sum / #times, runs = runs, warmup = warmup,
           throughput = bs / percentile(bt, 0.5), batch = bs, batch_runs = #bt,
           threads = rt.threads(), blas = rt.blas_core() }
end

-- rt.model_size(model [, file]) -> { params, param_bytes, flops, disk_bytes }
-- flops: per sample, as the plugin reports it (nil if it does not);
-- disk_bytes: the size of `file` (a weights-only checkpoint) if given.
function rt.model_size(model, file)
  local params, bytes = model:param_count()
  return { params = params, param_bytes = bytes, flops = model:flops(), disk_bytes = file and rt.file_size(file),
           file = file }
end

-- --------------------------------------------------------------- summary

-- rt.summarize{ out = dir, data = test, teacher = name, title = "...",
--               models = { {name =, role = "teacher"|"baseline"|"student",
--                           model =, run = "subdir", checkpoint = file}, ... },
--               latency = {runs = 200, ...}, quiet }
-- Evaluates every model on `data` (agreement, KL and JS against the model
-- named by `teacher`), measures its size and latency, and writes
-- out/summary.json, the file `retort report out` draws a multi-model report
-- from: eval_data and eval_teacher (the provenance of the data and of the
-- teacher every model was measured on), and per model its name, role, run
-- folder, eval, size, latency, and speed-up and compression against the
-- teacher.  Returns the summary table.
function rt.summarize(o)
  util.check_keys(o, { out = 1, data = 1, teacher = 1, models = 1, latency = 1, quiet = 1, title = 1, note = 1 },
    "rt.summarize", 2)
  local teacher
  for _, m in ipairs(o.models) do
    if m.name == o.teacher then teacher = m.model end
  end
  local s = { format = "retort.summary/1", title = o.title, note = o.note, created = utc_now(), teacher = o.teacher,
              eval_data = rt.data_provenance(o.data), eval_teacher = rt.model_provenance(teacher), models = {} }
  for _, m in ipairs(o.models) do
    local t = (m.model ~= teacher) and teacher or nil
    local e = rt.evaluate(m.model, o.data, { teacher = t, quiet = o.quiet, label = "evaluate " .. m.name })
    e.seconds = nil
    local lat = rt.latency(m.model, o.data, o.latency)
    s.models[#s.models + 1] = { name = m.name, role = m.role or "student", run = m.run, eval = e,
                                size = rt.model_size(m.model, m.checkpoint), latency = lat }
  end
  -- speed-up and compression against the teacher, measured in this process
  local tm
  for _, m in ipairs(s.models) do if m.name == o.teacher then tm = m end end
  if tm then
    for _, m in ipairs(s.models) do
      m.speedup = tm.latency.p50_ms / m.latency.p50_ms
      m.throughput_ratio = m.latency.throughput / tm.latency.throughput
      m.compression = tm.size.params / m.size.params
      if tm.size.disk_bytes and m.size.disk_bytes then m.disk_compression = tm.size.disk_bytes / m.size.disk_bytes end
    end
  end
  if o.out then
    util.call(rt.mkdir, o.out)
    rt.write_atomic(o.out .. "/summary.json", rt.json_encode(s) .. "\n")
  end
  return s
end
