//! Identity end to end: tokens signed with JWKS keys served by the fake
//! app, key rotation, a JWKS outage, cookies and API keys on the real
//! routes. A caller who passes identity on the portal route with an empty
//! body gets 400 `Return URL is required`; one who does not gets the
//! contract's 401/403.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::support::app::FakeApp;
use crate::support::raw;
use crate::support::sidecar::{Builder, Sidecar};

const JWKS: &str = include_str!("fixtures/keys/jwks.json");
const JWKS_ROTATED: &str = include_str!("fixtures/keys/jwks-rotated.json");

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims() -> Value {
    json!({"sub": "user-7", "email": "u7@example.com", "role": "authenticated",
           "aud": "authenticated", "exp": now() + 600})
}

/// A token signed with the fixture key `file` under `kid`.
fn sign(alg: Algorithm, file: &str, kid: &str) -> String {
    let pem = std::fs::read(format!(
        "{}/tests/fixtures/keys/{file}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let key = match alg {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem),
        Algorithm::ES256 => EncodingKey::from_ec_pem(&pem),
        _ => EncodingKey::from_ed_pem(&pem),
    }
    .unwrap();
    let mut header = Header::new(alg);
    header.kid = Some(kid.into());
    encode(&header, &claims(), &key).unwrap()
}

/// A sidecar with a secret key (so callers get past the "not configured"
/// check to the body checks) verifying tokens with `app`'s JWKS.
fn jwks_sidecar(app: &FakeApp, min_refetch: u64) -> Builder {
    Sidecar::builder(&app.url())
        .set("auth", &format!("jwks_url = \"{}/jwks.json\"", app.url()))
        .set("auth", &format!("jwks_min_refetch_seconds = {min_refetch}"))
        .set("stripe", "secret_key = \"sk_test_identity\"")
        .set(
            "checkout",
            "allowed_redirect_origins = [\"https://app.example\"]",
        )
        .set("checkout", "allow_any_price = true")
}

/// POSTs `body` to the portal route with `headers`; returns status and error.
async fn portal(sidecar: &Sidecar, headers: &str, body: &str) -> (u16, String) {
    let request = format!(
        "POST /api/stripe/create-portal HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n{headers}\r\n{body}",
        body.len()
    );
    let response = raw::send(sidecar.addr, request.as_bytes()).await;
    let error = response.json()["error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    (response.status, error)
}

async fn with_token(sidecar: &Sidecar, token: &str) -> (u16, String) {
    portal(sidecar, &format!("Authorization: Bearer {token}\r\n"), "{}").await
}

/// Past identity, the portal checks its body: `{}` has no `returnUrl`.
const VERIFIED: (u16, &str) = (400, "Return URL is required");
const INVALID: (u16, &str) = (401, "Session is invalid or expired");

fn is(got: (u16, String), want: (u16, &str)) -> bool {
    got.0 == want.0 && got.1 == want.1
}

#[tokio::test]
async fn tokens_signed_by_jwks_keys_are_verified() {
    let app = FakeApp::start().await;
    app.set_jwks(JWKS.into());
    let sidecar = jwks_sidecar(&app, 5).start().await;
    for (alg, file, kid) in [
        (Algorithm::RS256, "rsa.pem", "rsa-1"),
        (Algorithm::ES256, "ec.pem", "ec-1"),
        (Algorithm::EdDSA, "ed25519.pem", "ed-1"),
    ] {
        let got = with_token(&sidecar, &sign(alg, file, kid)).await;
        assert!(is(got.clone(), VERIFIED), "{kid}: {got:?}");
    }
    // A key's algorithm is its own: the RSA key under the EC kid fails.
    assert!(is(
        with_token(&sidecar, &sign(Algorithm::RS256, "rsa.pem", "ec-1")).await,
        INVALID
    ));
    // HS256 is off without hs256_secret, whatever the token says.
    let hs = encode(
        &Header::new(Algorithm::HS256),
        &claims(),
        &EncodingKey::from_secret(b"guess"),
    )
    .unwrap();
    assert!(is(with_token(&sidecar, &hs).await, INVALID));
    // No token at all on a route that needs a user.
    assert_eq!(
        portal(&sidecar, "", "{}").await,
        (401, "Not signed in".into())
    );
}

#[tokio::test]
async fn an_unknown_kid_refetches_the_jwks_after_rotation() {
    let app = FakeApp::start().await;
    app.set_jwks(JWKS.into());
    let sidecar = jwks_sidecar(&app, 0).start().await;
    let rotated = sign(Algorithm::RS256, "rsa2.pem", "rsa-2");
    assert!(
        is(with_token(&sidecar, &rotated).await, INVALID),
        "unknown before the rotation"
    );
    app.set_jwks(JWKS_ROTATED.into());
    assert!(
        is(with_token(&sidecar, &rotated).await, VERIFIED),
        "known after the rotation"
    );
    // The old key is gone from the new set.
    assert!(is(
        with_token(&sidecar, &sign(Algorithm::RS256, "rsa.pem", "rsa-1")).await,
        INVALID
    ));
}

#[tokio::test]
async fn unknown_kids_refetch_at_most_once_per_interval() {
    let app = FakeApp::start().await;
    app.set_jwks(JWKS.into());
    let sidecar = jwks_sidecar(&app, 60).start().await;
    let known = sign(Algorithm::ES256, "ec.pem", "ec-1");
    assert!(is(with_token(&sidecar, &known).await, VERIFIED));
    let fetches = app.jwks_fetches();
    for kid in ["a", "b", "c", "d", "e"] {
        assert!(is(
            with_token(&sidecar, &sign(Algorithm::ES256, "ec.pem", kid)).await,
            INVALID
        ));
    }
    assert_eq!(
        app.jwks_fetches(),
        fetches,
        "a flood of unknown kids made no fetch"
    );
}

#[tokio::test]
async fn the_last_good_keys_survive_a_jwks_outage() {
    let keys = FakeApp::start().await;
    keys.set_jwks(JWKS.into());
    let sidecar = jwks_sidecar(&keys, 0).start().await;
    let known = sign(Algorithm::EdDSA, "ed25519.pem", "ed-1");
    assert!(is(with_token(&sidecar, &known).await, VERIFIED));
    drop(keys);
    // An unknown kid forces a refetch, which now fails...
    assert!(is(
        with_token(&sidecar, &sign(Algorithm::EdDSA, "ed25519.pem", "new")).await,
        INVALID
    ));
    // ...and the keys fetched before are kept.
    assert!(is(with_token(&sidecar, &known).await, VERIFIED));
}

#[tokio::test]
async fn the_sidecar_is_ready_while_the_jwks_is_down() {
    let gone = FakeApp::start().await;
    let url = gone.url();
    drop(gone);
    let app = FakeApp::start().await;
    let sidecar = Sidecar::builder(&app.url())
        .set("auth", &format!("jwks_url = \"{url}/jwks.json\""))
        .start()
        .await;
    assert_eq!(
        raw::request(sidecar.admin, "GET", "/readyz", "")
            .await
            .status,
        200
    );
    let got = with_token(&sidecar, &sign(Algorithm::RS256, "rsa.pem", "rsa-1")).await;
    assert!(is(got, INVALID));
    // Proxying is unaffected.
    assert_eq!(
        raw::request(sidecar.addr, "GET", "/echo", "").await.status,
        200
    );
}

#[tokio::test]
async fn supabase_cookie_and_api_key_callers_on_the_routes() {
    let app = FakeApp::start().await;
    app.set_jwks(JWKS.into());
    let key = "sk_backend_test_key";
    let sha: String = Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let sidecar = jwks_sidecar(&app, 5)
        .raw(&format!(
            "[[auth.api_keys]]\nname = \"backend\"\nsha256 = \"{sha}\"\nactions = [\"checkout\"]\n"
        ))
        .start()
        .await;
    let token = sign(Algorithm::RS256, "rsa.pem", "rsa-1");
    let session = json!({"access_token": token, "refresh_token": "r", "user": {"id": "user-7"}});
    let cookie = format!(
        "base64-{}",
        base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            session.to_string()
        )
    );
    let (first, second) = cookie.split_at(cookie.len() / 2);
    let chunked = format!(
        "Cookie: theme=dark; sb-proj-auth-token.1={second}; sb-proj-auth-token.0={first}\r\n"
    );
    assert!(is(portal(&sidecar, &chunked, "{}").await, VERIFIED));
    let missing =
        format!("Cookie: sb-proj-auth-token.0={first}; sb-proj-auth-token.2={second}\r\n");
    assert!(is(portal(&sidecar, &missing, "{}").await, INVALID));

    // A session caller may not name a customer or user.
    let as_user = format!("Authorization: Bearer {token}\r\n");
    for body in [
        r#"{"customerId":"cus_123"}"#,
        r#"{"userId":"someone-else"}"#,
    ] {
        assert_eq!(
            portal(&sidecar, &as_user, body).await,
            (403, "customerId and userId need an API key".into())
        );
    }
    // The API key may check out for a named user, not open the portal.
    let as_key = format!("Authorization: Bearer {key}\r\n");
    assert_eq!(portal(&sidecar, &as_key, r#"{"userId":"u1"}"#).await.0, 403);
    let body = r#"{"userId":"u1"}"#;
    let checkout = format!(
        "POST /api/stripe/create-checkout HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{as_key}\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let response = raw::send(sidecar.addr, checkout.as_bytes()).await;
    assert_eq!(
        response.json()["error"],
        "Price ID is required",
        "past identity"
    );
    let wrong = "Authorization: Bearer sk_backend_wrong\r\n";
    assert_eq!(
        portal(&sidecar, wrong, "{}").await,
        (401, "Invalid API key".into())
    );

    let metrics = raw::request(sidecar.admin, "GET", "/metrics", "")
        .await
        .body;
    for line in [
        "stripe_sidecar_auth_rejections_total{reason=\"bad_cookie\"} 1",
        "stripe_sidecar_auth_rejections_total{reason=\"needs_api_key\"} 2",
        "stripe_sidecar_auth_rejections_total{reason=\"action_not_allowed\"} 1",
        "stripe_sidecar_auth_rejections_total{reason=\"unknown_api_key\"} 1",
    ] {
        assert!(metrics.contains(line), "missing {line}");
    }
}
