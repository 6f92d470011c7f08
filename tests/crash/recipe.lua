-- The run that tests/check_crash.sh kills and resumes: a short distillation
-- on a Fashion-MNIST subset, checkpointing every epoch, resuming from the
-- last checkpoint when there is one.  At the end it saves the student's
-- parameters (no timings in the metadata, so equal runs give equal bytes).
--   retort run tests/crash/recipe.lua OUT
local rt = require "retort"
local out = assert(arg[1], "usage: recipe.lua OUT")
rt.set_threads(1)
local train = rt.data.fashion_mnist("train", { limit = 6000 })
local teacher_net = rt.student("mlp", { sizes = { 784, 64, 10 }, seed = 3 })
local teacher = rt.teacher("model", { student = teacher_net })
local student = rt.student("mlp", { sizes = { 784, 32, 10 }, seed = 4, dropout = 0.1 })
rt.distill{ teacher = teacher, student = student, data = train, epochs = 12, batch = 50, seed = 9,
            loss = { { rt.loss("kd", { temperature = 2 }), 0.5 }, { rt.loss("ce"), 0.5 } },
            optimizer = rt.optim.adam{ lr = 1e-3 }, out = out, resume = true, quiet = true }
student:save(out .. "/final.safetensors")
