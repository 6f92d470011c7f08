-- cmd_report.lua: retort report RUN_DIR [--out FILE]
-- Writes RUN_DIR/report.html (see report.lua) and prints its path.
local rt = ...

rt.command{
  name = "report", usage = "report RUN_DIR", help = "write RUN_DIR/report.html: charts, metrics, provenance",
  run = function(args)
    local dir, out
    local i = 1
    while i <= #args do
      local a = args[i]
      if a == "--out" then i = i + 1 out = args[i]
      elseif a == "--help" or a == "-h" then
        print("usage: retort report RUN_DIR [--out FILE]\n\nRUN_DIR is a run folder (manifest.json) or a folder"
          .. " with summary.json\n(the demo's top-level folder). Writes one self-contained HTML page.")
        return 0
      elseif dir == nil then dir = a
      else error("unexpected argument '" .. a .. "'", 0) end
      i = i + 1
    end
    if not dir then error("needs a run folder (retort report RUN_DIR)", 0) end
    dir = dir:gsub("/+$", "")
    print(rt.report(dir, { out = out }))
    return 0
  end,
}
