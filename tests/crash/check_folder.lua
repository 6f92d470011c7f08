-- check_folder.lua DIR [EPOCHS]: is a run folder whole?  Prints one line
-- per problem and exits 1 if there is any:
--   a temp file of an atomic write ("*.tmp.<pid>") left behind;
--   a line of metrics.jsonl that is not JSON (torn);
--   a step or an epoch logged twice; with EPOCHS, an epoch row missing;
--   a manifest that does not parse, or names a checkpoint that is not
--   there or does not load.
-- Used by tests/check_crash.sh and tests/check_run_lock.sh.
local rt = require "retort"
local dir, epochs = assert(arg[1], "usage: check_folder.lua DIR [EPOCHS]"), tonumber(arg[2])
local problems = {}
local function bad(fmt, ...) problems[#problems + 1] = fmt:format(...) end

local ls = io.popen("ls -A '" .. dir .. "'")
for name in ls:lines() do
  if name:match("%.tmp%.%d+$") then bad("temp file left behind: %s", name) end
end
ls:close()

local text = rt.util.read_file(dir .. "/metrics.jsonl") or ""
local steps, seen = {}, {}
local n = 0
for line in text:gmatch("[^\n]*\n?") do
  if line ~= "" then
    n = n + 1
    local ok, r = pcall(rt.json_decode, line)
    if not ok or type(r) ~= "table" or line:sub(-1) ~= "\n" then bad("metrics.jsonl line %d is torn: %s", n, line)
    elseif r.event == "step" then
      if steps[r.step] then bad("step %s logged twice", tostring(r.step)) end
      steps[r.step] = true
    elseif r.event == "epoch" then
      if seen[r.epoch] then bad("epoch %s logged twice", tostring(r.epoch)) end
      seen[r.epoch] = true
    end
  end
end
for e = 1, epochs or 0 do
  if not seen[e] then bad("epoch %d has no row", e) end
end

local mtext = rt.util.read_file(dir .. "/manifest.json")
if mtext then
  local ok, m = pcall(rt.json_decode, mtext)
  if not ok or type(m) ~= "table" then bad("manifest.json does not parse")
  else
    for _, k in ipairs{ "last", "best" } do
      local f = m.checkpoints and m.checkpoints[k]
      if f and not pcall(rt.load, dir .. "/" .. f) then bad("the manifest names %s, which does not load", f) end
    end
  end
end
for _, p in ipairs(problems) do print(dir .. ": " .. p) end
os.exit(#problems == 0 and 0 or 1)
