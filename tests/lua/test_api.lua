-- test_api.lua: the Lua API, its objects and its error messages.
local T = dofile("tests/lua/t.lua")
local rt = require "retort"
local BUILD = os.getenv("RETORT_TEST_BUILD") or "build"
local this = "test_api.lua"

T.test("tensors: shape, get/set 1-based, views share storage", function()
  local t = rt.tensor{ { 1, 2, 3 }, { 4, 5, 6 } }
  T.check(t:dim() == 2 and t:size(1) == 2 and t:size(2) == 3 and #t == 2, "shape")
  T.check(t:get(2, 3) == 6, "get is 1-based")
  local v = t:narrow(1, 2, 1)
  v:set(1, 1, 40)
  T.check(t:get(2, 1) == 40, "a narrow view shares storage")
  T.check(t:sum() == 1 + 2 + 3 + 40 + 5 + 6, "sum")
  local c = t:clone()
  c:set(1, 1, 100)
  T.check(t:get(1, 1) == 1, "clone copies")
  T.check(rt.tensor({ 1, 2 }, "i32"):dtype() == "i32", "i32 tensors")
  T.raises(function() t:get(3, 1) end, "index 3 of dimension 1 is outside 1..2")
  T.raises(function() t:reshape{ 4 } end, "has 6 elements")
  T.raises(function() rt.tensor{ { 1, 2 }, { 3 } } end, "ragged")
end)

T.test("tensors: argmax gives 0-based class ids", function()
  local z = rt.tensor{ { 0.1, 3, -1 }, { 5, 0, 0 } }
  local a = z:argmax()
  T.check(a:dtype() == "i32" and a:get(1) == 1 and a:get(2) == 0, "argmax")
end)

T.test("plugins: the built-in ones are listed with their ABI", function()
  local names = {}
  for _, p in ipairs(rt.plugins()) do names[p.kind .. ":" .. p.name] = p end
  for _, k in ipairs{ "student:mlp", "teacher:model", "loss:ce", "loss:kd", "loss:mse_logits" } do
    T.check(names[k] ~= nil, "missing " .. k)
  end
  T.check(names["loss:kd"].abi == rt.abi, "abi")
  local help = rt.plugin_help("loss", "kd")
  T.check(help:find("temperature", 1, true) and help:find("number", 1, true) and help:find("default 4", 1, true),
    "help lists the option, its type and default: " .. help)
end)

T.test("options: misspelled, wrong type, out of range, unknown plugin", function()
  local err = T.raises(function() rt.loss("kd", { temprature = 4 }) end,
    "loss 'kd'", "unknown option 'temprature'", "did you mean 'temperature'?")
  -- the error points at this file's line, not at the library
  T.check(err and err:find(this, 1, true), "error position names the recipe: " .. tostring(err))
  T.raises(function() rt.loss("kd", { temperature = "hot" }) end, "option 'temperature' must be a number")
  T.raises(function() rt.loss("kd", { temperature = -1 }) end, "out of range")
  T.raises(function() rt.student("mlp", { activation = "sigmoid" }) end, "not one of relu|gelu|tanh")
  T.raises(function() rt.student("mlp", { sizes = { 784, 1.5, 10 } }) end, "must be an integer")
  T.raises(function() rt.loss("kdd") end, "no loss plugin 'kdd' (did you mean 'kd'?)")
  T.raises(function() rt.loss("kd", { temperature = 0 / 0 }) end, "must be finite")
  T.raises(function() rt.optim.adam{ learning_rate = 1 } end, "unknown option 'learning_rate'")
end)

T.test("student and loss: shapes are checked with both shapes named", function()
  local s = rt.student("mlp", { sizes = { 4, 3 } })
  local x = rt.zeros{ 2, 5 }
  T.raises(function() s:forward(x) end, "student 'mlp'", "input [2, 5] has 5 values per sample, the student takes 4")
  local kd = rt.loss("kd")
  T.raises(function() kd:forward(rt.zeros{ 2, 3 }, rt.zeros{ 2, 4 }) end,
    "loss 'kd'", "student logits [2, 3] vs teacher logits [2, 4]")
  T.raises(function() kd:forward(rt.zeros{ 2, 3 }) end, "needs a teacher signal")
  local ce = rt.loss("ce")
  T.raises(function() ce:forward(rt.zeros{ 2, 3 }, nil, rt.tensor({ 0, 3 }, "i32")) end,
    "target label 3 at row 1 is outside [0, 3)")
  T.raises(function() s:backward(rt.zeros{ 2, 3 }) end, "backward before forward")
end)

T.test("hand-written loop: loss goes down, gradients flow, parameters named like PyTorch", function()
  local s = rt.student("mlp", { sizes = { 6, 16, 3 }, seed = 3 })
  local params = s:parameters()
  T.check(#params == 4 and params[1].name == "layers.0.weight" and params[4].name == "layers.1.bias", "names")
  local w = params[1].value:shape()
  T.check(w[1] == 16 and w[2] == 6, "weight is [out, in]")
  local x = rt.zeros{ 30, 6 }
  local y = rt.zeros({ 30 }, "i32")
  for i = 1, 30 do
    local c = i % 3
    y:set(i, c)
    for j = 1, 6 do x:set(i, j, (j % 3 == c) and 1 or -0.5) end
  end
  local ce, opt = rt.loss("ce"), rt.optim.adam{ lr = 0.05 }
  local first, last
  for _ = 1, 60 do
    local z = s:forward(x, true)
    local v = ce:forward(z, nil, y)
    first = first or v
    last = v
    s:backward(ce:backward(z, nil, y))
    opt:step(s)
  end
  T.check(last < first * 0.2, ("loss %g -> %g"):format(first, last))
  T.check(rt.count_correct(s:forward(x), y) == 30, "fits a separable toy set")
end)

T.test("teacher from a live student computes the same logits", function()
  local s = rt.student("mlp", { sizes = { 5, 7, 4 }, activation = "tanh", seed = 9 })
  local t = rt.teacher("model", { student = s })
  local x = rt.full({ 3, 5 }, 0.25)
  local zs = s:forward(x):clone()
  local zt = t:forward(x)
  local same = true
  for i = 1, 3 do for j = 1, 4 do same = same and zs:get(i, j) == zt:get(i, j) end end
  T.check(same, "identical logits")
  T.check(#t:parameters() == 4 and t:parameters()[1].grad == nil, "teacher parameters are frozen")
  T.raises(function() rt.teacher("model", {}) end, "needs a checkpoint")
end)

T.test("checkpoints: save, load back, model teacher reads arch from metadata", function()
  local dir = T.tmpdir()
  local s = rt.student("mlp", { sizes = { 5, 6, 3 }, seed = 4 })
  s:save(dir .. "/s.safetensors", { note = "hello" })
  local tensors, meta, names = rt.load(dir .. "/s.safetensors")
  T.check(meta["retort.plugin"] == "mlp" and meta.note == "hello", "metadata")
  T.check(#names == 4 and tensors["layers.0.weight"]:size(2) == 5, "tensors")
  local t = rt.teacher("model", { checkpoint = dir .. "/s.safetensors" })
  local x = rt.full({ 2, 5 }, 0.5)
  T.check(s:forward(x):clone():sum() == t:forward(x):sum(), "same function")
  local other = rt.student("mlp", { sizes = { 5, 7, 3 } })
  T.raises(function() other:load(dir .. "/s.safetensors") end, "layers.0.weight", "[6, 5]", "[7, 5]")
  T.raises(function() rt.load(dir .. "/missing.safetensors") end, "missing.safetensors")
  os.execute("rm -rf " .. dir)
end)

T.test("datasets: shuffled batches are reproducible per (seed, epoch) and cover every sample", function()
  local n = 23
  local x = rt.zeros{ n, 2 }
  local y = rt.zeros({ n }, "i32")
  for i = 1, n do x:set(i, 1, i); y:set(i, i) end
  local ds = rt.dataset(x, y)
  local function order(seed, epoch)
    local o = {}
    for bx, by, idx in ds:batches(5, { shuffle = true, seed = seed, epoch = epoch }) do
      for i = 1, #bx do
        T.check(bx:get(i, 1) == by:get(i), "x and y rows stay together")
        T.check(idx:get(i) + 1 == by:get(i), "idx are 0-based sample ids")
        o[#o + 1] = by:get(i)
      end
    end
    return table.concat(o, ",")
  end
  T.check(order(1, 0) == order(1, 0), "same seed and epoch: same order")
  T.check(order(1, 0) ~= order(1, 1), "another epoch: another order")
  local seen = {}
  for v in order(2, 0):gmatch("%d+") do seen[tonumber(v)] = true end
  local all = true
  for i = 1, n do all = all and seen[i] end
  T.check(all, "every sample once")
end)

T.test("json: round trip and strictness", function()
  local v = rt.json_decode(rt.json_encode{ a = 1, b = { 1, 2, 3 }, c = "x\"y", d = true, e = 0.5 })
  T.check(v.a == 1 and #v.b == 3 and v.c == "x\"y" and v.d == true and v.e == 0.5, "round trip")
  T.raises(function() rt.json_decode("{} x") end, "trailing data")
end)

T.test("the command: recipe errors print file:line and exit non-zero", function()
  local dir = T.tmpdir()
  local f = io.open(dir .. "/bad.lua", "w")
  f:write('local rt = require "retort"\n\nrt.loss("kd", { temprature = 2 })\n')
  f:close()
  local p = io.popen(BUILD .. "/bin/retort run " .. dir .. "/bad.lua 2>&1; echo \"exit=$?\"")
  local out = p:read("a")
  p:close()
  T.check(out:find("bad.lua:3:", 1, true), "file:line in: " .. out)
  T.check(out:find("did you mean 'temperature'", 1, true), "message in: " .. out)
  T.check(out:find("exit=1", 1, true), "exit status 1: " .. out)
  local h = io.popen(BUILD .. "/bin/retort plugins kd")
  local help = h:read("a")
  h:close()
  T.check(help:find("temperature", 1, true) and help:find("default 4", 1, true), "retort plugins kd: " .. help)
  local v = io.popen(BUILD .. "/bin/retort --version"):read("a")
  T.check(v:find("retort " .. rt.version, 1, true), "--version: " .. v)
  os.execute("rm -rf " .. dir)
end)

T.test("library errors point at the caller's line, however deep the library goes", function()
  local err = T.raises(function() rt.data.idx{ images = "/nonexistent/x.gz" } end, "/nonexistent/x.gz", "open")
  T.check(err and err:find(this, 1, true) and not err:find("scripts/retort/", 1, true),
    "position in this file, none in the library: " .. tostring(err))
  local ds = rt.dataset(rt.zeros{ 4, 3 }, rt.zeros({ 4 }, "i32"))
  err = T.raises(function() rt.fit{ student = rt.student("mlp", { sizes = { 3, 2 } }), data = ds, batch = 0 } end,
    "'batch' must be an integer >= 1, got 0")
  T.check(err and err:find(this, 1, true), "position: " .. tostring(err))
  T.raises(function() rt.fit{ student = rt.student("mlp", { sizes = { 3, 2 } }), data = ds, epochs = 1.5 } end,
    "'epochs' must be an integer >= 0, got 1.5")
end)

T.test("a broken plugin on RETORT_PLUGIN_PATH is reported and the rest still load", function()
  local dir = T.tmpdir()
  os.execute(("cp %s/tests/fixtures/fx_abi_major.so %s/"):format(BUILD, dir))
  local f = io.open(dir .. "/p.lua", "w")
  f:write('local rt = require "retort"\nprint(rt.loss("kd"):name(), rt.plugin_load_error ~= nil)\n')
  f:close()
  local p = io.popen(("RETORT_PLUGIN_PATH=%s %s/bin/retort run %s/p.lua 2>&1"):format(dir, BUILD, dir))
  local out = p:read("a")
  p:close()
  T.check(out:find("warning: plugin " .. dir .. "/fx_abi_major.so: abi:", 1, true), "warning: " .. out)
  T.check(out:find("was built for ABI 1.1", 1, true), "the plugin's version: " .. out)
  T.check(out:find("this host has ABI " .. rt.abi, 1, true), "the host's version: " .. out)
  T.check(out:find("kd\ttrue", 1, true), "built-ins load: " .. out)
  os.execute("rm -rf " .. dir)
end)

T.done("test_api.lua")
