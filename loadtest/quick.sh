#!/usr/bin/env bash
# First figures for the grab path, measured side by side in one run against a running
# voucherd (start it with scripts/dev): the /healthz ceiling (oha), durable grants
# (wrk + grants.lua: a new key and user per request), idempotent replays and
# sold-out refusals (oha: one fixed request), public reads (oha). Each figure is also
# given as a ratio to the ceiling of the same run. Writes results/quick.md.
set -euo pipefail
cd "$(dirname "$0")"
V=${V:-http://127.0.0.1:8080}
ADMIN=${ADMIN_TOKEN:-dev-only-admin-token}
export JWT_SECRET=${JWT_SECRET:-dev-only-jwt-secret-change-me-0123456789}
DURATION=${DURATION:-10}
CONNS=${CONNS:-64}
VOUCHERD=${VOUCHERD:-../target/release/voucherd}
command -v oha >/dev/null || { echo "oha missing: cargo install oha --locked" >&2; exit 1; }
command -v wrk >/dev/null || { echo "wrk missing: apt-get install -y wrk" >&2; exit 1; }
curl -fsS "$V/healthz" >/dev/null || { echo "voucherd does not answer at $V: run scripts/dev" >&2; exit 1; }

campaign() { # stock limit
  curl -fsS -X POST "$V/v1/admin/campaigns" -H "Authorization: Bearer $ADMIN" \
    -H "Idempotency-Key: bench-$RANDOM$RANDOM$RANDOM" -H 'Content-Type: application/json' \
    -d "{\"name\":\"bench\",\"total_stock\":$1,\"per_user_limit\":$2,\"ends_at\":\"2099-01-01T00:00:00Z\",
         \"voucher\":{\"discount\":{\"type\":\"fixed\",\"amount\":1000,\"currency\":\"VND\"},\"valid_for_seconds\":3600}}" \
    | sed -E 's/.*"id":"([^"]+)".*/\1/'
}
rps_of() { python3 -c 'import json,sys; print(round(json.load(sys.stdin)["summary"]["requestsPerSec"]))'; }
p99_of() { python3 -c 'import json,sys; print(round(json.load(sys.stdin)["latencyPercentiles"]["p99"]*1000, 2))'; }
oha_run() { oha -z "${DURATION}s" -c "$CONNS" --no-tui --output-format json "$@"; }

run=$RANDOM$RANDOM
hot=$(campaign 10000000 100)
soldout=$(campaign 1 1)
tokens=$(mktemp)
"$VOUCHERD" token --sub "bench-$run" --count 5000 --ttl 2h > "$tokens"
holder=$("$VOUCHERD" token --sub "holder-$run")
latecomer=$("$VOUCHERD" token --sub "late-$run")
curl -fsS -o /dev/null -X POST "$V/v1/campaigns/$soldout/claims" -H "Authorization: Bearer $holder" -H "Idempotency-Key: take-last-$run"
curl -fsS -o /dev/null -X POST "$V/v1/campaigns/$hot/claims" -H "Authorization: Bearer $holder" -H "Idempotency-Key: replay-$run"

echo "healthz ..." >&2
h=$(oha_run "$V/healthz"); h_rps=$(rps_of <<<"$h"); h_p99=$(p99_of <<<"$h")
echo "grants ..." >&2
g=$(TOKENS_FILE=$tokens CAMPAIGN=$hot wrk -t2 -c"$CONNS" -d"${DURATION}s" -s grants.lua --latency "$V")
g_rps=$(awk '/^Requests\/sec/ {printf "%d", $2}' <<<"$g")
g_ok=$(awk '/^GRANTED/ {print $2}' <<<"$g"); g_other=$(awk '/^GRANTED/ {print $4}' <<<"$g"); g_p99=$(awk '/^GRANTED/ {print $6}' <<<"$g")
echo "replays ..." >&2
r=$(oha_run -m POST -H "Authorization: Bearer $holder" -H "Idempotency-Key: replay-$run" "$V/v1/campaigns/$hot/claims")
r_rps=$(rps_of <<<"$r"); r_p99=$(p99_of <<<"$r")
echo "sold-out refusals ..." >&2
s=$(oha_run -m POST -H "Authorization: Bearer $latecomer" -H "Idempotency-Key: late-$run" "$V/v1/campaigns/$soldout/claims")
s_rps=$(rps_of <<<"$s"); s_p99=$(p99_of <<<"$s")
echo "public reads ..." >&2
p=$(oha_run "$V/v1/campaigns/$hot"); p_rps=$(rps_of <<<"$p"); p_p99=$(p99_of <<<"$p")
audit=$(curl -fsS "$V/v1/admin/campaigns/$hot/audit" -H "Authorization: Bearer $ADMIN" | python3 -c 'import json,sys; print(json.load(sys.stdin)["ok"])')
rm -f "$tokens"

ratio() { python3 -c "print(f'{$1/$2:.2f}')"; }
out=results/quick.md
{
  echo "Measured $(date -u +%Y-%m-%dT%H:%MZ) on $(nproc) cores ($(uname -m)), service, Postgres, Redis and load tool on one machine;"
  echo "${DURATION}s per row, ${CONNS} connections, one run. Command: \`loadtest/quick.sh\`."
  echo
  echo "| path | tool | requests/s | ratio to /healthz | p99 ms | notes |"
  echo "|---|---|---:|---:|---:|---|"
  echo "| \`GET /healthz\` (ceiling) | oha | $h_rps | 1.00 | $h_p99 | |"
  echo "| grants, one hot campaign | wrk + grants.lua | $g_rps | $(ratio "$g_rps" "$h_rps") | $g_p99 | $g_ok granted, $g_other other answers; audit ok: $audit |"
  echo "| idempotent replays | oha | $r_rps | $(ratio "$r_rps" "$h_rps") | $r_p99 | one key, one user |"
  echo "| refusals, sold-out campaign | oha | $s_rps | $(ratio "$s_rps" "$h_rps") | $s_p99 | answered from memory |"
  echo "| public campaign reads | oha | $p_rps | $(ratio "$p_rps" "$h_rps") | $p_p99 | cached |"
} > "$out"
cat "$out"
