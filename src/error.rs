//! The one error type of a request, and the one function that turns it into
//! an HTTP reply (as linkerd2-proxy's `errors/respond.rs` does).
//!
//! Everything a request can fail with is an [`Error`]; [`Error::into_response`]
//! decides its status, the JSON `{"error": ...}` message the client sees,
//! and whether and how loudly it is logged. The client's own mistakes are
//! not logged as errors; failures that are not the client's are logged
//! once, here, inside the request's span (so the line carries its
//! `request_id`), and the client only ever sees a fixed message, so no
//! internal detail, key or Stripe error dump can leak through a reply.

use http::{header, HeaderValue, Response, StatusCode};

use crate::body::{self, Body, ReadError};
use crate::identity::Rejection;
use crate::metrics::UpstreamFailure;
use crate::stripe::StripeError;
use crate::BoxError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request the client must fix; the message is shown as is.
    #[error("{0}")]
    BadRequest(String),
    #[error("Request body is too large")]
    BodyTooLarge,
    #[error("Request body did not arrive in time")]
    BodyTimeout,
    /// The client broke its body's framing (bad chunks) or went away.
    #[error("Malformed request body")]
    MalformedBody(#[source] BoxError),
    /// A near-spelling of a local path, kept from the app.
    #[error("Not found")]
    NotFound,
    #[error("Method not allowed: use {allow}")]
    MethodNotAllowed { allow: &'static str },
    /// Over `checkout.rate_limit_per_minute`; retry after this long.
    #[error("Too many requests, please try again later")]
    RateLimited { retry_after: std::time::Duration },
    #[error("Billing is not configured")]
    BillingNotConfigured,
    /// A gate needing a subscription the caller does not have.
    #[error("An active subscription is required")]
    NotSubscribed,
    /// A gate needing a plan or a feature the caller's subscription lacks.
    #[error("Your plan does not include this")]
    PlanNotIncluded,
    /// A browser refused by a gate, sent to the gate's `redirect`.
    #[error("Sent to the gate's redirect")]
    SeeOther(HeaderValue),
    #[error("Webhook secret is not configured")]
    WebhookNotConfigured,
    /// A caller refused by `identity`.
    #[error("{}", rejection_message(*.0))]
    Rejected(Rejection),
    /// A Stripe call that failed, after its retries.
    #[error(transparent)]
    Stripe(StripeError),
    /// The customer lookup failed (the cause is logged); nothing was
    /// created.
    #[error("Billing is temporarily unavailable")]
    LookupUnavailable(String),
    /// The app could not be reached, failed mid-request or was too slow;
    /// `cause` names the address (`connection refused to 127.0.0.1:3000`).
    #[error("app {failure:?}: {cause}")]
    Upstream {
        failure: UpstreamFailure,
        cause: String,
    },
    #[error("internal error: {0}")]
    Internal(BoxError),
}

impl From<Rejection> for Error {
    fn from(rejection: Rejection) -> Error {
        Error::Rejected(rejection)
    }
}

impl From<StripeError> for Error {
    fn from(error: StripeError) -> Error {
        Error::Stripe(error)
    }
}

impl From<ReadError> for Error {
    fn from(error: ReadError) -> Error {
        match error {
            ReadError::TooLarge => Error::BodyTooLarge,
            ReadError::TimedOut => Error::BodyTimeout,
            ReadError::Malformed(cause) => Error::MalformedBody(cause),
        }
    }
}

impl Error {
    /// The status, the message the client sees, and the log line, if any:
    /// every such decision is here.
    fn reply(&self) -> (StatusCode, String) {
        let status = match self {
            Error::BadRequest(_) | Error::MalformedBody(_) => StatusCode::BAD_REQUEST,
            Error::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Error::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Error::NotFound => StatusCode::NOT_FOUND,
            Error::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Error::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Error::NotSubscribed => StatusCode::PAYMENT_REQUIRED,
            Error::PlanNotIncluded => StatusCode::FORBIDDEN,
            Error::SeeOther(_) => StatusCode::SEE_OTHER,
            Error::BillingNotConfigured
            | Error::WebhookNotConfigured
            | Error::LookupUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Rejected(Rejection::ActionNotAllowed | Rejection::NeedsApiKey) => {
                StatusCode::FORBIDDEN
            }
            Error::Rejected(_) => StatusCode::UNAUTHORIZED,
            Error::Stripe(error) if error.is_auth() => StatusCode::INTERNAL_SERVER_ERROR,
            Error::Stripe(StripeError::Refused { .. }) => StatusCode::BAD_REQUEST,
            Error::Stripe(_) => StatusCode::BAD_GATEWAY,
            Error::Upstream {
                failure: UpstreamFailure::Timeout,
                ..
            } => StatusCode::GATEWAY_TIMEOUT,
            Error::Upstream { .. } => StatusCode::BAD_GATEWAY,
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let message = match self {
            Error::MalformedBody(cause) => {
                tracing::debug!(%cause, "the client's request body was malformed");
                self.to_string()
            }
            Error::Stripe(error) if error.is_auth() => {
                // Stripe's message would name (part of) the key: not logged.
                tracing::error!(
                    status = error.status(),
                    "Stripe refused stripe.secret_key: check the key and its permissions"
                );
                "Billing is misconfigured".to_string()
            }
            Error::Stripe(StripeError::Refused { message, .. }) => {
                tracing::info!(error = %self, "Stripe refused the request");
                message.clone()
            }
            Error::Stripe(_) => {
                tracing::warn!(error = %self, "Stripe call failed");
                "Stripe is unavailable, please try again".to_string()
            }
            Error::LookupUnavailable(cause) => {
                tracing::warn!(%cause, "customer lookup failed");
                self.to_string()
            }
            Error::Upstream { failure, cause } => {
                tracing::warn!(%cause, "app unreachable");
                match failure {
                    UpstreamFailure::Timeout => "The app did not answer in time".to_string(),
                    _ => "The app is unavailable".to_string(),
                }
            }
            Error::Internal(_) => {
                tracing::error!(error = %self, "request failed");
                "Internal error".to_string()
            }
            _ => self.to_string(),
        };
        (status, message)
    }

    /// The reply for this error: the only place errors become HTTP.
    pub fn into_response(self) -> Response<Body> {
        if let Error::SeeOther(location) = self {
            let mut response = Response::new(body::full(""));
            *response.status_mut() = StatusCode::SEE_OTHER;
            response.headers_mut().insert(header::LOCATION, location);
            return response;
        }
        let (status, message) = self.reply();
        let mut response = body::json(status, &serde_json::json!({ "error": message }));
        match self {
            Error::MethodNotAllowed { allow } => {
                let allow = HeaderValue::from_static(allow);
                response.headers_mut().insert(header::ALLOW, allow);
            }
            Error::RateLimited { retry_after } => {
                // Whole seconds, rounded up: never "retry now" too early.
                let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
                let value = HeaderValue::from(seconds.max(1));
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
            _ => {}
        }
        response
    }
}

fn rejection_message(rejection: Rejection) -> &'static str {
    match rejection {
        Rejection::NotSignedIn => "Not signed in",
        Rejection::UnknownApiKey => "Invalid API key",
        Rejection::ActionNotAllowed => "This API key is not allowed to call this route",
        Rejection::NeedsApiKey => "customerId and userId need an API key",
        _ => "Session is invalid or expired",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn body(response: Response<Body>) -> serde_json::Value {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn errors_become_status_and_json() {
        let refused = |status: u16, message: &str| {
            Error::Stripe(StripeError::Refused {
                status,
                kind: "invalid_request_error".into(),
                message: message.into(),
            })
        };
        let cases: Vec<(Error, u16, &str)> = vec![
            (
                Error::BadRequest("Price ID is required".into()),
                400,
                "Price ID is required",
            ),
            (Error::BodyTooLarge, 413, "Request body is too large"),
            (
                Error::BodyTimeout,
                408,
                "Request body did not arrive in time",
            ),
            (
                Error::MalformedBody("bad chunk".into()),
                400,
                "Malformed request body",
            ),
            (
                Error::BillingNotConfigured,
                503,
                "Billing is not configured",
            ),
            (
                Error::LookupUnavailable("status 500".into()),
                503,
                "Billing is temporarily unavailable",
            ),
            (
                Error::Rejected(Rejection::Expired),
                401,
                "Session is invalid or expired",
            ),
            (
                Error::Rejected(Rejection::NeedsApiKey),
                403,
                "customerId and userId need an API key",
            ),
            (
                refused(400, "No such price: 'price_x'"),
                400,
                "No such price: 'price_x'",
            ),
            (
                refused(401, "Invalid API Key provided: sk_test_****1234"),
                500,
                "Billing is misconfigured",
            ),
            (
                Error::Stripe(StripeError::Unavailable(
                    "status 500 after 2 retries".into(),
                )),
                502,
                "Stripe is unavailable, please try again",
            ),
            (
                Error::Upstream {
                    failure: UpstreamFailure::Connect,
                    cause: "connection refused to 10.0.0.1:3000".into(),
                },
                502,
                "The app is unavailable",
            ),
            (
                Error::Upstream {
                    failure: UpstreamFailure::Timeout,
                    cause: "timed out".into(),
                },
                504,
                "The app did not answer in time",
            ),
            (
                Error::Internal("sk_live_secret in a dump".into()),
                500,
                "Internal error",
            ),
        ];
        for (error, status, message) in cases {
            let response = error.into_response();
            assert_eq!(response.status(), status);
            assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
            assert_eq!(
                body(response).await,
                serde_json::json!({ "error": message })
            );
        }
    }

    #[tokio::test]
    async fn rate_limited_says_when_to_retry() {
        let retry_after = std::time::Duration::from_millis(41_200);
        let response = Error::RateLimited { retry_after }.into_response();
        assert_eq!(response.status(), 429);
        assert_eq!(response.headers()[header::RETRY_AFTER], "42");
        assert_eq!(
            body(response).await,
            serde_json::json!({ "error": "Too many requests, please try again later" })
        );
    }

    #[tokio::test]
    async fn method_not_allowed_names_the_allowed_method() {
        let response = Error::MethodNotAllowed { allow: "POST" }.into_response();
        assert_eq!(response.status(), 405);
        assert_eq!(response.headers()[header::ALLOW], "POST");
    }
}
