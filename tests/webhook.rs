//! Webhooks end to end: events signed the way Stripe signs them, verified
//! by the sidecar, forwarded to an app that verifies them again itself, and
//! their effect on the customer cache seen through the portal route.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::Mac;
use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::{json, Value};

use crate::support::app::FakeApp;
use crate::support::sidecar::{Builder, Sidecar};
use crate::support::stripe::FakeStripe;

const SECRET: &str = "whsec_current";
const OLD_SECRET: &str = "whsec_previous";
const JWT_SECRET: &str = "webhook-test-jwt-secret-with-32-characters";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// `v1` as Stripe computes it: HMAC-SHA256 of `t.body` with the secret.
fn v1(secret: &str, t: u64, body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The `Stripe-Signature` header Stripe sends: `t=...,v1=...,v0=...`.
fn signature(secret: &str, t: u64, body: &[u8]) -> String {
    format!(
        "t={t},v1={},v0=6ffbb59b2300aae63f272406069a9788598b792a944a07aba816edb039989a39",
        v1(secret, t, body)
    )
}

fn event(kind: &str, object: Value) -> Vec<u8> {
    // Stripe's own pretty-printed layout: the bytes must survive unchanged.
    serde_json::to_vec_pretty(&json!({
        "id": "evt_1NG8Du2eZvKYlo2CUI79vXWy",
        "object": "event",
        "api_version": "2026-09-30.endive",
        "created": now(),
        "type": kind,
        "data": {"object": object},
        "livemode": false,
        "pending_webhooks": 1,
        "request": {"id": null, "idempotency_key": null}
    }))
    .unwrap()
}

struct Hook {
    app: FakeApp,
    stripe: FakeStripe,
    sidecar: Sidecar,
}

async fn hook(more: impl FnOnce(Builder) -> Builder) -> Hook {
    let app = FakeApp::start().await;
    app.set_webhook_secret(SECRET);
    let stripe = FakeStripe::start().await;
    let builder = Sidecar::builder(&app.url())
        .set(
            "stripe",
            &format!("webhook_secrets = [\"{OLD_SECRET}\", \"\", \"{SECRET}\"]"),
        )
        .set("stripe", "secret_key = \"sk_test_hooks\"")
        .set("stripe", &format!("api_base = \"{}\"", stripe.url()))
        .set("auth", &format!("hs256_secret = \"{JWT_SECRET}\""))
        .set(
            "checkout",
            "allowed_redirect_origins = [\"https://myapp.com\"]",
        )
        .set("checkout", "allow_any_price = true");
    let sidecar = more(builder).start().await;
    Hook {
        app,
        stripe,
        sidecar,
    }
}

impl Hook {
    async fn send(&self, signature: Option<&str>, body: Vec<u8>) -> (u16, String) {
        self.send_to("/api/stripe/webhook", signature, body).await
    }

    async fn send_to(&self, path: &str, signature: Option<&str>, body: Vec<u8>) -> (u16, String) {
        let client = reqwest::Client::new();
        let mut request = client
            .post(self.sidecar.url(path))
            .header("content-type", "application/json; charset=utf-8")
            .header(
                "user-agent",
                "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
            )
            .body(body);
        if let Some(signature) = signature {
            request = request.header("stripe-signature", signature);
        }
        let response = request.send().await.unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    async fn portal(&self, user: &str) -> (u16, String) {
        let claims = json!({"sub": user, "role": "authenticated", "aud": "authenticated", "exp": now() + 600});
        let token = encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(JWT_SECRET.as_bytes()),
        )
        .unwrap();
        let response = reqwest::Client::new()
            .post(self.sidecar.url("/api/stripe/create-portal"))
            .bearer_auth(token)
            .body(json!({"returnUrl": "https://myapp.com/account"}).to_string())
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }
}

fn error(message: &str) -> String {
    json!({ "error": message }).to_string()
}

#[tokio::test]
async fn verified_events_reach_the_app_byte_for_byte() {
    let h = hook(|b| b).await;
    let body = event(
        "invoice.paid",
        json!({"id": "in_1", "note": "ünïcode  and  spaces"}),
    );
    let header = signature(SECRET, now(), &body);
    let (status, reply) = h.send(Some(&header), body.clone()).await;
    assert_eq!(
        (status, reply.as_str()),
        (200, "app handled the event (200)")
    );
    let received = h.app.webhooks();
    assert_eq!(received.len(), 1);
    assert!(received[0].verified, "the app's own check passed");
    assert_eq!(received[0].body, body);
    assert_eq!(received[0].uri, "/api/stripe/webhook");
    let header_of = |name: &str| {
        received[0]
            .headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(header_of("stripe-signature"), Some(header.as_str()));
    assert_eq!(
        header_of("user-agent"),
        Some("Stripe/1.0 (+https://stripe.com/docs/webhooks)")
    );
    assert_eq!(
        header_of("content-type"),
        Some("application/json; charset=utf-8")
    );
    assert_eq!(
        header_of("content-length"),
        Some(body.len().to_string().as_str())
    );
}

#[tokio::test]
async fn a_failing_app_fails_the_webhook_so_stripe_retries() {
    let h = hook(|b| b).await;
    h.app.set_webhook_status(500);
    let body = event("invoice.paid", json!({"id": "in_2"}));
    let (status, reply) = h.send(Some(&signature(SECRET, now(), &body)), body).await;
    assert_eq!(
        (status, reply.as_str()),
        (500, "app handled the event (500)")
    );
    // The app goes away (the sidecar keeps its old address).
    let Hook {
        app,
        stripe,
        sidecar,
    } = h;
    drop(app);
    let h = Hook {
        app: FakeApp::start().await,
        stripe,
        sidecar,
    };
    let body = event("invoice.paid", json!({"id": "in_3"}));
    let (status, _) = h.send(Some(&signature(SECRET, now(), &body)), body).await;
    assert_eq!(status, 502, "the app is down: Stripe must retry");
}

#[tokio::test]
async fn bad_signatures_are_refused_and_go_nowhere() {
    let h = hook(|b| b).await;
    let body = event("invoice.paid", json!({"id": "in_4"}));
    let t = now();
    let mut tampered = body.clone();
    let at = tampered.len() - 3;
    tampered[at] ^= 1;
    let invalid = error("Invalid Stripe signature");
    let cases: Vec<(Option<String>, Vec<u8>, (u16, String))> = vec![
        (
            None,
            body.clone(),
            (400, error("Missing Stripe-Signature header")),
        ),
        (
            Some(signature(SECRET, t, &body)),
            tampered,
            (400, invalid.clone()),
        ),
        (
            Some(signature(SECRET, t - 301, &body)),
            body.clone(),
            (400, invalid.clone()),
        ),
        (
            Some(signature("whsec_unknown", t, &body)),
            body.clone(),
            (400, invalid.clone()),
        ),
        (Some(format!("t={t}")), body.clone(), (400, invalid.clone())),
        (
            Some(format!("v1={}", v1(SECRET, t, &body))),
            body.clone(),
            (400, invalid.clone()),
        ),
        (Some("garbage".into()), body.clone(), (400, invalid.clone())),
    ];
    for (header, body, want) in cases {
        assert_eq!(h.send(header.as_deref(), body).await, want, "{header:?}");
    }
    assert!(
        h.app.webhooks().is_empty(),
        "an unverified event never reaches the app"
    );
}

#[tokio::test]
async fn rotation_and_several_signatures() {
    let h = hook(|b| b).await;
    let body = event("invoice.paid", json!({"id": "in_5"}));
    let t = now();
    // Signed with the old secret only: the sidecar accepts it.
    assert_eq!(
        h.send(Some(&signature(OLD_SECRET, t, &body)), body.clone())
            .await
            .0,
        400,
        "the app only knows the new secret"
    );
    assert_eq!(
        h.app.webhooks().len(),
        1,
        "verified by the sidecar, refused by the app"
    );
    // During rotation Stripe signs with both.
    let both = format!(
        "t={t},v1={},v1={}",
        v1(OLD_SECRET, t, &body),
        v1(SECRET, t, &body)
    );
    assert_eq!(h.send(Some(&both), body.clone()).await.0, 200);
    let stale = h
        .send(Some(&signature(SECRET, t - 10_000, &body)), body)
        .await;
    assert_eq!(stale.0, 400);
}

#[tokio::test]
async fn body_size_limits() {
    let h = hook(|b| b).await;
    const MIB: usize = 1024 * 1024;
    let mut body = event("invoice.paid", json!({"id": "in_6"}));
    body.resize(MIB, b' ');
    assert_eq!(
        h.send(Some(&signature(SECRET, now(), &body)), body.clone())
            .await
            .0,
        200
    );
    body.push(b' ');
    let (status, reply) = h.send(Some(&signature(SECRET, now(), &body)), body).await;
    assert_eq!((status, reply), (413, error("Request body is too large")));
    assert_eq!(
        h.app.webhooks().len(),
        1,
        "the oversized event was not forwarded"
    );
}

#[tokio::test]
async fn without_forward_to_the_sidecar_acknowledges() {
    let h = hook(|b| {
        b.raw("[[routes]]\npath = \"/hooks/stripe\"\naction = \"webhook\"\n")
            .raw("[[routes]]\npath = \"/hooks/forwarded\"\naction = \"webhook\"\nforward_to = \"/hooks/app\"\n")
    })
    .await;
    let body = event("invoice.paid", json!({"id": "in_7"}));
    let header = signature(SECRET, now(), &body);
    let reply = h
        .send_to("/hooks/stripe", Some(&header), body.clone())
        .await;
    assert_eq!(reply, (200, json!({"received": true}).to_string()));
    assert!(h.app.webhooks().is_empty());
    let reply = h
        .send_to("/hooks/forwarded?attempt=2", Some(&header), body)
        .await;
    assert_eq!(reply.0, 200);
    assert_eq!(h.app.webhooks()[0].uri, "/hooks/app?attempt=2");
}

#[tokio::test]
async fn no_secret_means_503_before_anything_else() {
    let app = FakeApp::start().await;
    let sidecar = Sidecar::builder(&app.url())
        .set("stripe", "webhook_secrets = [\"\"]")
        .start()
        .await;
    let response = reqwest::Client::new()
        .post(sidecar.url("/api/stripe/webhook"))
        .body(vec![b'x'; 10_000])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(
        response.text().await.unwrap(),
        error("Webhook secret is not configured")
    );
    assert!(app.webhooks().is_empty());
}

#[tokio::test]
async fn completed_checkouts_and_deleted_customers_update_the_cache() {
    let h = hook(|b| b).await;
    let none = error("You don't have a billing account yet. Make a purchase first.");
    assert_eq!(
        h.portal("user-w1").await,
        (400, none.clone()),
        "caches \"none\""
    );
    h.stripe.add_customer("cus_w1", None, &[]);
    let completed = event(
        "checkout.session.completed",
        json!({"id": "cs_test_1", "object": "checkout.session", "client_reference_id": "user-w1",
               "metadata": {"user_id": "user-w1"},
               "customer": "cus_w1", "mode": "subscription", "status": "complete"}),
    );
    let (status, _) = h
        .send(Some(&signature(SECRET, now(), &completed)), completed)
        .await;
    assert_eq!(status, 200);
    let searches = || {
        h.stripe
            .requests()
            .iter()
            .filter(|r| r.path == "/v1/customers/search")
            .count()
    };
    assert_eq!(searches(), 1);
    let (status, reply) = h.portal("user-w1").await;
    assert_eq!(status, 200, "the cached none was replaced at once: {reply}");
    assert_eq!(searches(), 1, "no new lookup");

    let deleted = event(
        "customer.deleted",
        json!({"id": "cus_w1", "object": "customer", "deleted": true}),
    );
    assert_eq!(
        h.send(Some(&signature(SECRET, now(), &deleted)), deleted)
            .await
            .0,
        200
    );
    assert_eq!(
        h.portal("user-w1").await,
        (400, none),
        "looked up again, and gone"
    );
    assert_eq!(searches(), 2);
}

/// Regression: a signed `checkout.session.completed` from a Payment Link
/// (whose `client_reference_id` anyone can choose) replaced a user's cached
/// customer with another.
#[tokio::test]
async fn a_payment_link_cannot_hand_a_user_another_customer() {
    let h = hook(|b| b).await;
    let none = error("You don't have a billing account yet. Make a purchase first.");
    let completed = |user: &str, metadata: Value| {
        event(
            "checkout.session.completed",
            json!({"id": "cs_link", "object": "checkout.session", "client_reference_id": user,
                   "metadata": metadata, "customer": "cus_attacker", "mode": "payment",
                   "status": "complete"}),
        )
    };
    let portal_customers = || {
        h.stripe
            .requests()
            .iter()
            .filter(|r| r.path == "/v1/billing_portal/sessions")
            .flat_map(|r| r.form.clone())
            .filter(|(k, _)| k == "customer")
            .map(|(_, v)| v)
            .collect::<Vec<_>>()
    };
    // A cached "none" is not filled by a session the sidecar did not make.
    assert_eq!(h.portal("user-w2").await, (400, none.clone()));
    let link = completed("user-w2", json!({}));
    let sent = h.send(Some(&signature(SECRET, now(), &link)), link).await;
    assert_eq!(sent.0, 200);
    assert_eq!(h.portal("user-w2").await, (400, none));
    // A cached customer is never replaced, even by a matching session.
    h.stripe
        .add_customer("cus_w3", None, &[("user_id", "user-w3")]);
    assert_eq!(h.portal("user-w3").await.0, 200);
    let forged = completed("user-w3", json!({"user_id": "user-w3"}));
    let sent = h
        .send(Some(&signature(SECRET, now(), &forged)), forged)
        .await;
    assert_eq!(sent.0, 200);
    assert_eq!(h.portal("user-w3").await.0, 200);
    assert_eq!(portal_customers(), ["cus_w3", "cus_w3"]);
}

/// A stale or malformed `Stripe-Signature` is refused before the body is
/// read: a client that sends headers and then nothing gets its 400 at once.
#[tokio::test]
async fn a_bad_signature_header_costs_no_body_read() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let h = hook(|b| b).await;
    let stale = signature(SECRET, now() - 3600, b"{}");
    for header in [stale.as_str(), "garbage", "t=abc,v1=00"] {
        let mut stream = tokio::net::TcpStream::connect(h.sidecar.addr)
            .await
            .unwrap();
        let head = format!(
            "POST /api/stripe/webhook HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\
             Stripe-Signature: {header}\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut reply = vec![0u8; 1024];
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut reply))
            .await
            .expect("answered without waiting for the body")
            .unwrap();
        let reply = String::from_utf8_lossy(&reply[..n]);
        assert!(reply.starts_with("HTTP/1.1 400"), "{header}: {reply}");
        assert!(reply.contains("Invalid Stripe signature"), "{reply}");
    }
    assert_eq!(h.app.webhooks().len(), 0);
}
