//! The fake Stripe's own tests for what the subscription features rely on:
//! every object it answers with deserializes with async-stripe's own types
//! (fetched with async-stripe's own client and request builders, as the
//! sidecar fetches them), the list filters and paging behave as Stripe's,
//! unknown parameters are refused, and webhook signing matches a known
//! vector and the sidecar's verification.

use std::marker::PhantomData;

use serde_json::{json, Value};
use stripe::{Client, ClientBuilder, StripeRequest};
use stripe_billing::subscription::{
    ListSubscription, ListSubscriptionStatus, RetrieveSubscription,
};
use stripe_billing::{Invoice, SubscriptionStatus};
use stripe_checkout::checkout_session::RetrieveCheckoutSession;
use stripe_checkout::{CheckoutSessionPaymentStatus, CheckoutSessionStatus};
use stripe_client_core::{RequestBuilder, StripeMethod};
use stripe_core::{Event, EventType};
use stripe_misc::entitlements_active_entitlement::ListEntitlementsActiveEntitlement;

use crate::support::app::FakeApp;
use crate::support::events;
use crate::support::raw;
use crate::support::sidecar::Sidecar;
use crate::support::stripe::{FakeStripe, API_VERSION};

const KEY: &str = "sk_test_fake_stripe_self_test";

/// async-stripe's own client, pointed at the fake.
fn client(fake: &FakeStripe) -> Client {
    ClientBuilder::new(KEY)
        .url(format!("{}/", fake.url()))
        .build()
        .expect("client")
}

/// `GET /v1{path}` deserialized as `T`, for objects whose retrieve request
/// the enabled async-stripe features do not include (events, invoices).
struct Get<T>(String, PhantomData<T>);

impl<T> StripeRequest for Get<T> {
    type Output = T;

    fn build(&self) -> RequestBuilder {
        RequestBuilder::new(StripeMethod::Get, self.0.clone())
    }
}

fn get<T>(path: String) -> Get<T> {
    Get(path, PhantomData)
}

/// A raw GET with the test key; returns status and JSON body.
async fn raw_get(fake: &FakeStripe, target: &str) -> (u16, Value) {
    let auth = format!("Authorization: Bearer {KEY}\r\n");
    let reply = raw::request(fake.addr, "GET", target, &auth).await;
    (reply.status, reply.json())
}

/// A raw form POST with the test key; returns the JSON body, asserting 200.
async fn raw_post(fake: &FakeStripe, path: &str, form: &[(&str, &str)]) -> Value {
    let body: String = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: test.local\r\nConnection: close\r\nAuthorization: Bearer {KEY}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let reply = raw::send(fake.addr, request.as_bytes()).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.json()
}

/// A subscription-mode Checkout Session as the sidecar creates one.
async fn checkout(fake: &FakeStripe, customer: Option<&str>, extra: &[(&str, &str)]) -> String {
    fake.add_price("price_pro", true);
    let mut form = vec![
        ("mode", "subscription"),
        ("line_items[0][price]", "price_pro"),
        ("line_items[0][quantity]", "2"),
        (
            "success_url",
            "https://myapp.com/ok?session={CHECKOUT_SESSION_ID}",
        ),
        ("cancel_url", "https://myapp.com/cancel"),
        ("client_reference_id", "user_1"),
        ("metadata[user_id]", "user_1"),
        ("subscription_data[metadata][user_id]", "user_1"),
    ];
    match customer {
        Some(id) => form.push(("customer", id)),
        None => form.push(("customer_email", "buyer@myapp.com")),
    }
    form.extend_from_slice(extra);
    let session = raw_post(fake, "/v1/checkout/sessions", &form).await;
    session["id"].as_str().unwrap().to_string()
}

fn ids<T>(data: &[T], id: impl Fn(&T) -> String) -> Vec<String> {
    data.iter().map(id).collect()
}

#[tokio::test]
async fn subscriptions_deserialize_as_async_stripe_subscriptions() {
    let fake = FakeStripe::start().await;
    fake.add_customer("cus_a", Some("a@example.com"), &[]);
    let id = fake.add_subscription("cus_a", &["price_pro", "price_seats"], "trialing");
    let client = client(&fake);

    let list = ListSubscription::new()
        .customer("cus_a")
        .status(ListSubscriptionStatus::All)
        .limit(100)
        .expand(vec!["data.items".to_string()])
        .send(&client)
        .await
        .expect("list deserializes as List<Subscription>");
    assert_eq!(list.url, "/v1/subscriptions");
    assert!(!list.has_more);
    let [sub] = &list.data[..] else {
        panic!("one subscription: {:?}", list.data)
    };
    assert_eq!(sub.id.as_str(), id);
    assert_eq!(sub.customer.id().as_str(), "cus_a");
    assert_eq!(sub.status, SubscriptionStatus::Trialing);
    assert!(!sub.cancel_at_period_end);
    assert_eq!(sub.trial_end, Some(sub.created + 14 * 24 * 3600));
    let prices = ids(&sub.items.data, |i| i.price.id.to_string());
    assert_eq!(prices, ["price_pro", "price_seats"]);
    for item in &sub.items.data {
        assert_eq!(item.current_period_start, sub.created);
        assert_eq!(item.current_period_end, sub.created + 30 * 24 * 3600);
        assert!(item.price.recurring.is_some());
    }

    let one = RetrieveSubscription::new(id.as_str())
        .send(&client)
        .await
        .expect("retrieve deserializes as Subscription");
    assert_eq!(one.id.as_str(), id);
    assert_eq!(fake.subscription(&id)["id"], id.as_str());
}

#[tokio::test]
async fn list_filters_by_customer_status_and_price_newest_first() {
    let fake = FakeStripe::start().await;
    fake.add_customer("cus_a", None, &[]);
    fake.add_customer("cus_b", None, &[]);
    let a1 = fake.add_subscription("cus_a", &["price_basic"], "active");
    let a2 = fake.add_subscription("cus_a", &["price_pro"], "canceled");
    let a3 = fake.add_subscription("cus_a", &["price_pro"], "past_due");
    let a4 = fake.add_subscription("cus_a", &["price_basic"], "incomplete_expired");
    let b1 = fake.add_subscription("cus_b", &["price_pro"], "active");
    let created: Vec<u64> = fake
        .subscriptions()
        .iter()
        .map(|s| s["created"].as_u64().unwrap())
        .collect();
    assert!(created.windows(2).all(|w| w[0] < w[1]), "{created:?}");

    let client = client(&fake);
    let list = |customer: Option<&str>, status: Option<ListSubscriptionStatus>| {
        let mut request = ListSubscription::new();
        if let Some(c) = customer {
            request = request.customer(c);
        }
        if let Some(s) = status {
            request = request.status(s);
        }
        let client = client.clone();
        async move {
            let list = request.send(&client).await.expect("list");
            ids(&list.data, |s| s.id.to_string())
        }
    };
    // Stripe's default: everything but canceled.
    assert_eq!(list(Some("cus_a"), None).await, [&*a4, &*a3, &*a1]);
    let all = Some(ListSubscriptionStatus::All);
    assert_eq!(list(Some("cus_a"), all).await, [&*a4, &*a3, &*a2, &*a1]);
    let canceled = Some(ListSubscriptionStatus::Canceled);
    assert_eq!(list(Some("cus_a"), canceled).await, [&*a2]);
    let ended = Some(ListSubscriptionStatus::Ended);
    assert_eq!(list(Some("cus_a"), ended).await, [&*a4, &*a2]);
    let active = Some(ListSubscriptionStatus::Active);
    assert_eq!(list(None, active).await, [&*b1, &*a1]);
    assert_eq!(list(None, None).await, [&*b1, &*a4, &*a3, &*a1]);
    // An unknown customer has no subscriptions (see the fake's module doc).
    assert!(list(Some("cus_nobody"), None).await.is_empty());

    let pro = ListSubscription::new()
        .price("price_pro")
        .status(ListSubscriptionStatus::All)
        .send(&client)
        .await
        .unwrap();
    assert_eq!(ids(&pro.data, |s| s.id.to_string()), [&*b1, &*a3, &*a2]);

    // A change to `created` reorders the list: newest first, by `created`.
    let old = fake.subscription(&a1)["created"].as_u64().unwrap();
    fake.update_subscription(&a3, |s| s["created"] = json!(old - 60));
    assert_eq!(list(Some("cus_a"), None).await, [&*a4, &*a1, &*a3]);
}

#[tokio::test]
async fn list_pages_with_limit_and_cursors() {
    let fake = FakeStripe::start().await;
    fake.add_customer("cus_a", None, &[]);
    let made: Vec<String> = (0..5)
        .map(|_| fake.add_subscription("cus_a", &["price_pro"], "active"))
        .collect();
    let newest_first: Vec<&String> = made.iter().rev().collect();
    let client = client(&fake);
    let page = |request: ListSubscription| {
        let client = client.clone();
        async move {
            let list = request.customer("cus_a").send(&client).await.expect("list");
            (ids(&list.data, |s| s.id.to_string()), list.has_more)
        }
    };

    let default = page(ListSubscription::new()).await;
    assert_eq!(
        default,
        (newest_first.iter().map(|s| s.to_string()).collect(), false)
    );
    let (first, more) = page(ListSubscription::new().limit(2)).await;
    assert_eq!(
        (first.iter().collect::<Vec<_>>(), more),
        (newest_first[..2].to_vec(), true)
    );
    let (second, more) = page(ListSubscription::new().limit(2).starting_after(&first[1])).await;
    assert_eq!(
        (second.iter().collect::<Vec<_>>(), more),
        (newest_first[2..4].to_vec(), true)
    );
    let (last, more) = page(ListSubscription::new().limit(2).starting_after(&second[1])).await;
    assert_eq!(
        (last.iter().collect::<Vec<_>>(), more),
        (newest_first[4..].to_vec(), false)
    );
    // Backwards: the `limit` just before the cursor, still newest first.
    let (back, more) = page(ListSubscription::new().limit(2).ending_before(&last[0])).await;
    assert_eq!((back, more), (second.clone(), true));
    let (back, more) = page(ListSubscription::new().limit(2).ending_before(&second[0])).await;
    assert_eq!((back, more), (first, false));

    for (query, message) in [
        ("limit=0", "This value must be greater than or equal to 1."),
        ("limit=101", "This value must be less than or equal to 100."),
        (
            "starting_after=sub_nope",
            "No such subscription: 'sub_nope'",
        ),
        (
            "starting_after=x&ending_before=y",
            "You may only specify one of these parameters: ending_before, starting_after.",
        ),
    ] {
        let (status, body) = raw_get(&fake, &format!("/v1/subscriptions?{query}")).await;
        assert_eq!(
            (status, body["error"]["message"].as_str()),
            (400, Some(message)),
            "{query}"
        );
    }
}

#[tokio::test]
async fn unknown_and_bad_params_are_refused_as_stripe_does() {
    let fake = FakeStripe::start().await;
    fake.add_customer("cus_a", None, &[]);
    for (target, param, message) in [
        (
            "/v1/subscriptions?customer=cus_a&colour=blue",
            "colour",
            "Received unknown parameter: colour",
        ),
        (
            "/v1/subscriptions?created[gt]=1",
            "created[gt]",
            "Received unknown parameter: created[gt]",
        ),
        (
            "/v1/subscriptions?status=gone",
            "status",
            "Invalid status: must be one of active, all, canceled, ended, incomplete, incomplete_expired, past_due, paused, trialing, or unpaid",
        ),
        (
            "/v1/entitlements/active_entitlements?customer=cus_a&feature=x",
            "feature",
            "Received unknown parameter: feature",
        ),
        (
            "/v1/entitlements/active_entitlements",
            "customer",
            "Missing required param: customer.",
        ),
        (
            "/v1/subscriptions/sub_1?limit=1",
            "limit",
            "Received unknown parameter: limit",
        ),
    ] {
        let (status, body) = raw_get(&fake, target).await;
        assert_eq!(status, 400, "{target}: {body}");
        assert_eq!(body["error"]["type"], "invalid_request_error", "{target}");
        assert_eq!(body["error"]["param"], param, "{target}");
        assert_eq!(body["error"]["message"], message, "{target}");
    }
    // `expand[]` in either array syntax is accepted and ignored.
    let (status, body) = raw_get(
        &fake,
        "/v1/subscriptions?expand[]=data.customer&expand[1]=data.items",
    )
    .await;
    assert_eq!((status, &body["object"]), (200, &json!("list")), "{body}");
    let (status, body) = raw_get(&fake, "/v1/subscriptions/sub_missing").await;
    assert_eq!(status, 404);
    assert_eq!(
        body["error"]["message"],
        "No such subscription: 'sub_missing'"
    );
    assert_eq!(body["error"]["code"], "resource_missing");
}

#[tokio::test]
async fn active_entitlements_deserialize_and_page() {
    let fake = FakeStripe::start().await;
    fake.set_entitlements("cus_a", &["api", "export", "sso"]);
    fake.set_entitlements("cus_b", &["api"]);
    let client = client(&fake);

    let list = ListEntitlementsActiveEntitlement::new("cus_a")
        .send(&client)
        .await
        .expect("deserializes as List<EntitlementsActiveEntitlement>");
    assert_eq!(list.url, "/v1/entitlements/active_entitlements");
    assert_eq!(
        ids(&list.data, |e| e.lookup_key.clone()),
        ["api", "export", "sso"]
    );
    let other = ListEntitlementsActiveEntitlement::new("cus_b")
        .send(&client)
        .await
        .unwrap();
    // One feature, one id, whoever has it.
    assert_eq!(other.data[0].feature.id(), list.data[0].feature.id());
    assert!(other.data[0]
        .feature
        .id()
        .as_str()
        .starts_with("feat_test_"));
    assert_ne!(other.data[0].id, list.data[0].id);

    let first = ListEntitlementsActiveEntitlement::new("cus_a")
        .limit(2)
        .send(&client)
        .await
        .unwrap();
    assert!(first.has_more);
    let rest = ListEntitlementsActiveEntitlement::new("cus_a")
        .limit(2)
        .starting_after(first.data[1].id.as_str())
        .send(&client)
        .await
        .unwrap();
    assert_eq!(
        (ids(&rest.data, |e| e.lookup_key.clone()), rest.has_more),
        (vec!["sso".to_string()], false)
    );

    fake.set_entitlements("cus_a", &[]);
    let none = ListEntitlementsActiveEntitlement::new("cus_a")
        .send(&client)
        .await
        .unwrap();
    assert!(none.data.is_empty());
    let unknown = ListEntitlementsActiveEntitlement::new("cus_nobody")
        .send(&client)
        .await
        .unwrap();
    assert!(unknown.data.is_empty());
}

#[tokio::test]
async fn completing_a_checkout_makes_what_stripe_makes() {
    let fake = FakeStripe::start().await;
    fake.add_customer(
        "cus_known",
        Some("known@example.com"),
        &[("user_id", "user_1")],
    );
    let session_id = checkout(&fake, Some("cus_known"), &[]).await;
    let done = fake.complete_checkout(&session_id);
    assert_eq!(done.customer, "cus_known");
    let client = client(&fake);

    let session = RetrieveCheckoutSession::new(session_id.as_str())
        .send(&client)
        .await
        .expect("deserializes as CheckoutSession");
    assert_eq!(session.status, Some(CheckoutSessionStatus::Complete));
    assert_eq!(session.payment_status, CheckoutSessionPaymentStatus::Paid);
    assert_eq!(
        session.customer.as_ref().map(|c| c.id().to_string()),
        Some(done.customer.clone())
    );
    let subscription = session.subscription.as_ref().map(|s| s.id().to_string());
    assert_eq!(subscription, Some(done.subscription.clone()));
    assert_eq!(session.client_reference_id.as_deref(), Some("user_1"));
    assert_eq!(
        session
            .metadata
            .as_ref()
            .and_then(|m| m.get("user_id"))
            .map(String::as_str),
        Some("user_1")
    );

    let sub = RetrieveSubscription::new(done.subscription.as_str())
        .send(&client)
        .await
        .unwrap();
    assert_eq!(sub.status, SubscriptionStatus::Active);
    assert_eq!(sub.customer.id().as_str(), "cus_known");
    assert_eq!(
        sub.metadata.get("user_id").map(String::as_str),
        Some("user_1")
    );
    assert_eq!(sub.items.data[0].price.id.as_str(), "price_pro");
    assert_eq!(sub.items.data[0].quantity, Some(2));
    assert_eq!(
        sub.latest_invoice
            .as_ref()
            .and_then(|i| i.id().as_ref())
            .map(|i| i.to_string()),
        Some(done.invoice.clone())
    );

    let invoice: Invoice = get(format!("/invoices/{}", done.invoice))
        .customize()
        .send(&client)
        .await
        .expect("deserializes as Invoice");
    assert_eq!(
        invoice.customer.as_ref().map(|c| c.id().to_string()),
        Some(done.customer.clone())
    );
    let parent = invoice
        .parent
        .as_ref()
        .and_then(|p| p.subscription_details.as_ref());
    assert_eq!(
        parent.map(|d| d.subscription.id().to_string()),
        Some(done.subscription.clone())
    );
    assert_eq!(invoice.amount_paid, 4000);

    let kinds: Vec<&str> = done
        .events
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "checkout.session.completed",
            "customer.subscription.created",
            "invoice.paid"
        ]
    );
    for (event, id) in done
        .events
        .iter()
        .zip([&session_id, &done.subscription, &done.invoice])
    {
        assert_eq!(&event["data"]["object"]["id"], id.as_str());
        assert_eq!(event["data"]["object"]["customer"], "cus_known");
        let typed: Event = get(format!("/events/{}", event["id"].as_str().unwrap()))
            .customize()
            .send(&client)
            .await
            .expect("deserializes as Event");
        assert_eq!(typed.api_version.as_deref(), Some(API_VERSION));
        assert_eq!(typed.type_.as_str(), event["type"]);
    }
    let completed = &done.event("checkout.session.completed")["data"]["object"];
    assert_eq!(completed["subscription"], done.subscription.as_str());
    assert_eq!(completed["client_reference_id"], "user_1");
    assert_eq!(completed["metadata"]["user_id"], "user_1");
    assert_eq!(
        done.event("invoice.paid")["data"]["object"]["subscription"],
        done.subscription.as_str()
    );
}

#[tokio::test]
async fn a_checkout_without_a_customer_gets_a_new_one_and_a_trial() {
    let fake = FakeStripe::start().await;
    let session_id = checkout(
        &fake,
        None,
        &[("subscription_data[trial_period_days]", "7")],
    )
    .await;
    let done = fake.complete_checkout(&session_id);
    let customer = fake
        .customers()
        .into_iter()
        .find(|c| c["id"] == done.customer.as_str())
        .expect("a new customer");
    assert_eq!(customer["email"], "buyer@myapp.com");
    assert_eq!(customer["metadata"], json!({}));
    assert_eq!(done.session["customer"], done.customer.as_str());
    assert_eq!(done.session["payment_status"], "no_payment_required");
    let sub = fake.subscription(&done.subscription);
    assert_eq!(sub["status"], "trialing");
    let created = sub["created"].as_u64().unwrap();
    assert_eq!(sub["trial_end"], created + 7 * 24 * 3600);
    // Search lags at Stripe: the new customer is not found yet.
    let query = "/v1/customers/search?query=metadata%5B%27user_id%27%5D%3A%27user_1%27";
    let (_, found) = raw_get(&fake, query).await;
    assert_eq!(found["data"], json!([]));
}

#[tokio::test]
async fn events_are_built_from_objects_as_they_are_now() {
    let fake = FakeStripe::start().await;
    fake.add_customer("cus_a", None, &[]);
    let id = fake.add_subscription("cus_a", &["price_pro"], "active");
    let client = client(&fake);

    let scheduled = fake.set_cancel_at_period_end(&id, true);
    let period_end = &scheduled["items"]["data"][0]["current_period_end"];
    assert_eq!(
        (&scheduled["cancel_at_period_end"], &scheduled["cancel_at"]),
        (&json!(true), period_end)
    );
    let trial = fake.set_trial_end(&id, Some(2_000_000_000));
    assert_eq!(trial["trial_end"], 2_000_000_000u64);
    assert_eq!(
        fake.set_subscription_status(&id, "past_due")["status"],
        "past_due"
    );
    let canceled = fake.cancel_subscription(&id);
    assert_eq!(canceled["status"], "canceled");
    assert!(canceled["ended_at"].is_u64() && canceled["canceled_at"].is_u64());

    let updated = fake.event("customer.subscription.updated", scheduled);
    let deleted = fake.event("customer.subscription.deleted", canceled);
    let customer = fake.customers()[0].clone();
    let gone = fake.event("customer.deleted", customer);
    assert_ne!(updated["id"], deleted["id"]);
    for (event, kind) in [
        (&updated, EventType::CustomerSubscriptionUpdated),
        (&deleted, EventType::CustomerSubscriptionDeleted),
        (&gone, EventType::CustomerDeleted),
    ] {
        let typed: Event = get(format!("/events/{}", event["id"].as_str().unwrap()))
            .customize()
            .send(&client)
            .await
            .expect("deserializes as Event");
        assert_eq!(typed.type_, kind);
        assert_eq!(typed.api_version.as_deref(), Some(API_VERSION));
    }
    // The subscription in the event deserializes too.
    let (_, listed) = raw_get(&fake, "/v1/subscriptions?status=canceled").await;
    assert_eq!(listed["data"][0], deleted["data"]["object"]);
}

#[test]
fn sign_matches_a_known_vector() {
    // Computed independently, with Python's hmac module:
    // HMAC-SHA256(b"whsec_test_secret", b'1700000000.{"id":"evt_1"}'), hex.
    let header = events::sign("whsec_test_secret", 1_700_000_000, br#"{"id":"evt_1"}"#);
    assert_eq!(
        header,
        "t=1700000000,v1=248a374f50f943a28b0f6ab50faf9a7e7e29b710fa26df9fb1618b9bf8ea9c9a"
    );
}

#[tokio::test]
async fn delivered_events_pass_the_sidecars_and_the_apps_verification() {
    const SECRET: &str = "whsec_fake_stripe_self_test";
    let app = FakeApp::start().await;
    app.set_webhook_secret(SECRET);
    let fake = FakeStripe::start().await;
    let sidecar = Sidecar::builder(&app.url())
        .set("stripe", &format!("webhook_secrets = [\"{SECRET}\"]"))
        .set("stripe", &format!("secret_key = \"{KEY}\""))
        .set("stripe", &format!("api_base = \"{}\"", fake.url()))
        .set(
            "checkout",
            "allowed_redirect_origins = [\"https://myapp.com\"]",
        )
        .set("checkout", "allow_any_price = true")
        .start()
        .await;
    fake.add_customer("cus_a", None, &[]);
    let id = fake.add_subscription("cus_a", &["price_pro"], "active");
    let created = fake.event("customer.subscription.created", fake.subscription(&id));
    let deleted = fake.event(
        "customer.subscription.deleted",
        fake.cancel_subscription(&id),
    );

    // Out of order, and one twice.
    let path = "/api/stripe/webhook";
    let replies =
        events::deliver_all(sidecar.addr, path, SECRET, [&deleted, &created, &deleted]).await;
    let statuses: Vec<u16> = replies.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200, 200, 200], "{replies:?}");
    let bodies: Vec<_> = app.webhooks().into_iter().map(|w| w.body).collect();
    let sent = [&deleted, &created, &deleted].map(events::body);
    assert_eq!(bodies, sent, "forwarded byte for byte, in order");

    let wrong = events::deliver(sidecar.addr, path, "whsec_wrong", &created).await;
    assert_eq!(
        (wrong.status, wrong.json()),
        (400, json!({"error": "Invalid Stripe signature"}))
    );
}
