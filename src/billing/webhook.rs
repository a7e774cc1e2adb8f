//! `POST` webhook: Stripe events verified on their raw bytes, applied to
//! the customer cache and the subscription state, then forwarded to the
//! app through the proxy.
//!
//! `Stripe-Signature: t=TIMESTAMP,v1=HEX[,v1=HEX...]` is checked the way
//! Stripe's libraries check it: HMAC-SHA256 with each configured secret over
//! `TIMESTAMP.` followed by the raw body bytes, compared in constant time
//! with every `v1` (other schemes are ignored), and the timestamp no older
//! than the tolerance. The header is parsed and its timestamp checked
//! before the body is read, so a stale or malformed header costs no body
//! read. The body is never re-serialized: the bytes verified are the bytes
//! forwarded, with their original headers, so the app's own verification
//! passes. Hand-written because async-stripe's webhook support lives in a
//! crate this sidecar does not otherwise need, and the check is twenty
//! lines over `ring`'s HMAC.
//!
//! A verified `checkout.session.completed` of a session this sidecar made
//! (its `metadata.user_id` is its `client_reference_id`) fills a cached
//! "none" for that user; `customer.deleted` drops the customer and its
//! subscription state. Every event in [`SYNC_EVENTS`] re-reads its
//! customer's subscriptions from Stripe ([`crate::subscriptions`]) before
//! the event is forwarded and answered; a failed sync is logged and the
//! event still answered (the state then refreshes on its TTL).

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use serde_json::{json, Value};
use subtle::ConstantTimeEq;

use super::checkout::USER_ID;
use super::Billing;
use crate::body::{self, Body};
use crate::error::Error;
use crate::proxy::Proxy;
use crate::routes::Route;

/// Webhook bodies may be this large (Stripe's events are far smaller).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Answers one webhook delivery: verified, applied, then forwarded to the
/// route's `forward_to` on the app (whose reply is returned) or
/// acknowledged here. An event that fails verification goes nowhere.
pub async fn handle(
    billing: &Billing,
    proxy: &Proxy,
    route: &Route,
    request: Request<Body>,
    peer: SocketAddr,
) -> Result<Response<Body>, Error> {
    let settings = &billing.webhooks;
    if settings.webhook_secrets.is_empty() {
        return Err(Error::WebhookNotConfigured);
    }
    let (mut parts, body) = request.into_parts();
    let header = parts
        .headers
        .get("stripe-signature")
        .ok_or_else(|| Error::BadRequest("Missing Stripe-Signature header".into()))?;
    let refused = |why: Invalid| {
        tracing::info!(?why, "refused a webhook");
        Error::BadRequest("Invalid Stripe signature".into())
    };
    let signature = Signature::parse(header.to_str().unwrap_or_default())
        .and_then(|s| s.fresh(settings.webhook_tolerance, SystemTime::now()))
        .map_err(refused)?;
    let body = billing
        .bodies
        .read(&parts.headers, body, MAX_BODY_BYTES)
        .await?;
    signature
        .verify(&body, &settings.webhook_secrets)
        .map_err(refused)?;
    apply(&body, billing).await;
    let Some(forward_to) = &route.forward_to else {
        return Ok(body::json(StatusCode::OK, &json!({ "received": true })));
    };
    let target = match parts.uri.query() {
        Some(query) => format!("{forward_to}?{query}"),
        None => forward_to.clone(),
    };
    parts.uri = target
        .parse()
        .map_err(|e: http::uri::InvalidUri| Error::Internal(e.into()))?;
    proxy
        .forward(
            Request::from_parts(parts, body::full(body)),
            peer,
            Vec::new(),
        )
        .await
}

/// Why a signature was refused (all are 400 `Invalid Stripe signature`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    /// No `t=` or no `v1=`, or not `key=value` pairs.
    Malformed,
    Stale,
    NoMatch,
}

/// A parsed `Stripe-Signature` header.
#[derive(Debug)]
pub(crate) struct Signature {
    timestamp: String,
    seconds: u64,
    v1: Vec<String>,
}

impl Signature {
    pub(crate) fn parse(header: &str) -> Result<Signature, Invalid> {
        let mut timestamp = None;
        let mut v1 = Vec::new();
        for part in header.split(',') {
            let (key, value) = part.trim().split_once('=').ok_or(Invalid::Malformed)?;
            match key {
                "t" => timestamp = Some(value),
                "v1" => v1.push(value.to_string()),
                _ => {}
            }
        }
        let timestamp = timestamp.ok_or(Invalid::Malformed)?;
        let seconds = timestamp.parse().map_err(|_| Invalid::Malformed)?;
        if v1.is_empty() {
            return Err(Invalid::Malformed);
        }
        Ok(Signature {
            timestamp: timestamp.to_string(),
            seconds,
            v1,
        })
    }

    /// Refuses a timestamp older than `tolerance` at `now`.
    pub(crate) fn fresh(self, tolerance: Duration, now: SystemTime) -> Result<Signature, Invalid> {
        let now = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        if self.seconds.saturating_add(tolerance.as_secs()) < now {
            return Err(Invalid::Stale);
        }
        Ok(self)
    }

    /// Whether any `v1` signs `body` with any of `secrets`.
    pub(crate) fn verify(&self, body: &[u8], secrets: &[String]) -> Result<(), Invalid> {
        let mut matched = false;
        for secret in secrets {
            let expected = sign(secret, &self.timestamp, body);
            for signature in &self.v1 {
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
}

/// The hex `v1` signature of `body` at `timestamp` with `secret`.
pub fn sign(secret: &str, timestamp: &str, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let mut mac = ring::hmac::Context::with_key(&key);
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    hex::encode(mac.sign().as_ref())
}

/// The events after which the event's customer's subscription state is
/// read again from Stripe (the documented list).
const SYNC_EVENTS: [&str; 15] = [
    "checkout.session.completed",
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "customer.subscription.paused",
    "customer.subscription.resumed",
    "customer.subscription.pending_update_applied",
    "customer.subscription.pending_update_expired",
    "customer.subscription.trial_will_end",
    "invoice.paid",
    "invoice.payment_succeeded",
    "invoice.payment_failed",
    "invoice.payment_action_required",
    "invoice.marked_uncollectible",
    "entitlements.active_entitlement_summary.updated",
];

/// Applies a verified event to the customer cache and the subscription
/// state, returning once any sync it causes has finished or failed.
/// Events the sidecar does not use, or cannot read, change nothing (they
/// are still forwarded).
async fn apply(event: &Bytes, billing: &Billing) {
    let Ok(event) = serde_json::from_slice::<Value>(event) else {
        return;
    };
    let object = &event["data"]["object"];
    // `customer` is an id, or the object when expanded.
    let customer = object["customer"]
        .as_str()
        .or_else(|| object["customer"]["id"].as_str());
    let kind = event["type"].as_str().unwrap_or_default();
    if kind == "checkout.session.completed" {
        let user = object["client_reference_id"].as_str();
        // Only a session this sidecar made names its user twice; a
        // Payment Link's `client_reference_id` is whatever the link said.
        let ours = user.is_some() && object["metadata"][USER_ID].as_str() == user;
        if let (true, Some(user), Some(customer)) = (ours, user, customer) {
            billing.customers.remember(user, customer).await;
        }
    }
    if kind == "customer.deleted" {
        if let Some(customer) = object["id"].as_str() {
            billing.customers.forget_customer(customer);
            billing.subscriptions.forget(customer).await;
        }
    }
    if let (true, Some(customer)) = (SYNC_EVENTS.contains(&kind), customer) {
        let stripe = billing.stripe.as_ref();
        billing.subscriptions.event(stripe, customer).await;
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
        Signature::parse(header)?
            .fresh(Duration::from_secs(300), at(now))?
            .verify(body, &secrets)
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
