//! A strict fake of the Stripe API for the end-to-end tests: a real HTTP/1.1
//! keep-alive server on an ephemeral 127.0.0.1 port that answers the calls
//! the sidecar makes (create a Checkout Session, create a Customer Portal
//! session, search, create and retrieve customers, list a customer's
//! subscriptions and active entitlements) the way Stripe does, with Stripe's
//! statuses, error bodies and messages, and with bodies built from Stripe's
//! own example objects in `tests/fixtures/stripe/` so async-stripe
//! deserializes them.
//!
//! It is strict on purpose: unknown parameters, empty values, bad keys and
//! Stripe's cross-field rules are refused, so a request the sidecar gets
//! past this fake is one the real API accepts too. It also mimics what makes
//! Stripe awkward: search never sees customers created through it (real
//! search lags up to a minute), and `Idempotency-Key` replays, conflicts
//! (409) and mismatches (400) behave as documented. Faults (error replies,
//! delays, dropped connections) are queued per path prefix. Every request is
//! recorded with the TCP connection it came on, to prove keep-alive reuse.
//!
//! Billing state is set by the tests, not by API calls: subscriptions
//! ([`FakeStripe::add_subscription`] and its setters) in the shape of API
//! version [`API_VERSION`] (the current period is on each item, not on the
//! subscription), each `created` a second after the previous one so "most
//! recently created" is always defined; active entitlements
//! ([`FakeStripe::set_entitlements`]); and completed checkouts
//! ([`FakeStripe::complete_checkout`]: customer, subscription, paid invoice
//! and the events Stripe sends). [`FakeStripe::event`] builds any other event
//! from an object as it is now; `support::events` signs and delivers them.
//! `GET /v1/subscriptions` takes `customer`, `status` (Stripe's default:
//! every status but `canceled`; `all`; `ended`), `price` (or `plan`),
//! `limit`, `starting_after` / `ending_before`, and lists newest first;
//! `GET /v1/entitlements/active_entitlements` needs `customer`. An unknown
//! customer id lists nothing in both (real Stripe may instead answer 400
//! `No such customer`; a `Fault` can simulate that). Subscriptions, checkout
//! sessions, invoices and events can be retrieved by id.
//!
//! It does not model anything else of Stripe: no payments, no subscription
//! or invoice API writes (no proration, renewals or dunning: periods and
//! statuses change only when a test changes them), no webhook sending of its
//! own, no list filters other than those above (Stripe's `created`,
//! `collection_method`, `test_clock`... are refused as unknown), no expansion
//! (`expand` is accepted and ignored), no deletion, and no search clauses
//! other than `metadata['KEY']:'VALUE'`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use stripe_sidecar::demo::objects::{
    self, fixture, random_id, CHECKOUT_SESSION, INVOICE, PORTAL_SESSION,
};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};
use url::form_urlencoded;

const ACTIVE_ENTITLEMENT: &str =
    include_str!("../fixtures/stripe/entitlements.active_entitlement.json");

pub use stripe_sidecar::demo::objects::API_VERSION;

/// Every status a subscription can have.
const SUBSCRIPTION_STATUSES: [&str; 8] = [
    "incomplete",
    "incomplete_expired",
    "trialing",
    "active",
    "past_due",
    "canceled",
    "unpaid",
    "paused",
];

const DAY: u64 = 24 * 3600;
/// A monthly price's period, as the fake counts it.
/// The trial a subscription seeded as `trialing` gets.
const SEEDED_TRIAL: u64 = 14 * DAY;

/// One request as the fake received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// The path without the query.
    pub path: String,
    /// Decoded query pairs, in order.
    pub query: Vec<(String, String)>,
    /// Decoded form body pairs, in order, e.g. `("line_items[0][price]", "price_1")`.
    pub form: Vec<(String, String)>,
    /// Header names lower-cased, in hyper's order (repeated names grouped).
    pub headers: Vec<(String, String)>,
    /// Index (from 0) of the TCP connection the request came on.
    pub connection: usize,
}

impl Recorded {
    /// The value of a form field, else of a query parameter; the last one
    /// when repeated, as Stripe reads it.
    pub fn field(&self, name: &str) -> Option<&str> {
        last(&self.form, name).or_else(|| last(&self.query, name))
    }

    /// The first value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn last<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// A failure the next matching request meets instead of (or before) its
/// normal answer.
#[derive(Debug, Clone)]
pub enum Fault {
    /// A Stripe-format error reply; `should_retry` becomes the
    /// `Stripe-Should-Retry` header. Nothing is done and nothing is saved
    /// under the request's idempotency key, so a retry runs afresh.
    Status {
        status: u16,
        should_retry: Option<bool>,
        error_type: &'static str,
        message: &'static str,
    },
    /// The request is handled normally but only after this long (auth is
    /// checked first), with its idempotency key in progress meanwhile. The work completes even if the
    /// client gives up, as at Stripe.
    Delay(Duration),
    /// The TCP connection is closed without an answer and nothing is done.
    Reset,
    /// A 200 whose body is cut-off JSON; nothing is done.
    Malformed,
}

/// A running fake; dropping it stops the listener and every open connection.
///
/// API keys: `Bearer sk_test_*` and `Bearer sk_live_*` pass (live ones get
/// `livemode: true`), `rk_test_*` / `rk_live_*` get Stripe's 403 for a
/// restricted key lacking permission, anything else Stripe's 401.
pub struct FakeStripe {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

struct Shared {
    connections: AtomicUsize,
    /// Requests being answered now, and the most there ever were at once.
    in_flight: AtomicUsize,
    most_in_flight: AtomicUsize,
    state: Mutex<State>,
}

/// Counts one request in flight while it lives.
struct InFlight(Arc<Shared>);

impl InFlight {
    fn new(shared: &Arc<Shared>) -> InFlight {
        let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        shared.most_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight(shared.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

#[derive(Default)]
struct State {
    requests: Vec<Recorded>,
    /// Price id -> recurring.
    prices: HashMap<String, bool>,
    /// In creation order.
    customers: Vec<StoredCustomer>,
    checkout_sessions: Vec<Value>,
    /// Checkout session id -> what completing it needs that the session
    /// object does not show (Stripe keeps line items apart too).
    orders: HashMap<String, Order>,
    portal_sessions: Vec<Value>,
    /// In creation order.
    subscriptions: Vec<Value>,
    /// The last `created` given to a subscription: each new one gets a later
    /// second, so "most recently created" is defined within one real second.
    last_created: u64,
    invoices: Vec<Value>,
    /// Every event made, for `GET /v1/events/{id}`.
    events: Vec<Value>,
    /// Customer -> active entitlements, in the order set.
    entitlements: HashMap<String, Vec<Value>>,
    /// Lookup key -> feature id, so a feature keeps its id across customers.
    features: HashMap<String, String>,
    /// (API key, Idempotency-Key) -> state; keys are scoped per API key at Stripe.
    idempotency: HashMap<(String, String), Idempotency>,
    /// Path prefix -> queued faults, in the order first registered.
    faults: Vec<(String, VecDeque<Fault>)>,
}

/// A Checkout Session's line items and subscription settings.
struct Order {
    /// (price id, quantity), in line order.
    items: Vec<(String, u64)>,
    subscription_metadata: serde_json::Map<String, Value>,
    trial_days: Option<u64>,
}

/// What completing a Checkout Session made, and the events Stripe sends for it.
#[derive(Debug, Clone)]
pub struct Completed {
    /// The session as Stripe returns it after completion.
    pub session: Value,
    pub customer: String,
    pub subscription: String,
    pub invoice: String,
    /// `checkout.session.completed`, `customer.subscription.created` and
    /// `invoice.paid`, in that order (Stripe does not promise any order).
    pub events: Vec<Value>,
}

impl Completed {
    /// The event of this type; panics when there is none.
    pub fn event(&self, kind: &str) -> &Value {
        self.events
            .iter()
            .find(|e| e["type"] == kind)
            .unwrap_or_else(|| panic!("no {kind} event in {:?}", self.events))
    }
}

struct StoredCustomer {
    object: Value,
    searchable: bool,
}

enum Idempotency {
    InProgress,
    Done { fingerprint: String, reply: Reply },
}

#[derive(Clone)]
struct Reply {
    status: u16,
    body: Value,
    headers: Vec<(&'static str, String)>,
}

/// A Stripe error; `kind` is the body's `type`.
struct ApiError {
    status: u16,
    kind: &'static str,
    message: String,
    param: Option<String>,
    code: Option<&'static str>,
}

type Params = [(String, String)];

impl FakeStripe {
    /// Binds 127.0.0.1:0 and spawns the accept loop; the socket is listening on return.
    pub async fn start() -> FakeStripe {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake stripe");
        let addr = listener.local_addr().expect("fake stripe addr");
        let shared = Arc::new(Shared {
            connections: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            most_in_flight: AtomicUsize::new(0),
            state: Mutex::new(State::default()),
        });
        let task = tokio::spawn(accept_loop(listener, shared.clone()));
        FakeStripe { addr, shared, task }
    }

    /// The base URL, for `stripe.api_base` (async-stripe's own client wants a trailing `/`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request received, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.lock().requests.clone()
    }

    /// TCP connections accepted so far.
    /// The most requests that were ever being answered at once.
    pub fn most_in_flight(&self) -> usize {
        self.shared.most_in_flight.load(Ordering::SeqCst)
    }

    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Seeds a price that line items may name.
    pub fn add_price(&self, id: &str, recurring: bool) {
        self.shared.lock().prices.insert(id.into(), recurring);
    }

    /// Seeds a customer, searchable at once (it predates the test).
    pub fn add_customer(&self, id: &str, email: Option<&str>, metadata: &[(&str, &str)]) {
        let metadata = metadata
            .iter()
            .map(|(k, v)| (k.to_string(), Value::from(*v)))
            .collect();
        let object = customer_object(id, email, None, None, metadata, false);
        let mut state = self.shared.lock();
        state.customers.retain(|c| c.object["id"] != id);
        state.customers.push(StoredCustomer {
            object,
            searchable: true,
        });
    }

    /// Every customer, seeded and created, in creation order.
    pub fn customers(&self) -> Vec<Value> {
        let state = self.shared.lock();
        state.customers.iter().map(|c| c.object.clone()).collect()
    }

    /// Queues faults: each request whose path starts with `path_prefix`
    /// consumes the next one (when several prefixes match, the one registered
    /// first that still has faults).
    pub fn fault(&self, path_prefix: &str, faults: Vec<Fault>) {
        let mut state = self.shared.lock();
        match state.faults.iter_mut().find(|(p, _)| p == path_prefix) {
            Some((_, queue)) => queue.extend(faults),
            None => state.faults.push((path_prefix.into(), faults.into())),
        }
    }

    /// Seeds a subscription of `customer` (which must exist) with one item
    /// per price, quantity 1, and returns its `sub_...` id. Unknown prices
    /// are created as recurring ones. `trialing` gets a 14-day trial from
    /// now; `canceled` is canceled at creation. Each subscription is
    /// `created` a second after the one before, so the last one seeded is
    /// the most recently created.
    pub fn add_subscription(&self, customer: &str, prices: &[&str], status: &str) -> String {
        assert!(
            SUBSCRIPTION_STATUSES.contains(&status),
            "not a subscription status: {status}"
        );
        let mut state = self.shared.lock();
        assert!(
            state.customer(customer).is_some(),
            "add customer {customer} before its subscriptions"
        );
        let items: Vec<(String, u64)> = prices.iter().map(|p| (p.to_string(), 1)).collect();
        for (price, _) in &items {
            state.prices.entry(price.clone()).or_insert(true);
        }
        let mut subscription = state.new_subscription(customer, &items, Default::default(), false);
        let created = subscription["created"].clone();
        match status {
            "trialing" => {
                subscription["trial_start"] = created.clone();
                subscription["trial_end"] =
                    json!(created.as_u64().unwrap_or_default() + SEEDED_TRIAL);
            }
            "canceled" => {
                for field in ["canceled_at", "ended_at"] {
                    subscription[field] = created.clone();
                }
            }
            _ => {}
        }
        subscription["status"] = json!(status);
        let id = subscription["id"].as_str().unwrap_or_default().to_string();
        state.subscriptions.push(subscription);
        id
    }

    /// Changes a subscription in place (any field, `created` included) and
    /// returns it as it is now, ready for [`FakeStripe::event`].
    pub fn update_subscription(&self, id: &str, change: impl FnOnce(&mut Value)) -> Value {
        let mut state = self.shared.lock();
        let subscription = state
            .subscriptions
            .iter_mut()
            .find(|s| s["id"] == id)
            .unwrap_or_else(|| panic!("no subscription {id}"));
        change(subscription);
        subscription.clone()
    }

    /// Sets `status` and returns the subscription; `canceled` is
    /// [`FakeStripe::cancel_subscription`].
    pub fn set_subscription_status(&self, id: &str, status: &str) -> Value {
        assert!(
            SUBSCRIPTION_STATUSES.contains(&status),
            "not a subscription status: {status}"
        );
        if status == "canceled" {
            return self.cancel_subscription(id);
        }
        self.update_subscription(id, |s| s["status"] = json!(status))
    }

    /// Schedules (or unschedules) cancellation at the end of the current
    /// period as Stripe records it: `cancel_at` is the period end and
    /// `canceled_at` the time of the request.
    pub fn set_cancel_at_period_end(&self, id: &str, cancel: bool) -> Value {
        self.update_subscription(id, |s| {
            s["cancel_at_period_end"] = json!(cancel);
            s["cancel_at"] = match cancel {
                true => s["items"]["data"][0]["current_period_end"].clone(),
                false => Value::Null,
            };
            s["canceled_at"] = if cancel { json!(now()) } else { Value::Null };
        })
    }

    /// Sets `trial_end` (and `trial_start`, to `created`, when there was
    /// none); `None` clears both.
    pub fn set_trial_end(&self, id: &str, trial_end: Option<u64>) -> Value {
        self.update_subscription(id, |s| {
            s["trial_end"] = json!(trial_end);
            if trial_end.is_none() {
                s["trial_start"] = Value::Null;
            } else if s["trial_start"].is_null() {
                s["trial_start"] = s["created"].clone();
            }
        })
    }

    /// Cancels now: status `canceled`, `canceled_at` and `ended_at` now.
    pub fn cancel_subscription(&self, id: &str) -> Value {
        self.update_subscription(id, |s| {
            let now = now();
            s["status"] = json!("canceled");
            s["canceled_at"] = json!(now);
            s["ended_at"] = json!(now);
            s["cancellation_details"]["reason"] = json!("cancellation_requested");
        })
    }

    /// A subscription as Stripe returns it; panics when there is none.
    pub fn subscription(&self, id: &str) -> Value {
        let state = self.shared.lock();
        let found = state.subscriptions.iter().find(|s| s["id"] == id);
        found
            .cloned()
            .unwrap_or_else(|| panic!("no subscription {id}"))
    }

    /// Every subscription, in creation order.
    pub fn subscriptions(&self) -> Vec<Value> {
        self.shared.lock().subscriptions.clone()
    }

    /// Replaces the customer's active entitlements: one per lookup key, in
    /// this order, each for a feature whose id is the same for every customer.
    pub fn set_entitlements(&self, customer: &str, lookup_keys: &[&str]) {
        let mut state = self.shared.lock();
        let entitlements = lookup_keys
            .iter()
            .map(|key| {
                let feature = state
                    .features
                    .entry(key.to_string())
                    .or_insert_with(|| format!("feat_test_{}", random_id(32)))
                    .clone();
                let mut entitlement = fixture(ACTIVE_ENTITLEMENT);
                for (field, value) in [
                    ("id", json!(format!("ent_test_{}", random_id(32)))),
                    ("feature", json!(feature)),
                    ("lookup_key", json!(key)),
                    ("livemode", json!(false)),
                ] {
                    entitlement[field] = value;
                }
                entitlement
            })
            .collect();
        state.entitlements.insert(customer.into(), entitlements);
    }

    /// Completes a subscription-mode Checkout Session the fake created, as
    /// a buyer paying would: the session's customer, or else a new one with
    /// the session's `customer_email` (`buyer@example.com` when the session
    /// had neither, as if typed on the page; not seen by search); an active
    /// (or, with `trial_period_days`, trialing) subscription of the
    /// session's recurring prices with its `subscription_data[metadata]`; a
    /// paid invoice; the session `complete`. Returns the ids and the events
    /// Stripe would send. Panics for an unknown, non-subscription or
    /// already completed session.
    pub fn complete_checkout(&self, session_id: &str) -> Completed {
        let mut state = self.shared.lock();
        let index = state
            .checkout_sessions
            .iter()
            .position(|s| s["id"] == session_id)
            .unwrap_or_else(|| panic!("no checkout session {session_id}"));
        let session = state.checkout_sessions[index].clone();
        assert_eq!(
            session["mode"], "subscription",
            "complete_checkout: {session_id} is not in subscription mode"
        );
        assert_eq!(
            session["status"], "open",
            "complete_checkout: {session_id} is not open"
        );
        let order = state
            .orders
            .remove(session_id)
            .expect("each session has its order");
        let live = session["livemode"].as_bool().unwrap_or_default();
        let customer = match session["customer"].as_str() {
            Some(id) => id.to_string(),
            None => {
                let email = session["customer_email"]
                    .as_str()
                    .unwrap_or("buyer@example.com");
                let id = format!("cus_{}", random_id(14));
                let object =
                    customer_object(&id, Some(email), None, None, Default::default(), live);
                state.customers.push(StoredCustomer {
                    object,
                    searchable: false,
                });
                id
            }
        };
        let email = state
            .customer(&customer)
            .map(|c| c["email"].clone())
            .unwrap_or_default();
        let recurring: Vec<(String, u64)> = order
            .items
            .iter()
            .filter(|(price, _)| state.prices.get(price).copied().unwrap_or_default())
            .cloned()
            .collect();
        let mut subscription =
            state.new_subscription(&customer, &recurring, order.subscription_metadata, live);
        if let Some(days) = order.trial_days {
            let start = subscription["created"].as_u64().unwrap_or_default();
            subscription["status"] = json!("trialing");
            subscription["trial_start"] = json!(start);
            subscription["trial_end"] = json!(start + days * DAY);
        }
        let invoice = invoice_object(&subscription, &email, order.trial_days.is_some());
        subscription["latest_invoice"] = invoice["id"].clone();
        let session = {
            let session = &mut state.checkout_sessions[index];
            let paid = match order.trial_days {
                Some(_) => "no_payment_required",
                None => "paid",
            };
            for (field, value) in [
                ("status", json!("complete")),
                ("payment_status", json!(paid)),
                ("customer", json!(customer)),
                ("subscription", subscription["id"].clone()),
                ("invoice", invoice["id"].clone()),
                ("url", Value::Null),
                ("collected_information", Value::Null),
            ] {
                session[field] = value;
            }
            session["customer_details"]["email"] = email;
            session.clone()
        };
        let (subscription_id, invoice_id) = (
            subscription["id"].as_str().unwrap_or_default().to_string(),
            invoice["id"].as_str().unwrap_or_default().to_string(),
        );
        let events = vec![
            state.new_event("checkout.session.completed", session.clone()),
            state.new_event("customer.subscription.created", subscription.clone()),
            state.new_event("invoice.paid", invoice.clone()),
        ];
        state.subscriptions.push(subscription);
        state.invoices.push(invoice);
        Completed {
            session,
            customer,
            subscription: subscription_id,
            invoice: invoice_id,
            events,
        }
    }

    /// A Stripe event of type `kind` about `object` (a fresh `evt_` id, now,
    /// [`API_VERSION`]), also served at `GET /v1/events/{id}`. Build it from
    /// the object as it is now, e.g. `event("customer.subscription.updated",
    /// fake.set_cancel_at_period_end(&id, true))`.
    pub fn event(&self, kind: &str, object: Value) -> Value {
        self.shared.lock().new_event(kind, object)
    }
}

impl Drop for FakeStripe {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Shared {
    /// Poison is ignored so one panicking test request does not hide the rest.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    // Connections live in this JoinSet so aborting the loop also closes them.
    let mut conns = JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let index = shared.connections.fetch_add(1, Ordering::SeqCst);
        while conns.try_join_next().is_some() {}
        let shared = shared.clone();
        conns.spawn(async move {
            let reset = Arc::new(Notify::new());
            let svc = {
                let reset = reset.clone();
                service_fn(move |req| serve(shared.clone(), index, req, reset.clone()))
            };
            let conn = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), svc);
            // Dropping the connection closes the socket with the request unanswered.
            tokio::select! {
                _ = conn => {}
                _ = reset.notified() => {}
            }
        });
    }
}

async fn serve(
    shared: Arc<Shared>,
    connection: usize,
    req: Request<Incoming>,
    reset: Arc<Notify>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let _in_flight = InFlight::new(&shared);
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let content_type = parts
        .headers
        .get(hyper::header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let is_form = content_type
        .as_deref()
        .is_some_and(|t| t.starts_with("application/x-www-form-urlencoded"));
    let recorded = Recorded {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        query: decode(parts.uri.query().unwrap_or("").as_bytes()),
        form: if is_form { decode(&body) } else { Vec::new() },
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| {
                let value = String::from_utf8_lossy(v.as_bytes()).into_owned();
                (n.as_str().to_string(), value)
            })
            .collect(),
        connection,
    };
    let bad_type = (!body.is_empty() && !is_form).then(|| content_type.unwrap_or_default());
    let fault = {
        let mut state = shared.lock();
        state.requests.push(recorded.clone());
        state.next_fault(&recorded.path)
    };
    let reply = match fault {
        Some(Fault::Reset) => {
            reset.notify_one();
            return std::future::pending().await;
        }
        Some(Fault::Malformed) => {
            let cut = Bytes::from_static(b"{\"id\": \"cs_test_cut");
            let mut response = Response::new(Full::new(cut));
            response.headers_mut().insert(
                "content-type",
                http::HeaderValue::from_static("application/json"),
            );
            return Ok(response);
        }
        Some(Fault::Status {
            status,
            should_retry,
            error_type,
            message,
        }) => {
            let body = json!({ "error": { "type": error_type, "message": message } });
            let headers = should_retry
                .map(|r| vec![("stripe-should-retry", r.to_string())])
                .unwrap_or_default();
            Reply {
                status,
                body,
                headers,
            }
        }
        other => {
            let delay = match other {
                Some(Fault::Delay(d)) => Some(d),
                _ => None,
            };
            // Its own task, so the work finishes even if the client hangs up, as at Stripe.
            tokio::spawn(handle(shared, recorded, bad_type, delay))
                .await
                .unwrap_or_else(|e| {
                    let message = format!("the fake Stripe handler failed: {e}");
                    reply_err(api_error(500, "api_error", message, None, None))
                })
        }
    };
    Ok(into_response(reply))
}

fn decode(bytes: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(bytes).into_owned().collect()
}

fn into_response(reply: Reply) -> Response<Full<Bytes>> {
    let mut builder = Response::builder()
        .status(StatusCode::from_u16(reply.status).expect("a valid status"))
        .header("content-type", "application/json")
        .header("request-id", format!("req_{}", random_id(14)));
    for (name, value) in reply.headers {
        builder = builder.header(name, value);
    }
    let body = serde_json::to_vec_pretty(&reply.body).expect("JSON");
    builder
        .body(Full::new(Bytes::from(body)))
        .expect("response")
}

/// Auth, idempotency, the optional delay, then the endpoint.
async fn handle(
    shared: Arc<Shared>,
    rec: Recorded,
    bad_type: Option<String>,
    delay: Option<Duration>,
) -> Reply {
    let key = match authenticate(&rec) {
        Ok(key) => key,
        Err(e) => return reply_err(e),
    };
    if let Some(t) = bad_type {
        let message = format!("Invalid request: unsupported Content-Type {t}. If error persists and you need assistance, please contact support@stripe.com.");
        return reply_err(invalid(message, None, None));
    }
    let live = key.starts_with("sk_live_");
    // Stripe merges query parameters into a POST's parameters.
    let params: Vec<(String, String)> = match rec.method.as_str() {
        "POST" => rec.query.iter().chain(&rec.form).cloned().collect(),
        _ => rec.query.clone(),
    };
    let idempotency = match rec.header("idempotency-key") {
        Some(k) if rec.method == "POST" => Some((key, k.to_string())),
        _ => None,
    };
    let fingerprint = format!("{} {} {:?}", rec.method, rec.path, params);
    if let Some(id) = &idempotency {
        let mut state = shared.lock();
        match state.idempotency.get(id) {
            Some(Idempotency::InProgress) => {
                let message = format!("There is currently another in-progress request using this Idempotent Key (that probably means you submitted twice, and the other request is still going through): {}. Please try again later.", id.1);
                let code = Some("idempotency_key_in_use");
                return reply_err(api_error(409, "idempotency_error", message, None, code));
            }
            Some(Idempotency::Done {
                fingerprint: saved,
                reply,
            }) => {
                if *saved != fingerprint {
                    let message = format!("Keys for idempotent requests can only be used with the same parameters they were first used with. Try using a key other than '{}' if you meant to execute a different request.", id.1);
                    return reply_err(api_error(400, "idempotency_error", message, None, None));
                }
                let mut reply = reply.clone();
                reply.headers.push(("idempotent-replayed", "true".into()));
                return reply;
            }
            None => {
                state
                    .idempotency
                    .insert(id.clone(), Idempotency::InProgress);
            }
        }
    }
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }
    let mut state = shared.lock();
    let mut reply = match state.route(&rec.method, &rec.path, &params, live) {
        Ok(body) => Reply {
            status: 200,
            body,
            headers: Vec::new(),
        },
        Err(e) => reply_err(e),
    };
    if let Some(id) = idempotency {
        reply.headers.push(("idempotency-key", id.1.clone()));
        // Stripe saves only requests that ran; a refused one may be retried afresh.
        if reply.status == 200 {
            let done = Idempotency::Done {
                fingerprint,
                reply: reply.clone(),
            };
            state.idempotency.insert(id, done);
        } else {
            state.idempotency.remove(&id);
        }
    }
    reply
}

/// The secret key from `Authorization: Bearer`, or Stripe's 401/403.
fn authenticate(rec: &Recorded) -> Result<String, ApiError> {
    let Some(value) = rec.header("authorization") else {
        let message = "You did not provide an API key. You need to provide your API key in the Authorization header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY'). See https://stripe.com/docs/api#authentication for details, or we can help at https://support.stripe.com/.";
        return Err(api_error(
            401,
            "invalid_request_error",
            message.into(),
            None,
            None,
        ));
    };
    let key = value.strip_prefix("Bearer ").unwrap_or(value);
    match (value.starts_with("Bearer "), key_type(key)) {
        (true, Some("sk")) => Ok(key.to_string()),
        // A restricted key is real but, in this fake, allowed nothing: Stripe's 403.
        (true, Some(_)) => {
            let message = format!("The provided key '{}' does not have the required permissions for this endpoint on account 'acct_1FakeStripe000000'. Having the 'rak_write' permission would allow this request to continue.", redact(key));
            Err(api_error(403, "invalid_request_error", message, None, None))
        }
        _ => {
            let message = format!("Invalid API Key provided: {}", redact(key));
            Err(api_error(401, "invalid_request_error", message, None, None))
        }
    }
}

/// `sk` (secret) or `rk` (restricted) for a well-formed test or live key.
fn key_type(key: &str) -> Option<&str> {
    let (kind, rest) = key.split_once('_')?;
    let rest = rest
        .strip_prefix("test_")
        .or_else(|| rest.strip_prefix("live_"))?;
    let ok = matches!(kind, "sk" | "rk")
        && !rest.is_empty()
        && rest.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    ok.then_some(kind)
}

/// Stripe's way of naming a key without revealing it: the mode prefix, stars
/// and, for long keys, the last four characters.
fn redact(key: &str) -> String {
    let prefixes = [
        "sk_test_", "sk_live_", "rk_test_", "rk_live_", "pk_test_", "pk_live_",
    ];
    let prefix = prefixes
        .iter()
        .find(|p| key.starts_with(*p))
        .copied()
        .unwrap_or("");
    let rest: Vec<char> = key[prefix.len()..].chars().collect();
    let tail = if rest.len() > 12 { 4 } else { 0 };
    let stars = "*".repeat(rest.len() - tail);
    let last: String = rest[rest.len() - tail..].iter().collect();
    format!("{prefix}{stars}{last}")
}

impl State {
    fn next_fault(&mut self, path: &str) -> Option<Fault> {
        self.faults
            .iter_mut()
            .find(|(prefix, queue)| path.starts_with(prefix.as_str()) && !queue.is_empty())
            .and_then(|(_, queue)| queue.pop_front())
    }

    fn route(
        &mut self,
        method: &str,
        path: &str,
        params: &Params,
        live: bool,
    ) -> Result<Value, ApiError> {
        match (method, path) {
            ("POST", "/v1/checkout/sessions") => self.create_checkout_session(params, live),
            ("POST", "/v1/billing_portal/sessions") => self.create_portal_session(params, live),
            ("POST", "/v1/customers") => self.create_customer(params, live),
            ("GET", "/v1/customers/search") => self.search_customers(params),
            ("GET", "/v1/subscriptions") => self.list_subscriptions(params),
            ("GET", "/v1/entitlements/active_entitlements") => {
                self.list_active_entitlements(params)
            }
            _ => match method {
                "GET" => self.retrieve(path, params),
                _ => None,
            }
            .unwrap_or_else(|| {
                let message = format!("Unrecognized request URL ({method}: {path}). Please see https://stripe.com/docs or we can help at https://support.stripe.com/.");
                Err(api_error(404, "invalid_request_error", message, None, None))
            }),
        }
    }

    fn create_checkout_session(&mut self, params: &Params, live: bool) -> Result<Value, ApiError> {
        let mut one: HashMap<&str, &str> = HashMap::new();
        let mut lines: BTreeMap<usize, (Option<&str>, Option<&str>)> = BTreeMap::new();
        let (mut metadata, mut sub_metadata) = (Vec::new(), Vec::new());
        let mut trial = None;
        for (k, v) in params {
            let Some(segments) = segments(k) else {
                return Err(unknown(k));
            };
            match segments.as_slice() {
                [name @ ("mode"
                | "success_url"
                | "cancel_url"
                | "client_reference_id"
                | "customer"
                | "customer_email"
                | "customer_creation"
                | "allow_promotion_codes")] => {
                    one.insert(*name, non_empty(k, v)?);
                }
                ["line_items", i, field @ ("price" | "quantity")] => {
                    let line = lines.entry(array_index(i, "line_items")?).or_default();
                    let value = Some(non_empty(k, v)?);
                    match *field {
                        "price" => line.0 = value,
                        _ => line.1 = value,
                    }
                }
                ["metadata", key] => metadata.push((*key, v.as_str())),
                ["subscription_data", "metadata", key] => sub_metadata.push((*key, v.as_str())),
                ["subscription_data", "trial_period_days"] => trial = Some(non_empty(k, v)?),
                ["expand", i] => expand_index(i)?,
                _ => return Err(unknown(k)),
            }
        }
        let metadata = check_metadata("metadata", &metadata)?;
        let subscription_metadata = check_metadata("subscription_data[metadata]", &sub_metadata)?;
        let mode = *one.get("mode").ok_or_else(|| missing("mode"))?;
        if !["payment", "setup", "subscription"].contains(&mode) {
            let message = "Invalid mode: must be one of payment, setup, or subscription";
            return Err(invalid(message.into(), Some("mode"), None));
        }
        let customer = one.get("customer").copied();
        let email = one.get("customer_email").copied();
        if customer.is_some() && email.is_some() {
            let message = "You may only specify one of these parameters: customer, customer_email.";
            return Err(invalid(
                message.into(),
                Some("customer"),
                Some("parameters_exclusive"),
            ));
        }
        if let Some(id) = customer {
            self.customer(id)
                .ok_or_else(|| no_such("customer", id, "customer"))?;
        }
        if let Some(email) = email {
            check_email(email, "customer_email")?;
        }
        let creation = one.get("customer_creation").copied();
        if let Some(creation) = creation {
            if !["always", "if_required"].contains(&creation) {
                let message = "Invalid customer_creation: must be one of if_required or always";
                return Err(invalid(message.into(), Some("customer_creation"), None));
            }
            if mode != "payment" {
                let message = "`customer_creation` can only be used in `payment` mode.";
                return Err(invalid(message.into(), Some("customer_creation"), None));
            }
        }
        let reference = one.get("client_reference_id").copied();
        if let Some(reference) = reference.filter(|r| r.chars().count() > 200) {
            let message = format!("Invalid string: {reference}; must be at most 200 characters");
            return Err(invalid(message, Some("client_reference_id"), None));
        }
        for name in ["success_url", "cancel_url"] {
            if let Some(url) = one.get(name) {
                check_url(url, name)?;
            }
        }
        let promotion_codes = match one.get("allow_promotion_codes") {
            Some(v) => Some(boolean(v, "allow_promotion_codes")?),
            None => None,
        };
        let trial = match trial {
            Some(v) => Some(integer(v, "subscription_data[trial_period_days]", 1, 730)?),
            None => None,
        };
        if (trial.is_some() || !sub_metadata.is_empty()) && mode != "subscription" {
            let message = format!("You can not pass `subscription_data` in `{mode}` mode.");
            return Err(invalid(message, Some("subscription_data"), None));
        }
        if mode == "setup" && !lines.is_empty() {
            let message = "You can not pass `line_items` in `setup` mode.";
            return Err(invalid(message.into(), Some("line_items"), None));
        }
        if mode != "setup" && lines.is_empty() {
            return Err(missing("line_items"));
        }
        let mut any_recurring = false;
        let mut items = Vec::new();
        for (i, (price, quantity)) in &lines {
            let param = format!("line_items[{i}][price]");
            let price = price.ok_or_else(|| missing(&param))?;
            let Some(quantity) = quantity else {
                let message = format!("Quantity is required. Add `quantity` to `line_items[{i}]`");
                let param = format!("line_items[{i}][quantity]");
                return Err(invalid(message, Some(&param), Some("parameter_missing")));
            };
            let quantity = integer(quantity, &format!("line_items[{i}][quantity]"), 1, 999_999)?;
            let recurring = *self
                .prices
                .get(price)
                .ok_or_else(|| no_such("price", price, &param))?;
            if recurring && mode == "payment" {
                let message = "You specified `payment` mode but passed a recurring price. Either switch to `subscription` mode or use only one-time prices.";
                return Err(invalid(
                    message.into(),
                    Some(&format!("line_items[{i}]")),
                    None,
                ));
            }
            any_recurring |= recurring;
            items.push((price.to_string(), quantity as u64));
        }
        if mode == "subscription" && !any_recurring {
            let message = "You must provide at least one recurring price in `subscription` mode when using prices.";
            return Err(invalid(message.into(), Some("line_items"), None));
        }
        let id = format!(
            "cs_{}_a1{}",
            if live { "live" } else { "test" },
            random_id(56)
        );
        let payment_status = match mode {
            "setup" => "no_payment_required",
            _ => "unpaid",
        };
        let mut session = fixture(CHECKOUT_SESSION);
        let now = now();
        for (field, value) in [
            ("id", json!(id)),
            (
                "url",
                json!(format!("https://checkout.stripe.com/c/pay/{id}")),
            ),
            ("mode", json!(mode)),
            ("customer", json!(customer)),
            ("customer_email", json!(email)),
            ("customer_creation", json!(creation)),
            // Filled in on completion, not at creation.
            ("customer_details", Value::Null),
            ("payment_intent", Value::Null),
            ("subscription", Value::Null),
            ("client_reference_id", json!(reference)),
            ("metadata", Value::Object(metadata)),
            ("success_url", json!(one.get("success_url"))),
            ("cancel_url", json!(one.get("cancel_url"))),
            ("allow_promotion_codes", json!(promotion_codes)),
            ("status", json!("open")),
            ("payment_status", json!(payment_status)),
            ("livemode", json!(live)),
            ("created", json!(now)),
            ("expires_at", json!(now + 24 * 3600)),
        ] {
            session[field] = value;
        }
        self.checkout_sessions.push(session.clone());
        let order = Order {
            items,
            subscription_metadata,
            trial_days: trial.map(|d| d as u64),
        };
        self.orders.insert(id, order);
        Ok(session)
    }

    fn create_portal_session(&mut self, params: &Params, live: bool) -> Result<Value, ApiError> {
        let (mut customer, mut return_url) = (None, None);
        for (k, v) in params {
            match segments(k).as_deref() {
                Some(["customer"]) => customer = Some(non_empty(k, v)?),
                Some(["return_url"]) => return_url = Some(non_empty(k, v)?),
                Some(["expand", i]) => expand_index(i)?,
                _ => return Err(unknown(k)),
            }
        }
        let customer = customer.ok_or_else(|| missing("customer"))?;
        self.customer(customer)
            .ok_or_else(|| no_such("customer", customer, "customer"))?;
        if let Some(url) = return_url {
            check_url(url, "return_url")?;
        }
        let id = format!("bps_1{}", random_id(23));
        let mut session = fixture(PORTAL_SESSION);
        for (field, value) in [
            ("id", json!(id)),
            ("customer", json!(customer)),
            ("return_url", json!(return_url)),
            (
                "url",
                json!(format!("https://billing.stripe.com/p/session/{id}")),
            ),
            // Only set when the request passes flow_data, which the fake refuses.
            ("flow", Value::Null),
            ("livemode", json!(live)),
            ("created", json!(now())),
        ] {
            session[field] = value;
        }
        self.portal_sessions.push(session.clone());
        Ok(session)
    }

    fn create_customer(&mut self, params: &Params, live: bool) -> Result<Value, ApiError> {
        let mut one: HashMap<&str, &str> = HashMap::new();
        let mut metadata = Vec::new();
        for (k, v) in params {
            match segments(k).as_deref() {
                Some([name @ ("email" | "name" | "description")]) => {
                    one.insert(*name, non_empty(k, v)?);
                }
                Some(["metadata", key]) => metadata.push((*key, v.as_str())),
                Some(["expand", i]) => expand_index(i)?,
                _ => return Err(unknown(k)),
            }
        }
        let metadata = check_metadata("metadata", &metadata)?;
        if let Some(email) = one.get("email") {
            check_email(email, "email")?;
        }
        let id = format!("cus_{}", random_id(14));
        let get = |name| one.get(name).copied();
        let object = customer_object(
            &id,
            get("email"),
            get("name"),
            get("description"),
            metadata,
            live,
        );
        // Search lags behind writes at Stripe: never seen by search here.
        self.customers.push(StoredCustomer {
            object: object.clone(),
            searchable: false,
        });
        Ok(object)
    }

    fn search_customers(&self, params: &Params) -> Result<Value, ApiError> {
        let (mut query, mut limit, mut page) = (None, 10, 0);
        for (k, v) in params {
            match segments(k).as_deref() {
                Some(["query"]) => query = Some(non_empty(k, v)?),
                Some(["limit"]) => limit = integer(non_empty(k, v)?, "limit", 1, 100)? as usize,
                Some(["page"]) => {
                    let bad = || invalid(format!("Invalid page: {v}"), Some("page"), None);
                    let offset = non_empty(k, v)?.strip_prefix("page_").ok_or_else(bad)?;
                    page = offset.parse().map_err(|_| bad())?;
                }
                Some(["expand", i]) => expand_index(i)?,
                _ => return Err(unknown(k)),
            }
        }
        let query = query.ok_or_else(|| missing("query"))?;
        let (key, value) = parse_metadata_query(query).ok_or_else(|| {
            let message = format!("Invalid query: `{query}`. This fake Stripe understands only metadata['KEY']:'VALUE' (see https://stripe.com/docs/search#search-query-language).");
            invalid(message, Some("query"), None)
        })?;
        let found: Vec<&Value> = self
            .customers
            .iter()
            .filter(|c| c.searchable && c.object["metadata"][&key] == value.as_str())
            .map(|c| &c.object)
            .collect();
        let end = (page + limit).min(found.len());
        let has_more = end < found.len();
        Ok(json!({
            "object": "search_result",
            "data": found.get(page.min(end)..end).unwrap_or_default(),
            "has_more": has_more,
            "next_page": has_more.then(|| format!("page_{end}")),
            "url": "/v1/customers/search",
        }))
    }

    /// A new subscription object (not stored yet), active, `created` a
    /// second after the previous one at least, one item per price.
    fn new_subscription(
        &mut self,
        customer: &str,
        items: &[(String, u64)],
        metadata: serde_json::Map<String, Value>,
        live: bool,
    ) -> Value {
        let created = now().max(self.last_created + 1);
        self.last_created = created;
        let id = format!("sub_1{}", random_id(23));
        let items: Vec<Value> = items
            .iter()
            .map(|(price, quantity)| {
                let recurring = self.prices.get(price).copied().unwrap_or(true);
                objects::item(
                    &id,
                    price_object(price, recurring, live),
                    *quantity,
                    created,
                )
            })
            .collect();
        objects::subscription(&id, customer, items, created, metadata, live)
    }

    /// An event (kept for `GET /v1/events/{id}`).
    fn new_event(&mut self, kind: &str, object: Value) -> Value {
        let event = objects::event(kind, object, now());
        self.events.push(event.clone());
        event
    }

    fn list_subscriptions(&self, params: &Params) -> Result<Value, ApiError> {
        let mut page = Page::default();
        let (mut customer, mut status, mut price) = (None, None, None);
        for (k, v) in params {
            let segments = segments(k).ok_or_else(|| unknown(k))?;
            if page.take(&segments, k, v)? {
                continue;
            }
            match segments.as_slice() {
                ["customer"] => customer = Some(non_empty(k, v)?),
                ["price" | "plan"] => price = Some(non_empty(k, v)?),
                ["status"] => status = Some(non_empty(k, v)?),
                _ => return Err(unknown(k)),
            }
        }
        const FILTERS: [&str; 10] = [
            "active",
            "all",
            "canceled",
            "ended",
            "incomplete",
            "incomplete_expired",
            "past_due",
            "paused",
            "trialing",
            "unpaid",
        ];
        if status.is_some_and(|s| !FILTERS.contains(&s)) {
            let message = format!(
                "Invalid status: must be one of {}, or unpaid",
                FILTERS[..9].join(", ")
            );
            return Err(invalid(message, Some("status"), None));
        }
        // Stripe's default is every subscription not canceled.
        let status_matches = |s: &str| match status {
            None => s != "canceled",
            Some("all") => true,
            Some("ended") => s == "canceled" || s == "incomplete_expired",
            Some(wanted) => s == wanted,
        };
        let keep = |s: &Value| {
            customer.is_none_or(|c| s["customer"] == c)
                && status_matches(s["status"].as_str().unwrap_or_default())
                && price.is_none_or(|p| {
                    let items = s["items"]["data"].as_array();
                    items.is_some_and(|items| items.iter().any(|i| i["price"]["id"] == p))
                })
        };
        let mut newest_first: Vec<&Value> = self.subscriptions.iter().rev().collect();
        newest_first.sort_by_key(|s| std::cmp::Reverse(s["created"].as_u64()));
        page.list(&newest_first, keep, "subscription", "/v1/subscriptions")
    }

    fn list_active_entitlements(&self, params: &Params) -> Result<Value, ApiError> {
        let mut page = Page::default();
        let mut customer = None;
        for (k, v) in params {
            let segments = segments(k).ok_or_else(|| unknown(k))?;
            if page.take(&segments, k, v)? {
                continue;
            }
            match segments.as_slice() {
                ["customer"] => customer = Some(non_empty(k, v)?),
                _ => return Err(unknown(k)),
            }
        }
        let customer = customer.ok_or_else(|| missing("customer"))?;
        let entitlements: Vec<&Value> = self
            .entitlements
            .get(customer)
            .map(|e| e.iter().collect())
            .unwrap_or_default();
        let url = "/v1/entitlements/active_entitlements";
        page.list(
            &entitlements,
            |_| true,
            "entitlements.active_entitlement",
            url,
        )
    }

    /// `GET /v1/{kind}s/{id}` for the objects the fake keeps.
    fn retrieve(&self, path: &str, params: &Params) -> Option<Result<Value, ApiError>> {
        let (kind, id, found) = if let Some(id) = id_in(path, "/v1/customers/") {
            ("customer", id, self.customer(id))
        } else if let Some(id) = id_in(path, "/v1/subscriptions/") {
            ("subscription", id, find(&self.subscriptions, id))
        } else if let Some(id) = id_in(path, "/v1/checkout/sessions/") {
            ("checkout.session", id, find(&self.checkout_sessions, id))
        } else if let Some(id) = id_in(path, "/v1/invoices/") {
            ("invoice", id, find(&self.invoices, id))
        } else if let Some(id) = id_in(path, "/v1/events/") {
            ("event", id, find(&self.events, id))
        } else {
            return None;
        };
        for (k, _) in params {
            match segments(k).as_deref() {
                Some(["expand", i]) => {
                    if let Err(e) = expand_index(i) {
                        return Some(Err(e));
                    }
                }
                _ => return Some(Err(unknown(k))),
            }
        }
        Some(found.cloned().ok_or_else(|| ApiError {
            status: 404,
            ..no_such(kind, id, "id")
        }))
    }

    fn customer(&self, id: &str) -> Option<&Value> {
        self.customers
            .iter()
            .map(|c| &c.object)
            .find(|c| c["id"] == id)
    }
}

/// `/v1/customers/{id}` with `prefix` `/v1/customers/` -> `id`.
fn id_in<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    path.strip_prefix(prefix)
        .filter(|id| !id.is_empty() && !id.contains('/'))
}

fn find<'a>(objects: &'a [Value], id: &str) -> Option<&'a Value> {
    objects.iter().find(|o| o["id"] == id)
}

/// A list request's `limit`, `starting_after` and `ending_before`.
#[derive(Default)]
struct Page<'a> {
    limit: Option<usize>,
    starting_after: Option<&'a str>,
    ending_before: Option<&'a str>,
}

impl<'a> Page<'a> {
    /// Takes a paging parameter or `expand[]` (accepted, ignored); false
    /// for any other parameter.
    fn take(&mut self, segments: &[&str], param: &str, value: &'a str) -> Result<bool, ApiError> {
        match segments {
            ["limit"] => {
                self.limit = Some(integer(non_empty(param, value)?, "limit", 1, 100)? as usize)
            }
            ["starting_after"] => self.starting_after = Some(non_empty(param, value)?),
            ["ending_before"] => self.ending_before = Some(non_empty(param, value)?),
            ["expand", i] => expand_index(i)?,
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// One page of Stripe's list object over `ordered` (every object of the
    /// kind, in list order) as far as `keep` lets through. A cursor is
    /// placed among all objects, kept or not, as at Stripe; `ending_before`
    /// gives the `limit` objects just before it, still in list order.
    fn list(
        &self,
        ordered: &[&Value],
        keep: impl Fn(&Value) -> bool,
        kind: &str,
        url: &str,
    ) -> Result<Value, ApiError> {
        let limit = self.limit.unwrap_or(10);
        let position = |param: &str, id: &str| {
            ordered
                .iter()
                .position(|o| o["id"] == id)
                .ok_or_else(|| no_such(kind, id, param))
        };
        let (data, has_more) = match (self.starting_after, self.ending_before) {
            (Some(_), Some(_)) => {
                let message =
                    "You may only specify one of these parameters: ending_before, starting_after.";
                return Err(invalid(
                    message.into(),
                    Some("ending_before"),
                    Some("parameters_exclusive"),
                ));
            }
            (None, Some(id)) => {
                let before: Vec<&Value> = ordered[..position("ending_before", id)?]
                    .iter()
                    .copied()
                    .filter(|o| keep(o))
                    .collect();
                let start = before.len().saturating_sub(limit);
                (before[start..].to_vec(), start > 0)
            }
            (after, None) => {
                let from = match after {
                    Some(id) => position("starting_after", id)? + 1,
                    None => 0,
                };
                let mut rest = ordered[from..].iter().copied().filter(|o| keep(o));
                let data: Vec<&Value> = rest.by_ref().take(limit).collect();
                (data, rest.next().is_some())
            }
        };
        Ok(json!({ "object": "list", "data": data, "has_more": has_more, "url": url }))
    }
}

/// A price built on the fixture: monthly, or one-time.
fn price_object(id: &str, recurring: bool, live: bool) -> Value {
    let product = format!("prod_{}", product_tail(id));
    objects::price(id, &product, recurring, live)
}

/// A stable product id tail per price, so two prices do not share a product.
fn product_tail(price: &str) -> String {
    let tail: String = price.chars().filter(char::is_ascii_alphanumeric).collect();
    format!("{tail:0>14}")
}

/// The paid first invoice of a new subscription (zero during a trial).
fn invoice_object(subscription: &Value, email: &Value, trial: bool) -> Value {
    let id = format!("in_1{}", random_id(23));
    let now = now();
    let sub_id = subscription["id"].clone();
    let template = fixture(INVOICE);
    let mut total = 0;
    let mut lines = Vec::new();
    for item in subscription["items"]["data"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let quantity = item["quantity"].as_i64().unwrap_or(1);
        let unit = if trial {
            0
        } else {
            item["price"]["unit_amount"].as_i64().unwrap_or_default()
        };
        let amount = unit * quantity;
        total += amount;
        let mut line = template["lines"]["data"][0].clone();
        for (field, value) in [
            ("id", json!(format!("il_1{}", random_id(23)))),
            ("invoice", json!(id)),
            ("amount", json!(amount)),
            ("subtotal", json!(amount)),
            ("quantity", json!(quantity)),
            (
                "description",
                json!(format!(
                    "{quantity} × {}",
                    item["price"]["id"].as_str().unwrap_or_default()
                )),
            ),
            ("livemode", subscription["livemode"].clone()),
            ("subscription", sub_id.clone()),
            (
                "period",
                json!({"start": item["current_period_start"], "end": item["current_period_end"]}),
            ),
            (
                "parent",
                json!({
                    "type": "subscription_item_details",
                    "invoice_item_details": null,
                    "subscription_item_details": {
                        "invoice_item": null,
                        "proration": false,
                        "proration_details": {"credited_items": null},
                        "subscription": sub_id,
                        "subscription_item": item["id"],
                    },
                }),
            ),
            (
                "pricing",
                json!({
                    "type": "price_details",
                    "price_details": {"price": item["price"]["id"], "product": item["price"]["product"]},
                    "unit_amount_decimal": unit.to_string(),
                }),
            ),
        ] {
            line[field] = value;
        }
        lines.push(line);
    }
    let mut invoice = template;
    for (field, value) in [
        ("id", json!(id)),
        ("customer", subscription["customer"].clone()),
        ("customer_email", email.clone()),
        ("livemode", subscription["livemode"].clone()),
        ("created", json!(now)),
        ("effective_at", json!(now)),
        ("period_start", json!(now)),
        ("period_end", json!(now)),
        ("billing_reason", json!("subscription_create")),
        ("status", json!("paid")),
        ("attempted", json!(true)),
        ("attempt_count", json!(1)),
        ("amount_due", json!(total)),
        ("amount_paid", json!(total)),
        ("amount_remaining", json!(0)),
        ("amount_overpaid", json!(0)),
        ("subtotal", json!(total)),
        ("subtotal_excluding_tax", json!(total)),
        ("total", json!(total)),
        ("total_excluding_tax", json!(total)),
        (
            "status_transitions",
            json!({"finalized_at": now, "marked_uncollectible_at": null, "paid_at": now, "voided_at": null}),
        ),
        (
            "lines",
            json!({"object": "list", "data": lines, "has_more": false, "url": format!("/v1/invoices/{id}/lines")}),
        ),
        (
            "parent",
            json!({
                "type": "subscription_details",
                "quote_details": null,
                "subscription_details": {"metadata": subscription["metadata"], "subscription": sub_id},
            }),
        ),
        // Kept beside `parent` because the fixture (and async-stripe) still have it.
        ("subscription", sub_id.clone()),
        (
            "number",
            json!(format!("{}-0001", random_id(8).to_uppercase())),
        ),
        (
            "hosted_invoice_url",
            json!(format!("https://invoice.stripe.com/i/{id}")),
        ),
        (
            "invoice_pdf",
            json!(format!("https://pay.stripe.com/invoice/{id}/pdf")),
        ),
    ] {
        invoice[field] = value;
    }
    for field in [
        "automatically_finalizes_at",
        "customer_shipping",
        "due_date",
        "from_invoice",
        "last_finalization_error",
        "next_payment_attempt",
        "shipping_cost",
        "shipping_details",
        "webhooks_delivered_at",
    ] {
        invoice[field] = Value::Null;
    }
    invoice
}

/// A customer built on the fixture, created now.
fn customer_object(
    id: &str,
    email: Option<&str>,
    name: Option<&str>,
    description: Option<&str>,
    metadata: serde_json::Map<String, Value>,
    live: bool,
) -> Value {
    objects::customer(id, email, name, description, metadata, live, now())
}

/// `line_items[0][price]` -> `["line_items", "0", "price"]`; `None` when the
/// brackets do not pair up.
fn segments(key: &str) -> Option<Vec<&str>> {
    let (root, mut rest) = key.split_at(key.find('[').unwrap_or(key.len()));
    if root.is_empty() || root.contains(']') {
        return None;
    }
    let mut out = vec![root];
    while !rest.is_empty() {
        let inner = rest.strip_prefix('[')?;
        let end = inner.find(']')?;
        if inner[..end].contains('[') {
            return None;
        }
        out.push(&inner[..end]);
        rest = &inner[end + 1..];
    }
    Some(out)
}

fn array_index(i: &str, root: &str) -> Result<usize, ApiError> {
    i.parse()
        .map_err(|_| invalid("Invalid array".into(), Some(root), None))
}

/// `expand[]` and `expand[N]` are both Stripe's array syntax.
fn expand_index(i: &str) -> Result<(), ApiError> {
    if i.is_empty() {
        return Ok(());
    }
    array_index(i, "expand").map(drop)
}

/// Stripe reads an empty value as "unset", which a create cannot do.
fn non_empty<'a>(param: &str, value: &'a str) -> Result<&'a str, ApiError> {
    if !value.is_empty() {
        return Ok(value);
    }
    let message = format!("You passed an empty string for '{param}'. We assume empty values are an attempt to unset a parameter; however '{param}' cannot be unset. You should remove '{param}' from your request or supply a non-empty value.");
    Err(invalid(
        message,
        Some(param),
        Some("parameter_invalid_empty"),
    ))
}

/// Stripe's limits: 50 keys, keys up to 40 characters, values up to 500.
/// Empty values are dropped (they unset a key).
fn check_metadata(
    param: &str,
    pairs: &[(&str, &str)],
) -> Result<serde_json::Map<String, Value>, ApiError> {
    if pairs.len() > 50 {
        let message = format!(
            "Metadata can have up to 50 keys, but you passed in {} keys.",
            pairs.len()
        );
        return Err(invalid(message, Some(param), None));
    }
    let mut out = serde_json::Map::new();
    for (key, value) in pairs {
        let field = format!("{param}[{key}]");
        if key.is_empty() {
            return Err(invalid("Invalid hash".into(), Some(param), None));
        }
        let key_len = key.chars().count();
        if key_len > 40 {
            let message = format!("Metadata keys can have up to 40 characters, but you passed in a key that is {key_len} characters. Invalid key: {key}");
            return Err(invalid(message, Some(&field), None));
        }
        let value_len = value.chars().count();
        if value_len > 500 {
            let message = format!("Metadata values can have up to 500 characters, but you passed in a value that is {value_len} characters. Invalid value: {value}");
            return Err(invalid(message, Some(&field), None));
        }
        if !value.is_empty() {
            out.insert(key.to_string(), Value::from(*value));
        }
    }
    Ok(out)
}

fn check_email(email: &str, param: &str) -> Result<(), ApiError> {
    let ok = email.split_once('@').is_some_and(|(local, domain)| {
        !local.is_empty()
            && !domain.contains('@')
            && domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
    }) && !email.chars().any(char::is_whitespace);
    if ok {
        return Ok(());
    }
    let message = format!("Invalid email address: {email}");
    Err(invalid(message, Some(param), Some("email_invalid")))
}

fn check_url(value: &str, param: &str) -> Result<(), ApiError> {
    let ok = url::Url::parse(value)
        .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
    if ok {
        return Ok(());
    }
    Err(invalid(
        "Not a valid URL".into(),
        Some(param),
        Some("url_invalid"),
    ))
}

fn boolean(value: &str, param: &str) -> Result<bool, ApiError> {
    value
        .parse()
        .map_err(|_| invalid(format!("Invalid boolean: {value}"), Some(param), None))
}

fn integer(value: &str, param: &str, min: i64, max: i64) -> Result<i64, ApiError> {
    let n: i64 = value.parse().map_err(|_| {
        let message = format!("Invalid integer: {value}");
        invalid(message, Some(param), Some("parameter_invalid_integer"))
    })?;
    if n < min {
        let message = format!("This value must be greater than or equal to {min}.");
        return Err(invalid(message, Some(param), None));
    }
    if n > max {
        let message = format!("This value must be less than or equal to {max}.");
        return Err(invalid(message, Some(param), None));
    }
    Ok(n)
}

/// Parses `metadata['KEY']:'VALUE'` (single or double quotes, `\` escaping
/// a quote or a backslash) and nothing else.
fn parse_metadata_query(query: &str) -> Option<(String, String)> {
    let rest = query.strip_prefix("metadata[")?;
    let (key, rest) = quoted(rest)?;
    let rest = rest.strip_prefix("]:")?;
    let (value, rest) = quoted(rest)?;
    rest.is_empty().then_some((key, value))
}

/// A quoted string at the start of `s`, unescaped, and what follows it.
fn quoted(s: &str) -> Option<(String, &str)> {
    let quote = s.chars().next().filter(|c| *c == '\'' || *c == '"')?;
    let mut out = String::new();
    let mut chars = s.char_indices().skip(1);
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => match chars.next()? {
                (_, e @ ('\'' | '"' | '\\')) => out.push(e),
                _ => return None,
            },
            c if c == quote => return Some((out, &s[i + 1..])),
            c => out.push(c),
        }
    }
    None
}

fn api_error(
    status: u16,
    kind: &'static str,
    message: String,
    param: Option<&str>,
    code: Option<&'static str>,
) -> ApiError {
    ApiError {
        status,
        kind,
        message,
        param: param.map(str::to_string),
        code,
    }
}

fn invalid(message: String, param: Option<&str>, code: Option<&'static str>) -> ApiError {
    api_error(400, "invalid_request_error", message, param, code)
}

fn unknown(param: &str) -> ApiError {
    let message = format!("Received unknown parameter: {param}");
    invalid(message, Some(param), Some("parameter_unknown"))
}

fn missing(param: &str) -> ApiError {
    let message = format!("Missing required param: {param}.");
    invalid(message, Some(param), Some("parameter_missing"))
}

fn no_such(kind: &str, id: &str, param: &str) -> ApiError {
    let message = format!("No such {kind}: '{id}'");
    invalid(message, Some(param), Some("resource_missing"))
}

fn reply_err(e: ApiError) -> Reply {
    let mut error = json!({ "type": e.kind, "message": e.message });
    if let Some(param) = e.param {
        error["param"] = json!(param);
    }
    if let Some(code) = e.code {
        error["code"] = json!(code);
        error["doc_url"] = json!(format!(
            "https://stripe.com/docs/error-codes/{}",
            code.replace('_', "-")
        ));
    }
    Reply {
        status: e.status,
        body: json!({ "error": error }),
        headers: Vec::new(),
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}
