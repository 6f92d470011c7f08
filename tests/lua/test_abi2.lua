-- test_abi2.lua: rt.distill routes ABI 2.0's surfaces (fixtures in
-- tests/fixtures/fx_abi2.c): a loss reading a student feature gets it and
-- its gradient reaches the student as a tap; the loss's own parameter is
-- bound on a first batch, trained by the run's optimizer and saved in the
-- checkpoint as loss.<term>.<name>, and a resume restores it; a teacher
-- that needs sample ids gets the dataset's rows; i32 token datasets batch.
local T = dofile("tests/lua/t.lua")
local rt = require "retort"
local BUILD = os.getenv("RETORT_TEST_BUILD") or "build"
rt.load_plugin(BUILD .. "/tests/fixtures/fx_abi2.so")

local function data(n, d, seed)
  math.randomseed(seed)
  local rows, ys = {}, {}
  for i = 1, n do
    local r = {}
    for j = 1, d do r[j] = 2 * math.random() - 1 end
    rows[i], ys[i] = r, i % 3
  end
  return rt.dataset(rt.tensor(rows), rt.tensor(ys, "i32"))
end

T.test("a feature loss with its own regressor: taps train the student, the regressor trains and is saved", function()
  local ds = data(64, 6, 1)
  local teacher = rt.teacher("model", { arch = "mlp", options = { sizes = { 6, 8, 3 }, seed = 9 }, random_init = true })
  local student = rt.student("mlp", { sizes = { 6, 8, 3 }, seed = 2 })
  local hint = rt.loss("fx_hint", { feature = "layers.0" })
  T.check(#hint:features() == 1 and hint:features()[1].from == "student", "features()")
  local w0 = student:parameters()[1].value:clone()
  local dir = T.tmpdir()
  local r = rt.distill{ teacher = teacher, student = student, data = ds, loss = { { hint, 1, name = "hint" } },
                        epochs = 2, batch = 16, quiet = true, out = dir, optimizer = rt.optim.adam{ lr = 0.01 } }
  T.check(r ~= nil, "distill ran")
  local p = hint:parameters()
  T.check(#p == 1 and p[1].name == "regressor.weight" and p[1].value:shape()[2] == 8, "bound from the feature")
  -- only the tap reaches layers.0 (the loss sends nothing into the logits)
  local moved = (student:parameters()[1].value - w0):abs():sum()
  T.check(moved > 0, "the tap moved layers.0.weight: " .. moved)
  local tensors = rt.load(dir .. "/last.safetensors")
  local saved = tensors["loss.hint.regressor.weight"]
  T.check(saved ~= nil, "the checkpoint holds loss.hint.regressor.weight")
  T.check(saved and (saved - p[1].value):abs():sum() == 0, "the saved regressor is the trained one")
  T.check(tensors["optim.loss.hint.regressor.weight.exp_avg"] ~= nil, "its Adam moments are checkpointed too")
  -- resume: a fresh loss gets the saved regressor back
  local hint2 = rt.loss("fx_hint", { feature = "layers.0" })
  local student2 = rt.student("mlp", { sizes = { 6, 8, 3 }, seed = 2 })
  rt.distill{ teacher = teacher, student = student2, data = ds, loss = { { hint2, 1, name = "hint" } },
              epochs = 2, batch = 16, quiet = true, out = dir, resume = true, optimizer = rt.optim.adam{ lr = 0.01 } }
  T.check((hint2:parameters()[1].value - saved):abs():sum() == 0, "resume restored the regressor")
  os.execute("rm -rf " .. dir)
end)

T.test("a teacher that looks rows up by sample id gets the batch's dataset rows", function()
  local ds = data(20, 4, 2)
  local teacher = rt.teacher("fx_lookup", { classes = 3 })
  T.raises(function() teacher:forward(ds:x()) end, "teacher 'fx_lookup': needs sample ids")
  local z = teacher:forward(ds:x():narrow(1, 1, 2), rt.tensor({ 5, 3 }, "i32"))
  T.check(z:get(1, 1) == 50 and z:get(2, 3) == 32, "rows by id")
  local student = rt.student("mlp", { sizes = { 4, 3 } })
  local ok, err = pcall(rt.distill, { teacher = teacher, student = student, data = ds, loss = rt.loss("kd"),
                                       epochs = 1, batch = 8, quiet = true, cache_teacher = false })
  T.check(ok, "distill without the cache passes ids: " .. tostring(err))
end)

T.test("token-id datasets: i32 x batches, the student's spec checks it", function()
  local x = rt.zeros({ 6, 4 }, "i32")
  for i = 1, 6 do for j = 1, 4 do x:set(i, j, (i + j) % 7) end end
  local ds = rt.dataset(x)
  local s = rt.student("fx_tok", { vocab = 7 })
  T.check(s:input_spec().dtype == "i32" and s:input_spec().shape[1] == 0, "input_spec()")
  for xb in ds:batches(4) do
    T.check(xb:dtype() == "i32", "batch dtype")
    local out = s:forward(xb)
    T.check(#out:shape() == 3 and out:shape()[3] == 5, "[N, T, C] out")
  end
  T.raises(function() s:forward(rt.zeros{ 2, 4 }) end, "input must be i32")
end)

T.done("test_abi2.lua")
