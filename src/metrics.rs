//! The Prometheus families of the admin port's `/metrics`, built once at
//! start-up and shared through the sidecar's state (no global registry),
//! and every label value they take: the one list of each.
//!
//! What to count is decided where it happens; how it is named and labelled
//! is decided here. prometheus-client writes OpenMetrics only, so the
//! Prometheus text format 0.0.4 (what a scraper gets unless it asks for
//! OpenMetrics) is derived from it by [`to_prometheus_text`]: hand-written
//! because the two differ only in counter names and `# EOF`.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::gates::Decision;
use crate::identity::Rejection;
use crate::routes::Action;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    action: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabel {
    action: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StripeLabels {
    endpoint: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SyncLabels {
    trigger: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabel {
    version: &'static str,
}

/// The `action` label of a proxied request (local routes use their
/// [`crate::routes::Action`] name).
pub const PROXY: &str = "proxy";

/// How the app failed a proxied request: `kind` of
/// `stripe_sidecar_upstream_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamFailure {
    /// The app refused or did not accept the connection.
    Connect,
    /// The app failed mid-request (reset, closed early, bad reply).
    Request,
    /// No response head within `upstream.read_timeout_ms`.
    Timeout,
}

impl UpstreamFailure {
    const ALL: [UpstreamFailure; 3] = [
        UpstreamFailure::Connect,
        UpstreamFailure::Request,
        UpstreamFailure::Timeout,
    ];

    fn label(self) -> &'static str {
        match self {
            UpstreamFailure::Connect => "connect",
            UpstreamFailure::Request => "request",
            UpstreamFailure::Timeout => "timeout",
        }
    }
}

/// A Redis call that failed: `op` of `stripe_sidecar_state_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateOp {
    Connect,
    Get,
    Set,
    Publish,
    Subscribe,
}

impl StateOp {
    const ALL: [StateOp; 5] = [
        StateOp::Connect,
        StateOp::Get,
        StateOp::Set,
        StateOp::Publish,
        StateOp::Subscribe,
    ];

    fn label(self) -> &'static str {
        match self {
            StateOp::Connect => "connect",
            StateOp::Get => "get",
            StateOp::Set => "set",
            StateOp::Publish => "publish",
            StateOp::Subscribe => "subscribe",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabel {
    op: &'static str,
}

/// How one HTTP request to Stripe ended: `outcome` of
/// `stripe_sidecar_stripe_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StripeOutcome {
    Ok,
    NetworkError,
    Timeout,
    AuthError,
    Conflict,
    RateLimited,
    ServerError,
    ClientError,
}

impl StripeOutcome {
    fn label(self) -> &'static str {
        match self {
            StripeOutcome::Ok => "ok",
            StripeOutcome::NetworkError => "network_error",
            StripeOutcome::Timeout => "timeout",
            StripeOutcome::AuthError => "auth_error",
            StripeOutcome::Conflict => "conflict",
            StripeOutcome::RateLimited => "rate_limited",
            StripeOutcome::ServerError => "server_error",
            StripeOutcome::ClientError => "client_error",
        }
    }
}

/// `endpoint` of `stripe_sidecar_stripe_requests_total`, by Stripe API path
/// (after `/v1`); any other path is `other`.
const STRIPE_ENDPOINTS: [(&str, &str); 6] = [
    ("/checkout/sessions", "checkout_sessions"),
    ("/billing_portal/sessions", "billing_portal_sessions"),
    ("/customers/search", "customers_search"),
    ("/customers", "customers"),
    ("/subscriptions", "subscriptions"),
    ("/entitlements/active_entitlements", "active_entitlements"),
];

fn stripe_endpoint(path: &str) -> &'static str {
    STRIPE_ENDPOINTS
        .iter()
        .find_map(|(p, label)| (*p == path).then_some(*label))
        .unwrap_or("other")
}

/// `reason` of `stripe_sidecar_auth_rejections_total`.
fn rejection_reason(rejection: Rejection) -> &'static str {
    match rejection {
        Rejection::NotSignedIn => "no_token",
        Rejection::BadCookie => "bad_cookie",
        Rejection::Malformed => "malformed_token",
        Rejection::Algorithm => "algorithm_not_allowed",
        Rejection::UnknownKey => "unknown_kid",
        Rejection::Signature => "bad_signature",
        Rejection::Expired => "expired",
        Rejection::NotYetValid => "not_yet_valid",
        Rejection::Issuer => "wrong_issuer",
        Rejection::Audience => "wrong_audience",
        Rejection::Claims => "claims",
        Rejection::UnknownApiKey => "unknown_api_key",
        Rejection::ActionNotAllowed => "action_not_allowed",
        Rejection::NeedsApiKey => "needs_api_key",
    }
}

/// `result` of `stripe_sidecar_gate_decisions_total`.
fn gate_result(decision: Decision) -> &'static str {
    match decision {
        Decision::Allowed => "allowed",
        Decision::NoSession => "no_session",
        Decision::InvalidSession => "invalid_session",
        Decision::NotSubscribed => "not_subscribed",
        Decision::WrongPlan => "wrong_plan",
        Decision::MissingFeature => "missing_feature",
        Decision::Unavailable => "unavailable",
    }
}

/// What started a sync: `trigger` of `stripe_sidecar_subscription_syncs_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// Nothing cached, or older than the TTL.
    Miss,
    /// A verified webhook event for the customer.
    Webhook,
    /// `GET /api/stripe/subscription?refresh=true`.
    Refresh,
}

impl Trigger {
    pub const ALL: [Trigger; 3] = [Trigger::Miss, Trigger::Webhook, Trigger::Refresh];
}

/// `trigger` of `stripe_sidecar_subscription_syncs_total`.
fn sync_trigger(trigger: Trigger) -> &'static str {
    match trigger {
        Trigger::Miss => "miss",
        Trigger::Webhook => "webhook",
        Trigger::Refresh => "refresh",
    }
}

/// `outcome` of `stripe_sidecar_subscription_syncs_total`.
fn sync_outcome(ok: bool) -> &'static str {
    if ok {
        "ok"
    } else {
        "error"
    }
}

fn duration_histogram() -> Histogram {
    // 1 ms to ~33 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// Every family, registered once.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_duration: Family<ActionLabel, Histogram, fn() -> Histogram>,
    stripe_requests: Family<StripeLabels, Counter>,
    customer_cache: Family<ResultLabel, Counter>,
    auth_rejections: Family<ReasonLabel, Counter>,
    upstream_errors: Family<KindLabel, Counter>,
    rate_limited: Family<ActionLabel, Counter>,
    gate_decisions: Family<ResultLabel, Counter>,
    subscription_syncs: Family<SyncLabels, Counter>,
    state_errors: Family<OpLabel, Counter>,
    connections: Gauge,
}

impl Default for Metrics {
    /// Every family registered, known label values at 0.
    fn default() -> Metrics {
        let mut registry = Registry::with_prefix("stripe_sidecar");
        let metrics = Metrics {
            requests: Family::default(),
            request_duration: Family::new_with_constructor(duration_histogram),
            stripe_requests: Family::default(),
            customer_cache: Family::default(),
            auth_rejections: Family::default(),
            upstream_errors: Family::default(),
            rate_limited: Family::default(),
            gate_decisions: Family::default(),
            subscription_syncs: Family::default(),
            state_errors: Family::default(),
            connections: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "requests",
            "Requests answered, by action and status",
            metrics.requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from request to the end of the response body, by action",
            metrics.request_duration.clone(),
        );
        registry.register(
            "stripe_requests",
            "HTTP requests to Stripe, retries included",
            metrics.stripe_requests.clone(),
        );
        registry.register(
            "customer_cache",
            "Customer lookups answered from the cache (hit) or not (miss)",
            metrics.customer_cache.clone(),
        );
        registry.register(
            "auth_rejections",
            "Callers refused, by reason",
            metrics.auth_rejections.clone(),
        );
        registry.register(
            "upstream_errors",
            "Requests the app could not answer, by kind",
            metrics.upstream_errors.clone(),
        );
        registry.register(
            "rate_limited",
            "Requests refused by checkout.rate_limit_per_minute, by action",
            metrics.rate_limited.clone(),
        );
        registry.register(
            "gate_decisions",
            "Requests on gated paths, by decision",
            metrics.gate_decisions.clone(),
        );
        registry.register(
            "subscription_syncs",
            "Subscription state read from Stripe, by trigger and outcome",
            metrics.subscription_syncs.clone(),
        );
        registry.register(
            "state_errors",
            "Redis calls that failed or timed out, by operation",
            metrics.state_errors.clone(),
        );
        registry.register(
            "connections",
            "Client connections open on the app port",
            metrics.connections.clone(),
        );
        let build_info = Family::<VersionLabel, Gauge>::default();
        build_info
            .get_or_create(&VersionLabel {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register("build_info", "The running version", build_info);
        // Known label values start at 0, so rates work from the first scrape.
        for result in ["hit", "miss"] {
            metrics
                .customer_cache
                .get_or_create(&ResultLabel { result })
                .get();
        }
        for failure in UpstreamFailure::ALL {
            let kind = failure.label();
            metrics
                .upstream_errors
                .get_or_create(&KindLabel { kind })
                .get();
        }
        for (_, endpoint) in STRIPE_ENDPOINTS {
            let outcome = StripeOutcome::Ok.label();
            metrics
                .stripe_requests
                .get_or_create(&StripeLabels { endpoint, outcome })
                .get();
        }
        for action in [Action::Checkout, Action::Portal] {
            let action = action.as_str();
            metrics
                .rate_limited
                .get_or_create(&ActionLabel { action })
                .get();
        }
        for decision in Decision::ALL {
            let result = gate_result(decision);
            metrics
                .gate_decisions
                .get_or_create(&ResultLabel { result })
                .get();
        }
        for trigger in Trigger::ALL {
            for ok in [true, false] {
                let labels = SyncLabels {
                    trigger: sync_trigger(trigger),
                    outcome: sync_outcome(ok),
                };
                metrics.subscription_syncs.get_or_create(&labels).get();
            }
        }
        for op in StateOp::ALL {
            let op = op.label();
            metrics.state_errors.get_or_create(&OpLabel { op }).get();
        }
        for rejection in Rejection::ALL {
            let reason = rejection_reason(rejection);
            metrics
                .auth_rejections
                .get_or_create(&ReasonLabel { reason })
                .get();
        }
        Metrics {
            registry,
            ..metrics
        }
    }
}

impl Metrics {
    /// One answered request (counted when its response body ends).
    pub fn request(&self, action: &'static str, status: u16, took: Duration) {
        self.requests
            .get_or_create(&RequestLabels { action, status })
            .inc();
        self.request_duration
            .get_or_create(&ActionLabel { action })
            .observe(took.as_secs_f64());
    }

    pub fn stripe_request(&self, path: &str, outcome: StripeOutcome) {
        let endpoint = stripe_endpoint(path);
        let outcome = outcome.label();
        self.stripe_requests
            .get_or_create(&StripeLabels { endpoint, outcome })
            .inc();
    }

    pub fn gate_decision(&self, decision: Decision) {
        let result = gate_result(decision);
        self.gate_decisions
            .get_or_create(&ResultLabel { result })
            .inc();
    }

    pub fn subscription_sync(&self, trigger: Trigger, ok: bool) {
        let labels = SyncLabels {
            trigger: sync_trigger(trigger),
            outcome: sync_outcome(ok),
        };
        self.subscription_syncs.get_or_create(&labels).inc();
    }

    pub fn state_error(&self, op: StateOp) {
        let op = op.label();
        self.state_errors.get_or_create(&OpLabel { op }).inc();
    }

    pub fn customer_cache(&self, hit: bool) {
        let result = if hit { "hit" } else { "miss" };
        self.customer_cache
            .get_or_create(&ResultLabel { result })
            .inc();
    }

    pub fn rejected(&self, rejection: Rejection) {
        let reason = rejection_reason(rejection);
        self.auth_rejections
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    pub fn rate_limited(&self, action: Action) {
        let action = action.as_str();
        self.rate_limited
            .get_or_create(&ActionLabel { action })
            .inc();
    }

    pub fn upstream_error(&self, failure: UpstreamFailure) {
        let kind = failure.label();
        self.upstream_errors
            .get_or_create(&KindLabel { kind })
            .inc();
    }

    /// The open-connections gauge, held by the accept loop.
    pub fn connections(&self) -> &Gauge {
        &self.connections
    }

    /// The exposition in the format `accept` asks for: OpenMetrics when it
    /// names it with a quality no lower than plain text's (`q=0`: not
    /// acceptable), else the Prometheus text format 0.0.4. Returns the
    /// content type and the text.
    pub fn encode(&self, accept: &str) -> Result<(&'static str, String), std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        let openmetrics = quality(accept, &["application/openmetrics-text"]);
        let plain = quality(accept, &["text/plain", "text/*", "*/*"]);
        Ok(if openmetrics > 0.0 && openmetrics >= plain {
            (OPENMETRICS, text)
        } else {
            (PROMETHEUS_TEXT, to_prometheus_text(&text))
        })
    }
}

/// The highest `q` an `Accept` header gives any of `types` (0 when it
/// names none of them).
fn quality(accept: &str, types: &[&str]) -> f32 {
    accept
        .split(',')
        .filter_map(|range| {
            let mut parts = range.split(';');
            let media = parts.next()?.trim();
            if !types.iter().any(|t| media.eq_ignore_ascii_case(t)) {
                return None;
            }
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            Some(q.clamp(0.0, 1.0))
        })
        .fold(0.0, f32::max)
}

pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// OpenMetrics text as Prometheus text 0.0.4: a counter family is named
/// with its `_total` suffix in `# HELP` and `# TYPE` (its samples already
/// carry it), and `# UNIT` and `# EOF` are dropped.
fn to_prometheus_text(openmetrics: &str) -> String {
    let counters: Vec<&str> = openmetrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len() + 16 * counters.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let header = ["# HELP ", "# TYPE "].into_iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(&name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match header {
            Some(renamed) => out.push_str(&renamed),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_of_the_spec_is_exposed_in_both_formats() {
        let metrics = Metrics::default();
        metrics.request(PROXY, 200, Duration::from_millis(10));
        metrics.connections().inc();
        let (kind, text) = metrics.encode("").unwrap();
        assert_eq!(kind, PROMETHEUS_TEXT);
        for line in [
            "# TYPE stripe_sidecar_requests_total counter",
            "# HELP stripe_sidecar_requests_total Requests answered, by action and status.",
            "# TYPE stripe_sidecar_request_duration_seconds histogram",
            "stripe_sidecar_requests_total{action=\"proxy\",status=\"200\"} 1",
            "stripe_sidecar_request_duration_seconds_count{action=\"proxy\"} 1",
            "stripe_sidecar_customer_cache_total{result=\"miss\"} 0",
            "stripe_sidecar_upstream_errors_total{kind=\"connect\"} 0",
            "stripe_sidecar_auth_rejections_total{reason=\"expired\"} 0",
            "stripe_sidecar_rate_limited_total{action=\"checkout\"} 0",
            "stripe_sidecar_stripe_requests_total{endpoint=\"checkout_sessions\",outcome=\"ok\"} 0",
            "# TYPE stripe_sidecar_connections gauge",
            "stripe_sidecar_connections 1",
            "stripe_sidecar_build_info{version=\"",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
        assert!(!text.contains("# EOF"), "{text}");
        let accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5";
        let (kind, text) = metrics.encode(accept).unwrap();
        assert_eq!(kind, OPENMETRICS);
        assert!(
            text.contains("# TYPE stripe_sidecar_requests counter"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    /// Regression: `Accept: application/openmetrics-text;q=0` (not
    /// acceptable) was answered with OpenMetrics.
    #[test]
    fn the_format_follows_the_accept_qualities() {
        let metrics = Metrics::default();
        let cases = [
            ("", PROMETHEUS_TEXT),
            ("*/*", PROMETHEUS_TEXT),
            ("text/plain", PROMETHEUS_TEXT),
            ("application/openmetrics-text", OPENMETRICS),
            ("Application/OpenMetrics-Text; version=1.0.0", OPENMETRICS),
            // What Prometheus sends.
            (
                "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,\
                 text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
                OPENMETRICS,
            ),
            ("application/openmetrics-text;q=0", PROMETHEUS_TEXT),
            ("application/openmetrics-text; q=0, text/plain", PROMETHEUS_TEXT),
            ("application/openmetrics-text;q=0.4, text/plain;q=0.5", PROMETHEUS_TEXT),
            ("text/plain;q=0.5, application/openmetrics-text", OPENMETRICS),
        ];
        for (accept, expected) in cases {
            assert_eq!(metrics.encode(accept).unwrap().0, expected, "{accept}");
        }
    }
}
