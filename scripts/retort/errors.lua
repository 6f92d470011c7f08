-- errors.lua: how the library's errors read, and what rt.fit and
-- rt.distill check before their first step.
--
-- An error from a library function a recipe called reads
--   recipe.lua:12: rt.fit: step 40 (epoch 1): loss term 'kd' is nan ...
-- the recipe's line (never the library's), the function the recipe
-- called, where in the run it happened, the message, and a hint where
-- there is one.  A message that already starts with a position in the
-- user's own code (a callback of theirs failed) is passed on as it is, so
-- no position is ever doubled.
local rt = ...
local util = rt.util

-- A position in the library: it says nothing to a user.
local LIB_POS = "^scripts/retort/[^:\n]*%.lua:%d+: "

function util.strip_position(msg)
  if type(msg) ~= "string" then return msg end
  return (msg:gsub(LIB_POS, "", 1))
end

-- Whether msg starts with a "file:line: " of the user's code.
function util.has_position(msg)
  return type(msg) == "string" and msg:find("^[^\n:]+:%d+: ") ~= nil and not msg:find(LIB_POS)
end

-- msg as the error of the function `name` the user called:
-- "name: [where: ]message".  The library's functions name themselves in
-- their messages; when rt.fit runs rt.distill's code, the name is rt.fit.
function util.api_message(name, msg, where)
  if type(msg) ~= "string" then return msg end
  msg = util.strip_position(msg)
  if util.has_position(msg) then return msg end
  local own = msg:match("^(rt%.[%w_.]+): ")
  if own == name or own == "rt.distill" then msg = msg:sub(#own + 3) end
  return name .. ": " .. (where and (where .. ": ") or "") .. msg
end

-- f as the user-facing function `name`: its errors read as above and are
-- raised at the user's line.
function util.api(name, f)
  return function(...)
    local r = table.pack(pcall(f, ...))
    if not r[1] then util.rethrow(util.api_message(name, r[2])) end
    return table.unpack(r, 2, r.n)
  end
end

-- Where a run was when it failed, from the table the loop keeps
-- ({step, epoch}, 0-based): nil before the first step.
function util.run_position(at)
  if at.step then return ("step %d (epoch %d)"):format(at.step, at.epoch + 1) end
  if at.epoch then return ("after the steps of epoch %d"):format(at.epoch + 1) end
  return nil
end

-- ------------------------------------------------ before the first step

-- " (kind 'name': sizes = {...})" with entry k (1 or "last") set to v,
-- when the model has a sizes option (mlp): the change that fixes it.
local function sizes_hint(model, k, v)
  local ok, o = pcall(rt.json_decode, model:options_json())
  local s = ok and type(o) == "table" and o.sizes
  if type(s) ~= "table" or #s == 0 then return "" end
  local t = {}
  for i, n in ipairs(s) do t[i] = tostring(math.tointeger(n) or n) end
  t[k == "last" and #t or 1] = tostring(v)
  return ("; give %s '%s' sizes = {%s}"):format(model:kind(), model:name(), table.concat(t, ", "))
end

local function shape_str(t)
  local s = t:shape()
  local p = {}
  for i = 2, #s do p[#p + 1] = tostring(s[i]) end
  return "[" .. table.concat(p, ", ") .. "]"
end

-- The number of classes model gives for x1 (one sample of `what`): a
-- forward in eval mode, which draws nothing from the RNG and changes no
-- parameter, so training numbers are as without the check.
local SAMPLE0 = rt.tensor({ 0 }, "i32")
local function classes(model, x1, what, data)
  local ok, z = pcall(function()
    if model:kind() == "student" then return model:forward(x1, false) end
    return model:forward(x1, SAMPLE0)
  end)
  -- a teacher's non-finite output names its sample itself
  if not ok and tostring(z):find("for sample %d+ %(0%-based%)") then
    error(("%s: %s"):format(what, util.strip_position(z)), 0)
  end
  if not ok then
    local hint = ""
    if model:kind() == "student" and x1:dim() == 2 then hint = sizes_hint(model, 1, x1:size(2)) end
    error(("%s (samples of %s) does not fit the %s: %s%s"):format(what, shape_str(data:x()), model:kind(),
      util.strip_position(z), hint), 0)
  end
  if z:dim() < 2 then
    error(("%s '%s' gives outputs of %d dimensions; training needs [N, C] or [N, T, V] logits"):format(model:kind(),
      model:name(), z:dim()), 0)
  end
  return z:size(z:dim()), z:dim()
end

-- The labels y of `what` against the C classes of model.  unlabelled:
-- training data may mark samples unlabelled with -1 (ds:keep_labels);
-- then at least one label must remain.
function util.check_labels(model, C, y, what, unlabelled)
  local lo, hi = rt.label_range(y)
  if not lo then return end
  if unlabelled and lo == -1 then
    if hi == -1 then
      error(("%s has no labels (every sample is -1, unlabelled), but a loss term needs labels: drop the term "
        .. "or keep some labels (ds:keep_labels)"):format(what), 0)
    end
    lo = 0
  end
  if lo < 0 then
    error(("%s has a negative label (%d): labels are class ids 0..C-1%s"):format(what, lo,
      unlabelled and " (or -1 for an unlabelled sample)" or ""), 0)
  end
  if hi >= C then
    error(("%s has labels up to %d (%d classes), but %s '%s' gives %d classes%s"):format(what, hi, hi + 1,
      model:kind(), model:name(), C, model:kind() == "student" and sizes_hint(model, "last", hi + 1) or ""), 0)
  end
end
local check_labels = util.check_labels

-- Checks that the pieces of a run fit together before its first step:
-- the data's samples fit the student (and the teacher), the labels are
-- classes the student has, and the teacher gives as many classes as the
-- student.  Otherwise the first step fails deep in a loss (or, with the
-- teacher's logits cached, after minutes of caching) with a message about
-- rows of a batch.  o = {student, teacher, terms, data, eval, eval_teacher}.
local function is(x, kind)
  return type(x) == "userdata" and pcall(function() return x:kind() end) and x:kind() == kind
end

function util.check_run(o)
  local student, data = o.student, o.data
  if o.eval ~= nil and (type(o.eval) ~= "userdata" or not pcall(function() return o.eval:size() end)) then
    error("'eval' must be a dataset (rt.data.idx, rt.dataset)", 0)
  end
  if o.eval_teacher ~= nil and not is(o.eval_teacher, "teacher") then
    error("'eval_teacher' must be a teacher (rt.teacher)", 0)
  end
  local needs_teacher, needs_target = false, false
  for _, t in ipairs(o.terms) do
    needs_teacher = needs_teacher or t.needs_teacher
    needs_target = needs_target or t.needs_target
  end
  local C
  if data:size() > 0 then
    local x1 = data:x():narrow(1, 1, 1)
    C = classes(student, x1, "the training data", data)
    if needs_target and data:y() then check_labels(student, C, data:y(), "the training data", true) end
    if o.teacher and needs_teacher then
      local Ct, nd = classes(o.teacher, x1, "the training data", data)
      if Ct ~= C and nd > 2 then
        error(("teacher '%s' has a vocabulary of %d tokens, student '%s' of %d: token-level distillation compares "
          .. "them token by token (give both the same vocabulary)"):format(o.teacher:name(), Ct, student:name(), C), 0)
      end
      if Ct ~= C then
        error(("teacher '%s' gives %d classes, student '%s' gives %d: the loss compares them class by class%s")
          :format(o.teacher:name(), Ct, student:name(), C, sizes_hint(student, "last", Ct)), 0)
      end
    end
  end
  local eval = o.eval
  if eval and eval:size() > 0 then
    local x1 = eval:x():narrow(1, 1, 1)
    local Ce = classes(student, x1, "the eval data", eval)
    if eval:y() then check_labels(student, Ce, eval:y(), "the eval data") end
    if o.eval_teacher then
      local Ct = classes(o.eval_teacher, x1, "the eval data", eval)
      if Ct ~= Ce then
        error(("the eval teacher '%s' gives %d classes, student '%s' gives %d: agreement and KL compare them class "
          .. "by class%s"):format(o.eval_teacher:name(), Ct, student:name(), Ce, sizes_hint(student, "last", Ct)), 0)
      end
    end
  end
end

-- ------------------------------------------------------- during a step

-- "nan", "inf" or "-inf" (tostring gives "-nan" for some NaNs).
local function nonfinite_name(v)
  if v ~= v then return "nan" end
  return v > 0 and "inf" or "-inf"
end

-- The message for loss term t's non-finite value v: whether its inputs
-- were finite says where the NaN came from.
function util.nonfinite_loss(t, v, s, idx)
  local ok, err = pcall(rt.check_finite, s, "the student's logit", idx)
  if not ok then
    return ("loss term '%s' is %s: %s (the student's forward overflowed: lower the learning rate)"):format(t.name,
      nonfinite_name(v), util.strip_position(err))
  end
  local big = s:abs():max()
  return ("loss term '%s' is %s, from finite student logits (largest |logit| %.3g): %s"):format(t.name,
    nonfinite_name(v), big, big > 1e6 and "the weights grew too large; lower the learning rate"
      or "the loss overflowed; check its options")
end
