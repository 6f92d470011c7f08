-- cnn_teacher.lua: trains the CNN teacher for the feature-distillation
-- demo: conv 32 3x3, bn, relu, max-pool, conv 64 3x3, bn, relu, max-pool,
-- a 256-unit head; Adam with a cosine schedule; the best epoch chosen on a
-- 5000-image validation split of the training set (ds:split), reported on
-- the test set.
--
--   retort run scripts/recipes/cnn_teacher.lua [--epochs 6] [--augment] [--help]
local rt = require "retort"

local o = rt.util.args(arg, {
  epochs = 6,
  batch = 128,
  lr = 1e-3,         -- Adam, decayed to 0 by a cosine schedule
  dropout = 0.3,     -- before the last layer
  seed = 1,
  limit = 0,         -- use only the first N training samples (0: all)
  augment = false,   -- random crop (padding 2) and horizontal flip
  threads = 2,       -- BLAS threads
  out = "runs/cnn_teacher",
  quiet = false,
}, "Trains a 2-conv CNN teacher (32/64 channels, bn, 256-unit head) on Fashion-MNIST.")

rt.set_threads(o.threads)
local all = rt.data.fashion_mnist("train", { limit = o.limit })
local train, val = all:split{ n = math.min(5000, all:size() // 6), seed = o.seed }
local test = rt.data.fashion_mnist("test")
local layers = ("conv32x3,bn,relu,maxpool2,conv64x3,bn,relu,maxpool2,flatten,fc256,relu,dropout%g,fc10"):format(o.dropout)
local net = rt.student("cnn", { layers = layers, seed = o.seed })
print(("cnn teacher: %d parameters, %d training / %d validation / %d test images")
  :format(net:param_count(), train:size(), val:size(), test:size()))
local run = rt.fit{
  student = net, data = train, val = val, eval = test, epochs = o.epochs, batch = o.batch,
  optimizer = rt.optim.adam{ lr = o.lr }, schedule = rt.schedule.cosine{ lr = o.lr }, seed = o.seed,
  out = o.out, overwrite = true, quiet = o.quiet, name = "cnn teacher",
  augment = o.augment and { shape = { 1, 28, 28 }, pad = 2, flip = true } or nil,
}
local best = rt.teacher("model", { checkpoint = o.out .. "/best.safetensors" })
local r = rt.evaluate(best, test)
print(("best epoch %d (validation): test accuracy %.4f; %.1f s per epoch; checkpoint %s/best.safetensors")
  :format(run.best_epoch or -1, r.accuracy, run.epoch_seconds, o.out))
