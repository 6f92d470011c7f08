-- run_abi.lua: what rt.distill does for ABI 2.0's loss surfaces, kept out
-- of train.lua: losses that read named features (recorded on the student
-- or teacher, passed in declared order) and send gradients into student
-- features (taps, routed into student:backward), and losses that own
-- parameters (bound on a first batch before training or resuming, trained
-- by the run's optimizer, saved in checkpoints as "loss.<term>.<name>").
-- A run whose losses use none of this takes none of these paths.
local rt = ...
local M = {}
rt.run_abi = M

-- Reads each term's declared features, asks the student / teacher to
-- record them.  Returns the plan; plan.active is false when no term reads
-- a feature or binds.
function M.plan(terms, student, teacher, level)
  local plan = { active = false, student_feats = {}, teacher_features = false, bufs = {}, extras = {} }
  for _, t in ipairs(terms) do
    t.features, t.binds = t.loss:features(), t.loss:binds()
    if #t.features > 0 or t.binds then plan.active = true end
    for _, f in ipairs(t.features) do
      if f.from == "teacher" then
        if not teacher then
          error(("rt.distill: loss '%s' reads teacher feature '%s' and there is no teacher"):format(t.name, f.name),
            level + 1)
        end
        local ok, err = pcall(teacher.record, teacher, f.name)
        if not ok then error(("rt.distill: loss '%s': %s"):format(t.name, tostring(err)), level + 1) end
        plan.teacher_features = true
      else
        local ok, err = pcall(student.record, student, f.name)
        if not ok then error(("rt.distill: loss '%s': %s"):format(t.name, tostring(err)), level + 1) end
        plan.student_feats[f.name] = true
      end
    end
  end
  return plan
end

local function features(t, student, teacher)
  local list = {}
  for i, f in ipairs(t.features) do
    local src = f.from == "teacher" and teacher or student
    list[i] = src:feature(f.name)
    if not list[i] then error(("loss '%s': the %s recorded no feature '%s'"):format(t.name, f.from, f.name), 0) end
  end
  return list
end

-- Zeroes the tap buffers (one per tapped student feature, shared by the
-- terms) for a new step.
function M.begin_step(plan, student)
  for name in pairs(plan.student_feats) do
    local f, b = student:feature(name), plan.bufs[name]
    if b == nil or #b ~= #f or b:numel() ~= f:numel() then plan.bufs[name] = rt.zeros(f:shape()) else b:fill(0) end
  end
end

-- One term's value, and with w ~= 0 its gradients: into grad (the output)
-- and into the tap buffers (its student features).
-- mask: the labelled rows when the data has unlabelled ones (step.lua).
function M.term(plan, t, student, teacher, s, tz, y, epoch, step, w, grad, mask)
  local a = { s, t.needs_teacher and tz or nil, t.needs_target and y or nil, epoch = epoch, step = step,
              features = features(t, student, teacher), mask = mask }
  local v = t.loss:forward(a)
  if grad and w ~= 0 and v == v then
    local fg = {}
    for i, f in ipairs(t.features) do fg[i] = f.from == "student" and plan.bufs[f.name] or false end
    a.feature_grads, a.scale, a.grad = fg, w, grad
    t.loss:backward(a)
  end
  return v
end

-- The taps for student:backward, or nil.
function M.taps(plan)
  if next(plan.student_feats) == nil then return nil end
  return plan.bufs
end

-- Runs the student (eval mode, no dropout draws) and teacher on the first
-- batch and every binding loss's forward once, so that losses owning
-- parameters have them before the optimizer or a resume sees the run.
-- Then lists those losses for opt:step / opt:restore.
function M.bind(plan, terms, student, teacher, data)
  if not plan.active or plan.bound then return end
  plan.bound = true
  local need = false
  for _, t in ipairs(terms) do need = need or t.binds end
  if need then
    for x, y, idx in data:batches(math.min(data:size(), 32)) do
      local tz = teacher and teacher:forward(x, idx)
      local s = student:forward(x, false)
      for _, t in ipairs(terms) do
        if t.binds then M.term(plan, t, student, teacher, s, tz, y, 0, 0, 0, nil) end
      end
      break
    end
  end
  for _, t in ipairs(terms) do
    if #t.loss:parameters() > 0 then plan.extras[#plan.extras + 1] = { "loss." .. t.name .. ".", t.loss } end
  end
  if #plan.extras == 0 then plan.extras = nil end
end

-- Checkpoint entries of the losses' own parameters.
function M.save_list(plan, list)
  for _, e in ipairs(plan and plan.extras or {}) do
    for _, p in ipairs(e[2]:parameters()) do list[#list + 1] = { e[1] .. p.name, p.value } end
  end
end

function M.load(plan, tensors, path)
  for _, e in ipairs(plan and plan.extras or {}) do
    for _, p in ipairs(e[2]:parameters()) do
      local t = tensors[e[1] .. p.name]
      if not t then error(("resume: %s has no tensor '%s'"):format(path, e[1] .. p.name), 0) end
      p.value:copy(t)
    end
  end
end
