-- t.lua: the Lua test harness.  test(name, fn) runs fn under pcall; check*
-- record failures with the caller's line; done() prints the closing line
-- "N passed, N failed" and exits non-zero on failure.
local T = { passed = 0, failed = 0, cur_failed = 0 }

local function where(level)
  local info = debug.getinfo(level + 1, "Sl")
  return ("%s:%d"):format(info.short_src, info.currentline)
end

function T.check(cond, msg)
  if not cond then
    T.cur_failed = T.cur_failed + 1
    io.stderr:write(("  FAIL %s: %s\n"):format(where(2), msg or "check failed"))
  end
  return cond
end

function T.near(a, b, tol, msg)
  tol = tol or 1e-6
  local ok = type(a) == "number" and type(b) == "number" and math.abs(a - b) <= tol * math.max(1, math.abs(b))
  if not ok then
    T.cur_failed = T.cur_failed + 1
    io.stderr:write(("  FAIL %s: %s: %s vs %s\n"):format(where(2), msg or "near", tostring(a), tostring(b)))
  end
  return ok
end

-- fn must raise an error whose message contains every given substring.
function T.raises(fn, ...)
  local ok, err = pcall(fn)
  if ok then
    T.cur_failed = T.cur_failed + 1
    io.stderr:write(("  FAIL %s: no error raised\n"):format(where(2)))
    return nil
  end
  err = tostring(err)
  for _, s in ipairs{ ... } do
    if not err:find(s, 1, true) then
      T.cur_failed = T.cur_failed + 1
      io.stderr:write(("  FAIL %s: error %q lacks %q\n"):format(where(2), err, s))
    end
  end
  return err
end

function T.test(name, fn)
  T.cur_failed = 0
  local ok, err = xpcall(fn, debug.traceback)
  if not ok then
    T.cur_failed = T.cur_failed + 1
    io.stderr:write(("  ERROR in %s: %s\n"):format(name, err))
  end
  if T.cur_failed > 0 then
    T.failed = T.failed + 1
    io.stderr:write("FAIL " .. name .. "\n")
  else
    T.passed = T.passed + 1
  end
end

function T.done(suite)
  print(("%s: %d passed, %d failed"):format(suite, T.passed, T.failed))
  os.exit(T.failed == 0 and 0 or 1)
end

-- A fresh temporary folder.
function T.tmpdir()
  local p = os.tmpname()
  os.remove(p)
  assert(os.execute("mkdir -p " .. p))
  return p
end

return T
