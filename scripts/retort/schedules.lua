-- schedules.lua: schedules for loss weights and temperatures.
--
-- A loss term in rt.distill takes its weight, and its temperature, as a
-- number or as a function(epoch, step) -> number (epoch and step count from
-- 0; step counts optimizer steps over the whole run).  These helpers build
-- such functions.  They are plain functions, unlike the learning-rate
-- schedules of optim.lua (callable objects of the step alone):
--
--   loss = { { rt.loss("kd"), rt.schedule.linear_warmup{ from = 0, to = 0.9, epochs = 3 },
--              temperature = rt.schedule.steps{ values = { 8, 4, 2 }, every = 5 } },
--            { rt.loss("ce"), 0.1 } }
local rt = ...
local util = rt.util
rt.schedule = rt.schedule or {}

-- What each schedule function built here is, for the manifest: function
-- -> { kind, description, and its settings } (weak keys: it goes with the
-- function).  rt.schedule.describe reads it.
rt.schedule.info = setmetatable({}, { __mode = "k" })

-- A number as the shortest text that reads back as the same number.
local function g(v)
  local t = ("%.15g"):format(v)
  if tonumber(t) ~= v then t = ("%.17g"):format(v) end
  return t
end

-- rt.schedule.describe(value, epochs, steps) -> value itself when it is a
-- number; for a function of (epoch, step): { description, start, ["end"],
-- kind and settings when built here }, where start is its value at
-- (0, 0) and end at the run's last step (epochs - 1, steps - 1).  A
-- function not built here is described by where it is defined.
function rt.schedule.describe(f, epochs, steps)
  if type(f) ~= "function" then return f end
  local d = {}
  for k, v in pairs(rt.schedule.info[f] or {}) do d[k] = v end
  if not d.description then
    local i = debug.getinfo(f, "S")
    d.kind, d.description = "function", ("a Lua function (%s:%d)"):format(i.short_src, i.linedefined)
  end
  local ok, v = pcall(f, 0, 0)
  if ok then d.start = v end
  ok, v = pcall(f, math.max(epochs - 1, 0), math.max(steps - 1, 0))
  if ok then d["end"] = v end
  return d
end

local function number(o, k, what, default)
  local v = o[k]
  if v == nil then v = default end
  if type(v) ~= "number" or v ~= v then error(("%s: '%s' must be a number"):format(what, k), 3) end
  return v
end

-- rt.schedule.linear_warmup{ from = 0, to = 1, steps = n | epochs = n }
-- -> function(epoch, step): from at the start, rising linearly to `to`
-- after `steps` optimizer steps (or `epochs` epochs, moving once per
-- epoch), then staying there.
function rt.schedule.linear_warmup(o)
  local what = "rt.schedule.linear_warmup"
  if type(o) ~= "table" then error(what .. ": needs a table {from =, to =, steps = | epochs =}", 2) end
  util.check_keys(o, { from = 1, to = 1, steps = 1, epochs = 1 }, what, 2)
  local from, to = number(o, "from", what, 0), number(o, "to", what, 1)
  if (o.steps == nil) == (o.epochs == nil) then error(what .. ": give exactly one of 'steps' and 'epochs'", 2) end
  local by_steps = o.steps ~= nil
  local len = number(o, by_steps and "steps" or "epochs", what)
  if len <= 0 then error(what .. ": the warm-up length must be > 0", 2) end
  local f = function(epoch, step)
    local t = (by_steps and step or epoch) / len
    if t >= 1 then return to end
    return from + (to - from) * t
  end
  local unit = (by_steps and "step" or "epoch") .. (len == 1 and "" or "s")
  rt.schedule.info[f] = { kind = "linear_warmup", from = from, to = to, [by_steps and "steps" or "epochs"] = len,
                          description = ("linear from %s to %s over %s %s, then %s"):format(g(from), g(to), g(len), unit,
                            g(to)) }
  return f
end

-- rt.schedule.steps{ values = {v1, v2, ...}, every = n [, unit = "epoch" | "step"] }
-- -> function(epoch, step): v1 for the first n epochs (or steps), v2 for
-- the next n, ..., the last value from then on.
function rt.schedule.steps(o)
  local what = "rt.schedule.steps"
  if type(o) ~= "table" then error(what .. ": needs a table {values =, every =}", 2) end
  util.check_keys(o, { values = 1, every = 1, unit = 1 }, what, 2)
  if type(o.values) ~= "table" or #o.values == 0 then error(what .. ": 'values' must be a non-empty list", 2) end
  for i, v in ipairs(o.values) do
    if type(v) ~= "number" then error(("%s: values[%d] must be a number"):format(what, i), 2) end
  end
  local every = number(o, "every", what)
  if every <= 0 then error(what .. ": 'every' must be > 0", 2) end
  local unit = o.unit or "epoch"
  if unit ~= "epoch" and unit ~= "step" then error(what .. ": 'unit' is \"epoch\" or \"step\"", 2) end
  local values = { table.unpack(o.values) }
  local f = function(epoch, step)
    local i = math.floor((unit == "epoch" and epoch or step) / every) + 1
    return values[math.min(i, #values)]
  end
  local shown = {}
  for i, v in ipairs(values) do shown[i] = g(v) end
  rt.schedule.info[f] = { kind = "steps", values = { table.unpack(values) }, every = every, unit = unit,
                          description = ("%s: the next value every %s %s%s, the last kept"):format(
                            table.concat(shown, ", "), g(every), unit, every == 1 and "" or "s") }
  return f
end
