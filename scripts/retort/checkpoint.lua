-- checkpoint.lua: rt.distill's checkpoints: last.safetensors (weights,
-- optimizer state, the run's position, the RNG) written after each epoch
-- and read on resume, with its metadata checked; best.safetensors.  Moved
-- out of train.lua (issue 9); reached through rt.checkpoint at call time.
local rt = ...
local util = rt.util

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

-- Resume from ck: the weights, the optimizer and the RNG restored; returns
-- the epoch to start at, the step and the history so far.  A checkpoint
-- of another shape of run is refused, naming both.
local function resume(ck, student, opt, plan, terms, teacher, data, epochs, steps_per_epoch)
  rt.run_abi.bind(plan, terms, student, teacher, data) -- losses' own parameters exist before they load
  local meta = load_checkpoint(ck, student, opt, plan)
  local e, s = meta_count(meta, "run.epoch", ck), meta_count(meta, "run.step", ck)
  if e >= epochs or s ~= (e + 1) * steps_per_epoch then
    error(("resume: %s ends epoch %d at step %d; this run has %d epochs of %d steps (epoch %d ends at step %d)")
      :format(ck, e + 1, s, epochs, steps_per_epoch, e + 1, (e + 1) * steps_per_epoch), 0)
  end
  local ok, h = pcall(rt.json_decode, meta["run.history"] or "[]")
  if not ok or type(h) ~= "table" then
    error(("resume: %s: metadata 'run.history' is not a JSON list"):format(ck), 0)
  end
  return e + 1, s, h
end

-- After an epoch: last.safetensors, and best.safetensors when the epoch's
-- held-out accuracy (row[select_key]) beats best_acc.
local function save_epoch(out, student, opt, plan, row, epoch, step, seed, history, prov_meta, select_key,
                          select_name, best_acc)
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

rt.checkpoint = { CHECKPOINT = CHECKPOINT, BEST = BEST, save_checkpoint = save_checkpoint, meta_count = meta_count,
                  load_checkpoint = load_checkpoint, resume = resume, save_epoch = save_epoch }
