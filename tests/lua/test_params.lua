-- test_params.lua: the binding lists, counts, copies and steps every
-- parameter of a student with 1500 of them (no fixed cap): the fixture
-- tests/fixtures/fx_many_params.c.
local T = dofile("tests/lua/t.lua")
local rt = require "retort"
local BUILD = os.getenv("RETORT_TEST_BUILD") or "build"

T.test("a student with 1500 parameters: parameters, param_count, copy_parameters, optimizer step", function()
  rt.load_plugin(BUILD .. "/tests/fixtures/fx_many_params.so")
  local a, b = rt.student("fx_many_params"), rt.student("fx_many_params")
  local pa = a:parameters()
  T.check(#pa == 1500 and pa[1500].name == "p.1499", "parameters(): " .. #pa)
  T.check(a:param_count() == 1500, "param_count(): " .. a:param_count())
  for k, p in ipairs(pa) do p.value:set(1, k) end
  rt.copy_parameters(b, a)
  T.check(b:parameters()[1500].value:get(1) == 1500, "copy_parameters copies the last one")
  for _, p in ipairs(a:parameters()) do p.grad:set(1, 1) end
  rt.optim.sgd{ lr = 0.5 }:step(a)
  T.check(a:parameters()[1500].value:get(1) == 1499.5, "the step updates the last one: "
    .. a:parameters()[1500].value:get(1))
end)

T.done("test_params.lua")
