//! The identity attack suite: every way of faking, stretching or breaking a
//! credential, each with the refusal it must get. JWKS rotation and outages
//! are end-to-end tests (`tests/identity.rs`), against a served key set.

use super::*;
use crate::config::Config;
use http::HeaderValue;
use jsonwebtoken::{encode, EncodingKey, Header};
use moka::Expiry;
use serde_json::json;

const SECRET: &str = "super-secret-jwt-token-with-at-least-32-characters";
const RSA_PRIVATE: &str = include_str!("../../tests/fixtures/keys/rsa.pem");
const RSA_PUBLIC: &str = include_str!("../../tests/fixtures/keys/rsa.pub.pem");
/// `printf %s sk_backend_key_1 | sha256sum`
const BACKEND_KEY: &str = "sk_backend_key_1";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

fn identity_with(extra: &str) -> Identity {
    let text = format!(
        "[auth]\nhs256_secret = \"{SECRET}\"\n{extra}\n\
         [[auth.api_keys]]\nname = \"backend\"\nsha256 = \"{}\"\nactions = [\"checkout\"]\n",
        sha256_hex(BACKEND_KEY)
    );
    let config = Config::parse(&text, &|_| None).unwrap();
    Identity::new(
        &config.auth,
        crate::http_client::https_client(Duration::from_secs(1)).unwrap(),
    )
}

fn identity() -> Identity {
    identity_with("")
}

/// [`claims`] with `key` set to a raw JSON value, kept as written.
fn claims_with_raw(key: &str, raw: &str) -> Value {
    let mut claims = claims();
    claims[key] = serde_json::from_str(raw).unwrap();
    claims
}

/// Supabase's claims for a signed-in user.
fn claims() -> Value {
    json!({
        "sub": "user-1",
        "email": "ada@example.com",
        "role": "authenticated",
        "aud": "authenticated",
        "iss": "https://ref.supabase.co/auth/v1",
        "iat": now(),
        "exp": now() + 3600,
    })
}

fn with(mut claims: Value, key: &str, value: Value) -> Value {
    if value.is_null() {
        claims.as_object_mut().unwrap().remove(key);
    } else {
        claims[key] = value;
    }
    claims
}

fn hs256(claims: &Value) -> String {
    hs256_with(claims, SECRET.as_bytes())
}

fn hs256_with(claims: &Value, secret: &[u8]) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .unwrap()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn bearer(token: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
    );
    headers
}

fn cookies(pairs: &[(String, String)]) -> HeaderMap {
    let line = pairs
        .iter()
        .map(|(n, v)| format!("{n}={v}"))
        .collect::<Vec<_>>()
        .join("; ");
    let mut headers = HeaderMap::new();
    headers.insert(header::COOKIE, HeaderValue::from_str(&line).unwrap());
    headers
}

/// JavaScript's `encodeURIComponent`.
fn encode_uri_component(text: &str) -> String {
    const KEEP: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'!')
        .remove(b'~')
        .remove(b'*')
        .remove(b'\'')
        .remove(b'(')
        .remove(b')');
    percent_encoding::utf8_percent_encode(text, KEEP).to_string()
}

/// The cookies `@supabase/ssr` writes for `session` under `name`: the value
/// `base64-` + base64url(JSON), split by `createChunks` into pieces whose
/// `encodeURIComponent` form is at most 3180 characters (never splitting
/// an escape), each chunk then stored URI-encoded.
fn supabase_cookies(name: &str, session: &Value) -> Vec<(String, String)> {
    let value = format!("base64-{}", b64(session.to_string().as_bytes()));
    supabase_chunks(name, &value)
}

fn supabase_chunks(name: &str, value: &str) -> Vec<(String, String)> {
    const MAX_CHUNK: usize = 3180;
    let mut encoded = encode_uri_component(value);
    if encoded.len() <= MAX_CHUNK {
        return vec![(name.to_string(), encoded)];
    }
    let mut chunks = Vec::new();
    while !encoded.is_empty() {
        let mut head = encoded.len().min(MAX_CHUNK);
        // Do not cut a %XX escape in two.
        if let Some(pct) = encoded[..head].rfind('%') {
            if pct + 3 > head {
                head = pct;
            }
        }
        let rest = encoded.split_off(head);
        chunks.push(std::mem::replace(&mut encoded, rest));
    }
    chunks
        .into_iter()
        .enumerate()
        .map(|(i, chunk)| (format!("{name}.{i}"), chunk))
        .collect()
}

fn session(token: &str) -> Value {
    json!({
        "access_token": token,
        "token_type": "bearer",
        "expires_in": 3600,
        "expires_at": now() + 3600,
        "refresh_token": "v1.refresh-token-value",
        "user": {"id": "user-1", "email": "ada@example.com", "aud": "authenticated",
                 "app_metadata": {"provider": "email"},
                 "user_metadata": {"bio": "x".repeat(8000)}},
    })
}

async fn outcome(identity: &Identity, headers: &HeaderMap) -> Result<Caller, Rejection> {
    identity.caller(headers, Action::Checkout).await
}

fn user(id: &str) -> Result<Caller, Rejection> {
    Ok(Caller::User(Arc::new(User {
        id: id.into(),
        email: Some("ada@example.com".into()),
    })))
}

#[tokio::test]
async fn bearer_token_attacks_are_refused() {
    let identity = identity_with("issuer = \"https://ref.supabase.co/auth/v1\"");
    let valid = hs256(&claims());
    let (head, rest) = valid.split_once('.').unwrap();
    let (payload, signature) = rest.split_once('.').unwrap();
    let forged_payload = b64(with(claims(), "sub", json!("admin")).to_string().as_bytes());
    let rsa_key = EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap();
    let mut rs256 = Header::new(Algorithm::RS256);
    rs256.kid = Some("rsa-1".into());
    let none_header = b64(br#"{"alg":"none","typ":"JWT"}"#);
    let cases: Vec<(&str, String, Result<Caller, Rejection>)> = vec![
        ("valid", valid.clone(), user("user-1")),
        (
            "alg none",
            format!("{none_header}.{payload}."),
            Err(Rejection::Malformed),
        ),
        (
            "alg none with the real signature",
            format!("{none_header}.{payload}.{signature}"),
            Err(Rejection::Malformed),
        ),
        (
            "HS256 signed with the RSA public key",
            hs256_with(&claims(), RSA_PUBLIC.as_bytes()),
            Err(Rejection::Signature),
        ),
        (
            "RS256 without a JWKS",
            encode(&rs256, &claims(), &rsa_key).unwrap(),
            Err(Rejection::Algorithm),
        ),
        (
            "HS384",
            encode(
                &Header::new(Algorithm::HS384),
                &claims(),
                &EncodingKey::from_secret(SECRET.as_bytes()),
            )
            .unwrap(),
            Err(Rejection::Algorithm),
        ),
        (
            "wrong secret",
            hs256_with(&claims(), b"another-secret"),
            Err(Rejection::Signature),
        ),
        (
            "expired",
            hs256(&with(claims(), "exp", json!(now() - 120))),
            Err(Rejection::Expired),
        ),
        (
            "expired within leeway",
            hs256(&with(claims(), "exp", json!(now() - 10))),
            user("user-1"),
        ),
        (
            "no exp",
            hs256(&with(claims(), "exp", Value::Null)),
            Err(Rejection::Claims),
        ),
        (
            "future nbf",
            hs256(&with(claims(), "nbf", json!(now() + 600))),
            Err(Rejection::NotYetValid),
        ),
        (
            "nbf within leeway",
            hs256(&with(claims(), "nbf", json!(now() + 10))),
            user("user-1"),
        ),
        (
            "wrong issuer",
            hs256(&with(
                claims(),
                "iss",
                json!("https://evil.supabase.co/auth/v1"),
            )),
            Err(Rejection::Issuer),
        ),
        (
            "wrong audience",
            hs256(&with(claims(), "aud", json!("anon"))),
            Err(Rejection::Audience),
        ),
        (
            "audience array",
            hs256(&with(claims(), "aud", json!(["x", "authenticated"]))),
            user("user-1"),
        ),
        (
            "audience array without ours",
            hs256(&with(claims(), "aud", json!(["x", "y"]))),
            Err(Rejection::Audience),
        ),
        // Regression: with `audience`/`issuer` configured, a token without
        // the claim (or with a null or numeric one) was accepted.
        (
            "no aud",
            hs256(&with(claims(), "aud", Value::Null)),
            Err(Rejection::Claims),
        ),
        (
            "aud null",
            hs256(&claims_with_raw("aud", "null")),
            Err(Rejection::Claims),
        ),
        (
            "aud numeric",
            hs256(&claims_with_raw("aud", "123")),
            Err(Rejection::Claims),
        ),
        (
            "no iss",
            hs256(&with(claims(), "iss", Value::Null)),
            Err(Rejection::Claims),
        ),
        (
            "iss numeric",
            hs256(&claims_with_raw("iss", "7")),
            Err(Rejection::Claims),
        ),
        // Regression: an `exp` past the clock's range panicked.
        (
            "exp at u64::MAX",
            hs256(&with(claims(), "exp", json!(u64::MAX))),
            Err(Rejection::Claims),
        ),
        (
            "exp beyond i64::MAX",
            hs256(&with(claims(), "exp", json!(i64::MAX as u64 + 1))),
            Err(Rejection::Claims),
        ),
        (
            "exp as a huge float",
            hs256(&with(claims(), "exp", json!(1e30))),
            Err(Rejection::Claims),
        ),
        (
            "anon key",
            hs256(
                &json!({"iss": "supabase", "ref": "abc", "role": "anon", "iat": now(), "exp": now() + 3600}),
            ),
            Err(Rejection::Claims),
        ),
        (
            "anon role, user-shaped",
            hs256(&with(claims(), "role", json!("anon"))),
            Err(Rejection::Claims),
        ),
        (
            "service role",
            hs256(&with(claims(), "role", json!("service_role"))),
            Err(Rejection::Claims),
        ),
        (
            "no role",
            hs256(&with(claims(), "role", Value::Null)),
            Err(Rejection::Claims),
        ),
        (
            "no sub",
            hs256(&with(claims(), "sub", Value::Null)),
            Err(Rejection::Claims),
        ),
        (
            "numeric sub",
            hs256(&with(claims(), "sub", json!(42))),
            Err(Rejection::Claims),
        ),
        (
            "empty sub",
            hs256(&with(claims(), "sub", json!(""))),
            Err(Rejection::Claims),
        ),
        (
            "tampered payload",
            format!("{head}.{forged_payload}.{signature}"),
            Err(Rejection::Signature),
        ),
        (
            "tampered signature",
            format!("{head}.{payload}.{}", b64(b"not the signature")),
            Err(Rejection::Signature),
        ),
        (
            "no signature",
            format!("{head}.{payload}."),
            Err(Rejection::Signature),
        ),
        ("garbage JWT", "a.b.c".into(), Err(Rejection::Malformed)),
        (
            "truncated",
            valid[..valid.len() / 2].to_string() + ".x",
            Err(Rejection::Malformed),
        ),
        (
            "oversized",
            hs256(&with(claims(), "pad", json!("x".repeat(MAX_TOKEN_BYTES)))),
            Err(Rejection::Malformed),
        ),
    ];
    for (name, token, want) in cases {
        assert_eq!(outcome(&identity, &bearer(&token)).await, want, "{name}");
    }
}

#[tokio::test]
async fn authorization_header_forms() {
    let identity = identity();
    let token = hs256(&claims());
    let header = |value: &str| {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        headers
    };
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        assert_eq!(
            outcome(&identity, &header(&format!("{scheme} {token}"))).await,
            user("user-1")
        );
    }
    // Regression: another scheme (Basic auth in front of a staging site,
    // Digest) or an empty header turned a valid cookie session into 401.
    let session_cookie = supabase_cookies("sb-ref-auth-token", &session(&token));
    for other in [
        "Basic dXNlcjpwYXNz",
        "Digest username=\"a\", realm=\"b\"",
        "",
        "Bearer",
        "Bearer ",
        &token,
        "Token abc",
    ] {
        assert_eq!(
            outcome(&identity, &header(other)).await,
            Ok(Caller::Anonymous),
            "{other:?} alone is no credential"
        );
        let mut both = cookies(&session_cookie);
        both.insert(header::AUTHORIZATION, HeaderValue::from_str(other).unwrap());
        assert_eq!(
            outcome(&identity, &both).await,
            user("user-1"),
            "{other:?} must not hide the session cookie"
        );
    }
    assert_eq!(
        outcome(&identity, &HeaderMap::new()).await,
        Ok(Caller::Anonymous)
    );
}

#[tokio::test]
async fn supabase_cookies_are_read_as_supabase_ssr_writes_them() {
    let identity = identity();
    let token = hs256(&claims());
    let small = supabase_cookies("sb-abcdefgh-auth-token", &json!({"access_token": token}));
    assert_eq!(small.len(), 1);
    assert_eq!(outcome(&identity, &cookies(&small)).await, user("user-1"));

    let big = supabase_cookies("sb-abcdefgh-auth-token", &session(&token));
    assert!(big.len() >= 3, "the session is chunked: {}", big.len());
    assert!(big.iter().all(|(_, v)| v.len() <= 3180));
    assert_eq!(outcome(&identity, &cookies(&big)).await, user("user-1"));

    // Chunks in any order, among other cookies, with the code verifier.
    let mut shuffled = big.clone();
    shuffled.reverse();
    shuffled.insert(
        1,
        (
            "sb-abcdefgh-auth-token-code-verifier".into(),
            "verifier".into(),
        ),
    );
    shuffled.push(("theme".into(), "dark".into()));
    assert_eq!(
        outcome(&identity, &cookies(&shuffled)).await,
        user("user-1")
    );

    // Older @supabase/ssr: the session JSON itself, URI-encoded, chunked.
    let plain = supabase_chunks("sb-abcdefgh-auth-token", &session(&token).to_string());
    assert!(plain.len() >= 2);
    assert_eq!(outcome(&identity, &cookies(&plain)).await, user("user-1"));

    // A raw JWT in the legacy cookie.
    let raw = vec![("sb-access-token".to_string(), token.clone())];
    assert_eq!(outcome(&identity, &cookies(&raw)).await, user("user-1"));

    // The bearer header wins over cookies.
    let mut headers = cookies(&[("sb-access-token".into(), "garbage".into())]);
    headers.extend(bearer(&token));
    assert_eq!(outcome(&identity, &headers).await, user("user-1"));
}

#[tokio::test]
async fn broken_auth_cookies_are_invalid_not_anonymous() {
    let identity = identity();
    let token = hs256(&claims());
    let big = supabase_cookies("sb-ref-auth-token", &session(&token));
    let without = |i: usize| -> Vec<(String, String)> {
        big.iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, c)| c.clone())
            .collect()
    };
    let expired = hs256(&with(claims(), "exp", json!(now() - 3600)));
    type Jar = Vec<(String, String)>;
    let cases: Vec<(&str, Jar, Result<Caller, Rejection>)> = vec![
        (
            "missing middle chunk",
            without(1),
            Err(Rejection::BadCookie),
        ),
        ("missing first chunk", without(0), Err(Rejection::BadCookie)),
        (
            "missing last chunk",
            without(big.len() - 1),
            Err(Rejection::BadCookie),
        ),
        (
            "garbage",
            vec![("sb-ref-auth-token".into(), "garbage".into())],
            Err(Rejection::BadCookie),
        ),
        (
            "bad base64",
            vec![("sb-ref-auth-token".into(), "base64-!!!".into())],
            Err(Rejection::BadCookie),
        ),
        (
            "base64 of not JSON",
            vec![(
                "sb-ref-auth-token".into(),
                format!("base64-{}", b64(b"hello")),
            )],
            Err(Rejection::BadCookie),
        ),
        (
            "session without access_token",
            supabase_cookies("sb-ref-auth-token", &json!({"refresh_token": "r"})),
            Err(Rejection::BadCookie),
        ),
        (
            "truncated value",
            vec![("sb-ref-auth-token".into(), big[0].1[..100].to_string())],
            Err(Rejection::BadCookie),
        ),
        (
            "expired token in a valid cookie",
            supabase_cookies("sb-ref-auth-token", &json!({"access_token": expired})),
            Err(Rejection::Expired),
        ),
        (
            "empty legacy cookie",
            vec![("sb-access-token".into(), "".into())],
            Err(Rejection::BadCookie),
        ),
        // Not auth cookies at all: anonymous.
        (
            "code verifier only",
            vec![("sb-ref-auth-token-code-verifier".into(), "v".into())],
            Ok(Caller::Anonymous),
        ),
        (
            "dot in the wildcard",
            vec![("sb-a.b-auth-token".into(), token.clone())],
            Ok(Caller::Anonymous),
        ),
        (
            "empty wildcard",
            vec![("sb--auth-token".into(), token.clone())],
            Ok(Caller::Anonymous),
        ),
        (
            "other cookies",
            vec![("session".into(), token.clone())],
            Ok(Caller::Anonymous),
        ),
    ];
    for (name, jar, want) in cases {
        assert_eq!(outcome(&identity, &cookies(&jar)).await, want, "{name}");
    }
}

#[tokio::test]
async fn api_keys_are_checked_by_hash_and_action() {
    let identity = identity();
    assert_eq!(
        outcome(&identity, &bearer(BACKEND_KEY)).await,
        Ok(Caller::ApiKey("backend".into()))
    );
    for wrong in [
        "sk_backend_key_2",
        "sk_backend_key_",
        "SK_BACKEND_KEY_1",
        &sha256_hex(BACKEND_KEY),
    ] {
        assert_eq!(
            outcome(&identity, &bearer(wrong)).await,
            Err(Rejection::UnknownApiKey),
            "{wrong}"
        );
    }
    let portal = identity.caller(&bearer(BACKEND_KEY), Action::Portal).await;
    assert!(matches!(portal, Err(Rejection::ActionNotAllowed)));
}

#[test]
fn only_api_key_callers_may_name_someone() {
    let user = Caller::User(Arc::new(User {
        id: "u1".into(),
        email: None,
    }));
    let key = Caller::ApiKey("backend".into());
    let naming = |user_id: Option<&str>, customer_id: Option<&str>| Named {
        user_id: user_id.map(Into::into),
        customer_id: customer_id.map(Into::into),
        email: Some("b@example.com".into()),
    };
    for caller in [&user, &Caller::Anonymous] {
        for named in [
            naming(Some("u2"), None),
            naming(None, Some("cus_1")),
            naming(Some("u1"), None),
        ] {
            assert!(matches!(caller.subject(named), Err(Rejection::NeedsApiKey)));
        }
    }
    assert_eq!(
        user.subject(Named::default()).unwrap(),
        Subject::User(User {
            id: "u1".into(),
            email: None
        })
    );
    assert_eq!(
        key.subject(naming(Some("u2"), None)).unwrap(),
        Subject::User(User {
            id: "u2".into(),
            email: Some("b@example.com".into())
        })
    );
    assert_eq!(
        key.subject(naming(Some("u2"), Some("cus_1"))).unwrap(),
        Subject::Customer {
            id: "cus_1".into(),
            email: Some("b@example.com".into())
        }
    );
    assert_eq!(key.subject(Named::default()).unwrap(), Subject::Anonymous);
}

#[tokio::test]
async fn verified_tokens_are_cached_until_their_exp() {
    let identity = identity();
    let token = hs256(&with(claims(), "exp", json!(now() + 2)));
    assert_eq!(outcome(&identity, &bearer(&token)).await, user("user-1"));
    identity.verified.run_pending_tasks().await;
    assert_eq!(identity.verified.entry_count(), 1);
    let entry = identity
        .verified
        .get(&<[u8; 32]>::from(Sha256::digest(token.as_bytes())))
        .await
        .unwrap();
    let lifetime = UntilExp
        .expire_after_create(&[0; 32], &entry, std::time::Instant::now())
        .unwrap();
    assert!(lifetime <= Duration::from_secs(2), "{lifetime:?}");
}

#[test]
fn cookie_name_patterns() {
    for (pattern, name, want) in [
        ("sb-*-auth-token", "sb-abcd-auth-token", true),
        ("sb-*-auth-token", "sb-ABCD1234-auth-token", true),
        // Regression: custom domains and self-hosted projects have dashes.
        ("sb-*-auth-token", "sb-a-b-auth-token", true),
        ("sb-*-auth-token", "sb-my-app-auth-token", true),
        ("sb-*-auth-token", "sb-supabase-kong-auth-token", true),
        ("sb-*-auth-token", "sb-a.b-auth-token", false),
        ("sb-*-auth-token", "sb-abcd-auth-token.0", false),
        ("sb-*-auth-token", "sb--auth-token", false),
        ("sb-*-auth-token", "sb-abcd-auth-token-code-verifier", false),
        ("sb-*-auth-token", "xsb-abcd-auth-token", false),
        ("sb-access-token", "sb-access-token", true),
        ("sb-access-token", "sb-access-tokens", false),
    ] {
        assert_eq!(name_matches(pattern, name), want, "{pattern} {name}");
    }
}

#[test]
fn jwks_keys_are_tied_to_their_algorithm() {
    let keys = parse_jwks(include_bytes!("../../tests/fixtures/keys/jwks.json")).unwrap();
    assert_eq!(keys["rsa-1"].0, Algorithm::RS256);
    assert_eq!(keys["ec-1"].0, Algorithm::ES256);
    assert_eq!(keys["ed-1"].0, Algorithm::EdDSA);
    // Unusable keys are skipped, not fatal.
    let mixed = json!({"keys": [
        {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
        {"kty": "RSA", "kid": "enc", "use": "enc", "n": "AQAB", "e": "AQAB"},
        {"kty": "RSA", "kid": "wrong-alg", "alg": "HS256", "n": "AQAB", "e": "AQAB"},
        {"kty": "RSA", "n": "AQAB", "e": "AQAB"},
        {"nonsense": true},
    ]});
    // Regression: a set with no usable key replaced the last good keys.
    assert!(parse_jwks(mixed.to_string().as_bytes()).is_err());
    assert!(parse_jwks(b"not json").is_err());
}

/// The cookies of `tests/fixtures/supabase-ssr-cookies.json`, written by the
/// real `@supabase/ssr` (`tests/fixtures/supabase-ssr/generate.mjs`), not by
/// the re-implementation in `supabase_cookies`.
#[tokio::test]
async fn cookies_written_by_the_real_supabase_ssr_are_read() {
    let fixture: Value = serde_json::from_str(include_str!(
        "../../tests/fixtures/supabase-ssr-cookies.json"
    ))
    .unwrap();
    let expected = Ok(Caller::User(Arc::new(User {
        id: "ssr-user-1".into(),
        email: Some("ssr@example.com".into()),
    })));
    let case = |name: &str| -> Vec<(String, String)> {
        serde_json::from_value(fixture["cases"][name].clone()).unwrap()
    };
    let base = format!("sb-{}-auth-token", fixture["project_ref"].as_str().unwrap());

    let small = case("small");
    assert_eq!(small.len(), 1);
    assert_eq!(small[0].0, base);
    assert!(small[0].1.starts_with("base64-"));

    let chunked = case("chunked");
    assert!(chunked.len() >= 2, "chunked: {}", chunked.len());
    for (i, (name, _)) in chunked.iter().enumerate() {
        assert_eq!(*name, format!("{base}.{i}"));
    }

    // Every case, each with a fresh verifier (no cached token).
    for (name, _) in fixture["cases"].as_object().unwrap() {
        let pairs = case(name);
        assert_eq!(
            outcome(&identity(), &cookies(&pairs)).await,
            expected,
            "case {name}"
        );
    }
}

/// As `@supabase/ssr` reads them: an unchunked cookie wins over chunks of
/// the same name, in whatever order they come.
#[tokio::test]
async fn an_unchunked_cookie_wins_over_chunks_of_the_same_name() {
    let identity = identity();
    let whole = ("sb-ref-auth-token".to_string(), hs256(&claims()));
    let stale = session(&hs256(&with(claims(), "sub", json!("someone-else"))));
    let chunks = supabase_cookies("sb-ref-auth-token", &stale);
    assert!(chunks.len() > 1, "the stale session is chunked");
    for whole_first in [true, false] {
        let mut pairs = chunks.clone();
        if whole_first {
            pairs.insert(0, whole.clone());
        } else {
            pairs.push(whole.clone());
        }
        assert_eq!(
            outcome(&identity, &cookies(&pairs)).await,
            user("user-1"),
            "whole first: {whole_first}"
        );
    }
}
