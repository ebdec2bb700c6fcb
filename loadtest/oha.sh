#!/usr/bin/env bash
# oha recipes for the paths one fixed request can drive, against a running voucherd
# (scripts/dev): /healthz, a public campaign read, and the idempotent replay path (one
# key, one user: every request after the first is a replay). Each is printed as oha's
# own summary; `loadtest/bench` gives the same paths as ratios in one run.
#   DURATION=10s CONNS=64 loadtest/oha.sh
set -euo pipefail
cd "$(dirname "$0")/.."
V=${V:-http://127.0.0.1:8080}
ADMIN=${ADMIN_TOKEN:-dev-only-admin-token}
export JWT_SECRET=${JWT_SECRET:-dev-only-jwt-secret-change-me-0123456789}
DURATION=${DURATION:-10s}
CONNS=${CONNS:-64}
command -v oha >/dev/null || { echo "oha missing: cargo install --locked oha" >&2; exit 1; }

CID=$(curl -fsS -X POST "$V/v1/admin/campaigns" -H "Authorization: Bearer $ADMIN" \
  -H "Idempotency-Key: oha-$RANDOM$RANDOM" -H 'Content-Type: application/json' \
  -d '{"name":"oha","total_stock":1000000,"ends_at":"2099-01-01T00:00:00Z","voucher":{"discount":{"type":"fixed","amount":1000,"currency":"VND"},"valid_for_seconds":3600}}' \
  | sed -E 's/.*"id":"([^"]+)".*/\1/')
TOKEN=$(cargo run -q --release --bin voucherd -- token --sub "oha-$RANDOM")
KEY="oha-replay-$RANDOM$RANDOM"

echo "## GET /healthz"
oha -z "$DURATION" -c "$CONNS" --no-tui "$V/healthz"
echo "## GET /v1/campaigns/{id} (public, cached)"
oha -z "$DURATION" -c "$CONNS" --no-tui "$V/v1/campaigns/$CID"
echo "## POST /v1/campaigns/{id}/claims, one key (replays)"
oha -z "$DURATION" -c "$CONNS" --no-tui -m POST -H "Authorization: Bearer $TOKEN" -H "Idempotency-Key: $KEY" \
  "$V/v1/campaigns/$CID/claims"
