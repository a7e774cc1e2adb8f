#!/usr/bin/env bash
# Memory under connection bursts: does the sidecar's RSS come back after
# bursts of concurrent client connections?
#
# For each variant: start the release binary (small config, free loopback
# ports, a local nginx as the app), take its idle RSS after a short
# warm-up, run MEMORY_ROUNDS bursts of MEMORY_CONNS connections held open
# at once (GETs, ~8 KiB cookies, 16 KiB POSTs, slowly read 256 KiB
# downloads, idle connections, half-sent request heads), then take its RSS
# after MEMORY_QUIET seconds of quiet. Reports idle, peak (VmHWM and a
# 100 ms VmRSS sampler) and after, from /proc/PID/status.
#
# Usage: bash bench/memory.sh [VARIANT ...]
#   VARIANT = LABEL or "LABEL=VAR=VALUE[ VAR=VALUE...]": environment for
#   the sidecar, e.g. "arena2=MALLOC_ARENA_MAX=2" or
#   "jemalloc-preload=LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2";
#   SIDECAR_BIN=PATH among them runs another binary. Default: "built", the
#   release binary as built.
# Knobs: MEMORY_CONNS (2000), MEMORY_ROUNDS (5), MEMORY_QUIET (5 s: when
#   "after" is taken), MEMORY_SETTLE (20 s: how long RSS is watched after),
#   MEMORY_MAX_RETAINED_MIB (32): a variant whose RSS after the bursts is
#   more than this above its idle RSS fails, and the script exits 1.
#   SIDECAR_BIN: the binary for every variant (no cargo build).
#   MEMORY_WRK_SECONDS (10; 0 = skip): then, on a fresh start of each
#   variant, wrk -t1 GET /small -c32 and GET /big (256 KiB) -c8 for that
#   long, so an allocator that saves memory but costs throughput shows.
# Results: a markdown table on stdout and in bench/memory-results.md.
set -euo pipefail
BENCH_NAME=memory
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CONNS=${MEMORY_CONNS:-2000}
ROUNDS=${MEMORY_ROUNDS:-5}
QUIET=${MEMORY_QUIET:-5}
SETTLE=${MEMORY_SETTLE:-20}
MAX_RETAINED=${MEMORY_MAX_RETAINED_MIB:-32}
WRK_SECONDS=${MEMORY_WRK_SECONDS:-10}
RESULTS="$BENCH_DIR/memory-results.md"
VARIANTS=("$@")
((${#VARIANTS[@]})) || VARIANTS=(built)

# Client and upstream sockets of 2000 connections, and then some.
ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
(($(ulimit -n) >= 2 * CONNS + 200)) || die "ulimit -n $(ulimit -n) is too low for $CONNS connections"

if ((WRK_SECONDS > 0)); then need_tools wrk; else need_tools; fi
build_release
DEFAULT_BIN=$SIDECAR
make_tmp
read -r APP_PORT SIDECAR_PORT ADMIN_PORT < <(free_ports 3)
log "ports: app=$APP_PORT sidecar=$SIDECAR_PORT admin=$ADMIN_PORT"
start_app "$APP_PORT"
write_sidecar_config "$SIDECAR_PORT" "$ADMIN_PORT" "$APP_PORT"

rows=()
wrk_rows=()
failed=0
for variant in "${VARIANTS[@]}"; do
    label=${variant%%=*}
    envs=()
    SIDECAR=$DEFAULT_BIN
    if [[ $variant == *=* ]]; then
        read -r -a pairs <<<"${variant#*=}"
        for pair in "${pairs[@]}"; do
            case $pair in
                SIDECAR_BIN=*) SIDECAR=${pair#SIDECAR_BIN=} ;;
                *=*) envs+=("$pair") ;;
                *) die "variant $variant: $pair is not VAR=VALUE" ;;
            esac
        done
    fi
    [[ -x $SIDECAR ]] || die "variant $label: $SIDECAR is not an executable"
    log "variant $label: $SIDECAR ${envs[*]:-}"
    start_sidecar "$TMP/sidecar-$label.log" "${envs[@]}"
    threads=$(awk '/^Threads:/ {print $2}' "/proc/$SIDECAR_PID/status")
    json=$(python3 "$BENCH_DIR/traffic.py" burst --port "$SIDECAR_PORT" --pid "$SIDECAR_PID" \
        --conns "$CONNS" --rounds "$ROUNDS" --quiet "$QUIET" --settle "$SETTLE" | tail -n 1)
    stop_sidecar
    row=$(python3 - "$label" "$MAX_RETAINED" "$threads" "${envs[*]:-}" "$json" <<'EOF'
import json, sys
label, limit, threads, env, r = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4], json.loads(sys.argv[5])
verdict = "PASS" if r["retained_mib"] <= limit else "FAIL"
errors = sum(r["errors"].values())
statuses = ", ".join(f"{k}: {v}" for k, v in r["status"].items())
rounds = " → ".join(str(x) for x in r["after_each_round_mib"])
settle = " · ".join(f"{t}s {v}" for t, v in r["settle_mib"].items())
print(f"| {label} | {env or '—'} | {threads} | {r['idle_mib']} | {r['peak_mib']} | {r['after_mib']} "
      f"| {r['retained_mib']:+.1f} | **{verdict}** | {rounds} | {settle} | {statuses} | {errors} |")
print(verdict)
EOF
)
    rows+=("$(head -n 1 <<<"$row")")
    [[ $(tail -n 1 <<<"$row") == PASS ]] || failed=1
    if ((WRK_SECONDS > 0)); then
        start_sidecar "$TMP/sidecar-$label-wrk.log" "${envs[@]}"
        wrk -t1 -c32 -d2s "http://127.0.0.1:$SIDECAR_PORT/small" >/dev/null  # warm-up
        small=$(wrk -t1 -c32 -d"${WRK_SECONDS}s" "http://127.0.0.1:$SIDECAR_PORT/small" | awk '/^Requests\/sec/ {print $2}')
        big=$(wrk -t1 -c8 -d"${WRK_SECONDS}s" "http://127.0.0.1:$SIDECAR_PORT/big" | awk '/^Requests\/sec/ {print $2}')
        rss=$(awk '/^VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$SIDECAR_PID/status")
        stop_sidecar
        wrk_rows+=("$label $small $big $rss")
        log "variant $label: wrk /small $small req/s, /big $big req/s, RSS after $rss MiB"
    fi
done

{
    echo "# stripe-sidecar: RSS under connection bursts"
    echo
    echo "$(date -u '+%Y-%m-%d %H:%M UTC') · nproc $(nproc) · commit $(cd "$REPO" && git rev-parse --short HEAD)$(cd "$REPO" && git diff --quiet HEAD -- src Cargo.toml || echo '+dirty') · $ROUNDS bursts of $CONNS connections held open at once · RSS after = $QUIET s after the last burst · loadavg $(cut -d' ' -f1-3 /proc/loadavg)"
    echo
    echo "| variant | env | threads | idle RSS MiB | peak MiB | after MiB | after − idle | ≤ $MAX_RETAINED MiB | RSS 2 s after each burst | RSS N s after the last | statuses | client errors |"
    echo "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | --- | --- | --- | ---: |"
    printf '%s\n' "${rows[@]}"
    if ((${#wrk_rows[@]})); then
        echo
        echo "Throughput, wrk -t1 for ${WRK_SECONDS} s on a fresh start of each variant (ratio: to the first variant; ±10 % is noise on this box):"
        echo
        echo "| variant | GET /small -c32 req/s | ratio | GET /big -c8 req/s | ratio | RSS after wrk MiB |"
        echo "| --- | ---: | ---: | ---: | ---: | ---: |"
        printf '%s\n' "${wrk_rows[@]}" | awk 'NR == 1 {s0 = $2; b0 = $3}
            {printf "| %s | %.0f | %.2f× | %.0f | %.2f× | %s |\n", $1, $2, $2 / s0, $3, $3 / b0, $4}'
    fi
} | tee "$RESULTS"
exit "$failed"
