-- datasets.lua: a dataset's name, and the datasets made from one
-- (ds:split, ds:subset) that keep its provenance.
--
-- A dataset's provenance lives in rt.data.info[ds] (data.lua): name,
-- licence, origin, files, classes.  A subset copies it and adds `subset`:
-- which rows of which parent, recorded compactly (count, sha256 of the id
-- list, how it was made), so a manifest never lists 50,000 numbers.
local rt = ...
local util = rt.util

-- The dataset methods table (the C class's __index), reached through a
-- throw-away instance: methods added here work on every dataset.
local methods = getmetatable(rt.dataset(rt.zeros{ 1, 1 })).__index

-- rt.data.name(ds [, fallback]) -> the dataset's name: the one it was
-- given (rt.data.idx{name=}, ds:name("..."), a split's), else fallback.
function rt.data.name(ds, fallback)
  local info = ds ~= nil and rt.data.info[ds]
  return info and info.name or fallback
end

-- ds:name() -> its name or nil; ds:name("val") sets it and returns ds.
function methods.name(ds, new)
  if new == nil then return rt.data.name(ds) end
  if type(new) ~= "string" or new == "" then error("ds:name: a name is a non-empty string", 2) end
  local info = rt.data.info[ds]
  if not info then
    info = { size = ds:size() }
    rt.data.info[ds] = info
  end
  info.name = new
  return ds
end

-- The ids as text, hashed: "3,17,42" (1-based, in the subset's order).
local function ids_sha256(ids) return rt.sha256(table.concat(ids, ",")) end

-- A new dataset of the rows `ids` (1-based) of ds, with ds's provenance
-- and a `subset` record.  how: {how = "subset" | "split ...", seed, part}.
local function make_subset(ds, ids, how, level)
  local n = ds:size()
  if type(ids) ~= "table" or #ids == 0 then
    error("ds:subset: needs a non-empty list of sample ids (1-based)", level + 1)
  end
  local zero = {}
  for i, id in ipairs(ids) do
    if math.type(id) ~= "integer" or id < 1 or id > n then
      error(("ds:subset: id %s at position %d is outside [1, %d] (ids are 1-based)"):format(tostring(id), i, n),
        level + 1)
    end
    zero[i] = id - 1
  end
  local x, y = ds:gather(rt.tensor(zero, "i32"))
  local sub = util.call(rt.dataset, x, y)
  local parent = rt.data.info[ds] or {}
  local info = {}
  for k, v in pairs(parent) do info[k] = v end
  info.size = #ids
  info.subset = { of = parent.name or "(in memory)", of_samples = n, count = #ids, ids_sha256 = ids_sha256(ids),
                  how = how.how, seed = how.seed, part = how.part, parent = parent.subset }
  local base = parent.name or "data"
  info.name = how.name or (how.part and ("%s:%s"):format(base, how.part)) or ("%s:subset"):format(base)
  rt.data.info[sub] = info
  return sub
end

-- ds:subset(ids [, name]) -> dataset of those rows (ids 1-based, any
-- order, repeats allowed), sharing ds's provenance plus which ids.
function methods.subset(ds, ids, name)
  if name ~= nil and type(name) ~= "string" then error("ds:subset: the name must be a string", 2) end
  return make_subset(ds, ids, { how = "subset", name = name }, 2)
end

-- ds:split{ fraction = 0.1 | n = 5000, seed = 1 [, names = {rest, held}] }
--   -> rest, held
-- held: n rows (or round(fraction * N)) drawn by a permutation from
-- `seed`'s own stream (rt.permutation: the training stream is untouched);
-- rest: every other row.  Both keep the source order.  Default names:
-- "<name>:rest" and "<name>:held".
function methods.split(ds, o)
  if type(o) ~= "table" then error("ds:split: needs a table {fraction = 0.1 | n = 5000, seed = 1}", 2) end
  util.check_keys(o, { fraction = 1, n = 1, seed = 1, names = 1 }, "ds:split", 2)
  local N = ds:size()
  local k
  if (o.fraction == nil) == (o.n == nil) then error("ds:split: give either 'fraction' or 'n'", 2) end
  if o.fraction ~= nil then
    if type(o.fraction) ~= "number" or not (o.fraction > 0 and o.fraction < 1) then
      error(("ds:split: 'fraction' must be in (0, 1), got %s"):format(tostring(o.fraction)), 2)
    end
    k = math.floor(o.fraction * N + 0.5)
  else
    k = o.n
    if math.type(k) ~= "integer" then error(("ds:split: 'n' must be an integer, got %s"):format(tostring(k)), 2) end
  end
  if k < 1 or k > N - 1 then
    error(("ds:split: the held part would have %d of %d samples; both parts need at least one"):format(k, N), 2)
  end
  local seed = o.seed or 1
  if math.type(seed) ~= "integer" or seed < 0 then
    error(("ds:split: 'seed' must be an integer >= 0, got %s"):format(tostring(seed)), 2)
  end
  local names = o.names or {}
  local perm = rt.permutation(N, seed)
  local held, rest = {}, {}
  for i = 1, k do held[i] = perm[i] end
  for i = k + 1, N do rest[#rest + 1] = perm[i] end
  table.sort(held)
  table.sort(rest)
  local how = o.fraction and ("split fraction %g, seed %d"):format(o.fraction, seed)
    or ("split n %d, seed %d"):format(k, seed)
  return make_subset(ds, rest, { how = how, seed = seed, part = "rest", name = names[1] }, 2),
         make_subset(ds, held, { how = how, seed = seed, part = "held", name = names[2] }, 2)
end

-- ds:keep_labels{ n = 2000, seed = 1 [, names = {all, labelled}] }
--   -> all, labelled
-- Semi-supervised data: `all` has every sample of ds but keeps the labels
-- of only n of them, drawn by a permutation from `seed`'s own stream; the
-- others get label -1, "unlabelled" (loss terms that need labels skip
-- them: rt.distill passes those terms a mask; terms on the teacher's
-- signal see every sample).  `labelled` is the subset of the n labelled
-- samples alone, in ds's order (the baseline that only has the labels).
-- Both record which labels were kept (count, sha256 of the ids, seed).
-- Default names: "<name>:<n>-labelled" and "<name>:<n>-labelled-only".
function methods.keep_labels(ds, o)
  if type(o) ~= "table" then error("ds:keep_labels: needs a table {n = 2000, seed = 1}", 2) end
  util.check_keys(o, { n = 1, seed = 1, names = 1 }, "ds:keep_labels", 2)
  local N, y = ds:size(), ds:y()
  if y == nil then error("ds:keep_labels: the dataset has no labels to keep", 2) end
  if y:dim() ~= 1 then
    error("ds:keep_labels: needs one label per sample ([N]); per-position labels are not supported", 2)
  end
  local k, seed = o.n, o.seed or 1
  if math.type(k) ~= "integer" or k < 1 or k > N then
    error(("ds:keep_labels: 'n' must be an integer in [1, %d] (the samples), got %s"):format(N, tostring(k)), 2)
  end
  if math.type(seed) ~= "integer" or seed < 0 then
    error(("ds:keep_labels: 'seed' must be an integer >= 0, got %s"):format(tostring(seed)), 2)
  end
  local perm = rt.permutation(N, seed)
  local keep, kept = {}, {}
  for i = 1, k do keep[i] = perm[i]; kept[perm[i]] = true end
  table.sort(keep)
  local y2 = y:clone()
  for i = 1, N do
    if not kept[i] then y2:set(i, -1) end
  end
  local names = o.names or {}
  local parent = rt.data.info[ds] or {}
  local base = parent.name or "data"
  local labels = { kept = k, of = N, ids_sha256 = ids_sha256(keep), seed = seed, unlabelled = -1 }
  local all = util.call(rt.dataset, ds:x(), y2)
  local info = {}
  for key, v in pairs(parent) do info[key] = v end
  info.size, info.labels = N, labels
  info.name = names[1] or ("%s:%d-labelled"):format(base, k)
  rt.data.info[all] = info
  local only = make_subset(ds, keep, { how = ("keep_labels n %d, seed %d"):format(k, seed), seed = seed,
                                       part = "labelled", name = names[2] or ("%s:%d-labelled-only"):format(base, k) }, 2)
  return all, only
end
