-- cmd_info.lua: retort info FILE.safetensors
-- Lists the tensors (name, dtype, shape), the metadata, and the provenance
-- chain: a student checkpoint names its teacher's checkpoint and sha256;
-- when that file exists its hash is checked and its own provenance follows,
-- down to the data the first model was trained on.
local rt = ...
-- Every name and value read from a file goes through pr before it is
-- printed: a checkpoint must not drive the terminal (escape sequences).
local pr = rt.util.printable

local MAX_VALUE = 100 -- longer metadata values (JSON) are cut in the listing

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
    local path = args[1]
    if not path or path == "--help" or path == "-h" then
      print("usage: retort info FILE.safetensors")
      return path and 0 or 2
    end
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
    local depth, seen = 0, {}
    local next_path, want = describe(path, meta, depth)
    while next_path do
      depth = depth + 1
      if seen[next_path] or depth > 16 then
        print(("  "):rep(depth) .. pr(next_path) .. ": (a cycle; stopped)")
        break
      end
      seen[next_path] = true
      if not rt.exists(next_path) then
        print(("  "):rep(depth) .. pr(next_path) .. ": not found here (the sha256 above names it)")
        break
      end
      local got = rt.sha256_file(next_path)
      print(("  "):rep(depth) .. ("sha256 %s: %s"):format(got, got == want and "matches" or
        ("MISMATCH: the file changed since the student was trained (expected " .. pr(want) .. ")")))
      next_path, want = describe(next_path, rt.read_meta(next_path), depth)
    end
    return 0
  end,
}
