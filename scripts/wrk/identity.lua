-- Sends every request with the identity headers the gateway would set for one caller
-- (`BENCH_HEADERS`: `name:value` pairs joined by `|`, printed by the users service's
-- `bench_identity` example), kept out of wrk's command line.
--
-- Used for the users service's GET /api/v1/users/me and for the bare axum baseline alike, so
-- both receive the same bytes. Like bearer.lua it defines no request() or response(), so wrk
-- runs no Lua per request.

local headers = os.getenv("BENCH_HEADERS")
if headers == nil or headers == "" then
  io.stderr:write("identity.lua: set BENCH_HEADERS (see scripts/bench-users.sh)\n")
  os.exit(1)
end

for pair in string.gmatch(headers, "[^|]+") do
  local name, value = string.match(pair, "^([^:]+):(.*)$")
  if name ~= nil then
    wrk.headers[name] = value
  end
end
