#!/usr/bin/env bash
# Benchmark: the same nginx backend reached three ways, in one run —
#   direct  : wrk -> backend
#   nginx   : wrk -> nginx reverse proxy (keepalive pool) -> backend
#   sidecar : wrk -> stripe-sidecar -> backend
# plus a streamed 1 GiB download through the sidecar (its peak RSS must not
# grow with the body). Results: markdown on stdout and in bench/results.md.
#
# Usage: bash bench/run.sh
# Knobs (environment): BENCH_DURATION (seconds per measured run, default 10),
#   BENCH_WARMUP (seconds, default 2), BENCH_SMALL_CONNS (32), BENCH_BIG_CONNS (8).
set -euo pipefail

DURATION=${BENCH_DURATION:-10}
WARMUP=${BENCH_WARMUP:-2}
SMALL_CONNS=${BENCH_SMALL_CONNS:-32}
BIG_CONNS=${BENCH_BIG_CONNS:-8}
HWM_LIMIT_MIB=64  # allowed sidecar VmHWM growth during the 1 GiB download

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)
RESULTS="$BENCH_DIR/results.md"

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "FATAL: $*"; exit 1; }

# ---------------------------------------------------------------- cleanup --
TMP=""
STARTED_PIDS=()   # every long-running process we start, in start order
POLICY_RC_CREATED=0

stop_pid() {  # stop_pid PID SIGNAL: signal, wait up to 5 s, then SIGKILL
    local pid=$1 sig=$2 i
    kill -0 "$pid" 2>/dev/null || return 0
    kill -s "$sig" "$pid" 2>/dev/null || true
    for i in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "pid $pid ignored SIG$sig for 5 s; SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$? i
    set +e
    # Reverse start order: proxies before the backend.
    for ((i = ${#STARTED_PIDS[@]} - 1; i >= 0; i--)); do
        stop_pid "${STARTED_PIDS[$i]}" TERM
    done
    if [[ $POLICY_RC_CREATED == 1 ]]; then rm -f /usr/sbin/policy-rc.d; fi
    if [[ $rc != 0 && -n $TMP && -d $TMP ]]; then
        for f in "$TMP"/*.log; do
            [[ -f $f ]] || continue
            log "---- tail of $(basename "$f") ----"
            tail -n 20 "$f" >&2
        done
    fi
    if [[ -n $TMP && -d $TMP ]]; then rm -rf "$TMP"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ----------------------------------------------------------- dependencies --
need_apt=()
command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]] || need_apt+=(nginx)
command -v wrk >/dev/null 2>&1 || need_apt+=(wrk)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3)
if ((${#need_apt[@]})); then
    log "installing with apt-get: ${need_apt[*]}"
    [[ $EUID == 0 ]] || die "need root to apt-get install ${need_apt[*]}"
    # Keep the Debian nginx package from starting its own service on :80.
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        POLICY_RC_CREATED=1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    pkgs=()
    for p in "${need_apt[@]}"; do
        if [[ $p == nginx ]]; then
            # nginx-light where it is a real package, else nginx.
            if apt-get install -y -qq --no-install-recommends nginx-light >&2; then continue; fi
            p=nginx
        fi
        pkgs+=("$p")
    done
    if ((${#pkgs[@]})); then apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >&2; fi
    if [[ $POLICY_RC_CREATED == 1 ]]; then rm -f /usr/sbin/policy-rc.d; POLICY_RC_CREATED=0; fi
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[[ -x $NGINX ]] || die "nginx not found after install"
command -v wrk >/dev/null || die "wrk not found after install"

# ------------------------------------------------------------------ build --
log "cargo build --release (may wait for other builds' lock)"
(cd "$REPO" && cargo build --release >&2)
SIDECAR="$REPO/target/release/stripe-sidecar"
[[ -x $SIDECAR ]] || die "$SIDECAR missing after build"

# ------------------------------------------------------------------ setup --
TMP=$(mktemp -d /tmp/stripe-sidecar-bench.XXXXXX)
cd "$TMP"   # nothing the bench writes can land in the repo
mkdir -p "$TMP/www"
head -c $((1024 * 1024)) /dev/urandom >"$TMP/www/big"   # 1 MiB
truncate -s 1G "$TMP/www/huge"                            # 1 GiB, sparse
BIG_SIZE=$(stat -c %s "$TMP/www/big")
HUGE_SIZE=$(stat -c %s "$TMP/www/huge")

# Four free loopback ports, held open together so they are distinct.
read -r P_BACKEND P_PROXY P_SIDECAR P_ADMIN < <(python3 - <<'EOF'
import socket
socks = []
for _ in range(4):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks:
    s.close()
EOF
)
log "ports: backend=$P_BACKEND nginx-proxy=$P_PROXY sidecar=$P_SIDECAR admin=$P_ADMIN"

nginx_head() {  # nginx_head NAME: the part of a conf shared by both nginx instances
    local name=$1
    mkdir -p "$TMP/$name-tmp"
    cat <<EOF
daemon off;
master_process on;
worker_processes 1;
$([[ $EUID == 0 ]] && echo "user root;" || true)
pid $TMP/$name.pid;
error_log $TMP/$name-error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 65;
    keepalive_requests 1000000;
    client_body_temp_path $TMP/$name-tmp/body;
    proxy_temp_path $TMP/$name-tmp/proxy;
    fastcgi_temp_path $TMP/$name-tmp/fastcgi;
    uwsgi_temp_path $TMP/$name-tmp/uwsgi;
    scgi_temp_path $TMP/$name-tmp/scgi;
EOF
}

{
    nginx_head backend
    cat <<EOF
    server {
        listen 127.0.0.1:$P_BACKEND;
        root $TMP/www;
        location = /small { default_type text/plain; return 200 "ok\n"; }
        location = /big { }
        location = /huge { }
        location = /upload { client_max_body_size 0; return 200 "up\n"; }
    }
}
EOF
} >"$TMP/backend.conf"

{
    nginx_head proxy
    cat <<EOF
    upstream backend {
        server 127.0.0.1:$P_BACKEND;
        keepalive 64;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$P_PROXY;
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$http_host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
            proxy_set_header X-Forwarded-Host \$host;
        }
    }
}
EOF
} >"$TMP/proxy.conf"

cat >"$TMP/sidecar.toml" <<EOF
[server]
listen = "127.0.0.1:$P_SIDECAR"
admin_listen = "127.0.0.1:$P_ADMIN"
worker_threads = 1
access_log = false
log_format = "json"
shutdown_drain_seconds = 0
shutdown_grace_seconds = 3

[upstream]
url = "http://127.0.0.1:$P_BACKEND"
EOF

# -------------------------------------------------------------- processes --
wait_http() {  # wait_http URL PID WHAT: until URL answers 200 (10 s max)
    local url=$1 pid=$2 what=$3 i code
    for i in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || die "$what exited during start-up"
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$url" || true)
        [[ $code == 200 ]] && return 0
        sleep 0.1
    done
    die "$what: $url not 200 after 10 s (last: $code)"
}

start_nginx() {  # start_nginx NAME -> sets NGINX_PID
    local name=$1
    "$NGINX" -t -q -p "$TMP" -c "$TMP/$name.conf" -e "$TMP/$name-error.log" \
        || die "nginx -t failed for $name"
    "$NGINX" -p "$TMP" -c "$TMP/$name.conf" -e "$TMP/$name-error.log" \
        >"$TMP/$name-stdout.log" 2>&1 &
    NGINX_PID=$!
    STARTED_PIDS+=("$NGINX_PID")
}

start_nginx backend; BACKEND_PID=$NGINX_PID
wait_http "http://127.0.0.1:$P_BACKEND/small" "$BACKEND_PID" "backend nginx"
start_nginx proxy; PROXY_PID=$NGINX_PID
wait_http "http://127.0.0.1:$P_PROXY/small" "$PROXY_PID" "proxy nginx"

"$SIDECAR" --check --config "$TMP/sidecar.toml" >"$TMP/sidecar-check.log" 2>&1 \
    || { cat "$TMP/sidecar-check.log" >&2; die "stripe-sidecar --check rejected the bench config"; }
"$SIDECAR" --config "$TMP/sidecar.toml" >"$TMP/sidecar.log" 2>&1 &
SIDECAR_PID=$!
STARTED_PIDS+=("$SIDECAR_PID")
wait_http "http://127.0.0.1:$P_ADMIN/readyz" "$SIDECAR_PID" "stripe-sidecar"

declare -A URL=(
    [direct]="http://127.0.0.1:$P_BACKEND"
    [nginx]="http://127.0.0.1:$P_PROXY"
    [sidecar]="http://127.0.0.1:$P_SIDECAR"
)
TARGETS=(direct nginx sidecar)

# Sanity: every target serves both bodies correctly before any load.
for t in "${TARGETS[@]}"; do
    body=$(curl -sS --max-time 5 "${URL[$t]}/small")
    [[ $body == ok ]] || die "$t /small answered '$body'"
    got=$(curl -sS --max-time 10 -o /dev/null -w '%{http_code} %{size_download}' "${URL[$t]}/big")
    [[ $got == "200 $BIG_SIZE" ]] || die "$t /big: got '$got', want '200 $BIG_SIZE'"
    cmp -s <(curl -sS --max-time 10 "${URL[$t]}/big") "$TMP/www/big" || die "$t /big: body differs"
done
log "sanity checks passed on all three targets"

# ------------------------------------------------------------ measurement --
CLK_TCK=$(getconf CLK_TCK)

pids_of() {  # the processes that make up a target's proxy (nginx: master + workers)
    case $1 in
        direct) echo "$BACKEND_PID" $(ps -o pid= --ppid "$BACKEND_PID" || true) ;;
        nginx) echo "$PROXY_PID" $(ps -o pid= --ppid "$PROXY_PID" || true) ;;
        sidecar) echo "$SIDECAR_PID" ;;
    esac
}
status_kib() {  # status_kib FIELD PID...: sum of /proc/PID/status FIELD in KiB
    local field=$1 total=0 pid v
    shift
    for pid in "$@"; do
        v=$(awk -v f="$field:" '$1 == f { print $2 }' "/proc/$pid/status" 2>/dev/null || true)
        total=$((total + ${v:-0}))
    done
    echo "$total"
}
cpu_ticks() {  # utime+stime of PIDs
    local total=0 pid v
    for pid in "$@"; do
        v=$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | awk '{ print $12 + $13 }' || true)
        total=$((total + ${v:-0}))
    done
    echo "$total"
}
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

# wrk output -> "rps p50_ms p99_ms requests socket_errors non2xx"
parse_wrk() {
    awk '
    function ms(v) {
        if (v ~ /us$/) return (v + 0) / 1000
        if (v ~ /ms$/) return v + 0
        if (v ~ /s$/)  return (v + 0) * 1000
        if (v ~ /m$/)  return (v + 0) * 60000
        return v + 0
    }
    $1 == "50%" { p50 = ms($2) }
    $1 == "99%" { p99 = ms($2) }
    / requests in / { reqs = $1 }
    /^Requests\/sec:/ { rps = $2 }
    /Socket errors:/ { gsub(/,/, ""); errs = $4 + $6 + $8 + $10 }
    /Non-2xx or 3xx responses:/ { non2xx = $NF }
    END { printf "%s %s %s %s %d %d\n", rps, p50, p99, reqs, errs, non2xx }'
}

declare -A R_RPS R_P50 R_P99 R_REQS R_ERRS R_NON2XX R_RSS0 R_RSS1 R_CPU R_TXT
WORKLOADS=(small big)
declare -A W_PATH=([small]=/small [big]=/big)
declare -A W_CONNS=([small]=$SMALL_CONNS [big]=$BIG_CONNS)

metric_lines() {  # the sidecar's request/upstream-error counters
    curl -sS --max-time 5 "http://127.0.0.1:$P_ADMIN/metrics" \
        | grep -E '^stripe_sidecar_(requests_total|upstream_errors_total)' || true
}
METRICS_BEFORE=$(metric_lines)

# Other CPU-hungry processes (a concurrent cargo build skews everything).
busy_others() {
    ps -eo pid=,pcpu=,comm= --sort=-pcpu | awk -v self=$$ \
        '$2 >= 20 && $3 != "wrk" && $3 != "nginx" && $3 != "stripe-sidecar" && $3 != "ps" { printf "%s(%s%%) ", $3, $2 }' \
        | head -c 200
}
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
BUSY_BEFORE=$(busy_others || true)

for w in "${WORKLOADS[@]}"; do
    for t in "${TARGETS[@]}"; do
        url="${URL[$t]}${W_PATH[$w]}"
        conns=${W_CONNS[$w]}
        # shellcheck disable=SC2046
        R_RSS0[$t,$w]=$(status_kib VmRSS $(pids_of "$t"))
        log "$t $w: warm-up ${WARMUP}s, then wrk -t1 -c$conns -d${DURATION}s $url"
        timeout $((WARMUP + 30)) wrk -t1 -c"$conns" -d"${WARMUP}s" "$url" >/dev/null
        # shellcheck disable=SC2046
        cpu0=$(cpu_ticks $(pids_of "$t"))
        out=$(timeout $((DURATION + 30)) wrk -t1 -c"$conns" -d"${DURATION}s" --latency "$url")
        # shellcheck disable=SC2046
        cpu1=$(cpu_ticks $(pids_of "$t"))
        # shellcheck disable=SC2046
        R_RSS1[$t,$w]=$(status_kib VmRSS $(pids_of "$t"))
        R_TXT[$t,$w]=$out
        read -r R_RPS[$t,$w] R_P50[$t,$w] R_P99[$t,$w] R_REQS[$t,$w] R_ERRS[$t,$w] R_NON2XX[$t,$w] \
            < <(parse_wrk <<<"$out")
        # CPU ms of the process under test per 1000 requests.
        R_CPU[$t,$w]=$(awk -v d=$((cpu1 - cpu0)) -v hz="$CLK_TCK" -v n="${R_REQS[$t,$w]}" \
            'BEGIN { printf "%.1f", (n > 0 ? d * 1000 / hz / n * 1000 : 0) }')
        log "  -> ${R_RPS[$t,$w]} req/s, p50 ${R_P50[$t,$w]} ms, p99 ${R_P99[$t,$w]} ms," \
            "socket errors ${R_ERRS[$t,$w]}, non-2xx ${R_NON2XX[$t,$w]}"
        # Still healthy after the load?
        got=$(curl -sS --max-time 5 -o /dev/null -w '%{http_code}' "${URL[$t]}/small" || echo fail)
        [[ $got == 200 ]] || die "$t answers $got after the $w load"
    done
done
METRICS_AFTER=$(metric_lines)
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
BUSY_AFTER=$(busy_others || true)

# ------------------------------------------------------ 1 GiB streamed ----
log "streaming a 1 GiB body: direct (reference), then through the sidecar"
# Fault the sparse file into the page cache first, so neither timed download pays for it.
cat "$TMP/www/huge" >/dev/null
direct_dl=$(curl -sS --max-time 120 -o /dev/null -w '%{http_code} %{size_download} %{time_total}' \
    "${URL[direct]}/huge" || echo "fail 0 0")
HWM0=$(status_kib VmHWM "$SIDECAR_PID")
RSS_DL0=$(status_kib VmRSS "$SIDECAR_PID")
sidecar_dl=$(curl -sS --max-time 180 -o /dev/null -w '%{http_code} %{size_download} %{time_total}' \
    "${URL[sidecar]}/huge" || echo "fail 0 0")
HWM1=$(status_kib VmHWM "$SIDECAR_PID")
RSS_DL1=$(status_kib VmRSS "$SIDECAR_PID")
# And the other way: a 1 GiB upload through the sidecar (the backend discards it).
sidecar_ul=$(curl -sS --max-time 180 -o /dev/null -X POST -T "$TMP/www/huge" \
    -w '%{http_code} %{size_upload} %{time_total}' "${URL[sidecar]}/upload" || echo "fail 0 0")
HWM2=$(status_kib VmHWM "$SIDECAR_PID")
read -r su_code su_size su_time <<<"$sidecar_ul"
read -r dd_code dd_size dd_time <<<"$direct_dl"
read -r sd_code sd_size sd_time <<<"$sidecar_dl"
HWM_GROWTH=$((HWM1 - HWM0))
HWM_GROWTH_UL=$((HWM2 - HWM1))
if [[ $sd_code == 200 && $sd_size == "$HUGE_SIZE" && $HWM_GROWTH -lt $((HWM_LIMIT_MIB * 1024)) ]]; then
    STREAM_VERDICT="PASS"
else
    STREAM_VERDICT="FAIL"
fi
if [[ $su_code == 200 && $su_size == "$HUGE_SIZE" && $HWM_GROWTH_UL -lt $((HWM_LIMIT_MIB * 1024)) ]]; then
    UPLOAD_VERDICT="PASS"
else
    UPLOAD_VERDICT="FAIL"
fi
log "  -> direct $direct_dl; sidecar $sidecar_dl; VmHWM $HWM0 -> $HWM1 KiB: $STREAM_VERDICT"
log "  -> upload through the sidecar $sidecar_ul; VmHWM $HWM1 -> $HWM2 KiB: $UPLOAD_VERDICT"

# Sidecar warnings/errors logged during the run (access log is off).
SIDECAR_WARN=$(grep -ciE '"level":"(warn|error)"|\b(WARN|ERROR)\b' "$TMP/sidecar.log" || true)
SIDECAR_WARN_SAMPLE=$(grep -iE '"level":"(warn|error)"|\b(WARN|ERROR)\b' "$TMP/sidecar.log" \
    | sort | uniq -c | sort -rn | head -n 5 || true)
kill -0 "$SIDECAR_PID" 2>/dev/null || die "stripe-sidecar died during the run"
# nginx's default proxy_buffering spills large responses to temp files; count it.
NGINX_TEMPFILE_WARN=$(grep -c 'buffered to a temporary file' "$TMP/proxy-error.log" || true)
THREADS=$(awk '$1 == "Threads:" { print $2 }' "/proc/$SIDECAR_PID/status")

# ---------------------------------------------------------------- report --
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f×", a / b; else print "n/a" }'; }
fmt_ms() { awk -v v="$1" 'BEGIN { printf (v < 1 ? "%.3f ms" : "%.2f ms"), v }'; }
fmt_int() { awk -v v="$1" 'BEGIN { printf "%.0f", v }'; }

NGINX_VERSION=$("$NGINX" -v 2>&1 | sed 's/^nginx version: //')
WRK_VERSION=$(wrk -v 2>&1 | head -n 1 | awk '{ print $1, $2 }' || true)
COMMIT=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)
DIRTY=$(git -C "$REPO" status --porcelain --untracked-files=no 2>/dev/null | grep -q . && echo "+dirty" || true)

report() {
    echo "# stripe-sidecar benchmark"
    echo
    echo "$(date -u '+%Y-%m-%d %H:%M UTC') · nproc $(nproc) · commit $COMMIT$DIRTY · $NGINX_VERSION · $WRK_VERSION · wrk -t1, ${DURATION}s per run after ${WARMUP}s warm-up · sidecar worker_threads=1, nginx worker_processes=1"
    echo
    echo "Background: loadavg ${LOAD_BEFORE} before the load runs, ${LOAD_AFTER} after; other busy processes: ${BUSY_BEFORE:-none} / ${BUSY_AFTER:-none}. (Anything here besides the bench skews the numbers: rerun on a quiet box.)"
    echo
    echo "## Ratios (the headline)"
    echo
    echo "Throughput ratio > 1 means the sidecar is faster; p99 ratio < 1 means its tail latency is lower."
    echo
    echo "| workload | req/s sidecar/direct | req/s sidecar/nginx | p99 sidecar/direct | p99 sidecar/nginx |"
    echo "| --- | ---: | ---: | ---: | ---: |"
    for w in "${WORKLOADS[@]}"; do
        printf '| %s | **%s** | **%s** | **%s** | **%s** |\n' \
            "GET ${W_PATH[$w]} (-c${W_CONNS[$w]})" \
            "$(ratio "${R_RPS[sidecar,$w]}" "${R_RPS[direct,$w]}")" \
            "$(ratio "${R_RPS[sidecar,$w]}" "${R_RPS[nginx,$w]}")" \
            "$(ratio "${R_P99[sidecar,$w]}" "${R_P99[direct,$w]}")" \
            "$(ratio "${R_P99[sidecar,$w]}" "${R_P99[nginx,$w]}")"
    done
    echo
    echo "## Memory (RSS of the proxy; nginx = master + worker)"
    echo
    echo "| proxy | idle | after /small load | after /big load | 1 GiB download: VmHWM before → after |"
    echo "| --- | ---: | ---: | ---: | ---: |"
    printf '| stripe-sidecar | %s MiB | %s MiB | %s MiB | %s → %s MiB (%s) |\n' \
        "$(mib "${R_RSS0[sidecar,small]}")" "$(mib "${R_RSS1[sidecar,small]}")" \
        "$(mib "${R_RSS1[sidecar,big]}")" "$(mib "$HWM0")" "$(mib "$HWM1")" "$STREAM_VERDICT"
    printf '| nginx proxy | %s MiB | %s MiB | %s MiB | — |\n' \
        "$(mib "${R_RSS0[nginx,small]}")" "$(mib "${R_RSS1[nginx,small]}")" "$(mib "${R_RSS1[nginx,big]}")"
    echo
    echo "## Streamed 1 GiB bodies (sparse file; curl -o /dev/null, curl -T)"
    echo
    echo "| transfer | status | bytes | time | sidecar VmHWM growth | verdict |"
    echo "| --- | --- | ---: | ---: | ---: | --- |"
    echo "| download, direct | $dd_code | $dd_size | ${dd_time}s | — | — |"
    echo "| download, sidecar | $sd_code | $sd_size | ${sd_time}s | $(mib "$HWM_GROWTH") MiB | **$STREAM_VERDICT** |"
    echo "| upload, sidecar | $su_code | $su_size | ${su_time}s | $(mib "$HWM_GROWTH_UL") MiB | **$UPLOAD_VERDICT** |"
    echo
    echo "Limit: VmHWM may grow by less than ${HWM_LIMIT_MIB} MiB per 1 GiB transfer. Sidecar VmRSS $(mib "$RSS_DL0") MiB before the download, $(mib "$RSS_DL1") MiB after."
    echo
    echo "## Absolute numbers"
    echo
    echo "| workload | target | req/s | p50 | p99 | requests | socket errors | non-2xx | proxy CPU ms / 1k req | RSS before → after |"
    echo "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    for w in "${WORKLOADS[@]}"; do
        for t in "${TARGETS[@]}"; do
            local rss="—" cpu="${R_CPU[$t,$w]}"
            [[ $t == direct ]] && cpu="(backend) $cpu"
            [[ $t != direct ]] && rss="$(mib "${R_RSS0[$t,$w]}") → $(mib "${R_RSS1[$t,$w]}") MiB"
            printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' \
                "${W_PATH[$w]} -c${W_CONNS[$w]}" "$t" "$(fmt_int "${R_RPS[$t,$w]}")" \
                "$(fmt_ms "${R_P50[$t,$w]}")" "$(fmt_ms "${R_P99[$t,$w]}")" "${R_REQS[$t,$w]}" \
                "${R_ERRS[$t,$w]}" "${R_NON2XX[$t,$w]}" "$cpu" "$rss"
        done
    done
    echo
    echo "## Sidecar health during the run"
    echo
    echo "- threads: $THREADS; warn/error log lines: ${SIDECAR_WARN:-0}"
    if [[ -n $SIDECAR_WARN_SAMPLE ]]; then
        echo '- most frequent warn/error lines:'
        echo '```'
        echo "$SIDECAR_WARN_SAMPLE" | cut -c1-300
        echo '```'
    fi
    echo "- nginx proxy 'buffered to a temporary file' warnings (default proxy_buffering on): ${NGINX_TEMPFILE_WARN:-0}"
    echo "- /metrics counters before the load runs:"
    echo '```'
    echo "${METRICS_BEFORE:-(none)}"
    echo '```'
    echo "- /metrics counters after the load runs:"
    echo '```'
    echo "${METRICS_AFTER:-(none)}"
    echo '```'
}

report | tee "$RESULTS"
log "written $RESULTS"
for w in "${WORKLOADS[@]}"; do
    for t in "${TARGETS[@]}"; do
        if ((R_ERRS[$t,$w] + R_NON2XX[$t,$w] > 0)); then
            log "WARNING: $t ${W_PATH[$w]}: ${R_ERRS[$t,$w]} socket errors, ${R_NON2XX[$t,$w]} non-2xx"
        fi
    done
done
[[ $STREAM_VERDICT == PASS && $UPLOAD_VERDICT == PASS ]] || die "a streamed 1 GiB transfer failed its check"
