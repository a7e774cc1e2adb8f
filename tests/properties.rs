//! Properties of the parsers of untrusted input, over the entry points the
//! fuzz targets in `fuzz/` drive (`stripe_sidecar::fuzz`): none panics on
//! any input, and each keeps its invariants (a fresh signature verifies and
//! no one-byte change of the body does; a plain `Bearer` token and a real
//! `@supabase/ssr` session cookie, chunked in any way, are found; a valid
//! checkout body is accepted and any one fault in it refused; path
//! normalization is idempotent; `config.toml` stays valid without any one of
//! its lines, since each holds its default). Short runs (64 cases or fewer
//! each), so they are part of `cargo test`; the fuzzers run far longer.
//!
//! A failure the fuzzers found is pinned here as a plain `#[test]` named
//! after it, with its reproducer under `fuzz/regressions/<target>/`.

use std::collections::BTreeMap;

use base64::Engine as _;
use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;
use serde_json::{json, Map, Value};
use stripe_sidecar::fuzz;
use stripe_sidecar::routes::{loose_segments, normalize};

/// Short runs (`PROPTEST_CASES=N` in the environment runs N cases of each
/// instead); failures are not written under `tests/` (a failing case is
/// printed, and pinned by hand as a `#[test]`).
fn cases(n: u32) -> ProptestConfig {
    let from_env = std::env::var_os("PROPTEST_CASES").is_some();
    ProptestConfig {
        cases: if from_env {
            ProptestConfig::default().cases
        } else {
            n
        },
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------
// credential_from: `Authorization` and `@supabase/ssr` cookies
// ---------------------------------------------------------------------------

/// The `access_token` the real `@supabase/ssr` fixture carries.
const FIXTURE: &str = include_str!("fixtures/supabase-ssr-cookies.json");

fn fixture() -> Value {
    serde_json::from_str(FIXTURE).expect("the fixture is JSON")
}

/// A JWT-shaped token: three base64url parts, the last possibly empty.
fn jwt_shaped() -> impl Strategy<Value = String> {
    (
        "[A-Za-z0-9_-]{1,40}",
        "[A-Za-z0-9_-]{1,60}",
        "[A-Za-z0-9_-]{0,43}",
    )
        .prop_map(|(h, p, s)| format!("{h}.{p}.{s}"))
}

/// `bearer` in any letter case.
fn bearer_scheme() -> impl Strategy<Value = String> {
    prop::collection::vec(any::<bool>(), 6).prop_map(|upper| {
        "bearer"
            .chars()
            .zip(upper)
            .map(|(c, up)| if up { c.to_ascii_uppercase() } else { c })
            .collect()
    })
}

/// Header lines with the names and characters the parser looks at.
fn header_lines() -> impl Strategy<Value = String> {
    let name = prop_oneof![
        Just("Authorization"),
        Just("authorization"),
        Just("Cookie"),
        Just("cookie"),
        Just("X-Other"),
    ];
    let cookie_name = prop_oneof![
        Just("sb-abcdefghijklmnopqrst-auth-token".to_string()),
        Just("sb-access-token".to_string()),
        "sb-[a-z.]{0,4}-auth-token(\\.[0-9]{1,2})?",
        "[a-z.=-]{0,6}",
    ];
    let cookie_value = prop_oneof![
        Just("base64-".to_string()),
        "base64-[A-Za-z0-9_=-]{0,40}",
        "%[0-9A-Fa-f]{0,2}[\\[\\]{}\":,a-z%]{0,20}",
        "[ -~]{0,30}",
    ];
    let cookie = (cookie_name, cookie_value).prop_map(|(n, v)| format!("{n}={v}"));
    let value = prop_oneof![
        prop::collection::vec(cookie, 0..5).prop_map(|c| c.join("; ")),
        (bearer_scheme(), "[ -~]{0,30}").prop_map(|(s, t)| format!("{s} {t}")),
        "[ -~]{0,40}",
    ];
    prop::collection::vec((name, value), 0..5).prop_map(|lines| {
        lines
            .into_iter()
            .map(|(n, v)| format!("{n}: {v}\n"))
            .collect()
    })
}

/// A session as `@supabase/ssr` stores it: `base64-` + base64url (no
/// padding) of the session JSON.
fn ssr_cookie_value(access_token: &str) -> String {
    let session = json!({
        "access_token": access_token,
        "token_type": "bearer",
        "expires_in": 3600,
        "refresh_token": "refresh-1",
        "user": {"id": "user-1", "user_metadata": {"bio": "Zoë ✓ 🚀"}},
    });
    format!(
        "base64-{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(session.to_string())
    )
}

/// `value` cut at `cuts` (positions, deduplicated) into `NAME.0`,
/// `NAME.1`, ... chunks, each non-empty.
fn chunks(name: &str, value: &str, cuts: &[usize]) -> Vec<(String, String)> {
    let mut at: Vec<usize> = cuts.iter().map(|c| c % value.len()).collect();
    at.push(0);
    at.push(value.len());
    at.sort_unstable();
    at.dedup();
    at.windows(2)
        .enumerate()
        .map(|(i, w)| (format!("{name}.{i}"), value[w[0]..w[1]].to_string()))
        .collect()
}

/// The cookies as header lines: all on one `Cookie` line, or one line each.
fn cookie_lines(cookies: &[(String, String)], one_line: bool) -> String {
    let pairs: Vec<String> = cookies.iter().map(|(n, v)| format!("{n}={v}")).collect();
    if one_line {
        format!("Cookie: {}\n", pairs.join("; "))
    } else {
        pairs.iter().map(|p| format!("Cookie: {p}\n")).collect()
    }
}

proptest! {
    #![proptest_config(cases(64))]

    #[test]
    fn credential_from_never_panics(text in ".{0,200}", lines in header_lines()) {
        fuzz::credential_from(&text);
        fuzz::credential_from(&lines);
    }

    /// `Authorization: Bearer <jwt-shaped>` (scheme in any case, spaces
    /// around) is a credential, whatever cookies come with it.
    #[test]
    fn a_bearer_jwt_is_found(
        scheme in bearer_scheme(),
        token in jwt_shaped(),
        pad in " {0,3}",
        others in header_lines(),
    ) {
        let alone = format!("Authorization: {scheme} {pad}{token}{pad}\n");
        prop_assert!(fuzz::credential_from(&alone), "{alone:?}");
        let mixed = format!("{alone}{others}");
        prop_assert!(fuzz::credential_from(&mixed), "{mixed:?}");
    }

    /// Any other non-empty token after `Bearer` is an API key: found too.
    #[test]
    fn a_bearer_api_key_is_found(token in "[!-~]{1,64}") {
        let lines = format!("Authorization: Bearer {token}\n");
        prop_assert!(fuzz::credential_from(&lines), "{lines:?}");
    }

    /// Without a `Bearer` token or a configured cookie there is nothing.
    #[test]
    fn other_schemes_and_cookies_are_not_credentials(
        scheme in "(Basic|Digest|Token|bearer[a-z]|[A-Z][a-z]{1,8})",
        token in "[!-~]{1,40}",
        cookie in "(theme|_ga|sb-auth-token|sb--auth-token|sb-a.b-auth-token|sb-x-auth-tokens)=[!-~&&[^;]]{0,20}",
    ) {
        prop_assume!(!scheme.eq_ignore_ascii_case("bearer"));
        let lines = format!("Authorization: {scheme} {token}\nCookie: {cookie}\n");
        prop_assert!(!fuzz::credential_from(&lines), "{lines:?}");
    }

    /// An `@supabase/ssr` session cookie is found whole, and cut into
    /// `NAME.n` chunks anywhere, sent in any order, on one `Cookie` line
    /// or several, among other cookies.
    #[test]
    fn a_chunked_supabase_session_is_found_however_it_is_cut(
        project in "[a-z0-9]{1,20}",
        token in jwt_shaped(),
        cuts in prop::collection::vec(any::<usize>(), 0..6),
        order in any::<u64>(),
        one_line in any::<bool>(),
    ) {
        let name = format!("sb-{project}-auth-token");
        let value = ssr_cookie_value(&token);
        let whole = cookie_lines(&[(name.clone(), value.clone())], true);
        prop_assert!(fuzz::credential_from(&whole), "{whole:?}");

        let mut cookies = chunks(&name, &value, &cuts);
        cookies.push(("theme".into(), "dark".into()));
        // Rotate by a random amount: chunk order in the header is free.
        let len = cookies.len();
        cookies.rotate_left((order % len as u64) as usize);
        let lines = cookie_lines(&cookies, one_line);
        prop_assert!(fuzz::credential_from(&lines), "{lines:?}");
    }

    /// A missing chunk (first, middle or last) is never read as a session.
    #[test]
    fn a_session_with_a_chunk_missing_is_refused(
        token in jwt_shaped(),
        cuts in prop::collection::vec(any::<usize>(), 1..6),
        missing in any::<usize>(),
    ) {
        let name = "sb-abcdefghijklmnopqrst-auth-token";
        let mut cookies = chunks(name, &ssr_cookie_value(&token), &cuts);
        prop_assume!(cookies.len() >= 2);
        let missing = missing % cookies.len();
        cookies.remove(missing);
        let lines = cookie_lines(&cookies, true);
        prop_assert!(!fuzz::credential_from(&lines), "chunk {missing} missing: {lines:?}");
    }
}

/// The cookies the real `@supabase/ssr` 0.12.7 writes (one cookie,
/// `base64-` chunked, percent-encoded JSON chunked), as a browser sends
/// them back, are found; and refused with any one chunk missing.
#[test]
fn real_supabase_ssr_cookies_are_found() {
    let fixture = fixture();
    let cases = fixture["cases"].as_object().expect("cases");
    for (case, cookies) in cases {
        let cookies: Vec<(String, String)> = cookies
            .as_array()
            .expect("cookie list")
            .iter()
            .map(|pair| {
                (
                    pair[0].as_str().expect("name").to_string(),
                    pair[1].as_str().expect("value").to_string(),
                )
            })
            .collect();
        for one_line in [true, false] {
            let lines = cookie_lines(&cookies, one_line);
            assert!(
                fuzz::credential_from(&lines),
                "{case}, one line: {one_line}"
            );
            let mut reversed = cookies.clone();
            reversed.reverse();
            let lines = cookie_lines(&reversed, one_line);
            assert!(fuzz::credential_from(&lines), "{case} reversed");
        }
        if cookies.len() > 1 {
            for i in 0..cookies.len() {
                let mut gap = cookies.clone();
                gap.remove(i);
                assert!(
                    !fuzz::credential_from(&cookie_lines(&gap, true)),
                    "{case} without chunk {i}"
                );
            }
        }
    }
    let token = fixture["access_token"].as_str().expect("access_token");
    assert!(fuzz::credential_from(&format!(
        "Authorization: Bearer {token}\n"
    )));
    assert!(fuzz::credential_from(&format!(
        "Cookie: sb-access-token={token}\n"
    )));
    assert!(!fuzz::credential_from(""));
    assert!(!fuzz::credential_from("Authorization: Bearer \n"));
}

// ---------------------------------------------------------------------------
// stripe_signature: `Stripe-Signature` parsing and HMAC verification
// ---------------------------------------------------------------------------

/// The clock and secret `fuzz::stripe_signature` checks with.
const NOW: u64 = 1_700_000_000;
const SECRET: &str = "whsec_fuzz";
const TOLERANCE: u64 = 300;

/// The hex `v1` HMAC-SHA256 of `t.body`, computed here independently of
/// `src/billing/webhook.rs`.
fn v1(secret: &str, t: u64, body: &[u8]) -> String {
    use hmac::Mac;
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// What Stripe sends: `t=...,v1=...,v0=...`, possibly with other `v1`
/// entries (a rotated secret) before it.
fn stripe_header(t: u64, v1s: &[String]) -> String {
    let mut header = format!("t={t}");
    for v in v1s {
        header.push_str(&format!(",v1={v}"));
    }
    header.push_str(",v0=6ffbb59b2300aae63f272406069a9788598b792a944a07aba816edb039989a39");
    header
}

proptest! {
    #![proptest_config(cases(64))]

    #[test]
    fn stripe_signature_never_panics(
        header in ".{0,120}",
        shaped in prop::collection::vec(
            ("(t|v1|v0|T| t|)", "(=|==|)", "[0-9a-f]{0,70}|-?[0-9]{0,25}|.{0,5}"),
            0..5,
        ),
        body in prop::collection::vec(any::<u8>(), 0..200),
    ) {
        fuzz::stripe_signature(&header, &body);
        let shaped: Vec<String> = shaped.into_iter().map(|(k, e, v)| format!("{k}{e}{v}")).collect();
        fuzz::stripe_signature(&shaped.join(","), &body);
    }

    /// A signature made with the secret over the body at a fresh time
    /// verifies, next to other `v1` entries; any one-byte change of the
    /// body, one byte more or less, another timestamp or another secret
    /// does not.
    #[test]
    fn a_fresh_signature_verifies_and_nothing_else_does(
        body in prop::collection::vec(any::<u8>(), 1..300),
        age in 0..=TOLERANCE,
        rotated in any::<bool>(),
        at in any::<usize>(),
        flip in 1..=255u8,
    ) {
        let t = NOW - age;
        let good = v1(SECRET, t, &body);
        let v1s = if rotated {
            vec![v1("whsec_previous", t, &body), good.clone()]
        } else {
            vec![good.clone()]
        };
        let header = stripe_header(t, &v1s);
        prop_assert!(fuzz::stripe_signature(&header, &body), "{header}");

        let mut changed = body.clone();
        changed[at % body.len()] ^= flip;
        prop_assert!(!fuzz::stripe_signature(&header, &changed), "byte {} changed", at % body.len());
        prop_assert!(!fuzz::stripe_signature(&header, &body[..body.len() - 1]));
        let mut longer = body.clone();
        longer.push(flip);
        prop_assert!(!fuzz::stripe_signature(&header, &longer));

        // The timestamp is signed: moving it breaks the signature.
        let moved = stripe_header(t - 1, std::slice::from_ref(&good));
        prop_assert!(!fuzz::stripe_signature(&moved, &body));
        // Another secret's signature alone does not verify.
        let other = stripe_header(t, &[v1("whsec_other", t, &body)]);
        prop_assert!(!fuzz::stripe_signature(&other, &body));
        // Nor does a `v0` or upper-cased `v1` carrying the right HMAC.
        let v0 = format!("t={t},v0={good}");
        prop_assert!(!fuzz::stripe_signature(&v0, &body));
        let upper = format!("t={t},v1={}", good.to_uppercase());
        prop_assert!(!fuzz::stripe_signature(&upper, &body));
    }

    /// A correctly signed event older than the tolerance is refused.
    #[test]
    fn a_stale_signature_is_refused(
        body in prop::collection::vec(any::<u8>(), 0..100),
        age in (TOLERANCE + 1)..=NOW,
    ) {
        let t = NOW - age;
        let header = stripe_header(t, &[v1(SECRET, t, &body)]);
        prop_assert!(!fuzz::stripe_signature(&header, &body), "{header}");
    }
}

/// Real `Stripe-Signature` shapes at the edges: the timestamp exactly at
/// the tolerance, spaces around entries, a timestamp beyond `u64`.
#[test]
fn stripe_signature_edges() {
    let body = br#"{"id":"evt_1","type":"customer.deleted"}"#;
    let edge = NOW - TOLERANCE;
    assert!(fuzz::stripe_signature(
        &format!("t={edge},v1={}", v1(SECRET, edge, body)),
        body
    ));
    let t = NOW;
    assert!(fuzz::stripe_signature(
        &format!(" t={t} , v1={} ", v1(SECRET, t, body)),
        body
    ));
    for header in [
        "",
        "garbage",
        "t=abc,v1=00",
        &format!("t={t}"),
        &format!("v1={}", v1(SECRET, t, body)),
        "t=18446744073709551616,v1=00",
        "t=-1,v1=00",
    ] {
        assert!(!fuzz::stripe_signature(header, body), "{header:?}");
    }
}

// ---------------------------------------------------------------------------
// checkout_body: checkout body validation
// ---------------------------------------------------------------------------

/// The entry point's settings: `pro` -> `price_pro`, origin
/// `https://myapp.com`, default mode payment, trials up to 730 days.
const ORIGIN: &str = "https://myapp.com";
const MAX_TRIAL: u64 = 730;

/// A body `fuzz::checkout_body` accepts.
fn valid_checkout() -> impl Strategy<Value = Map<String, Value>> {
    let url = (
        prop_oneof![
            Just(ORIGIN.to_string()),
            Just("https://MyApp.com".to_string()),
            Just("https://myapp.com:443".to_string()),
        ],
        "(/[A-Za-z0-9._~-]{0,8}){0,3}",
        prop_oneof![
            Just(String::new()),
            Just("?session_id={CHECKOUT_SESSION_ID}".to_string()),
            "\\?[a-z]{1,5}=[a-z0-9%]{0,8}",
        ],
    )
        .prop_map(|(origin, path, query)| format!("{origin}{path}{query}"));
    let mode_and_trial = prop_oneof![
        Just((None, None)),
        Just((Some("payment"), None)),
        Just((Some("subscription"), None)),
        (1..=MAX_TRIAL).prop_map(|d| (Some("subscription"), Some(d))),
    ];
    let metadata = prop::collection::btree_map("[A-Za-z0-9_]{1,40}", ".{0,40}", 0..6);
    (
        prop_oneof![Just("pro"), Just("price_pro")],
        url.clone(),
        url,
        mode_and_trial,
        prop::option::of(prop_oneof![
            (1..100_000u64).prop_map(Value::from),
            (1..1000u32).prop_map(|n| Value::from(f64::from(n))),
        ]),
        prop::option::of(metadata),
    )
        .prop_map(
            |(price, success, cancel, (mode, trial), quantity, metadata)| {
                let mut body = Map::new();
                body.insert("priceId".into(), price.into());
                body.insert("successUrl".into(), success.into());
                body.insert("cancelUrl".into(), cancel.into());
                if let Some(mode) = mode {
                    body.insert("mode".into(), mode.into());
                }
                if let Some(days) = trial {
                    body.insert("trialDays".into(), days.into());
                }
                if let Some(quantity) = quantity {
                    body.insert("quantity".into(), quantity);
                }
                if let Some(metadata) = metadata {
                    body.insert("metadata".into(), json!(metadata));
                }
                body
            },
        )
}

/// One fault that makes a valid body invalid.
#[derive(Debug, Clone)]
enum Fault {
    Remove(&'static str),
    Set(&'static str, Value),
    /// A whitespace or control character inserted into successUrl.
    UrlChar(char, usize),
    /// trialDays in payment mode.
    TrialInPayment(u64),
    /// Too many metadata keys, or one too long, or a value too long.
    Metadata(Value),
}

fn fault() -> impl Strategy<Value = Fault> {
    let bad_origin = prop_oneof![
        Just("https://evil.com/x"),
        Just("http://myapp.com/x"),
        Just("https://myapp.com.evil.com/"),
        Just("https://myapp.com:8443/"),
        Just("https://evil.com/?next=https://myapp.com/"),
        Just("javascript:alert(1)//https://myapp.com/"),
        Just("//myapp.com/x"),
        Just("/relative"),
        Just("https://"),
    ];
    prop_oneof![
        prop_oneof![Just("priceId"), Just("successUrl"), Just("cancelUrl")].prop_map(Fault::Remove),
        prop_oneof![
            Just(Value::Null),
            Just(json!("")),
            Just(json!("price_other")),
            Just(json!("PRO")),
            Just(json!(5)),
            Just(json!(["pro"])),
        ]
        .prop_map(|v| Fault::Set("priceId", v)),
        (
            prop_oneof![Just("successUrl"), Just("cancelUrl")],
            bad_origin
        )
            .prop_map(|(field, url)| Fault::Set(field, json!(url))),
        prop_oneof![
            Just(json!("Payment")),
            Just(json!("refund")),
            Just(json!(1)),
            Just(json!(""))
        ]
        .prop_map(|v| Fault::Set("mode", v)),
        prop_oneof![
            Just(json!(0)),
            Just(json!(-1)),
            Just(json!(1.5)),
            Just(json!("2")),
            Just(json!(1e300)),
            Just(json!(true)),
        ]
        .prop_map(|v| Fault::Set("quantity", v)),
        (
            prop::sample::select(vec![
                ' ', '\t', '\n', '\u{0}', '\u{7f}', '\u{a0}', '\u{2028}'
            ]),
            any::<usize>()
        )
            .prop_map(|(c, at)| Fault::UrlChar(c, at)),
        (1..=MAX_TRIAL).prop_map(Fault::TrialInPayment),
        prop_oneof![
            Just(json!(0)),
            Just(json!(MAX_TRIAL + 1)),
            Just(json!(2.5)),
            Just(json!("7")),
        ]
        .prop_map(|v| Fault::Set("trialDays", v)),
        prop_oneof![
            Just(Value::Object(
                (0..51).map(|i| (format!("k{i}"), json!("v"))).collect()
            )),
            Just(json!({ "k".repeat(41): "v" })),
            Just(json!({ "": "v" })),
            Just(json!({ "k": "é".repeat(501) })),
            Just(json!({ "k": 1 })),
            Just(json!(["k", "v"])),
            Just(json!("k=v")),
        ]
        .prop_map(Fault::Metadata),
    ]
}

fn apply(mut body: Map<String, Value>, fault: &Fault) -> Map<String, Value> {
    match fault {
        Fault::Remove(field) => {
            body.remove(*field);
        }
        Fault::Set("trialDays", value) => {
            body.insert("mode".into(), json!("subscription"));
            body.insert("trialDays".into(), value.clone());
        }
        Fault::Set(field, value) => {
            body.insert((*field).into(), value.clone());
        }
        Fault::UrlChar(c, at) => {
            let mut url = body["successUrl"].as_str().unwrap_or_default().to_string();
            let mut at = at % (url.len() + 1);
            while !url.is_char_boundary(at) {
                at -= 1;
            }
            url.insert(at, *c);
            body.insert("successUrl".into(), url.into());
        }
        Fault::TrialInPayment(days) => {
            if body.get("mode") == Some(&json!("subscription")) {
                body.remove("mode");
            }
            body.insert("trialDays".into(), json!(days));
        }
        Fault::Metadata(metadata) => {
            body.insert("metadata".into(), metadata.clone());
        }
    }
    body
}

/// Any JSON, with the checkout field names common among the keys.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        prop_oneof![
            Just("pro".to_string()),
            Just("price_pro".to_string()),
            Just("subscription".to_string()),
            Just("https://myapp.com/ok".to_string()),
            "https?://[a-z.:@]{0,20}/.{0,10}",
            ".{0,20}",
        ]
        .prop_map(Value::from),
    ];
    let key = prop_oneof![
        Just("priceId".to_string()),
        Just("successUrl".to_string()),
        Just("cancelUrl".to_string()),
        Just("mode".to_string()),
        Just("quantity".to_string()),
        Just("trialDays".to_string()),
        Just("metadata".to_string()),
        ".{0,6}",
    ];
    leaf.prop_recursive(4, 48, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(key.clone(), inner, 0..8)
                .prop_map(|m: BTreeMap<String, Value>| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// The origin of an absolute URL, as the sidecar compares them.
fn origin_of(url: &str) -> Option<String> {
    let url = url::Url::parse(url).ok()?;
    Some(url.origin().ascii_serialization())
}

proptest! {
    #![proptest_config(cases(64))]

    /// Any bytes and any JSON: no panic; and whatever is accepted names an
    /// allowed price and redirects only to the allowed origin.
    #[test]
    fn checkout_body_never_panics_and_accepts_only_allowed_values(
        bytes in prop::collection::vec(any::<u8>(), 0..200),
        value in any_json(),
    ) {
        fuzz::checkout_body(&bytes);
        let text = value.to_string();
        if fuzz::checkout_body(text.as_bytes()) {
            let body = value.as_object().expect("only an object is accepted");
            prop_assert!(matches!(body["priceId"].as_str(), Some("pro" | "price_pro")), "{text}");
            for field in ["successUrl", "cancelUrl"] {
                let url = body[field].as_str().unwrap_or_default();
                let origin = origin_of(url);
                prop_assert_eq!(origin.as_deref(), Some(ORIGIN), "{}", text);
            }
        }
    }

    /// A valid body is accepted; the same body with any one fault is not.
    #[test]
    fn a_valid_checkout_is_accepted_and_any_one_fault_refused(
        body in valid_checkout(),
        fault in fault(),
    ) {
        let text = Value::Object(body.clone()).to_string();
        prop_assert!(fuzz::checkout_body(text.as_bytes()), "{text}");
        let faulty = Value::Object(apply(body, &fault)).to_string();
        prop_assert!(!fuzz::checkout_body(faulty.as_bytes()), "{fault:?}: {faulty}");
    }
}

/// The limits themselves are allowed: 50 metadata keys of 40 characters,
/// values of 500 (multi-byte) characters, a 730-day trial.
#[test]
fn checkout_limits_are_inclusive() {
    let metadata: Map<String, Value> = (0..50)
        .map(|i| (format!("{i:0>40}"), json!("é".repeat(500))))
        .collect();
    let body = json!({
        "priceId": "pro",
        "successUrl": "https://myapp.com/ok",
        "cancelUrl": "https://myapp.com/",
        "mode": "subscription",
        "trialDays": MAX_TRIAL,
        "quantity": 1,
        "metadata": metadata,
    });
    assert!(fuzz::checkout_body(body.to_string().as_bytes()));
    for not_an_object in ["", "null", "[]", "\"pro\"", "{", "{}"] {
        assert!(
            !fuzz::checkout_body(not_an_object.as_bytes()),
            "{not_an_object}"
        );
    }
}

// ---------------------------------------------------------------------------
// route_path: route normalization, strict and loose
// ---------------------------------------------------------------------------

/// Paths built from the pieces normalization treats specially.
fn tricky_path() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        4 => Just("/".to_string()),
        2 => Just(".".to_string()),
        2 => Just("..".to_string()),
        3 => Just("%".to_string()),
        3 => "%[0-9A-Fa-f]{2}",
        2 => "%(2[EeFf]|5[Cc]|3[Bb]|25|7[Ee]|00)",
        3 => "[0-9A-Fa-f]",
        3 => "[a-zA-Z0-9_~-]{1,4}",
        1 => Just(";".to_string()),
        1 => Just("\\".to_string()),
        1 => "[é\u{212a}\u{130}]",
    ];
    prop::collection::vec(piece, 0..20).prop_map(|pieces| pieces.concat())
}

/// Paths of unreserved characters and `/` only (no escapes to confuse).
fn plain_path() -> impl Strategy<Value = String> {
    "(/{1,2}(\\.|\\.\\.|[A-Za-z0-9._~-]{1,6})){0,8}/?"
}

/// `/` + segments, the way a normalized path is written back.
fn joined(segments: &[String]) -> String {
    format!("/{}", segments.join("/"))
}

proptest! {
    #![proptest_config(cases(64))]

    /// No panic; no empty, `.` or `..` segment or `/` survives strict
    /// normalization; the loose form has no empty segment and no
    /// upper-case letter; the entry point counts both.
    #[test]
    fn route_path_never_panics_and_segments_are_clean(
        path in tricky_path(),
        any_text in ".{0,60}",
    ) {
        for path in [path.as_str(), any_text.as_str()] {
            let strict = normalize(path);
            let loose = loose_segments(path);
            prop_assert_eq!(fuzz::route_path(path), strict.len() + loose.len());
            for segment in &strict {
                prop_assert!(!matches!(segment.as_str(), "" | "." | ".."), "{path:?} -> {strict:?}");
                prop_assert!(!segment.contains('/'), "{path:?} -> {strict:?}");
            }
            for segment in &loose {
                prop_assert!(!segment.is_empty(), "{path:?} -> {loose:?}");
                prop_assert_eq!(&segment.to_lowercase(), segment);
            }
        }
    }

    /// Normalizing is idempotent: a normalized path, written back with
    /// `/`, normalizes to itself (otherwise one spelling reaches the app
    /// with a meaning the route table never saw).
    #[test]
    fn normalize_is_idempotent(path in tricky_path()) {
        let once = normalize(&path);
        prop_assert_eq!(normalize(&joined(&once)), once.clone(), "path {:?}", path);
    }

    /// Empty segments, `.` and `x/..` anywhere change nothing.
    #[test]
    fn dot_and_empty_segments_change_nothing(
        a in tricky_path(),
        b in tricky_path(),
        noise in prop_oneof![Just("/"), Just("//"), Just("/./"), Just("/%2E/"), Just("/x/../"), Just("/x/%2e%2E/")],
    ) {
        let plain = format!("{a}/{b}");
        let noisy = format!("{a}{noise}{b}");
        prop_assert_eq!(normalize(&noisy), normalize(&plain));
        prop_assert_eq!(loose_segments(&noisy), loose_segments(&plain));
    }

    /// Percent-encoding an unreserved character, in either hex case,
    /// changes nothing.
    #[test]
    fn encoding_an_unreserved_character_changes_nothing(
        path in plain_path(),
        at in any::<usize>(),
        lower in any::<bool>(),
    ) {
        let positions: Vec<usize> = path.match_indices(|c| c != '/').map(|(i, _)| i).collect();
        prop_assume!(!positions.is_empty());
        let i = positions[at % positions.len()];
        let byte = path.as_bytes()[i];
        let escape = if lower { format!("%{byte:02x}") } else { format!("%{byte:02X}") };
        let encoded = format!("{}{escape}{}", &path[..i], &path[i + 1..]);
        prop_assert_eq!(normalize(&encoded), normalize(&path), "{:?}", encoded);
        prop_assert_eq!(loose_segments(&encoded), loose_segments(&path));
    }

    /// The loose form ignores ASCII case.
    #[test]
    fn loose_segments_ignore_case(path in tricky_path()) {
        prop_assert_eq!(loose_segments(&path.to_ascii_uppercase()), loose_segments(&path));
        prop_assert_eq!(loose_segments(&path.to_ascii_lowercase()), loose_segments(&path));
    }
}

/// The tricky spellings the module doc names.
#[test]
fn route_path_known_spellings() {
    let want = ["api", "stripe", "create-checkout"];
    for path in [
        "/api/%73tripe//x/../create-checkout",
        "/api/stripe/create-checkout",
        "//api/./stripe/create-checkout/",
        "/../../api/stripe/create-checkout",
        "/api/x/%2E%2E/stripe/create-checkout",
        "/%61%70%69/stripe/create%2Dcheckout",
    ] {
        assert_eq!(normalize(path), want, "{path}");
        assert_eq!(fuzz::route_path(path), 6, "{path}");
    }
    assert_eq!(loose_segments("/API;a=b/stripe%2FCreate-Checkout;x"), want);
    assert_eq!(normalize("/a/%2f/%41%7e"), ["a", "%2F", "A~"]);
}

/// Regression, found by `normalize_is_idempotent`: a `%` that starts no
/// escape was kept as it was, and the escape decoded right after it could
/// complete it (`/api/%%373tripe/create-checkout` normalized to
/// `api/%73tripe/...`, which normalized again is the checkout route). A lone
/// `%` is now written as `%25`.
#[test]
fn normalize_is_idempotent_on_a_lone_percent() {
    for (path, once) in [
        (
            "/api/%%373tripe/create-checkout",
            vec!["api", "%2573tripe", "create-checkout"],
        ),
        ("/%%34%31", vec!["%2541"]),
        ("%a%30", vec!["%25a0"]),
    ] {
        let segments = normalize(path);
        assert_eq!(segments, once, "{path}");
        assert_eq!(
            normalize(&joined(&segments)),
            segments,
            "{path}: not idempotent"
        );
    }
}

// ---------------------------------------------------------------------------
// config: parsing and validation
// ---------------------------------------------------------------------------

const REPO_CONFIG: &str = include_str!("../config.toml");

/// The top-level sections `config.toml` writes as plain tables.
const SECTIONS: [&str; 6] = [
    "server",
    "upstream",
    "auth",
    "stripe",
    "checkout",
    "customers",
];

/// The known keys and some values of each type, to build files from.
fn toml_like() -> impl Strategy<Value = String> {
    let header = prop_oneof![
        prop::sample::select(SECTIONS.to_vec()).prop_map(|s| format!("[{s}]")),
        Just("[[routes]]".to_string()),
        Just("[[auth.api_keys]]".to_string()),
        "\\[[a-z_.]{0,10}\\]",
    ];
    let key = prop_oneof![
        prop::sample::select(vec![
            "listen",
            "admin_listen",
            "max_body_bytes",
            "log_format",
            "trusted_proxies",
            "url",
            "connect_timeout_ms",
            "header",
            "cookies",
            "hs256_secret",
            "jwks_url",
            "issuer",
            "audience",
            "required_claims",
            "leeway_seconds",
            "name",
            "sha256",
            "actions",
            "secret_key",
            "api_base",
            "webhook_secrets",
            "allowed_redirect_origins",
            "prices",
            "max_trial_days",
            "source",
            "lookup_url",
            "lookup_headers",
            "customer_id_pointer",
            "path",
            "action",
            "status",
            "default_mode",
            "forward_to",
            "worker_threads",
        ])
        .prop_map(str::to_string),
        "[a-z_]{1,8}",
    ];
    let value = prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        Just("0".to_string()),
        any::<bool>().prop_map(|b| b.to_string()),
        "\"[ -~&&[^\"\\\\]]{0,24}\"",
        "\"\\$\\{[A-Z_]{0,4}(:-[a-z/{}:]{0,6})?\\}?\"",
        Just("\"/api/{teamId}/x\"".to_string()),
        Just("\"https://myapp.com\"".to_string()),
        Just("\"sk_test_1\"".to_string()),
        Just("[\"checkout\", \"portal\"]".to_string()),
        Just("{ role = \"authenticated\" }".to_string()),
        Just("[[[]]]".to_string()),
        Just("1.5e3".to_string()),
        Just("1979-05-27T07:32:00Z".to_string()),
    ];
    let line = prop_oneof![
        1 => header,
        4 => (key, value).prop_map(|(k, v)| format!("{k} = {v}")),
        1 => "[ -~]{0,20}",
    ];
    prop::collection::vec(line, 0..16).prop_map(|lines| lines.join("\n"))
}

/// The `key = value` lines of the plain sections (before `[[routes]]`).
fn key_lines(text: &str) -> Vec<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let routes = lines
        .iter()
        .position(|l| l.starts_with("[[routes]]"))
        .unwrap_or(lines.len());
    (0..routes)
        .filter(|&i| {
            let l = lines[i];
            !l.starts_with('#') && !l.starts_with('[') && l.contains(" = ")
        })
        .collect()
}

fn with_line(text: &str, at: usize, replace: impl Fn(&str) -> Option<String>) -> String {
    text.lines()
        .enumerate()
        .filter_map(|(i, l)| {
            if i == at {
                replace(l)
            } else {
                Some(l.to_string())
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

proptest! {
    #![proptest_config(cases(48))]

    #[test]
    fn config_never_panics(text in ".{0,200}", tomlish in toml_like()) {
        fuzz::config(&text);
        fuzz::config(&tomlish);
    }

    /// An unknown key in any section is refused.
    #[test]
    fn an_unknown_key_is_refused(section in 0..SECTIONS.len(), key in "[a-z_]{1,10}") {
        let header = format!("[{}]", SECTIONS[section]);
        let text = REPO_CONFIG.replacen(&header, &format!("{header}\nzz_{key} = 1"), 1);
        prop_assert!(!fuzz::config(&text), "zz_{key} in {header}");
    }
}

/// The repository's `config.toml` is valid, and stays valid without any
/// one of its `key = value` lines (each writes its default); any value
/// replaced by one of another type, or by an unset `${VAR}`, is refused;
/// any string value behind `${UNSET:-...}` is the same file.
#[test]
fn the_repo_config_and_each_of_its_keys() {
    assert!(fuzz::config(REPO_CONFIG));
    let keys = key_lines(REPO_CONFIG);
    assert!(keys.len() > 40, "{} key lines", keys.len());
    for &at in &keys {
        let without = with_line(REPO_CONFIG, at, |_| None);
        assert!(fuzz::config(&without), "without line {}", at + 1);
        let mistyped = with_line(REPO_CONFIG, at, |l| {
            let (key, _) = l.split_once(" = ")?;
            Some(format!("{key} = [[[]]]"))
        });
        assert!(!fuzz::config(&mistyped), "line {} as [[[]]]", at + 1);
    }
    for (at, line) in REPO_CONFIG.lines().enumerate() {
        let Some((key, rest)) = line.split_once(" = \"") else {
            continue;
        };
        let Some((value, comment)) = rest.split_once('"') else {
            continue;
        };
        if value.contains(['$', '}']) || line.starts_with('#') {
            continue;
        }
        let unset = with_line(REPO_CONFIG, at, |_| {
            Some(format!("{key} = \"${{FUZZ_UNSET_VAR}}\"{comment}"))
        });
        assert!(!fuzz::config(&unset), "line {} unset", at + 1);
        let defaulted = with_line(REPO_CONFIG, at, |_| {
            Some(format!("{key} = \"${{FUZZ_UNSET_VAR:-{value}}}\"{comment}"))
        });
        assert!(fuzz::config(&defaulted), "line {} defaulted", at + 1);
    }
    assert!(fuzz::config(""));
}
