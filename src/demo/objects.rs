//! Stripe objects built from Stripe's own example objects
//! (`tests/fixtures/stripe/`), with the fields a stand-in sets per call:
//! what the demo's stand-in Stripe answers with, and the test suite's fake
//! Stripe too, so both deserialize into async-stripe's types the same way.

use serde_json::{json, Map, Value};

pub const CHECKOUT_SESSION: &str =
    include_str!("../../tests/fixtures/stripe/checkout.session.json");
pub const PORTAL_SESSION: &str =
    include_str!("../../tests/fixtures/stripe/billing_portal.session.json");
pub const CUSTOMER: &str = include_str!("../../tests/fixtures/stripe/customer.json");
pub const SUBSCRIPTION: &str = include_str!("../../tests/fixtures/stripe/subscription.json");
pub const PRICE: &str = include_str!("../../tests/fixtures/stripe/price.json");
pub const INVOICE: &str = include_str!("../../tests/fixtures/stripe/invoice.json");
pub const EVENT: &str = include_str!("../../tests/fixtures/stripe/event.json");

/// A subscription's billing period.
pub const PERIOD: u64 = 30 * 24 * 3600;

/// One of the example objects above, parsed (`Null` if it were not JSON).
pub fn fixture(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_default()
}

/// An id tail of `len` random lower-case hex digits.
pub fn random_id(len: usize) -> String {
    let mut id = String::new();
    while id.len() < len {
        id.push_str(&uuid::Uuid::new_v4().simple().to_string());
    }
    id.truncate(len);
    id
}

/// A price with `id` of `product` (one-time unless `recurring`).
pub fn price(id: &str, product: &str, recurring: bool, live: bool) -> Value {
    let mut price = fixture(PRICE);
    for (field, value) in [
        ("id", json!(id)),
        ("product", json!(product)),
        ("livemode", json!(live)),
        ("transform_quantity", Value::Null),
        ("custom_unit_amount", Value::Null),
    ] {
        price[field] = value;
    }
    if !recurring {
        price["type"] = json!("one_time");
        price["recurring"] = Value::Null;
    }
    price
}

/// A subscription item on the fixture's: the price, its legacy `plan`
/// twin, and the current period, which lives on items since API 2025-03-31.
pub fn item(subscription: &str, price: Value, quantity: u64, created: u64) -> Value {
    let template = fixture(SUBSCRIPTION);
    let mut item = template["items"]["data"][0].clone();
    let mut plan = item["plan"].clone();
    for (field, value) in [
        ("id", price["id"].clone()),
        ("amount", price["unit_amount"].clone()),
        ("amount_decimal", price["unit_amount_decimal"].clone()),
        ("billing_scheme", price["billing_scheme"].clone()),
        ("created", price["created"].clone()),
        ("currency", price["currency"].clone()),
        ("interval", price["recurring"]["interval"].clone()),
        (
            "interval_count",
            price["recurring"]["interval_count"].clone(),
        ),
        ("livemode", price["livemode"].clone()),
        ("metadata", json!({})),
        ("product", price["product"].clone()),
        ("tiers_mode", Value::Null),
        ("transform_usage", Value::Null),
    ] {
        plan[field] = value;
    }
    for (field, value) in [
        ("id", json!(format!("si_{}", random_id(14)))),
        ("created", json!(created)),
        ("price", price),
        ("plan", plan),
        ("quantity", json!(quantity)),
        ("subscription", json!(subscription)),
        ("current_period_start", json!(created)),
        ("current_period_end", json!(created + PERIOD)),
        ("billing_thresholds", Value::Null),
    ] {
        item[field] = value;
    }
    item
}

/// An active subscription `id` of `customer`, made `created`, with `items`
/// (from [`item`]).
pub fn subscription(
    id: &str,
    customer: &str,
    items: Vec<Value>,
    created: u64,
    metadata: Map<String, Value>,
    live: bool,
) -> Value {
    let mut subscription = fixture(SUBSCRIPTION);
    for (field, value) in [
        ("id", json!(id)),
        ("customer", json!(customer)),
        ("status", json!("active")),
        ("created", json!(created)),
        ("start_date", json!(created)),
        ("billing_cycle_anchor", json!(created)),
        (
            "items",
            json!({
                "object": "list",
                "data": items,
                "has_more": false,
                "url": format!("/v1/subscription_items?subscription={id}"),
            }),
        ),
        ("metadata", Value::Object(metadata)),
        ("livemode", json!(live)),
        ("cancel_at_period_end", json!(false)),
        (
            "cancellation_details",
            json!({"comment": null, "feedback": null, "reason": null}),
        ),
        (
            "payment_settings",
            json!({
                "payment_method_options": null,
                "payment_method_types": null,
                "save_default_payment_method": "off",
            }),
        ),
        ("billing_mode", json!({"type": "classic", "flexible": null})),
        ("billing_schedules", json!([])),
        (
            "invoice_settings",
            json!({"account_tax_ids": null, "issuer": {"type": "self"}}),
        ),
    ] {
        subscription[field] = value;
    }
    // The fixture's placeholders for things a plain new subscription has not.
    for field in [
        "billing_cycle_anchor_config",
        "billing_thresholds",
        "cancel_at",
        "canceled_at",
        "ended_at",
        "latest_invoice",
        "managed_payments",
        "next_pending_invoice_item_invoice",
        "pause_collection",
        "pending_invoice_item_interval",
        "pending_update",
        "transfer_data",
        "trial_end",
        "trial_start",
    ] {
        subscription[field] = Value::Null;
    }
    subscription
}

/// The API version async-stripe 1.0.0-rc.10 pins; events say it.
pub const API_VERSION: &str = "2026-09-30.endive";

/// A customer built on the fixture: the fields a new customer has.
pub fn customer(
    id: &str,
    email: Option<&str>,
    name: Option<&str>,
    description: Option<&str>,
    metadata: Map<String, Value>,
    live: bool,
    created: u64,
) -> Value {
    let mut customer = fixture(CUSTOMER);
    for (field, value) in [
        ("id", json!(id)),
        ("email", json!(email)),
        ("name", json!(name)),
        ("description", json!(description)),
        ("metadata", Value::Object(metadata)),
        ("created", json!(created)),
        ("livemode", json!(live)),
        // The fixture's discount, shipping and currency belong to an older customer.
        ("discount", Value::Null),
        ("shipping", Value::Null),
        ("address", Value::Null),
        ("currency", Value::Null),
        ("invoice_prefix", json!(random_id(8).to_uppercase())),
    ] {
        customer[field] = value;
    }
    customer
}

/// A Stripe event of type `kind` about `object` as it is now: a fresh
/// `evt_` id, [`API_VERSION`], the object's `livemode`.
pub fn event(kind: &str, object: Value, created: u64) -> Value {
    let mut event = fixture(EVENT);
    let live = object["livemode"].as_bool().unwrap_or_default();
    for (field, value) in [
        ("id", json!(format!("evt_1{}", random_id(23)))),
        ("api_version", json!(API_VERSION)),
        ("created", json!(created)),
        ("type", json!(kind)),
        ("data", json!({ "object": object })),
        ("livemode", json!(live)),
        ("pending_webhooks", json!(1)),
    ] {
        event[field] = value;
    }
    event
}
