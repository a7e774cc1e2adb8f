//! Stripe webhook delivery for the end-to-end tests: the `Stripe-Signature`
//! header as Stripe computes it, and POSTing events (from
//! [`FakeStripe::event`](super::stripe::FakeStripe::event) or
//! [`Completed`](super::stripe::Completed)) to the sidecar's webhook route,
//! one at a time in the order given, so a test can deliver events late,
//! twice or out of order.
//!
//! It signs with `v1` only (no `v0`) and does not retry: a test sees each
//! reply as the sidecar gave it.

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

use super::raw::{self, RawResponse};

/// The `Stripe-Signature` header value for `body` sent at `t`:
/// `t=<t>,v1=<hex HMAC-SHA256 of "<t>.<body>" keyed with the secret>`.
pub fn sign(secret: &str, t: u64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// The bytes Stripe sends for an event: pretty-printed JSON.
pub fn body(event: &Value) -> Vec<u8> {
    serde_json::to_vec_pretty(event).expect("JSON")
}

/// POSTs `event` to `path` on the sidecar, signed with `secret` and the
/// current time, with Stripe's headers, and returns the sidecar's reply.
pub async fn deliver(sidecar: SocketAddr, path: &str, secret: &str, event: &Value) -> RawResponse {
    let body = body(event);
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {sidecar}\r\nConnection: close\r\n\
         User-Agent: Stripe/1.0 (+https://stripe.com/docs/webhooks)\r\n\
         Content-Type: application/json; charset=utf-8\r\n\
         Content-Length: {}\r\nStripe-Signature: {}\r\n\r\n",
        body.len(),
        sign(secret, t, &body),
    );
    let mut request = head.into_bytes();
    request.extend_from_slice(&body);
    raw::send(sidecar, &request).await
}

/// Delivers `events` one after another, each after the previous reply, in
/// the order given (repeat one to deliver it twice); returns the replies.
pub async fn deliver_all<'a>(
    sidecar: SocketAddr,
    path: &str,
    secret: &str,
    events: impl IntoIterator<Item = &'a Value>,
) -> Vec<RawResponse> {
    let mut replies = Vec::new();
    for event in events {
        replies.push(deliver(sidecar, path, secret, event).await);
    }
    replies
}
