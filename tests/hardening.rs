//! Issue 10's resource bounds, end to end: slow bodies, connection limits
//! and the per-IP rate limit. Each test names the finding it pins.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::app::FakeApp;
use crate::support::raw;
use crate::support::sidecar::Sidecar;

/// Reads what the server sends on `stream` within `limit`.
async fn reply_within(stream: &mut TcpStream, limit: Duration) -> Option<String> {
    let mut buffer = vec![0u8; 4096];
    let n = tokio::time::timeout(limit, stream.read(&mut buffer))
        .await
        .ok()?
        .ok()?;
    Some(String::from_utf8_lossy(&buffer[..n]).into_owned())
}

/// Regression (finding 1): a client could stop one byte short and hold its
/// body buffer forever.
#[tokio::test]
async fn a_stalled_local_body_gets_408_at_body_timeout() {
    let app = FakeApp::start().await;
    let sidecar = Sidecar::builder(&app.url())
        .set("server", "body_timeout_ms = 300")
        .set("stripe", "webhook_secrets = [\"whsec_hardening\"]")
        .start()
        .await;
    for path in ["/api/stripe/create-checkout", "/api/stripe/webhook"] {
        let mut stream = TcpStream::connect(sidecar.addr).await.unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\
             Stripe-Signature: t=9999999999,v1=00\r\n\r\n{{\"priceId\""
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let reply = reply_within(&mut stream, Duration::from_secs(5))
            .await
            .expect("answered without the rest of the body");
        assert!(reply.starts_with("HTTP/1.1 408"), "{path}: {reply}");
        assert!(
            reply.contains("Request body did not arrive in time"),
            "{reply}"
        );
    }
    assert_eq!(app.requests(), 0);
}

/// Finding 1: `server.max_connections` bounds the connections held open;
/// more wait in the kernel's queue until one closes.
#[tokio::test]
async fn connections_past_max_connections_wait_their_turn() {
    let app = FakeApp::start().await;
    let sidecar = Sidecar::builder(&app.url())
        .set("server", "max_connections = 2")
        .start()
        .await;
    let first = TcpStream::connect(sidecar.addr).await.unwrap();
    let _second = TcpStream::connect(sidecar.addr).await.unwrap();
    let mut third = TcpStream::connect(sidecar.addr).await.unwrap();
    third
        .write_all(b"GET /echo HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(
        reply_within(&mut third, Duration::from_millis(300)).await,
        None,
        "served past the limit"
    );
    drop(first);
    let reply = reply_within(&mut third, Duration::from_secs(5))
        .await
        .expect("served once a slot is free");
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
}

/// Regression (finding 8): a loop of anonymous checkouts could burn the
/// account's Stripe rate limit for everyone.
#[tokio::test]
async fn checkout_and_portal_are_rate_limited_per_client_ip() {
    let app = FakeApp::start().await;
    let sidecar = Sidecar::builder(&app.url())
        .set("checkout", "rate_limit_per_minute = 2")
        .set("server", "trusted_proxies = [\"127.0.0.1\"]")
        .start()
        .await;
    let from = |ip: &str| format!("X-Forwarded-For: {ip}\r\n");
    let checkout = "/api/stripe/create-checkout";
    for _ in 0..2 {
        let response = raw::request(sidecar.addr, "POST", checkout, &from("203.0.113.1")).await;
        assert_eq!(response.status, 503, "not configured, but not limited");
    }
    let limited = raw::request(
        sidecar.addr,
        "POST",
        "/api/stripe/create-portal",
        &from("203.0.113.1"),
    )
    .await;
    assert_eq!(limited.status, 429);
    assert_eq!(
        limited.json()["error"],
        "Too many requests, please try again later"
    );
    let retry_after: u64 = limited.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let other = raw::request(sidecar.addr, "POST", checkout, &from("203.0.113.2")).await;
    assert_eq!(other.status, 503, "another client has its own allowance");
    let proxied = raw::request(sidecar.addr, "GET", "/echo", &from("203.0.113.1")).await;
    assert_eq!(proxied.status, 200, "only checkout and portal are limited");
    // Regression: the subscription route shared the window.
    let read = raw::request(
        sidecar.addr,
        "GET",
        "/api/stripe/subscription",
        &from("203.0.113.1"),
    )
    .await;
    assert_eq!(read.status, 401, "not signed in, but not limited");
    let metrics = raw::request(sidecar.admin, "GET", "/metrics", "").await;
    assert!(
        metrics
            .body
            .contains("stripe_sidecar_rate_limited_total{action=\"portal\"} 1"),
        "{}",
        metrics.body
    );
}
