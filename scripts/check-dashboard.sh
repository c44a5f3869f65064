#!/usr/bin/env bash
# Checks docs/dashboards/steadfast.json against a real Prometheus fed by a real lab run: every
# query of every panel must return at least one series.
#
# 1. starts the distribution's Prometheus (scripts/install-tools.sh installs it) on a free
#    loopback port, with an empty TSDB in a temporary directory, scraping the lab every second;
# 2. runs the release lab with `--metrics-addr` (by default `--quick --check`: this one run is
#    also CI's lab run, targets checked), which serves /metrics while its scenarios run and, at
#    the end, waits for a final scrape;
# 3. runs each panel's PromQL through Prometheus's HTTP API over the run's time range
#    (/api/v1/query_range, step 1 s, as Grafana draws a panel: the gauges of a scenario's layers
#    exist only while that scenario runs, so an instant query at the end would miss them), with
#    Grafana's variables substituted ($__rate_interval = 4 × the scrape interval, $job and
#    $instance = .*);
# 4. prints each panel, its queries and their series counts, and fails if any query returns no
#    series (or does not parse).
#
# Usage: scripts/check-dashboard.sh [LAB-ARGS...]   (default LAB-ARGS: --quick --check)
#   LAB         the lab command (default: cargo run --release -q -p steadfast-lab --)
#   DASHBOARD   the dashboard (default: docs/dashboards/steadfast.json)
#   KEEP_PROMETHEUS=1  leave Prometheus running at the end (prints its URL) to look at the run
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
dashboard="${DASHBOARD:-$root/docs/dashboards/steadfast.json}"
lab_args=("$@")
[ ${#lab_args[@]} -gt 0 ] || lab_args=(--quick --check)
# shellcheck disable=SC2206
lab=(${LAB:-cargo run --release -q -p steadfast-lab --})

command -v prometheus >/dev/null || {
  echo "check-dashboard: prometheus not found; run scripts/install-tools.sh" >&2
  exit 1
}
[ -f "$dashboard" ] || { echo "check-dashboard: no $dashboard" >&2; exit 1; }

work="$(mktemp -d "${TMPDIR:-/tmp}/steadfast-dashboard.XXXXXX")"
prom_pid=""
cleanup() {
  if [ -n "$prom_pid" ] && [ "${KEEP_PROMETHEUS:-0}" != 1 ]; then
    kill "$prom_pid" 2>/dev/null || true
    wait "$prom_pid" 2>/dev/null || true
    rm -rf "$work"
  fi
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
lab_port="$(free_port)"
prom_port="$(free_port)"
prom="http://127.0.0.1:$prom_port"

cat >"$work/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: steadfast-lab
    static_configs:
      - targets: ["127.0.0.1:$lab_port"]
EOF

echo "check-dashboard: Prometheus $(prometheus --version 2>&1 | sed -n '1s/.*version \([^ ]*\).*/\1/p') on $prom"
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/data" \
  --web.listen-address="127.0.0.1:$prom_port" >"$work/prometheus.log" 2>&1 &
prom_pid=$!
for _ in $(seq 1 100); do
  curl -sf "$prom/-/ready" >/dev/null 2>&1 && break
  kill -0 "$prom_pid" 2>/dev/null || { cat "$work/prometheus.log" >&2; exit 1; }
  sleep 0.1
done
curl -sf "$prom/-/ready" >/dev/null || { echo "check-dashboard: Prometheus not ready" >&2; exit 1; }

echo "check-dashboard: ${lab[*]} ${lab_args[*]} --metrics-addr 127.0.0.1:$lab_port"
start="$(date +%s)"
lab_status=0
"${lab[@]}" "${lab_args[@]}" --metrics-addr "127.0.0.1:$lab_port" || lab_status=$?
end="$(date +%s)"
if [ "$lab_status" != 0 ]; then
  echo "check-dashboard: the lab failed (exit $lab_status)" >&2
  exit "$lab_status"
fi

python3 - "$dashboard" "$prom" "$start" "$end" <<'PY'
import json, re, sys, urllib.parse, urllib.request

dashboard, prom, start, end = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
variables = {
    "$__rate_interval": "4s",
    "${__rate_interval}": "4s",
    "$__interval": "1s",
    "${__interval}": "1s",
    "$__range": f"{max(end - start, 1)}s",
    "${__range}": f"{max(end - start, 1)}s",
    "${job:regex}": ".*", "$job": ".*", "${job}": ".*",
    "${instance:regex}": ".*", "$instance": ".*", "${instance}": ".*",
}

def substitute(expr):
    for k in sorted(variables, key=len, reverse=True):
        expr = expr.replace(k, variables[k])
    # A Grafana variable left over ($name, ${name}); label_replace's "$1" is not one.
    if re.search(r"\$(\{|[A-Za-z_])", expr):
        raise ValueError(f"unknown variable left in {expr!r}")
    return expr

def panels(items):
    for p in items:
        if p.get("type") == "row":
            yield p
            yield from panels(p.get("panels", []))
        else:
            yield p

with open(dashboard) as f:
    board = json.load(f)
failed, checked, row = [], 0, None
for panel in panels(board["panels"]):
    if panel.get("type") == "row":
        row = panel["title"]
        print(f"\n[{row}]")
        continue
    targets = [t for t in panel.get("targets", []) if t.get("expr")]
    if not targets:
        failed.append(f"{panel.get('title')}: no query")
        continue
    for t in targets:
        checked += 1
        try:
            expr = substitute(t["expr"])
            q = urllib.parse.urlencode({"query": expr, "start": start - 2, "end": end + 2, "step": "1"})
            with urllib.request.urlopen(f"{prom}/api/v1/query_range?{q}", timeout=30) as r:
                body = json.load(r)
            n = len(body["data"]["result"]) if body.get("status") == "success" else 0
            error = body.get("error")
        except Exception as e:  # a query that does not parse answers 400
            n, error = 0, getattr(e, "read", lambda: str(e).encode())().decode(errors="replace")
        mark = "ok  " if n else "FAIL"
        print(f"  {mark} {panel['title']} [{t.get('refId', '?')}]: {n} series")
        if not n:
            print(f"       {t['expr']}" + (f"\n       error: {error}" if error else ""))
            failed.append(f"{panel['title']} [{t.get('refId', '?')}]")
print(f"\ncheck-dashboard: {checked} queries, {len(failed)} without series")
if failed:
    print("check-dashboard: FAILED: " + ", ".join(failed), file=sys.stderr)
    sys.exit(1)
PY
if [ "${KEEP_PROMETHEUS:-0}" = 1 ]; then
  echo "check-dashboard: Prometheus left running on $prom (pid $prom_pid, data in $work)"
fi
