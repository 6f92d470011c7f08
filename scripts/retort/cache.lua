-- cache.lua: the teacher cache of rt.distill: the teacher's logits for
-- the whole training set, computed once (the data has no augmentation, so
-- they do not change between epochs) and gathered per batch.  Moved out
-- of train.lua (issue 9); reached through rt.cache at call time.
local rt = ...

-- The teacher's logits for every sample of data (n of them), as a
-- dataset whose rows are gathered by sample id.
local function teacher_cache(teacher, data, n, quiet)
  local cache
  local t0 = rt.clock()
  local pos = 1
  local progress = rt.progress("teacher labels", math.ceil(n / 1000), quiet)
  for x, _, idx in data:batches(1000) do
    local z = teacher:forward(x, idx)
    if not cache then cache = rt.zeros({ n, z:size(2) }) end
    cache:narrow(1, pos, #x):copy(z)
    pos = pos + #x
    progress:update(math.ceil((pos - 1) / 1000))
  end
  progress:finish()
  cache = rt.dataset(cache)
  if not quiet then
    io.stderr:write(("teacher logits cached for %d samples in %.1fs\n"):format(n, rt.clock() - t0))
  end
  return cache
end

-- The teacher's logits of a batch (sample ids idx) from the cache; a full
-- batch reuses run.tbuf.
local function teacher_rows(run, idx)
  local cache, bs = run.cache, run.bs
  if #idx == bs then
    run.tbuf = run.tbuf or cache:gather(idx)
    return cache:gather(idx, run.tbuf)
  end
  return cache:gather(idx)
end

rt.cache = { teacher_cache = teacher_cache, teacher_rows = teacher_rows }
