-- Sends each request with the next of many users' access tokens, in turn: one token per line
-- of the file named by $TOKENS_FILE (services/gateway/examples/bench_upstream.rs writes it).
-- Used by the gateway benchmarks, so that the gateway's token cache and per-user limits see
-- many users rather than one.

local path = os.getenv("TOKENS_FILE")
if path == nil or path == "" then
  io.stderr:write("tokens.lua: set TOKENS_FILE to a file of access tokens, one per line\n")
  os.exit(1)
end

local tokens = {}
for line in io.lines(path) do tokens[#tokens + 1] = line end
local i = 0
request = function()
  i = (i % #tokens) + 1
  return wrk.format(nil, nil, { ["Authorization"] = "Bearer " .. tokens[i] })
end
