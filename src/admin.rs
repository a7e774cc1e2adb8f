//! The admin port: `/healthz`, `/readyz` and `/metrics`, nothing else.
//!
//! It is a separate listener so probes and scrapes never compete with, or
//! get proxied as, app traffic. `/metrics` speaks the format the scraper's
//! `Accept` asks for (see [`crate::metrics`]).

use http::{header, HeaderValue, Method, Request, Response, StatusCode};

use crate::body::{full, Body};
use crate::metrics::Metrics;

/// Answers one admin request.
pub fn handle<B>(ready: bool, metrics: &Metrics, request: &Request<B>) -> Response<Body> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut refused = text(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "use GET\n".into(),
        );
        refused
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return refused;
    }
    match request.uri().path() {
        "/healthz" => text(StatusCode::OK, "text/plain", "ok\n".into()),
        "/readyz" if ready => text(StatusCode::OK, "text/plain", "ready\n".into()),
        "/readyz" => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "not ready\n".into(),
        ),
        "/metrics" => {
            let accept = request
                .headers()
                .get(header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            match metrics.encode(accept) {
                Ok((content_type, body)) => text(StatusCode::OK, content_type, body),
                Err(error) => {
                    tracing::error!(%error, "cannot encode the metrics");
                    text(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "text/plain",
                        "error\n".into(),
                    )
                }
            }
        }
        _ => text(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Body> {
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
