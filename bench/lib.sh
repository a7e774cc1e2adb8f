# Shared by bench/memory.sh and bench/soak.sh (sourced, not run): installs
# what is missing, builds the release binary once, picks free loopback
# ports, starts a local nginx app and the sidecar, and stops everything
# it started on exit. Loopback only.

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)

log() { printf '[%s %s] %s\n' "${BENCH_NAME:-bench}" "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "FATAL: $*"; exit 1; }

TMP=""
STARTED_PIDS=()
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
    for ((i = ${#STARTED_PIDS[@]} - 1; i >= 0; i--)); do
        stop_pid "${STARTED_PIDS[$i]}" TERM
    done
    if [[ $POLICY_RC_CREATED == 1 ]]; then rm -f /usr/sbin/policy-rc.d; fi
    if [[ $rc != 0 && -n $TMP && -d $TMP ]]; then
        for f in "$TMP"/*.log; do
            [[ -f $f ]] || continue
            log "---- tail of $(basename "$f") ----"
            tail -n 5 "$f" >&2
        done
    fi
    if [[ -n $TMP && -d $TMP && -z ${BENCH_KEEP_TMP:-} ]]; then rm -rf "$TMP"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

need_tools() {  # apt-installs nginx, python3, curl when missing
    local need_apt=() p
    command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]] || need_apt+=(nginx)
    command -v python3 >/dev/null 2>&1 || need_apt+=(python3)
    command -v curl >/dev/null 2>&1 || need_apt+=(curl)
    for p in "$@"; do command -v "$p" >/dev/null 2>&1 || need_apt+=("$p"); done
    ((${#need_apt[@]})) || return 0
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
    apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >&2
    if [[ $POLICY_RC_CREATED == 1 ]]; then rm -f /usr/sbin/policy-rc.d; POLICY_RC_CREATED=0; fi
}

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
    cd "$TMP"   # nothing the bench writes can land in the repo
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

wait_http() {  # wait_http URL: until it answers 2xx, at most 10 s
    local i
    for i in $(seq 100); do
        curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    die "$1 did not answer within 10 s"
}

start_app() {  # start_app PORT: nginx on 127.0.0.1:PORT, the stand-in app
    local port=$1 nginx
    nginx=$(command -v nginx || echo /usr/sbin/nginx)
    mkdir -p "$TMP/www" "$TMP/app-tmp"
    head -c $((256 * 1024)) /dev/urandom >"$TMP/www/big"        # 256 KiB
    head -c $((8 * 1024 * 1024)) /dev/urandom >"$TMP/www/download"  # 8 MiB
    cat >"$TMP/app.conf" <<EOF
daemon off;
master_process on;
worker_processes 1;
$([[ $EUID == 0 ]] && echo "user root;" || true)
pid $TMP/app.pid;
error_log $TMP/app-error.log warn;
worker_rlimit_nofile 20000;
events { worker_connections 16384; }
http {
    access_log off;
    default_type application/octet-stream;
    client_body_temp_path $TMP/app-tmp/body;
    proxy_temp_path $TMP/app-tmp/proxy;
    fastcgi_temp_path $TMP/app-tmp/fastcgi;
    uwsgi_temp_path $TMP/app-tmp/uwsgi;
    scgi_temp_path $TMP/app-tmp/scgi;
    keepalive_requests 100000;
    large_client_header_buffers 4 32k;
    server {
        listen 127.0.0.1:$port reuseport backlog=4096;
        location = /small { return 200 "ok\n"; }
        location / { root $TMP/www; }
    }
}
EOF
    "$nginx" -c "$TMP/app.conf" >"$TMP/app.log" 2>&1 &
    STARTED_PIDS+=($!)
    wait_http "http://127.0.0.1:$port/small"
}

write_sidecar_config() {  # write_sidecar_config PORT ADMIN APP_PORT
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

start_sidecar() {  # start_sidecar LOG [VAR=VALUE ...]: sets SIDECAR_PID
    local logfile=$1
    shift
    env "$@" "$SIDECAR" --config "$TMP/sidecar.toml" >"$logfile" 2>&1 &
    SIDECAR_PID=$!
    STARTED_PIDS+=("$SIDECAR_PID")
    wait_http "http://127.0.0.1:$ADMIN_PORT/healthz"
}

stop_sidecar() {
    local kept=() p
    stop_pid "$SIDECAR_PID" TERM
    for p in "${STARTED_PIDS[@]}"; do [[ $p == "$SIDECAR_PID" ]] || kept+=("$p"); done
    STARTED_PIDS=("${kept[@]}")
}
