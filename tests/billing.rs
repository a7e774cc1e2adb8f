//! Checkout and portal end to end: the sidecar in front of the fake app,
//! calling the fake Stripe. Each test checks the exact form Stripe
//! received, the reply the caller got, and what was created.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::support::app::FakeApp;
use crate::support::sidecar::{Builder, Sidecar};
use crate::support::stripe::{FakeStripe, Fault, Recorded};

const SECRET: &str = "billing-test-jwt-secret-with-32-characters!";
const API_KEY: &str = "sk_backend_billing";

/// A signed-in Supabase user's token.
fn token(user: &str, email: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = json!({"sub": user, "email": email, "role": "authenticated",
                        "aud": "authenticated", "exp": now + 600});
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

struct World {
    app: FakeApp,
    stripe: FakeStripe,
    sidecar: Sidecar,
}

/// The sidecar configured for billing against the fake Stripe; `more`
/// adds or overrides configuration.
async fn world(more: impl FnOnce(Builder, &FakeApp) -> Builder) -> World {
    let app = FakeApp::start().await;
    let stripe = FakeStripe::start().await;
    stripe.add_price("price_once", false);
    stripe.add_price("price_monthly", true);
    let sha: String = Sha256::digest(API_KEY.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let builder = Sidecar::builder(&app.url())
        .set("auth", &format!("hs256_secret = \"{SECRET}\""))
        .set("stripe", "secret_key = \"sk_test_sidecar\"")
        .set("stripe", &format!("api_base = \"{}\"", stripe.url()))
        .set("checkout", "allowed_redirect_origins = [\"https://myapp.com\"]")
        .set("checkout", "allow_any_price = true")
        .raw(&format!(
            "[[auth.api_keys]]\nname = \"backend\"\nsha256 = \"{sha}\"\nactions = [\"checkout\", \"portal\"]\n"
        ));
    let sidecar = more(builder, &app).start().await;
    World {
        app,
        stripe,
        sidecar,
    }
}

async fn default_world() -> World {
    world(|b, _| b).await
}

struct Reply {
    status: u16,
    body: Value,
}

impl World {
    async fn post(&self, path: &str, auth: Option<&str>, body: Value) -> Reply {
        let client = reqwest::Client::new();
        let mut request = client.post(self.sidecar.url(path)).body(body.to_string());
        if let Some(auth) = auth {
            request = request.header("authorization", format!("Bearer {auth}"));
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let bytes = response.bytes().await.unwrap();
        Reply {
            status,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        }
    }

    async fn checkout(&self, auth: Option<&str>, body: Value) -> Reply {
        self.post("/api/stripe/create-checkout", auth, body).await
    }

    async fn portal(&self, auth: Option<&str>, body: Value) -> Reply {
        self.post("/api/stripe/create-portal", auth, body).await
    }

    /// Requests Stripe received for `path`.
    fn calls(&self, path: &str) -> Vec<Recorded> {
        self.stripe
            .requests()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }

    fn sessions(&self) -> Vec<Recorded> {
        self.calls("/v1/checkout/sessions")
    }

    async fn metrics(&self) -> String {
        reqwest::get(self.sidecar.admin_url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

fn payment() -> Value {
    json!({
        "priceId": "price_once",
        "successUrl": "https://myapp.com/done?session_id={CHECKOUT_SESSION_ID}",
        "cancelUrl": "https://myapp.com/pricing",
        "mode": "payment",
    })
}

fn subscription() -> Value {
    let mut body = payment();
    body["priceId"] = json!("price_monthly");
    body["mode"] = json!("subscription");
    body
}

/// The form fields Stripe got, sorted, for exact comparison.
fn form(request: &Recorded) -> Vec<(String, String)> {
    let mut form = request.form.clone();
    form.sort();
    form
}

/// The form of a `payment()` checkout, plus `extra` fields.
fn payment_form(extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let base = [
        ("mode", "payment"),
        ("line_items[0][price]", "price_once"),
        ("line_items[0][quantity]", "1"),
        (
            "success_url",
            "https://myapp.com/done?session_id={CHECKOUT_SESSION_ID}",
        ),
        ("cancel_url", "https://myapp.com/pricing"),
    ];
    pairs(&[&base[..], extra].concat())
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut pairs: Vec<_> = expected
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    pairs.sort();
    pairs
}

#[tokio::test]
async fn anonymous_checkout_sends_no_customer_fields() {
    let w = default_world().await;
    let reply = w.checkout(None, payment()).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let session_id = reply.body["sessionId"].as_str().unwrap();
    assert!(session_id.starts_with("cs_"));
    assert_eq!(
        reply.body["url"],
        format!("https://checkout.stripe.com/c/pay/{session_id}")
    );
    let sessions = w.sessions();
    assert_eq!(sessions.len(), 1);
    assert_eq!(form(&sessions[0]), payment_form(&[]));
    assert_eq!(
        sessions[0].header("authorization"),
        Some("Bearer sk_test_sidecar")
    );
    assert_eq!(
        sessions[0].header("stripe-version"),
        Some(stripe_client_core::VERSION.as_str())
    );
    assert!(w.calls("/v1/customers").is_empty());
    assert_eq!(w.app.requests(), 0);
}

#[tokio::test]
async fn a_known_customer_is_found_by_search_and_then_cached() {
    let w = default_world().await;
    w.stripe.add_customer(
        "cus_known",
        Some("ada@example.com"),
        &[("user_id", "user-1")],
    );
    let ada = token("user-1", "ada@example.com");
    for _ in 0..2 {
        let reply = w.checkout(Some(&ada), payment()).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    let searches = w.calls("/v1/customers/search");
    assert_eq!(searches.len(), 1, "the second checkout used the cache");
    assert_eq!(
        searches[0].query,
        [(
            "query".to_string(),
            "metadata['user_id']:'user-1'".to_string()
        )]
    );
    for session in w.sessions() {
        assert_eq!(
            form(&session),
            payment_form(&[
                ("client_reference_id", "user-1"),
                ("customer", "cus_known"),
                ("metadata[user_id]", "user-1"),
            ])
        );
    }
    let metrics = w.metrics().await;
    assert!(
        metrics.contains("stripe_sidecar_customer_cache_total{result=\"hit\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("stripe_sidecar_customer_cache_total{result=\"miss\"} 1"));
    assert!(metrics.contains(
        "stripe_sidecar_stripe_requests_total{endpoint=\"checkout_sessions\",outcome=\"ok\"} 2"
    ));
}

#[tokio::test]
async fn a_new_user_gets_one_customer_created_and_cached() {
    let w = default_world().await;
    let bo = token("user-2", "bo@example.com");
    let reply = w.checkout(Some(&bo), subscription()).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let created = w.calls("/v1/customers");
    assert_eq!(created.len(), 1);
    assert_eq!(
        form(&created[0]),
        pairs(&[("email", "bo@example.com"), ("metadata[user_id]", "user-2")])
    );
    let key = created[0].header("idempotency-key").unwrap().to_string();
    assert!(key.starts_with("stripe-sidecar-customer-"), "{key}");
    let customer = w.stripe.customers()[0]["id"].as_str().unwrap().to_string();
    // Search lags: the new customer is not searchable, but it is cached.
    let again = w.checkout(Some(&bo), subscription()).await;
    assert_eq!(again.status, 200);
    assert_eq!(w.calls("/v1/customers/search").len(), 1);
    assert_eq!(w.stripe.customers().len(), 1);
    for session in w.sessions() {
        assert_eq!(session.field("customer"), Some(customer.as_str()));
        assert_eq!(session.field("customer_email"), None);
        assert_eq!(session.field("customer_creation"), None);
        assert_eq!(
            session.field("subscription_data[metadata][user_id]"),
            Some("user-2")
        );
    }
}

#[tokio::test]
async fn fifty_concurrent_first_checkouts_create_one_customer() {
    let w = default_world().await;
    let new = token("user-race", "race@example.com");
    let replies =
        futures_util::future::join_all((0..50).map(|_| w.checkout(Some(&new), payment()))).await;
    assert!(replies.iter().all(|r| r.status == 200), "all succeed");
    assert_eq!(w.stripe.customers().len(), 1, "one customer");
    assert_eq!(w.calls("/v1/customers/search").len(), 1, "one lookup");
    assert_eq!(w.calls("/v1/customers").len(), 1, "one creation");
    let customer = w.stripe.customers()[0]["id"].as_str().unwrap().to_string();
    let sessions = w.sessions();
    assert_eq!(sessions.len(), 50);
    assert!(sessions
        .iter()
        .all(|s| s.field("customer") == Some(customer.as_str())));
}

#[tokio::test]
async fn trial_metadata_and_a_billstack_route() {
    let w = world(|b, _| {
        b.raw(
            "[[routes]]\npath = \"/api/billstack/teams/{teamId}/projects/{projectId}/checkout\"\n\
             action = \"checkout\"\nstatus = 201\ndefault_mode = \"subscription\"\n",
        )
        .set("checkout", "allow_promotion_codes = true")
        .set("checkout", "max_trial_days = 14")
    })
    .await;
    w.stripe
        .add_customer("cus_team", None, &[("user_id", "user-3")]);
    let route = "/api/billstack/teams/t%201/projects/p2/checkout";
    let mut longer = subscription();
    longer["trialDays"] = json!(15);
    let refused = w
        .post(route, Some(&token("user-3", "c@x.io")), longer)
        .await;
    assert_eq!(refused.status, 400);
    assert_eq!(refused.body["error"], "trialDays must be between 1 and 14");
    let mut body = subscription();
    body.as_object_mut().unwrap().remove("mode");
    body["trialDays"] = json!(14);
    body["quantity"] = json!(3);
    body["metadata"] = json!({"plan": "team", "teamId": "spoofed", "user_id": "spoofed"});
    let reply = w
        .post(
            "/api/billstack/teams/t%201/projects/p2/checkout",
            Some(&token("user-3", "c@x.io")),
            body,
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    assert!(reply.body["sessionId"].as_str().unwrap().starts_with("cs_"));
    let metadata = [
        ("plan", "team"),
        ("teamId", "t 1"),
        ("projectId", "p2"),
        ("user_id", "user-3"),
    ];
    let mut expected = vec![
        ("mode", "subscription"),
        ("line_items[0][price]", "price_monthly"),
        ("line_items[0][quantity]", "3"),
        (
            "success_url",
            "https://myapp.com/done?session_id={CHECKOUT_SESSION_ID}",
        ),
        ("cancel_url", "https://myapp.com/pricing"),
        ("client_reference_id", "user-3"),
        ("customer", "cus_team"),
        ("allow_promotion_codes", "true"),
        ("subscription_data[trial_period_days]", "14"),
    ];
    let keys: Vec<(String, String)> = metadata
        .iter()
        .flat_map(|(k, v)| {
            [
                (format!("metadata[{k}]"), v.to_string()),
                (format!("subscription_data[metadata][{k}]"), v.to_string()),
            ]
        })
        .collect();
    expected.extend(keys.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    assert_eq!(form(&w.sessions()[0]), pairs(&expected));
}

#[tokio::test]
async fn the_http_source_asks_the_app_and_lets_checkout_create_the_customer() {
    let w = world(|b, app| {
        b.set("customers", "source = \"http\"")
            .set(
                "customers",
                &format!("lookup_url = \"{}/customers/{{userId}}\"", app.url()),
            )
            .set(
                "customers",
                "lookup_headers = { x-lookup-key = \"lookup-secret\" }",
            )
    })
    .await;
    w.app.set_customer("user-h1", "cus_h1");
    w.stripe.add_customer("cus_h1", None, &[]);
    let reply = w
        .checkout(Some(&token("user-h1", "h1@x.io")), payment())
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(w.sessions()[0].field("customer"), Some("cus_h1"));
    // None found (404): Checkout creates the customer from the email.
    let odd = token("user/h 2", "h2@x.io");
    assert_eq!(w.checkout(Some(&odd), payment()).await.status, 200);
    assert_eq!(w.checkout(Some(&odd), subscription()).await.status, 200);
    let sessions = w.sessions();
    for (session, creation) in [(&sessions[1], Some("always")), (&sessions[2], None)] {
        assert_eq!(session.field("customer"), None);
        assert_eq!(session.field("customer_email"), Some("h2@x.io"));
        assert_eq!(session.field("customer_creation"), creation);
        assert_eq!(session.field("client_reference_id"), Some("user/h 2"));
    }
    assert_eq!(
        w.app.lookups(),
        [
            (
                "/customers/user-h1".to_string(),
                Some("lookup-secret".to_string())
            ),
            (
                "/customers/user%2Fh%202".to_string(),
                Some("lookup-secret".to_string())
            ),
        ],
        "one lookup each: the 404 was cached too"
    );
    assert!(w.calls("/v1/customers/search").is_empty() && w.calls("/v1/customers").is_empty());
}

#[tokio::test]
async fn a_failing_app_lookup_is_503() {
    let w = world(|b, app| {
        b.set("customers", "source = \"http\"").set(
            "customers",
            &format!("lookup_url = \"{}/status/500?u={{userId}}\"", app.url()),
        )
    })
    .await;
    let reply = w
        .portal(
            Some(&token("user-h3", "h3@x.io")),
            json!({"returnUrl": "https://myapp.com/"}),
        )
        .await;
    assert_eq!(
        (reply.status, reply.body["error"].as_str().unwrap()),
        (503, "Billing is temporarily unavailable")
    );
    assert!(w.stripe.requests().is_empty());
}

#[tokio::test]
async fn api_key_callers_act_for_the_customer_or_user_they_name() {
    let w = default_world().await;
    w.stripe.add_customer("cus_named", None, &[]);
    let mut body = payment();
    body["customerId"] = json!("cus_named");
    let reply = w.checkout(Some(API_KEY), body).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let session = &w.sessions()[0];
    assert_eq!(session.field("customer"), Some("cus_named"));
    assert_eq!(session.field("client_reference_id"), None);

    let mut body = payment();
    body["userId"] = json!("user-9");
    body["email"] = json!("nine@example.com");
    assert_eq!(w.checkout(Some(API_KEY), body).await.status, 200);
    let created = w.calls("/v1/customers");
    assert_eq!(created.len(), 1);
    assert_eq!(created[0].field("email"), Some("nine@example.com"));
    assert_eq!(created[0].field("metadata[user_id]"), Some("user-9"));
    assert_eq!(w.sessions()[1].field("client_reference_id"), Some("user-9"));

    let portal = w
        .portal(
            Some(API_KEY),
            json!({"customerId": "cus_named", "returnUrl": "https://myapp.com/account"}),
        )
        .await;
    assert_eq!(portal.status, 200, "{}", portal.body);
}

#[tokio::test]
async fn the_portal_opens_for_a_customer_and_explains_when_there_is_none() {
    let w = default_world().await;
    w.stripe
        .add_customer("cus_portal", None, &[("user_id", "user-4")]);
    let body = json!({"returnUrl": "https://myapp.com/account"});
    let reply = w
        .portal(Some(&token("user-4", "d@x.io")), body.clone())
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(reply.body["url"]
        .as_str()
        .unwrap()
        .starts_with("https://billing.stripe.com/p/session/"));
    let sessions = w.calls("/v1/billing_portal/sessions");
    assert_eq!(
        form(&sessions[0]),
        pairs(&[
            ("customer", "cus_portal"),
            ("return_url", "https://myapp.com/account")
        ])
    );
    let none = w.portal(Some(&token("user-5", "e@x.io")), body).await;
    assert_eq!(
        (none.status, none.body["error"].as_str().unwrap()),
        (
            400,
            "You don't have a billing account yet. Make a purchase first."
        )
    );
    for (body, error) in [
        (json!({}), "Return URL is required"),
        (
            json!({"returnUrl": "/account"}),
            "returnUrl must be a valid URI",
        ),
        (
            json!({"returnUrl": "https://evil.com/"}),
            "returnUrl is not an allowed redirect URL",
        ),
    ] {
        let reply = w.portal(Some(&token("user-4", "d@x.io")), body).await;
        assert_eq!(
            (reply.status, reply.body["error"].as_str().unwrap()),
            (400, error)
        );
    }
    assert_eq!(w.portal(None, json!({})).await.status, 401);
    assert_eq!(w.calls("/v1/billing_portal/sessions").len(), 1);
    assert!(
        w.calls("/v1/customers").is_empty(),
        "the portal never creates"
    );
}

#[tokio::test]
async fn retries_reuse_one_idempotency_key() {
    let w = default_world().await;
    let five_hundred = Fault::Status {
        status: 500,
        should_retry: None,
        error_type: "api_error",
        message: "boom",
    };
    w.stripe.fault(
        "/v1/checkout/sessions",
        vec![five_hundred.clone(), Fault::Reset],
    );
    let reply = w.checkout(None, payment()).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let tries = w.sessions();
    assert_eq!(tries.len(), 3);
    let key = tries[0].header("idempotency-key").unwrap();
    assert!(tries
        .iter()
        .all(|t| t.header("idempotency-key") == Some(key)));
    // A new call gets a new key.
    w.checkout(None, payment()).await;
    assert_ne!(w.sessions()[3].header("idempotency-key"), Some(key));
    let metrics = w.metrics().await;
    for line in [
        "endpoint=\"checkout_sessions\",outcome=\"server_error\"} 1",
        "endpoint=\"checkout_sessions\",outcome=\"network_error\"} 1",
        "endpoint=\"checkout_sessions\",outcome=\"ok\"} 2",
    ] {
        assert!(metrics.contains(line), "{line}\n{metrics}");
    }
}

#[tokio::test]
async fn stripe_failures_map_to_replies() {
    let status = |status, should_retry, error_type, message| Fault::Status {
        status,
        should_retry,
        error_type,
        message,
    };
    let unavailable = (502, "Stripe is unavailable, please try again");
    let cases: Vec<(Vec<Fault>, usize, (u16, &str))> = vec![
        (vec![status(500, None, "api_error", "a"); 3], 3, unavailable),
        (
            vec![status(503, Some(false), "api_error", "a")],
            1,
            unavailable,
        ),
        (
            vec![status(429, None, "rate_limit_error", "slow"); 3],
            3,
            unavailable,
        ),
        (
            vec![
                status(409, None, "invalid_request_error", "lock"),
                status(500, None, "api_error", "a"),
            ],
            3,
            (200, ""),
        ),
        // Each try times out long before the first would have finished.
        (
            vec![Fault::Delay(Duration::from_secs(5)); 3],
            3,
            unavailable,
        ),
        (
            vec![status(
                401,
                None,
                "invalid_request_error",
                "Invalid API Key provided: sk_test_****dcar",
            )],
            1,
            (500, "Billing is misconfigured"),
        ),
        (
            vec![status(403, None, "invalid_request_error", "forbidden")],
            1,
            (500, "Billing is misconfigured"),
        ),
        (
            vec![status(
                400,
                None,
                "invalid_request_error",
                "No such price: 'price_x'",
            )],
            1,
            (400, "No such price: 'price_x'"),
        ),
        (
            vec![
                status(400, Some(true), "invalid_request_error", "odd"),
                status(400, None, "invalid_request_error", "odd"),
            ],
            2,
            (400, "odd"),
        ),
    ];
    for (faults, tries, (code, error)) in cases {
        let w = world(|b, _| b.set("stripe", "timeout_ms = 500")).await;
        w.stripe.fault("/v1/checkout/sessions", faults.clone());
        let reply = w.checkout(None, payment()).await;
        let got = reply.body["error"].as_str().unwrap_or_default();
        assert_eq!((reply.status, got), (code, error), "{faults:?}");
        assert_eq!(w.sessions().len(), tries, "{faults:?}");
        assert!(!reply.body.to_string().contains("sk_test_sidecar"));
    }
}

/// Fault injection (issue 10): whatever Stripe does, the caller gets the
/// contract's reply in bounded time, nothing is created twice, and the
/// next request works.
#[tokio::test]
async fn stripe_faults_are_bounded_create_nothing_twice_and_pass() {
    let w = world(|b, _| {
        b.set("stripe", "timeout_ms = 300")
            .set("stripe", "max_retries = 1")
    })
    .await;
    let user = token("user-f1", "f1@x.io");
    let unavailable = (502, "Stripe is unavailable, please try again");
    let cases = [
        ("a cut-off JSON reply", vec![Fault::Malformed]),
        ("resets", vec![Fault::Reset, Fault::Reset]),
        (
            "slower than timeout_ms",
            vec![Fault::Delay(Duration::from_secs(30)); 2],
        ),
    ];
    for (what, faults) in cases {
        w.stripe.fault("/v1/checkout/sessions", faults);
        let started = std::time::Instant::now();
        let reply = w.checkout(Some(&user), payment()).await;
        let got = (
            reply.status,
            reply.body["error"].as_str().unwrap_or_default(),
        );
        assert_eq!(got, unavailable, "{what}");
        // Two tries of 300 ms and one wait: far below the fake's 30 s.
        assert!(started.elapsed() < Duration::from_secs(10), "{what}");
        let next = w.checkout(Some(&user), payment()).await;
        assert_eq!(next.status, 200, "{what}: healthy afterwards");
    }
    assert_eq!(w.stripe.customers().len(), 1, "one customer for the user");
    let sessions = w.stripe.requests();
    let created = sessions
        .iter()
        .filter(|r| r.path == "/v1/checkout/sessions" && r.method == "POST")
        .map(|r| r.header("idempotency-key").unwrap_or_default().to_string())
        .collect::<std::collections::BTreeSet<_>>();
    assert_eq!(
        created.len(),
        6,
        "one key per checkout, reused by its retry"
    );
}

/// Issue 10, finding 8: `stripe.max_concurrency` bounds the calls in
/// flight; the rest wait their turn and still succeed.
#[tokio::test]
async fn stripe_calls_in_flight_are_bounded_by_max_concurrency() {
    for limit in [1, 64] {
        let w = world(|b, _| b.set("stripe", &format!("max_concurrency = {limit}"))).await;
        w.stripe.fault(
            "/v1/checkout/sessions",
            vec![Fault::Delay(Duration::from_millis(200)); 5],
        );
        let replies =
            futures_util::future::join_all((0..5).map(|_| w.checkout(None, payment()))).await;
        assert!(replies.iter().all(|r| r.status == 200), "all served");
        let most = w.stripe.most_in_flight();
        match limit {
            1 => assert_eq!(most, 1, "one at a time"),
            _ => assert!(most > 1, "the calls overlap without the limit: {most}"),
        }
    }
}

#[tokio::test]
async fn a_failing_lookup_is_503_and_creates_nothing() {
    let w = default_world().await;
    let boom = Fault::Status {
        status: 500,
        should_retry: None,
        error_type: "api_error",
        message: "boom",
    };
    w.stripe.fault("/v1/customers/search", vec![boom; 3]);
    let reply = w
        .checkout(Some(&token("user-6", "f@x.io")), payment())
        .await;
    assert_eq!(
        (reply.status, reply.body["error"].as_str().unwrap()),
        (503, "Billing is temporarily unavailable")
    );
    assert_eq!(w.calls("/v1/customers/search").len(), 3);
    assert!(w.calls("/v1/customers").is_empty());
    assert!(w.sessions().is_empty());
}

#[tokio::test]
async fn stripe_connections_are_reused() {
    let w = default_world().await;
    for _ in 0..10 {
        assert_eq!(w.checkout(None, payment()).await.status, 200);
    }
    assert_eq!(w.sessions().len(), 10);
    assert_eq!(
        w.stripe.connections(),
        1,
        "one keep-alive connection for ten calls"
    );
    let connections: std::collections::HashSet<_> =
        w.sessions().iter().map(|s| s.connection).collect();
    assert_eq!(connections.len(), 1);
}

#[tokio::test]
async fn validation_fails_before_anything_reaches_stripe() {
    let w = default_world().await;
    let mut body = payment();
    body["successUrl"] = json!("https://evil.com/phish");
    let reply = w.checkout(Some(&token("user-7", "g@x.io")), body).await;
    assert_eq!(
        (reply.status, reply.body["error"].as_str().unwrap()),
        (400, "successUrl is not an allowed redirect URL")
    );
    let big = json!({"priceId": "x".repeat(70_000)});
    assert_eq!(w.checkout(None, big).await.status, 413);
    assert!(w.stripe.requests().is_empty());
}
