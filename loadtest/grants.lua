-- wrk script: one grab per request, each with its own Idempotency-Key, spread over
-- the users whose tokens are in $TOKENS_FILE (one JWT per line).
local tokens = {}
for line in io.lines(os.getenv("TOKENS_FILE")) do tokens[#tokens + 1] = line end
local path = "/v1/campaigns/" .. os.getenv("CAMPAIGN") .. "/claims"
local threads = {}
n, granted, refused = 0, 0, 0
tid = "t"

function setup(thread)
  thread:set("tid", "t" .. #threads .. "-" .. math.random(1, 1000000000))
  threads[#threads + 1] = thread
end

function request()
  n = n + 1
  return wrk.format("POST", path, {
    ["Authorization"] = "Bearer " .. tokens[(n % #tokens) + 1],
    ["Idempotency-Key"] = "wrk-" .. tid .. "-" .. n,
  })
end

function response(status)
  if status == 201 then granted = granted + 1 else refused = refused + 1 end
end

function done(summary, latency, requests)
  local g, r = 0, 0
  for _, t in ipairs(threads) do g = g + t:get("granted"); r = r + t:get("refused") end
  io.write(string.format("GRANTED %d OTHER %d P99_MS %.2f\n", g, r, latency:percentile(99) / 1000))
end
