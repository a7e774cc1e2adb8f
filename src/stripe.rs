//! The Stripe API client: async-stripe's request types sent over our own
//! pooled keep-alive HTTPS client, with the retry policy Stripe's SDKs use.
//!
//! async-stripe's bundled hyper client opens a new connection (and TLS
//! handshake) per call and its retry strategies have no jitter and ignore
//! `Retry-After`, so this module implements its `StripeClient` trait
//! instead: every try of one call carries the same `Idempotency-Key`
//! (generated, or the caller's own for customer creation), each try is
//! bounded by `stripe.timeout_ms`, and connection errors, timeouts, 409,
//! 429 and 5xx are retried up to `stripe.max_retries` times with
//! exponential backoff and jitter, `Stripe-Should-Retry` overriding the
//! status. Each HTTP request is counted in
//! `stripe_sidecar_stripe_requests_total{endpoint,outcome}`.
//!
//! The secret key only ever goes into the `Authorization` header (marked
//! sensitive); errors carry Stripe's message, never the key. A call that
//! still fails is returned as a [`StripeError`]; `error` decides its reply
//! and logs it, once, with the request's id.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, StatusCode};
use http_body_util::Full;
use stripe_client_core::{
    CustomizedStripeRequest, RequestBuilder, StripeClient, StripeClientErr, StripeMethod,
};

use crate::config;
use crate::http_client::HttpsClient;
use crate::metrics::{Metrics, StripeOutcome};

/// Stripe's SDKs start at 0.5 s and cap at 5 s.
const BACKOFF_START: Duration = Duration::from_millis(500);
const BACKOFF_CAP: Duration = Duration::from_secs(5);
/// The longest wait between two tries (a `Retry-After` included).
const MAX_WAIT: Duration = Duration::from_secs(10);
/// Largest reply read from Stripe.
const MAX_REPLY_BYTES: usize = 4 * 1024 * 1024;

/// How a call to Stripe failed, after any retries.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StripeError {
    /// Stripe answered with an error that retrying would not fix.
    #[error("Stripe refused the request ({status}, {kind}): {message}")]
    Refused {
        status: u16,
        kind: String,
        message: String,
    },
    /// No usable answer: connection errors, timeouts, 409/429/5xx, still
    /// failing after the retries (or `Stripe-Should-Retry: false`).
    #[error("Stripe is unavailable: {0}")]
    Unavailable(String),
    #[error("unexpected reply from Stripe: {0}")]
    Decode(String),
}

impl StripeClientErr for StripeError {
    fn deserialize_err(msg: impl std::fmt::Display) -> Self {
        StripeError::Decode(msg.to_string())
    }
}

impl StripeError {
    /// Stripe refused the secret key (401) or its permissions (403).
    pub fn is_auth(&self) -> bool {
        matches!(self.status(), Some(401 | 403))
    }

    /// Stripe's status, when it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            StripeError::Refused { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// The client, built once from `[stripe]`.
pub struct Stripe {
    client: HttpsClient,
    /// `api_base` without a trailing `/`; paths are appended as `/v1/...`.
    base: String,
    authorization: HeaderValue,
    timeout: Duration,
    max_retries: u32,
    /// `stripe.max_concurrency`: HTTP requests to Stripe in flight at once.
    slots: tokio::sync::Semaphore,
    metrics: Arc<Metrics>,
}

/// One failed try, and whether another may fix it.
struct Failure {
    error: StripeError,
    outcome: StripeOutcome,
    /// A status that usually passes (409, 429, 5xx).
    transient: bool,
    /// Whether to try again: `transient`, unless `Stripe-Should-Retry` says.
    retry: bool,
    retry_after: Option<Duration>,
}

impl Stripe {
    /// `None` when no secret key is configured.
    pub fn new(
        settings: &config::Stripe,
        client: HttpsClient,
        metrics: Arc<Metrics>,
    ) -> Option<Stripe> {
        let key = settings.secret_key.as_ref()?;
        let mut authorization = HeaderValue::from_str(&format!("Bearer {key}")).ok()?;
        authorization.set_sensitive(true);
        Some(Stripe {
            client,
            base: settings.api_base.as_str().trim_end_matches('/').to_string(),
            authorization,
            timeout: settings.timeout,
            max_retries: settings.max_retries,
            slots: tokio::sync::Semaphore::new(
                settings
                    .max_concurrency
                    .min(tokio::sync::Semaphore::MAX_PERMITS),
            ),
            metrics,
        })
    }

    async fn send_once(
        &self,
        request: Request<Full<Bytes>>,
        timeout: Duration,
    ) -> Result<Bytes, Failure> {
        let attempt = async {
            // Waiting for a slot counts against this try's time. The
            // semaphore is never closed.
            let _slot = self.slots.acquire().await.ok();
            let response = self.client.request(request).await.map_err(|e| Failure {
                error: StripeError::Unavailable(format!("connection failed: {e}")),
                outcome: StripeOutcome::NetworkError,
                transient: true,
                retry: true,
                retry_after: None,
            })?;
            let status = response.status();
            let headers = response.headers().clone();
            let body = http_body_util::Limited::new(response.into_body(), MAX_REPLY_BYTES);
            let body = http_body_util::BodyExt::collect(body)
                .await
                .map_err(|e| Failure {
                    error: StripeError::Unavailable(format!("reply cut short: {e}")),
                    outcome: StripeOutcome::NetworkError,
                    transient: true,
                    retry: true,
                    retry_after: None,
                })?
                .to_bytes();
            if status.is_success() {
                return Ok(body);
            }
            Err(classify(status, &headers, &body))
        };
        tokio::time::timeout(timeout, attempt)
            .await
            .unwrap_or_else(|_| {
                Err(Failure {
                    error: StripeError::Unavailable(format!(
                        "no reply within stripe.timeout_ms ({} ms)",
                        timeout.as_millis()
                    )),
                    outcome: StripeOutcome::Timeout,
                    transient: true,
                    retry: true,
                    retry_after: None,
                })
            })
    }

    fn request(
        &self,
        builder: &RequestBuilder,
        idempotency_key: Option<&str>,
    ) -> Result<Request<Full<Bytes>>, StripeError> {
        let method = match builder.method {
            StripeMethod::Get => Method::GET,
            StripeMethod::Post => Method::POST,
            StripeMethod::Delete => Method::DELETE,
        };
        let mut uri = format!("{}/v1{}", self.base, builder.path);
        if let Some(query) = &builder.query {
            uri.push('?');
            uri.push_str(query);
        }
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::AUTHORIZATION, self.authorization.clone())
            .header("stripe-version", stripe_client_core::VERSION.as_str())
            .header(
                header::USER_AGENT,
                concat!("stripe-sidecar/", env!("CARGO_PKG_VERSION")),
            );
        if let Some(key) = idempotency_key {
            request = request.header("idempotency-key", key);
        }
        if builder.body.is_some() {
            request = request.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        }
        let body = Full::new(Bytes::from(builder.body.clone().unwrap_or_default()));
        request
            .body(body)
            .map_err(|e| StripeError::Decode(format!("cannot build the request: {e}")))
    }
}

impl StripeClient for Stripe {
    type Err = StripeError;

    async fn execute(&self, request: CustomizedStripeRequest) -> Result<Bytes, StripeError> {
        let (builder, overrides) = request.into_pieces();
        let endpoint = builder.path.as_str();
        // One key for every try of this call: a retried POST cannot act twice.
        let key = overrides
            .request_strategy
            .and_then(|strategy| strategy.get_key())
            .map(|key| key.into_inner())
            .or_else(|| {
                matches!(builder.method, StripeMethod::Post)
                    .then(|| uuid::Uuid::new_v4().to_string())
            });
        let timeout = overrides.timeout.unwrap_or(self.timeout);
        let mut retries = 0;
        loop {
            let request = self.request(&builder, key.as_deref())?;
            let result = self.send_once(request, timeout).await;
            let outcome = match &result {
                Ok(_) => StripeOutcome::Ok,
                Err(failure) => failure.outcome,
            };
            self.metrics.stripe_request(endpoint, outcome);
            let failure = match result {
                Ok(body) => return Ok(body),
                Err(failure) => failure,
            };
            if !failure.retry || retries >= self.max_retries {
                return Err(match failure.error {
                    // A lock, rate limit or server error that outlasted the
                    // retries (or that Stripe said not to retry) is an outage.
                    StripeError::Refused {
                        status, message, ..
                    } if failure.transient => StripeError::Unavailable(format!(
                        "status {status} after {retries} retries: {message}"
                    )),
                    other => other,
                });
            }
            let wait = backoff(retries).max(failure.retry_after.unwrap_or_default());
            tracing::info!(endpoint, retries, ?wait, error = %failure.error, "retrying a Stripe call");
            tokio::time::sleep(wait.min(MAX_WAIT)).await;
            retries += 1;
        }
    }
}

/// The longest a local request may take talking to Stripe, whatever it
/// calls: every try of `stripe.timeout_ms`, and the waits between them.
pub fn request_budget(settings: &config::Stripe) -> Duration {
    let tries = settings.max_retries + 1;
    settings.timeout * tries + MAX_WAIT * settings.max_retries
}

/// Exponential backoff with equal jitter: half the step, plus a random
/// share of the other half, so racing clients spread out.
fn backoff(retries: u32) -> Duration {
    let step = BACKOFF_START
        .saturating_mul(1 << retries.min(16))
        .min(BACKOFF_CAP);
    let jitter = (uuid::Uuid::new_v4().as_u128() % 1000) as u32;
    step / 2 + step / 2 * jitter / 1000
}

/// Sorts an error reply into refused, retryable or not.
fn classify(status: StatusCode, headers: &http::HeaderMap, body: &[u8]) -> Failure {
    #[derive(serde::Deserialize, Default)]
    struct Reply {
        error: Detail,
    }
    #[derive(serde::Deserialize, Default)]
    struct Detail {
        #[serde(rename = "type", default)]
        kind: String,
        #[serde(default)]
        message: Option<String>,
    }
    let detail = serde_json::from_slice::<Reply>(body)
        .unwrap_or_default()
        .error;
    let should_retry = headers
        .get("stripe-should-retry")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<bool>().ok());
    let retry_after = headers
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let (outcome, transient) = match status.as_u16() {
        401 | 403 => (StripeOutcome::AuthError, false),
        409 => (StripeOutcome::Conflict, true),
        429 => (StripeOutcome::RateLimited, true),
        500..=599 => (StripeOutcome::ServerError, true),
        _ => (StripeOutcome::ClientError, false),
    };
    Failure {
        error: StripeError::Refused {
            status: status.as_u16(),
            kind: detail.kind,
            message: detail
                .message
                .unwrap_or_else(|| format!("Stripe answered {status}")),
        },
        outcome,
        transient,
        retry: should_retry.unwrap_or(transient),
        retry_after,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(status: u16, should_retry: Option<&str>) -> Failure {
        let mut headers = http::HeaderMap::new();
        if let Some(value) = should_retry {
            headers.insert("stripe-should-retry", HeaderValue::from_str(value).unwrap());
        }
        let body = br#"{"error":{"type":"api_error","message":"boom"}}"#;
        classify(StatusCode::from_u16(status).unwrap(), &headers, body)
    }

    #[test]
    fn retry_decisions_follow_stripe() {
        for (status, header, retry) in [
            (400, None, false),
            (401, None, false),
            (402, None, false),
            (404, None, false),
            (409, None, true),
            (429, None, true),
            (500, None, true),
            (503, None, true),
            (500, Some("false"), false),
            (400, Some("true"), true),
            (409, Some("false"), false),
        ] {
            assert_eq!(failure(status, header).retry, retry, "{status} {header:?}");
        }
        let refused = failure(400, None).error;
        assert_eq!(
            refused.to_string(),
            "Stripe refused the request (400, api_error): boom"
        );
        assert!(failure(401, None).error.is_auth());
    }

    #[test]
    fn backoff_grows_with_jitter_and_a_cap() {
        for retries in 0..8 {
            let step = BACKOFF_START.saturating_mul(1 << retries).min(BACKOFF_CAP);
            for _ in 0..50 {
                let wait = backoff(retries);
                assert!(wait >= step / 2 && wait <= step, "{retries}: {wait:?}");
            }
        }
        let spread: std::collections::HashSet<_> = (0..50).map(|_| backoff(2)).collect();
        assert!(spread.len() > 10, "jittered");
    }
}
