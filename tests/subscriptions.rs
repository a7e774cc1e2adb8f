//! Subscriptions, identity headers and gates end to end: the story a user
//! lives (sign in, checkout, the events arrive, a gated page opens, the
//! subscription is cancelled and the page closes again), told against the
//! fake Stripe, which completes checkouts and signs the events it sends,
//! and the fake app, which shows what headers it received.

use std::time::Duration;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::support::app::FakeApp;
use crate::support::events;
use crate::support::raw::{self, RawResponse};
use crate::support::session;
use crate::support::sidecar::{eventually, Builder, Sidecar};
use crate::support::stripe::{FakeStripe, Fault};

const JWT_SECRET: &str = "subscription-test-jwt-secret-32-characters";
const WEBHOOK_SECRET: &str = "whsec_subscriptions";
const API_KEY: &str = "sk_backend_subscriptions";
const HOOK: &str = "/api/stripe/webhook";

/// Every identity header, as docs/reference.md's examples name them.
const IDENTITY: [(&str, &str); 6] = [
    ("user_id", "x-user-id"),
    ("email", "x-user-email"),
    ("customer", "x-stripe-customer-id"),
    ("subscription_status", "x-subscription-status"),
    ("plan", "x-subscription-plan"),
    ("features", "x-entitlements"),
];

fn token(user: &str) -> String {
    session::token(JWT_SECRET, user)
}

struct World {
    app: FakeApp,
    stripe: FakeStripe,
    sidecar: Sidecar,
}

/// The sidecar with prices `pro` and `team`, Entitlements on, every
/// identity header, and gates on the fake app's `/echo` paths.
async fn world(more: impl FnOnce(Builder) -> Builder) -> World {
    let app = FakeApp::start().await;
    app.set_webhook_secret(WEBHOOK_SECRET);
    let stripe = FakeStripe::start().await;
    stripe.add_price("price_pro", true);
    stripe.add_price("price_team", true);
    let sha = hex(&Sha256::digest(API_KEY.as_bytes()));
    let mut builder = Sidecar::builder(&app.url())
        .set("auth", &format!("hs256_secret = \"{JWT_SECRET}\""))
        .set("stripe", "secret_key = \"sk_test_subscriptions\"")
        .set("stripe", &format!("api_base = \"{}\"", stripe.url()))
        .set("stripe", &format!("webhook_secrets = [\"{WEBHOOK_SECRET}\"]"))
        .set("stripe", "max_retries = 0")
        .set("checkout", "allowed_redirect_origins = [\"https://myapp.com\"]")
        .set("checkout", "prices = { pro = \"price_pro\", team = \"price_team\" }")
        .set("subscriptions", "entitlements = true")
        .raw(&format!(
            "[[auth.api_keys]]\nname = \"backend\"\nsha256 = \"{sha}\"\nactions = [\"subscription\"]\n\
             [[auth.api_keys]]\nname = \"checkout-only\"\nsha256 = \"{}\"\nactions = [\"checkout\"]\n\
             [[gates]]\npath = \"/echo/team/**\"\nplans = [\"team\"]\nredirect = \"/pricing\"\n\
             [[gates]]\npath = \"/echo/api/**\"\nfeatures = [\"api\"]\n\
             [[gates]]\npath = \"/echo/pro/**\"\nredirect = \"/pricing\"\n\
             [[gates]]\npath = \"/echo/account/*\"\nrequire = \"user\"\nredirect = \"https://myapp.com/sign-in\"\n",
            hex(&Sha256::digest(b"sk_checkout_only"))
        ));
    for (key, name) in IDENTITY {
        builder = builder.set("identity_headers", &format!("{key} = \"{name}\""));
    }
    let sidecar = more(builder).start().await;
    World {
        app,
        stripe,
        sidecar,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A header line for `user`'s session.
fn bearer(user: &str) -> String {
    format!("Authorization: Bearer {}\r\n", token(user))
}

/// What the fake app's `/echo` received under `name`: every copy.
fn app_saw(echo: &RawResponse, name: &str) -> Vec<String> {
    echo.json()["headers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|pair| pair[0].as_str().unwrap().eq_ignore_ascii_case(name))
        .map(|pair| pair[1].as_str().unwrap().to_string())
        .collect()
}

impl World {
    async fn get(&self, path: &str, extra: &str) -> RawResponse {
        raw::request(self.sidecar.addr, "GET", path, extra).await
    }

    async fn subscription(&self, user: &str, query: &str) -> RawResponse {
        let path = format!("/api/stripe/subscription{query}");
        self.get(&path, &bearer(user)).await
    }

    async fn checkout(&self, user: &str, price: &str) -> String {
        let body = json!({"priceId": price, "mode": "subscription",
                          "successUrl": "https://myapp.com/success", "cancelUrl": "https://myapp.com/pricing"})
        .to_string();
        let extra = format!(
            "{}Content-Type: application/json\r\nContent-Length: {}\r\n",
            bearer(user),
            body.len()
        );
        let head = format!(
            "POST /api/stripe/create-checkout HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{extra}\r\n{body}"
        );
        let reply = raw::send(self.sidecar.addr, head.as_bytes()).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        reply.json()["sessionId"].as_str().unwrap().to_string()
    }

    async fn deliver(&self, event: &Value) {
        let reply = events::deliver(self.sidecar.addr, HOOK, WEBHOOK_SECRET, event).await;
        assert_eq!(reply.status, 200, "{} {}", event["type"], reply.body);
    }

    /// Stripe calls to list `customer`'s subscriptions so far.
    fn syncs(&self) -> usize {
        let calls = self.stripe.requests();
        calls
            .iter()
            .filter(|r| r.path == "/v1/subscriptions")
            .count()
    }

    async fn metrics(&self) -> String {
        self.get_admin("/metrics").await.body
    }

    async fn get_admin(&self, path: &str) -> RawResponse {
        raw::request(self.sidecar.admin, "GET", path, "").await
    }
}

const BROWSER: &str = "Accept: text/html,application/xhtml+xml\r\n";

/// The story: sign in, pay, get in; cancel, get sent to the pricing page.
#[tokio::test]
async fn sign_in_checkout_events_gate_then_cancellation() {
    let w = world(|b| b).await;

    // Signed in, never paid: no customer is created by looking.
    let before = w.subscription("u1", "").await;
    assert_eq!(before.status, 200, "{}", before.body);
    assert_eq!(
        before.json(),
        json!({"customerId": null, "subscribed": false, "status": "none", "plan": null,
               "priceId": null, "currentPeriodEnd": null, "cancelAtPeriodEnd": null,
               "trialEnd": null, "features": [], "subscriptions": []})
    );
    assert!(
        w.stripe.customers().is_empty(),
        "looking created a customer"
    );
    let refused = w.get("/echo/pro/page", &bearer("u1")).await;
    assert_eq!(refused.status, 402);
    assert_eq!(
        refused.json(),
        json!({"error": "An active subscription is required"})
    );
    let browser = w.get("/echo/pro/page", &(bearer("u1") + BROWSER)).await;
    assert_eq!(browser.status, 303);
    assert_eq!(browser.header("location"), Some("/pricing"));
    let app_requests = w.app.requests();

    // Checkout, completed at Stripe; its events arrive.
    let session = w.checkout("u1", "pro").await;
    let completed = w.stripe.complete_checkout(&session);
    for event in &completed.events {
        w.deliver(event).await;
    }
    assert_eq!(w.app.webhooks().len(), 3, "each event reached the app");

    let after = w.subscription("u1", "").await.json();
    let item_end = w.stripe.subscription(&completed.subscription)["items"]["data"][0]
        ["current_period_end"]
        .clone();
    assert_eq!(after["customerId"], completed.customer.as_str());
    assert_eq!(after["subscribed"], true);
    assert_eq!(after["status"], "active");
    assert_eq!(after["plan"], "pro");
    assert_eq!(after["priceId"], "price_pro");
    assert_eq!(after["currentPeriodEnd"], item_end);
    assert_eq!(after["cancelAtPeriodEnd"], false);
    assert_eq!(
        after["subscriptions"],
        json!([{"id": completed.subscription, "status": "active", "priceIds": ["price_pro"],
                "plan": "pro", "currentPeriodEnd": item_end, "cancelAtPeriodEnd": false,
                "trialEnd": null}])
    );

    // The gated page opens, and the app learns who and what from headers.
    let page = w.get("/echo/pro/page", &bearer("u1")).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(app_saw(&page, "x-user-id"), ["u1"]);
    assert_eq!(app_saw(&page, "x-user-email"), ["u1@example.com"]);
    assert_eq!(
        app_saw(&page, "x-stripe-customer-id"),
        std::slice::from_ref(&completed.customer)
    );
    assert_eq!(app_saw(&page, "x-subscription-status"), ["active"]);
    assert_eq!(app_saw(&page, "x-subscription-plan"), ["pro"]);
    assert_eq!(app_saw(&page, "x-entitlements"), [""]);
    // The three events and this page: the refusals never reached the app.
    assert_eq!(w.app.requests(), app_requests + 3 + 1);

    // Cancelled at Stripe: the deletion event closes the page again.
    let cancelled = w.stripe.cancel_subscription(&completed.subscription);
    w.deliver(&w.stripe.event("customer.subscription.deleted", cancelled))
        .await;
    assert_eq!(w.get("/echo/pro/page", &bearer("u1")).await.status, 402);
    let browser = w.get("/echo/pro/page", &(bearer("u1") + BROWSER)).await;
    assert_eq!(browser.status, 303);
    assert_eq!(browser.header("location"), Some("/pricing"));
    let gone = w.subscription("u1", "").await.json();
    assert_eq!(gone["status"], "none");
    assert_eq!(gone["subscribed"], false);
    assert_eq!(gone["customerId"], completed.customer.as_str());
    assert_eq!(gone["subscriptions"], json!([]));

    let metrics = w.metrics().await;
    for line in [
        "stripe_sidecar_gate_decisions_total{result=\"not_subscribed\"} 4",
        "stripe_sidecar_gate_decisions_total{result=\"allowed\"} 1",
        "stripe_sidecar_subscription_syncs_total{trigger=\"webhook\",outcome=\"ok\"} 4",
        "stripe_sidecar_requests_total{action=\"subscription\",status=\"200\"} 3",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
}

/// Back on the success page before any webhook: `?refresh=true` reads
/// Stripe at once; a second refresh right after is served from the cache.
#[tokio::test]
async fn refresh_makes_a_user_back_before_the_webhook_subscribed() {
    let w = world(|b| b).await;
    let session = w.checkout("u1", "pro").await;
    assert_eq!(w.subscription("u1", "").await.json()["status"], "none");
    w.stripe.complete_checkout(&session);
    // Older than the refresh window, younger than the TTL: cached as none.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(w.subscription("u1", "").await.json()["subscribed"], false);
    let syncs = w.syncs();
    let fresh = w.subscription("u1", "?refresh=true").await.json();
    assert_eq!(fresh["subscribed"], true);
    assert_eq!(fresh["status"], "active");
    assert_eq!(w.syncs(), syncs + 1);
    let again = w.subscription("u1", "?refresh=true").await.json();
    assert_eq!(again["subscribed"], true);
    assert_eq!(
        w.syncs(),
        syncs + 1,
        "a refresh within 2 s is served from the cache"
    );
    let metrics = w.metrics().await;
    for line in [
        "stripe_sidecar_subscription_syncs_total{trigger=\"miss\",outcome=\"ok\"} 1",
        "stripe_sidecar_subscription_syncs_total{trigger=\"refresh\",outcome=\"ok\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
    assert_eq!(w.get("/echo/pro/x", &bearer("u1")).await.status, 200);
}

/// Events late, twice and out of order: the state is what Stripe says,
/// never what an old payload says.
#[tokio::test]
async fn events_out_of_order_or_twice_leave_stripes_truth() {
    let w = world(|b| b).await;
    let session = w.checkout("u1", "pro").await;
    let completed = w.stripe.complete_checkout(&session);
    let [checkout, created, paid] = [
        completed.event("checkout.session.completed"),
        completed.event("customer.subscription.created"),
        completed.event("invoice.paid"),
    ];
    for event in [paid, created, checkout, paid, created] {
        w.deliver(event).await;
    }
    assert_eq!(w.subscription("u1", "").await.json()["status"], "active");

    // Payment failed since; then the old "created" event arrives again.
    let past_due = w
        .stripe
        .set_subscription_status(&completed.subscription, "past_due");
    w.deliver(&w.stripe.event("customer.subscription.updated", past_due))
        .await;
    w.deliver(created).await;
    let state = w.subscription("u1", "").await.json();
    assert_eq!(state["status"], "past_due");
    assert_eq!(
        state["subscribed"], false,
        "past_due is not a subscribed status"
    );
    let page = w.get("/echo/pro/x", &bearer("u1")).await;
    assert_eq!(page.status, 402);
    // Ungated, the app still learns the status.
    let echo = w.get("/echo/free", &bearer("u1")).await;
    assert_eq!(app_saw(&echo, "x-subscription-status"), ["past_due"]);
}

/// Stripe down during a sync: the last known state is served (and the
/// webhook still answered); with no state at all, 503 and `unknown`.
#[tokio::test]
async fn stripe_down_serves_the_last_state_or_503() {
    let w = world(|b| b.set("stripe", "timeout_ms = 2000")).await;
    let session = w.checkout("u1", "pro").await;
    let completed = w.stripe.complete_checkout(&session);
    w.deliver(completed.event("customer.subscription.created"))
        .await;
    let outage = || Fault::Status {
        status: 500,
        should_retry: None,
        error_type: "api_error",
        message: "Stripe is down",
    };
    w.stripe.fault("/v1/subscriptions", vec![outage(); 20]);
    let deleted = w.stripe.cancel_subscription(&completed.subscription);
    // The sync after this event fails: the event is still acknowledged.
    w.deliver(&w.stripe.event("customer.subscription.deleted", deleted))
        .await;
    let last = w.subscription("u1", "?refresh=true").await;
    assert_eq!(last.status, 200);
    assert_eq!(last.json()["status"], "active", "the last known state");
    assert_eq!(w.get("/echo/pro/x", &bearer("u1")).await.status, 200);

    // A user Stripe has a customer for, but nothing known yet.
    w.stripe
        .add_customer("cus_u2", Some("u2@example.com"), &[("user_id", "u2")]);
    let none = w.subscription("u2", "").await;
    assert_eq!(none.status, 503);
    assert_eq!(
        none.json(),
        json!({"error": "Billing is temporarily unavailable"})
    );
    let gated = w.get("/echo/pro/x", &(bearer("u2") + BROWSER)).await;
    assert_eq!(gated.status, 503, "unavailable is never a redirect");
    let echo = w.get("/echo/free", &bearer("u2")).await;
    assert_eq!(echo.status, 200);
    assert_eq!(app_saw(&echo, "x-subscription-status"), ["unknown"]);
    assert_eq!(app_saw(&echo, "x-user-id"), ["u2"]);
    assert!(app_saw(&echo, "x-subscription-plan").is_empty());
    let metrics = w.metrics().await;
    assert!(metrics.contains("stripe_sidecar_gate_decisions_total{result=\"unavailable\"} 1"));
    assert!(metrics.contains("subscription_syncs_total{trigger=\"webhook\",outcome=\"error\"} 1"));
}

/// Spoofed identity headers: whatever the client sends under a configured
/// name never reaches the app, signed in or not, in any case, any number
/// of copies, or named in `Connection`.
#[tokio::test]
async fn spoofed_identity_headers_never_reach_the_app() {
    let w = world(|b| b).await;
    let spoof = "x-user-id: admin\r\nX-SUBSCRIPTION-STATUS: active\r\nx-subscription-plan: team\r\n\
                 x-Subscription-Plan: pro\r\nx-stripe-customer-id: cus_victim\r\nx-entitlements: api\r\n\
                 X-User-Email: root@example.com\r\n";
    let table: &[(&str, String, Option<&str>)] = &[
        ("no session", spoof.to_string(), None),
        ("a session", format!("{spoof}{}", bearer("u1")), Some("u1")),
        (
            "an expired or bad token",
            format!("{spoof}Authorization: Bearer {}x\r\n", token("u1")),
            None,
        ),
        (
            "identity headers named in Connection",
            format!(
                "{spoof}{}Connection: x-user-id, x-subscription-status\r\n",
                bearer("u1")
            ),
            Some("u1"),
        ),
        (
            "an API key (not a session)",
            format!("{spoof}Authorization: Bearer {API_KEY}\r\n"),
            None,
        ),
    ];
    for (case, headers, user) in table {
        let echo = w.get("/echo/free", headers).await;
        assert_eq!(echo.status, 200, "{case}: {}", echo.body);
        for (_, name) in IDENTITY {
            let seen = app_saw(&echo, name);
            match (user, name) {
                (None, _) => assert!(seen.is_empty(), "{case}: {name} reached the app: {seen:?}"),
                (Some(user), "x-user-id") => assert_eq!(seen, [*user], "{case}"),
                (Some(_), "x-subscription-status") => assert_eq!(seen, ["none"], "{case}"),
                (Some(_), "x-user-email") => assert_eq!(seen, ["u1@example.com"], "{case}"),
                (Some(_), "x-entitlements") => assert_eq!(seen, [""], "{case}"),
                (Some(_), _) => assert!(seen.is_empty(), "{case}: {name}: {seen:?}"),
            }
        }
    }
}

/// Gates match every spelling an app framework would route to the gated
/// page; refused requests never reach the app.
#[tokio::test]
async fn gate_patterns_cannot_be_spelled_around() {
    let w = world(|b| b).await;
    let before = w.app.requests();
    for path in [
        "/echo/pro",
        "/echo/pro/",
        "/ECHO/Pro/page",
        "/echo;v=1/pro/page",
        "/echo%2Fpro/page",
        "/echo%2fpro",
        "/echo%5Cpro",
        "/echo//pro/x",
        "/echo/./pro/x",
        "/echo/x/../pro/x",
        "/%65cho/pro/x",
    ] {
        let reply = w.get(path, "").await;
        assert_eq!(reply.status, 401, "{path}: {}", reply.body);
        assert_eq!(reply.json(), json!({"error": "Not signed in"}), "{path}");
    }
    assert_eq!(
        w.app.requests(),
        before,
        "no refused request reached the app"
    );
    for open in ["/echo/prox", "/echo/free/pro", "/echo"] {
        assert_eq!(w.get(open, "").await.status, 200, "{open}");
    }
    // `*` is one segment: `/echo/account/*` gates `/echo/account/me` only.
    assert_eq!(w.get("/echo/account/me", "").await.status, 401);
    let browser = w.get("/echo/account/me", BROWSER).await;
    assert_eq!(browser.status, 303);
    assert_eq!(
        browser.header("location"),
        Some("https://myapp.com/sign-in")
    );
    assert_eq!(w.get("/echo/account/me/deeper", "").await.status, 200);
    assert_eq!(w.get("/echo/account/me", &bearer("u9")).await.status, 200);
    let expired = format!("Authorization: Bearer {}x\r\n", token("u9"));
    let invalid = w.get("/echo/account/me", &expired).await;
    assert_eq!(invalid.status, 401);
    assert_eq!(
        invalid.json(),
        json!({"error": "Session is invalid or expired"})
    );
    let metrics = w.metrics().await;
    for line in [
        "stripe_sidecar_gate_decisions_total{result=\"no_session\"} 13",
        "stripe_sidecar_gate_decisions_total{result=\"invalid_session\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
}

/// Plans and Entitlements features: 403 when the plan or a feature is
/// missing, 402 first when not subscribed at all.
#[tokio::test]
async fn plans_and_features_gate_subscribed_users() {
    let w = world(|b| b).await;
    assert_eq!(
        w.get("/echo/api/x", &bearer("u1")).await.status,
        402,
        "not subscribed wins over a missing feature"
    );
    let session = w.checkout("u1", "pro").await;
    let completed = w.stripe.complete_checkout(&session);
    w.deliver(completed.event("invoice.paid")).await;
    let team = w.get("/echo/team/x", &bearer("u1")).await;
    assert_eq!(team.status, 403);
    assert_eq!(
        team.json(),
        json!({"error": "Your plan does not include this"})
    );
    assert_eq!(
        w.get("/echo/team/x", &(bearer("u1") + BROWSER))
            .await
            .status,
        303
    );
    assert_eq!(w.get("/echo/api/x", &bearer("u1")).await.status, 403);

    w.stripe
        .set_entitlements(&completed.customer, &["api", "export"]);
    let summary = json!({"object": "entitlements.active_entitlement_summary",
                         "customer": completed.customer, "livemode": false,
                         "entitlements": {"object": "list", "data": [], "has_more": false,
                                          "url": "/v1/entitlements/active_entitlements"}});
    w.deliver(
        &w.stripe
            .event("entitlements.active_entitlement_summary.updated", summary),
    )
    .await;
    let api = w.get("/echo/api/x", &bearer("u1")).await;
    assert_eq!(api.status, 200);
    assert_eq!(app_saw(&api, "x-entitlements"), ["api,export"]);
    assert_eq!(
        w.subscription("u1", "").await.json()["features"],
        json!(["api", "export"])
    );
    let metrics = w.metrics().await;
    assert!(metrics.contains("gate_decisions_total{result=\"wrong_plan\"} 2"));
    assert!(metrics.contains("gate_decisions_total{result=\"missing_feature\"} 1"));
}

/// The route's callers: an API key with the `subscription` action names
/// the user or the customer; others are refused as docs/reference.md says.
#[tokio::test]
async fn subscription_route_callers() {
    let w = world(|b| b).await;
    let session = w.checkout("u1", "team").await;
    let completed = w.stripe.complete_checkout(&session);
    let key = format!("Authorization: Bearer {API_KEY}\r\n");
    let by_user = w.get("/api/stripe/subscription?userId=u1", &key).await;
    assert_eq!(by_user.status, 200, "{}", by_user.body);
    assert_eq!(by_user.json()["plan"], "team");
    let by_customer = format!("/api/stripe/subscription?customerId={}", completed.customer);
    assert_eq!(w.get(&by_customer, &key).await.json()["status"], "active");

    let cases: &[(&str, String, u16, &str)] = &[
        ("anonymous", String::new(), 401, "Not signed in"),
        (
            "a session naming another user",
            bearer("u2"),
            403,
            "customerId and userId need an API key",
        ),
        (
            "a key without the action",
            "Authorization: Bearer sk_checkout_only\r\n".into(),
            403,
            "This API key is not allowed to call this route",
        ),
        (
            "a key naming nobody",
            key.clone(),
            400,
            "customerId or userId is required with an API key",
        ),
    ];
    for (case, headers, status, error) in cases {
        let path = if case.contains("naming another") {
            "/api/stripe/subscription?userId=u1"
        } else {
            "/api/stripe/subscription"
        };
        let reply = w.get(path, headers).await;
        assert_eq!(reply.status, *status, "{case}: {}", reply.body);
        assert_eq!(reply.json(), json!({ "error": error }), "{case}");
    }
    let post = raw::request(
        w.sidecar.addr,
        "POST",
        "/api/stripe/subscription",
        &bearer("u1"),
    )
    .await;
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow"), Some("GET"));
}

/// Concurrent syncs of one customer are one: twenty readers of a cold
/// state, and a webhook arriving meanwhile, cost two reads of Stripe (the
/// readers share one; the event needs one that began after it).
#[tokio::test]
async fn concurrent_syncs_of_one_customer_are_one() {
    let w = world(|b| b).await;
    w.stripe
        .add_customer("cus_c", Some("c@example.com"), &[("user_id", "c")]);
    let sub = w.stripe.add_subscription("cus_c", &["price_pro"], "active");
    w.stripe.fault(
        "/v1/subscriptions",
        vec![Fault::Delay(Duration::from_millis(300))],
    );
    let readers: Vec<_> = (0..20)
        .map(|_| {
            let addr = w.sidecar.addr;
            let auth = bearer("c");
            tokio::spawn(async move {
                raw::request(addr, "GET", "/api/stripe/subscription", &auth).await
            })
        })
        .collect();
    // The event arrives while the readers' sync is still at Stripe.
    let stripe = &w.stripe;
    eventually(Duration::from_secs(5), || {
        stripe
            .requests()
            .iter()
            .any(|r| r.path == "/v1/subscriptions")
    })
    .await;
    let event = w
        .stripe
        .event("customer.subscription.updated", w.stripe.subscription(&sub));
    w.deliver(&event).await;
    for reader in readers {
        let reply = reader.await.unwrap();
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(reply.json()["status"], "active");
    }
    assert_eq!(w.syncs(), 2);
}

/// A WebSocket upgrade on a gated path is gated, and one that passes
/// carries the identity headers.
#[tokio::test]
async fn websocket_upgrades_are_gated_and_carry_identity() {
    let w = world(|b| b.raw("[[gates]]\npath = \"/ws\"\nrequire = \"user\"\n")).await;
    let upgrade = "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
                   Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    let refused = w.get("/ws", upgrade).await;
    assert_eq!(refused.status, 401, "{}", refused.body);
    let echoed = w
        .get("/echo/free", &format!("{upgrade}{}", bearer("u1")))
        .await;
    assert_eq!(app_saw(&echoed, "x-user-id"), ["u1"]);
    let request = http::Request::builder()
        .uri(format!("ws://{}/ws", w.sidecar.addr))
        .header("host", w.sidecar.addr.to_string())
        .header("authorization", format!("Bearer {}", token("u1")))
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .body(())
        .unwrap();
    let (_socket, response) = tokio_tungstenite::connect_async(request)
        .await
        .expect("a signed-in upgrade passes the gate");
    assert_eq!(response.status(), 101);
}
