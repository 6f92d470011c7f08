-- test_plugin_load.lua: plugins load only when asked, and only from
-- trusted places.  The fixture fx_marker.so (tests/fixtures/fx_marker.c)
-- appends a line to $FX_MARKER from its constructor, that is whenever
-- anything dlopens it; it sits in a folder on RETORT_PLUGIN_PATH.
local T = dofile("tests/lua/t.lua")
local rt = require "retort"
local BUILD = os.getenv("RETORT_TEST_BUILD") or "build"
local RETORT = BUILD .. "/bin/retort"

local function sh(cmd)
  local p = io.popen(cmd .. " 2>&1; echo \"rc=$?\"")
  local out = p:read("a")
  p:close()
  local rc = tonumber(out:match("rc=(%d+)%s*$"))
  return rc, out:gsub("rc=%d+%s*$", "")
end

local tmp = T.tmpdir()
if tmp:sub(1, 1) ~= "/" then tmp = os.getenv("PWD") .. "/" .. tmp end
local plugdir, marker = tmp .. "/plugins", tmp .. "/marker"
os.execute(("mkdir -p %s && chmod 755 %s && cp %s/tests/fixtures/fx_marker.so %s/"):format(plugdir, plugdir, BUILD, plugdir))
local ENV = ("RETORT_PLUGIN_PATH=%s FX_MARKER=%s "):format(plugdir, marker)

-- Runs the command with the marker plugin on the path; returns whether the
-- plugin was loaded, the exit status and the output.
local function loads(args)
  os.remove(marker)
  local rc, out = sh(ENV .. RETORT .. " " .. args)
  return rt.exists(marker), rc, out
end

-- A small run folder and checkpoint for info, report and compare.
local run = tmp .. "/run"
do
  local x = rt.tensor{ { 0, 1 }, { 1, 0 }, { 1, 1 }, { 0, 0 } }
  local ds = rt.dataset(x, rt.tensor({ 1, 0, 1, 0 }, "i32"))
  rt.fit{ student = rt.student("mlp", { sizes = { 2, 3, 2 } }), data = ds, eval = ds, epochs = 1, batch = 2,
          out = run, quiet = true }
end

T.test("the marker plugin works: `retort plugins` and rt.loss load it", function()
  local loaded, rc, out = loads("plugins")
  T.check(loaded and rc == 0 and out:find("fx_marker", 1, true), "plugins: " .. out)
  local f = assert(io.open(tmp .. "/uses.lua", "w"))
  f:write('local rt = require "retort"\nprint(rt.loss("fx_marker"):name())\n')
  f:close()
  loaded, rc, out = loads("run " .. tmp .. "/uses.lua")
  T.check(loaded and rc == 0 and out:find("fx_marker", 1, true), "run: " .. out)
end)

T.test("info, report, compare, --help and a recipe without plugins load none", function()
  local f = assert(io.open(tmp .. "/math.lua", "w"))
  f:write('local rt = require "retort"\nprint((rt.full({2, 2}, 1) * 2):sum())\n')
  f:close()
  for _, args in ipairs{ "info " .. run .. "/last.safetensors", "report " .. run, "compare " .. run, "--help",
                         "--version", "run " .. tmp .. "/math.lua", "new --help" } do
    local loaded, rc, out = loads(args)
    T.check(rc == 0, ("retort %s: exit %s\n%s"):format(args, tostring(rc), out))
    T.check(not loaded, ("retort %s loaded a plugin"):format(args))
  end
end)

T.test("RETORT_PLUGIN_PATH: a relative entry is refused, naming it; the rest load", function()
  local abs = RETORT:sub(1, 1) == "/" and RETORT or os.getenv("PWD") .. "/" .. RETORT
  local rc, out = sh(("cd %s && RETORT_PLUGIN_PATH=plugins:%s FX_MARKER=%s %s plugins"):format(
    tmp, plugdir, marker, abs))
  T.check(rc == 0 and out:find("RETORT_PLUGIN_PATH entry 'plugins' is not an absolute path", 1, true), out)
  T.check(out:find("fx_marker", 1, true), "the absolute entry still loads: " .. out)
end)

T.test("a folder or file that others can write is refused with the reason", function()
  os.execute("chmod 777 " .. plugdir)
  local loaded, _, out = loads("plugins")
  T.check(not loaded, "a world-writable folder's plugin was loaded")
  T.check(out:find("plugin folder " .. plugdir .. ": permissions: writable by group and others (mode 0777)", 1, true),
    out)
  os.execute("chmod 755 " .. plugdir .. " && chmod 664 " .. plugdir .. "/fx_marker.so")
  loaded, _, out = loads("plugins")
  T.check(not loaded, "a group-writable plugin was loaded")
  T.check(out:find("plugin " .. plugdir .. "/fx_marker.so: permissions: writable by group (mode 0664)", 1, true), out)
  os.execute("chmod 755 " .. plugdir .. "/fx_marker.so")
  T.raises(function() rt.load_plugin(tmp .. "/nowhere.so") end, "nowhere.so: open: ")
end)

T.test("a plugin owned by another user (not root) is refused", function()
  local me = io.popen("id -u"):read("l")
  local other = me == "0" and "nobody" or nil
  if not other then
    -- not root: only root can give a file away; the check itself is the
    -- same as above (stat), so say so and pass on the rest.
    T.check(true)
    print("  (not root: skipping the chown case)")
    return
  end
  os.execute(("chown %s %s/fx_marker.so"):format(other, plugdir))
  local loaded, _, out = loads("plugins")
  T.check(not loaded, "a plugin owned by " .. other .. " was loaded")
  T.check(out:find("fx_marker.so: permissions: owned by uid %d+, neither you %(uid 0%) nor root"), out)
  os.execute(("chown %s %s/fx_marker.so"):format(me, plugdir))
  loaded = loads("plugins")
  T.check(loaded, "back to the caller's: loads again")
end)

os.execute("rm -rf " .. tmp)
T.done("test_plugin_load.lua")
