-- test_lua_memory.lua: tensors made in Lua are paid for to the Lua garbage
-- collector (their bytes, not the few bytes of their userdata), so a loop
-- of tensor arithmetic runs in bounded memory without collectgarbage().
local T = dofile("tests/lua/t.lua")
local rt = require "retort"

-- The process's resident set now and at its peak, in kB (Linux).
local function status_kb(field)
  local f = io.open("/proc/self/status")
  if not f then return nil end
  local text = f:read("a")
  f:close()
  return tonumber(text:match(field .. ":%s*(%d+) kB"))
end

-- Under AddressSanitizer (tests/run.sh with BUILD=build-san) freed blocks
-- wait in its quarantine (256 MB unless ASAN_OPTIONS says otherwise) before
-- they are reused, so the resident set grows by up to that much more.
local function quarantine_mb()
  if not (os.getenv("RETORT_TEST_BUILD") or ""):find("san") then return 0 end
  local q = (os.getenv("ASAN_OPTIONS") or ""):match("quarantine_size_mb=(%d+)")
  return tonumber(q) or 256
end
local BOUND_MB = 64 + quarantine_mb()

T.test("10,000 iterations of tensor math on [128, 100] stay under " .. BOUND_MB .. " MB more peak RSS", function()
  local hwm0 = status_kb("VmHWM")
  if not T.check(hwm0, "/proc/self/status has VmHWM") then return end
  local a, b = rt.full({ 128, 100 }, 0.5), rt.full({ 128, 100 }, 0.25)
  local acc, iters = 0, 0
  for i = 1, 10000 do
    -- five new [128, 100] tensors (51 kB each) per iteration, all garbage
    -- by the next one: 2.5 GB in all if the collector does not see them.
    local z = ((a * b + a):exp() - b):softmax(2)
    acc = acc + z:get(1, 1)
    iters = i
    -- stop early (and fail) rather than eat the machine's memory
    if i % 250 == 0 and status_kb("VmRSS") > hwm0 + (BOUND_MB + 192) * 1024 then break end
  end
  local grown = (status_kb("VmHWM") - hwm0) / 1024
  T.check(iters == 10000, ("stopped after %d iterations: RSS over %d MB more"):format(iters, BOUND_MB + 192))
  T.check(grown < BOUND_MB, ("peak RSS grew by %.1f MB over %d iterations"):format(grown, iters))
  T.check(acc > 0, "the arithmetic ran")
end)

T.test("a Lua loss in a hand loop: bounded memory too", function()
  local hwm0 = status_kb("VmHWM")
  local kd = rt.lua_loss{
    name = "mem_kd", needs_teacher = true,
    forward = function(s, t) return ((s:softmax(2) - t:softmax(2)):square()):sum() end,
    backward = function(s, t) return (s:softmax(2) - t:softmax(2)) * 2 end }
  local s, t = rt.full({ 128, 100 }, 0.1), rt.full({ 128, 100 }, 0.3)
  local iters = 0
  for i = 1, 3000 do
    kd:forward(s, t)
    kd:backward(s, t)
    iters = i
    if i % 250 == 0 and status_kb("VmRSS") > hwm0 + (BOUND_MB + 192) * 1024 then break end
  end
  local grown = (status_kb("VmHWM") - hwm0) / 1024
  T.check(iters == 3000 and grown < BOUND_MB, ("peak RSS grew by %.1f MB over %d iterations"):format(grown, iters))
end)

T.done("test_lua_memory.lua")
