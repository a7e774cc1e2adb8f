#!/usr/bin/env bash
# The benchmark: every goal of the sidecar's performance issue measured in
# one run, side by side, interleaved, on this machine. Loopback only.
#
#   proxy      GET 100 B and 64 KiB at 16 and 64 connections (wrk -t2):
#              direct (wrk -> app) vs nginx (worker_processes 2, upstream
#              keep-alive) vs stripe-sidecar (worker_threads = 2)
#   identity   GET 100 B, -c16, signed in, gated on a subscription, six
#              identity headers (caches warm) vs the plain sidecar
#   redis      gated GET and checkout, Redis on vs off (caches warm)
#   checkout   POST /api/stripe/create-checkout, -c16, signed in: the
#              sidecar vs a Node peer (bench/node-peer: node:http + jose +
#              stripe-node), both against the same fake Stripe (nginx),
#              which counts the TCP connections each opens to it
#   memory     ready time (exec -> /readyz 200), idle RSS, RSS after the
#              load, after connection bursts, and peak RSS while 256 MiB
#              stream down, up, and both at once
#
# Every load row: BENCH_COUNT rounds (default 3); in each round every target
# of the row runs once, the order rotating (A B, B A, A B, ...); the row's
# figures are medians over the rounds, ratios the median of the per-round
# ratios. Prints markdown (req/s, p50/p99/p99.9, the ratios, PASS/FAIL
# against each goal) on stdout and into bench/results.md, with the command
# line and commit. Exits 1 when a correctness check fails (wrong body,
# errors, a cache or Redis on the hot path, a short stream); a missed goal
# is FAIL in the report and, with BENCH_STRICT=1, exit 3.
#
# Usage: bash bench/run.sh          (knobs: see bench/README.md)
set -euo pipefail
# The whole script is one brace group, read in full before it runs, so
# editing this file during a run cannot change the run.
{
BENCH_NAME=bench
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# What was asked, for the report's first line (before the defaults are set).
CMDLINE="$( (env | grep -E '^(BENCH_[A-Z_]+|SIDECAR_BIN)=' || true) | sort | tr '\n' ' ')bash bench/run.sh${*:+ $*}"
COUNT=${BENCH_COUNT:-3}
DURATION=${BENCH_DURATION:-10}
WARMUP=${BENCH_WARMUP:-2}
CONNS_LOW=${BENCH_CONNS_LOW:-16}
CONNS_HIGH=${BENCH_CONNS_HIGH:-64}
WRK_THREADS=${BENCH_WRK_THREADS:-2}
WORKERS=${BENCH_WORKERS:-2}                   # sidecar worker_threads = nginx worker_processes
BACKEND_WORKERS=${BENCH_BACKEND_WORKERS:-1}   # the app's nginx
NODE_WORKERS=${BENCH_NODE_WORKERS:-1}         # Node peer processes (1 = as `next start`)
export BENCH_STREAM_MIB=${BENCH_STREAM_MIB:-256}
BURST_CONNS=${BENCH_BURST_CONNS:-2000}
BURST_ROUNDS=${BENCH_BURST_ROUNDS:-3}
BURST_QUIET=${BENCH_BURST_QUIET:-5}
READY_RUNS=${BENCH_READY_RUNS:-5}
CACHE=${BENCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/stripe-sidecar-bench}
STRICT=${BENCH_STRICT:-0}
((COUNT >= 1)) || die "BENCH_COUNT must be at least 1"

# The goals (issue: "ahead of nginx on every row, and ten times the Node route").
G_PROXY_RPS=1.10   # sidecar req/s >= 1.1x nginx, each proxy row
G_PROXY_P99=1.00   # sidecar p99 <= nginx's
G_CHECKOUT=10      # sidecar checkout req/s >= 10x the Node peer
G_ID=0.90          # gated + identity headers within 10 % of the plain proxy
G_REDIS=0.90       # Redis on within 10 % of Redis off
G_IDLE_MIB=8       # idle RSS
G_LOADED_MIB=24    # RSS after the load, after connection bursts
G_STREAM_MIB=16    # peak RSS streaming 256 MiB both ways <= idle + this
G_READY_MS=50      # exec -> /readyz 200

RESULTS="$BENCH_DIR/results.md"

# ------------------------------------------------------------ install ----
need_tools wrk redis-server redis-cli node npm
# stripe 23 and jose 6 need Node 20 (Debian 12's own nodejs is 18).
(($(node -p 'process.versions.node.split(".")[0]') >= 20)) \
    || die "the Node peer needs node >= 20, found $(node -v) at $(command -v node)"
build_release
NODE_PEER_SRC="$BENCH_DIR/node-peer"
node_peer_install() {  # npm ci into the cache (keyed by the lock), once; sets NODE_PEER_DIR
    local key
    key=$(cat "$NODE_PEER_SRC/package.json" "$NODE_PEER_SRC/package-lock.json" | sha256sum | cut -c1-16)
    NODE_PEER_DIR="$CACHE/node-peer-$key"
    if [[ ! -f $NODE_PEER_DIR/node_modules/stripe/package.json || ! -f $NODE_PEER_DIR/node_modules/jose/package.json ]]; then
        log "npm ci for the Node peer into $NODE_PEER_DIR"
        rm -rf "$NODE_PEER_DIR"
        mkdir -p "$NODE_PEER_DIR"
        cp "$NODE_PEER_SRC/package.json" "$NODE_PEER_SRC/package-lock.json" "$NODE_PEER_DIR/"
        (cd "$NODE_PEER_DIR" && npm ci --no-audit --no-fund --loglevel=error >&2) || die "npm ci failed"
    fi
    cp "$NODE_PEER_SRC/server.mjs" "$NODE_PEER_DIR/server.mjs"
}
node_peer_install
STRIPE_NODE_VERSION=$(node -p "require('$NODE_PEER_DIR/node_modules/stripe/package.json').version")
JOSE_VERSION=$(node -p "require('$NODE_PEER_DIR/node_modules/jose/package.json').version")

make_tmp
ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
(($(ulimit -n) >= 2 * BURST_CONNS + 200)) || die "ulimit -n $(ulimit -n) is too low for $BURST_CONNS connections"
CLK_TCK=$(getconf CLK_TCK)

read -r P_APP P_PROXY P_SIDECAR P_ADMIN P_ID P_ID_ADMIN P_RON P_RON_ADMIN P_ROFF P_ROFF_ADMIN \
    P_SC P_SC_ADMIN P_MEM P_MEM_ADMIN P_NODE P_NODE2 P_REDIS \
    P_STRIPE P_STRIPE_SC P_STRIPE_NODE P_STRIPE_NODE2 < <(free_ports 21)
log "ports: app=$P_APP nginx=$P_PROXY sidecar=$P_SIDECAR/$P_ADMIN id=$P_ID redis-on=$P_RON" \
    "redis-off=$P_ROFF checkout=$P_SC node=$P_NODE/$P_NODE2 redis=$P_REDIS" \
    "fake-stripe=$P_STRIPE (sidecar checkout $P_STRIPE_SC, node $P_STRIPE_NODE/$P_STRIPE_NODE2)"

# ---------------------------------------------------- app and nginx proxy --
start_app "$P_APP" "$BACKEND_WORKERS"
STREAM_SIZE=$(stat -c %s "$TMP/www/stream")
{
    nginx_head proxy "$WORKERS"
    cat <<EOF
    upstream app {
        server 127.0.0.1:$P_APP;
        keepalive $((CONNS_HIGH > 64 ? CONNS_HIGH : 64));
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$P_PROXY reuseport backlog=4096;
        location / {
            proxy_pass http://app;
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
start_nginx proxy
PROXY_PID=$NGINX_PID
wait_http "http://127.0.0.1:$P_PROXY/small" "$PROXY_PID" "nginx proxy"

# -------------------------------------------------------- the fake Stripe --
# Static nginx answering what the sidecar and stripe-node ask, with Stripe's
# own example objects (tests/fixtures/stripe/) overridden as the test suite's
# fake Stripe does, so async-stripe deserializes them: Customer Search (the
# user's customer), create customer, the subscription and entitlement lists,
# create Checkout Session. And the HS256 session token of that user.
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

# POST answers go into the nginx conf as `return 200 '...'` (a static file
# answers POST with 405), so they must hold no quote, backslash or '$'.
def inline(name, obj):
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    bad = sorted(set(text) & set("'\\$"))
    if bad:
        sys.exit(f"{name} has {bad}: cannot go into an nginx return")
    with open(f"{out}/{name}.json", "w") as f:
        f.write(text)
session = load("checkout.session")
session_id = "cs_test_a1BenchCheckout0000000000000000000000000000000000000001"
session.update(id=session_id, url=f"https://checkout.stripe.com/c/pay/{session_id}",
               mode="subscription", customer=customer, customer_email=None,
               customer_creation=None, customer_details=None, payment_intent=None,
               subscription=None, client_reference_id=user, metadata={"user_id": user},
               success_url="https://bench.local/ok", cancel_url="https://bench.local/no",
               allow_promotion_codes=None, status="open", payment_status="unpaid",
               livemode=False, created=now, expires_at=now + 24 * 3600)
inline("checkout_sessions", session)
inline("customers_create", cus)

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
ID_AUTH="Authorization: Bearer $ID_JWT"

cat >"$TMP/stripe-locations.conf" <<EOF
        default_type application/json;
        # Paths only: the query (customer=..., status=all, query=...) is the client's business.
        location = /v1/customers/search { alias $TMP/stripe/v1/customers_search.json; }
        location = /v1/customers { return 200 '$(cat "$TMP/stripe/v1/customers_create.json")'; }
        location = /v1/subscriptions { alias $TMP/stripe/v1/subscriptions.json; }
        location = /v1/entitlements/active_entitlements { alias $TMP/stripe/v1/active_entitlements.json; }
        location = /v1/checkout/sessions { return 200 '$(cat "$TMP/stripe/v1/checkout_sessions.json")'; }
        location / { return 404 '{"error":{"type":"invalid_request_error","message":"not in the bench stand-in"}}'; }
EOF
STRIPE_LOG="$TMP/stripe-access.log"
{
    nginx_head stripe 1
    cat <<EOF
    # One line per request to the checkout row's ports: which port (whose
    # client), which TCP connection (nginx's serial number) it came on.
    log_format conns '\$server_port \$connection \$request_method \$uri \$status';
    server {
        listen 127.0.0.1:$P_STRIPE;
        include $TMP/stripe-locations.conf;
    }
    server {
        listen 127.0.0.1:$P_STRIPE_SC;
        listen 127.0.0.1:$P_STRIPE_NODE;
        listen 127.0.0.1:$P_STRIPE_NODE2;
        access_log $STRIPE_LOG conns;
        include $TMP/stripe-locations.conf;
    }
}
EOF
} >"$TMP/stripe.conf"
start_nginx stripe
STRIPE_PID=$NGINX_PID
wait_http "http://127.0.0.1:$P_STRIPE/v1/subscriptions" "$STRIPE_PID" "fake Stripe (nginx)"

# ------------------------------------------------------- sidecar configs --
server_section() {  # server_section PORT ADMIN_PORT
    cat <<EOF
[server]
listen = "127.0.0.1:$1"
admin_listen = "127.0.0.1:$2"
worker_threads = $WORKERS
access_log = false
log_format = "json"
shutdown_drain_seconds = 0
shutdown_grace_seconds = 3

[upstream]
url = "http://127.0.0.1:$P_APP"
EOF
}
billing_sections() {  # billing_sections STRIPE_PORT
    cat <<EOF

[auth]
hs256_secret = "$ID_SECRET"

[stripe]
secret_key = "sk_test_bench_not_a_real_key"
api_base = "http://127.0.0.1:$1"
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
EOF
}
REDIS_PREFIX="bench-$$:"
server_section "$P_SIDECAR" "$P_ADMIN" >"$TMP/sidecar.toml"
server_section "$P_MEM" "$P_MEM_ADMIN" >"$TMP/sidecar-mem.toml"
{
    server_section "$P_ID" "$P_ID_ADMIN"
    billing_sections "$P_STRIPE"
    cat <<EOF
entitlements = true

[identity_headers]
user_id = "x-user-id"
email = "x-user-email"
customer = "x-stripe-customer-id"
subscription_status = "x-subscription-status"
plan = "x-subscription-plan"
features = "x-entitlements"

[[gates]]
path = "/100b"
require = "subscription"
EOF
} >"$TMP/sidecar-id.toml"
for side in on off; do
    {
        if [[ $side == on ]]; then server_section "$P_RON" "$P_RON_ADMIN"; else server_section "$P_ROFF" "$P_ROFF_ADMIN"; fi
        billing_sections "$P_STRIPE"
        printf '\n[[gates]]\npath = "/100b"\nrequire = "subscription"\n'
        if [[ $side == on ]]; then
            printf '\n[state]\nredis_url = "redis://127.0.0.1:%s/0"\nkey_prefix = "%s"\n' "$P_REDIS" "$REDIS_PREFIX"
        fi
    } >"$TMP/sidecar-redis-$side.toml"
done
{
    server_section "$P_SC" "$P_SC_ADMIN"
    billing_sections "$P_STRIPE_SC"
} >"$TMP/sidecar-checkout.toml"
for f in sidecar sidecar-mem sidecar-id sidecar-redis-on sidecar-redis-off sidecar-checkout; do
    check_config "$TMP/$f.toml"
done

# ------------------------------------------------------------- processes --
start_bg() {  # start_bg LOG CMD...: background, ours to stop; sets BG_PID
    local logfile=$1
    shift
    "$@" >"$logfile" 2>&1 &
    BG_PID=$!
    STARTED_PIDS+=("$BG_PID")
}
sidecar_up() {  # sidecar_up NAME ADMIN_PORT: sets BG_PID
    start_bg "$TMP/$1.log" "$SIDECAR" --config "$TMP/$1.toml"
    wait_http "http://127.0.0.1:$2/readyz" "$BG_PID" "stripe-sidecar ($1)"
}
# The plain sidecar first, so its idle RSS is taken before anything else runs.
sidecar_up sidecar "$P_ADMIN"; SIDECAR_PID=$BG_PID
sleep 1
HEADLINE_IDLE_KIB=$(status_kib VmRSS "$SIDECAR_PID")
sidecar_up sidecar-id "$P_ID_ADMIN"; ID_PID=$BG_PID
start_bg "$TMP/redis.log" redis-server --bind 127.0.0.1 --port "$P_REDIS" --save "" --appendonly no \
    --daemonize no --dir "$TMP"
REDIS_PID=$BG_PID
rcli() { redis-cli -h 127.0.0.1 -p "$P_REDIS" "$@"; }
for i in $(seq 100); do
    kill -0 "$REDIS_PID" 2>/dev/null || die "redis-server exited during start-up"
    [[ $(rcli PING 2>/dev/null) == PONG ]] && break
    sleep 0.1
done
[[ $(rcli PING 2>/dev/null) == PONG ]] || die "redis-server does not answer PING after 10 s"
REDIS_VERSION=$(redis-server --version | sed -n 's/.* v=\([^ ]*\).*/\1/p')
sidecar_up sidecar-redis-on "$P_RON_ADMIN"; RON_PID=$BG_PID
sidecar_up sidecar-redis-off "$P_ROFF_ADMIN"; ROFF_PID=$BG_PID
sidecar_up sidecar-checkout "$P_SC_ADMIN"; SC_PID=$BG_PID
node_up() {  # node_up PORT STRIPE_PORT CUSTOMER_MODE: sets BG_PID
    start_bg "$TMP/node-$3.log" env PORT="$1" STRIPE_PORT="$2" CUSTOMER_MODE="$3" \
        JWT_SECRET="$ID_SECRET" PRICES="{\"$ID_PLAN\":\"$ID_PRICE\"}" WORKERS="$NODE_WORKERS" \
        NODE_ENV=production node "$NODE_PEER_DIR/server.mjs"
    wait_http "http://127.0.0.1:$1/healthz" "$BG_PID" "Node peer ($3)"
}
node_up "$P_NODE" "$P_STRIPE_NODE" search; NODE_PID=$BG_PID
node_up "$P_NODE2" "$P_STRIPE_NODE2" email; NODE2_PID=$BG_PID

# ---------------------------------------------------------------- targets --
declare -A URL=(
    [direct]="http://127.0.0.1:$P_APP" [nginx]="http://127.0.0.1:$P_PROXY"
    [sidecar]="http://127.0.0.1:$P_SIDECAR" [identity]="http://127.0.0.1:$P_ID"
    [ron]="http://127.0.0.1:$P_RON" [roff]="http://127.0.0.1:$P_ROFF"
    [sc]="http://127.0.0.1:$P_SC" [node]="http://127.0.0.1:$P_NODE" [node-email]="http://127.0.0.1:$P_NODE2"
)
declare -A ADMIN=([sidecar]=$P_ADMIN [identity]=$P_ID_ADMIN [ron]=$P_RON_ADMIN [roff]=$P_ROFF_ADMIN [sc]=$P_SC_ADMIN)
declare -A T_LABEL=([direct]=direct [nginx]=nginx [sidecar]=sidecar
    [identity]="sidecar, gated + 6 identity headers" [ron]="sidecar, Redis on" [roff]="sidecar, Redis off"
    [sc]=sidecar [node]="Node peer (search + create)" [node-email]="Node peer (8space as published)")
declare -A T_AUTH=([identity]=1 [ron]=1 [roff]=1 [sc]=1 [node]=1 [node-email]=1)
declare -A T_STRIPE_PORT=([sc]=$P_STRIPE_SC [node]=$P_STRIPE_NODE [node-email]=$P_STRIPE_NODE2)
pids_of() {  # the processes whose CPU counts for a target (nginx: master + workers)
    case $1 in
        direct) echo "$APP_PID $(children_of "$APP_PID")" ;;
        nginx) echo "$PROXY_PID $(children_of "$PROXY_PID")" ;;
        sidecar) echo "$SIDECAR_PID" ;;
        identity) echo "$ID_PID" ;;
        ron) echo "$RON_PID" ;;
        roff) echo "$ROFF_PID" ;;
        sc) echo "$SC_PID" ;;
        node) echo "$NODE_PID $(children_of "$NODE_PID")" ;;
        node-email) echo "$NODE2_PID $(children_of "$NODE2_PID")" ;;
    esac
}
health() {  # health TARGET: one request after a load; 200 or die
    local t=$1 got path=/100b
    local -a auth=()
    [[ -n ${T_AUTH[$t]:-} ]] && auth=(-H "$ID_AUTH")
    [[ $t == node* ]] && path=/healthz
    got=$(curl -sS --max-time 5 -o /dev/null -w '%{http_code}' "${auth[@]}" "${URL[$t]}$path" || echo fail)
    [[ $got == 200 ]] || die "${T_LABEL[$t]} answers $got to GET $path"
}
metrics_of() {  # metrics_of TARGET: the counters the checks read
    curl -sS --max-time 5 "http://127.0.0.1:${ADMIN[$1]}/metrics" \
        | grep -E '^stripe_sidecar_(requests_total|upstream_errors_total|stripe_requests_total|auth_rejections_total|gate_decisions_total|state_errors_total|customer_cache_total|subscription_syncs_total)' || true
}

# ------------------------------------------------------ checks before load --
for t in direct nginx sidecar; do
    for f in 100b 64k; do
        cmp -s <(curl -sS --max-time 10 "${URL[$t]}/$f") "$TMP/www/$f" || die "$t /$f: body differs from the file"
    done
done
log "direct, nginx and sidecar serve /100b and /64k byte for byte"

# identity: the subscription route reads customer, plan and feature through
# the sidecar's own Stripe code; the app gets all six headers (spoofed
# copies replaced) behind the gate, none for an anonymous caller.
check_subscription() {  # check_subscription TARGET [FEATURE]
    local reply
    reply=$(curl -sS --max-time 10 -H "$ID_AUTH" "${URL[$1]}/api/stripe/subscription") \
        || die "$1: GET /api/stripe/subscription failed"
    python3 - "$reply" "$ID_CUSTOMER" "$ID_PLAN" "$ID_PRICE" "${2:-}" <<'EOF' \
        || die "$1: unexpected /api/stripe/subscription reply: $reply"
import json, sys
reply, customer, plan, price, feature = sys.argv[1:6]
r = json.loads(reply)
want = {"customerId": customer, "subscribed": True, "status": "active", "plan": plan, "priceId": price}
if feature:
    want["features"] = [feature]
bad = {k: r.get(k) for k, v in want.items() if r.get(k) != v}
sys.exit(f"mismatch: {bad}" if bad else 0)
EOF
}
check_subscription identity "$ID_FEATURE"
ID_ECHO_WANT="$ID_USER|$ID_EMAIL|$ID_CUSTOMER|active|$ID_PLAN|$ID_FEATURE"
ID_ECHO=$(curl -sS --max-time 5 -H "$ID_AUTH" -H "x-subscription-status: spoofed" \
    -H "x-entitlements: everything" "${URL[identity]}/identity-echo")
[[ $ID_ECHO == "$ID_ECHO_WANT" ]] || die "identity: the app saw '$ID_ECHO', want '$ID_ECHO_WANT'"
anon_echo=$(curl -sS --max-time 5 -H "x-user-id: spoofed" -H "x-subscription-status: active" "${URL[identity]}/identity-echo")
[[ $anon_echo == "|||||" ]] || die "identity: an anonymous request reached the app with '$anon_echo'"
cmp -s <(curl -sS --max-time 5 -H "$ID_AUTH" "${URL[identity]}/100b") "$TMP/www/100b" || die "identity: gated /100b differs"
got=$(curl -sS --max-time 5 -o /dev/null -w '%{http_code}' "${URL[identity]}/100b")
[[ $got == 401 ]] || die "identity: gated /100b answered $got to an anonymous caller, want 401"
log "identity checks passed: the app sees '$ID_ECHO'"

# Checkout: the same body for every target; the session must be the fake's.
CHECKOUT_BODY='{"priceId":"pro","mode":"subscription","successUrl":"https://bench.local/ok","cancelUrl":"https://bench.local/no"}'
CHECKOUT_URL_WANT=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["url"])' "$TMP/stripe/v1/checkout_sessions.json")
check_checkout() {  # check_checkout TARGET
    local reply got
    reply=$(curl -sS --max-time 10 -H "$ID_AUTH" -H 'Content-Type: application/json' \
        --data "$CHECKOUT_BODY" -w '\n%{http_code}' "${URL[$1]}/api/stripe/create-checkout")
    [[ ${reply##*$'\n'} == 200 ]] || die "$1: checkout answered ${reply##*$'\n'}: ${reply%$'\n'*}"
    got=$(python3 -c 'import json, sys; r = json.loads(sys.argv[1]); print(r["url"], r["sessionId"])' \
        "${reply%$'\n'*}") || die "$1: checkout reply is not the session JSON: $reply"
    [[ $got == "$CHECKOUT_URL_WANT cs_test_"* ]] || die "$1: checkout answered '$got'"
    got=$(curl -sS --max-time 5 -o /dev/null -w '%{http_code}' -H 'Authorization: Bearer not.a.token' \
        -H 'Content-Type: application/json' --data "$CHECKOUT_BODY" "${URL[$1]}/api/stripe/create-checkout")
    [[ $got == 401 ]] || die "$1: checkout with a broken token answered $got, want 401"
}
for side in on off; do
    t=r$side
    check_subscription "$t"
    cmp -s <(curl -sS --max-time 5 -H "$ID_AUTH" "${URL[$t]}/100b") "$TMP/www/100b" || die "$t: gated /100b differs"
    got=$(curl -sS --max-time 5 -o /dev/null -w '%{http_code}' "${URL[$t]}/100b")
    [[ $got == 401 ]] || die "$t: gated /100b answered $got to an anonymous caller, want 401"
    check_checkout "$t"
done
REDIS_KEYS=$(rcli --scan --pattern "${REDIS_PREFIX}*" | sort | tr '\n' ' ')
[[ $REDIS_KEYS == *"${REDIS_PREFIX}customer:$ID_USER"* && $REDIS_KEYS == *"${REDIS_PREFIX}subscription:$ID_CUSTOMER"* ]] \
    || die "Redis on: the shared keys are not in Redis after the warm-up (found: '${REDIS_KEYS}')"
for t in sc node node-email; do check_checkout "$t"; done
log "gated sidecars, checkout sidecar and both Node peers answer as they should; Redis holds: $REDIS_KEYS"

# ------------------------------------------------------------ measurement --
cat >"$TMP/latency.lua" <<'EOF'
-- p50, p99 and p99.9 in microseconds, from wrk's own histogram.
done = function(summary, latency, requests)
  io.write(string.format("BENCHLAT %d %d %d\n", latency:percentile(50),
    latency:percentile(99), latency:percentile(99.9)))
end
EOF
{
    printf 'wrk.method = "POST"\nwrk.body = %s\nwrk.headers["Content-Type"] = "application/json"\n' "'$CHECKOUT_BODY'"
    cat "$TMP/latency.lua"
} >"$TMP/checkout.lua"

parse_wrk() {  # wrk output -> "rps p50_ms p99_ms p999_ms requests socket_errors non2xx"
    awk '
    /^BENCHLAT/ { p50 = $2 / 1000; p99 = $3 / 1000; p999 = $4 / 1000 }
    / requests in / { reqs = $1 }
    /^Requests\/sec:/ { rps = $2 }
    /Socket errors:/ { gsub(/,/, ""); errs = $4 + $6 + $8 + $10 }
    /Non-2xx or 3xx responses:/ { non2xx = $NF }
    END { printf "%s %.3f %.3f %.3f %d %d %d\n", rps, p50, p99, p999, reqs, errs, non2xx }'
}
stripe_conns() {  # stripe_conns PORT FROM_LINE: "requests used opened" on PORT after line FROM_LINE
    awk -v port="$1" -v from="$2" '
        $1 != port { next }
        NR <= from { seen[$2] = 1; next }
        { n++; if (!($2 in used)) { used[$2] = 1; u++; if (!($2 in seen)) o++ } }
        END { print n + 0, u + 0, o + 0 }' "$STRIPE_LOG"
}
busy_others() {  # other CPU-hungry processes (a concurrent cargo build skews everything)
    ps -eo pid=,pcpu=,comm= --sort=-pcpu | awk \
        '$2 >= 20 && $3 != "wrk" && $3 != "nginx" && $3 != "stripe-sidecar" && $3 != "node" && $3 != "ps" { printf "%s(%s%%) ", $3, $2 }' \
        | head -c 200
}

# Scenarios: path, connections, targets (the first is what ratios are
# against: nginx for the proxy rows), wrk script.
SCENARIOS=(p100-c16 p100-c64 p64k-c16 p64k-c64 identity gated checkout-redis checkout)
declare -A S_TITLE=(
    [p100-c16]="GET 100 B, $CONNS_LOW connections" [p100-c64]="GET 100 B, $CONNS_HIGH connections"
    [p64k-c16]="GET 64 KiB, $CONNS_LOW connections" [p64k-c64]="GET 64 KiB, $CONNS_HIGH connections"
    [identity]="GET 100 B, $CONNS_LOW connections: signed in, gated, 6 identity headers vs plain"
    [gated]="GET 100 B, $CONNS_LOW connections, signed in, gated: Redis on vs off"
    [checkout-redis]="POST checkout, $CONNS_LOW connections: Redis on vs off"
    [checkout]="POST /api/stripe/create-checkout, $CONNS_LOW connections: sidecar vs Node peer")
declare -A S_PATH=([p100-c16]=/100b [p100-c64]=/100b [p64k-c16]=/64k [p64k-c64]=/64k [identity]=/100b
    [gated]=/100b [checkout-redis]=/api/stripe/create-checkout [checkout]=/api/stripe/create-checkout)
declare -A S_CONNS=([p100-c16]=$CONNS_LOW [p100-c64]=$CONNS_HIGH [p64k-c16]=$CONNS_LOW [p64k-c64]=$CONNS_HIGH
    [identity]=$CONNS_LOW [gated]=$CONNS_LOW [checkout-redis]=$CONNS_LOW [checkout]=$CONNS_LOW)
declare -A S_TARGETS=([p100-c16]="nginx sidecar direct" [p100-c64]="nginx sidecar direct"
    [p64k-c16]="nginx sidecar direct" [p64k-c64]="nginx sidecar direct" [identity]="sidecar identity"
    [gated]="roff ron" [checkout-redis]="roff ron" [checkout]="node sc node-email")
declare -A S_SCRIPT=([checkout-redis]=checkout.lua [checkout]=checkout.lua)

declare -A R_RPS R_P50 R_P99 R_P999 R_REQS R_WREQS R_ERRS R_NON2XX R_CPU R_LOAD R_SREQ R_SUSED R_SOPEN
measure() {  # measure TARGET SCENARIO ROUND: a warm-up, then one measured wrk run
    local t=$1 s=$2 r=$3 k="$2|$1|$3" url conns out cpu0 cpu1 line0=0
    local -a auth=() script=(-s "$TMP/${S_SCRIPT[$s]:-latency.lua}")
    [[ -n ${T_AUTH[$t]:-} ]] && auth=(-H "$ID_AUTH")
    url="${URL[$t]}${S_PATH[$s]}"
    conns=${S_CONNS[$s]}
    [[ -n ${T_STRIPE_PORT[$t]:-} ]] && line0=$(wc -l <"$STRIPE_LOG")
    log "[$s round $r/$COUNT] ${T_LABEL[$t]}: wrk -t$WRK_THREADS -c$conns ${WARMUP}s warm-up + ${DURATION}s $url"
    out=$(timeout $((WARMUP + 30)) wrk -t"$WRK_THREADS" -c"$conns" -d"${WARMUP}s" "${auth[@]}" "${script[@]}" "$url")
    R_WREQS[$k]=$(awk '/ requests in / { print $1 }' <<<"$out")
    R_LOAD[$k]=$(cut -d' ' -f1 /proc/loadavg)
    # shellcheck disable=SC2046
    cpu0=$(cpu_ticks $(pids_of "$t"))
    out=$(timeout $((DURATION + 30)) wrk -t"$WRK_THREADS" -c"$conns" -d"${DURATION}s" --latency \
        "${auth[@]}" "${script[@]}" "$url")
    # shellcheck disable=SC2046
    cpu1=$(cpu_ticks $(pids_of "$t"))
    echo "== $k" >>"$TMP/wrk-output.txt"
    echo "$out" >>"$TMP/wrk-output.txt"
    read -r R_RPS[$k] R_P50[$k] R_P99[$k] R_P999[$k] R_REQS[$k] R_ERRS[$k] R_NON2XX[$k] < <(parse_wrk <<<"$out")
    R_CPU[$k]=$(awk -v d=$((cpu1 - cpu0)) -v hz="$CLK_TCK" -v n="${R_REQS[$k]}" \
        'BEGIN { printf "%.1f", (n > 0 ? d * 1000 / hz / n * 1000 : 0) }')
    if [[ -n ${T_STRIPE_PORT[$t]:-} ]]; then
        sleep 0.3
        read -r R_SREQ[$k] R_SUSED[$k] R_SOPEN[$k] < <(stripe_conns "${T_STRIPE_PORT[$t]}" "$line0")
    fi
    log "  -> ${R_RPS[$k]} req/s, p50 ${R_P50[$k]} p99 ${R_P99[$k]} p99.9 ${R_P999[$k]} ms," \
        "errors ${R_ERRS[$k]}, non-2xx ${R_NON2XX[$k]}, CPU ${R_CPU[$k]} ms/1k req${R_SOPEN[$k]:+, Stripe conns used ${R_SUSED[$k]} opened ${R_SOPEN[$k]}}"
    health "$t"
}
run_scenario() {  # run_scenario SCENARIO: COUNT rounds, the order rotating
    local s=$1 r i n
    local -a tg order
    read -r -a tg <<<"${S_TARGETS[$s]}"
    n=${#tg[@]}
    for ((r = 1; r <= COUNT; r++)); do
        order=()
        for ((i = 0; i < n; i++)); do order+=("${tg[$(((i + r - 1) % n))]}"); done
        for t in "${order[@]}"; do measure "$t" "$s" "$r"; done
    done
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
BUSY_BEFORE=$(busy_others || true)
METRICS0_SIDECAR=$(metrics_of sidecar)
METRICS0_ID=$(metrics_of identity)
for s in p100-c16 p100-c64 p64k-c16 p64k-c64 identity; do run_scenario "$s"; done
HEADLINE_LOADED_KIB=$(status_kib VmRSS "$SIDECAR_PID")
HEADLINE_HWM_KIB=$(status_kib VmHWM "$SIDECAR_PID")
# shellcheck disable=SC2046
NGINX_LOADED_KIB=$(status_kib VmRSS $(pids_of nginx))
METRICS1_SIDECAR=$(metrics_of sidecar)
METRICS1_ID=$(metrics_of identity)

METRICS0_RON=$(metrics_of ron)
METRICS0_ROFF=$(metrics_of roff)
rcli CONFIG RESETSTAT >/dev/null
REDIS_CPU0=$(cpu_ticks "$REDIS_PID")
run_scenario gated
run_scenario checkout-redis
REDIS_CPU1=$(cpu_ticks "$REDIS_PID")
REDIS_STATS=$(rcli INFO commandstats | tr -d '\r' | grep '^cmdstat_' || true)
METRICS1_RON=$(metrics_of ron)
METRICS1_ROFF=$(metrics_of roff)

METRICS0_SC=$(metrics_of sc)
run_scenario checkout
METRICS1_SC=$(metrics_of sc)
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
BUSY_AFTER=$(busy_others || true)

# ---------------------------------------------------------------- memory --
# A fresh sidecar with the plain proxy config: ready time over
# READY_RUNS starts, then one kept running: idle RSS, the 256 MiB streams,
# the connection bursts.
log "ready time: $READY_RUNS starts of the sidecar, /readyz polled every 0.5 ms"
READY_JSON=$(python3 "$BENCH_DIR/traffic.py" ready --admin "$P_MEM_ADMIN" --runs "$READY_RUNS" \
    --log "$TMP/sidecar-mem-ready.log" -- "$SIDECAR" --config "$TMP/sidecar-mem.toml" | tail -n 1)
read -r READY_MEDIAN READY_MAX READY_ALL < <(python3 -c 'import json, sys; r = json.loads(sys.argv[1]); print(r["median_ms"], r["max_ms"], " · ".join(str(x) for x in r["ready_ms"]))' "$READY_JSON")
sidecar_up sidecar-mem "$P_MEM_ADMIN"; MEM_PID=$BG_PID
sleep 1
IDLE_KIB=$(status_kib VmRSS "$MEM_PID")
reset_hwm() { echo 5 >"/proc/$MEM_PID/clear_refs" 2>/dev/null && HWM_RESET=yes || HWM_RESET=no; }
MEM_URL="http://127.0.0.1:$P_MEM"
declare -A ST_RESULT ST_HWM
stream_phase() {  # stream_phase NAME: download, upload or both at once
    local name=$1 dl=skipped ul=skipped dpid upid
    reset_hwm
    if [[ $name != upload ]]; then
        curl -sS --max-time 300 -o /dev/null -w '%{http_code} %{size_download} %{time_total}' \
            "$MEM_URL/stream" >"$TMP/dl.out" 2>>"$TMP/curl.log" &
        dpid=$!
    fi
    if [[ $name != download ]]; then
        curl -sS --max-time 300 -o /dev/null -X POST -H 'Content-Type: application/octet-stream' -T "$TMP/www/stream" \
            -w '%{http_code} %{size_upload} %{time_total}' "$MEM_URL/upload" >"$TMP/ul.out" 2>>"$TMP/curl.log" &
        upid=$!
    fi
    [[ -n ${dpid:-} ]] && { wait "$dpid" || true; dl=$(cat "$TMP/dl.out"); }
    [[ -n ${upid:-} ]] && { wait "$upid" || true; ul=$(cat "$TMP/ul.out"); }
    ST_HWM[$name]=$(status_kib VmHWM "$MEM_PID")
    ST_RESULT[$name]="down: $dl; up: $ul"
    log "stream $name: down $dl, up $ul; VmHWM $(mib "${ST_HWM[$name]}") MiB (idle $(mib "$IDLE_KIB") MiB)"
    local want_dl="200 $STREAM_SIZE" want_ul="200 $STREAM_SIZE"
    [[ $name == upload || $dl == "$want_dl "* ]] || STREAM_PROBLEMS+="$name: download '$dl', want '$want_dl ...'; "
    [[ $name == download || $ul == "$want_ul "* ]] || STREAM_PROBLEMS+="$name: upload '$ul', want '$want_ul ...'; "
}
STREAM_PROBLEMS=""
cat "$TMP/www/stream" >/dev/null
for phase in download upload both; do stream_phase "$phase"; done
STREAM_PEAK_KIB=$(printf '%s\n' "${ST_HWM[@]}" | sort -n | tail -n 1)
log "connection bursts: $BURST_ROUNDS x $BURST_CONNS connections held open at once"
BURST_JSON=$(python3 "$BENCH_DIR/traffic.py" burst --port "$P_MEM" --pid "$MEM_PID" --conns "$BURST_CONNS" \
    --rounds "$BURST_ROUNDS" --quiet "$BURST_QUIET" --settle "$BURST_QUIET" | tail -n 1)
read -r BURST_IDLE BURST_PEAK BURST_AFTER BURST_ERRORS BURST_STATUS < <(python3 -c '
import json, sys
r = json.loads(sys.argv[1])
print(r["idle_mib"], r["peak_mib"], r["after_mib"], sum(r["errors"].values()),
      ",".join(f"{k}:{v}" for k, v in r["status"].items()))' "$BURST_JSON")
for t in sidecar identity ron roff sc; do
    # shellcheck disable=SC2046
    kill -0 $(pids_of "$t") 2>/dev/null || die "${T_LABEL[$t]} died during the run"
done

# ---------------------------------------------------------------- checks --
CHECKS=()   # "name|PASS or FAIL: details"
add_check() { CHECKS+=("$1|$2"); }
# 1. wrk saw no socket error and no non-2xx anywhere.
bad_runs=""
for k in "${!R_REQS[@]}"; do
    if ((R_ERRS[$k] + R_NON2XX[$k] > 0 || R_REQS[$k] == 0)); then
        bad_runs+="$k: ${R_REQS[$k]} requests, ${R_ERRS[$k]} socket errors, ${R_NON2XX[$k]} non-2xx; "
    fi
done
add_check "every load run: requests answered, no socket error, no non-2xx" "$([[ -z $bad_runs ]] && echo PASS || echo "FAIL: ${bad_runs%; }")"

# 2. The sidecars' own counters: what Stripe saw, what was decided and answered.
# metrics_problems BEFORE AFTER SEARCH SUBS ENTS GATE_LO GATE_HI CO_LO CO_HI PROXY_MIN
#   SEARCH/SUBS/ENTS: exact totals of those Stripe calls (-1: not checked);
#   GATE_*: range of 'allowed' decisions (-1 -1: no gate); CO_*: range of
#   checkouts answered 200 (Checkout Sessions created = those, give or take
#   the requests in flight when wrk stopped); PROXY_MIN: least proxied 200s.
metrics_problems() {
    python3 - "$@" <<'EOF'
import re, sys
before, after = {}, {}
for text, into in ((sys.argv[1], before), (sys.argv[2], after)):
    for line in text.splitlines():
        m = re.match(r'^(\w+)(?:\{(.*)\})? (\S+)$', line)
        if m:
            labels = tuple(sorted(re.findall(r'(\w+)="([^"]*)"', m.group(2) or "")))
            into[(m.group(1), labels)] = float(m.group(3))
search, subs, ents, g_lo, g_hi, c_lo, c_hi, proxy_min = map(int, sys.argv[3:11])
def total(values, name, **want):
    return sum(v for (n, labels), v in values.items()
               if n == name and all(dict(labels).get(k) == w for k, w in want.items()))
def grew(name, **want):
    return total(after, name, **want) - total(before, name, **want)
def others(name, label, keep):
    return sum(v - before.get(key, 0) for key, v in after.items()
               if key[0] == name and dict(key[1]).get(label) != keep)
p = []
S = "stripe_sidecar_stripe_requests_total"
got = {"customers_search": search, "subscriptions": subs, "active_entitlements": ents}
for endpoint, want in got.items():
    n = total(after, S, endpoint=endpoint, outcome="ok")
    if want >= 0 and n != want:
        p.append(f"Stripe {endpoint}: {n:.0f} (want {want}: the warm-up's, none under load)")
sessions = grew(S, endpoint="checkout_sessions", outcome="ok")
known = sum(total(after, S, endpoint=e, outcome="ok") for e in list(got) + ["checkout_sessions"])
if total(after, S) - known:
    p.append(f"{total(after, S) - known:.0f} other Stripe calls or failures")
checkouts = grew("stripe_sidecar_requests_total", action="checkout", status="200")
if not c_lo <= checkouts <= c_hi:
    p.append(f"{checkouts:.0f} checkouts answered 200, want {c_lo}..{c_hi} (wrk's count)")
if not 0 <= sessions - checkouts <= c_hi - c_lo:
    p.append(f"{sessions:.0f} Checkout Sessions created under load for {checkouts:.0f} checkouts answered")
proxied = grew("stripe_sidecar_requests_total", action="proxy", status="200")
if g_lo >= 0:
    allowed = grew("stripe_sidecar_gate_decisions_total", result="allowed")
    if not g_lo <= allowed <= g_hi:
        p.append(f"gate decisions 'allowed' grew by {allowed:.0f}, want {g_lo}..{g_hi} (wrk's count)")
    denied = others("stripe_sidecar_gate_decisions_total", "result", "allowed")
    if denied:
        p.append(f"{denied:.0f} gate decisions other than 'allowed'")
if proxied < proxy_min:
    p.append(f"{proxied:.0f} proxied 200s, fewer than the {proxy_min} wrk completed")
not200 = others("stripe_sidecar_requests_total", "status", "200")
if not200:
    p.append(f"{not200:.0f} requests answered other than 200")
for name in ("stripe_sidecar_auth_rejections_total", "stripe_sidecar_upstream_errors_total",
             "stripe_sidecar_state_errors_total"):
    if grew(name):
        p.append(f"{name} grew by {grew(name):.0f}")
print("; ".join(p))
EOF
}
sum_runs() {  # sum_runs FIELD SCENARIO TARGET [EXTRA_PER_RUN]: the sum over rounds
    local -n f="R_$1"
    local r n=0
    for ((r = 1; r <= COUNT; r++)); do n=$((n + ${f[$2|$3|$r]:-0} + ${4:-0})); done
    echo "$n"
}
verdict_of() { [[ -z $1 ]] && echo PASS || echo "FAIL: $1"; }
# The plain sidecar: only proxied 200s.
p=$(metrics_problems "$METRICS0_SIDECAR" "$METRICS1_SIDECAR" 0 0 0 -1 -1 0 0 \
    "$(($(sum_runs REQS p100-c16 sidecar) + $(sum_runs REQS p100-c64 sidecar) + $(sum_runs REQS p64k-c16 sidecar) + $(sum_runs REQS p64k-c64 sidecar) + $(sum_runs REQS identity sidecar)))")
add_check "plain sidecar /metrics: every request a proxied 200, no upstream error" "$(verdict_of "$p")"
# Identity: the warm-up's three lookups and nothing more (caches warm).
n=$(sum_runs REQS identity identity)
lo=$(($(sum_runs WREQS identity identity) + n + COUNT))
p=$(metrics_problems "$METRICS0_ID" "$METRICS1_ID" 1 1 1 "$lo" "$((lo + 2 * COUNT * CONNS_LOW))" 0 0 "$n")
add_check "gated + identity sidecar /metrics: Stripe saw 1 Customer Search, 1 subscription list, 1 entitlements list (warm-up), every request allowed and 200" "$(verdict_of "$p")"
# Redis on / off: the warm-up's lookups only; every gated request allowed;
# a Checkout Session per checkout; and redis-server idle during the load.
redis_problems=""
for side in on off; do
    t=r$side
    # Gated GETs wrk completed (warm-up and measured), plus one health check
    # (a gated GET) after every run of either row; up to the connections'
    # in-flight requests more per wrk run (decided, but wrk had stopped).
    n=$(sum_runs REQS gated "$t")
    g_lo=$(($(sum_runs WREQS gated "$t") + n + 2 * COUNT))
    g_hi=$((g_lo + 2 * COUNT * CONNS_LOW))
    c_lo=$(($(sum_runs WREQS checkout-redis "$t") + $(sum_runs REQS checkout-redis "$t")))
    c_hi=$((c_lo + 2 * COUNT * CONNS_LOW))
    if [[ $side == on ]]; then b=$METRICS0_RON a=$METRICS1_RON; else b=$METRICS0_ROFF a=$METRICS1_ROFF; fi
    p=$(metrics_problems "$b" "$a" 1 1 -1 "$g_lo" "$g_hi" "$c_lo" "$c_hi" "$n")
    [[ -z $p ]] || redis_problems+="Redis $side: $p; "
done
REDIS_HOT_CALLS=$(awk -F'[:,=]' '$1 != "cmdstat_info" && $1 !~ /^cmdstat_config/ { n += $3 } END { print n + 0 }' <<<"$REDIS_STATS")
REDIS_HOT_LIST=$(awk -F'[:,=]' '$1 != "cmdstat_info" && $1 !~ /^cmdstat_config/ { printf "%s=%s ", substr($1, 9), $3 }' <<<"$REDIS_STATS")
((REDIS_HOT_CALLS == 0)) || redis_problems+="redis-server ran $REDIS_HOT_CALLS commands during the load (${REDIS_HOT_LIST% }): Redis is on the hot path; "
REDIS_CPU_MS=$(awk -v d=$((REDIS_CPU1 - REDIS_CPU0)) -v hz="$CLK_TCK" 'BEGIN { printf "%.0f", d * 1000 / hz }')
add_check "Redis on / off /metrics: warm-up lookups only, every gated request allowed, a Checkout Session per checkout; redis-server ran no command during the load" "$(verdict_of "${redis_problems%; }")"
# Checkout sidecar: one Customer Search (warm-up), then a session per checkout.
c_lo=$(($(sum_runs WREQS checkout sc) + $(sum_runs REQS checkout sc)))
p=$(metrics_problems "$METRICS0_SC" "$METRICS1_SC" 1 0 0 -1 -1 "$c_lo" "$((c_lo + 2 * COUNT * CONNS_LOW))" 0)
add_check "checkout sidecar /metrics: 1 Customer Search (warm-up), a Checkout Session per checkout answered" "$(verdict_of "$p")"
add_check "256 MiB streams through the sidecar: 200 and every byte, down, up, both at once" "$(verdict_of "${STREAM_PROBLEMS%; }")"
add_check "connection bursts: every request answered, no client error" \
    "$([[ $BURST_ERRORS == 0 ]] && echo PASS || echo "FAIL: $BURST_ERRORS client errors ($BURST_STATUS)")"

# ----------------------------------------------------------------- goals --
median() {  # median VALUE...: non-numeric values left out
    printf '%s\n' "$@" | awk '$1 ~ /^[0-9.eE+-]+$/' | sort -g | awk '{ v[NR] = $1 } END {
        if (NR == 0) print "n/a"; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.4f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
med() {  # med FIELD SCENARIO TARGET: median over the rounds
    local -n f="R_$1"
    local r vals=()
    for ((r = 1; r <= COUNT; r++)); do vals+=("${f[$2|$3|$r]:-}"); done
    median "${vals[@]}"
}
max_of() {  # max_of FIELD SCENARIO TARGET
    local -n f="R_$1"
    local r m=0
    for ((r = 1; r <= COUNT; r++)); do ((${f[$2|$3|$r]:-0} > m)) && m=${f[$2|$3|$r]}; done
    echo "$m"
}
mratio() {  # mratio FIELD SCENARIO A B: median over the rounds of A/B in that round
    local -n f="R_$1"
    local r vals=()
    for ((r = 1; r <= COUNT; r++)); do
        vals+=("$(awk -v a="${f[$2|$3|$r]:-0}" -v b="${f[$2|$4|$r]:-0}" 'BEGIN { if (b > 0) printf "%.4f", a / b; else print "n/a" }')")
    done
    median "${vals[@]}"
}
x() { awk -v v="$1" 'BEGIN { if (v == "n/a") print v; else printf "%.2f×", v }'; }
num() { awk -v v="$1" -v d="${2:-0}" 'BEGIN { if (v == "n/a") print v; else printf "%.*f", d, v }'; }
ge() { awk -v v="$1" -v g="$2" 'BEGIN { print (v != "n/a" && v + 0 >= g + 0) ? "PASS" : "FAIL" }'; }
le() { awk -v v="$1" -v g="$2" 'BEGIN { print (v != "n/a" && v + 0 <= g + 0) ? "PASS" : "FAIL" }'; }
GOALS=()   # "goal|measured|verdict"
add_goal() { GOALS+=("$1|$2|$3"); }
for s in p100-c16 p100-c64 p64k-c16 p64k-c64; do
    v=$(mratio RPS "$s" sidecar nginx)
    add_goal "${S_TITLE[$s]}: sidecar req/s ≥ ${G_PROXY_RPS}× nginx" "$(x "$v")" "$(ge "$v" "$G_PROXY_RPS")"
    v=$(mratio P99 "$s" sidecar nginx)
    add_goal "${S_TITLE[$s]}: sidecar p99 ≤ ${G_PROXY_P99}× nginx" "$(x "$v")" "$(le "$v" "$G_PROXY_P99")"
done
v=$(mratio RPS checkout sc node)
add_goal "checkout, $CONNS_LOW connections: sidecar req/s ≥ ${G_CHECKOUT}× the Node peer" "$(x "$v")" "$(ge "$v" "$G_CHECKOUT")"
v=$(max_of SOPEN checkout sc)
add_goal "checkout, $CONNS_LOW concurrent callers: TCP connections the sidecar opened to Stripe ≤ $CONNS_LOW (most in one run)" "$v (Node peer: $(max_of SOPEN checkout node))" "$(le "$v" "$CONNS_LOW")"
v=$(mratio RPS identity identity sidecar)
add_goal "gated + identity-header GET req/s ≥ ${G_ID}× the plain proxied GET" "$(x "$v")" "$(ge "$v" "$G_ID")"
v=$(mratio RPS gated ron roff)
add_goal "gated GET, Redis on req/s ≥ ${G_REDIS}× Redis off" "$(x "$v")" "$(ge "$v" "$G_REDIS")"
v=$(mratio RPS checkout-redis ron roff)
add_goal "checkout, Redis on req/s ≥ ${G_REDIS}× Redis off" "$(x "$v")" "$(ge "$v" "$G_REDIS")"
v=$(mib "$IDLE_KIB")
add_goal "idle RSS (fresh sidecar, 1 s after ready) ≤ $G_IDLE_MIB MiB" "$v MiB" "$(le "$v" "$G_IDLE_MIB")"
v=$(mib "$HEADLINE_LOADED_KIB")
add_goal "RSS after the proxy load ≤ $G_LOADED_MIB MiB" "$v MiB" "$(le "$v" "$G_LOADED_MIB")"
add_goal "RSS after $BURST_ROUNDS bursts of $BURST_CONNS connections ($BURST_QUIET s later) ≤ $G_LOADED_MIB MiB" "$BURST_AFTER MiB" "$(le "$BURST_AFTER" "$G_LOADED_MIB")"
v=$(mib $((STREAM_PEAK_KIB - IDLE_KIB)))
add_goal "peak RSS streaming ${BENCH_STREAM_MIB} MiB down, up, both at once ≤ idle + $G_STREAM_MIB MiB" "+$v MiB" "$(le "$v" "$G_STREAM_MIB")"
add_goal "ready: exec → /readyz 200 ≤ $G_READY_MS ms (median of $READY_RUNS)" "$(num "$READY_MEDIAN" 1) ms" "$(le "$READY_MEDIAN" "$G_READY_MS")"
GOALS_FAILED=0
for g in "${GOALS[@]}"; do [[ ${g##*|} == PASS ]] || GOALS_FAILED=$((GOALS_FAILED + 1)); done
CHECKS_FAILED=0
for c in "${CHECKS[@]}"; do [[ ${c#*|} == PASS ]] || CHECKS_FAILED=$((CHECKS_FAILED + 1)); done

# ---------------------------------------------------------------- report --
NGINX_SPILLS=$(grep -c 'buffered to a temporary file' "$TMP/proxy-error.log" || true)
LOG_WARNINGS=""
for f in sidecar sidecar-id sidecar-redis-on sidecar-redis-off sidecar-checkout sidecar-mem; do
    LOG_WARNINGS+="$f $(grep -ciE '"level":"(warn|error)"' "$TMP/$f.log" || true), "
done
NGINX_VERSION=$("$(nginx_bin)" -v 2>&1 | sed 's/^nginx version: //')
WRK_VERSION=$(wrk -v 2>&1 | head -n 1 | awk '{ print $1, $2 }' || true)
COMMIT=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)
DIRTY=$(git -C "$REPO" status --porcelain --untracked-files=no 2>/dev/null | grep -q . && echo "+dirty" || true)
ms() { awk -v v="$1" 'BEGIN { if (v == "n/a" || v == "") print "—"; else printf (v < 10 ? "%.2f" : "%.1f"), v }'; }

scenario_table() {  # scenario_table SCENARIO BASE [DIRECT]: medians per target, ratios to BASE
    local s=$1 base=$2 t
    local -a tg
    read -r -a tg <<<"${S_TARGETS[$s]}"
    echo "| target | req/s | p50 ms | p99 ms | p99.9 ms | req/s ÷ ${T_LABEL[$base]} | p99 ÷ ${T_LABEL[$base]} | p99.9 ÷ ${T_LABEL[$base]} | CPU ms / 1k req |${T_STRIPE_PORT[${tg[0]}]:+ Stripe calls / checkout | Stripe conns used / opened (most in a run) |}"
    echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |${T_STRIPE_PORT[${tg[0]}]:+ ---: | ---: |}"
    for t in "${tg[@]}"; do
        printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s |' "${T_LABEL[$t]}" \
            "$(num "$(med RPS "$s" "$t")")" "$(ms "$(med P50 "$s" "$t")")" "$(ms "$(med P99 "$s" "$t")")" \
            "$(ms "$(med P999 "$s" "$t")")" \
            "$([[ $t == "$base" ]] && echo — || echo "**$(x "$(mratio RPS "$s" "$t" "$base")")**")" \
            "$([[ $t == "$base" ]] && echo — || x "$(mratio P99 "$s" "$t" "$base")")" \
            "$([[ $t == "$base" ]] && echo — || x "$(mratio P999 "$s" "$t" "$base")")" \
            "$([[ $t == direct ]] && echo "(app) ")$(num "$(med CPU "$s" "$t")" 1)"
        if [[ -n ${T_STRIPE_PORT[$t]:-} ]]; then
            local calls r tot=0 done_=0
            for ((r = 1; r <= COUNT; r++)); do
                tot=$((tot + ${R_SREQ[$s|$t|$r]:-0}))
                done_=$((done_ + ${R_WREQS[$s|$t|$r]:-0} + ${R_REQS[$s|$t|$r]:-0}))
            done
            calls=$(awk -v a="$tot" -v b="$done_" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }')
            printf ' %s | %s / %s |' "$calls" "$(max_of SUSED "$s" "$t")" "$(max_of SOPEN "$s" "$t")"
        fi
        echo
    done
}

report() {
    echo "# stripe-sidecar benchmark"
    echo
    echo "\`$CMDLINE\` · commit $COMMIT$DIRTY · $(date -u '+%Y-%m-%d %H:%M UTC') · nproc $(nproc)"
    echo
    echo "$NGINX_VERSION · $WRK_VERSION · redis-server $REDIS_VERSION · node $(node -v) (stripe $STRIPE_NODE_VERSION, jose $JOSE_VERSION) · wrk -t$WRK_THREADS, ${DURATION} s per run after ${WARMUP} s warm-up · $COUNT rounds, interleaved · sidecar worker_threads = $WORKERS, nginx proxy worker_processes = $WORKERS, app nginx $BACKEND_WORKERS, Node peer $NODE_WORKERS process(es)"
    echo
    echo "Background: loadavg $LOAD_BEFORE before the load, $LOAD_AFTER after; other busy processes: ${BUSY_BEFORE:-none} / ${BUSY_AFTER:-none}. Anything besides the bench on the 2 cores skews the numbers: compare ratios from one run, rerun on a quiet box before believing a gap of 10 %."
    echo
    echo "## Goals ($((${#GOALS[@]} - GOALS_FAILED)) of ${#GOALS[@]} met)"
    echo
    echo "Ratios are the median over the $COUNT rounds of the ratio within a round."
    echo
    echo "| goal | measured | |"
    echo "| --- | ---: | --- |"
    local g c
    for g in "${GOALS[@]}"; do
        local a b v
        IFS='|' read -r a b v <<<"$g"
        printf '| %s | %s | **%s** |\n' "$a" "$b" "$v"
    done
    echo
    echo "## Checks ($((${#CHECKS[@]} - CHECKS_FAILED)) of ${#CHECKS[@]} pass; a failure exits 1)"
    echo
    for c in "${CHECKS[@]}"; do echo "- ${c%%|*}: **${c#*|}**"; done
    echo
    echo "## Proxy: sidecar vs nginx vs direct"
    echo
    echo "The app is nginx serving a 100 B or a 64 KiB file. nginx proxy: upstream keep-alive pool, HTTP/1.1 upstream, \`X-Forwarded-*\` set, default buffering. Medians over the rounds; ratios against nginx."
    local s
    for s in p100-c16 p100-c64 p64k-c16 p64k-c64; do
        echo
        echo "**${S_TITLE[$s]}**"
        echo
        scenario_table "$s" nginx
    done
    echo
    echo "## Signed in, gated, identity headers vs the plain proxy (goal: within 10 %)"
    echo
    echo "\`Authorization: Bearer <HS256 JWT>\` through a sidecar with \`[[gates]] path = \"/100b\" require = \"subscription\"\`, all six \`[identity_headers]\` and \`subscriptions.entitlements = true\`, its customer, subscription and entitlements read once from the fake Stripe before the load (caches warm). The app saw \`$ID_ECHO\`."
    echo
    scenario_table identity sidecar
    echo
    echo "## Redis on vs off (goal: within 10 %)"
    echo
    echo "Two sidecars alike but for \`[state] redis_url\` (a local redis-server, nothing persisted), both gating \`/100b\` on a subscription and selling \`pro\` at checkout, caches warm (the **on** side wrote \`${REDIS_KEYS% }\` at the warm-up). During their load redis-server ran $REDIS_HOT_CALLS commands${REDIS_HOT_LIST:+ (${REDIS_HOT_LIST% })} and used $REDIS_CPU_MS ms of CPU."
    echo
    echo "**${S_TITLE[gated]}**"
    echo
    scenario_table gated roff
    echo
    echo "**${S_TITLE[checkout-redis]}**"
    echo
    scenario_table checkout-redis roff
    echo
    echo "## Checkout: the sidecar vs a Node route (goal: 10×, Stripe connections ≤ callers)"
    echo
    echo "\`POST /api/stripe/create-checkout\`, body \`$CHECKOUT_BODY\`, \`wrk -t$WRK_THREADS -c$CONNS_LOW -s checkout.lua\` with the user's JWT. The same fake Stripe (one nginx worker answering static Stripe objects) answers all three, on a port each, logging nginx's \`\$connection\` serial per request: *used* = distinct connections a run's requests came on, *opened* = those not seen before the run."
    echo
    echo "- **sidecar**: token verified, customer from its cache (one Customer Search at warm-up), one \`POST /v1/checkout/sessions\` per checkout."
    echo "- **Node peer (search + create)**: \`bench/node-peer/server.mjs\`, node:http + jose \`jwtVerify\` + stripe-node (a client per request, as ShipFast's \`createCheckout\` makes; stripe-node's keep-alive agent), \`customers.search\` on \`metadata['user_id']\` (\`customers.create\` when none) then \`checkout.sessions.create\`, no cache: two Stripe calls per checkout. The goal is judged against this one."
    echo "- **Node peer (8space as published)**: the same server with \`CUSTOMER_MODE=email\`: no customer lookup, \`customer_email\` from the token, one Stripe call per checkout, as the 8space route sends it."
    echo
    scenario_table checkout node
    echo
    echo "## Memory and start-up"
    echo
    echo "| what | measured | goal |"
    echo "| --- | ---: | --- |"
    echo "| ready: exec → admin \`/readyz\` 200, polled every 0.5 ms: median (max) of $READY_RUNS starts | $(num "$READY_MEDIAN" 1) ms ($(num "$READY_MAX" 1) ms; all: $READY_ALL) | ≤ $G_READY_MS ms |"
    echo "| idle RSS, fresh sidecar 1 s after ready, no request yet | $(mib "$IDLE_KIB") MiB | ≤ $G_IDLE_MIB MiB |"
    echo "| idle RSS of the load-test sidecar before its first request | $(mib "$HEADLINE_IDLE_KIB") MiB | — |"
    echo "| RSS of the load-test sidecar after the proxy and identity rows (VmHWM) | $(mib "$HEADLINE_LOADED_KIB") MiB ($(mib "$HEADLINE_HWM_KIB") MiB) | ≤ $G_LOADED_MIB MiB |"
    echo "| for comparison: the nginx proxy's RSS after the proxy rows (master + $WORKERS workers) | $(mib "$NGINX_LOADED_KIB") MiB | — |"
    echo "| connection bursts: $BURST_ROUNDS × $BURST_CONNS connections held open at once (bench/traffic.py burst: GETs, big cookies, 16 KiB POSTs, slow 256 KiB downloads, idle and half-sent heads): RSS before → peak → $BURST_QUIET s after | $BURST_IDLE → $BURST_PEAK → **$BURST_AFTER MiB** | after ≤ $G_LOADED_MIB MiB |"
    local ph
    for ph in download upload both; do
        echo "| stream ${BENCH_STREAM_MIB} MiB $([[ $ph == both ]] && echo "down and up at once" || echo "$ph") (curl; ${ST_RESULT[$ph]}): peak RSS (VmHWM$([[ $HWM_RESET == yes ]] && echo ", reset before each" || echo ", cumulative")) − idle | +$(mib $((ST_HWM[$ph] - IDLE_KIB))) MiB | ≤ +$G_STREAM_MIB MiB |"
    done
    echo
    echo "## Logs"
    echo
    echo "- warn/error lines in the sidecars' logs: ${LOG_WARNINGS%, }"
    echo "- nginx proxy responses buffered to a temporary file (default \`proxy_buffering on\`): ${NGINX_SPILLS:-0}"
    echo "- Node peers' logs: $(cat "$TMP/node-search.log" "$TMP/node-email.log" | wc -l) lines"
    echo
    echo "## Every run"
    echo
    echo "| row | round | target | req/s | p50 ms | p99 ms | p99.9 ms | requests | socket errors | non-2xx | CPU ms / 1k req | Stripe conns used / opened | loadavg at start |"
    echo "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    local r t k
    for s in "${SCENARIOS[@]}"; do
        for ((r = 1; r <= COUNT; r++)); do
            for t in ${S_TARGETS[$s]}; do
                k="$s|$t|$r"
                printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$s" "$r" "${T_LABEL[$t]}" \
                    "$(num "${R_RPS[$k]}")" "$(ms "${R_P50[$k]}")" "$(ms "${R_P99[$k]}")" "$(ms "${R_P999[$k]}")" \
                    "${R_REQS[$k]}" "${R_ERRS[$k]}" "${R_NON2XX[$k]}" "${R_CPU[$k]}" \
                    "$([[ -n ${R_SOPEN[$k]:-} ]] && echo "${R_SUSED[$k]} / ${R_SOPEN[$k]}" || echo —)" "${R_LOAD[$k]}"
            done
        done
    done
}

report | tee "$RESULTS"
log "written $RESULTS"
((CHECKS_FAILED == 0)) || die "$CHECKS_FAILED check(s) failed: see the Checks section"
if ((GOALS_FAILED > 0)); then
    log "$GOALS_FAILED goal(s) missed"
    [[ $STRICT == 1 ]] && exit 3
fi
exit 0
}
