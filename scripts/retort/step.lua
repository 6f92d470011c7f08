-- step.lua: one training step of rt.distill: the teacher's signal (cached
-- or live), the student's forward, every weighted loss term's forward and
-- backward into one gradient, the student's backward and the optimizer's
-- step.  Moved out of train.lua (issue 9); rt.distill calls it through
-- rt.step at call time.
local rt = ...
local util = rt.util

-- run: { student, teacher, cache, bs, terms, plan, opt, lr_at, grad, tbuf,
-- clip } (grad and tbuf: buffers reused across steps, kept in run; clip:
-- the clip_grad_norm limit or nil).  Adds each term's value times #x to
-- sums[i]; returns the weighted total, the terms' values by name, the
-- learning rate used and, with clip, the gradients' global norm before
-- clipping.
local function train_step(run, x, y, idx, epoch, step, sums)
  local student, teacher, terms, plan = run.student, run.teacher, run.terms, run.plan
  local tz
  -- an on-policy batch (lm_distill.lua): generated x, its own mask
  local policy = run.policy_batch
  if teacher then
    if run.cache and not policy then
      tz = rt.cache.teacher_rows(run, idx)
    else
      tz = teacher:forward(x, idx)
    end
  end
  local s = student:forward(x, true)
  if plan.active then rt.run_abi.begin_step(plan, student) end
  local grad = run.grad
  if grad == nil or #grad ~= #s then grad = rt.zeros(s:shape()) else grad:fill(0) end
  run.grad = grad
  local total = 0
  local values = {}
  -- Data with unlabelled samples (label -1, ds:keep_labels): the terms
  -- that need labels see only this batch's labelled rows (a mask; their
  -- mean is over those rows) and are skipped, value 0, when it has none.
  local mask, labelled
  if run.unlabelled and y then run.mask, labelled = rt.label_mask(y, run.mask); mask = run.mask end
  -- On-policy (GKD, as TRL): every term sees the generated positions only,
  -- and the terms that need the data's labels are skipped, value 0.
  if policy then mask, labelled = policy.mask, 0 end
  for i, t in ipairs(terms) do
    local w = rt.terms.apply_schedules(t, epoch, step)
    local v
    local routed = t.features and (#t.features > 0 or t.binds)
    local tmask = (t.needs_target or policy) and mask or nil
    if tmask and labelled == 0 and t.needs_target then
      v, routed, w = 0, true, 0
    elseif routed then
      v = rt.run_abi.term(plan, t, student, teacher, s, tz, y, epoch, step, w, grad, tmask)
    elseif tmask then
      local a = { s, t.needs_teacher and tz or nil, t.needs_target and y or nil, epoch = epoch, step = step,
                  mask = tmask }
      v = t.loss:forward(a)
      if w ~= 0 and v == v then
        a.scale, a.grad = w, grad
        t.loss:backward(a)
        rt.check_finite(grad, ("loss term '%s': its gradient"):format(t.name), idx)
      end
      routed = true -- its backward is done
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
  local lr = run.lr_at(step)
  -- clip_grad_norm: over the parameters the optimizer steps (the
  -- student's and the losses' own); norm is the norm before clipping.
  local norm
  if run.clip then norm = rt.clip_grad_norm(student, run.clip, plan.extras) end
  run.opt:step(student, lr, plan.extras)
  return total, values, lr, norm
end

rt.step = { train_step = train_step }
