-- test_run_integrity.lua: a run folder is never overwritten silently, has
-- one writer, logs each step once across a resume, and its manifest names
-- only files that exist; `retort info` checks a provenance chain without
-- following it blindly (FIFOs, devices, loops, size and time bounds) and
-- exits 1 when a recorded hash does not match.
-- tests/check_run_lock.sh holds the parts that need processes: two runs
-- at once, and a full disk under metrics.jsonl.
local T = dofile("tests/lua/t.lua")
local rt = require "retort"

local build = os.getenv("RETORT_TEST_BUILD") or "build"
local retort = build .. "/bin/retort"
local dir = T.tmpdir()
local train = rt.data.fashion_mnist("train", { limit = 300 })

-- Output and success of a command; `timeout` bounds what must finish fast
-- (a hang is a failure, not a stuck suite).
local function run_cmd(cmd)
  local f = io.popen("timeout 60 " .. cmd .. " 2>&1")
  local out = f:read("a")
  local ok, _, code = f:close()
  return out, ok, code
end

local function fit(out, hidden, o)
  local cfg = { student = rt.student("mlp", { sizes = { 784, hidden, 10 }, seed = 1 }), data = train, epochs = 2,
                batch = 50, out = out, quiet = true, log_every = 1 }
  for k, v in pairs(o or {}) do cfg[k] = v end
  return rt.fit(cfg)
end

local function manifest(out) return rt.json_decode(assert(rt.util.read_file(out .. "/manifest.json"))) end

local function metric_rows(out)
  local rows = {}
  for line in assert(rt.util.read_file(out .. "/metrics.jsonl")):gmatch("[^\n]+") do
    local ok, r = pcall(rt.json_decode, line)
    rows[#rows + 1] = ok and r or { torn = line }
  end
  return rows
end

-- Every step logged once, epochs 1..n once each, no torn line.
local function check_metrics(out, epochs, what)
  local steps, seen_epochs, torn = {}, {}, 0
  for _, r in ipairs(metric_rows(out)) do
    if r.torn then torn = torn + 1
    elseif r.event == "step" then
      T.check(not steps[r.step], what .. ": step " .. tostring(r.step) .. " logged twice")
      steps[r.step] = true
    elseif r.event == "epoch" then
      T.check(not seen_epochs[r.epoch], what .. ": epoch " .. tostring(r.epoch) .. " logged twice")
      seen_epochs[r.epoch] = true
    end
  end
  T.check(torn == 0, what .. ": torn lines " .. torn)
  for e = 1, epochs do T.check(seen_epochs[e], what .. ": epoch " .. e .. " missing") end
  T.check(seen_epochs[epochs + 1] == nil, what .. ": an epoch row beyond " .. epochs)
end

T.test("a folder holding another run is refused, naming both; overwrite = true replaces it", function()
  local out = dir .. "/a"
  fit(out, 8)
  local before = rt.sha256_file(out .. "/last.safetensors")
  local err = T.raises(function() fit(out, 9) end, out .. " already holds another run", "student",
    "[784,8,10]", "[784,9,10]", "overwrite = true")
  -- the error is at this file's line, not inside the library
  T.check(err and err:find("test_run_integrity.lua:%d+:"), "error at the caller's line: " .. tostring(err))
  T.check(rt.sha256_file(out .. "/last.safetensors") == before, "the other run's checkpoint is untouched")
  T.check(manifest(out).student.options.sizes[2] == 8, "the other run's manifest is untouched")
  local run = fit(out, 9, { overwrite = true })
  T.check(run.steps == 12 and manifest(out).student.options.sizes[2] == 9, "replaced")
  check_metrics(out, 2, "after overwrite")
  -- a different loss weight or seed is another run too
  T.raises(function() fit(out, 9, { seed = 2 }) end, "already holds another run", "seed (there 1, here 2)")
end)

T.test("the same run again starts afresh; resume = true continues only the same run", function()
  local out = dir .. "/b"
  fit(out, 8)
  fit(out, 8) -- the same run, not resumed: trained again from the start
  check_metrics(out, 2, "same run again")
  T.raises(function() fit(out, 8, { resume = true, loss = { { rt.loss("ce", { label_smoothing = 0.1 }), 1 } } }) end,
    "already holds another run", "loss terms", "resume = true continues only the same run")
  local run = fit(out, 8, { resume = true, epochs = 3 })
  T.check(run.steps == 18 and #run.history == 3, "resumed to epoch 3: " .. run.steps)
  T.check(manifest(out).resumed_at_epoch == 2, "the manifest says where it resumed")
  check_metrics(out, 3, "resumed")
end)

T.test("run files without a manifest are refused unless overwrite = true", function()
  local out = dir .. "/c"
  rt.mkdir(out)
  rt.write_atomic(out .. "/metrics.jsonl", '{"event":"step","step":0}\n')
  T.raises(function() fit(out, 8) end, "metrics.jsonl but no manifest.json", "overwrite = true")
  T.check(rt.util.read_file(out .. "/metrics.jsonl") == '{"event":"step","step":0}\n', "left as it was")
  fit(out, 8, { overwrite = true })
  check_metrics(out, 2, "after overwrite")
end)

T.test("a resumed run logs no step twice: rows past the checkpoint and a torn line are cut", function()
  local out = dir .. "/d"
  local run = fit(out, 8)
  -- what a kill -9 in epoch 3 leaves: step rows past the checkpoint, and a
  -- line cut short by the kill
  local f = assert(io.open(out .. "/metrics.jsonl", "a"))
  for s = run.steps, run.steps + 3 do f:write(rt.json_encode{ event = "step", epoch = 3, step = s, loss = 9 }, "\n") end
  f:write('{"event":"step","epo')
  f:close()
  fit(out, 8, { resume = true, epochs = 3 })
  check_metrics(out, 3, "resumed after a kill")
  for _, r in ipairs(metric_rows(out)) do T.check(r.loss ~= 9, "a row of the killed epoch survived") end
end)

T.test("one writer: a held folder is refused with the holder's pid; the lock goes when distill ends", function()
  local out = dir .. "/e"
  rt.mkdir(out)
  local lock = rt.run_lock(out)
  local pid = rt.util.read_file(out .. "/.lock"):match("%d+")
  T.check(pid, "the lock file holds the pid")
  T.raises(function() fit(out, 8) end, out .. " is in use by another run (pid " .. tostring(pid))
  T.check(not rt.exists(out .. "/manifest.json"), "the refused run wrote nothing")
  lock:release()
  -- a run that fails frees the lock at once (not at garbage collection)
  T.raises(function()
    fit(out, 8, { loss = { { rt.loss("ce"), function(_, step) if step == 2 then error("stop here") end return 1 end } } })
  end, "stop here")
  fit(out, 8, { overwrite = true })
  T.check(manifest(out).status == "finished", "the next run got the folder")
end)

T.test("the manifest names only files that exist, while running and after", function()
  local out = dir .. "/f"
  T.raises(function()
    fit(out, 8, { loss = { { rt.loss("ce"), function(_, step) if step == 2 then error("dies in epoch 1") end return 1 end } } })
  end, "dies in epoch 1")
  local m = manifest(out)
  T.check(m.status == "running", "the manifest of a run that died says running")
  for k, f in pairs(m.checkpoints) do
    if k == "last" or k == "best" then T.check(rt.exists(out .. "/" .. f), "listed but missing: " .. f) end
  end
  fit(out, 8, { overwrite = true })
  m = manifest(out)
  T.check(m.checkpoints.last == "last.safetensors" and m.checkpoints.best == "best.safetensors", "both listed")
  for _, f in ipairs{ m.checkpoints.last, m.checkpoints.best } do T.check(rt.exists(out .. "/" .. f), f) end
end)

T.test("epochs = 0 is an error that says why", function()
  T.raises(function() fit(dir .. "/g", 8, { epochs = 0 }) end, "epochs = 0 would train nothing")
  T.check(not rt.exists(dir .. "/g/manifest.json"), "no manifest for a run that trains nothing")
end)

-- ------------------------------------------------------------ retort info

-- A checkpoint whose provenance names `teacher` with the recorded `sha`.
local function link(path, teacher, sha)
  local s = rt.student("mlp", { sizes = { 4, 3 }, seed = 1 })
  s:save(path, { ["teacher.checkpoint"] = teacher, ["teacher.sha256"] = sha or ("0"):rep(64),
                 provenance = rt.json_encode{ seed = 1 } })
end

T.test("info exits 0 on a chain that checks out, 1 on a tampered hash", function()
  local tdir, sdir = dir .. "/info_t", dir .. "/info_s"
  fit(tdir, 8)
  local teacher = rt.teacher("model", { checkpoint = tdir .. "/last.safetensors" })
  rt.distill{ teacher = teacher, student = rt.student("mlp", { sizes = { 784, 4, 10 } }), data = train, epochs = 1,
              batch = 50, out = sdir, quiet = true, loss = rt.loss("kd") }
  local out, ok = run_cmd(retort .. " info " .. sdir .. "/last.safetensors")
  T.check(ok and out:find("matches", 1, true), "a good chain: " .. out)
  -- the teacher's file changes after the student was trained
  local tensors, meta, names = rt.load(tdir .. "/last.safetensors")
  local list = {}
  for _, n in ipairs(names) do list[#list + 1] = { n, tensors[n] } end
  meta.note = "changed"
  rt.save(tdir .. "/last.safetensors", list, meta)
  local code
  out, ok, code = run_cmd(retort .. " info " .. sdir .. "/last.safetensors")
  T.check(not ok and code == 1 and out:find("MISMATCH", 1, true) and out:find("does not check out", 1, true),
    "a tampered teacher: " .. out)
end)

T.test("info: a chain to a FIFO, /dev/zero, a loop, a big or slow file ends at once with a clear line", function()
  local fifo = dir .. "/fifo"
  assert(os.execute("mkfifo " .. fifo))
  link(dir .. "/to_fifo.safetensors", fifo)
  local out, ok, code = run_cmd(retort .. " info " .. dir .. "/to_fifo.safetensors")
  T.check(not ok and code == 1 and out:find("cannot be checked: " .. fifo .. ": not a regular file (a FIFO)", 1, true),
    "FIFO: " .. out)
  link(dir .. "/to_zero.safetensors", "/dev/zero")
  out, ok, code = run_cmd(retort .. " info " .. dir .. "/to_zero.safetensors")
  T.check(not ok and code == 1 and out:find("not a regular file (a character device)", 1, true), "/dev/zero: " .. out)
  -- the file named is itself a FIFO
  out, ok = run_cmd(retort .. " info " .. fifo)
  T.check(not ok and out:find("not a regular file", 1, true), "info on a FIFO: " .. out)
  -- a loop: a -> b -> a, and a link to itself spelled another way
  link(dir .. "/loop_a.safetensors", dir .. "/loop_b.safetensors")
  link(dir .. "/loop_b.safetensors", dir .. "/loop_a.safetensors")
  out, ok, code = run_cmd(retort .. " info " .. dir .. "/loop_a.safetensors")
  T.check(not ok and code == 1 and out:find("a loop: the same file as " .. dir .. "/loop_a.safetensors", 1, true),
    "loop: " .. out)
  link(dir .. "/self.safetensors", dir .. "/./self.safetensors")
  out, ok = run_cmd(retort .. " info " .. dir .. "/self.safetensors")
  T.check(not ok and out:find("a loop", 1, true), "self loop: " .. out)
  -- the bounds
  link(dir .. "/to_big.safetensors", dir .. "/loop_a.safetensors")
  out, ok = run_cmd(retort .. " info " .. dir .. "/to_big.safetensors --max-bytes 100")
  T.check(not ok and out:find("more than the hashing limit of 100", 1, true), "size bound: " .. out)
  out, ok = run_cmd(retort .. " info " .. dir .. "/to_big.safetensors --timeout 1e-9")
  T.check(not ok and out:find("hashing stopped", 1, true), "time bound: " .. out)
  -- a link that is simply not here is noted, not an error
  link(dir .. "/to_gone.safetensors", dir .. "/gone.safetensors")
  out, ok = run_cmd(retort .. " info " .. dir .. "/to_gone.safetensors")
  T.check(ok and out:find("not found here", 1, true), "missing link: " .. out)
end)

T.test("sha256_file and the safetensors reader refuse what is not a regular file, at once", function()
  -- in a child process under `timeout`: reading /dev/zero or opening a
  -- FIFO would otherwise never return
  local script = dir .. "/special.lua"
  rt.write_atomic(script, ([[
    local rt = require "retort"
    for _, f in ipairs{ function() return rt.sha256_file("/dev/zero") end, function() return rt.sha256_file(%q) end,
                        function() return rt.sha256_file(%q) end, function() return rt.load(%q) end } do
      print(select(2, pcall(f)))
    end
  ]]):format(dir, dir .. "/fifo", dir .. "/fifo"))
  local out, ok = run_cmd(retort .. " run " .. script)
  T.check(ok and out:find("/dev/zero: not a regular file (a character device)", 1, true), "/dev/zero: " .. out)
  T.check(out:find(dir .. ": not a regular file (a folder)", 1, true), "a folder: " .. out)
  local _, n = out:gsub("fifo: not a regular file", "")
  T.check(n == 2, "a FIFO, hashed and loaded: " .. out)
end)

os.execute("rm -rf " .. dir)
T.done("test_run_integrity.lua")
