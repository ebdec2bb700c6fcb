-- wrk script for loadtest/bench: builds every request itself, so wrk can drive the
-- grant path (each grab needs a fresh idempotency key and a signed user token),
-- and measures the /healthz ceiling through the same per-request work.
--   wrk -t2 -c256 -d5s -s loadtest/wrk/grab.lua URL -- MODE TOKENS CAMPAIGN PREFIX THREADS FIRST
-- MODE: grab | healthz. TOKENS: a file of user tokens, one per line (loadgen writes
-- it). PREFIX makes this run's keys differ from every other run's; FIRST is the
-- number of the first request, so a run goes on with the users the last one left.
local next_tid = 0

function setup(thread)
  thread:set("tid", next_tid)
  next_tid = next_tid + 1
end

function init(args)
  mode, campaign, prefix = args[1], args[3], args[4]
  nthreads = tonumber(args[5])
  first = tonumber(args[6] or "0")
  tokens = {}
  for line in io.lines(args[2]) do
    tokens[#tokens + 1] = "Bearer " .. line
  end
  ntokens = #tokens
  if mode == "grab" then
    method, path = "POST", "/v1/campaigns/" .. campaign .. "/claims"
  else
    method, path = "GET", "/healthz"
  end
  counter = 0
end

function request()
  counter = counter + 1
  local i = counter * nthreads + tid
  return wrk.format(method, path, {
    ["Authorization"] = tokens[((first + i) % ntokens) + 1],
    ["Idempotency-Key"] = prefix .. "-" .. i,
  })
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("WRK %d %d %d %d %d %d %d %d\n", summary.requests, summary.duration,
    e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
