-- Sends every request with `Authorization: Bearer $ACCESS_TOKEN`, the token kept out of wrk's
-- command line (and so out of `ps` and the benchmark's summary).
--
-- Used for the auth service's GET /api/v1/me and for the bare axum baseline alike, so both
-- receive the same bytes. It defines no request() or response(): wrk then builds the request
-- once per thread and runs no Lua per request, which keeps the load generator's share of the
-- cores as small as it can be.

local token = os.getenv("ACCESS_TOKEN")
if token == nil or token == "" then
  io.stderr:write("bearer.lua: set ACCESS_TOKEN to an access token\n")
  os.exit(1)
end

wrk.headers["Authorization"] = "Bearer " .. token
