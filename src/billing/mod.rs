//! The local billing routes: one file per route ([`checkout`], [`portal`],
//! [`subscription`], [`webhook`]) and, here, what they share: the [`Billing`] state, the
//! dispatch from a matched route to its handler, reading who the caller
//! acts for, redirect-URL checks and the JSON reply.
//!
//! Checkout and portal handlers are plain async functions over an
//! already-read body ([`Billing::answer`], `Request<Bytes>` in,
//! `Response<Bytes>` out), so tests call them without sockets. The caller
//! was identified by the pipeline (`app`) before; each handler checks the
//! body with the contract's exact messages before anything is looked up or
//! created, then resolves the customer ([`crate::customers`]) and calls
//! Stripe ([`crate::stripe`]).

pub mod checkout;
pub mod portal;
pub mod subscription;
pub mod webhook;

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response};
use serde_json::{Map, Value};

use crate::account::Account;
use crate::body::Reader;
use crate::config::{self, Origin, MAX_TRIAL_DAYS};
use crate::customers::Customers;
use crate::error::Error;
use crate::identity::{Caller, Named, Rejection, Subject};
use crate::routes::{Action, Route};
use crate::stripe::Stripe;
use crate::subscriptions::Subscriptions;

/// What the billing handlers run on, built once at start-up.
pub struct Billing {
    /// `None` without `stripe.secret_key`: checkout and portal answer 503.
    pub stripe: Option<Stripe>,
    pub customers: Customers,
    pub subscriptions: Subscriptions,
    pub checkout: config::Checkout,
    pub webhooks: config::Stripe,
    /// `customers.metadata_key`: reserved in checkout metadata too.
    pub metadata_key: String,
    /// Reads the local routes' bodies (bounded in size, time and in all).
    pub bodies: Reader,
}

impl Billing {
    /// Answers a checkout or portal request from `caller`, its body read.
    pub async fn answer(
        &self,
        route: &Route,
        params: Vec<(String, String)>,
        caller: &Caller,
        request: Request<Bytes>,
    ) -> Result<Response<Bytes>, Error> {
        let needs_user = route.action != Action::Checkout || self.checkout.require_sign_in;
        if needs_user && *caller == Caller::Anonymous {
            return Err(Rejection::NotSignedIn.into());
        }
        let Some(stripe) = &self.stripe else {
            return Err(Error::BillingNotConfigured);
        };
        if route.action == Action::Subscription {
            let reply = subscription::answer(self, stripe, caller, request.uri()).await?;
            return Ok(json_reply(route.status, &reply));
        }
        let body = json_object(request.body())?;
        let subject = caller.subject(named(&body)?)?;
        if needs_user && subject == Subject::Anonymous {
            return Err(Error::BadRequest(
                "customerId or userId is required with an API key".into(),
            ));
        }
        let reply = match route.action {
            Action::Checkout => {
                let max_trial = match caller {
                    Caller::ApiKey(_) => MAX_TRIAL_DAYS,
                    _ => self.checkout.max_trial_days,
                };
                checkout::create(self, stripe, route, params, &subject, max_trial, &body).await?
            }
            Action::Portal => portal::create(self, stripe, &subject, &body).await?,
            Action::Webhook | Action::Subscription => {
                return Err(Error::Internal("answered elsewhere".into()))
            }
        };
        Ok(json_reply(route.status, &reply))
    }

    /// A signed-in user's customer and, when `with_state`, its
    /// subscription state: for identity headers and gates.
    pub async fn account(&self, user_id: &str, with_state: bool) -> Result<Account, Error> {
        let Some(stripe) = &self.stripe else {
            // For a gate or a header this is Stripe being unreachable.
            let cause = "no stripe.secret_key".to_string();
            return Err(Error::LookupUnavailable(cause));
        };
        let customer = self.customers.find(stripe, user_id).await?;
        if !with_state {
            return Ok(Account {
                customer,
                state: Arc::default(),
            });
        }
        self.account_of(stripe, customer, false).await
    }

    /// `customer`'s state (a fresh read with `refresh`); none without a
    /// customer.
    pub async fn account_of(
        &self,
        stripe: &Stripe,
        customer: Option<String>,
        refresh: bool,
    ) -> Result<Account, Error> {
        let Some(id) = customer else {
            return Ok(Account {
                customer: None,
                state: Arc::default(),
            });
        };
        let state = match refresh {
            true => self.subscriptions.refresh(Some(stripe), &id).await?,
            false => self.subscriptions.get(Some(stripe), &id).await?,
        };
        Ok(Account {
            customer: Some(id),
            state,
        })
    }
}

/// A JSON reply with `status`.
fn json_reply(status: http::StatusCode, reply: &Value) -> Response<Bytes> {
    let mut response = Response::new(Bytes::from(reply.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
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

/// Whether the body has a non-empty value for `field`.
fn present(body: &Map<String, Value>, field: &str) -> bool {
    body.get(field).is_some_and(|v| !v.is_null() && v != "")
}

/// A redirect URL from the body: an absolute http(s) URL whose origin is
/// allowed. The URL is sent to Stripe exactly as given (Stripe fills in
/// `{CHECKOUT_SESSION_ID}`), so anything a parser would quietly repair
/// (spaces, control characters) is refused rather than repaired.
fn redirect_url(
    body: &Map<String, Value>,
    field: &str,
    allowed: &[Origin],
) -> Result<String, Error> {
    let invalid = || Error::BadRequest(format!("{field} must be a valid URI"));
    let text = body
        .get(field)
        .and_then(Value::as_str)
        .ok_or_else(invalid)?;
    if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid());
    }
    let url = url::Url::parse(text).map_err(|_| invalid())?;
    let origin = Origin::of(&url).ok_or_else(invalid)?;
    if !allowed.contains(&origin) {
        return Err(Error::BadRequest(format!(
            "{field} is not an allowed redirect URL"
        )));
    }
    Ok(text.to_string())
}

/// Stripe metadata: keys to values.
type Metadata = HashMap<String, String>;
