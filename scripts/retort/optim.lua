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

-- sched:describe() -> one line for the manifest, e.g. "cosine from lr
-- 0.001 down to min_lr 0, reached at step 4690" (settings as
-- rt.schedule_lr reads them, defaults included).
-- rt.schedule.f32_text(v): the shortest decimal that is the same f32 as v
-- (the core computes learning rates in f32: 0.0015, not 0.001500000013).
local function g(v)
  for digits = 6, 17 do
    local t = ("%." .. digits .. "g"):format(v)
    if string.pack("f", tonumber(t)) == string.pack("f", v) then return t end
  end
  return tostring(v)
end
rt.schedule.f32_text = g
function Schedule:describe()
  local lr, warmup = self.lr or 1e-3, self.warmup or 0
  local d
  if self.kind == "step" then
    d = ("lr %s times %s every %s steps"):format(g(lr), g(self.gamma or 0.1), g(self.step_size or 1))
  elseif self.kind == "cosine" then
    d = ("cosine from lr %s down to min_lr %s, reached at step %s"):format(g(lr), g(self.min_lr or 0),
      g(self.total or 1))
  else
    d = ("constant lr %s"):format(g(lr))
  end
  if warmup > 0 then d = ("linear warm-up over %s steps, then %s"):format(g(warmup), d) end
  return d
end
