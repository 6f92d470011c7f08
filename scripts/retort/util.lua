-- util.lua: recipe arguments, tables for people, error positions.
local rt = ...
local util = {}
rt.util = util

-- The error() level, seen from the function that calls this one's caller,
-- of the first function on the stack that is not the library (its chunks
-- are named "@scripts/retort/..."): the user's line, however deep the
-- library's own calls go and whether or not they were tail calls.
local function user_level()
  local n = 3 -- 1: user_level, 2: rethrow, 3: rethrow's caller
  while true do
    local info = debug.getinfo(n, "S")
    if not info then return 1 end
    if info.what ~= "C" and not info.source:find("^@scripts/retort/") then return n - 1 end
    n = n + 1
  end
end

-- Re-raises a failed pcall's message at the user's line, without the
-- library's own position, so an error in a recipe's call to a library
-- function points at the recipe.  Positions inside user code (a Lua loss's
-- callback) are kept; a message that starts with one (the user's callback
-- failed) is raised as it is, not under a second position.
function util.rethrow(msg)
  if type(msg) == "string" then
    local stripped = msg:gsub("^scripts/retort/[^:\n]*%.lua:%d+: ", "", 1)
    if stripped == msg and msg:find("^[^\n:]+:%d+: ") then error(msg, 0) end
    msg = stripped
  end
  error(msg, user_level())
end

-- Calls f(...) and re-raises its error at the user's line.
function util.call(f, ...)
  local r = table.pack(pcall(f, ...))
  if not r[1] then util.rethrow(r[2]) end
  return table.unpack(r, 2, r.n)
end

-- The did-you-mean of the core: rt.closest(name, names) -> name or nil.
local function closest(name, names) return rt.closest(name, names) end
util.closest = closest

-- Checks a table's keys against a list of known names; level as error().
function util.check_keys(t, known, what, level)
  local names = {}
  for k in pairs(known) do names[#names + 1] = k end
  table.sort(names)
  for k in pairs(t) do
    if known[k] == nil then
      local best = type(k) == "string" and closest(k, names)
      error(("%s: unknown field '%s'%s"):format(what, tostring(k),
        best and (" (did you mean '" .. best .. "'?)") or (" (fields: " .. table.concat(names, ", ") .. ")")),
        (level or 1) + 1)
    end
  end
end

-- Parses recipe arguments "--name value", "--name=value", "--flag" into a
-- copy of defaults, converting to each default's type.  "--help" prints
-- `help` and the defaults and exits.
function util.args(argv, defaults, help)
  local o = {}
  for k, v in pairs(defaults) do o[k] = v end
  local names = {}
  for k in pairs(defaults) do names[#names + 1] = k end
  table.sort(names)
  local i = 1
  argv = argv or {}
  while i <= #argv do
    local a = argv[i]
    if a == "--help" or a == "-h" then
      io.write(help or "", help and "\n" or "", "options (defaults):\n")
      for _, k in ipairs(names) do
        io.write(("  --%-18s %s\n"):format(k:gsub("_", "-"), tostring(defaults[k])))
      end
      os.exit(0)
    end
    local k, v = a:match("^%-%-([%w_%-]+)=(.*)$")
    if not k then k = a:match("^%-%-([%w_%-]+)$") end
    if not k then error(("argument '%s': expected --name [value]"):format(a), 0) end
    k = k:gsub("%-", "_")
    local def = defaults[k]
    if def == nil then
      local best = closest(k, names)
      error(("unknown argument --%s%s (--help lists them)"):format(k:gsub("_", "-"),
        best and (" (did you mean --" .. best:gsub("_", "-") .. "?)") or ""), 0)
    end
    if type(def) == "boolean" then
      if v == nil then v = "true" end
      if v ~= "true" and v ~= "false" then error(("--%s takes true or false"):format(k), 0) end
      o[k] = v == "true"
    else
      if v == nil then
        i = i + 1
        v = argv[i]
        if v == nil then error(("--%s needs a value"):format(k), 0) end
      end
      if type(def) == "number" then
        local n = tonumber(v)
        if not n then error(("--%s must be a number, got '%s'"):format(k, v), 0) end
        o[k] = n
      else
        o[k] = v
      end
    end
    i = i + 1
  end
  return o
end

-- Formats rows (lists of values) under headers as aligned text, or as a
-- Markdown table when markdown is true.
function util.format_table(headers, rows, markdown)
  local w = {}
  local function cell(v)
    if type(v) == "number" and math.type(v) == "float" then v = ("%.4g"):format(v) end
    v = tostring(v == nil and "" or v)
    return markdown and (v:gsub("|", "\\|")) or v
  end
  local all = { headers }
  for _, r in ipairs(rows) do all[#all + 1] = r end
  for _, r in ipairs(all) do
    for j = 1, #headers do w[j] = math.max(w[j] or 0, #cell(r[j])) end
  end
  local out = {}
  for n, r in ipairs(all) do
    local cells = {}
    for j = 1, #headers do
      local c = cell(r[j])
      cells[j] = (j == 1) and (c .. (" "):rep(w[j] - #c)) or ((" "):rep(w[j] - #c) .. c)
    end
    out[#out + 1] = markdown and ("| " .. table.concat(cells, " | ") .. " |") or table.concat(cells, "  ")
    if n == 1 then
      local sep = {}
      for j = 1, #headers do
        sep[j] = (markdown and j > 1) and (("-"):rep(math.max(w[j] - 1, 2)) .. ":") or ("-"):rep(math.max(w[j], 3))
      end
      out[#out + 1] = markdown and ("| " .. table.concat(sep, " | ") .. " |") or table.concat(sep, "  ")
    end
  end
  return table.concat(out, "\n")
end

-- Appends one JSON object per line to path.  Every write is checked: it
-- adds a whole line or raises naming the file, the offset and the cause (a
-- full disk is an error, never a torn line).
function util.jsonl(path)
  return {
    write = function(obj)
      local ok, err = pcall(rt.append_file, path, rt.json_encode(obj) .. "\n")
      if not ok then error("metrics: " .. tostring(err):gsub("^[^\n]-%.lua:%d+: ", ""), 0) end
    end,
    close = function() end,
  }
end

function util.read_file(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local s = f:read("a")
  f:close()
  return s
end

-- A string safe to print on a terminal: control characters (C0, DEL and
-- the C1 range U+0080..U+009F, which terminals may read as escape
-- sequences) become \n, \t, \r or \xNN / \u{NN}, bytes that are not UTF-8
-- become \xNN.  Anything else (printable UTF-8) is kept.  Non-strings go
-- through tostring first.
local NAMED = { ["\n"] = "\\n", ["\t"] = "\\t", ["\r"] = "\\r" }
function util.printable(v)
  local s = tostring(v)
  if not s:find("[%c\128-\255]") then return s end
  local out, i, n = {}, 1, #s
  while i <= n do
    local b = s:byte(i)
    local len = b < 0x80 and 1 or (b >= 0xC2 and b <= 0xDF) and 2 or (b >= 0xE0 and b <= 0xEF) and 3
      or (b >= 0xF0 and b <= 0xF4) and 4 or 0
    local ch = len > 0 and s:sub(i, i + len - 1) or nil
    if ch and len > 1 and (#ch < len or not utf8.len(ch)) then ch = nil end
    if not ch then
      out[#out + 1] = ("\\x%02X"):format(b)
      i = i + 1
    else
      local cp = len == 1 and b or utf8.codepoint(ch)
      if NAMED[ch] then out[#out + 1] = NAMED[ch]
      elseif cp < 0x20 or cp == 0x7F then out[#out + 1] = ("\\x%02X"):format(cp)
      elseif cp >= 0x80 and cp <= 0x9F then out[#out + 1] = ("\\u{%02X}"):format(cp)
      else out[#out + 1] = ch end
      i = i + len
    end
  end
  return table.concat(out)
end
