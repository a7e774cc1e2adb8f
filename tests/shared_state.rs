//! Several replicas, one truth: two sidecars sharing one real
//! `redis-server` (started by the test on a free port), webhooks reaching
//! only one of them, and Redis killed and restarted under them.

use std::future::Future;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::app::FakeApp;
use crate::support::events;
use crate::support::raw::{self, RawResponse};
use crate::support::redis::RedisServer;
use crate::support::session;
use crate::support::sidecar::{eventually, Sidecar};
use crate::support::stripe::FakeStripe;

const JWT_SECRET: &str = "shared-state-test-jwt-secret-32-characters";
const WEBHOOK_SECRET: &str = "whsec_shared_state";
const TTL_SECONDS: u64 = 3;

fn bearer(user: &str) -> String {
    format!(
        "Authorization: Bearer {}\r\n",
        session::token(JWT_SECRET, user)
    )
}

struct Replicas {
    _app: FakeApp,
    stripe: FakeStripe,
    redis: RedisServer,
    a: Sidecar,
    b: Sidecar,
}

async fn replicas(test: &str) -> Option<Replicas> {
    let redis = RedisServer::start(test)?;
    let app = FakeApp::start().await;
    let stripe = FakeStripe::start().await;
    stripe.add_price("price_pro", true);
    let replica = || {
        Sidecar::builder(&app.url())
            .set("auth", &format!("hs256_secret = \"{JWT_SECRET}\""))
            .set("stripe", "secret_key = \"sk_test_shared\"")
            .set("stripe", &format!("api_base = \"{}\"", stripe.url()))
            .set(
                "stripe",
                &format!("webhook_secrets = [\"{WEBHOOK_SECRET}\"]"),
            )
            .set("stripe", "max_retries = 0")
            .set(
                "checkout",
                "allowed_redirect_origins = [\"https://myapp.com\"]",
            )
            .set("checkout", "prices = { pro = \"price_pro\" }")
            .set(
                "subscriptions",
                &format!("cache_ttl_seconds = {TTL_SECONDS}"),
            )
            .set("state", &format!("redis_url = \"{}\"", redis.url()))
            .raw(
                "[[routes]]\npath = \"/api/stripe/webhook\"\naction = \"webhook\"\n\
                  [[routes]]\npath = \"/api/stripe/create-checkout\"\naction = \"checkout\"\n\
                  [[routes]]\npath = \"/api/stripe/subscription\"\naction = \"subscription\"\n\
                  [[gates]]\npath = \"/echo/pro/**\"\n",
            )
    };
    let a = replica().start().await;
    let b = replica().start().await;
    // Both replicas connect to Redis in the background; a test starts
    // once each has its command connection and its pub/sub listener (plus
    // this check's own connection).
    let connected = || {
        let info = redis.command(&["INFO", "clients"]).unwrap_or_default();
        info.lines()
            .find_map(|line| line.strip_prefix("connected_clients:"))
            .and_then(|n| n.trim().parse::<u32>().ok())
            .is_some_and(|n| n >= 5)
    };
    eventually(Duration::from_secs(10), connected).await;
    Some(Replicas {
        _app: app,
        stripe,
        redis,
        a,
        b,
    })
}

async fn gate(sidecar: &Sidecar, user: &str) -> u16 {
    raw::request(sidecar.addr, "GET", "/echo/pro/page", &bearer(user))
        .await
        .status
}

async fn metrics(sidecar: &Sidecar) -> String {
    raw::request(sidecar.admin, "GET", "/metrics", "")
        .await
        .body
}

/// Polls `check` until it holds; the time it took, or a panic after `limit`.
async fn within<F, Fut>(limit: Duration, what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start.elapsed()
}

impl Replicas {
    /// A subscribed user: customer `cus_<user>` with an active subscription.
    fn subscribed(&self, user: &str) -> String {
        let customer = format!("cus_{user}");
        self.stripe.add_customer(
            &customer,
            Some(&format!("{user}@example.com")),
            &[("user_id", user)],
        );
        self.stripe
            .add_subscription(&customer, &["price_pro"], "active")
    }

    /// Cancels at Stripe and tells replica A only.
    async fn cancel_via_a(&self, subscription: &str) {
        let object = self.stripe.cancel_subscription(subscription);
        let event = self.stripe.event("customer.subscription.deleted", object);
        let reply: RawResponse =
            events::deliver(self.a.addr, "/api/stripe/webhook", WEBHOOK_SECRET, &event).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
}

/// The headline: a webhook reaching only replica A changes what replica B
/// decides within a second; Redis holds the documented keys and no secret.
#[tokio::test]
async fn a_webhook_to_one_replica_reaches_the_other_within_a_second() {
    let Some(r) = replicas("shared_state::a_webhook_to_one_replica").await else {
        return;
    };
    let subscription = r.subscribed("u1");
    assert_eq!(gate(&r.a, "u1").await, 200);
    assert_eq!(gate(&r.b, "u1").await, 200);

    r.cancel_via_a(&subscription).await;
    assert_eq!(gate(&r.a, "u1").await, 402, "A synced on the event");
    let took = within(
        Duration::from_secs(1),
        "B sees the cancellation",
        || async { gate(&r.b, "u1").await == 402 },
    )
    .await;
    eprintln!("replica B converged in {took:?}");

    let customer = r
        .redis
        .command(&["GET", "stripe-sidecar:customer:u1"])
        .unwrap();
    assert!(customer.contains("cus_u1"), "{customer}");
    let state = r
        .redis
        .command(&["GET", "stripe-sidecar:subscription:cus_u1"])
        .unwrap();
    assert!(state.contains("\"synced_at\""), "{state}");
    let ttl = r
        .redis
        .command(&["PTTL", "stripe-sidecar:subscription:cus_u1"])
        .unwrap();
    let ttl: i64 = ttl.trim().trim_start_matches(':').parse().unwrap();
    assert!(0 < ttl && ttl <= TTL_SECONDS as i64 * 1000, "PTTL {ttl}");
    let keys = r.redis.command(&["KEYS", "*"]).unwrap();
    for key in [
        "stripe-sidecar:customer:u1",
        "stripe-sidecar:subscription:cus_u1",
    ] {
        assert!(keys.contains(key), "{keys}");
    }
    let everything = format!("{keys}{customer}{state}");
    for secret in ["sk_test", "whsec", "eyJ", "@example.com"] {
        assert!(
            !everything.contains(secret),
            "Redis holds {secret}: {everything}"
        );
    }
}

/// Redis killed mid-test: both replicas keep serving (ready, proxying,
/// gating from their own caches and Stripe), count the errors, and B
/// converges after its TTL; Redis back: invalidations flow again.
#[tokio::test]
async fn without_redis_both_keep_serving_and_converge_after_the_ttl() {
    let Some(mut r) = replicas("shared_state::without_redis").await else {
        return;
    };
    let first = r.subscribed("u1");
    assert_eq!(gate(&r.a, "u1").await, 200);
    assert_eq!(gate(&r.b, "u1").await, 200);

    r.redis.kill();
    for sidecar in [&r.a, &r.b] {
        let ready = raw::request(sidecar.admin, "GET", "/readyz", "").await;
        assert_eq!(ready.status, 200);
        let echo = raw::request(sidecar.addr, "GET", "/echo/free", "").await;
        assert_eq!(echo.status, 200);
    }
    r.cancel_via_a(&first).await;
    assert_eq!(gate(&r.a, "u1").await, 402);
    let took = within(
        Duration::from_secs(TTL_SECONDS + 3),
        "B converges after its TTL",
        || async { gate(&r.b, "u1").await == 402 },
    )
    .await;
    eprintln!("without Redis, replica B converged in {took:?}");
    let errors = metrics(&r.a).await;
    assert!(
        errors
            .lines()
            .any(|l| l.starts_with("stripe_sidecar_state_errors_total{op=\"") && !l.ends_with(" 0")),
        "{errors}"
    );

    // Redis back on the same port: within 5 s the replicas share again.
    r.redis.run();
    let second = r
        .stripe
        .add_subscription("cus_u1", &["price_pro"], "active");
    let event = r.stripe.event(
        "customer.subscription.created",
        r.stripe.subscription(&second),
    );
    within(
        Duration::from_secs(8),
        "shared again after Redis returns",
        || async {
            // Each try: the event to A only; B must follow within a second.
            events::deliver(r.a.addr, "/api/stripe/webhook", WEBHOOK_SECRET, &event).await;
            let deadline = Instant::now() + Duration::from_secs(1);
            while Instant::now() < deadline {
                if gate(&r.b, "u1").await == 200 {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            false
        },
    )
    .await;
}

/// A customer created on one replica is found by the other before
/// Stripe's search shows it: one customer however many replicas check out.
#[tokio::test]
async fn a_customer_created_on_one_replica_is_found_by_the_other() {
    let Some(r) = replicas("shared_state::a_customer_created").await else {
        return;
    };
    let checkout = |sidecar: &Sidecar| {
        let body = json!({"priceId": "pro", "mode": "subscription",
                          "successUrl": "https://myapp.com/ok", "cancelUrl": "https://myapp.com/no"})
        .to_string();
        let request = format!(
            "POST /api/stripe/create-checkout HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{}Content-Length: {}\r\n\r\n{body}",
            bearer("u7"),
            body.len()
        );
        raw::send(sidecar.addr, request.as_bytes().to_vec().leak())
    };
    assert_eq!(checkout(&r.a).await.status, 200);
    assert_eq!(r.stripe.customers().len(), 1);
    let seen = raw::request(r.b.addr, "GET", "/api/stripe/subscription", &bearer("u7")).await;
    let created = r.stripe.customers()[0]["id"].as_str().unwrap().to_string();
    assert_eq!(
        seen.json()["customerId"],
        created.as_str(),
        "B read it from Redis"
    );
    assert_eq!(checkout(&r.b).await.status, 200);
    assert_eq!(
        r.stripe.customers().len(),
        1,
        "one customer across replicas"
    );
}

/// Redis unreachable from the start: the sidecar starts, is ready, proxies
/// and answers the billing routes from Stripe, and counts the failures.
/// Needs no redis-server: nothing listens on the port.
#[tokio::test]
async fn redis_down_at_start_delays_nothing() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let app = FakeApp::start().await;
    let stripe = FakeStripe::start().await;
    stripe.add_customer("cus_u1", None, &[("user_id", "u1")]);
    let sidecar = Sidecar::builder(&app.url())
        .set("auth", &format!("hs256_secret = \"{JWT_SECRET}\""))
        .set("stripe", "secret_key = \"sk_test_shared\"")
        .set("stripe", &format!("api_base = \"{}\"", stripe.url()))
        .set(
            "checkout",
            "allowed_redirect_origins = [\"https://myapp.com\"]",
        )
        .set("checkout", "allow_any_price = true")
        .set("state", &format!("redis_url = \"redis://{dead}/0\""))
        .start()
        .await;
    let ready = raw::request(sidecar.admin, "GET", "/readyz", "").await;
    assert_eq!(ready.status, 200);
    assert_eq!(
        raw::request(sidecar.addr, "GET", "/echo", "").await.status,
        200
    );
    let started = Instant::now();
    let state = raw::request(
        sidecar.addr,
        "GET",
        "/api/stripe/subscription",
        &bearer("u1"),
    )
    .await;
    assert_eq!(state.status, 200, "{}", state.body);
    assert_eq!(state.json()["customerId"], "cus_u1");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "Redis calls are bounded: {:?}",
        started.elapsed()
    );
    let metrics = metrics(&sidecar).await;
    assert!(
        metrics.contains("stripe_sidecar_state_errors_total{op=\"get\"}")
            && !metrics.contains("stripe_sidecar_state_errors_total{op=\"get\"} 0"),
        "{metrics}"
    );
}

/// A slow Redis (`DEBUG SLEEP`) holds no request longer than the sidecar's
/// Redis timeout: a cold read goes on to Stripe and is answered.
#[tokio::test]
async fn a_slow_redis_costs_at_most_its_timeout() {
    let Some(r) = replicas("shared_state::a_slow_redis").await else {
        return;
    };
    r.subscribed("u3");
    let sleeper = r.redis.addr;
    let sleeping = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(sleeper).unwrap();
        stream
            .write_all(b"*3\r\n$5\r\nDEBUG\r\n$5\r\nSLEEP\r\n$1\r\n3\r\n")
            .unwrap();
        let mut reply = [0u8; 16];
        let _ = stream.read(&mut reply);
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    assert_eq!(gate(&r.b, "u3").await, 200, "answered from Stripe");
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(2500),
        "waited on Redis: {took:?}"
    );
    let errors = metrics(&r.b).await;
    assert!(
        !errors.contains("stripe_sidecar_state_errors_total{op=\"get\"} 0"),
        "{errors}"
    );
    sleeping.join().unwrap();
}
