//! Entry points for the fuzz targets in `fuzz/` and the property tests:
//! each runs one parser or validator of untrusted input the way a request
//! does, and must return (never panic, never hang) whatever the bytes.
//! Not part of the sidecar's API.

use std::time::{Duration, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;

use crate::billing::checkout::CheckoutRequest;
use crate::billing::webhook::Signature;
use crate::config::{Checkout, Config};
use crate::identity::credential;
use crate::routes::{loose_segments, normalize, Mode};

/// The headers a request with these `name: value` lines would carry.
fn headers(lines: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for line in lines.lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.trim().as_bytes()),
            HeaderValue::from_str(value.trim()),
        ) {
            headers.append(name, value);
        }
    }
    headers
}

/// Finds the session token or API key in `Authorization` and cookie
/// header lines, with the default `[auth]` settings.
pub fn credential_from(header_lines: &str) -> bool {
    let Ok(config) = Config::parse("", &|_| None) else {
        return false;
    };
    matches!(
        credential(&headers(header_lines), &config.auth),
        Ok(Some(_))
    )
}

/// Parses a `Stripe-Signature` header and checks it against `body` at a
/// fixed time with one secret.
pub fn stripe_signature(header: &str, body: &[u8]) -> bool {
    let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    Signature::parse(header)
        .and_then(|s| s.fresh(Duration::from_secs(300), now))
        .and_then(|s| s.verify(body, &["whsec_fuzz".to_string()]))
        .is_ok()
}

/// Validates a checkout body with permissive settings (any price, trials
/// up to 730 days, one allowed origin).
pub fn checkout_body(body: &[u8]) -> bool {
    let Ok(Value::Object(body)) = serde_json::from_slice(body) else {
        return false;
    };
    let Ok(origin) = crate::config::Origin::parse("https://myapp.com") else {
        return false;
    };
    let settings = Checkout {
        allowed_redirect_origins: vec![origin],
        require_sign_in: false,
        allow_promotion_codes: false,
        prices: [("pro".to_string(), "price_pro".to_string())].into(),
        allow_any_price: false,
        max_trial_days: 730,
        rate_limit_per_minute: None,
    };
    CheckoutRequest::parse(&body, Some(Mode::Payment), &settings, 730, &["user_id"]).is_ok()
}

/// Normalizes a request path, strictly and loosely.
pub fn route_path(path: &str) -> usize {
    normalize(path).len() + loose_segments(path).len()
}

/// Parses and validates a configuration file with an empty environment.
pub fn config(text: &str) -> bool {
    Config::parse(text, &|_| None).is_ok()
}
