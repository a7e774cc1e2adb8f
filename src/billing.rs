//! The local billing routes (checkout, portal, webhook).
//!
//! Until the Stripe handlers land, every local route answers 503
//! `{"error":"Billing is not configured"}`, so a route that is configured
//! is never silently proxied to the app.

use http::{Request, Response};
use hyper::body::Incoming;

use crate::error::Error;
use crate::routes::Route;
use crate::server::State;
use crate::Body;

/// Answers one request to a local route.
pub async fn handle(
    _state: &State,
    _route: &Route,
    _params: Vec<(String, String)>,
    _request: Request<Incoming>,
) -> Result<Response<Body>, Error> {
    Err(Error::BillingNotConfigured)
}
