//! The local billing routes (checkout, portal, webhook).
//!
//! [`handle`] is the glue: it reads the body (bounded: `max_body_bytes`,
//! 1 MiB for webhooks) and calls [`answer`], a plain function over
//! `Request<Bytes>` that tests call without sockets. Every call first
//! learns who is calling ([`crate::identity`]), then checks the body with
//! the contract's exact messages before anything is looked up or created,
//! then resolves the customer ([`crate::customers`]) and calls Stripe
//! ([`crate::stripe`]). Webhooks are verified ([`crate::webhook`]) and
//! forwarded to the app.

use std::collections::HashMap;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{header, Request, Response};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::{json, Map, Value};
use stripe_billing::billing_portal_session::CreateBillingPortalSession;
use stripe_checkout::checkout_session::{
    CreateCheckoutSession, CreateCheckoutSessionCustomerCreation, CreateCheckoutSessionLineItems,
    CreateCheckoutSessionSubscriptionData,
};
use stripe_checkout::CheckoutSessionMode;

use crate::config::{self, Origin};
use crate::error::{full, Error};
use crate::identity::{Caller, Named, Rejection, Subject};
use crate::proxy;
use crate::routes::{Action, Mode, Route};
use crate::server::State;
use crate::stripe::Stripe;
use crate::{webhook, Body};

/// Webhook bodies may be this large (Stripe's events are far smaller).
pub const WEBHOOK_MAX_BODY_BYTES: usize = 1024 * 1024;

/// Answers one request to a local route. `user` is set to the verified
/// user's id as soon as it is known, for the access log.
pub async fn handle(
    state: &State,
    route: &Route,
    params: Vec<(String, String)>,
    request: Request<Incoming>,
    peer: SocketAddr,
    user: &mut Option<String>,
) -> Result<Response<Body>, Error> {
    if route.action == Action::Webhook {
        return webhook(state, route, request, peer).await;
    }
    let (parts, body) = request.into_parts();
    let body = read_body(&parts.headers, body, state.config.server.max_body_bytes).await?;
    let response = answer(state, route, params, Request::from_parts(parts, body), user).await?;
    Ok(response.map(full))
}

/// A Stripe event: verified on its raw bytes, applied to the customer
/// cache, then forwarded byte-for-byte to the app with its original headers
/// (so the app's own verification passes) and the app's reply returned, or
/// acknowledged here when the route has no `forward_to`. An event that
/// fails verification goes nowhere.
async fn webhook(
    state: &State,
    route: &Route,
    request: Request<Incoming>,
    peer: SocketAddr,
) -> Result<Response<Body>, Error> {
    let settings = &state.config.stripe;
    if settings.webhook_secrets.is_empty() {
        return Err(Error::WebhookNotConfigured);
    }
    let (mut parts, body) = request.into_parts();
    let signature = parts
        .headers
        .get("stripe-signature")
        .ok_or_else(|| Error::BadRequest("Missing Stripe-Signature header".into()))?;
    let invalid = || Error::BadRequest("Invalid Stripe signature".into());
    let signature = signature.to_str().map_err(|_| invalid())?.to_owned();
    let body = read_body(&parts.headers, body, WEBHOOK_MAX_BODY_BYTES).await?;
    let now = std::time::SystemTime::now();
    webhook::verify(
        &signature,
        &body,
        &settings.webhook_secrets,
        settings.webhook_tolerance,
        now,
    )
    .map_err(|why| {
        tracing::info!(?why, "refused a webhook");
        invalid()
    })?;
    webhook::apply(&body, &state.customers).await;
    let Some(forward_to) = &route.forward_to else {
        return Ok(crate::error::json(
            http::StatusCode::OK,
            &json!({ "received": true }),
        ));
    };
    let target = match parts.uri.query() {
        Some(query) => format!("{forward_to}?{query}"),
        None => forward_to.clone(),
    };
    parts.uri = target
        .parse()
        .map_err(|e: http::uri::InvalidUri| Error::Internal(e.into()))?;
    let authority = parts.uri.authority().cloned();
    proxy::rewrite_request_headers(&mut parts.headers, authority.as_ref(), peer.ip(), false);
    let mut response = state
        .proxy
        .send(Request::from_parts(parts, full(body)))
        .await?;
    proxy::strip_hop_by_hop(response.headers_mut(), false);
    Ok(response.map(crate::boxed))
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
    params: Vec<(String, String)>,
    request: Request<Bytes>,
    user: &mut Option<String>,
) -> Result<Response<Bytes>, Error> {
    let identity = &state.identity;
    let caller = identity.caller(request.headers(), route.action).await?;
    let needs_user = route.action == Action::Portal || state.config.checkout.require_sign_in;
    match &caller {
        Caller::User(verified) => *user = Some(verified.id.clone()),
        Caller::Anonymous if needs_user => return Err(identity.reject(Rejection::NotSignedIn)),
        _ => {}
    }
    let Some(stripe) = &state.stripe else {
        return Err(Error::BillingNotConfigured);
    };
    let body = json_object(request.body())?;
    let subject = identity.subject(&caller, named(&body)?)?;
    if needs_user && subject == Subject::Anonymous {
        return Err(Error::BadRequest(
            "customerId or userId is required with an API key".into(),
        ));
    }
    let reply = match route.action {
        Action::Checkout => checkout(state, stripe, route, params, &subject, &body).await?,
        _ => portal(state, stripe, &subject, &body).await?,
    };
    let mut response = Response::new(Bytes::from(reply.to_string()));
    *response.status_mut() = route.status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

/// A checkout request, validated.
#[derive(Debug, PartialEq)]
struct CheckoutRequest {
    price: String,
    success_url: String,
    cancel_url: String,
    mode: Mode,
    quantity: u64,
    trial_days: Option<u32>,
    metadata: HashMap<String, String>,
}

impl CheckoutRequest {
    /// Checks the body in the contract's order, with its messages.
    fn parse(
        body: &Map<String, Value>,
        default_mode: Option<Mode>,
        settings: &config::Checkout,
    ) -> Result<CheckoutRequest, Error> {
        let bad = |message: &str| Error::BadRequest(message.to_string());
        let price = match body.get("priceId") {
            None | Some(Value::Null) => return Err(bad("Price ID is required")),
            Some(Value::String(s)) if s.is_empty() => return Err(bad("Price ID is required")),
            Some(Value::String(s)) => s.clone(),
            Some(_) => return Err(bad("priceId must be a string")),
        };
        let present = |name| body.get(name).is_some_and(|v| !v.is_null() && v != "");
        if !present("successUrl") || !present("cancelUrl") {
            return Err(bad("Success and cancel URLs are required"));
        }
        let mode = match body.get("mode") {
            None | Some(Value::Null) => default_mode.ok_or_else(|| {
                bad("Mode is required (either 'payment' for one-time payments or 'subscription' for recurring subscription)")
            })?,
            Some(value) if value == "payment" => Mode::Payment,
            Some(value) if value == "subscription" => Mode::Subscription,
            Some(_) => return Err(bad("Mode must be 'payment' or 'subscription'")),
        };
        let origins = &settings.allowed_redirect_origins;
        let success_url = redirect_url(body, "successUrl", origins)?;
        let cancel_url = redirect_url(body, "cancelUrl", origins)?;
        let price = if settings.prices.is_empty() {
            price
        } else if let Some(id) = settings.prices.get(&price) {
            id.clone()
        } else if settings.prices.values().any(|id| *id == price) {
            price
        } else {
            return Err(bad("Price ID is not allowed"));
        };
        let quantity = match body.get("quantity") {
            None | Some(Value::Null) => 1,
            Some(value) => whole_number(value)
                .filter(|n| *n >= 1)
                .ok_or_else(|| bad("quantity must be a whole number of at least 1"))?,
        };
        let trial_days = match body.get("trialDays") {
            None | Some(Value::Null) => None,
            Some(value) => Some(
                whole_number(value)
                    .filter(|n| (1..=730).contains(n))
                    .ok_or_else(|| bad("trialDays must be a whole number from 1 to 730"))?
                    as u32,
            ),
        };
        if trial_days.is_some() && mode == Mode::Payment {
            return Err(bad("Trial periods only apply to subscription mode"));
        }
        let metadata = metadata(body.get("metadata"))?;
        Ok(CheckoutRequest {
            price,
            success_url,
            cancel_url,
            mode,
            quantity,
            trial_days,
            metadata,
        })
    }
}

/// A JSON number that is a whole number (`2` or `2.0`, not `"2"`).
fn whole_number(value: &Value) -> Option<u64> {
    match value {
        Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f < 1e15)
                .map(|f| f as u64)
        }),
        _ => None,
    }
}

/// Stripe's metadata limits.
const METADATA_KEYS: usize = 50;
const METADATA_KEY_CHARS: usize = 40;
const METADATA_VALUE_CHARS: usize = 500;

fn metadata(value: Option<&Value>) -> Result<HashMap<String, String>, Error> {
    let bad = |message: &str| Error::BadRequest(message.to_string());
    let object = match value {
        None | Some(Value::Null) => return Ok(HashMap::new()),
        Some(Value::Object(object)) => object,
        Some(_) => return Err(bad("metadata must be an object of strings")),
    };
    if object.len() > METADATA_KEYS {
        return Err(bad("metadata may have at most 50 keys"));
    }
    let mut metadata = HashMap::new();
    for (key, value) in object {
        let Value::String(value) = value else {
            return Err(bad("metadata must be an object of strings"));
        };
        if key.is_empty() || key.chars().count() > METADATA_KEY_CHARS {
            return Err(bad("metadata keys must be 1 to 40 characters"));
        }
        if value.chars().count() > METADATA_VALUE_CHARS {
            return Err(bad("metadata values must be at most 500 characters"));
        }
        metadata.insert(key.clone(), value.clone());
    }
    Ok(metadata)
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

async fn checkout(
    state: &State,
    stripe: &Stripe,
    route: &Route,
    params: Vec<(String, String)>,
    subject: &Subject,
    body: &Map<String, Value>,
) -> Result<Value, Error> {
    let request = CheckoutRequest::parse(body, route.default_mode, &state.config.checkout)?;
    // Reserved keys override the caller's: route parameters, then user_id.
    let mut metadata = request.metadata;
    metadata.extend(params);
    if let Subject::User(user) = subject {
        metadata.insert("user_id".into(), user.id.clone());
    }
    if metadata.len() > METADATA_KEYS {
        return Err(Error::BadRequest(
            "metadata may have at most 50 keys, counting the route's own".into(),
        ));
    }
    let customer = match subject {
        Subject::Anonymous => None,
        Subject::Customer { id, .. } => Some(id.clone()),
        Subject::User(user) => state.customers.for_checkout(stripe, user).await?,
    };
    let mut session = CreateCheckoutSession::new()
        .mode(match request.mode {
            Mode::Payment => CheckoutSessionMode::Payment,
            Mode::Subscription => CheckoutSessionMode::Subscription,
        })
        .line_items(vec![CreateCheckoutSessionLineItems {
            price: Some(request.price),
            quantity: Some(request.quantity),
            ..CreateCheckoutSessionLineItems::new()
        }])
        .success_url(request.success_url)
        .cancel_url(request.cancel_url);
    // An empty `metadata=` would mean "unset all": send none instead.
    let metadata = (!metadata.is_empty()).then_some(metadata);
    if let Some(metadata) = &metadata {
        session = session.metadata(metadata.clone());
    }
    if let Subject::User(user) = subject {
        session = session.client_reference_id(user.id.clone());
    }
    match (&customer, subject) {
        (Some(id), _) => session = session.customer(id.clone()),
        (None, Subject::User(user)) => {
            if let Some(email) = &user.email {
                session = session.customer_email(email.clone());
            }
            if request.mode == Mode::Payment {
                session = session.customer_creation(CreateCheckoutSessionCustomerCreation::Always);
            }
        }
        (None, _) => {}
    }
    if request.mode == Mode::Subscription {
        session = session.subscription_data(CreateCheckoutSessionSubscriptionData {
            metadata,
            trial_period_days: request.trial_days,
            ..CreateCheckoutSessionSubscriptionData::new()
        });
    }
    if state.config.checkout.allow_promotion_codes {
        session = session.allow_promotion_codes(true);
    }
    let session = session.send(stripe).await?;
    let url = session.url.ok_or(Error::StripeUnavailable)?;
    Ok(json!({ "url": url, "sessionId": session.id.as_str() }))
}

async fn portal(
    state: &State,
    stripe: &Stripe,
    subject: &Subject,
    body: &Map<String, Value>,
) -> Result<Value, Error> {
    if !body
        .get("returnUrl")
        .is_some_and(|v| !v.is_null() && v != "")
    {
        return Err(Error::BadRequest("Return URL is required".into()));
    }
    let return_url = redirect_url(
        body,
        "returnUrl",
        &state.config.checkout.allowed_redirect_origins,
    )?;
    let customer = match subject {
        Subject::Customer { id, .. } => Some(id.clone()),
        Subject::User(user) => state.customers.find(stripe, &user.id).await?,
        Subject::Anonymous => None,
    };
    let customer = customer.ok_or_else(|| {
        Error::BadRequest("You don't have a billing account yet. Make a purchase first.".into())
    })?;
    let session = CreateBillingPortalSession::new()
        .customer(customer)
        .return_url(return_url)
        .send(stripe)
        .await?;
    Ok(json!({ "url": session.url }))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn settings() -> config::Checkout {
        config::Checkout {
            allowed_redirect_origins: vec![
                Origin::parse("https://myapp.com").unwrap(),
                Origin::parse("http://localhost:3000").unwrap(),
            ],
            require_sign_in: false,
            allow_promotion_codes: false,
            prices: Default::default(),
        }
    }

    fn parse_with(
        body: Value,
        default_mode: Option<Mode>,
        settings: &config::Checkout,
    ) -> Result<CheckoutRequest, String> {
        let Value::Object(body) = body else {
            panic!("not an object")
        };
        CheckoutRequest::parse(&body, default_mode, settings).map_err(|e| e.to_string())
    }

    fn parse(body: Value) -> Result<CheckoutRequest, String> {
        parse_with(body, None, &settings())
    }

    fn valid() -> Value {
        json!({
            "priceId": "price_123",
            "successUrl": "https://myapp.com/success?session_id={CHECKOUT_SESSION_ID}",
            "cancelUrl": "https://myapp.com/pricing",
            "mode": "payment",
        })
    }

    fn with(key: &str, value: Value) -> Value {
        let mut body = valid();
        if value.is_null() {
            body.as_object_mut().unwrap().remove(key);
        } else {
            body[key] = value;
        }
        body
    }

    #[test]
    fn a_valid_body_is_taken_verbatim() {
        let request = parse(valid()).unwrap();
        assert_eq!(
            request,
            CheckoutRequest {
                price: "price_123".into(),
                success_url: "https://myapp.com/success?session_id={CHECKOUT_SESSION_ID}".into(),
                cancel_url: "https://myapp.com/pricing".into(),
                mode: Mode::Payment,
                quantity: 1,
                trial_days: None,
                metadata: HashMap::new(),
            }
        );
    }

    #[test]
    fn each_check_has_its_message() {
        let mode_required = "Mode is required (either 'payment' for one-time payments or 'subscription' for recurring subscription)";
        let subscription = |key: &str, value: Value| {
            let mut body = with(key, value);
            body["mode"] = json!("subscription");
            body
        };
        let many: serde_json::Map<String, Value> =
            (0..51).map(|i| (format!("k{i}"), json!("v"))).collect();
        let cases = [
            (with("priceId", Value::Null), "Price ID is required"),
            (with("priceId", json!("")), "Price ID is required"),
            (with("priceId", json!(42)), "priceId must be a string"),
            (
                with("successUrl", Value::Null),
                "Success and cancel URLs are required",
            ),
            (
                with("cancelUrl", json!("")),
                "Success and cancel URLs are required",
            ),
            (with("mode", Value::Null), mode_required),
            (
                with("mode", json!("setup")),
                "Mode must be 'payment' or 'subscription'",
            ),
            (
                with("mode", json!("Payment")),
                "Mode must be 'payment' or 'subscription'",
            ),
            (
                with("successUrl", json!("/success")),
                "successUrl must be a valid URI",
            ),
            (
                with("cancelUrl", json!("not a url")),
                "cancelUrl must be a valid URI",
            ),
            (
                with("successUrl", json!("https://evil.com/")),
                "successUrl is not an allowed redirect URL",
            ),
            (
                with("cancelUrl", json!("https://evil.com/")),
                "cancelUrl is not an allowed redirect URL",
            ),
            (
                with("quantity", json!(0)),
                "quantity must be a whole number of at least 1",
            ),
            (
                with("quantity", json!(-1)),
                "quantity must be a whole number of at least 1",
            ),
            (
                with("quantity", json!(1.5)),
                "quantity must be a whole number of at least 1",
            ),
            (
                with("quantity", json!("2")),
                "quantity must be a whole number of at least 1",
            ),
            (
                subscription("trialDays", json!(0)),
                "trialDays must be a whole number from 1 to 730",
            ),
            (
                subscription("trialDays", json!(731)),
                "trialDays must be a whole number from 1 to 730",
            ),
            (
                subscription("trialDays", json!("7")),
                "trialDays must be a whole number from 1 to 730",
            ),
            (
                with("trialDays", json!(7)),
                "Trial periods only apply to subscription mode",
            ),
            (
                with("metadata", json!(["a"])),
                "metadata must be an object of strings",
            ),
            (
                with("metadata", json!({"a": 1})),
                "metadata must be an object of strings",
            ),
            (
                with("metadata", Value::Object(many)),
                "metadata may have at most 50 keys",
            ),
            (
                with("metadata", json!({"k".repeat(41): "v"})),
                "metadata keys must be 1 to 40 characters",
            ),
            (
                with("metadata", json!({"k": "v".repeat(501)})),
                "metadata values must be at most 500 characters",
            ),
        ];
        for (body, want) in cases {
            assert_eq!(parse(body.clone()), Err(want.to_string()), "{body}");
        }
    }

    #[test]
    fn open_redirects_are_refused() {
        let invalid = "successUrl must be a valid URI";
        let not_allowed = "successUrl is not an allowed redirect URL";
        for (url, want) in [
            ("//evil.com/x", invalid),
            ("javascript:alert(1)", invalid),
            ("data:text/html,hi", invalid),
            ("ftp://myapp.com/x", invalid),
            ("https://myapp.com /x", invalid),
            ("https://myapp.com/\nx", invalid),
            ("\thttps://myapp.com/", invalid),
            ("https:///evil.com", not_allowed),
            ("https://myapp.com@evil.com/", not_allowed),
            ("https://myapp.com.evil.com/", not_allowed),
            ("https://evilmyapp.com/", not_allowed),
            ("https://app.myapp.com/", not_allowed),
            ("http://myapp.com/", not_allowed),
            ("https://myapp.com:8443/", not_allowed),
            ("https:\\\\evil.com", not_allowed),
            ("https://localhost:3000/", not_allowed),
            ("http://localhost:3001/", not_allowed),
        ] {
            assert_eq!(
                parse(with("successUrl", json!(url))),
                Err(want.into()),
                "{url:?}"
            );
        }
        for url in [
            "https://MyApp.com/done",
            "https://myapp.com:443/done",
            "https://user@myapp.com/done",
            "http://localhost:3000/done?x=1#y",
        ] {
            assert!(parse(with("successUrl", json!(url))).is_ok(), "{url}");
        }
    }

    #[test]
    fn prices_are_aliases_and_an_allow_list() {
        let mut settings = settings();
        settings.prices = [("pro".to_string(), "price_pro".to_string())].into();
        let price =
            |id: &str| parse_with(with("priceId", json!(id)), None, &settings).map(|r| r.price);
        assert_eq!(price("pro"), Ok("price_pro".into()));
        assert_eq!(price("price_pro"), Ok("price_pro".into()));
        assert_eq!(price("Pro"), Err("Price ID is not allowed".into()));
        assert_eq!(price("price_other"), Err("Price ID is not allowed".into()));
    }

    #[test]
    fn modes_quantities_and_trials() {
        let subscription = Some(Mode::Subscription);
        let request = parse_with(with("mode", Value::Null), subscription, &settings()).unwrap();
        assert_eq!(request.mode, Mode::Subscription);
        let explicit = parse_with(valid(), subscription, &settings()).unwrap();
        assert_eq!(explicit.mode, Mode::Payment, "an explicit mode wins");
        let mut body = with("trialDays", json!(14));
        body["mode"] = json!("subscription");
        body["quantity"] = json!(3.0);
        let request = parse(body).unwrap();
        assert_eq!((request.quantity, request.trial_days), (3, Some(14)));
    }

    /// The handler is a plain function: called here with no server and no
    /// socket.
    #[tokio::test]
    async fn answer_runs_without_a_server() {
        let config = Config::parse("[auth]\nhs256_secret = \"s3cret\"\n", &|_| None).unwrap();
        let state = State::new(config);
        let portal = &state.routes.routes()[1];
        let token = jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &json!({"sub": "u1", "role": "authenticated", "aud": "authenticated", "exp": 4102444800u64}),
            &jsonwebtoken::EncodingKey::from_secret(b"s3cret"),
        )
        .unwrap();
        let request = |auth: Option<&str>| {
            let mut request = Request::post("/api/stripe/create-portal");
            if let Some(auth) = auth {
                request = request.header("authorization", format!("Bearer {auth}"));
            }
            request.body(Bytes::from_static(b"{}")).unwrap()
        };
        let mut user = None;
        let anonymous = answer(&state, portal, vec![], request(None), &mut user).await;
        assert!(matches!(
            anonymous,
            Err(Error::Rejected(Rejection::NotSignedIn))
        ));
        assert_eq!(user, None);
        let signed_in = answer(&state, portal, vec![], request(Some(&token)), &mut user).await;
        assert!(matches!(signed_in, Err(Error::BillingNotConfigured)));
        assert_eq!(user.as_deref(), Some("u1"));
    }
}
