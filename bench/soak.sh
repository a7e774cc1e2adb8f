#!/usr/bin/env bash
# Soak: SOAK_MINUTES of mixed traffic through the release binary against a
# local nginx app, watching for memory, fd and error creep. Not run in CI.
#
# Traffic (bench/traffic.py soak, loopback only, stops by itself):
#   - SOAK_CLIENTS keep-alive clients: proxied GETs (some with 2 KiB
#     cookies) and POSTs (100 B to 32 KiB bodies), 200 a connection;
#   - two clients taking turns at: 8 MiB streamed downloads, 256 KiB
#     downloads read slowly, malformed requests (400), request heads over
#     the 64 KiB limit (431), chunked webhooks with a fresh timestamp and a
#     wrong signature (400), a GET to the webhook route (405), an anonymous
#     checkout with no Stripe key (503);
#   - every SOAK_BURST_EVERY seconds a burst of SOAK_BURST_CONNS
#     connections held open at once (as in bench/memory.sh).
# Every 10 s: VmRSS, open fds (/proc/PID/fd) and, from /metrics,
# stripe_sidecar_requests_total by status and
# stripe_sidecar_upstream_errors_total.
#
# It fails (exit 1) unless every bound holds:
#   - median RSS of the last third of the samples is at most
#     SOAK_MAX_RSS_GROWTH_MIB (16) above that of the first third (a leak
#     grows steadily; a burst's peak comes and goes);
#   - RSS 20 s after the traffic stops is at most SOAK_MAX_RETAINED_MIB (32)
#     above RSS before it (the memory.sh goal);
#   - median open fds, last third, at most SOAK_MAX_FD_GROWTH (32) above the
#     first third's; 20 s after the traffic, at most 144 above the start
#     (the upstream pool keeps up to 128 idle connections for 60-120 s);
#   - no unexpected client outcome (a wrong status, a reset, a timeout),
#     at most SOAK_MAX_ERRORS (0); upstream_errors_total does not grow; no
#     5xx but checkout's expected 503.
#
# Usage: bash bench/soak.sh   (SOAK_MINUTES=10 by default; SIDECAR_BIN=PATH
#   runs that binary instead of building). Results: markdown on stdout and
#   in bench/soak-results.md.
set -euo pipefail
BENCH_NAME=soak
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

MINUTES=${SOAK_MINUTES:-10}
CLIENTS=${SOAK_CLIENTS:-16}
BURST_EVERY=${SOAK_BURST_EVERY:-60}
BURST_CONNS=${SOAK_BURST_CONNS:-2000}
RESULTS="$BENCH_DIR/soak-results.md"

ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
(($(ulimit -n) >= 2 * BURST_CONNS + 500)) || die "ulimit -n $(ulimit -n) is too low"

need_tools
build_release
make_tmp
read -r APP_PORT SIDECAR_PORT ADMIN_PORT < <(free_ports 3)
log "ports: app=$APP_PORT sidecar=$SIDECAR_PORT admin=$ADMIN_PORT; $MINUTES min"
start_app "$APP_PORT"
write_sidecar_config "$SIDECAR_PORT" "$ADMIN_PORT" "$APP_PORT"
# Access lines are written (their cost is part of the soak) but not kept:
# millions of them would fill the disk. Everything else is kept.
ACCESS_FILTER='"target":"access"'
start_sidecar >(grep --line-buffered -v "$ACCESS_FILTER" >"$TMP/sidecar.log")

json=$(python3 "$BENCH_DIR/traffic.py" soak --port "$SIDECAR_PORT" --admin "$ADMIN_PORT" \
    --pid "$SIDECAR_PID" --minutes "$MINUTES" --clients "$CLIENTS" \
    --burst-every "$BURST_EVERY" --burst-conns "$BURST_CONNS" \
    --max-rss-growth "${SOAK_MAX_RSS_GROWTH_MIB:-16}" --max-retained "${SOAK_MAX_RETAINED_MIB:-32}" \
    --max-fd-growth "${SOAK_MAX_FD_GROWTH:-32}" --max-errors "${SOAK_MAX_ERRORS:-0}" | tail -n 1)
warnings=$(grep -c '"level":"\(warn\|error\)"' "$TMP/sidecar.log" || true)
threads=$(awk '/^Threads:/ {print $2}' "/proc/$SIDECAR_PID/status")
stop_sidecar

python3 - "$json" "$MINUTES" "$warnings" "$threads" "$(cd "$REPO" && git rev-parse --short HEAD)$(cd "$REPO" && git diff --quiet HEAD -- src Cargo.toml || echo '+dirty')" <<'EOF' | tee "$RESULTS"
import json, sys, time
r, minutes, warnings, threads, commit = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
st = r["stats"]
print("# stripe-sidecar: soak\n")
print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} · commit {commit} · {minutes} min · "
      f"sidecar threads {threads} · {st['requests']} keep-alive requests, {st['misc']} others "
      f"({st['downloaded'] / 2**20:.0f} MiB downloaded), {st['bursts']} bursts · "
      f"warn/error log lines: {warnings}\n")
print(f"**{'PASS' if r['ok'] else 'FAIL'}**\n")
print("| bound | measured | |\n| --- | ---: | --- |")
for c in r["checks"]:
    print(f"| {c['bound']} | {c['measured']} | {'ok' if c['ok'] else '**FAIL**'} |")
print("\n## Samples (every 10 s; counters since the start of the traffic)\n")
print("| t s | RSS MiB | open fds | requests | non-2xx | unexpected 5xx | upstream errors | client errors |")
print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for s in r["samples"]:
    print(f"| {s['t']} | {s['rss_mib']} | {s['fds']} | {s['requests']} | {s['non2xx']} | "
          f"{s['unexpected_5xx']} | {s['upstream_errors']} | {s['client_errors']} |")
print(f"\nBefore the traffic: RSS {r['base_rss_mib']} MiB, {r['base_fds']} fds. "
      f"20 s after it: RSS {r['end_rss_mib']} MiB, {r['end_fds']} fds; peak RSS (VmHWM) {r['end_hwm_mib']} MiB.\n")
print("stripe_sidecar_requests_total by action:status: " +
      ", ".join(f"{k} {v}" for k, v in sorted(r["requests"].items())) + "  ")
print("Client-side statuses: " + ", ".join(f"{k}: {v}" for k, v in r["status"].items()) + "  ")
print("Client-side unexpected outcomes: " + (", ".join(f"{k}: {v}" for k, v in r["errors"].items()) or "none"))
sys.exit(0 if r["ok"] else 1)
EOF
