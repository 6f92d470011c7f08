-- test_feature_distill.lua: the feature losses in rt.distill with the cnn
-- and resnet students (issue 10): each trains its student through a tap,
-- a projection or regressor is sized from the features (a 1x1 conv when
-- the channel counts differ), trained and saved in the checkpoint, and
-- only the features the losses read are kept.
local T = dofile("tests/lua/t.lua")
local rt = require "retort"

local function images(n, seed)
  math.randomseed(seed)
  local rows, ys = {}, {}
  for i = 1, n do
    local r = {}
    for j = 1, 64 do r[j] = math.random() end
    rows[i], ys[i] = r, i % 3
  end
  return rt.dataset(rt.tensor(rows), rt.tensor(ys, "i32"))
end

local T_LAYERS = "conv6x3,bn,relu,maxpool2,flatten,fc8,relu,fc3"
local S_LAYERS = "conv4x3,bn,relu,maxpool2,flatten,fc5,relu,fc3"

T.test("every feature loss trains the cnn student through its feature; regressors are saved", function()
  local ds = images(48, 1)
  local teacher = rt.teacher("model", { arch = "cnn", options = { input = { 1, 8, 8 }, layers = T_LAYERS, seed = 3 },
                                        random_init = true })
  local cases = {
    { "hint", { student = "features.2", teacher = "features.2" }, "loss.hint.regressor.weight", { 6, 4, 1, 1 } },
    { "feature_mse", { student = "features.3", teacher = "features.3" }, "loss.feature_mse.proj.weight", { 6, 4, 1, 1 } },
    { "feature_cosine", { student = "classifier.1", teacher = "classifier.1" }, "loss.feature_cosine.proj.weight", { 8, 5 } },
    { "attention", { student = "features.2", teacher = "features.2" } },
    { "rkd", { student = "classifier.1", teacher = "classifier.1" } },
  }
  for _, c in ipairs(cases) do
    local student = rt.student("cnn", { input = { 1, 8, 8 }, layers = S_LAYERS, seed = 2 })
    local w0 = student:parameters()[1].value:clone()
    local dir = T.tmpdir()
    local loss = rt.loss(c[1], c[2])
    local r = rt.distill{ teacher = teacher, student = student, data = ds, loss = { { loss, 1, name = c[1] } },
                          epochs = 1, batch = 16, quiet = true, out = dir, optimizer = rt.optim.adam{ lr = 0.01 } }
    T.check(r ~= nil, c[1] .. ": distill ran")
    local moved = (student:parameters()[1].value - w0):abs():sum()
    T.check(moved > 0, c[1] .. ": the tap moved features.0.weight: " .. moved)
    local tensors = rt.load(dir .. "/last.safetensors")
    T.check(tensors["features.1.num_batches_tracked"] ~= nil and tensors["features.1.num_batches_tracked"]:get() == 3,
      c[1] .. ": batch norm counted its 3 batches")
    if c[3] then
      local w = tensors[c[3]]
      T.check(w ~= nil and table.concat(w:shape(), ",") == table.concat(c[4], ","),
        c[1] .. ": " .. c[3] .. " saved with shape " .. (w and table.concat(w:shape(), ",") or "none"))
    else
      T.check(#loss:parameters() == 0, c[1] .. ": no parameters")
    end
    os.execute("rm -rf " .. dir)
  end
end)

T.test("the resnet's features and the cnn's: listed, recorded only when asked", function()
  local s = rt.student("resnet", { input = { 1, 8, 8 }, depth = 8, width = 2, classes = 3 })
  local names = s:features()
  T.check(names[1] == "conv1" and names[#names] == "fc", "resnet features from conv1 to fc")
  local x = rt.zeros{ 2, 64 }
  s:forward(x, false)
  T.check(s:feature("layer2") == nil, "not recorded: not kept for the caller")
  s:record("layer2", true)
  s:forward(x, false)
  local f = s:feature("layer2")
  T.check(f ~= nil and table.concat(f:shape(), ",") == "2,4,4,4", "layer2 is [N, 4, 4, 4]")
end)

T.done("test_feature_distill.lua")
