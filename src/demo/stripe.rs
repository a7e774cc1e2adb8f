//! The demo's stand-in for Stripe: the few API calls the sidecar makes
//! (customers, Checkout and portal sessions, subscription and entitlement
//! lists), answered from memory with objects built from Stripe's own
//! example objects (`tests/fixtures/stripe/`) so async-stripe reads them,
//! plus the two hosted pages a buyer sees: `/pay/{session}` (a "Pay"
//! button that creates an active subscription) and `/portal/{session}` (a
//! "Cancel subscription" button). Both send the sidecar the signed webhooks
//! Stripe would, wait for its replies, then send the browser back to the
//! app as Stripe does.
//!
//! It is not the strict fake of the tests (`tests/support/stripe.rs`): it
//! checks no parameters, models no failures, no idempotency beyond
//! customer creation, no paging beyond `starting_after`, and search sees
//! new customers at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Map, Value};
use url::form_urlencoded;

use super::objects::{self, fixture, random_id, CHECKOUT_SESSION, INVOICE, PORTAL_SESSION};
use super::page::{self, escape, html, redirect};
use crate::billing::webhook::sign;

/// The stand-in's settings and its memory; shared by every connection.
pub struct StandIn {
    /// `http://127.0.0.1:PORT`, for the hosted pages' URLs.
    base: String,
    /// The sidecar's webhook route.
    webhook_url: String,
    webhook_secret: String,
    /// Price id -> what the pay page calls it.
    prices: HashMap<String, String>,
    client: Client<HttpConnector, Full<Bytes>>,
    ledger: Mutex<Ledger>,
}

#[derive(Default)]
struct Ledger {
    customers: Vec<Value>,
    /// Customer creation's `Idempotency-Key` -> the customer it made.
    created: HashMap<String, Value>,
    checkout_sessions: Vec<Value>,
    /// Checkout session id -> its price.
    orders: HashMap<String, String>,
    portal_sessions: Vec<Value>,
    subscriptions: Vec<Value>,
    /// The last `created` given to a subscription (one a second at most).
    last_created: u64,
}

impl StandIn {
    /// A stand-in at `base` sending webhooks to `webhook_url`, signed with
    /// `webhook_secret`; `prices` maps each price id to its display name.
    pub fn new(
        base: String,
        webhook_url: String,
        webhook_secret: String,
        prices: HashMap<String, String>,
    ) -> StandIn {
        StandIn {
            base,
            webhook_url,
            webhook_secret,
            prices,
            client: Client::builder(TokioExecutor::new()).build_http(),
            ledger: Mutex::new(Ledger::default()),
        }
    }

    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Answers one request: the API under `/v1/`, else a hosted page.
    pub async fn handle(self: Arc<Self>, request: Request<Bytes>) -> Response<Full<Bytes>> {
        let method = request.method().clone();
        let path = request.uri().path().to_string();
        let mut params = decode(request.uri().query().unwrap_or_default().as_bytes());
        params.extend(decode(request.body()));
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let idempotency = request
            .headers()
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok());
        if segments.first() == Some(&"v1") {
            let authorized = request
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("Bearer sk_test_"));
            if !authorized {
                return api_error(401, "Invalid API Key provided");
            }
            let mut ledger = self.ledger();
            let reply = match (&method, &segments[1..]) {
                (&Method::GET, ["customers", "search"]) => Some(ledger.search(&params)),
                (&Method::POST, ["customers"]) => {
                    Some(ledger.create_customer(&params, idempotency))
                }
                (&Method::GET, ["customers", id]) => ledger.customer(id).cloned(),
                (&Method::POST, ["checkout", "sessions"]) => {
                    Some(ledger.create_checkout(&params, &self.base))
                }
                (&Method::POST, ["billing_portal", "sessions"]) => {
                    Some(ledger.create_portal(&params, &self.base))
                }
                (&Method::GET, ["subscriptions"]) => Some(ledger.list_subscriptions(&params)),
                (&Method::GET, ["entitlements", "active_entitlements"]) => {
                    Some(list(Vec::new(), "/v1/entitlements/active_entitlements"))
                }
                _ => None,
            };
            return match reply {
                Some(body) => page::json(StatusCode::OK, &body),
                None => api_error(404, &format!("Unrecognized request URL ({method}: {path})")),
            };
        }
        match (&method, segments.as_slice()) {
            (&Method::GET, ["pay", id]) => self.pay_page(id),
            (&Method::POST, ["pay", id]) => self.pay(id).await,
            (&Method::GET, ["portal", id]) => self.portal_page(id),
            (&Method::POST, ["portal", id, "cancel"]) => {
                let subscription = params
                    .iter()
                    .find(|(k, _)| k == "subscription")
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default();
                self.cancel(id, &subscription).await
            }
            _ => page::not_found(),
        }
    }

    fn price_name(&self, price: &str) -> String {
        self.prices
            .get(price)
            .cloned()
            .unwrap_or_else(|| price.to_string())
    }

    /// The hosted Checkout page: what is bought and a "Pay" button.
    fn pay_page(&self, id: &str) -> Response<Full<Bytes>> {
        let ledger = self.ledger();
        let Some(session) = find(&ledger.checkout_sessions, id) else {
            return page::not_found();
        };
        if session["status"] != "open" {
            return html(
                StatusCode::OK,
                "Checkout",
                "<p>This checkout session is already complete.</p>",
            );
        }
        let price = ledger.orders.get(id).cloned().unwrap_or_default();
        let amount = price_object(&price)["unit_amount"]
            .as_u64()
            .unwrap_or_default();
        let email = ledger
            .customer(session["customer"].as_str().unwrap_or_default())
            .and_then(|c| c["email"].as_str())
            .or(session["customer_email"].as_str())
            .unwrap_or("a new customer")
            .to_string();
        let cancel = session["cancel_url"].as_str().unwrap_or("/").to_string();
        let body = format!(
            "<p class=\"note\">Stand-in for Stripe Checkout: no card, no network.</p>\
             <h2>{name}</h2><p class=\"price\">${dollars}.{cents:02} per month</p>\
             <p>Billed to {email}</p>\
             <form method=\"post\" action=\"/pay/{id}\"><button>Pay</button></form>\
             <p><a href=\"{cancel}\">Cancel and go back</a></p>",
            name = escape(&self.price_name(&price)),
            dollars = amount / 100,
            cents = amount % 100,
            email = escape(&email),
            id = escape(id),
            cancel = escape(&cancel),
        );
        html(StatusCode::OK, "Checkout", &body)
    }

    /// The buyer paid: an active subscription for the session's customer
    /// and price, the session complete, Stripe's three events delivered,
    /// then 303 to the session's `success_url`.
    async fn pay(&self, id: &str) -> Response<Full<Bytes>> {
        let (events, success_url) = {
            let mut ledger = self.ledger();
            let Some(index) = ledger.checkout_sessions.iter().position(|s| s["id"] == id) else {
                return page::not_found();
            };
            let session = ledger.checkout_sessions[index].clone();
            let success_url = session["success_url"]
                .as_str()
                .unwrap_or("/")
                .replace("{CHECKOUT_SESSION_ID}", id);
            if session["status"] != "open" {
                return redirect(&success_url);
            }
            let customer = match session["customer"].as_str() {
                Some(customer) => customer.to_string(),
                None => {
                    let email = session["customer_email"].as_str();
                    let customer = customer_object(email, Map::new());
                    ledger.customers.push(customer.clone());
                    customer["id"].as_str().unwrap_or_default().to_string()
                }
            };
            let price = ledger.orders.get(id).cloned().unwrap_or_default();
            let metadata = session["metadata"].as_object().cloned().unwrap_or_default();
            let subscription = ledger.new_subscription(&customer, &price, metadata);
            let invoice = invoice_object(&subscription);
            let session = {
                let session = &mut ledger.checkout_sessions[index];
                for (field, value) in [
                    ("status", json!("complete")),
                    ("payment_status", json!("paid")),
                    ("customer", json!(customer)),
                    ("subscription", subscription["id"].clone()),
                    ("invoice", invoice["id"].clone()),
                    ("url", Value::Null),
                ] {
                    session[field] = value;
                }
                session.clone()
            };
            ledger.subscriptions.push(subscription.clone());
            let events = vec![
                event("checkout.session.completed", session),
                event("customer.subscription.created", subscription),
                event("invoice.paid", invoice),
            ];
            (events, success_url)
        };
        match self.deliver(events).await {
            Ok(()) => redirect(&success_url),
            Err(problem) => delivery_failed(&problem),
        }
    }

    /// The hosted portal: the customer's subscriptions, each with a
    /// "Cancel subscription" button.
    fn portal_page(&self, id: &str) -> Response<Full<Bytes>> {
        let ledger = self.ledger();
        let Some(session) = find(&ledger.portal_sessions, id) else {
            return page::not_found();
        };
        let customer = session["customer"].as_str().unwrap_or_default();
        let back = session["return_url"].as_str().unwrap_or("/");
        let email = ledger
            .customer(customer)
            .and_then(|c| c["email"].as_str())
            .unwrap_or_default();
        let mut body = format!(
            "<p class=\"note\">Stand-in for the Stripe customer portal.</p><p>Customer {} ({})</p>",
            escape(customer),
            escape(email)
        );
        let live: Vec<&Value> = ledger
            .subscriptions
            .iter()
            .filter(|s| s["customer"] == customer && s["status"] != "canceled")
            .collect();
        if live.is_empty() {
            body.push_str("<p>No subscription.</p>");
        }
        for subscription in live {
            let price = subscription["items"]["data"][0]["price"]["id"]
                .as_str()
                .unwrap_or_default();
            body.push_str(&format!(
                "<div class=\"card\"><h2>{name}</h2><p>Status: <b>{status}</b></p>\
                 <form method=\"post\" action=\"/portal/{id}/cancel\">\
                 <input type=\"hidden\" name=\"subscription\" value=\"{sub}\">\
                 <button>Cancel subscription</button></form></div>",
                name = escape(&self.price_name(price)),
                status = escape(subscription["status"].as_str().unwrap_or_default()),
                id = escape(id),
                sub = escape(subscription["id"].as_str().unwrap_or_default()),
            ));
        }
        body.push_str(&format!(
            "<p><a href=\"{}\">Return to the app</a></p>",
            escape(back)
        ));
        html(StatusCode::OK, "Billing", &body)
    }

    /// Cancels one of the portal customer's subscriptions now, delivers
    /// `customer.subscription.deleted`, then 303 to the `return_url`.
    async fn cancel(&self, id: &str, subscription: &str) -> Response<Full<Bytes>> {
        let (event, back) = {
            let mut ledger = self.ledger();
            let Some(session) = find(&ledger.portal_sessions, id).cloned() else {
                return page::not_found();
            };
            let back = session["return_url"].as_str().unwrap_or("/").to_string();
            let Some(found) = ledger
                .subscriptions
                .iter_mut()
                .find(|s| s["id"] == subscription && s["customer"] == session["customer"])
            else {
                return page::not_found();
            };
            if found["status"] == "canceled" {
                return redirect(&back);
            }
            let now = now();
            found["status"] = json!("canceled");
            found["canceled_at"] = json!(now);
            found["ended_at"] = json!(now);
            found["cancellation_details"]["reason"] = json!("cancellation_requested");
            (event("customer.subscription.deleted", found.clone()), back)
        };
        match self.deliver(vec![event]).await {
            Ok(()) => redirect(&back),
            Err(problem) => delivery_failed(&problem),
        }
    }

    /// Sends each event to the sidecar's webhook route, signed as Stripe
    /// signs, one after the other, each answered before the next.
    async fn deliver(&self, events: Vec<Value>) -> Result<(), String> {
        for event in events {
            let body = serde_json::to_vec(&event).map_err(|e| e.to_string())?;
            let timestamp = now().to_string();
            let signature = sign(&self.webhook_secret, &timestamp, &body);
            let request = Request::post(&self.webhook_url)
                .header(header::CONTENT_TYPE, "application/json; charset=utf-8")
                .header("stripe-signature", format!("t={timestamp},v1={signature}"))
                .body(Full::new(Bytes::from(body)))
                .map_err(|e| e.to_string())?;
            let kind = event["type"].as_str().unwrap_or_default();
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| format!("{kind}: {e}"))?;
            let status = response.status();
            let _ = response.into_body().collect().await;
            if !status.is_success() {
                return Err(format!("{kind}: the sidecar answered {status}"));
            }
        }
        Ok(())
    }
}

impl Ledger {
    fn customer(&self, id: &str) -> Option<&Value> {
        find(&self.customers, id)
    }

    /// `metadata['KEY']:'VALUE'`, the only query the sidecar sends.
    fn search(&self, params: &[(String, String)]) -> Value {
        let query = param(params, "query").unwrap_or_default();
        let wanted = query
            .strip_prefix("metadata['")
            .and_then(|rest| rest.split_once("']:'"))
            .map(|(key, value)| (key.to_string(), value.trim_end_matches('\'').to_string()));
        let data: Vec<Value> = match wanted {
            Some((key, value)) => self
                .customers
                .iter()
                .filter(|c| c["metadata"][&key] == value.as_str())
                .cloned()
                .collect(),
            None => Vec::new(),
        };
        json!({
            "object": "search_result",
            "data": data,
            "has_more": false,
            "next_page": null,
            "url": "/v1/customers/search",
        })
    }

    fn create_customer(&mut self, params: &[(String, String)], key: Option<&str>) -> Value {
        if let Some(done) = key.and_then(|k| self.created.get(k)) {
            return done.clone();
        }
        let metadata = bracketed(params, "metadata");
        let customer = customer_object(param(params, "email"), metadata);
        self.customers.push(customer.clone());
        if let Some(key) = key {
            self.created.insert(key.to_string(), customer.clone());
        }
        customer
    }

    fn create_checkout(&mut self, params: &[(String, String)], base: &str) -> Value {
        let id = format!("cs_test_a1{}", random_id(56));
        let now = now();
        let mut session = fixture(CHECKOUT_SESSION);
        for (field, value) in [
            ("id", json!(id)),
            ("url", json!(format!("{base}/pay/{id}"))),
            (
                "mode",
                json!(param(params, "mode").unwrap_or("subscription")),
            ),
            ("customer", json!(param(params, "customer"))),
            ("customer_email", json!(param(params, "customer_email"))),
            ("customer_creation", Value::Null),
            ("customer_details", Value::Null),
            ("payment_intent", Value::Null),
            ("subscription", Value::Null),
            (
                "client_reference_id",
                json!(param(params, "client_reference_id")),
            ),
            ("metadata", Value::Object(bracketed(params, "metadata"))),
            ("success_url", json!(param(params, "success_url"))),
            ("cancel_url", json!(param(params, "cancel_url"))),
            ("status", json!("open")),
            ("payment_status", json!("unpaid")),
            ("livemode", json!(false)),
            ("created", json!(now)),
            ("expires_at", json!(now + 24 * 3600)),
        ] {
            session[field] = value;
        }
        let price = param(params, "line_items[0][price]").unwrap_or_default();
        self.orders.insert(id, price.to_string());
        self.checkout_sessions.push(session.clone());
        session
    }

    fn create_portal(&mut self, params: &[(String, String)], base: &str) -> Value {
        let id = format!("bps_1{}", random_id(23));
        let mut session = fixture(PORTAL_SESSION);
        for (field, value) in [
            ("id", json!(id)),
            ("customer", json!(param(params, "customer"))),
            ("return_url", json!(param(params, "return_url"))),
            ("url", json!(format!("{base}/portal/{id}"))),
            ("flow", Value::Null),
            ("livemode", json!(false)),
            ("created", json!(now())),
        ] {
            session[field] = value;
        }
        self.portal_sessions.push(session.clone());
        session
    }

    /// Newest first, `status=all` or Stripe's default (not canceled).
    fn list_subscriptions(&self, params: &[(String, String)]) -> Value {
        let customer = param(params, "customer");
        let all = param(params, "status") == Some("all");
        let mut data: Vec<&Value> = self
            .subscriptions
            .iter()
            .rev()
            .filter(|s| customer.is_none_or(|c| s["customer"] == c))
            .filter(|s| all || s["status"] != "canceled")
            .collect();
        if let Some(after) = param(params, "starting_after") {
            let start = data
                .iter()
                .position(|s| s["id"] == after)
                .map_or(0, |i| i + 1);
            data.drain(..start);
        }
        let limit = param(params, "limit")
            .and_then(|l| l.parse().ok())
            .unwrap_or(10usize);
        let has_more = data.len() > limit;
        data.truncate(limit);
        let mut reply = list(data.into_iter().cloned().collect(), "/v1/subscriptions");
        reply["has_more"] = json!(has_more);
        reply
    }

    /// A new active subscription (not stored yet) of one `price`.
    fn new_subscription(
        &mut self,
        customer: &str,
        price: &str,
        metadata: Map<String, Value>,
    ) -> Value {
        let created = now().max(self.last_created + 1);
        self.last_created = created;
        let id = format!("sub_1{}", random_id(23));
        let item = objects::item(&id, price_object(price), 1, created);
        objects::subscription(&id, customer, vec![item], created, metadata, false)
    }
}

fn price_object(id: &str) -> Value {
    objects::price(id, "prod_demo", true, false)
}

/// The paid first invoice of `subscription` (the sidecar reads only its
/// `customer`; the rest is Stripe's example with the ids filled in).
fn invoice_object(subscription: &Value) -> Value {
    let now = now();
    let amount = subscription["items"]["data"][0]["price"]["unit_amount"].clone();
    let mut invoice = fixture(INVOICE);
    for (field, value) in [
        ("id", json!(format!("in_1{}", random_id(23)))),
        ("customer", subscription["customer"].clone()),
        ("subscription", subscription["id"].clone()),
        ("livemode", json!(false)),
        ("created", json!(now)),
        ("billing_reason", json!("subscription_create")),
        ("status", json!("paid")),
        ("amount_due", amount.clone()),
        ("amount_paid", amount.clone()),
        ("amount_remaining", json!(0)),
        ("total", amount),
    ] {
        invoice[field] = value;
    }
    invoice
}

fn customer_object(email: Option<&str>, metadata: Map<String, Value>) -> Value {
    let id = format!("cus_{}", random_id(14));
    objects::customer(&id, email, None, None, metadata, false, now())
}

fn event(kind: &str, object: Value) -> Value {
    objects::event(kind, object, now())
}

fn list(data: Vec<Value>, url: &str) -> Value {
    json!({ "object": "list", "data": data, "has_more": false, "url": url })
}

fn find<'a>(objects: &'a [Value], id: &str) -> Option<&'a Value> {
    objects.iter().find(|o| o["id"] == id)
}

fn decode(bytes: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(bytes).into_owned().collect()
}

/// The last value of a parameter, as Stripe reads a repeated one.
fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// `root[key]=value` parameters as an object.
fn bracketed(params: &[(String, String)], root: &str) -> Map<String, Value> {
    params
        .iter()
        .filter_map(|(k, v)| {
            let key = k.strip_prefix(root)?.strip_prefix('[')?.strip_suffix(']')?;
            Some((key.to_string(), json!(v)))
        })
        .collect()
}

fn api_error(status: u16, message: &str) -> Response<Full<Bytes>> {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    let body = json!({ "error": { "type": "invalid_request_error", "message": message } });
    page::json(status, &body)
}

fn delivery_failed(problem: &str) -> Response<Full<Bytes>> {
    let body = format!(
        "<p>The payment went through, but the sidecar did not accept the webhook: {}</p>",
        escape(problem)
    );
    html(StatusCode::BAD_GATEWAY, "Webhook not delivered", &body)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}
