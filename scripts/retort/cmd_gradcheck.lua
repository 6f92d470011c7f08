-- cmd_gradcheck.lua: `retort gradcheck`, the finite-difference check for
-- plugin authors (rt.gradcheck over retort.h's rt_gradcheck_loss and
-- rt_gradcheck_student).
--
--   retort gradcheck NAME [--kind loss|student] [--plugin PATH] [--opt k=v]...
--   retort gradcheck --lua FILE [--opt k=v]...
--
-- NAME is a plugin found in the built-in folder, in RETORT_PLUGIN_PATH, or
-- in the .so that --plugin loads.  --lua FILE checks a loss written in Lua:
-- the file returns either a loss (rt.lua_loss{...}) or the table it would
-- be given (then --opt values are its options).  Prints the worst relative
-- error, where it was and how many entries were compared; exits 0 when it
-- is within the tolerance (1e-3, the float32 bar of retort.h), 1 otherwise
-- or when the plugin fails (an error, a non-finite value or gradient).
local rt = ...

local USAGE = [[
usage: retort gradcheck NAME [options]
       retort gradcheck --lua FILE [options]

Checks a loss's or a student's backward against finite differences of its
forward, at random inputs, and prints the worst relative error.

options:
  --kind loss|student   which plugin NAME is, when both kinds have it
  --plugin PATH         load this plugin file first (a .so)
  --lua FILE            a Lua file returning rt.lua_loss{...} or its table
  --opt KEY=VALUE       a plugin option (repeatable); VALUE is a number,
                        true/false, a JSON list/object, or a string
  --N N                 batch size (default 4)
  --C C                 classes, for losses (default 10)
  --seed S              random inputs' seed (default 1)
  --eps E               finite-difference step (default 1e-2)
  --tol T               the largest relative error that passes (default 1e-3)

exit status: 0 pass, 1 fail or error, 2 bad usage]]

-- "--opt k=v" values: numbers, booleans, JSON lists/objects, else strings.
local function opt_value(v)
  if v == "true" then return true elseif v == "false" then return false end
  local n = tonumber(v)
  if n then return n end
  if v:match("^%s*[%[{]") then return rt.json_decode(v) end
  return v
end

local function parse(args)
  local o = { opts = {}, N = 4, C = 10, seed = 1, eps = 0, tol = 1e-3 }
  local numeric = { N = "integer", C = "integer", seed = "integer", eps = "number", tol = "number" }
  local i = 1
  local function value(flag)
    i = i + 1
    if args[i] == nil then error(("%s needs a value"):format(flag), 0) end
    return args[i]
  end
  while i <= #args do
    local a = args[i]
    local flag, inline = a:match("^(%-%-[%w_]+)=(.*)$")
    if flag then
      a = flag
      table.insert(args, i + 1, inline)
    end
    local key = a:match("^%-%-([%w_]+)$")
    if a == "--help" or a == "-h" then
      o.help = true
    elseif key == "kind" then
      o.kind = value(a)
      if o.kind ~= "loss" and o.kind ~= "student" then error("--kind is loss or student", 0) end
    elseif key == "plugin" then
      o.plugin = value(a)
    elseif key == "lua" then
      o.lua = value(a)
    elseif key == "opt" then
      local kv = value(a)
      local k, v = kv:match("^([%w_]+)=(.*)$")
      if not k then error(("--opt takes KEY=VALUE, got '%s'"):format(kv), 0) end
      o.opts[k] = opt_value(v)
    elseif key and numeric[key] then
      local v = tonumber(value(a))
      if not v or (numeric[key] == "integer" and math.type(v) ~= "integer" and v ~= math.floor(v)) then
        error(("--%s needs %s %s"):format(key, numeric[key] == "integer" and "an" or "a", numeric[key]), 0)
      end
      o[key] = numeric[key] == "integer" and math.tointeger(v) or v
    elseif a:sub(1, 1) == "-" then
      error(("unknown option %s (retort gradcheck --help)"):format(a), 0)
    elseif o.name then
      error(("one plugin at a time ('%s' and '%s')"):format(o.name, a), 0)
    else
      o.name = a
    end
    i = i + 1
  end
  return o
end

-- The object to check: a Lua loss from --lua, else the plugin NAME.
local function subject(o)
  if o.lua then
    local chunk, err = loadfile(o.lua, "t")
    if not chunk then error(err, 0) end
    local r = chunk()
    if type(r) == "table" then return rt.lua_loss(r, o.opts) end
    if type(r) ~= "userdata" or not pcall(r.needs, r) then
      error(("%s must return rt.lua_loss{...} or its table, got %s"):format(o.lua, type(r)), 0)
    end
    for k, v in pairs(o.opts) do r:set(k, v) end
    return r
  end
  if o.plugin then rt.load_plugin(o.plugin) end
  local kinds = {}
  for _, p in ipairs(rt.plugins()) do
    if p.name == o.name and (p.kind == "loss" or p.kind == "student") and (not o.kind or o.kind == p.kind) then
      kinds[#kinds + 1] = p.kind
    end
  end
  if #kinds == 0 then
    error(("no loss or student plugin '%s'%s ('retort plugins' lists them)"):format(o.name,
      o.kind and (" of kind " .. o.kind) or ""), 0)
  end
  if #kinds > 1 then error(("both a loss and a student are named '%s': give --kind"):format(o.name), 0) end
  return (kinds[1] == "loss" and rt.loss or rt.student)(o.name, o.opts)
end

-- Runs main(args) and turns a raised error into "retort NAME: message" on
-- stderr and exit status 1: usage mistakes need no traceback.
local function guard(cmd, main, args)
  local ok, rc = pcall(main, args)
  if ok then return rc end
  io.stderr:write(("retort %s: %s\n"):format(cmd, tostring(rc)))
  return 1
end

local function main(args)
  local o = parse(args)
  if o.help then
    print(USAGE)
    return 0
  end
  if not o.name and not o.lua then
    io.stderr:write("retort gradcheck: needs a plugin NAME or --lua FILE\n\n", USAGE, "\n")
    return 2
  end
  if o.name and o.lua then error("give a plugin NAME or --lua FILE, not both", 0) end
  local obj = subject(o)
  local kind = obj:kind()
  local where = kind == "loss" and ("N=%d, C=%d"):format(o.N, o.C) or ("N=%d"):format(o.N)
  print(("gradcheck %s '%s' (%s, seed %d, options %s)"):format(kind, obj:name(), where, o.seed, obj:options_json()))
  local ok, r = pcall(rt.gradcheck, obj, { N = o.N, C = o.C, seed = o.seed, eps = o.eps })
  if not ok then
    print(("  FAIL: %s"):format(tostring(r):gsub("^[^:\n]*%.lua:%d+: ", "")))
    return 1
  end
  -- One line per input: a loss has the student logits; a student each
  -- parameter and its input; both have the accumulation checks.
  local pass = r.max_rel_err <= o.tol
  for _, i in ipairs(r.inputs) do
    print(("  %-22s worst relative error %.3g over %d entries%s"):format(i.name, i.max_rel_err, i.checked,
      i.max_rel_err <= o.tol and "" or "  <- over the tolerance"))
  end
  print(("  worst of all at %s"):format(r.worst))
  print(("  %d entries compared, %d skipped at kinks; tolerance %g: %s"):format(r.checked, r.skipped, o.tol,
    pass and "PASS" or "FAIL"))
  return pass and 0 or 1
end

rt.command{
  name = "gradcheck",
  usage = "gradcheck NAME|--lua F",
  help = "finite-difference check of a loss or student plugin",
  run = function(args) return (guard("gradcheck", main, args)) end,
}
