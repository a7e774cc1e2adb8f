//! `POST` checkout: the body checked in the contract's order with its
//! exact messages, then the customer resolved and a Stripe Checkout
//! Session created; the reply is `{"url", "sessionId"}` with the route's
//! status.

use serde_json::{json, Map, Value};
use stripe_checkout::checkout_session::{
    CreateCheckoutSession, CreateCheckoutSessionCustomerCreation, CreateCheckoutSessionLineItems,
    CreateCheckoutSessionSubscriptionData,
};
use stripe_checkout::CheckoutSessionMode;

use super::{present, redirect_url, Billing, Metadata};
use crate::config;
use crate::error::Error;
use crate::identity::Subject;
use crate::routes::{Mode, Route};
use crate::stripe::{Stripe, StripeError};

/// The metadata key naming the user who checked out: a webhook's
/// `checkout.session.completed` is trusted only when it matches the
/// session's `client_reference_id`.
pub const USER_ID: &str = "user_id";

/// A checkout request, validated.
#[derive(Debug, PartialEq)]
pub(crate) struct CheckoutRequest {
    price: String,
    success_url: String,
    cancel_url: String,
    mode: Mode,
    quantity: u64,
    trial_days: Option<u32>,
    metadata: Metadata,
}

impl CheckoutRequest {
    /// Checks the body in the contract's order, with its messages.
    /// `max_trial` is the longest trial this caller may ask; `reserved`
    /// are the metadata keys the sidecar sets itself, never taken from the
    /// body.
    pub(crate) fn parse(
        body: &Map<String, Value>,
        default_mode: Option<Mode>,
        settings: &config::Checkout,
        max_trial: u32,
        reserved: &[&str],
    ) -> Result<CheckoutRequest, Error> {
        let bad = |message: &str| Error::BadRequest(message.to_string());
        let price = match body.get("priceId") {
            None | Some(Value::Null) => return Err(bad("Price ID is required")),
            Some(Value::String(s)) if s.is_empty() => return Err(bad("Price ID is required")),
            Some(Value::String(s)) => s.clone(),
            Some(_) => return Err(bad("priceId must be a string")),
        };
        if !present(body, "successUrl") || !present(body, "cancelUrl") {
            return Err(bad("Success and cancel URLs are required"));
        }
        let mode = match body.get("mode") {
            None | Some(Value::Null) => default_mode.ok_or_else(|| {
                bad("Mode is required (either 'payment' for one-time payments or 'subscription' for recurring subscription)")
            })?,
            Some(value) => value
                .as_str()
                .and_then(Mode::parse)
                .ok_or_else(|| bad("Mode must be 'payment' or 'subscription'"))?,
        };
        let origins = &settings.allowed_redirect_origins;
        let success_url = redirect_url(body, "successUrl", origins)?;
        let cancel_url = redirect_url(body, "cancelUrl", origins)?;
        // The browser names a price; only the configuration says which
        // it may buy.
        let price = if let Some(id) = settings.prices.get(&price) {
            id.clone()
        } else if settings.allow_any_price || settings.prices.values().any(|id| *id == price) {
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
            Some(_) if mode == Mode::Payment => {
                return Err(bad("Trial periods only apply to subscription mode"))
            }
            // The trial is a commercial term: the browser may not choose
            // one longer than the configuration allows it.
            Some(_) if max_trial == 0 => return Err(bad("Trial periods are not allowed")),
            Some(value) => Some(
                whole_number(value)
                    .filter(|n| (1..=u64::from(max_trial)).contains(n))
                    .ok_or_else(|| {
                        Error::BadRequest(format!("trialDays must be between 1 and {max_trial}"))
                    })? as u32,
            ),
        };
        let mut metadata = metadata(body.get("metadata"))?;
        metadata.retain(|key, _| !reserved.contains(&key.as_str()));
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

fn metadata(value: Option<&Value>) -> Result<Metadata, Error> {
    let bad = |message: &str| Error::BadRequest(message.to_string());
    let object = match value {
        None | Some(Value::Null) => return Ok(Metadata::new()),
        Some(Value::Object(object)) => object,
        Some(_) => return Err(bad("metadata must be an object of strings")),
    };
    if object.len() > METADATA_KEYS {
        return Err(bad("metadata may have at most 50 keys"));
    }
    let mut metadata = Metadata::new();
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

/// Creates the Checkout Session for `subject`; `max_trial` is the longest
/// trial this caller may ask.
pub(super) async fn create(
    billing: &Billing,
    stripe: &Stripe,
    route: &Route,
    params: Vec<(String, String)>,
    subject: &Subject,
    max_trial: u32,
    body: &Map<String, Value>,
) -> Result<Value, Error> {
    let mut reserved = vec![USER_ID, billing.metadata_key.as_str()];
    reserved.extend(params.iter().map(|(name, _)| name.as_str()));
    let request = CheckoutRequest::parse(
        body,
        route.default_mode,
        &billing.checkout,
        max_trial,
        &reserved,
    )?;
    let mut metadata = request.metadata;
    metadata.extend(params);
    if let Subject::User(user) = subject {
        metadata.insert(USER_ID.into(), user.id.clone());
    }
    if metadata.len() > METADATA_KEYS {
        return Err(Error::BadRequest(
            "metadata may have at most 50 keys, counting the route's own".into(),
        ));
    }
    let customer = match subject {
        Subject::Anonymous => None,
        Subject::Customer { id, .. } => Some(id.clone()),
        Subject::User(user) => billing.customers.for_checkout(stripe, user).await?,
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
    if billing.checkout.allow_promotion_codes {
        session = session.allow_promotion_codes(true);
    }
    let session = session.send(stripe).await?;
    let url = session.url.ok_or_else(|| {
        Error::Stripe(StripeError::Decode(
            "a checkout session without a url".into(),
        ))
    })?;
    Ok(json!({ "url": url, "sessionId": session.id.as_str() }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Origin;

    fn settings() -> config::Checkout {
        config::Checkout {
            allowed_redirect_origins: vec![
                Origin::parse("https://myapp.com").unwrap(),
                Origin::parse("http://localhost:3000").unwrap(),
            ],
            require_sign_in: false,
            allow_promotion_codes: false,
            prices: Default::default(),
            allow_any_price: true,
            max_trial_days: 30,
            rate_limit_per_minute: None,
        }
    }

    /// The metadata keys a route with a `{teamId}` reserves.
    const RESERVED: [&str; 2] = [USER_ID, "teamId"];

    fn parse_with(
        body: Value,
        default_mode: Option<Mode>,
        settings: &config::Checkout,
    ) -> Result<CheckoutRequest, String> {
        let Value::Object(body) = body else {
            panic!("not an object")
        };
        let max_trial = settings.max_trial_days;
        CheckoutRequest::parse(&body, default_mode, settings, max_trial, &RESERVED)
            .map_err(|e| e.to_string())
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
                metadata: Metadata::new(),
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
                "trialDays must be between 1 and 30",
            ),
            (
                subscription("trialDays", json!(31)),
                "trialDays must be between 1 and 30",
            ),
            (
                subscription("trialDays", json!("7")),
                "trialDays must be between 1 and 30",
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
        settings.allow_any_price = false;
        settings.prices = [("pro".to_string(), "price_pro".to_string())].into();
        let price =
            |id: &str| parse_with(with("priceId", json!(id)), None, &settings).map(|r| r.price);
        assert_eq!(price("pro"), Ok("price_pro".into()));
        assert_eq!(price("price_pro"), Ok("price_pro".into()));
        assert_eq!(price("Pro"), Err("Price ID is not allowed".into()));
        assert_eq!(price("price_other"), Err("Price ID is not allowed".into()));
    }

    /// Regression: with no `checkout.prices`, any caller could buy any
    /// active price of the account.
    #[test]
    fn without_allow_any_price_only_listed_prices_sell() {
        let mut settings = settings();
        settings.allow_any_price = false;
        let price = |settings: &config::Checkout, id: &str| {
            parse_with(with("priceId", json!(id)), None, settings).map(|r| r.price)
        };
        assert_eq!(
            price(&settings, "price_123"),
            Err("Price ID is not allowed".into())
        );
        settings.prices = [("pro".to_string(), "price_pro".to_string())].into();
        assert_eq!(price(&settings, "pro"), Ok("price_pro".into()));
        assert_eq!(
            price(&settings, "price_123"),
            Err("Price ID is not allowed".into())
        );
        settings.allow_any_price = true;
        assert_eq!(
            price(&settings, "pro"),
            Ok("price_pro".into()),
            "aliases still apply"
        );
        assert_eq!(price(&settings, "price_123"), Ok("price_123".into()));
    }

    /// Regression: any anonymous caller could ask `trialDays: 730`.
    #[test]
    fn the_trial_a_caller_may_ask_is_configured() {
        let body = |days: Value| {
            let mut body = with("trialDays", days);
            body["mode"] = json!("subscription");
            let Value::Object(body) = body else { panic!() };
            body
        };
        let trial = |max: u32, days: Value| {
            CheckoutRequest::parse(&body(days), None, &settings(), max, &RESERVED)
                .map(|r| r.trial_days)
                .map_err(|e| e.to_string())
        };
        let none = Err("Trial periods are not allowed".to_string());
        assert_eq!(trial(0, json!(1)), none, "the default for browsers");
        assert_eq!(trial(0, json!(730)), none);
        assert_eq!(trial(14, json!(14)), Ok(Some(14)));
        assert_eq!(
            trial(14, json!(15)),
            Err("trialDays must be between 1 and 14".into())
        );
        assert_eq!(trial(730, json!(730)), Ok(Some(730)), "an API key");
        assert_eq!(
            trial(730, json!(731)),
            Err("trialDays must be between 1 and 730".into())
        );
        assert_eq!(trial(0, Value::Null), Ok(None));
    }

    /// Regression: a caller could set `metadata.user_id` (and the other
    /// reserved keys), which apps read back from webhooks.
    #[test]
    fn reserved_metadata_keys_never_come_from_the_body() {
        let body = with(
            "metadata",
            json!({"user_id": "victim", "teamId": "other-team", "plan": "pro"}),
        );
        let metadata = parse(body).unwrap().metadata;
        assert_eq!(metadata, Metadata::from([("plan".into(), "pro".into())]));
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
}
