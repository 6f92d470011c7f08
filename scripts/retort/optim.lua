-- optim.lua: optimizers and learning-rate schedules over the C core.
local rt = ...
local util = rt.util
rt.optim = {}

-- rt.optim.sgd{lr, momentum, dampening, nesterov, weight_decay}
-- rt.optim.adam{lr, betas = {b1, b2}, eps, weight_decay}   (L2 in the gradient)
-- rt.optim.adamw{lr, betas, eps, weight_decay = 0.01}     (decoupled decay)
for _, kind in ipairs{ "sgd", "adam", "adamw" } do
  rt.optim[kind] = function(o) return util.call(rt.optimizer, kind, o or {}) end
end

-- Schedules are callable objects: sched(step) -> learning rate.  `total`
-- may be left out: distill sets it from epochs x batches per epoch.
rt.schedule = {}
local Schedule = { __call = function(self, step) return rt.schedule_lr(self, step) end }
Schedule.__index = Schedule

-- Errors are raised at the recipe's line (util.rethrow finds it: the
-- constructors below tail-call make, so a fixed error level would miss).
local function make(kind, o, known)
  o = o or {}
  local ok, err = pcall(util.check_keys, o, known, "rt.schedule." .. kind)
  if not ok then util.rethrow(err) end
  local s = { kind = kind }
  for k, v in pairs(o) do
    if type(v) ~= "number" or v ~= v or v == math.huge or v == -math.huge then
      util.rethrow(("rt.schedule.%s: '%s' must be a finite number, got %s"):format(kind, k, tostring(v)))
    end
    s[k] = v
  end
  return setmetatable(s, Schedule)
end

function rt.schedule.constant(o) return make("constant", o, { lr = 1, warmup = 1 }) end
function rt.schedule.step(o) return make("step", o, { lr = 1, step_size = 1, gamma = 1, warmup = 1 }) end
function rt.schedule.cosine(o) return make("cosine", o, { lr = 1, min_lr = 1, warmup = 1, total = 1 }) end
function rt.schedule.is(x) return getmetatable(x) == Schedule end
