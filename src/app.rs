//! The one request pipeline: [`State`], built once at start-up, and
//! [`handle`], which every app-port request goes through.
//!
//! `handle` settles the request id and opens the request's tracing span
//! (so every line the request causes carries `request_id`), refuses what
//! must never be proxied (`CONNECT`, two `Host` headers), matches the route
//! table once, and dispatches: a local route learns who is calling
//! ([`crate::identity`]) and goes to its billing handler
//! ([`crate::billing`]); anything else goes to the app ([`crate::proxy`]),
//! past the first matching gate ([`crate::gates`]) and with the identity
//! headers of a verified session.
//! Every failure is one [`Error`], turned into HTTP here, once. What the
//! access log needs (the request id, the action, a verified user id) rides
//! back on the response as an [`Access`] extension. This module owns no
//! sockets: `server` calls it, and tests call it with a plain request.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response, Version};
use tracing::Instrument;

use crate::account::Account;
use crate::billing::{self, Billing};
use crate::body::{self, Body};
use crate::config::Config;
use crate::config::IdentityHeaders;
use crate::customers::Customers;
use crate::error::Error;
use crate::gates::{self, Decision, Require};
use crate::http_client::https_client;
use crate::identity::{Identity, Rejection, User};
use crate::metrics::{Metrics, PROXY};
use crate::proxy::{self, Proxy};
use crate::rate_limit::RateLimit;
use crate::routes::{Action, Match, Route, RouteTable};
use crate::shared::{Kind, Shared};
use crate::stripe::{self, Stripe, StripeError};
use crate::subscriptions::Subscriptions;

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// `Allow` of a 405 to `CONNECT`: the sidecar is not a forward proxy.
const ALLOW_PROXIED: &str = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";

/// Everything built once at start-up and shared by every request.
pub struct State {
    pub config: Config,
    pub routes: RouteTable,
    pub proxy: Proxy,
    pub identity: Identity,
    pub billing: Billing,
    /// `None` when `checkout.rate_limit_per_minute` is 0.
    pub rate_limit: Option<RateLimit>,
    pub metrics: Arc<Metrics>,
    ready: AtomicBool,
}

impl State {
    /// Builds the state; inside the runtime, as it starts background work
    /// (the JWKS refresh).
    pub fn new(config: Config) -> std::io::Result<State> {
        let metrics = Arc::new(Metrics::default());
        let client = https_client(config.upstream.connect_timeout)?;
        let stripe = Stripe::new(&config.stripe, client.clone(), metrics.clone());
        let shared = Shared::start(&config.state, metrics.clone());
        let customers = Customers::new(
            &config.customers,
            client.clone(),
            config.stripe.timeout,
            shared.clone(),
            metrics.clone(),
        );
        let subscriptions = Subscriptions::new(
            &config.subscriptions,
            &config.checkout.prices,
            config.customers.cache_capacity,
            shared.clone(),
            metrics.clone(),
        );
        if let Some(shared) = &shared {
            let customers = customers.invalidator();
            let subscriptions = subscriptions.invalidator();
            shared.listen(Arc::new(move |target| match target {
                Some((Kind::Customer, user)) => customers(Some(user)),
                Some((Kind::Subscription, customer)) => subscriptions(Some(customer)),
                None => {
                    customers(None);
                    subscriptions(None);
                }
            }));
        }
        Ok(State {
            routes: RouteTable::new(config.routes.clone()),
            proxy: Proxy::new(
                &config.upstream,
                config.server.trusted_proxies.clone(),
                config.identity_headers.names().cloned().collect(),
                metrics.clone(),
            ),
            identity: Identity::new(&config.auth, client),
            billing: Billing {
                stripe,
                customers,
                subscriptions,
                checkout: config.checkout.clone(),
                webhooks: config.stripe.clone(),
                metadata_key: config.customers.metadata_key.clone(),
                bodies: body::Reader::new(config.server.body_timeout),
            },
            rate_limit: config.checkout.rate_limit_per_minute.map(RateLimit::new),
            metrics,
            ready: AtomicBool::new(false),
            config,
        })
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }
}

/// What the access log and the request metrics say of a request, handed
/// from [`handle`] to the server on the response.
#[derive(Debug, Clone)]
pub struct Access {
    pub request_id: HeaderValue,
    /// The route's action, or `proxy`.
    pub action: &'static str,
    /// Only ever from a verified token.
    pub user_id: Option<String>,
}

/// Answers one request from `peer`.
pub async fn handle(state: &State, mut request: Request<Body>, peer: SocketAddr) -> Response<Body> {
    let request_id = request_id(request.headers().get(X_REQUEST_ID));
    request
        .headers_mut()
        .insert(X_REQUEST_ID, request_id.clone());
    let span = tracing::info_span!(
        "request",
        request_id = request_id.to_str().unwrap_or_default()
    );
    async move {
        let (action, user_id, result) = dispatch(state, request, peer).await;
        let mut response = result.unwrap_or_else(|error| {
            if let Error::Rejected(rejection) = &error {
                state.metrics.rejected(*rejection);
            }
            error.into_response()
        });
        response
            .headers_mut()
            .insert(X_REQUEST_ID, request_id.clone());
        response.extensions_mut().insert(Access {
            request_id,
            action,
            user_id,
        });
        response
    }
    .instrument(span)
    .await
}

/// The route's action, the verified user (if any) and the outcome.
async fn dispatch(
    state: &State,
    request: Request<Body>,
    peer: SocketAddr,
) -> (&'static str, Option<String>, Result<Response<Body>, Error>) {
    if request.method() == Method::CONNECT {
        let refused = Error::MethodNotAllowed {
            allow: ALLOW_PROXIED,
        };
        return (PROXY, None, Err(refused));
    }
    // RFC 9112 3.2: an HTTP/1.1 request has exactly one Host.
    let hosts = request.headers().get_all(header::HOST).iter().count();
    let host_problem = match hosts {
        0 if request.version() == Version::HTTP_11 => Some("Request has no Host header"),
        0 | 1 => None,
        _ => Some("Request has more than one Host header"),
    };
    if let Some(problem) = host_problem {
        return (PROXY, None, Err(Error::BadRequest(problem.into())));
    }
    match state.routes.find(request.method(), request.uri().path()) {
        Match::Local { route, params } => {
            let action = route.action.as_str();
            let (user, result) = local(state, route, params, request, peer).await;
            (action, user, result)
        }
        Match::WrongMethod { route } => (
            route.action.as_str(),
            None,
            Err(Error::MethodNotAllowed {
                allow: route.action.method(),
            }),
        ),
        Match::NotFound => (PROXY, None, Err(Error::NotFound)),
        Match::Proxy => {
            let (user, result) = proxied(state, request, peer).await;
            (PROXY, user, result)
        }
    }
}

/// A request for the app: the first gate matching its path decides
/// whether it goes on, and a verified session's identity headers go with
/// it. Without gates and identity headers, no token is even read.
async fn proxied(
    state: &State,
    request: Request<Body>,
    peer: SocketAddr,
) -> (Option<String>, Result<Response<Body>, Error>) {
    let gate = gates::find(&state.config.gates, request.uri().path());
    let wanted = &state.config.identity_headers;
    if gate.is_none() && wanted.names().next().is_none() {
        return (None, state.proxy.forward(request, peer, Vec::new()).await);
    }
    let session = state.identity.session(request.headers()).await;
    let user = session.as_ref().ok().cloned().flatten();
    let needs_state = wanted.need_subscription()
        || gate.is_some_and(|gate| gate.require == Require::Subscription);
    let mut account = match &user {
        Some(user) if needs_state || wanted.need_customer() => {
            Some(state.billing.account(&user.id, needs_state).await)
        }
        _ => None,
    };
    let user_id = user.as_ref().map(|user| user.id.clone());
    if let Some(gate) = gate {
        let decision = match &session {
            Err(_) => Decision::InvalidSession,
            Ok(None) => Decision::NoSession,
            Ok(Some(_)) => {
                let known = account.as_ref().and_then(|a| a.as_ref().ok());
                gate.decide(known, state.billing.subscriptions.subscribed_statuses())
            }
        };
        state.metrics.gate_decision(decision);
        if decision != Decision::Allowed {
            let error = match (decision, session) {
                (Decision::InvalidSession, Err(rejection)) => rejection.into(),
                (Decision::NoSession, _) => Rejection::NotSignedIn.into(),
                (Decision::NotSubscribed, _) => Error::NotSubscribed,
                (Decision::Unavailable, _) => match account.take() {
                    Some(Err(error)) => error,
                    _ => Error::LookupUnavailable("no subscription state".into()),
                },
                _ => Error::PlanNotIncluded,
            };
            let browser = request
                .headers()
                .get_all(header::ACCEPT)
                .iter()
                .any(|accept| accept.to_str().is_ok_and(|a| a.contains("text/html")));
            let redirect = gate
                .redirect
                .as_deref()
                .filter(|_| browser && decision != Decision::Unavailable)
                .and_then(|to| HeaderValue::from_str(to).ok());
            return (user_id, Err(redirect.map_or(error, Error::SeeOther)));
        }
    }
    let identity = match &user {
        Some(user) => identity_headers(wanted, user, account.as_ref()),
        None => Vec::new(),
    };
    (user_id, state.proxy.forward(request, peer, identity).await)
}

/// The identity headers for a verified `user`: user headers from the
/// token; customer and subscription headers from `account` (`None` when
/// not needed; an error reads as status `unknown`). A value that cannot be
/// a header value is left out.
fn identity_headers(
    wanted: &IdentityHeaders,
    user: &User,
    account: Option<&Result<Account, Error>>,
) -> Vec<(HeaderName, HeaderValue)> {
    let known = account.and_then(|a| a.as_ref().ok());
    let features = known.map(|a| a.state.features.join(","));
    let status = match account {
        Some(Ok(account)) => Some(account.status()),
        Some(Err(_)) => Some("unknown"),
        None => None,
    };
    [
        (&wanted.user_id, Some(user.id.as_str())),
        (&wanted.email, user.email.as_deref()),
        (&wanted.customer, known.and_then(|a| a.customer.as_deref())),
        (&wanted.subscription_status, status),
        (&wanted.plan, known.and_then(Account::plan)),
        (&wanted.features, features.as_deref()),
    ]
    .into_iter()
    .filter_map(|(name, value)| {
        let value = HeaderValue::from_str(value?).ok()?;
        Some((name.clone()?, value))
    })
    .collect()
}

/// A local route: a webhook needs no caller; checkout and portal are
/// rate-limited by client IP, learn who is calling, read the bounded body,
/// and go to their handler.
async fn local(
    state: &State,
    route: &Route,
    params: Vec<(String, String)>,
    request: Request<Body>,
    peer: SocketAddr,
) -> (Option<String>, Result<Response<Body>, Error>) {
    if route.action == Action::Webhook {
        let result = billing::webhook::handle(&state.billing, &state.proxy, route, request, peer);
        return (None, result.await);
    }
    let limited = matches!(route.action, Action::Checkout | Action::Portal);
    if let Some(limit) = state.rate_limit.as_ref().filter(|_| limited) {
        let trusted = &state.config.server.trusted_proxies;
        let client = proxy::client_ip(request.headers(), peer.ip(), trusted);
        if let Err(retry_after) = limit.check(client).await {
            state.metrics.rate_limited(route.action);
            return (None, Err(Error::RateLimited { retry_after }));
        }
    }
    let caller = match state.identity.caller(request.headers(), route.action).await {
        Ok(caller) => caller,
        Err(rejection) => return (None, Err(rejection.into())),
    };
    let user = caller.user_id().map(str::to_string);
    let result = async {
        let (parts, body) = request.into_parts();
        let limit = state.config.server.max_body_bytes;
        let body = state
            .billing
            .bodies
            .read(&parts.headers, body, limit)
            .await?;
        let request = Request::from_parts(parts, body);
        // However many Stripe calls the request makes, it ends in time.
        let budget = stripe::request_budget(&state.config.stripe);
        let answer = state.billing.answer(route, params, &caller, request);
        let response = tokio::time::timeout(budget, answer).await.map_err(|_| {
            Error::Stripe(StripeError::Unavailable(format!(
                "no answer within the request's budget ({budget:?})"
            )))
        })??;
        Ok(response.map(body::full))
    };
    (user, result.await)
}

/// The client's `X-Request-Id` when it is 1 to 128 of `A-Za-z0-9._-`,
/// else a new one.
pub(crate) fn request_id(given: Option<&HeaderValue>) -> HeaderValue {
    let valid = |v: &&HeaderValue| {
        (1..=128).contains(&v.len())
            && v.as_bytes()
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    };
    match given.filter(valid) {
        Some(id) => id.clone(),
        None => {
            let id = uuid::Uuid::new_v4().hyphenated().to_string();
            HeaderValue::from_str(&id).unwrap_or(HeaderValue::from_static("unknown"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use serde_json::json;

    fn state(config: &str) -> State {
        State::new(Config::parse(config, &|_| None).unwrap()).unwrap()
    }

    fn peer() -> SocketAddr {
        "127.0.0.1:4000".parse().unwrap()
    }

    fn post(path: &str, headers: &[(&str, &str)], body: &'static str) -> Request<Body> {
        let mut request = Request::post(path).header("host", "app.example");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.body(body::full(body)).unwrap()
    }

    async fn json_of(response: Response<Body>) -> serde_json::Value {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    /// The pipeline is a plain function: called here with no server and
    /// no socket.
    #[tokio::test]
    async fn a_portal_request_walks_the_pipeline_without_a_socket() {
        let state = state("[auth]\nhs256_secret = \"s3cret\"\n");
        let token = jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &json!({"sub": "u1", "role": "authenticated", "aud": "authenticated", "exp": 4102444800u64}),
            &jsonwebtoken::EncodingKey::from_secret(b"s3cret"),
        )
        .unwrap();
        let anonymous = handle(&state, post("/api/stripe/create-portal", &[], "{}"), peer()).await;
        assert_eq!(anonymous.status(), 401);
        let access = anonymous.extensions().get::<Access>().unwrap().clone();
        assert_eq!((access.action, access.user_id), ("portal", None));
        assert_eq!(json_of(anonymous).await, json!({"error": "Not signed in"}));

        let bearer = format!("Bearer {token}");
        let request = post(
            "/api/stripe/create-portal",
            &[("authorization", &bearer), ("x-request-id", "req-1")],
            "{}",
        );
        let signed_in = handle(&state, request, peer()).await;
        assert_eq!(signed_in.status(), 503, "no stripe.secret_key");
        assert_eq!(signed_in.headers()["x-request-id"], "req-1");
        let access = signed_in.extensions().get::<Access>().unwrap();
        assert_eq!(access.user_id.as_deref(), Some("u1"));
    }

    #[tokio::test]
    async fn connect_and_two_hosts_are_refused_before_routing() {
        let state = state("");
        let connect = Request::builder()
            .method(Method::CONNECT)
            .uri("evil.example:443")
            .body(body::full(""))
            .unwrap();
        let response = handle(&state, connect, peer()).await;
        assert_eq!(response.status(), 405);
        assert!(response.headers().contains_key(header::ALLOW));
        let two_hosts = post("/echo", &[("host", "a.example"), ("host", "b.example")], "");
        assert_eq!(handle(&state, two_hosts, peer()).await.status(), 400);
    }

    #[test]
    fn request_ids_are_kept_only_when_safe() {
        let id = |given: &str| request_id(Some(&HeaderValue::from_str(given).unwrap()));
        for kept in ["abc", "A-1_b.2", &"x".repeat(128)] {
            assert_eq!(id(kept), kept);
        }
        for replaced in ["", "has space", "a/b", "é", &"x".repeat(129), "a\"b"] {
            let new = HeaderValue::from_bytes(replaced.as_bytes())
                .map(|v| request_id(Some(&v)))
                .unwrap_or_else(|_| request_id(None));
            assert_ne!(new, replaced);
            assert_eq!(new.len(), 36, "a UUID");
        }
        assert_ne!(request_id(None), request_id(None));
    }
}
