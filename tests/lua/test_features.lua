-- test_features.lua: one rule for named features over the four students
-- and the model teacher (docs/abi.md, "Features"): features() lists every
-- name, recorded or not; feature(name) hands out a tensor only for a name
-- recorded with record(name) (nil for unknown and unrecorded names, and
-- again nil after record(name, false)); recording an unknown name is an
-- error naming the known ones; a tap on an unrecorded feature is refused.
local T = dofile("tests/lua/t.lua")
local rt = require "retort"

local function rows(n, d)
  local r = {}
  for i = 1, n do
    r[i] = {}
    for j = 1, d do r[i][j] = math.sin(i * 0.7 + j * 0.3) end
  end
  return rt.tensor(r)
end

local cases = {
  { "mlp", { sizes = { 6, 5, 4, 3 }, seed = 2 }, function() return rows(2, 6) end },
  { "cnn", { input = { 1, 6, 6 }, layers = "conv2x3,relu,maxpool2,flatten,fc3", seed = 2 },
    function() return rows(2, 36) end },
  { "resnet", { input = { 1, 8, 8 }, depth = 8, width = 2, classes = 3 }, function() return rows(2, 64) end },
  { "gpt", { width = 8, heads = 2, layers = 2, context = 6, vocab = 16, seed = 2 },
    function() return rt.tensor({ { 1, 2, 3, 4 }, { 5, 6, 7, 8 } }, "i32") end },
}

-- Every name of net: nil unless recorded.  Returns the names.
local function check_rule(label, net, forward)
  local names = net:features()
  T.check(#names >= 3, label .. ": lists its features (" .. #names .. ")")
  T.check(net:feature(names[1]) == nil, label .. ": nothing before a forward")
  forward()
  for _, n in ipairs(names) do
    T.check(net:feature(n) == nil, label .. ": '" .. n .. "' not recorded, so nil")
  end
  T.check(net:feature("no.such.feature") == nil, label .. ": an unknown name is nil")
  local first, last = names[1], names[#names]
  net:record(first)
  net:record(last, true)
  forward()
  T.check(net:feature(first) ~= nil and net:feature(last) ~= nil, label .. ": recorded ones are handed out")
  T.check(net:feature(first):shape()[1] == 2, label .. ": a feature is per sample, [N, ...]")
  for k = 2, #names - 1 do
    T.check(net:feature(names[k]) == nil, label .. ": '" .. names[k] .. "' still not recorded, so nil")
  end
  T.check(#net:features() == #names, label .. ": recording does not change the list")
  net:record(first, false)
  forward()
  T.check(net:feature(first) == nil and net:feature(last) ~= nil, label .. ": record(name, false) turns it off")
  T.raises(function() net:record("no.such.feature") end, "no.such.feature", names[1])
  return names
end

for _, c in ipairs(cases) do
  T.test(c[1] .. ": only recorded features are handed out; every one is listed", function()
    local s = rt.student(c[1], c[2])
    local x = c[3]()
    local names = check_rule(c[1], s, function() return s:forward(x, false) end)
    -- a tap is the gradient of a feature someone read: unrecorded, refused
    s:record(names[1])
    local out = s:forward(x, true)
    local shape = s:feature(names[1]):shape()
    s:zero_grad()
    s:backward(rt.zeros(out:shape()), { [names[1]] = rt.zeros(shape) }) -- recorded: taken
    s:record(names[1], false)
    out = s:forward(x, true)
    s:zero_grad()
    s:backward(rt.zeros(out:shape()), { [names[#names]] = rt.zeros(s:feature(names[#names]):shape()) })
    T.raises(function() s:backward(rt.zeros(out:shape()), { [names[1]] = rt.zeros(shape) }) end,
      "'" .. names[1] .. "' is tapped but not recorded")
  end)
end

T.test("the model teacher follows its architecture's rule", function()
  for _, c in ipairs(cases) do
    local t = rt.teacher("model", { arch = c[1], options = c[2], random_init = true })
    local x = c[3]()
    check_rule("model " .. c[1], t, function() return t:forward(x) end)
  end
end)

T.done("test_features.lua")
