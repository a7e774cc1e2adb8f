//! The admin port: `/healthz`, `/readyz` and `/metrics`, nothing else.
//!
//! It is a separate listener so probes and scrapes never compete with, or
//! get proxied as, app traffic.

use http::{header, HeaderValue, Method, Request, Response, StatusCode};

use crate::error::full;
use crate::metrics::CONTENT_TYPE;
use crate::server::State;
use crate::Body;

/// Answers one admin request.
pub fn handle<B>(state: &State, request: &Request<B>) -> Response<Body> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
    }
    match request.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" if state.is_ready() => text(StatusCode::OK, "ready\n"),
        "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
        "/metrics" => {
            let mut response = Response::new(full(state.metrics.encode()));
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
            response
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}
