-- cmd_info.lua: retort info FILE.safetensors
-- Lists the tensors (name, dtype, shape), the metadata, and the provenance
-- chain: a student checkpoint names its teacher's checkpoint and sha256;
-- when that file exists its hash is checked and its own provenance follows,
-- down to the data the first model was trained on.
--
-- The paths in a chain come from files, so they are not followed blindly:
-- only regular files are hashed (a FIFO, /dev/zero or a socket is
-- reported, never opened for a blocking read), each within a size bound
-- and a time limit; a chain that comes back to a file already shown (the
-- same sha256) or runs longer than MAX_DEPTH links is reported and
-- stopped.  The exit status is 1 when a recorded hash does not match or a
-- file the chain names cannot be checked; a file that is not here at all
-- is only noted (the chain may have been copied without it).
local rt = ...
-- Every name and value read from a file goes through pr before it is
-- printed: a checkpoint must not drive the terminal (escape sequences).
local pr = rt.util.printable

local MAX_VALUE = 100 -- longer metadata values (JSON) are cut in the listing
local MAX_DEPTH = 16
local MAX_HASH_BYTES = 8 * 1024 ^ 3 -- per file; --max-bytes changes it
local HASH_SECONDS = 60             -- per file; --timeout changes it

local function short(v)
  if #v <= MAX_VALUE then return v end
  return v:sub(1, MAX_VALUE) .. ("... (%d bytes)"):format(#v)
end

local function data_line(d)
  if type(d) ~= "table" then return nil end
  local hashes = {}
  for _, f in ipairs(d.files or {}) do hashes[#hashes + 1] = ("%s sha256 %s"):format(pr(f.path), pr(f.sha256 or "?")) end
  return ("%s (%s samples, licence %s)%s"):format(pr(d.name), pr(d.samples), pr(d.license),
    #hashes > 0 and ("\n        " .. table.concat(hashes, "\n        ")) or "")
end

-- Prints one link of the chain; returns the teacher's checkpoint to follow.
local function describe(path, meta, depth)
  local ind = ("  "):rep(depth)
  print(("%s%s: %s '%s'%s"):format(ind, pr(path), pr(meta["retort.kind"] or "?"), pr(meta["retort.plugin"] or "?"),
    meta["retort.options"] and (" " .. pr(meta["retort.options"])) or ""))
  local p = meta.provenance and select(2, pcall(rt.json_decode, meta.provenance))
  if type(p) == "table" then
    if p.recipe then print(("%s  recipe   %s sha256 %s"):format(ind, pr(p.recipe.path), pr(p.recipe.sha256))) end
    local d = data_line(p.data and p.data.train)
    if d then print(("%s  data     %s"):format(ind, (d:gsub("\n", "\n" .. ind)))) end
    if p.seed then print(("%s  seed     %s"):format(ind, pr(p.seed))) end
  end
  -- weights: the teacher's own (rt.weights_sha256), whether or not a file holds them
  local w, run = meta["teacher.weights_sha256"], meta["teacher.run"]
  local weights = w and ("%s  weights  sha256 %s%s"):format(ind, pr(w), run and (", trained in run " .. pr(run)) or "")
  if meta["teacher.sha256"] then
    print(("%s  teacher  %s sha256 %s"):format(ind, pr(meta["teacher.checkpoint"]), pr(meta["teacher.sha256"])))
    if weights then print(weights) end
    return meta["teacher.checkpoint"], meta["teacher.sha256"]
  elseif w then
    print(("%s  teacher  a live model, not saved to a file"):format(ind))
    print(weights)
  elseif depth == 0 or meta.provenance then
    print(("%s  teacher  none (trained on labels)"):format(ind))
  end
end

rt.command{
  name = "info", usage = "info FILE.safetensors", help = "tensors, metadata and provenance chain of a checkpoint",
  run = function(args)
    local usage = "usage: retort info FILE.safetensors [--max-bytes N] [--timeout SECONDS]"
    local path, max_bytes, seconds = nil, MAX_HASH_BYTES, HASH_SECONDS
    local i = 1
    while i <= #args do
      local a = args[i]
      if a == "--help" or a == "-h" then print(usage) return 0 end
      if a == "--max-bytes" or a == "--timeout" then
        local v = tonumber(args[i + 1])
        if not v or v <= 0 then error(a .. " needs a number > 0 (" .. usage .. ")", 0) end
        if a == "--max-bytes" then max_bytes = v else seconds = v end
        i = i + 1
      elseif path == nil then
        path = a
      else
        error("one file at a time (" .. usage .. ")", 0)
      end
      i = i + 1
    end
    if not path then print(usage) return 2 end
    local tensors, meta, names = rt.load(path)
    print(("%s: %d tensors, %d bytes"):format(pr(path), #names, rt.file_size(path) or -1))
    local rows, total = {}, 0
    for _, n in ipairs(names) do
      local t = tensors[n]
      local shape = t:shape()
      for i = 1, #shape do shape[i] = tostring(shape[i]) end
      rows[#rows + 1] = { pr(n), t:dtype(), "[" .. table.concat(shape, ", ") .. "]", t:numel() }
      total = total + t:numel()
    end
    print(rt.util.format_table({ "tensor", "dtype", "shape", "elements" }, rows))
    print(("total %d elements"):format(total))
    print("\nmetadata:")
    local keys = {}
    for k in pairs(meta) do keys[#keys + 1] = k end
    table.sort(keys)
    for _, k in ipairs(keys) do print(("  %-20s %s"):format(pr(k), pr(short(meta[k])))) end
    print("\nprovenance chain:")
    local bad = false
    local function hash(p)
      local ok, h = pcall(rt.sha256_file, p, math.floor(max_bytes), seconds)
      if ok then return h end
      return nil, (tostring(h):gsub("^[^\n]-%.lua:%d+: ", ""))
    end
    -- Files already shown, by sha256: a loop comes back to one of them.
    local seen = {}
    local h0 = hash(path)
    if h0 then seen[h0] = path end
    local depth = 0
    local next_path, want = describe(path, meta, depth)
    while next_path do
      depth = depth + 1
      local ind = ("  "):rep(depth)
      if depth > MAX_DEPTH then
        print(("%s%s: the chain is longer than %d links; stopped"):format(ind, pr(next_path), MAX_DEPTH))
        bad = true
        break
      end
      if not rt.exists(next_path) then
        print(ind .. pr(next_path) .. ": not found here (the sha256 above names it)")
        break
      end
      local got, err = hash(next_path)
      if not got then
        print(("%s%s: cannot be checked: %s"):format(ind, pr(next_path), pr(err)))
        bad = true
        break
      end
      if seen[got] then
        print(("%s%s: a loop: the same file as %s, shown above; stopped"):format(ind, pr(next_path), pr(seen[got])))
        bad = true
        break
      end
      seen[got] = next_path
      print(ind .. ("sha256 %s: %s"):format(got, got == want and "matches" or
        ("MISMATCH: the file changed since the student was trained (expected " .. pr(want) .. ")")))
      if got ~= want then bad = true end
      local ok, m = pcall(rt.read_meta, next_path)
      if not ok then
        print(("%s%s: not a checkpoint retort can read: %s"):format(ind, pr(next_path),
          pr((tostring(m):gsub("^[^\n]-%.lua:%d+: ", "")))))
        bad = true
        break
      end
      next_path, want = describe(next_path, m, depth)
    end
    if bad then
      print("\nthe provenance chain does not check out (see above)")
      return 1
    end
    return 0
  end,
}
