#!/bin/sh
# Nagios/Icinga-style check (also fine for cron or a node exporter textfile):
# runs `dcmesh health --json` and maps it to OK / WARNING / CRITICAL / UNKNOWN.
#   check-dcmesh.sh [--config /var/lib/dcmesh/dcmesh.yaml] [--timeout 10s]
# Exit 0 OK, 1 WARNING (degraded), 2 CRITICAL (critical, agent not running),
# 3 UNKNOWN (cannot check: permission denied, no answer within --timeout, or
# dcmesh itself failed to run).
out=$(dcmesh health --json "$@" 2>/dev/null)
code=$?
case $code in
  0) state=OK ;;
  1) state=WARNING ;;
  2) state=CRITICAL ;;
  3) state=UNKNOWN ;;
  *) echo "UNKNOWN - dcmesh health failed to run (exit $code)"; exit 3 ;;
esac
if command -v jq >/dev/null 2>&1 && [ -n "$out" ]; then
  site=$(printf '%s' "$out" | jq -r '.site')
  reasons=$(printf '%s' "$out" | jq -r '.reasons | join("; ")')
  echo "$state - dcmesh ${site:-site}: ${reasons:-all peers up, routes programmed}"
else
  echo "$state - dcmesh health exit $code"
fi
exit "$code"
