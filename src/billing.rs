//! The local billing routes (checkout, portal, webhook).
//!
//! [`handle`] is the glue: it reads the body (bounded: `max_body_bytes`,
//! 1 MiB for webhooks) and calls [`answer`], a plain function over
//! `Request<Bytes>` that tests call without sockets. Every call first
//! learns who is calling ([`crate::identity`]); the Stripe calls themselves
//! come with the checkout and portal handlers, until then a caller who gets
//! that far is told 503 `Billing is not configured`.

use bytes::Bytes;
use http::{header, Request, Response};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::{Map, Value};

use crate::error::{full, Error};
use crate::identity::{Caller, Named, Rejection, Subject};
use crate::routes::{Action, Route};
use crate::server::State;
use crate::Body;

/// Webhook bodies may be this large (Stripe's events are far smaller).
pub const WEBHOOK_MAX_BODY_BYTES: usize = 1024 * 1024;

/// Answers one request to a local route. `user` is set to the verified
/// user's id as soon as it is known, for the access log.
pub async fn handle(
    state: &State,
    route: &Route,
    params: Vec<(String, String)>,
    request: Request<Incoming>,
    user: &mut Option<String>,
) -> Result<Response<Body>, Error> {
    let limit = match route.action {
        Action::Webhook => WEBHOOK_MAX_BODY_BYTES,
        Action::Checkout | Action::Portal => state.config.server.max_body_bytes,
    };
    let (parts, body) = request.into_parts();
    let body = read_body(&parts.headers, body, limit).await?;
    let response = answer(state, route, params, Request::from_parts(parts, body), user).await?;
    Ok(response.map(full))
}

/// Reads a whole body, refusing more than `limit` bytes (by
/// `Content-Length` before reading anything, or while reading).
async fn read_body(
    headers: &http::HeaderMap,
    body: Incoming,
    limit: usize,
) -> Result<Bytes, Error> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(Error::BodyTooLarge);
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => Err(Error::BodyTooLarge),
        Err(error) => Err(Error::BadRequest(format!(
            "Could not read the request body: {error}"
        ))),
    }
}

/// Answers one request to a local route, its body read.
pub async fn answer(
    state: &State,
    route: &Route,
    _params: Vec<(String, String)>,
    request: Request<Bytes>,
    user: &mut Option<String>,
) -> Result<Response<Bytes>, Error> {
    if route.action == Action::Webhook {
        return Err(Error::BillingNotConfigured);
    }
    let identity = &state.identity;
    let caller = identity.caller(request.headers(), route.action).await?;
    let needs_user = route.action == Action::Portal || state.config.checkout.require_sign_in;
    match &caller {
        Caller::User(verified) => *user = Some(verified.id.clone()),
        Caller::Anonymous if needs_user => return Err(identity.reject(Rejection::NotSignedIn)),
        _ => {}
    }
    if state.config.stripe.secret_key.is_none() {
        return Err(Error::BillingNotConfigured);
    }
    let body = json_object(request.body())?;
    let subject = identity.subject(&caller, named(&body)?)?;
    if needs_user && subject == Subject::Anonymous {
        return Err(Error::BadRequest(
            "customerId or userId is required with an API key".into(),
        ));
    }
    // The checkout and portal handlers come next.
    Err(Error::BillingNotConfigured)
}

/// The body as a JSON object.
fn json_object(body: &[u8]) -> Result<Map<String, Value>, Error> {
    match serde_json::from_slice(body) {
        Ok(Value::Object(object)) => Ok(object),
        _ => Err(Error::BadRequest(
            "Request body must be a JSON object".into(),
        )),
    }
}

/// The `userId`, `customerId` and `email` a body names.
fn named(body: &Map<String, Value>) -> Result<Named, Error> {
    let field = |name: &str| match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
        Some(_) => Err(Error::BadRequest(format!(
            "{name} must be a non-empty string"
        ))),
    };
    Ok(Named {
        user_id: field("userId")?,
        customer_id: field("customerId")?,
        email: field("email")?,
    })
}
