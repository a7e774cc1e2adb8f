//! Stripe webhook verification and what a verified event changes.
//!
//! `Stripe-Signature: t=TIMESTAMP,v1=HEX[,v1=HEX...]` is checked the way
//! Stripe's libraries check it: HMAC-SHA256 with each configured secret over
//! `TIMESTAMP.` followed by the raw body bytes, compared in constant time
//! with every `v1` (other schemes are ignored), and the timestamp no older
//! than the tolerance. The body is never re-serialized: the bytes verified
//! are the bytes forwarded. Hand-written because async-stripe's webhook
//! support lives in a crate this sidecar does not otherwise need, and the
//! check is twenty lines of `hmac`.
//!
//! A verified `checkout.session.completed` caches `client_reference_id ->
//! customer`; `customer.deleted` drops the customer from the cache. The
//! forwarding itself is in `billing`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::customers::Customers;

/// Why a signature was refused (all are 400 `Invalid Stripe signature`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    /// No `t=` or no `v1=`, or not `key=value` pairs.
    Malformed,
    Stale,
    NoMatch,
}

/// Verifies `header` for `body` against any of `secrets` at `now`.
pub fn verify(
    header: &str,
    body: &[u8],
    secrets: &[String],
    tolerance: Duration,
    now: SystemTime,
) -> Result<(), Invalid> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        let (key, value) = part.trim().split_once('=').ok_or(Invalid::Malformed)?;
        match key {
            "t" => timestamp = Some(value),
            "v1" => signatures.push(value),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(Invalid::Malformed)?;
    let seconds: u64 = timestamp.parse().map_err(|_| Invalid::Malformed)?;
    if signatures.is_empty() {
        return Err(Invalid::Malformed);
    }
    let now = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    if seconds.saturating_add(tolerance.as_secs()) < now {
        return Err(Invalid::Stale);
    }
    let mut matched = false;
    for secret in secrets {
        let expected = sign(secret, timestamp, body);
        for signature in &signatures {
            // Every comparison runs, so timing says nothing of which failed.
            matched |= bool::from(expected.as_bytes().ct_eq(signature.as_bytes()));
        }
    }
    if matched {
        Ok(())
    } else {
        Err(Invalid::NoMatch)
    }
}

/// The hex `v1` signature of `body` at `timestamp` with `secret`.
pub fn sign(secret: &str, timestamp: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Applies a verified event to the customer cache. Events the sidecar does
/// not use, or cannot read, change nothing (they are still forwarded).
pub async fn apply(event: &[u8], customers: &Customers) {
    let Ok(event) = serde_json::from_slice::<Value>(event) else {
        return;
    };
    let object = &event["data"]["object"];
    match event["type"].as_str() {
        Some("checkout.session.completed") => {
            let user = object["client_reference_id"].as_str();
            // `customer` is an id, or the object when expanded.
            let customer = object["customer"]
                .as_str()
                .or_else(|| object["customer"]["id"].as_str());
            if let (Some(user), Some(customer)) = (user, customer) {
                customers.remember(user, customer).await;
            }
        }
        Some("customer.deleted") => {
            if let Some(customer) = object["id"].as_str() {
                customers.forget_customer(customer);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_test_secret";
    const BODY: &[u8] = br#"{"id":"evt_1","type":"customer.created"}"#;

    fn at(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(seconds)
    }

    fn check(header: &str, body: &[u8], secrets: &[&str], now: u64) -> Result<(), Invalid> {
        let secrets: Vec<String> = secrets.iter().map(|s| s.to_string()).collect();
        verify(header, body, &secrets, Duration::from_secs(300), at(now))
    }

    #[test]
    fn signatures_are_checked_as_stripe_libraries_do() {
        let good = sign(SECRET, "1700000000", BODY);
        let other = sign("whsec_other", "1700000000", BODY);
        let header = |sigs: &str| format!("t=1700000000,{sigs}");
        let now = 1_700_000_100;
        let cases: Vec<(String, &[u8], Vec<&str>, u64, Result<(), Invalid>)> = vec![
            (
                header(&format!("v1={good}")),
                BODY,
                vec![SECRET],
                now,
                Ok(()),
            ),
            (
                header(&format!("v1={other},v1={good}")),
                BODY,
                vec![SECRET],
                now,
                Ok(()),
            ),
            (
                header(&format!("v0=abc,v1={good},scheme=x")),
                BODY,
                vec![SECRET],
                now,
                Ok(()),
            ),
            (
                header(&format!("v1={other}")),
                BODY,
                vec![SECRET, "whsec_other"],
                now,
                Ok(()),
            ),
            (
                format!(" t=1700000000 , v1={good} "),
                BODY,
                vec![SECRET],
                now,
                Ok(()),
            ),
            (
                header(&format!("v1={good}")),
                b"{\"id\":\"evt_1\" }",
                vec![SECRET],
                now,
                Err(Invalid::NoMatch),
            ),
            (
                header(&format!("v1={}", good.to_uppercase())),
                BODY,
                vec![SECRET],
                now,
                Err(Invalid::NoMatch),
            ),
            (
                header(&format!("v1={other}")),
                BODY,
                vec![SECRET],
                now,
                Err(Invalid::NoMatch),
            ),
            (
                header(&format!("v0={good}")),
                BODY,
                vec![SECRET],
                now,
                Err(Invalid::Malformed),
            ),
            (
                format!("v1={good}"),
                BODY,
                vec![SECRET],
                now,
                Err(Invalid::Malformed),
            ),
            (
                header(&format!("v1={good}")),
                BODY,
                vec![SECRET],
                1_700_000_301,
                Err(Invalid::Stale),
            ),
            (
                header(&format!("v1={good}")),
                BODY,
                vec![SECRET],
                1_700_000_300,
                Ok(()),
            ),
            (
                "t=abc,v1=00".into(),
                BODY,
                vec![SECRET],
                now,
                Err(Invalid::Malformed),
            ),
            (
                "garbage".into(),
                BODY,
                vec![SECRET],
                now,
                Err(Invalid::Malformed),
            ),
            ("".into(), BODY, vec![SECRET], now, Err(Invalid::Malformed)),
            (
                header("v1="),
                BODY,
                vec![SECRET],
                now,
                Err(Invalid::NoMatch),
            ),
        ];
        for (header, body, secrets, now, want) in cases {
            assert_eq!(check(&header, body, &secrets, now), want, "{header}");
        }
    }

    #[test]
    fn the_signature_matches_stripes_documented_scheme() {
        // HMAC-SHA256("whsec_test_secret", "1700000000." + body), computed
        // independently with Python's hmac module.
        assert_eq!(
            sign(SECRET, "1700000000", BODY),
            "2146c3ca883db3d5b33f638513d4322fcf955eeb8624ee63937a742c023fe30b"
        );
    }
}
