//! The one error type of a request, and the one function that turns it into
//! an HTTP reply (as linkerd2-proxy's `errors/respond.rs` does).
//!
//! Handlers and the proxy return [`Error`]; [`Error::into_response`] picks
//! the status and the JSON `{"error": ...}` body. User mistakes are not
//! logged as errors; unknown failures are logged (with their cause) and the
//! client only ever sees a generic message, so no internal detail, key or
//! Stripe error dump can leak through a reply.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Full};

use crate::identity::Rejection;
use crate::stripe::StripeError;
use crate::{Body, BoxError};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request the client must fix; the message is shown as is.
    #[error("{0}")]
    BadRequest(String),
    #[error("Request body is too large")]
    BodyTooLarge,
    #[error("Method not allowed: use {allow}")]
    MethodNotAllowed { allow: &'static str },
    #[error("Billing is not configured")]
    BillingNotConfigured,
    #[error("Webhook secret is not configured")]
    WebhookNotConfigured,
    /// Stripe refused the secret key; detail is logged, never sent.
    #[error("Billing is misconfigured")]
    StripeMisconfigured,
    /// Stripe refused the request; its message is for the caller.
    #[error("{0}")]
    StripeRejected(String),
    #[error("Stripe is unavailable, please try again")]
    StripeUnavailable,
    /// The customer lookup failed; nothing was created.
    #[error("Billing is temporarily unavailable")]
    LookupUnavailable,
    /// A caller refused by `identity`.
    #[error("{}", rejection_message(*.0))]
    Rejected(Rejection),
    /// The app could not be reached or failed mid-request.
    #[error("app unreachable ({kind}): {source}")]
    Upstream {
        kind: &'static str,
        source: BoxError,
    },
    #[error("app did not answer within upstream.read_timeout_ms")]
    UpstreamTimeout,
    #[error("internal error: {0}")]
    Internal(BoxError),
}

impl Error {
    pub fn status(&self) -> StatusCode {
        match self {
            Error::BadRequest(_) => StatusCode::BAD_REQUEST,
            Error::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Error::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Error::BillingNotConfigured
            | Error::WebhookNotConfigured
            | Error::LookupUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Error::StripeMisconfigured => StatusCode::INTERNAL_SERVER_ERROR,
            Error::StripeRejected(_) => StatusCode::BAD_REQUEST,
            Error::StripeUnavailable => StatusCode::BAD_GATEWAY,
            Error::Rejected(Rejection::ActionNotAllowed | Rejection::NeedsApiKey) => {
                StatusCode::FORBIDDEN
            }
            Error::Rejected(_) => StatusCode::UNAUTHORIZED,
            Error::Upstream { .. } => StatusCode::BAD_GATEWAY,
            Error::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The reply for this error. The only place errors become HTTP; the
    /// failures that are not the caller's are logged with `request_id`.
    pub fn into_response(self, request_id: &str) -> Response<Body> {
        let message = match &self {
            Error::Upstream { .. } => {
                tracing::warn!(request_id, error = %self, "proxy failed");
                "The app is unavailable".to_string()
            }
            Error::UpstreamTimeout => {
                tracing::warn!(request_id, error = %self, "proxy timed out");
                "The app did not answer in time".to_string()
            }
            Error::Internal(_) => {
                tracing::error!(request_id, error = %self, "request failed");
                "Internal error".to_string()
            }
            _ => self.to_string(),
        };
        let mut response = json(self.status(), &serde_json::json!({ "error": message }));
        if let Error::MethodNotAllowed { allow } = self {
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        response
    }
}

impl From<StripeError> for Error {
    fn from(error: StripeError) -> Error {
        match error {
            error if error.is_auth() => {
                tracing::error!(%error, "Stripe refused stripe.secret_key");
                Error::StripeMisconfigured
            }
            StripeError::Refused { message, .. } => Error::StripeRejected(message),
            StripeError::Unavailable(_) | StripeError::Decode(_) => {
                tracing::warn!(%error, "Stripe call failed");
                Error::StripeUnavailable
            }
        }
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

/// A JSON reply.
pub fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut response = Response::new(full(value.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// A complete body.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body(response: Response<Body>) -> serde_json::Value {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn errors_become_status_and_json() {
        let cases: Vec<(Error, u16, &str)> = vec![
            (
                Error::BadRequest("Price ID is required".into()),
                400,
                "Price ID is required",
            ),
            (Error::BodyTooLarge, 413, "Request body is too large"),
            (
                Error::BillingNotConfigured,
                503,
                "Billing is not configured",
            ),
            (
                Error::Upstream {
                    kind: "connect",
                    source: "refused 10.0.0.1:3000".into(),
                },
                502,
                "The app is unavailable",
            ),
            (
                Error::UpstreamTimeout,
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
            let response = error.into_response("test");
            assert_eq!(response.status(), status);
            assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
            assert_eq!(
                body(response).await,
                serde_json::json!({ "error": message })
            );
        }
    }

    #[tokio::test]
    async fn method_not_allowed_names_the_allowed_method() {
        let response = Error::MethodNotAllowed { allow: "POST" }.into_response("test");
        assert_eq!(response.status(), 405);
        assert_eq!(response.headers()[header::ALLOW], "POST");
    }
}
