-- test_e2e.lua: a short distillation on a Fashion-MNIST subset, end to end:
-- train a teacher, distil a student, beat chance by far, load the
-- checkpoint back, and resume to the same bits as an uninterrupted run.
local T = dofile("tests/lua/t.lua")
local rt = require "retort"

local train = rt.data.fashion_mnist("train", { limit = 4000 })
local test = rt.data.fashion_mnist("test", { limit = 1000 })
local dir = T.tmpdir()

local teacher_net, teacher
T.test("a teacher trains well above chance and leaves a checkpoint", function()
  teacher_net = rt.student("mlp", { sizes = { 784, 256, 10 }, seed = 1 })
  local run = rt.fit{ student = teacher_net, data = train, eval = test, epochs = 3, batch = 64,
                      optimizer = rt.optim.adam{ lr = 1e-3 }, out = dir .. "/teacher", quiet = true }
  T.check(run.test.accuracy > 0.70, "teacher accuracy " .. run.test.accuracy .. " (chance is 0.10)")
  T.check(rt.exists(dir .. "/teacher/last.safetensors"), "checkpoint written")
  T.check(rt.exists(dir .. "/teacher/metrics.jsonl"), "metrics written")
  teacher = rt.teacher("model", { checkpoint = dir .. "/teacher/last.safetensors" })
  local again = rt.evaluate(teacher, test)
  T.near(again.accuracy, run.test.accuracy, 1e-12, "the checkpoint loads back to the same accuracy")
end)

local function distill(out, epochs, resume)
  local s = rt.student("mlp", { sizes = { 784, 32, 10 }, seed = 7, dropout = 0.1 })
  local run = rt.distill{ teacher = teacher, student = s, data = train, eval = test, epochs = epochs, batch = 100,
                          loss = { { rt.loss("kd", { temperature = 4 }), 0.7 }, { rt.loss("ce"), 0.3 } },
                          optimizer = rt.optim.adam{ lr = 2e-3 }, out = out, resume = resume, quiet = true, seed = 5 }
  return s, run
end

T.test("a distilled student beats chance by far and agrees with its teacher", function()
  local s, run = distill(dir .. "/kd", 3)
  T.check(run.test.accuracy > 0.65, "student accuracy " .. run.test.accuracy)
  T.check(run.test.agreement > 0.70, "agreement " .. run.test.agreement)
  T.check(run.test.kl >= 0 and run.test.kl < 2, "KL to the teacher " .. run.test.kl)
  -- every loss term is logged separately
  local f = assert(io.open(dir .. "/kd/metrics.jsonl"))
  local steps, epochs = 0, 0
  for line in f:lines() do
    local r = rt.json_decode(line)
    if r.event == "step" then
      steps = steps + 1
      T.check(r.terms and r.terms.kd and r.terms.ce, "both terms in a step row")
    elseif r.event == "epoch" then
      epochs = epochs + 1
      T.check(r.train.kd and r.train.ce and r.test.accuracy, "epoch row")
    end
  end
  f:close()
  T.check(steps > 0 and epochs == 3, ("rows: %d steps, %d epochs"):format(steps, epochs))
  _G.uninterrupted = s
end)

T.test("resume from the last checkpoint is bit-identical to a run that never stopped", function()
  distill(dir .. "/resumed", 2)                       -- stops after epoch 2 of 3
  local s, run = distill(dir .. "/resumed", 3, true)  -- a new process would do the same
  T.check(#run.history == 3, "history carried over: " .. #run.history)
  local a, b = _G.uninterrupted:parameters(), s:parameters()
  local same = #a == #b
  for i = 1, #a do
    local x, y = a[i].value, b[i].value
    local n = x:numel()
    local fx, fy = x:reshape{ n }, y:reshape{ n }
    for k = 1, n do
      if fx:get(k) ~= fy:get(k) then same = false break end
    end
  end
  T.check(same, "parameters differ after resume")
end)

T.test("a loss that needs labels on data without labels is refused up front", function()
  local unlabelled = rt.dataset(train:x())
  T.raises(function()
    rt.fit{ student = rt.student("mlp", { sizes = { 784, 10 } }), data = unlabelled, epochs = 1, quiet = true }
  end, "loss 'ce' needs labels")
  T.raises(function()
    rt.distill{ student = rt.student("mlp", { sizes = { 784, 10 } }), data = train, loss = { { rt.loss("kd"), 1 } } }
  end, "loss 'kd' needs a teacher")
  T.raises(function() rt.distill{ student = teacher_net, data = train, epoch = 1 } end,
    "unknown field 'epoch'", "did you mean 'epochs'")
end)

os.execute("rm -rf " .. dir)
T.done("test_e2e.lua")
