# shellcheck shell=bash
# Shared by bench/run.sh, bench/memory.sh and bench/soak.sh (sourced, not
# run): the one copy of installing what is missing, building the release
# binary, picking free loopback ports, starting nginx instances (the app,
# and whatever else a script configures), starting the sidecar, reading
# /proc, and stopping everything it started on exit. Loopback only.

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)

log() { printf '[%s %s] %s\n' "${BENCH_NAME:-bench}" "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "FATAL: $*"; exit 1; }

TMP=""
STARTED_PIDS=()   # every long-running process started, in start order
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

forget_pid() {  # forget_pid PID: no longer ours to stop on exit
    local kept=() p
    for p in "${STARTED_PIDS[@]}"; do [[ $p == "$1" ]] || kept+=("$p"); done
    STARTED_PIDS=("${kept[@]}")
}

cleanup() {
    local rc=$? i f
    set +e
    # Reverse start order: proxies before the app they forward to.
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
    if [[ -n $TMP && -d $TMP && -z ${BENCH_KEEP_TMP:-} ]]; then rm -rf "$TMP"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# need_tools [COMMAND ...]: apt-installs the packages of the commands that
# are missing; nginx, python3 and curl always. Debian package per command:
declare -A APT_PACKAGE=([nginx]=nginx [python3]=python3 [curl]=curl [wrk]=wrk
    [redis-server]=redis-server [redis-cli]=redis-tools [node]=nodejs [npm]=npm
    [ss]=iproute2)
have() { command -v "$1" >/dev/null 2>&1 || [[ $1 == nginx && -x /usr/sbin/nginx ]]; }
need_tools() {
    local need_apt=() c
    for c in nginx python3 curl "$@"; do
        have "$c" || need_apt+=("${APT_PACKAGE[$c]:-$c}")
    done
    ((${#need_apt[@]})) || return 0
    log "installing with apt-get: ${need_apt[*]}"
    [[ $EUID == 0 ]] || die "need root to apt-get install ${need_apt[*]}"
    # Keep Debian's nginx and redis-server packages from starting their own services.
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        POLICY_RC_CREATED=1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >&2
    if [[ $POLICY_RC_CREATED == 1 ]]; then rm -f /usr/sbin/policy-rc.d; POLICY_RC_CREATED=0; fi
    for c in nginx python3 curl "$@"; do have "$c" || die "$c not found after apt-get install"; done
}
nginx_bin() { command -v nginx || echo /usr/sbin/nginx; }

build_release() {  # sets SIDECAR: $SIDECAR_BIN, or the release build
    if [[ -n ${SIDECAR_BIN:-} ]]; then
        SIDECAR=$SIDECAR_BIN
    else
        log "cargo build --release (may wait for other builds' lock)"
        (cd "$REPO" && cargo build --release >&2)
        SIDECAR="$REPO/target/release/stripe-sidecar"
    fi
    [[ -x $SIDECAR ]] || die "$SIDECAR missing"
}

make_tmp() {
    TMP=$(mktemp -d "/tmp/stripe-sidecar-${BENCH_NAME:-bench}.XXXXXX")
    cd "$TMP" || die "cannot cd to $TMP"   # nothing the bench writes can land in the repo
}

free_ports() {  # free_ports N: N distinct free loopback ports on one line
    python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

wait_http() {  # wait_http URL [PID WHAT]: until URL answers 200, at most 10 s (and PID lives)
    local url=$1 pid=${2:-} what=${3:-$1} i code=none
    for i in $(seq 100); do
        if [[ -n $pid ]] && ! kill -0 "$pid" 2>/dev/null; then die "$what exited during start-up"; fi
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$url" || true)
        [[ $code == 200 ]] && return 0
        sleep 0.1
    done
    die "$what: $url not 200 after 10 s (last: $code)"
}

# ------------------------------------------------------------------ /proc --
status_kib() {  # status_kib FIELD PID...: sum of /proc/PID/status FIELD in KiB
    local field=$1 total=0 pid v
    shift
    for pid in "$@"; do
        v=$(awk -v f="$field:" '$1 == f { print $2 }' "/proc/$pid/status" 2>/dev/null || true)
        total=$((total + ${v:-0}))
    done
    echo "$total"
}
cpu_ticks() {  # cpu_ticks PID...: utime+stime, in clock ticks
    local total=0 pid v
    for pid in "$@"; do
        v=$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | awk '{ print $12 + $13 }' || true)
        total=$((total + ${v:-0}))
    done
    echo "$total"
}
children_of() { ps -o pid= --ppid "$1" 2>/dev/null | tr -s ' \n' ' ' || true; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

# ------------------------------------------------------------------ nginx --
nginx_head() {  # nginx_head NAME WORKERS: the part of a conf every bench nginx shares
    local name=$1 workers=${2:-1}
    mkdir -p "$TMP/$name-tmp"
    cat <<EOF
daemon off;
master_process on;
worker_processes $workers;
$([[ $EUID == 0 ]] && echo "user root;" || true)
pid $TMP/$name.pid;
error_log $TMP/$name-error.log warn;
worker_rlimit_nofile 20000;
events { worker_connections 16384; }
http {
    access_log off;
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 65;
    keepalive_requests 1000000;
    large_client_header_buffers 4 32k;
    client_body_temp_path $TMP/$name-tmp/body;
    proxy_temp_path $TMP/$name-tmp/proxy;
    fastcgi_temp_path $TMP/$name-tmp/fastcgi;
    uwsgi_temp_path $TMP/$name-tmp/uwsgi;
    scgi_temp_path $TMP/$name-tmp/scgi;
EOF
}

start_nginx() {  # start_nginx NAME: runs $TMP/NAME.conf, sets NGINX_PID
    local name=$1 nginx
    nginx=$(nginx_bin)
    "$nginx" -t -q -p "$TMP" -c "$TMP/$name.conf" -e "$TMP/$name-error.log" \
        || die "nginx -t failed for $name"
    "$nginx" -p "$TMP" -c "$TMP/$name.conf" -e "$TMP/$name-error.log" \
        >"$TMP/$name-stdout.log" 2>&1 &
    NGINX_PID=$!
    STARTED_PIDS+=("$NGINX_PID")
}

# The app stand-in, one for every script: nginx on 127.0.0.1:PORT with
#   /small          return 200 "ok\n"
#   /upload         any body (size unbounded, discarded), 200 "up\n"
#   /identity-echo  the six identity headers it received, |-separated
#   anything else   a file from $TMP/www: 100b (100 B), 64k (64 KiB),
#                   big (256 KiB), download (8 MiB), stream (sparse,
#                   BENCH_STREAM_MIB, default 256 MiB)
start_app() {  # start_app PORT [WORKERS]: sets APP_PID
    local port=$1 workers=${2:-1}
    mkdir -p "$TMP/www"
    head -c 75 /dev/urandom | base64 -w0 >"$TMP/www/100b"   # 100 B of text
    head -c $((64 * 1024)) /dev/urandom >"$TMP/www/64k"
    head -c $((256 * 1024)) /dev/urandom >"$TMP/www/big"
    head -c $((8 * 1024 * 1024)) /dev/urandom >"$TMP/www/download"
    truncate -s "${BENCH_STREAM_MIB:-256}M" "$TMP/www/stream"
    {
        nginx_head app "$workers"
        cat <<EOF
    server {
        listen 127.0.0.1:$port reuseport backlog=4096;
        root $TMP/www;
        location = /small { default_type text/plain; return 200 "ok\n"; }
        location = /upload { client_max_body_size 0; default_type text/plain; return 200 "up\n"; }
        location = /identity-echo {
            default_type text/plain;
            return 200 "\$http_x_user_id|\$http_x_user_email|\$http_x_stripe_customer_id|\$http_x_subscription_status|\$http_x_subscription_plan|\$http_x_entitlements\n";
        }
        location / { }
    }
}
EOF
    } >"$TMP/app.conf"
    start_nginx app
    APP_PID=$NGINX_PID
    wait_http "http://127.0.0.1:$port/small" "$APP_PID" "the app (nginx)"
}

# --------------------------------------------------------------- sidecar --
write_sidecar_config() {  # write_sidecar_config PORT ADMIN APP_PORT: $TMP/sidecar.toml
    cat >"$TMP/sidecar.toml" <<EOF
[server]
listen = "127.0.0.1:$1"
admin_listen = "127.0.0.1:$2"
log_format = "json"
access_log = true
shutdown_drain_seconds = 0
shutdown_grace_seconds = 2

[upstream]
url = "http://127.0.0.1:$3"

[stripe]
webhook_secrets = ["whsec_bench_only"]
EOF
}

check_config() {  # check_config FILE: stripe-sidecar --check, or die with its lines
    "$SIDECAR" --check --config "$1" >"$1.check" 2>&1 \
        || { cat "$1.check" >&2; die "stripe-sidecar --check rejected $1"; }
}

# start_sidecar LOG [VAR=VALUE ...]: $TMP/sidecar.toml (or $SIDECAR_CONFIG)
# until /readyz on $ADMIN_PORT answers; sets SIDECAR_PID.
start_sidecar() {
    local logfile=$1
    shift
    env "$@" "$SIDECAR" --config "${SIDECAR_CONFIG:-$TMP/sidecar.toml}" >"$logfile" 2>&1 &
    SIDECAR_PID=$!
    STARTED_PIDS+=("$SIDECAR_PID")
    wait_http "http://127.0.0.1:$ADMIN_PORT/readyz" "$SIDECAR_PID" "stripe-sidecar"
}

stop_sidecar() {
    stop_pid "$SIDECAR_PID" TERM
    forget_pid "$SIDECAR_PID"
}
