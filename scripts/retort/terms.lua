-- terms.lua: the loss terms of rt.distill: the accepted forms of 'loss'
-- made into one list (normalize_terms), the schedules of a term's weight
-- and temperature applied at each step (apply_schedules), and the text of
-- the progress bar and of the epoch line.  Moved out of train.lua (issue
-- 9); train.lua and step.lua reach them through rt.terms at call time.
local rt = ...
local util = rt.util

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

-- A term's weight at (epoch, step), after setting its temperature when
-- its schedule changed it (loss:set only on a change).
local function apply_schedules(t, epoch, step)
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
  return w
end

-- The progress bar's text: the weighted total and every term's value.
local function progress_text(terms, values, total)
  local parts = { ("loss %.4f"):format(total) }
  for _, t in ipairs(terms) do
    local v = values[t.name]
    if v and #terms > 1 then parts[#parts + 1] = ("%s %.4f"):format(t.name, v) end
  end
  return table.concat(parts, " ")
end

-- The line written after each epoch: every term's mean and the held-out
-- accuracies (and agreement).
local function epoch_line(name, epoch, epochs, terms, row, val_name, eval_name, seconds)
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
  return ("%s epoch %d/%d  %s%s  %.1fs\n"):format(name, epoch + 1, epochs, table.concat(parts, "  "),
    table.concat(held), seconds)
end

rt.terms = { normalize_terms = normalize_terms, apply_schedules = apply_schedules, progress_text = progress_text,
             epoch_line = epoch_line }
