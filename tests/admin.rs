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
        if status == 405 {
            assert_eq!(response.header("allow"), Some("GET, HEAD"));
        }
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
    assert_eq!(
        metrics.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8"),
        "Prometheus text unless the scraper asks for OpenMetrics"
    );
    for line in [
        "# TYPE stripe_sidecar_requests_total counter",
        "# TYPE stripe_sidecar_connections gauge",
        "stripe_sidecar_build_info{version=\"",
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

#[tokio::test]
async fn openmetrics_when_the_scraper_asks() {
    let app = FakeApp::start().await;
    let sidecar = Sidecar::builder(&app.url()).start().await;
    let accept =
        "Accept: application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5\r\n";
    let metrics = raw::request(sidecar.admin, "GET", "/metrics", accept).await;
    assert!(metrics
        .header("content-type")
        .unwrap()
        .starts_with("application/openmetrics-text; version=1.0.0"));
    assert!(metrics
        .body
        .contains("# TYPE stripe_sidecar_upstream_errors counter"));
    assert!(metrics.body.ends_with("# EOF\n"), "{}", metrics.body);
}

#[tokio::test]
async fn open_client_connections_are_a_gauge() {
    let app = FakeApp::start().await;
    let sidecar = Sidecar::builder(&app.url()).start().await;
    let held = tokio::net::TcpStream::connect(sidecar.addr).await.unwrap();
    connections_become(&sidecar, "1").await;
    drop(held);
    connections_become(&sidecar, "0").await;
}

/// Polls `/metrics` until `stripe_sidecar_connections` reads `want`.
async fn connections_become(sidecar: &Sidecar, want: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let metrics = raw::request(sidecar.admin, "GET", "/metrics", "").await;
        let value = metrics
            .body
            .lines()
            .find_map(|l| l.strip_prefix("stripe_sidecar_connections "));
        if value == Some(want) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{}", metrics.body);
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}
