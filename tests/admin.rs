//! The admin port: health, readiness and metrics, and nothing else.

use crate::support::app::FakeApp;
use crate::support::raw;
use crate::support::sidecar::Sidecar;

#[tokio::test]
async fn health_readiness_and_nothing_else() {
    let app = FakeApp::start().await;
    let sidecar = Sidecar::builder(&app.url()).start().await;
    let cases = [
        ("GET", "/healthz", 200),
        ("GET", "/readyz", 200),
        ("GET", "/metrics", 200),
        ("GET", "/echo", 404),
        ("GET", "/api/stripe/create-checkout", 404),
        ("POST", "/healthz", 405),
    ];
    for (method, path, status) in cases {
        let response = raw::request(sidecar.admin, method, path, "").await;
        assert_eq!(response.status, status, "{method} {path}");
    }
    assert_eq!(app.requests(), 0, "the admin port never proxies");
}

#[tokio::test]
async fn metrics_count_requests_by_action_and_status() {
    let app = FakeApp::start().await;
    let sidecar = Sidecar::builder(&app.url()).start().await;
    raw::request(sidecar.addr, "GET", "/echo", "").await;
    raw::request(sidecar.addr, "GET", "/status/404", "").await;
    raw::request(sidecar.addr, "POST", "/api/stripe/create-checkout", "").await;
    raw::request(sidecar.addr, "GET", "/api/stripe/create-portal", "").await;
    let metrics = raw::request(sidecar.admin, "GET", "/metrics", "").await;
    assert!(metrics
        .header("content-type")
        .unwrap()
        .starts_with("application/openmetrics-text"));
    for line in [
        "stripe_sidecar_requests_total{action=\"proxy\",status=\"200\"} 1",
        "stripe_sidecar_requests_total{action=\"proxy\",status=\"404\"} 1",
        "stripe_sidecar_requests_total{action=\"checkout\",status=\"503\"} 1",
        "stripe_sidecar_requests_total{action=\"portal\",status=\"405\"} 1",
        "stripe_sidecar_request_duration_seconds_count{action=\"proxy\"} 2",
        "stripe_sidecar_upstream_errors_total{kind=\"timeout\"} 0",
        "stripe_sidecar_customer_cache_total{result=\"hit\"} 0",
    ] {
        assert!(
            metrics.body.contains(line),
            "missing {line} in\n{}",
            metrics.body
        );
    }
}
