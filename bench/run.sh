#!/usr/bin/env bash
# Benchmark: the same nginx backend reached three ways, in one run —
#   direct  : wrk -> backend
#   nginx   : wrk -> nginx reverse proxy (keepalive pool) -> backend
#   sidecar : wrk -> stripe-sidecar -> backend
#   sidecar+id (GET /small only): wrk with an HS256 session -> a second
#             stripe-sidecar with all six [identity_headers] and
#             subscriptions.entitlements on (customer + subscription state
#             from a static nginx stand-in for Stripe, caches warm) -> backend
#   gated, Redis on / off (issue 12): two more sidecars, one with
#             [state] redis_url (a local redis-server), one without, each
#             gating GET /small on a subscription and creating Checkout
#             Sessions (POST /api/stripe/create-checkout, wrk -s), caches warm
# plus a streamed 1 GiB download through the sidecar (its peak RSS must not
# grow with the body). Results: markdown on stdout and in bench/results.md.
#
# Usage: bash bench/run.sh
# Knobs (environment): BENCH_DURATION (seconds per measured run, default 10),
#   BENCH_WARMUP (seconds, default 2), BENCH_SMALL_CONNS (32), BENCH_BIG_CONNS (8),
#   BENCH_ID_PAIRS (extra alternating sidecar+id / sidecar runs of /small, default 2),
#   BENCH_REDIS_PAIRS (Redis on / off pairs of the gated GET and of checkout, default 3),
#   BENCH_CHECKOUT_CONNS (wrk -c for checkout, default 8).
set -euo pipefail

DURATION=${BENCH_DURATION:-10}
WARMUP=${BENCH_WARMUP:-2}
SMALL_CONNS=${BENCH_SMALL_CONNS:-32}
BIG_CONNS=${BENCH_BIG_CONNS:-8}
ID_PAIRS=${BENCH_ID_PAIRS:-2}
REDIS_PAIRS=${BENCH_REDIS_PAIRS:-3}
CHECKOUT_CONNS=${BENCH_CHECKOUT_CONNS:-8}
((REDIS_PAIRS >= 1)) || { echo "BENCH_REDIS_PAIRS must be at least 1" >&2; exit 2; }
ID_GOAL=0.90      # issue 11: signed-in + identity headers within 10 % of the plain proxy
REDIS_GOAL=0.90   # issue 12: Redis on within 10 % of Redis off (the in-process cache answers first)
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
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || need_apt+=(redis-tools)
if ((${#need_apt[@]})); then
    log "installing with apt-get: ${need_apt[*]}"
    [[ $EUID == 0 ]] || die "need root to apt-get install ${need_apt[*]}"
    # Keep the Debian nginx and redis-server packages from starting their own services.
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
command -v redis-server >/dev/null || die "redis-server not found after install"
command -v redis-cli >/dev/null || die "redis-cli not found after install"

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

# Twelve free loopback ports, held open together so they are distinct.
read -r P_BACKEND P_PROXY P_SIDECAR P_ADMIN P_SIDECAR_ID P_ADMIN_ID P_STRIPE \
    P_REDIS P_SIDECAR_RON P_ADMIN_RON P_SIDECAR_ROFF P_ADMIN_ROFF < <(python3 - <<'EOF'
import socket
socks = []
for _ in range(12):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks:
    s.close()
EOF
)
log "ports: backend=$P_BACKEND nginx-proxy=$P_PROXY sidecar=$P_SIDECAR admin=$P_ADMIN" \
    "sidecar+id=$P_SIDECAR_ID admin+id=$P_ADMIN_ID stripe-standin=$P_STRIPE" \
    "redis=$P_REDIS gated+redis=$P_SIDECAR_RON/$P_ADMIN_RON gated=$P_SIDECAR_ROFF/$P_ADMIN_ROFF"

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
        # What the app sees of the identity headers (checked before the sidecar+id run).
        location = /identity-echo {
            default_type text/plain;
            return 200 "\$http_x_user_id|\$http_x_user_email|\$http_x_stripe_customer_id|\$http_x_subscription_status|\$http_x_subscription_plan|\$http_x_entitlements\n";
        }
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

# ------------------------------------------- sidecar+id: Stripe stand-in --
# The identity row's customer and subscription state come through the
# sidecar's own Stripe code path (Customer Search, GET /v1/subscriptions,
# GET /v1/entitlements/active_entitlements) from a static nginx on loopback.
# The replies are Stripe's own example objects (tests/fixtures/stripe/),
# with the fields overridden as the test suite's fake Stripe does, so
# async-stripe deserializes them. And an HS256 session token for the user.
ID_SECRET="bench-hs256-secret-not-a-real-one-0123456789"
ID_USER="8f0e2b7c-5d1a-4e3f-9b6c-0a1b2c3d4e5f"
ID_EMAIL="bench@example.com"
ID_CUSTOMER="cus_BenchIdentity01"
ID_PRICE="price_BenchPro000001"
ID_PLAN="pro"
ID_FEATURE="api-access"
mkdir -p "$TMP/stripe/v1"
ID_JWT=$(python3 - "$REPO/tests/fixtures/stripe" "$TMP/stripe/v1" "$ID_SECRET" "$ID_USER" \
    "$ID_EMAIL" "$ID_CUSTOMER" "$ID_PRICE" "$ID_FEATURE" <<'EOF'
import base64, hashlib, hmac, json, sys, time
fixtures, out, secret, user, email, customer, price_id, feature = sys.argv[1:9]
load = lambda name: json.load(open(f"{fixtures}/{name}.json"))
now = int(time.time())

cus = load("customer")
cus.update(id=customer, email=email, name=None, description=None,
           metadata={"user_id": user}, created=now - 86400, livemode=False,
           discount=None, shipping=None, address=None, currency=None)

price = load("price")
price.update(id=price_id, product="prod_BenchPro000001", livemode=False,
             transform_quantity=None, custom_unit_amount=None)
sub = load("subscription")
sub_id = "sub_1BenchIdentity0000000001"
item = sub["items"]["data"][0]
plan = item["plan"]
plan.update(id=price["id"], amount=price["unit_amount"],
            amount_decimal=price["unit_amount_decimal"],
            billing_scheme=price["billing_scheme"], created=price["created"],
            currency=price["currency"], interval=price["recurring"]["interval"],
            interval_count=price["recurring"]["interval_count"], livemode=False,
            metadata={}, product=price["product"], tiers_mode=None, transform_usage=None)
item.update(id="si_BenchIdentity01", created=now - 3600, price=price, plan=plan,
            quantity=1, subscription=sub_id, current_period_start=now - 3600,
            current_period_end=now + 30 * 86400, billing_thresholds=None)
sub.update(id=sub_id, customer=customer, status="active", created=now - 3600,
           start_date=now - 3600, billing_cycle_anchor=now - 3600,
           items={"object": "list", "data": [item], "has_more": False,
                  "url": f"/v1/subscription_items?subscription={sub_id}"},
           metadata={}, livemode=False, cancel_at_period_end=False,
           cancellation_details={"comment": None, "feedback": None, "reason": None},
           payment_settings={"payment_method_options": None,
                             "payment_method_types": None,
                             "save_default_payment_method": "off"},
           billing_mode={"type": "classic", "flexible": None}, billing_schedules=[],
           invoice_settings={"account_tax_ids": None, "issuer": {"type": "self"}})
for field in ("billing_cycle_anchor_config", "billing_thresholds", "cancel_at",
              "canceled_at", "ended_at", "latest_invoice", "managed_payments",
              "next_pending_invoice_item_invoice", "pause_collection",
              "pending_invoice_item_interval", "pending_update", "transfer_data",
              "trial_end", "trial_start"):
    sub[field] = None

ent = load("entitlements.active_entitlement")
ent.update(id="ent_test_BenchIdentity0000000000000001",
           feature="feat_test_BenchIdentity000000000000001",
           lookup_key=feature, livemode=False)

def write(name, obj):
    with open(f"{out}/{name}.json", "w") as f:
        json.dump(obj, f)
write("customers_search", {"object": "search_result", "data": [cus], "has_more": False,
                           "next_page": None, "url": "/v1/customers/search"})
write("subscriptions", {"object": "list", "data": [sub], "has_more": False,
                        "url": "/v1/subscriptions"})
write("active_entitlements", {"object": "list", "data": [ent], "has_more": False,
                              "url": "/v1/entitlements/active_entitlements"})

# Issue 12's checkout row: the Checkout Session every POST /v1/checkout/sessions
# gets, with the fields the test suite's fake Stripe sets at creation. It goes
# into the stand-in's nginx.conf as `return 200 '...'` (static files answer
# POST with 405), so it must hold no quote, backslash or '$'.
session = load("checkout.session")
session_id = "cs_test_a1BenchCheckout0000000000000000000000000000000000000001"
session.update(id=session_id, url=f"https://checkout.stripe.com/c/pay/{session_id}",
               mode="subscription", customer=customer, customer_email=None,
               customer_creation=None, customer_details=None, payment_intent=None,
               subscription=None, client_reference_id=user, metadata={"user_id": user},
               success_url="https://bench.local/ok", cancel_url="https://bench.local/no",
               allow_promotion_codes=None, status="open", payment_status="unpaid",
               livemode=False, created=now, expires_at=now + 24 * 3600)
text = json.dumps(session, separators=(",", ":"), ensure_ascii=False)
bad = sorted(set(text) & set("'\\$"))
if bad:
    sys.exit(f"checkout.session.json has {bad}: cannot go into an nginx return")
with open(f"{out}/checkout_sessions.json", "w") as f:
    f.write(text)

b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
claims = {"sub": user, "email": email, "role": "authenticated", "aud": "authenticated",
          "iat": now, "exp": now + 10 * 365 * 86400}
body = b64(json.dumps(claims, separators=(",", ":")).encode())
sig = b64(hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest())
print(f"{head}.{body}.{sig}")
EOF
)
[[ $ID_JWT == *.*.* ]] || die "could not mint the bench JWT"

{
    nginx_head stripe
    cat <<EOF
    server {
        listen 127.0.0.1:$P_STRIPE;
        default_type application/json;
        # Paths only: the query (customer=..., status=all, query=...) is the sidecar's business.
        location = /v1/customers/search { alias $TMP/stripe/v1/customers_search.json; }
        location = /v1/subscriptions { alias $TMP/stripe/v1/subscriptions.json; }
        location = /v1/entitlements/active_entitlements { alias $TMP/stripe/v1/active_entitlements.json; }
        # Issue 12: POST (a static file would answer 405); the form body is not read.
        location = /v1/checkout/sessions { return 200 '$(cat "$TMP/stripe/v1/checkout_sessions.json")'; }
        location / { return 404 '{"error":{"type":"invalid_request_error","message":"not in the bench stand-in"}}'; }
    }
}
EOF
} >"$TMP/stripe.conf"

cat >"$TMP/sidecar-id.toml" <<EOF
[server]
listen = "127.0.0.1:$P_SIDECAR_ID"
admin_listen = "127.0.0.1:$P_ADMIN_ID"
worker_threads = 1
access_log = false
log_format = "json"
shutdown_drain_seconds = 0
shutdown_grace_seconds = 3

[upstream]
url = "http://127.0.0.1:$P_BACKEND"

[auth]
hs256_secret = "$ID_SECRET"

[stripe]
secret_key = "sk_test_bench_not_a_real_key"
api_base = "http://127.0.0.1:$P_STRIPE"
max_retries = 0

[checkout]
allowed_redirect_origins = ["https://bench.example"]
prices = { $ID_PLAN = "$ID_PRICE" }

[customers]
source = "stripe"
metadata_key = "user_id"
cache_ttl_seconds = 300

[subscriptions]
cache_ttl_seconds = 300
entitlements = true

[identity_headers]
user_id = "x-user-id"
email = "x-user-email"
customer = "x-stripe-customer-id"
subscription_status = "x-subscription-status"
plan = "x-subscription-plan"
features = "x-entitlements"
EOF

# Issue 12: two sidecars alike but for [state]: GET /small needs a
# subscription ([[gates]]), checkout sells the plan; no identity headers, so
# the rows measure the gate and checkout. "on" shares its state through the
# local redis-server, "off" keeps it in-process only. TTLs of an hour: the
# caches are filled just before these rows and must not expire during them.
REDIS_PREFIX="bench-$$:"
gated_config() {  # gated_config LISTEN_PORT ADMIN_PORT [REDIS_URL]
    cat <<EOF
[server]
listen = "127.0.0.1:$1"
admin_listen = "127.0.0.1:$2"
worker_threads = 1
access_log = false
log_format = "json"
shutdown_drain_seconds = 0
shutdown_grace_seconds = 3

[upstream]
url = "http://127.0.0.1:$P_BACKEND"

[auth]
hs256_secret = "$ID_SECRET"

[stripe]
secret_key = "sk_test_bench_not_a_real_key"
api_base = "http://127.0.0.1:$P_STRIPE"
max_retries = 0

[checkout]
allowed_redirect_origins = ["https://bench.local"]
prices = { $ID_PLAN = "$ID_PRICE" }

[customers]
source = "stripe"
metadata_key = "user_id"
cache_ttl_seconds = 3600

[subscriptions]
cache_ttl_seconds = 3600

[[gates]]
path = "/small"
require = "subscription"
EOF
    if [[ -n ${3:-} ]]; then
        printf '\n[state]\nredis_url = "%s"\nkey_prefix = "%s"\n' "$3" "$REDIS_PREFIX"
    fi
}
gated_config "$P_SIDECAR_RON" "$P_ADMIN_RON" "redis://127.0.0.1:$P_REDIS/0" >"$TMP/sidecar-redis-on.toml"
gated_config "$P_SIDECAR_ROFF" "$P_ADMIN_ROFF" >"$TMP/sidecar-redis-off.toml"
# wrk's checkout request; Authorization comes from -H like the other rows.
cat >"$TMP/checkout.lua" <<'EOF'
wrk.method = "POST"
wrk.body = '{"priceId":"pro","mode":"subscription","successUrl":"https://bench.local/ok","cancelUrl":"https://bench.local/no"}'
wrk.headers["Content-Type"] = "application/json"
EOF
CHECKOUT_BODY='{"priceId":"pro","mode":"subscription","successUrl":"https://bench.local/ok","cancelUrl":"https://bench.local/no"}'

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

start_nginx stripe; STRIPE_PID=$NGINX_PID
wait_http "http://127.0.0.1:$P_STRIPE/v1/subscriptions" "$STRIPE_PID" "Stripe stand-in nginx"
"$SIDECAR" --check --config "$TMP/sidecar-id.toml" >"$TMP/sidecar-id-check.log" 2>&1 \
    || { cat "$TMP/sidecar-id-check.log" >&2; die "stripe-sidecar --check rejected the sidecar+id config"; }
"$SIDECAR" --config "$TMP/sidecar-id.toml" >"$TMP/sidecar-id.log" 2>&1 &
SIDECAR_ID_PID=$!
STARTED_PIDS+=("$SIDECAR_ID_PID")
wait_http "http://127.0.0.1:$P_ADMIN_ID/readyz" "$SIDECAR_ID_PID" "stripe-sidecar (identity)"
ID_AUTH="Authorization: Bearer $ID_JWT"

# Issue 12: redis-server (nothing persisted), then the two gated sidecars.
redis-server --bind 127.0.0.1 --port "$P_REDIS" --save "" --appendonly no \
    --daemonize no --dir "$TMP" --logfile "$TMP/redis.log" >"$TMP/redis-stdout.log" 2>&1 &
REDIS_PID=$!
STARTED_PIDS+=("$REDIS_PID")
rcli() { redis-cli -h 127.0.0.1 -p "$P_REDIS" "$@"; }
for i in $(seq 100); do
    kill -0 "$REDIS_PID" 2>/dev/null || die "redis-server exited during start-up"
    [[ $(rcli PING 2>/dev/null) == PONG ]] && break
    sleep 0.1
done
[[ $(rcli PING 2>/dev/null) == PONG ]] || die "redis-server does not answer PING after 10 s"
REDIS_VERSION=$(redis-server --version | sed -n 's/.* v=\([^ ]*\).*/\1/p')
for side in on off; do
    "$SIDECAR" --check --config "$TMP/sidecar-redis-$side.toml" >"$TMP/sidecar-redis-$side-check.log" 2>&1 \
        || { cat "$TMP/sidecar-redis-$side-check.log" >&2; die "stripe-sidecar --check rejected the Redis $side config"; }
    "$SIDECAR" --config "$TMP/sidecar-redis-$side.toml" >"$TMP/sidecar-redis-$side.log" 2>&1 &
    STARTED_PIDS+=("$!")
    if [[ $side == on ]]; then SIDECAR_RON_PID=$!; else SIDECAR_ROFF_PID=$!; fi
done
wait_http "http://127.0.0.1:$P_ADMIN_RON/readyz" "$SIDECAR_RON_PID" "stripe-sidecar (Redis on)"
wait_http "http://127.0.0.1:$P_ADMIN_ROFF/readyz" "$SIDECAR_ROFF_PID" "stripe-sidecar (Redis off)"

declare -A URL=(
    [direct]="http://127.0.0.1:$P_BACKEND"
    [nginx]="http://127.0.0.1:$P_PROXY"
    [sidecar]="http://127.0.0.1:$P_SIDECAR"
    [identity]="http://127.0.0.1:$P_SIDECAR_ID"
    [ron]="http://127.0.0.1:$P_SIDECAR_RON"
    [roff]="http://127.0.0.1:$P_SIDECAR_ROFF"
)
declare -A ADMIN=([ron]="http://127.0.0.1:$P_ADMIN_RON" [roff]="http://127.0.0.1:$P_ADMIN_ROFF")
TARGETS=(direct nginx sidecar)   # the sanity checks; sidecar+id is checked on its own below
declare -A T_LABEL=([direct]=direct [nginx]=nginx [sidecar]=sidecar [identity]="sidecar+id"
    [ron]="gated, Redis on" [roff]="gated, Redis off")

# Sanity: every target serves both bodies correctly before any load.
for t in "${TARGETS[@]}"; do
    body=$(curl -sS --max-time 5 "${URL[$t]}/small")
    [[ $body == ok ]] || die "$t /small answered '$body'"
    got=$(curl -sS --max-time 10 -o /dev/null -w '%{http_code} %{size_download}' "${URL[$t]}/big")
    [[ $got == "200 $BIG_SIZE" ]] || die "$t /big: got '$got', want '200 $BIG_SIZE'"
    cmp -s <(curl -sS --max-time 10 "${URL[$t]}/big") "$TMP/www/big" || die "$t /big: body differs"
done
log "sanity checks passed on all three targets"

# sidecar+id: fill every cache (token, customer, subscription state) with
# one request each, and check what the app receives, before any load.
# 1. The subscription route: proves the stand-in's JSON deserializes and
#    the sidecar reads the customer, plan and feature from it.
sub_json=$(curl -sS --max-time 10 -H "$ID_AUTH" "http://127.0.0.1:$P_SIDECAR_ID/api/stripe/subscription") \
    || die "sidecar+id: GET /api/stripe/subscription failed"
python3 - "$sub_json" "$ID_CUSTOMER" "$ID_PLAN" "$ID_PRICE" "$ID_FEATURE" <<'EOF' \
    || die "sidecar+id: unexpected /api/stripe/subscription reply: $sub_json"
import json, sys
reply, customer, plan, price, feature = sys.argv[1:6]
r = json.loads(reply)
want = {"customerId": customer, "subscribed": True, "status": "active", "plan": plan,
        "priceId": price, "features": [feature]}
bad = {k: r.get(k) for k, v in want.items() if r.get(k) != v}
sys.exit(f"mismatch: {bad}" if bad else 0)
EOF
# 2. A proxied request: the app gets all six headers, and a client's own
#    copies (spoofed here) are replaced.
ID_ECHO_WANT="$ID_USER|$ID_EMAIL|$ID_CUSTOMER|active|$ID_PLAN|$ID_FEATURE"
ID_ECHO=$(curl -sS --max-time 5 -H "$ID_AUTH" -H "x-subscription-status: spoofed" \
    -H "x-entitlements: everything" "http://127.0.0.1:$P_SIDECAR_ID/identity-echo")
[[ $ID_ECHO == "$ID_ECHO_WANT" ]] || die "sidecar+id: the app saw '$ID_ECHO', want '$ID_ECHO_WANT'"
# 3. Without a session, no identity header reaches the app, spoofed or not.
anon_echo=$(curl -sS --max-time 5 -H "x-user-id: spoofed" -H "x-subscription-status: active" \
    "http://127.0.0.1:$P_SIDECAR_ID/identity-echo")
[[ $anon_echo == "|||||" ]] || die "sidecar+id: an anonymous request reached the app with '$anon_echo'"
body=$(curl -sS --max-time 5 -H "$ID_AUTH" "http://127.0.0.1:$P_SIDECAR_ID/small")
[[ $body == ok ]] || die "sidecar+id /small answered '$body'"
log "sidecar+id checks passed: the app sees '$ID_ECHO'"

# ------------------------------------------------------------ measurement --
CLK_TCK=$(getconf CLK_TCK)

pids_of() {  # the processes that make up a target's proxy (nginx: master + workers)
    case $1 in
        direct) echo "$BACKEND_PID" $(ps -o pid= --ppid "$BACKEND_PID" || true) ;;
        nginx) echo "$PROXY_PID" $(ps -o pid= --ppid "$PROXY_PID" || true) ;;
        sidecar) echo "$SIDECAR_PID" ;;
        identity) echo "$SIDECAR_ID_PID" ;;
        ron) echo "$SIDECAR_RON_PID" ;;
        roff) echo "$SIDECAR_ROFF_PID" ;;
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

declare -A R_RPS R_P50 R_P99 R_REQS R_ERRS R_NON2XX R_RSS0 R_RSS1 R_CPU R_TXT R_LOAD R_WREQS
WORKLOADS=(small big)
declare -A W_PATH=([small]=/small [big]=/big [checkout]=/api/stripe/create-checkout)
declare -A W_CONNS=([small]=$SMALL_CONNS [big]=$BIG_CONNS [checkout]=$CHECKOUT_CONNS)
declare -A W_LABEL=([small]="GET /small" [big]="GET /big" [checkout]="POST /api/stripe/create-checkout")
# sidecar+id right after the plain sidecar, on /small only.
declare -A W_TARGETS=([small]="direct nginx sidecar identity" [big]="direct nginx sidecar")

metric_lines() {  # the sidecar's request/upstream-error counters
    curl -sS --max-time 5 "http://127.0.0.1:$P_ADMIN/metrics" \
        | grep -E '^stripe_sidecar_(requests_total|upstream_errors_total)' || true
}
METRICS_BEFORE=$(metric_lines)
id_metric_lines() {  # sidecar+id: those, and what it asked Stripe, cached and refused
    curl -sS --max-time 5 "http://127.0.0.1:$P_ADMIN_ID/metrics" \
        | grep -E '^stripe_sidecar_(requests_total|upstream_errors_total|stripe_requests_total|auth_rejections_total|customer_cache_total|subscription_syncs_total)' || true
}

# Other CPU-hungry processes (a concurrent cargo build skews everything).
busy_others() {
    ps -eo pid=,pcpu=,comm= --sort=-pcpu | awk -v self=$$ \
        '$2 >= 20 && $3 != "wrk" && $3 != "nginx" && $3 != "stripe-sidecar" && $3 != "ps" { printf "%s(%s%%) ", $3, $2 }' \
        | head -c 200
}
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
BUSY_BEFORE=$(busy_others || true)

# measure TARGET WORKLOAD [KEY]: warm-up, then one measured wrk run; results
# in R_*[KEY] (default TARGET,WORKLOAD).
measure() {
    local t=$1 w=$2 k=${3:-$1,$2} url conns cpu0 cpu1 out got
    local -a extra=() script=()
    [[ $t == identity || $t == ron || $t == roff ]] && extra=(-H "$ID_AUTH")
    [[ $w == checkout ]] && script=(-s "$TMP/checkout.lua")
    url="${URL[$t]}${W_PATH[$w]}"
    conns=${W_CONNS[$w]}
    # shellcheck disable=SC2046
    R_RSS0[$k]=$(status_kib VmRSS $(pids_of "$t"))
    log "${T_LABEL[$t]} $w${3:+ ($k)}: warm-up ${WARMUP}s, then wrk -t1 -c$conns -d${DURATION}s ${script[*]} $url"
    out=$(timeout $((WARMUP + 30)) wrk -t1 -c"$conns" -d"${WARMUP}s" "${extra[@]}" "${script[@]}" "$url")
    R_WREQS[$k]=$(awk '/ requests in / { print $1 }' <<<"$out")
    R_LOAD[$k]=$(cut -d' ' -f1 /proc/loadavg)
    # shellcheck disable=SC2046
    cpu0=$(cpu_ticks $(pids_of "$t"))
    out=$(timeout $((DURATION + 30)) wrk -t1 -c"$conns" -d"${DURATION}s" --latency "${extra[@]}" "${script[@]}" "$url")
    # shellcheck disable=SC2046
    cpu1=$(cpu_ticks $(pids_of "$t"))
    # shellcheck disable=SC2046
    R_RSS1[$k]=$(status_kib VmRSS $(pids_of "$t"))
    R_TXT[$k]=$out
    read -r R_RPS[$k] R_P50[$k] R_P99[$k] R_REQS[$k] R_ERRS[$k] R_NON2XX[$k] \
        < <(parse_wrk <<<"$out")
    # CPU ms of the process under test per 1000 requests.
    R_CPU[$k]=$(awk -v d=$((cpu1 - cpu0)) -v hz="$CLK_TCK" -v n="${R_REQS[$k]}" \
        'BEGIN { printf "%.1f", (n > 0 ? d * 1000 / hz / n * 1000 : 0) }')
    log "  -> ${R_RPS[$k]} req/s, p50 ${R_P50[$k]} ms, p99 ${R_P99[$k]} ms," \
        "socket errors ${R_ERRS[$k]}, non-2xx ${R_NON2XX[$k]}, CPU ${R_CPU[$k]} ms/1k req, load ${R_LOAD[$k]}"
    # Still healthy after the load?
    got=$(curl -sS --max-time 5 -o /dev/null -w '%{http_code}' "${extra[@]}" "${URL[$t]}/small" || echo fail)
    [[ $got == 200 ]] || die "$t answers $got after the $w load"
}

for w in "${WORKLOADS[@]}"; do
    for t in ${W_TARGETS[$w]}; do
        measure "$t" "$w"
    done
done
# More sidecar+id / sidecar pairs on /small, sidecar+id first this time, so
# the ratio is not one back-to-back pair on a shared 2-core box.
ID_KEYS=("identity,small|sidecar,small")
for ((i = 1; i <= ID_PAIRS; i++)); do
    measure identity small "identity,small,p$i"
    measure sidecar small "sidecar,small,p$i"
    ID_KEYS+=("identity,small,p$i|sidecar,small,p$i")
done

# ----------------------------------------- issue 12: Redis on vs off -------
# Fill both gated sidecars' caches (token, customer, subscription state)
# and check what they answer, then load them in back-to-back pairs.
gated_metric_lines() {  # gated_metric_lines on|off: the counters the Redis rows check
    curl -sS --max-time 5 "${ADMIN[r$1]}/metrics" \
        | grep -E '^stripe_sidecar_(requests_total|upstream_errors_total|stripe_requests_total|auth_rejections_total|gate_decisions_total|state_errors_total|customer_cache_total|subscription_syncs_total)' || true
}
CHECKOUT_URL_WANT=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["url"])' \
    "$TMP/stripe/v1/checkout_sessions.json")
for side in on off; do
    base="${URL[r$side]}"
    # 1. The subscription route: customer found (Customer Search) and state synced.
    sub_json=$(curl -sS --max-time 10 -H "$ID_AUTH" "$base/api/stripe/subscription") \
        || die "Redis $side: GET /api/stripe/subscription failed"
    python3 - "$sub_json" "$ID_CUSTOMER" "$ID_PLAN" "$ID_PRICE" <<'EOF' \
        || die "Redis $side: unexpected /api/stripe/subscription reply: $sub_json"
import json, sys
reply, customer, plan, price = sys.argv[1:5]
r = json.loads(reply)
want = {"customerId": customer, "subscribed": True, "status": "active", "plan": plan, "priceId": price}
bad = {k: r.get(k) for k, v in want.items() if r.get(k) != v}
sys.exit(f"mismatch: {bad}" if bad else 0)
EOF
    # 2. The gate lets the subscriber through and stops an anonymous caller.
    body=$(curl -sS --max-time 5 -H "$ID_AUTH" "$base/small")
    [[ $body == ok ]] || die "Redis $side: gated /small answered '$body' to the subscriber"
    got=$(curl -sS --max-time 5 -o /dev/null -w '%{http_code}' "$base/small")
    [[ $got == 401 ]] || die "Redis $side: gated /small answered $got to an anonymous caller, want 401"
    # 3. Checkout: the customer from the cache, the session from the stand-in.
    reply=$(curl -sS --max-time 10 -H "$ID_AUTH" -H 'Content-Type: application/json' \
        --data "$CHECKOUT_BODY" -w '\n%{http_code}' "$base/api/stripe/create-checkout")
    [[ ${reply##*$'\n'} == 200 ]] || die "Redis $side: checkout answered ${reply##*$'\n'}: ${reply%$'\n'*}"
    got=$(python3 -c 'import json, sys; r = json.loads(sys.argv[1]); print(r["url"], r["sessionId"])' \
        "${reply%$'\n'*}") || die "Redis $side: checkout reply is not the session JSON: $reply"
    [[ $got == "$CHECKOUT_URL_WANT cs_test_"* ]] || die "Redis $side: checkout answered '$got'"
done
REDIS_KEYS=$(rcli --scan --pattern "${REDIS_PREFIX}*" | sort | tr '\n' ' ')
[[ $REDIS_KEYS == *"${REDIS_PREFIX}customer:$ID_USER"* && $REDIS_KEYS == *"${REDIS_PREFIX}subscription:$ID_CUSTOMER"* ]] \
    || die "Redis on: the shared keys are not in Redis after the warm-up (found: '${REDIS_KEYS}')"
log "gated sidecars ready (Redis on / off): subscriber let through, anonymous 401, checkout gives the stand-in's session; Redis holds: $REDIS_KEYS"

GATED_BEFORE_ON=$(gated_metric_lines on)
GATED_BEFORE_OFF=$(gated_metric_lines off)
rcli CONFIG RESETSTAT >/dev/null
REDIS_CPU0=$(cpu_ticks "$REDIS_PID")
# Pairs, alternating which side goes first; each pair: gated GET, then checkout.
REDIS_KEYS_SMALL=() REDIS_KEYS_CHECKOUT=()
for ((i = 1; i <= REDIS_PAIRS; i++)); do
    for w in small checkout; do
        if ((i % 2)); then order=(ron roff); else order=(roff ron); fi
        for t in "${order[@]}"; do measure "$t" "$w" "$t,$w,p$i"; done
        if [[ $w == small ]]; then
            REDIS_KEYS_SMALL+=("ron,small,p$i|roff,small,p$i")
        else
            REDIS_KEYS_CHECKOUT+=("ron,checkout,p$i|roff,checkout,p$i")
        fi
    done
done
REDIS_CPU1=$(cpu_ticks "$REDIS_PID")
REDIS_CPU_MS=$(awk -v d=$((REDIS_CPU1 - REDIS_CPU0)) -v hz="$CLK_TCK" 'BEGIN { printf "%.0f", d * 1000 / hz }')
REDIS_STATS=$(rcli INFO commandstats | tr -d '\r' | grep '^cmdstat_' || true)
GATED_AFTER_ON=$(gated_metric_lines on)
GATED_AFTER_OFF=$(gated_metric_lines off)

# The checks. Per side, from /metrics: Stripe saw only the warm-up's 1 Customer
# Search and 1 subscription list, plus exactly one Checkout Session per
# checkout answered; gate decisions grew by the requests wrk sent (completed
# ones, plus at most the connections' in-flight ones when each wrk stopped)
# and were all "allowed"; no state error (Redis), auth rejection, upstream
# error or status but 200. From Redis: no command at all during the load.
redis_side_problems() {  # redis_side_problems on|off BEFORE AFTER
    local side=$1 k lo_g=0 hi_g=0 lo_c=0 hi_c=0
    for ((i = 1; i <= REDIS_PAIRS; i++)); do
        k="r$side,small,p$i"
        lo_g=$((lo_g + R_WREQS[$k] + R_REQS[$k] + 1))
        hi_g=$((hi_g + R_WREQS[$k] + R_REQS[$k] + 1 + 2 * SMALL_CONNS))
        k="r$side,checkout,p$i"
        lo_c=$((lo_c + R_WREQS[$k] + R_REQS[$k]))
        hi_c=$((hi_c + R_WREQS[$k] + R_REQS[$k] + 2 * CHECKOUT_CONNS))
        lo_g=$((lo_g + 1)) hi_g=$((hi_g + 1))   # measure's health check after the checkout load
    done
    python3 - "$2" "$3" "$lo_g" "$hi_g" "$lo_c" "$hi_c" <<'EOF'
import re, sys
before, after = ({}, {})
for text, into in ((sys.argv[1], before), (sys.argv[2], after)):
    for line in text.splitlines():
        m = re.match(r'^(\w+)(?:\{(.*)\})? (\S+)$', line)
        if m:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
            into[(m.group(1), tuple(sorted(labels.items())))] = float(m.group(3))
lo_g, hi_g, lo_c, hi_c = map(int, sys.argv[3:7])
def total(values, name, **want):
    return sum(v for (n, labels), v in values.items()
               if n == name and all(dict(labels).get(k) == w for k, w in want.items()))
def grew(name, **want):
    return total(after, name, **want) - total(before, name, **want)
def others(name, label, keep):  # growth of the series whose label is not `keep`
    return sum(v - before.get(key, 0) for key, v in after.items()
               if key[0] == name and dict(key[1]).get(label) != keep)
p = []
S = "stripe_sidecar_stripe_requests_total"
search = total(after, S, endpoint="customers_search", outcome="ok")
subs = total(after, S, endpoint="subscriptions", outcome="ok")
sessions = grew(S, endpoint="checkout_sessions", outcome="ok")
rest = total(after, S) - search - subs - total(after, S, endpoint="checkout_sessions", outcome="ok")
if search != 1 or subs != 1 or rest != 0:
    p.append(f"Stripe: {search:.0f} Customer Search, {subs:.0f} subscription lists (want 1 each, at warm-up), {rest:.0f} other calls or failures (want 0)")
checkouts = grew("stripe_sidecar_requests_total", action="checkout", status="200")
# A request in flight when wrk stops may be decided (and its session
# created) but never answered: its client is gone.
if not 0 <= sessions - checkouts <= hi_c - lo_c:
    p.append(f"{sessions:.0f} Checkout Sessions created under load for {checkouts:.0f} checkouts answered 200")
if not lo_c <= checkouts <= hi_c:
    p.append(f"{checkouts:.0f} checkouts answered 200, want {lo_c}..{hi_c} (wrk's count)")
allowed = grew("stripe_sidecar_gate_decisions_total", result="allowed")
if not lo_g <= allowed <= hi_g:
    p.append(f"gate decisions 'allowed' grew by {allowed:.0f}, want {lo_g}..{hi_g} (wrk's count)")
denied = others("stripe_sidecar_gate_decisions_total", "result", "allowed")
if denied:
    p.append(f"{denied:.0f} gate decisions other than 'allowed'")
proxied = grew("stripe_sidecar_requests_total", action="proxy", status="200")
if not 0 <= allowed - proxied <= hi_g - lo_g:
    p.append(f"{proxied:.0f} proxied 200s for {allowed:.0f} gate decisions 'allowed'")
not200 = others("stripe_sidecar_requests_total", "status", "200")
if not200:
    p.append(f"{not200:.0f} requests answered other than 200")
for name in ("stripe_sidecar_auth_rejections_total", "stripe_sidecar_upstream_errors_total"):
    if grew(name):
        p.append(f"{name} grew by {grew(name):.0f}")
if total(after, "stripe_sidecar_state_errors_total"):
    p.append(f"stripe_sidecar_state_errors_total = {total(after, 'stripe_sidecar_state_errors_total'):.0f}")
print("; ".join(p))
print(f"{allowed:.0f} {checkouts:.0f}")
EOF
}
REDIS_OUT_ON=$(redis_side_problems on "$GATED_BEFORE_ON" "$GATED_AFTER_ON")
REDIS_OUT_OFF=$(redis_side_problems off "$GATED_BEFORE_OFF" "$GATED_AFTER_OFF")
REDIS_PROBLEMS=""
[[ -z $(head -n 1 <<<"$REDIS_OUT_ON") ]] || REDIS_PROBLEMS+="Redis on: $(head -n 1 <<<"$REDIS_OUT_ON"); "
[[ -z $(head -n 1 <<<"$REDIS_OUT_OFF") ]] || REDIS_PROBLEMS+="Redis off: $(head -n 1 <<<"$REDIS_OUT_OFF"); "
read -r GATE_ALLOWED_ON CHECKOUTS_ON <<<"$(tail -n 1 <<<"$REDIS_OUT_ON")"
read -r GATE_ALLOWED_OFF CHECKOUTS_OFF <<<"$(tail -n 1 <<<"$REDIS_OUT_OFF")"
# Redis commands during the load (our own INFO / CONFIG left out): with the
# in-process caches warm there should be none.
REDIS_HOT_CALLS=$(awk -F'[:,=]' '$1 != "cmdstat_info" && $1 !~ /^cmdstat_config/ { n += $3; printf "%s=%s ", substr($1, 9), $3 > "/dev/stderr" } END { print n + 0 }' \
    <<<"$REDIS_STATS" 2>"$TMP/redis-hot.txt")
REDIS_HOT_LIST=$(cat "$TMP/redis-hot.txt")
((REDIS_HOT_CALLS == 0)) || REDIS_PROBLEMS+="redis-server ran ${REDIS_HOT_CALLS} commands during the load (${REDIS_HOT_LIST% }): Redis is on the hot path; "
for k in "${!R_REQS[@]}"; do
    [[ $k == ron,* || $k == roff,* ]] || continue
    if ((R_ERRS[$k] + R_NON2XX[$k] > 0)); then
        REDIS_PROBLEMS+="$k: ${R_ERRS[$k]} socket errors, ${R_NON2XX[$k]} non-2xx; "
    fi
done
REDIS_VERDICT=PASS
[[ -z $REDIS_PROBLEMS ]] || REDIS_VERDICT="FAIL: ${REDIS_PROBLEMS%; }"
log "Redis on / off check: $REDIS_VERDICT"
for side in on off; do
    kill -0 "$([[ $side == on ]] && echo "$SIDECAR_RON_PID" || echo "$SIDECAR_ROFF_PID")" 2>/dev/null \
        || die "stripe-sidecar (Redis $side) died during the run"
done
REDIS_WARN_ON=$(grep -ciE '"level":"(warn|error)"|\b(WARN|ERROR)\b' "$TMP/sidecar-redis-on.log" || true)
REDIS_WARN_OFF=$(grep -ciE '"level":"(warn|error)"|\b(WARN|ERROR)\b' "$TMP/sidecar-redis-off.log" || true)
METRICS_AFTER=$(metric_lines)
ID_METRICS_AFTER=$(id_metric_lines)
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# sidecar+id ran on warm caches only if Stripe saw exactly the pre-load
# lookups (1 search, 1 subscription list, 1 entitlements list), no token
# was refused, and every request it answered was a 200.
ID_WRK_REQS=0
for pair in "${ID_KEYS[@]}"; do k=${pair%%|*}; ID_WRK_REQS=$((ID_WRK_REQS + ${R_REQS[$k]:-0})); done
ID_PROBLEMS=$(awk -v wrk="$ID_WRK_REQS" '
    function label(name) {
        if (match($0, name "=\"[^\"]*\"")) return substr($0, RSTART + length(name) + 2, RLENGTH - length(name) - 3)
        return ""
    }
    /^stripe_sidecar_stripe_requests_total[{ ]/ { stripe += $NF; if (label("outcome") == "ok") ok[label("endpoint")] += $NF }
    /^stripe_sidecar_auth_rejections_total[{ ]/ { rejected += $NF }
    /^stripe_sidecar_upstream_errors_total[{ ]/ { upstream += $NF }
    /^stripe_sidecar_requests_total[{ ]/ {
        if (label("status") != "200") not200 += $NF
        else if (label("action") == "proxy") proxied += $NF
    }
    END {
        if (ok["customers_search"] != 1 || ok["subscriptions"] != 1 || ok["active_entitlements"] != 1 || stripe != 3)
            printf "Stripe requests: %d in all, ok search=%d subscriptions=%d entitlements=%d (want exactly 1 each, 3 in all); ", stripe, ok["customers_search"], ok["subscriptions"], ok["active_entitlements"]
        if (rejected > 0) printf "%d auth rejections; ", rejected
        if (upstream > 0) printf "%d upstream errors; ", upstream
        if (not200 > 0) printf "%d requests not 200; ", not200
        if (proxied < wrk) printf "%d proxied 200s, fewer than the %d wrk completed; ", proxied, wrk
    }' <<<"$ID_METRICS_AFTER")
ID_VERDICT=PASS
[[ -z $ID_PROBLEMS ]] || ID_VERDICT="FAIL: $ID_PROBLEMS"
for pair in "${ID_KEYS[@]}"; do
    k=${pair%%|*}
    if ((R_ERRS[$k] + R_NON2XX[$k] > 0)); then
        ID_VERDICT="FAIL: $k: ${R_ERRS[$k]} socket errors, ${R_NON2XX[$k]} non-2xx"
    fi
done
log "sidecar+id warm-cache check: $ID_VERDICT"
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
kill -0 "$SIDECAR_ID_PID" 2>/dev/null || die "stripe-sidecar (identity) died during the run"
ID_WARN=$(grep -ciE '"level":"(warn|error)"|\b(WARN|ERROR)\b' "$TMP/sidecar-id.log" || true)

# ---------------------------------------------------------------- report --
median_ratio() {  # median_ratio FIELD [PAIRS]: median over PAIRS (default ID_KEYS, "a|b") of R_<FIELD>[a] / R_<FIELD>[b]
    local -n field="R_$1"
    local -n pairs="${2:-ID_KEYS}"
    local pair
    for pair in "${pairs[@]}"; do
        awk -v a="${field[${pair%%|*}]}" -v b="${field[${pair##*|}]}" 'BEGIN { if (b > 0) printf "%.4f\n", a / b }'
    done | sort -n | awk '{ v[NR] = $1 } END { if (NR == 0) print "n/a"; else printf "%.2f", (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f×", a / b; else print "n/a" }'; }
fmt_ms() { awk -v v="$1" 'BEGIN { printf (v < 1 ? "%.3f ms" : "%.2f ms"), v }'; }
fmt_int() { awk -v v="$1" 'BEGIN { printf "%.0f", v }'; }

ID_MEDIAN=$(median_ratio RPS)
ID_GOAL_VERDICT=$(awk -v r="$ID_MEDIAN" -v g="$ID_GOAL" 'BEGIN { print (r + 0 >= g + 0 ? "MET" : "MISSED") }')
REDIS_MEDIAN_SMALL=$(median_ratio RPS REDIS_KEYS_SMALL)
REDIS_MEDIAN_CHECKOUT=$(median_ratio RPS REDIS_KEYS_CHECKOUT)
goal_verdict() { awk -v r="$1" -v g="$REDIS_GOAL" 'BEGIN { print (r + 0 >= g + 0 ? "MET" : "MISSED") }'; }
REDIS_GOAL_SMALL=$(goal_verdict "$REDIS_MEDIAN_SMALL")
REDIS_GOAL_CHECKOUT=$(goal_verdict "$REDIS_MEDIAN_CHECKOUT")
NGINX_VERSION=$("$NGINX" -v 2>&1 | sed 's/^nginx version: //')
WRK_VERSION=$(wrk -v 2>&1 | head -n 1 | awk '{ print $1, $2 }' || true)
COMMIT=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)
DIRTY=$(git -C "$REPO" status --porcelain --untracked-files=no 2>/dev/null | grep -q . && echo "+dirty" || true)

report() {
    echo "# stripe-sidecar benchmark"
    echo
    echo "$(date -u '+%Y-%m-%d %H:%M UTC') · nproc $(nproc) · commit $COMMIT$DIRTY · $NGINX_VERSION · $WRK_VERSION · redis-server $REDIS_VERSION · wrk -t1, ${DURATION}s per run after ${WARMUP}s warm-up · sidecar worker_threads=1, nginx worker_processes=1"
    echo
    echo "Background: loadavg ${LOAD_BEFORE} before the load runs, ${LOAD_AFTER} after; other busy processes: ${BUSY_BEFORE:-none} / ${BUSY_AFTER:-none}. (Anything here besides the bench skews the numbers: rerun on a quiet box.)"
    echo
    echo "## Ratios (the headline)"
    echo
    echo "Throughput ratio > 1 means the sidecar is faster; p99 ratio < 1 means its tail latency is lower."
    echo
    echo "| workload | req/s sidecar/direct | req/s sidecar/nginx | p99 sidecar/direct | p99 sidecar/nginx | req/s signed-in+headers / plain sidecar | p99 signed-in+headers / plain sidecar | req/s Redis on / off | p99 Redis on / off |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    for w in "${WORKLOADS[@]}"; do
        printf '| %s | **%s** | **%s** | **%s** | **%s** | — | — | — | — |\n' \
            "GET ${W_PATH[$w]} (-c${W_CONNS[$w]})" \
            "$(ratio "${R_RPS[sidecar,$w]}" "${R_RPS[direct,$w]}")" \
            "$(ratio "${R_RPS[sidecar,$w]}" "${R_RPS[nginx,$w]}")" \
            "$(ratio "${R_P99[sidecar,$w]}" "${R_P99[direct,$w]}")" \
            "$(ratio "${R_P99[sidecar,$w]}" "${R_P99[nginx,$w]}")"
    done
    printf '| %s | %s | %s | %s | %s | **%s** | **%s** | — | — |\n' \
        "GET /small (-c${SMALL_CONNS}), signed in + 6 identity headers, caches warm (sidecar+id)" \
        "$(ratio "${R_RPS[identity,small]}" "${R_RPS[direct,small]}")" \
        "$(ratio "${R_RPS[identity,small]}" "${R_RPS[nginx,small]}")" \
        "$(ratio "${R_P99[identity,small]}" "${R_P99[direct,small]}")" \
        "$(ratio "${R_P99[identity,small]}" "${R_P99[nginx,small]}")" \
        "$(ratio "${R_RPS[identity,small]}" "${R_RPS[sidecar,small]}")" \
        "$(ratio "${R_P99[identity,small]}" "${R_P99[sidecar,small]}")"
    printf '| %s | — | — | — | — | — | — | **%s×** | **%s×** |\n' \
        "GET /small (-c${SMALL_CONNS}), signed in, gated on a subscription, caches warm: median of ${REDIS_PAIRS} pairs" \
        "$REDIS_MEDIAN_SMALL" "$(median_ratio P99 REDIS_KEYS_SMALL)"
    printf '| %s | — | — | — | — | — | — | **%s×** | **%s×** |\n' \
        "POST /api/stripe/create-checkout (-c${CHECKOUT_CONNS}), signed in, customer cached: median of ${REDIS_PAIRS} pairs" \
        "$REDIS_MEDIAN_CHECKOUT" "$(median_ratio P99 REDIS_KEYS_CHECKOUT)"
    echo
    echo "On the sidecar+id row, the first four columns are sidecar+id/direct and sidecar+id/nginx. The last two rows compare two gated sidecars that differ only in \`[state] redis_url\` (see below)."
    echo
    echo "## Signed-in + identity headers vs the plain sidecar (issue 11: within 10 %)"
    echo
    echo "GET /small -c${SMALL_CONNS} with \`Authorization: Bearer <HS256 JWT>\` through a second sidecar with all six \`[identity_headers]\` and \`subscriptions.entitlements = true\`; customer and subscription state from a static nginx Stripe stand-in, read once before the load (caches warm). Each pair is one sidecar+id run and one plain-sidecar run back to back (pair 0: plain first; pairs 1+: sidecar+id first). Goal: req/s ratio ≥ ${ID_GOAL}."
    echo
    echo "| pair | req/s sidecar+id | req/s sidecar | req/s ratio | p99 ratio | sidecar CPU ms / 1k req: +id / plain | loadavg (1 min) at start: +id / plain |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
    local i=0 pair ki kp
    for pair in "${ID_KEYS[@]}"; do
        ki=${pair%%|*} kp=${pair##*|}
        printf '| %s | %s | %s | **%s** | %s | %s / %s (%s) | %s / %s |\n' "$i" \
            "$(fmt_int "${R_RPS[$ki]}")" "$(fmt_int "${R_RPS[$kp]}")" \
            "$(ratio "${R_RPS[$ki]}" "${R_RPS[$kp]}")" "$(ratio "${R_P99[$ki]}" "${R_P99[$kp]}")" \
            "${R_CPU[$ki]}" "${R_CPU[$kp]}" "$(ratio "${R_CPU[$ki]}" "${R_CPU[$kp]}")" \
            "${R_LOAD[$ki]}" "${R_LOAD[$kp]}"
        i=$((i + 1))
    done
    printf '| **median** | | | **%s** | %s | (%s) | |\n' \
        "$(median_ratio RPS)×" "$(median_ratio P99)×" "$(median_ratio CPU)×"
    echo
    echo "Verdict: median req/s ratio $(median_ratio RPS) vs goal ${ID_GOAL}: **${ID_GOAL_VERDICT}**. Warm-cache check (sidecar+id /metrics: exactly 1 Customer Search, 1 subscription list, 1 entitlements list, all before the load; no auth rejections; every request 200): **${ID_VERDICT}**. The app saw \`${ID_ECHO}\` (user id | email | customer | status | plan | features)."
    echo
    echo "## Redis on vs off (issue 12: within 10 %, the in-process cache answers first)"
    echo
    echo "Two sidecars alike but for \`[state]\`: **on** has \`redis_url\` = a local redis-server (\`--save \"\" --appendonly no\`), **off** has none. Both gate \`/small\` with \`[[gates]] require = \"subscription\"\` and sell \`pro\` at checkout; the same HS256 session; customer and subscription state from the Stripe stand-in, read once before the load (caches warm; on the **on** side that warm-up also wrote Redis: \`${REDIS_KEYS% }\`). Gated GET: \`wrk -t1 -c${SMALL_CONNS}\`; checkout: \`wrk -t1 -c${CHECKOUT_CONNS} -s checkout.lua\` (POST, JSON body \`${CHECKOUT_BODY}\`), each checkout creating a Checkout Session at the stand-in (nginx \`return 200\`), so it measures the sidecar's whole checkout path against a zero-latency Stripe. Pairs run back to back, odd pairs on first, even pairs off first. Goal: median req/s ratio ≥ ${REDIS_GOAL}."
    echo
    local set label keys_name
    for set in small checkout; do
        if [[ $set == small ]]; then
            keys_name=REDIS_KEYS_SMALL label="GET /small -c${SMALL_CONNS}, gated"
        else
            keys_name=REDIS_KEYS_CHECKOUT label="POST /api/stripe/create-checkout -c${CHECKOUT_CONNS}"
        fi
        local -n keys=$keys_name
        echo "**${label}**"
        echo
        echo "| pair | req/s on | req/s off | req/s ratio | p99 on | p99 off | p99 ratio | sidecar CPU ms / 1k req: on / off | loadavg (1 min) at start: on / off |"
        echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
        local pn=1 pair kon koff
        for pair in "${keys[@]}"; do
            kon=${pair%%|*} koff=${pair##*|}
            printf '| %s | %s | %s | **%s** | %s | %s | %s | %s / %s (%s) | %s / %s |\n' "$pn" \
                "$(fmt_int "${R_RPS[$kon]}")" "$(fmt_int "${R_RPS[$koff]}")" \
                "$(ratio "${R_RPS[$kon]}" "${R_RPS[$koff]}")" \
                "$(fmt_ms "${R_P99[$kon]}")" "$(fmt_ms "${R_P99[$koff]}")" \
                "$(ratio "${R_P99[$kon]}" "${R_P99[$koff]}")" \
                "${R_CPU[$kon]}" "${R_CPU[$koff]}" "$(ratio "${R_CPU[$kon]}" "${R_CPU[$koff]}")" \
                "${R_LOAD[$kon]}" "${R_LOAD[$koff]}"
            pn=$((pn + 1))
        done
        printf '| **median** | | | **%s×** | | | %s× | (%s×) | |\n' \
            "$(median_ratio RPS "$keys_name")" "$(median_ratio P99 "$keys_name")" "$(median_ratio CPU "$keys_name")"
        echo
        unset -n keys
    done
    echo "Verdict: median req/s ratio on/off, gated GET ${REDIS_MEDIAN_SMALL}: **${REDIS_GOAL_SMALL}**; checkout ${REDIS_MEDIAN_CHECKOUT}: **${REDIS_GOAL_CHECKOUT}** (goal ≥ ${REDIS_GOAL}). Check (per side, /metrics: Stripe saw 1 Customer Search and 1 subscription list, both at warm-up, and one Checkout Session per checkout answered; \`gate_decisions_total{result=\"allowed\"}\` grew by wrk's request count, give or take the requests in flight when each wrk stopped, and nothing else was decided; no \`state_errors_total\`, auth rejection, upstream error or status but 200; redis-server: no command at all during the load): **${REDIS_VERDICT}**."
    echo
    echo "- gate decisions 'allowed' during the load: on ${GATE_ALLOWED_ON:-?}, off ${GATE_ALLOWED_OFF:-?}; checkouts answered 200 (= Checkout Sessions created): on ${CHECKOUTS_ON:-?}, off ${CHECKOUTS_OFF:-?}"
    echo "- redis-server during the load (\`INFO commandstats\` after \`CONFIG RESETSTAT\` at its start, our own INFO/CONFIG left out): ${REDIS_HOT_CALLS} commands${REDIS_HOT_LIST:+ (${REDIS_HOT_LIST% })}; ${REDIS_CPU_MS} ms of CPU"
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
    echo "| workload | target | req/s | p50 | p99 | requests | socket errors | non-2xx | proxy CPU ms / 1k req | RSS before → after | loadavg (1 min) at start |"
    echo "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    local rows=() row k t label
    for w in "${WORKLOADS[@]}"; do
        for t in ${W_TARGETS[$w]}; do rows+=("$t,$w|$w|${T_LABEL[$t]}"); done
    done
    for ((i = 1; i <= ID_PAIRS; i++)); do
        rows+=("identity,small,p$i|small|sidecar+id (pair $i)" "sidecar,small,p$i|small|sidecar (pair $i)")
    done
    for w in small checkout; do
        for ((i = 1; i <= REDIS_PAIRS; i++)); do
            rows+=("ron,$w,p$i|$w|gated, Redis on (pair $i)" "roff,$w,p$i|$w|gated, Redis off (pair $i)")
        done
    done
    for row in "${rows[@]}"; do
        IFS='|' read -r k w label <<<"$row"
        t=${k%%,*}
        local rss="—" cpu="${R_CPU[$k]}"
        [[ $t == direct ]] && cpu="(backend) $cpu"
        [[ $t != direct ]] && rss="$(mib "${R_RSS0[$k]}") → $(mib "${R_RSS1[$k]}") MiB"
        printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' \
            "${W_LABEL[$w]#GET } -c${W_CONNS[$w]}" "$label" "$(fmt_int "${R_RPS[$k]}")" \
            "$(fmt_ms "${R_P50[$k]}")" "$(fmt_ms "${R_P99[$k]}")" "${R_REQS[$k]}" \
            "${R_ERRS[$k]}" "${R_NON2XX[$k]}" "$cpu" "$rss" "${R_LOAD[$k]}"
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
    echo "- sidecar+id: threads $(awk '$1 == "Threads:" { print $2 }' "/proc/$SIDECAR_ID_PID/status"); warn/error log lines: ${ID_WARN:-0}; /metrics after the load runs (warm-cache check: ${ID_VERDICT}):"
    echo '```'
    echo "${ID_METRICS_AFTER:-(none)}" | grep -vE ' 0$' || true
    echo '```'
    echo "  (counters at 0 left out)"
    local side before after warn
    for side in on off; do
        if [[ $side == on ]]; then
            before=$GATED_BEFORE_ON after=$GATED_AFTER_ON warn=$REDIS_WARN_ON
        else
            before=$GATED_BEFORE_OFF after=$GATED_AFTER_OFF warn=$REDIS_WARN_OFF
        fi
        echo "- gated, Redis $side: warn/error log lines: ${warn:-0}; /metrics after the warm-up → after the load (check: ${REDIS_VERDICT%%:*}):"
        echo '```'
        join -a1 -a2 -e 0 -o 0,1.2,2.2 <(sort -k1,1 <<<"$before") <(sort -k1,1 <<<"$after") \
            | awk '$3 != 0 { printf "%s %s → %s\n", $1, $2, $3 }'
        echo '```'
    done
    echo "- redis-server \`INFO commandstats\` after the load:"
    echo '```'
    echo "${REDIS_STATS:-(none)}"
    echo '```'
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
    for t in ${W_TARGETS[$w]}; do
        if ((R_ERRS[$t,$w] + R_NON2XX[$t,$w] > 0)); then
            log "WARNING: $t ${W_PATH[$w]}: ${R_ERRS[$t,$w]} socket errors, ${R_NON2XX[$t,$w]} non-2xx"
        fi
    done
done
[[ $STREAM_VERDICT == PASS && $UPLOAD_VERDICT == PASS ]] || die "a streamed 1 GiB transfer failed its check"
[[ $ID_VERDICT == PASS ]] || die "sidecar+id: $ID_VERDICT"
[[ $REDIS_VERDICT == PASS ]] || die "Redis on / off: $REDIS_VERDICT"
log "sidecar+id: median req/s ratio to the plain sidecar $ID_MEDIAN (goal $ID_GOAL): $ID_GOAL_VERDICT"
log "Redis on / off: median req/s ratio, gated GET $REDIS_MEDIAN_SMALL: $REDIS_GOAL_SMALL; checkout $REDIS_MEDIAN_CHECKOUT: $REDIS_GOAL_CHECKOUT (goal $REDIS_GOAL)"
