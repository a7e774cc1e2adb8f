//! The Prometheus families of the admin port's `/metrics`, built once at
//! start-up and shared through the sidecar's state (no global registry).
//!
//! Only recording lives here; what to count is decided where it happens.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub action: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabel {
    pub action: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StripeLabels {
    pub endpoint: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

/// `kind` of `stripe_sidecar_upstream_errors_total`: the app refused or
/// did not accept the connection, failed mid-request, or was too slow.
pub const UPSTREAM_ERROR_KINDS: [&str; 3] = ["connect", "request", "timeout"];

/// `endpoint` of `stripe_sidecar_stripe_requests_total`: the Stripe API
/// paths the sidecar calls.
pub const STRIPE_ENDPOINTS: [&str; 4] = [
    "checkout_sessions",
    "billing_portal_sessions",
    "customers_search",
    "customers",
];

fn duration_histogram() -> Histogram {
    // 1 ms to ~33 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub request_duration: Family<ActionLabel, Histogram, fn() -> Histogram>,
    pub stripe_requests: Family<StripeLabels, Counter>,
    pub customer_cache: Family<ResultLabel, Counter>,
    pub auth_rejections: Family<ReasonLabel, Counter>,
    pub upstream_errors: Family<KindLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("stripe_sidecar");
        let requests = Family::default();
        let request_duration =
            Family::new_with_constructor(duration_histogram as fn() -> Histogram);
        let stripe_requests: Family<StripeLabels, Counter> = Family::default();
        let customer_cache: Family<ResultLabel, Counter> = Family::default();
        let auth_rejections = Family::default();
        let upstream_errors: Family<KindLabel, Counter> = Family::default();
        registry.register(
            "requests",
            "Requests answered, by action and status",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from request to the end of the response body, by action",
            request_duration.clone(),
        );
        registry.register(
            "stripe_requests",
            "HTTP requests to Stripe, retries included",
            stripe_requests.clone(),
        );
        registry.register(
            "customer_cache",
            "Customer lookups answered from the cache (hit) or not (miss)",
            customer_cache.clone(),
        );
        registry.register(
            "auth_rejections",
            "Callers refused, by reason",
            auth_rejections.clone(),
        );
        registry.register(
            "upstream_errors",
            "Requests the app could not answer, by kind",
            upstream_errors.clone(),
        );
        // Known label values start at 0, so rates work from the first scrape.
        for result in ["hit", "miss"] {
            customer_cache.get_or_create(&ResultLabel { result }).get();
        }
        for kind in UPSTREAM_ERROR_KINDS {
            upstream_errors.get_or_create(&KindLabel { kind }).get();
        }
        for endpoint in STRIPE_ENDPOINTS {
            stripe_requests
                .get_or_create(&StripeLabels {
                    endpoint,
                    outcome: "ok",
                })
                .get();
        }
        Metrics {
            registry,
            requests,
            request_duration,
            stripe_requests,
            customer_cache,
            auth_rejections,
            upstream_errors,
        }
    }

    /// The OpenMetrics text exposition, which Prometheus scrapes natively.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_of_the_spec_is_exposed() {
        let metrics = Metrics::new();
        metrics
            .requests
            .get_or_create(&RequestLabels {
                action: "proxy",
                status: 200,
            })
            .inc();
        metrics
            .request_duration
            .get_or_create(&ActionLabel { action: "proxy" })
            .observe(0.01);
        let text = metrics.encode();
        for family in [
            "# TYPE stripe_sidecar_requests counter",
            "# TYPE stripe_sidecar_request_duration_seconds histogram",
            "stripe_sidecar_customer_cache_total{result=\"miss\"} 0",
            "stripe_sidecar_upstream_errors_total{kind=\"connect\"} 0",
            "stripe_sidecar_requests_total{action=\"proxy\",status=\"200\"} 1",
            "stripe_sidecar_request_duration_seconds_count{action=\"proxy\"} 1",
        ] {
            assert!(text.contains(family), "missing {family} in\n{text}");
        }
    }
}
