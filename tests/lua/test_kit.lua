-- test_kit.lua: the plugin author's kit through the built command:
-- `retort gradcheck` (built-in, --plugin, --lua) and `retort new loss`
-- (the skeleton builds with make and its test recipe trains).
local T = dofile("tests/lua/t.lua")
local rt = require "retort"
local BUILD = os.getenv("RETORT_TEST_BUILD") or "build"
local RETORT = BUILD .. "/bin/retort"

-- Runs a shell command; returns its exit status and its output (both streams).
local function sh(cmd)
  local p = io.popen(cmd .. " 2>&1; echo \"rc=$?\"")
  local out = p:read("a")
  p:close()
  local rc = tonumber(out:match("rc=(%d+)%s*$"))
  return rc, out:gsub("rc=%d+%s*$", "")
end

local tmp = T.tmpdir()

local function write(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
end

T.test("retort gradcheck kd: exit 0, prints the worst error and PASS", function()
  local rc, out = sh(RETORT .. " gradcheck kd")
  T.check(rc == 0, "exit status " .. tostring(rc) .. "\n" .. out)
  T.check(out:find("gradcheck loss 'kd'", 1, true) and out:find("worst relative error", 1, true)
    and out:find("student logits", 1, true) and out:find("PASS", 1, true), out)
  local err = tonumber(out:match("worst relative error ([%d%.e%-+]+)"))
  T.check(err and err <= 1e-3, "the error is printed as a number: " .. out)
  rc, out = sh(RETORT .. " gradcheck mlp --opt sizes=[6,5,3] --N 3")
  T.check(rc == 0 and out:find("student 'mlp'", 1, true) and out:find("layers.0.weight", 1, true)
    and out:find("\n  input ", 1, true), out)
  rc, out = sh(RETORT .. " gradcheck kd --opt temperature=0.5 --tol 1e-12")
  T.check(rc == 1 and out:find("FAIL", 1, true), "an impossible tolerance fails: " .. out)
end)

T.test("retort gradcheck: unknown plugin, bad option, bad usage", function()
  local rc, out = sh(RETORT .. " gradcheck kdd")
  T.check(rc == 1 and out:find("no loss or student plugin 'kdd'", 1, true), out)
  rc, out = sh(RETORT .. " gradcheck kd --opt temprature=2")
  T.check(rc == 1 and out:find("did you mean 'temperature'", 1, true), out)
  rc, out = sh(RETORT .. " gradcheck")
  T.check(rc == 2 and out:find("usage: retort gradcheck", 1, true), out)
end)

T.test("retort gradcheck --plugin: the out-of-tree example", function()
  local so = BUILD .. "/examples/margin_rank.so"
  if not rt.exists(so) then
    T.check(false, so .. " was not built (make check builds it)")
    return
  end
  local rc, out = sh(RETORT .. " gradcheck margin_rank --plugin " .. so .. " --opt top_k=3")
  T.check(rc == 0 and out:find("PASS", 1, true), out)
end)

local GOOD = [[
local rt = require "retort"
return { name = "sq_logits", needs_teacher = true,
  options = { scale = 1 },
  forward = function(s, t, y, ctx) return ((s - t):square()):sum() * ctx.opts.scale / s:size(1) end,
  backward = function(s, t, y, ctx) return (s - t) * (2 * ctx.opts.scale / s:size(1)) end }
]]

T.test("retort gradcheck --lua: a Lua loss passes, a broken one fails with exit 1", function()
  write(tmp .. "/good.lua", GOOD)
  local rc, out = sh(RETORT .. " gradcheck --lua " .. tmp .. "/good.lua --opt scale=3")
  T.check(rc == 0 and out:find("loss 'sq_logits'", 1, true) and out:find('"scale":3', 1, true)
    and out:find("PASS", 1, true), out)
  -- the file may also return the loss itself
  write(tmp .. "/made.lua", GOOD:gsub("return {", "return rt.lua_loss{", 1))
  rc, out = sh(RETORT .. " gradcheck --lua " .. tmp .. "/made.lua")
  T.check(rc == 0 and out:find("PASS", 1, true), out)
  -- a sign error in backward
  write(tmp .. "/broken.lua", GOOD:gsub("return %(s %- t%)", "return (t - s)", 1))
  rc, out = sh(RETORT .. " gradcheck --lua " .. tmp .. "/broken.lua")
  T.check(rc == 1 and out:find("FAIL", 1, true), out)
  -- a Lua error inside the loss: a failure naming it, not a crash
  write(tmp .. "/raises.lua", GOOD:gsub("return %(%(s", "return nil + ((s", 1))
  rc, out = sh(RETORT .. " gradcheck --lua " .. tmp .. "/raises.lua")
  T.check(rc == 1 and out:find("loss 'sq_logits': forward", 1, true), out)
end)

T.test("retort gradcheck --lua: boolean and string --opt values reach a loss the file made", function()
  write(tmp .. "/flags.lua", [[
local rt = require "retort"
return rt.lua_loss{ name = "flags", needs_teacher = true,
  options = { negate = false, how = "plain" },
  forward = function(s, t, y, ctx)
    assert(ctx.opts.negate == true and ctx.opts.how == "sq", "options did not arrive")
    return ((s - t):square()):sum() / s:size(1) end,
  backward = function(s, t, y, ctx) return (s - t) * (2 / s:size(1)) end }
]])
  local rc, out = sh(RETORT .. " gradcheck --lua " .. tmp .. "/flags.lua --opt negate=true --opt how=sq")
  T.check(rc == 0 and out:find("PASS", 1, true), out)
end)

T.test("retort new loss: refuses bad names, built-in names and existing folders", function()
  local rc, out = sh(RETORT .. " new loss Bad-Name --dir " .. tmp)
  T.check(rc == 1 and out:find("not a plugin name", 1, true), out)
  rc, out = sh(RETORT .. " new loss kd --dir " .. tmp)
  T.check(rc == 1 and out:find("exists already", 1, true), out)
  rc, out = sh(RETORT .. " new teacher x --dir " .. tmp)
  T.check(rc == 2, out)
  os.execute("mkdir -p " .. tmp .. "/taken")
  rc, out = sh(RETORT .. " new loss taken --dir " .. tmp)
  T.check(rc == 1 and out:find("not overwriting", 1, true), out)
end)

T.test("retort new loss foo: builds with make and its test recipe trains", function()
  local rc, out = sh(RETORT .. " new loss foo --dir " .. tmp)
  T.check(rc == 0, out)
  for _, f in ipairs{ "foo.c", "Makefile", "foo_test.lua" } do
    T.check(rt.exists(tmp .. "/foo/" .. f), "missing " .. f)
  end
  local core = os.getenv("PWD") .. "/core"
  rc, out = sh(("make -C %s/foo RETORT_INCLUDE=%s CFLAGS='-O2 -Wall -Wextra -Werror'"):format(tmp, core))
  T.check(rc == 0 and rt.exists(tmp .. "/foo/foo.so"), "make: " .. out)
  rc, out = sh(("%s run %s/foo/foo_test.lua"):format(RETORT, tmp))
  T.check(rc == 0 and out:find("foo: ok", 1, true) and out:find("gradcheck: worst relative error", 1, true), out)
  -- and RETORT_PLUGIN_PATH finds it for `retort gradcheck`
  rc, out = sh(("RETORT_PLUGIN_PATH=%s/foo %s gradcheck foo"):format(tmp, RETORT))
  T.check(rc == 0 and out:find("PASS", 1, true), out)
end)

T.test("retort gradcheck reports the worst error per input: each parameter and the input", function()
  local p = io.popen(BUILD .. "/bin/retort gradcheck mlp --opt sizes=[12,7,5] 2>&1; echo \"exit=$?\"")
  local out = p:read("a")
  p:close()
  for _, name in ipairs{ "layers.0.weight", "layers.0.bias", "layers.1.weight", "layers.1.bias", "input",
                         "accumulate" } do
    T.check(out:find("\n  " .. name .. " +worst relative error"), name .. " in: " .. out)
  end
  T.check(out:find("exit=0", 1, true), out)
  local r = rt.gradcheck(rt.loss("jsd"), { N = 3, C = 4 })
  T.check(#r.inputs == 2 and r.inputs[2].name == "student logits" and r.inputs[2].checked == 12,
    "inputs of a loss: " .. rt.json_encode(r.inputs))
  T.check(r.inputs[2].max_rel_err <= r.max_rel_err, "per-input worst <= overall worst")
end)

T.test("a command's user error is one line, 'retort NAME: message', and exit 1", function()
  local p = io.popen(BUILD .. "/bin/retort info /nonexistent.safetensors 2>&1; echo \"exit=$?\"")
  local out = p:read("a")
  p:close()
  T.check(out:find("^retort info: /nonexistent.safetensors"), "message: " .. out)
  T.check(not out:find("traceback", 1, true) and not out:find(".lua:", 1, true), "no library position: " .. out)
  T.check(out:find("exit=1", 1, true), out)
end)

os.execute("rm -rf " .. tmp)
T.done("test_kit.lua")
