-- commands.lua: subcommands of the retort command written in Lua.
-- `retort NAME ARGS...` runs rt.commands.NAME.run(args) for every NAME that
-- is not built into the C command (run, plugins); `retort --help` lists
-- them.  A command is a file scripts/retort/cmd_NAME.lua that calls
-- rt.command{ name =, usage =, help =, run = function(args) -> exit code }.
-- Errors raised by run print as "retort NAME: message" and exit 1.
local rt = ...
rt.commands = rt.commands or {}

function rt.command(c)
  assert(type(c.name) == "string" and type(c.run) == "function", "rt.command needs name and run")
  rt.commands[c.name] = c
end

-- One line per command, sorted, for `retort --help`.
function rt.command_list()
  local names = {}
  for n in pairs(rt.commands) do names[#names + 1] = n end
  table.sort(names)
  local out = {}
  for _, n in ipairs(names) do
    local c = rt.commands[n]
    out[#out + 1] = ("  %-26s %s"):format(c.usage or n, c.help or "")
  end
  return table.concat(out, "\n")
end
