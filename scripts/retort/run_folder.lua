-- run_folder.lua: the run folder that rt.fit / rt.distill write (out = DIR)
-- kept whole.  One writer at a time (rt.run_lock: a flock on DIR/.lock);
-- temp files of a writer killed mid-write removed at the next start; a
-- folder that holds another run is never overwritten silently (its
-- manifest.json says which run it holds); a resumed run's metrics.jsonl
-- cut back to its checkpoint, so no step is logged twice; a manifest that
-- lists only files that exist.
--
--   local folder <close> = rt.run_folder.open(dir, what)  -- lock + clean
--   local mode = folder:claim(manifest, {resume =, overwrite =})
--   folder:trim_metrics(next_step, epochs_done)           -- when resuming
--   folder:write_manifest(manifest)
-- Errors are raised with level 0 and no position: rt.distill re-raises
-- the refusals at its caller's line; a failed write needs none.
local rt = ...
local util = rt.util

-- Calls f (a C function) and re-raises its error without a position.
local function checked(f, ...)
  local r = table.pack(pcall(f, ...))
  if not r[1] then error((tostring(r[2]):gsub("^[^\n]-%.lua:%d+: ", "")), 0) end
  return table.unpack(r, 2, r.n)
end

local RF = {}
rt.run_folder = RF

local MANIFEST, METRICS = "manifest.json", "metrics.jsonl"
local CHECKPOINTS = { last = "last.safetensors", best = "best.safetensors" }
-- What a run writes; replaced as a whole when a run starts afresh, so no
-- file of an earlier run is left to be mistaken for this one's.  The
-- manifest goes last: a kill in between leaves a folder that still says
-- which run its remaining files belong to.
local RUN_FILES = { METRICS, "last.safetensors", "best.safetensors", "eval.json", "report.html", MANIFEST }

local Folder = {}
Folder.__index = Folder
Folder.__close = function(self) self:close() end

-- Creates dir, takes its lock (or raises, naming the holder's pid) and
-- removes stale temp files.  what: "rt.distill" or "rt.fit", for messages.
function RF.open(dir, what)
  local ok, err = rt.mkdir(dir)
  if not ok then error(what .. ": " .. err, 0) end
  local lok, lock = pcall(rt.run_lock, dir)
  if not lok then error(what .. ": " .. tostring(lock):gsub("^[^\n]-%.lua:%d+: ", ""), 0) end
  local self = setmetatable({ dir = dir, what = what, lock = lock }, Folder)
  self.removed_temps = checked(rt.run_clean_temps, dir)
  return self
end

function Folder:path(name) return self.dir .. "/" .. name end

-- Releases the lock; the folder stays as it is.
function Folder:close()
  if self.lock then self.lock:release() end
end

-- ------------------------------------------------------------- identity

local function enc(v) return v == nil and "none" or rt.json_encode(v) end

-- What makes two runs the same run, from a manifest (rt.provenance plus
-- batch): {label, value} pairs.  Not the epochs (resume may extend a run),
-- not the recipe's path or arguments (the hash and the settings below say
-- what they changed), not plugin versions.
function RF.identity(m)
  local losses = {}
  for i, l in ipairs(m.losses or {}) do
    losses[i] = { plugin = l.plugin, name = l.name, options = l.options, weight = l.weight }
  end
  local s, t = m.student or {}, m.teacher
  return {
    { "recipe sha256", m.recipe and m.recipe.sha256 },
    { "student", { plugin = s.plugin, options = s.options } },
    { "teacher", t and { plugin = t.plugin, options = t.options, sha256 = t.sha256 } },
    { "loss terms", losses },
    { "training data", m.data and m.data.train },
    { "eval data", m.data and m.data.eval },
    { "seed", m.seed },
    { "batch", m.batch },
  }
end

-- The fields in which run b differs from run a, as text naming both values.
function RF.differences(a, b)
  local ia, ib, out = RF.identity(a), RF.identity(b), {}
  for i, f in ipairs(ia) do
    local va, vb = enc(f[2]), enc(ib[i][2])
    if va ~= vb then
      local function cut(v) return #v > 160 and (v:sub(1, 160) .. "...") or v end
      out[#out + 1] = ("%s (there %s, here %s)"):format(f[1], cut(va), cut(vb))
    end
  end
  return out
end

local function describe(m)
  local r = m.recipe
  return ("'%s'%s%s"):format(tostring(m.name),
    r and (" of recipe %s (sha256 %s)"):format(tostring(r.path), tostring(r.sha256):sub(1, 12)) or "",
    m.started and (", started " .. m.started) or "")
end

-- Decides what happens to what the folder holds, given this run's
-- manifest (identity fields filled in):
--   "resume": resume = true and the folder holds the same run;
--   "fresh":  the folder holds nothing, the same run (resume = false), or
--             another run and overwrite = true: the earlier run's files are
--             removed.
-- Raises when the folder holds another run (or files no manifest
-- identifies) and overwrite is not true, naming both runs and what differs.
function Folder:claim(manifest, o)
  local text = util.read_file(self:path(MANIFEST))
  local fix = "pass overwrite = true to replace it, or give another out"
  if text then
    local ok, old = pcall(rt.json_decode, text)
    if not ok or type(old) ~= "table" or old.format ~= manifest.format then
      if not o.overwrite then
        error(("%s: %s holds a %s that is not a %s manifest; %s"):format(self.what, self.dir, MANIFEST,
          tostring(manifest.format), fix), 0)
      end
    else
      local diffs = RF.differences(old, manifest)
      if #diffs > 0 and not o.overwrite then
        error(("%s: %s already holds another run, %s; this run %s differs in %s; %s%s"):format(self.what, self.dir,
          describe(old), describe(manifest), table.concat(diffs, "; "),
          o.resume and "resume = true continues only the same run: " or "", fix), 0)
      end
      if #diffs == 0 and o.resume then return "resume" end
      self.replaced = #diffs > 0 and describe(old) or nil
    end
  else
    local found = {}
    for _, f in ipairs(RUN_FILES) do
      if rt.exists(self:path(f)) then found[#found + 1] = f end
    end
    if #found > 0 and not o.overwrite then
      error(("%s: %s holds %s but no %s, so which run they belong to is unknown; %s"):format(self.what, self.dir,
        table.concat(found, ", "), MANIFEST, fix), 0)
    end
  end
  for _, f in ipairs(RUN_FILES) do
    local p = self:path(f)
    if rt.exists(p) then
      local ok, err = os.remove(p)
      if not ok then error(("%s: cannot remove %s: %s"):format(self.what, p, tostring(err)), 0) end
    end
  end
  return "fresh"
end

-- Cuts metrics.jsonl back to what the checkpoint holds: step rows before
-- next_step, epoch rows up to epochs_done (1-based, as logged).  Rows of
-- the epoch that was running when the run stopped, and a torn last line,
-- go: the resumed run logs them again.
function Folder:trim_metrics(next_step, epochs_done)
  local path = self:path(METRICS)
  local text = util.read_file(path)
  if not text then return 0 end
  local keep, dropped = {}, 0
  for line in text:gmatch("[^\n]+") do
    local ok, r = pcall(rt.json_decode, line)
    local good = ok and type(r) == "table"
    if good and r.event == "epoch" then good = type(r.epoch) == "number" and r.epoch <= epochs_done
    elseif good then good = type(r.step) ~= "number" or r.step < next_step end
    if good then keep[#keep + 1] = line else dropped = dropped + 1 end
  end
  if dropped > 0 or (#text > 0 and text:sub(-1) ~= "\n") then
    checked(rt.write_atomic, path, #keep > 0 and (table.concat(keep, "\n") .. "\n") or "")
  end
  return dropped
end

-- The checked writer of metrics.jsonl (util.jsonl).
function Folder:metrics() return util.jsonl(self:path(METRICS)) end

-- Writes manifest.json atomically.  checkpoints.last / .best name only
-- files that exist at this moment.
function Folder:write_manifest(m)
  m.checkpoints = m.checkpoints or {}
  for k, f in pairs(CHECKPOINTS) do m.checkpoints[k] = rt.exists(self:path(f)) and f or nil end
  checked(rt.write_atomic, self:path(MANIFEST), rt.json_encode(m) .. "\n")
end
