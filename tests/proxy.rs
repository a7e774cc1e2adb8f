//! Proxying, end to end: what the app receives, what the client gets back,
//! streaming both ways, SSE, WebSocket, timeouts, failures, limits, and the
//! local routes that must never reach the app.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use crate::support::app::FakeApp;
use crate::support::raw;
use crate::support::sidecar::Sidecar;

async fn setup() -> (FakeApp, Sidecar) {
    let app = FakeApp::start().await;
    let sidecar = Sidecar::builder(&app.url()).start().await;
    (app, sidecar)
}

/// The request the app saw, from its `/echo` reply.
fn echoed_header<'a>(echo: &'a serde_json::Value, name: &str) -> Vec<&'a str> {
    echo["headers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|pair| pair[0] == name)
        .map(|pair| pair[1].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn request_line_goes_to_the_app_byte_for_byte() {
    let (app, sidecar) = setup().await;
    for target in [
        "/echo",
        "/echo//a/../b?q=%2F&x",
        "/echo/%73tripe/./x?a=1&a=2&empty=",
        "/echo/api/stripe/create-checkout",
        "/echo?%zz=%%",
    ] {
        let response = raw::request(sidecar.addr, "PUT", target, "").await;
        assert_eq!(response.status, 200, "{target}");
        let echo = response.json();
        assert_eq!(echo["uri"], target);
        assert_eq!(echo["method"], "PUT");
    }
    assert_eq!(app.requests(), 5);
}

#[tokio::test]
async fn headers_are_rewritten_as_a_proxy_should() {
    let (_app, sidecar) = setup().await;
    let response = raw::request(
        sidecar.addr,
        "GET",
        "/echo",
        "X-Forwarded-For: 203.0.113.9\r\n\
         X-Forwarded-Proto: spoofed\r\n\
         X-Forwarded-Host: evil.example\r\n\
         Connection: close, X-Hop, Host, X-Request-Id\r\n\
         X-Hop: secret\r\n\
         X-Real-IP: 203.0.113.9\r\n\
         Forwarded: for=203.0.113.9;proto=https\r\n\
         Keep-Alive: timeout=5\r\n\
         Proxy-Authorization: Basic abc\r\n\
         TE: trailers\r\n\
         Upgrade: h2c\r\n\
         Cookie: sb-x-auth-token=abc\r\n\
         X-Custom: kept\r\n",
    )
    .await;
    let echo = response.json();
    assert_eq!(echoed_header(&echo, "host"), ["test.local"]);
    assert_eq!(
        echoed_header(&echo, "x-forwarded-for"),
        ["203.0.113.9, 127.0.0.1"]
    );
    assert_eq!(echoed_header(&echo, "x-forwarded-proto"), ["http"]);
    assert_eq!(echoed_header(&echo, "x-forwarded-host"), ["test.local"]);
    assert_eq!(echoed_header(&echo, "x-real-ip"), ["127.0.0.1"]);
    assert_eq!(echoed_header(&echo, "cookie"), ["sb-x-auth-token=abc"]);
    assert_eq!(echoed_header(&echo, "x-custom"), ["kept"]);
    for hop in [
        "x-hop",
        "keep-alive",
        "proxy-authorization",
        "te",
        "upgrade",
        "forwarded",
    ] {
        assert!(
            echoed_header(&echo, hop).is_empty(),
            "{hop} reached the app"
        );
    }
    // `Connection` named them, but they always stay.
    let request_id = echoed_header(&echo, "x-request-id");
    assert_eq!(request_id.len(), 1);
    assert_eq!(request_id[0].len(), 36, "a generated UUID: {request_id:?}");
    assert_eq!(response.header("x-request-id"), Some(request_id[0]));
}

/// Behind a TLS ingress the app must see what the ingress saw, but only
/// when the peer is a trusted proxy.
#[tokio::test]
async fn a_trusted_proxy_vouches_for_the_client() {
    let app = FakeApp::start().await;
    let forwarded = "X-Forwarded-For: 203.0.113.7\r\n\
                     X-Forwarded-Proto: https\r\n\
                     X-Forwarded-Host: shop.example\r\n";
    let trusted = Sidecar::builder(&app.url())
        .set("server", "trusted_proxies = [\"127.0.0.0/8\"]")
        .start()
        .await;
    let echo = raw::request(trusted.addr, "GET", "/echo", forwarded)
        .await
        .json();
    assert_eq!(echoed_header(&echo, "x-forwarded-proto"), ["https"]);
    assert_eq!(echoed_header(&echo, "x-forwarded-host"), ["shop.example"]);
    assert_eq!(echoed_header(&echo, "x-real-ip"), ["203.0.113.7"]);
    assert_eq!(
        echoed_header(&echo, "x-forwarded-for"),
        ["203.0.113.7, 127.0.0.1"]
    );

    let untrusted = Sidecar::builder(&app.url())
        .set("server", "trusted_proxies = [\"10.0.0.0/8\"]")
        .start()
        .await;
    let echo = raw::request(untrusted.addr, "GET", "/echo", forwarded)
        .await
        .json();
    assert_eq!(echoed_header(&echo, "x-forwarded-proto"), ["http"]);
    assert_eq!(echoed_header(&echo, "x-forwarded-host"), ["test.local"]);
    assert_eq!(echoed_header(&echo, "x-real-ip"), ["127.0.0.1"]);
}

#[tokio::test]
async fn request_ids_are_kept_only_when_safe_and_always_returned() {
    let (_app, sidecar) = setup().await;
    for (given, kept) in [
        ("abc-123_x.Y", true),
        (&*"a".repeat(128), true),
        (&*"a".repeat(129), false),
        ("has space", false),
        ("a/b", false),
        ("<script>", false),
    ] {
        let header = format!("X-Request-Id: {given}\r\n");
        let response = raw::request(sidecar.addr, "GET", "/echo", &header).await;
        let seen = echoed_header(&response.json(), "x-request-id")[0].to_string();
        assert_eq!(seen == given, kept, "{given:?} -> {seen:?}");
        assert_eq!(response.header("x-request-id"), Some(seen.as_str()));
    }
    // Local routes and refusals carry it too.
    for (method, target) in [
        ("POST", "/api/stripe/create-checkout"),
        ("GET", "/api/stripe/create-portal"),
        ("POST", "/api/stripe/webhook"),
    ] {
        let response = raw::request(sidecar.addr, method, target, "X-Request-Id: r-7\r\n").await;
        assert_eq!(
            response.header("x-request-id"),
            Some("r-7"),
            "{method} {target}"
        );
    }
}

#[tokio::test]
async fn ambiguous_and_tunnel_requests_never_reach_the_app() {
    let (app, sidecar) = setup().await;
    let two_hosts = raw::send(
        sidecar.addr,
        b"GET /echo HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(two_hosts.status, 400);
    assert_eq!(
        two_hosts.json()["error"],
        "Request has more than one Host header"
    );
    let no_host = raw::send(
        sidecar.addr,
        b"GET /echo HTTP/1.1\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(no_host.status, 400);
    assert_eq!(no_host.json()["error"], "Request has no Host header");
    // HTTP/1.0 has no Host requirement.
    let old = raw::send(sidecar.addr, b"GET /echo HTTP/1.0\r\n\r\n").await;
    assert_eq!(old.status, 200);
    let connect = raw::send(
        sidecar.addr,
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(connect.status, 405);
    assert!(connect.header("allow").is_some());
    assert_eq!(app.requests(), 1, "only the HTTP/1.0 request");
}

#[tokio::test]
async fn h2c_is_never_upgraded_and_101_only_for_the_protocol_asked() {
    let (_app, sidecar) = setup().await;
    let h2c = raw::request(
        sidecar.addr,
        "GET",
        "/echo",
        "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n",
    )
    .await;
    assert_eq!(h2c.status, 200, "served as plain HTTP/1.1");
    let echo = h2c.json();
    for hop in ["upgrade", "http2-settings"] {
        assert!(
            echoed_header(&echo, hop).is_empty(),
            "{hop} reached the app"
        );
    }
    let ws = "Connection: Upgrade\r\nUpgrade: websocket\r\n";
    let other = raw::request(sidecar.addr, "GET", "/switch?to=h2c", ws).await;
    assert_eq!(other.status, 502, "the app switched to what was not asked");
    let unasked = raw::request(sidecar.addr, "GET", "/switch?to=websocket", "").await;
    assert_eq!(
        unasked.status, 502,
        "a 101 to a request that asked no upgrade"
    );
}

/// Regression: a client's broken chunked body was a 502 and counted as an
/// app failure (`upstream_errors_total{kind="request"}`).
#[tokio::test]
async fn a_malformed_client_body_is_400_and_not_the_apps_fault() {
    let (_app, sidecar) = setup().await;
    let response = raw::send(
        sidecar.addr,
        b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\nzz\r\nbroken\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(response.status, 400, "{}", response.body);
    assert_eq!(response.json()["error"], "Malformed request body");
    let metrics = reqwest::get(sidecar.admin_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("stripe_sidecar_upstream_errors_total{kind=\"request\"} 0"),
        "{metrics}"
    );
}

/// Regression: an app answering HTTP/1.0 made the sidecar answer HTTP/1.0.
#[tokio::test]
async fn responses_are_http_1_1_whatever_the_app_spoke() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let old = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", old.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = old.accept().await {
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf).await;
            let _ = stream
                .write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .await;
        }
    });
    let sidecar = Sidecar::builder(&url).start().await;
    let response = raw::request(sidecar.addr, "GET", "/", "").await;
    assert_eq!((response.status, response.body.as_str()), (200, "ok"));
    assert_eq!(response.version, "HTTP/1.1");
}

#[tokio::test]
async fn a_given_request_id_is_passed_on() {
    let (_app, sidecar) = setup().await;
    let response = raw::request(sidecar.addr, "GET", "/echo", "X-Request-Id: abc-123\r\n").await;
    assert_eq!(echoed_header(&response.json(), "x-request-id"), ["abc-123"]);
}

#[tokio::test]
async fn app_responses_pass_unchanged() {
    let (_app, sidecar) = setup().await;
    let response = raw::request(sidecar.addr, "GET", "/echo", "").await;
    let cookies: Vec<_> = response
        .headers
        .iter()
        .filter(|(n, _)| n == "set-cookie")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(cookies, ["a=1; Path=/", "b=2"]);
    assert_eq!(response.header("x-app"), Some("echo"));
    for status in [201, 404, 500, 503] {
        let response = raw::request(sidecar.addr, "GET", &format!("/status/{status}"), "").await;
        assert_eq!(response.status, status);
        assert_eq!(response.body, format!("app says {status}"));
    }
}

#[tokio::test]
async fn local_routes_are_answered_locally_however_spelled() {
    let (app, sidecar) = setup().await;
    let not_configured = (503, "Billing is not configured");
    for (target, (status, error)) in [
        ("/api/stripe/create-checkout", not_configured),
        ("/api/stripe//create-checkout", not_configured),
        ("/api/%73tripe/create-checkout", not_configured),
        ("/api/x/../stripe/create-checkout", not_configured),
        ("/api/stripe/create-checkout/?next=/x", not_configured),
        (
            "/api/stripe/webhook",
            (503, "Webhook secret is not configured"),
        ),
        ("/api//stripe/create-portal", (401, "Not signed in")),
    ] {
        let response = raw::request(sidecar.addr, "POST", target, "").await;
        assert_eq!(response.status, status, "{target}");
        assert_eq!(response.json(), serde_json::json!({ "error": error }));
    }
    let response = raw::request(sidecar.addr, "GET", "/api/stripe/./create-checkout", "").await;
    assert_eq!(response.status, 405);
    assert_eq!(response.header("allow"), Some("POST"));
    // Near-spellings an app framework would route to the same handler.
    for target in [
        "/API/stripe/webhook",
        "/api/stripe/webhook;x",
        "/api/stripe%2Fwebhook",
        "/api\\stripe\\create-checkout",
        "/Api/Stripe/Create-Portal",
    ] {
        let response = raw::request(sidecar.addr, "POST", target, "").await;
        assert_eq!(response.status, 404, "{target}");
        assert_eq!(response.json(), serde_json::json!({ "error": "Not found" }));
    }
    assert_eq!(app.requests(), 0, "a local route reached the app");
}

/// Regression: a `forward_to` path other than the route's own was proxied
/// to the app's webhook handler for anyone, unverified.
#[tokio::test]
async fn a_forward_to_path_is_reached_only_by_verified_events() {
    let app = FakeApp::start().await;
    let sidecar = Sidecar::builder(&app.url())
        .raw("[[routes]]\npath = \"/stripe-in\"\naction = \"webhook\"\nforward_to = \"/hooks/stripe\"\n")
        .start()
        .await;
    for target in [
        "/hooks/stripe",
        "/hooks//stripe",
        "/HOOKS/stripe",
        "/hooks/stripe;v",
    ] {
        let response = raw::request(
            sidecar.addr,
            "POST",
            target,
            "Stripe-Signature: t=1,v1=00\r\n",
        )
        .await;
        assert_eq!(response.status, 404, "{target}");
    }
    assert_eq!(app.requests(), 0);
}

#[tokio::test]
async fn configured_routes_replace_the_defaults() {
    let app = FakeApp::start().await;
    let sidecar = Sidecar::builder(&app.url())
        .raw(
            "[[routes]]\n\
             path = \"/api/billstack/teams/{teamId}/projects/{projectId}/checkout\"\n\
             action = \"checkout\"\nstatus = 201\ndefault_mode = \"subscription\"\n",
        )
        .start()
        .await;
    let local = raw::request(
        sidecar.addr,
        "POST",
        "/api/billstack/teams/t1/projects/p1/checkout",
        "",
    )
    .await;
    assert_eq!(local.status, 503);
    let proxied = raw::request(sidecar.addr, "POST", "/api/stripe/create-checkout", "").await;
    assert_eq!(
        proxied.status, 404,
        "the default route is gone: proxied to the app"
    );
    assert_eq!(proxied.body, "not found");
}

#[tokio::test]
async fn large_bodies_stream_both_ways() {
    let (_app, sidecar) = setup().await;
    const SIZE: usize = 64 * 1024 * 1024;
    let pattern = |i: usize| (i % 251) as u8;
    // Upload: a streamed body of SIZE bytes, in 1 MiB chunks.
    let chunks = futures_util::stream::iter((0..SIZE / (1 << 20)).map(move |c| {
        let chunk: Vec<u8> = (c << 20..(c + 1) << 20).map(pattern).collect();
        Ok::<_, std::io::Error>(chunk)
    }));
    let client = reqwest::Client::new();
    let response = client
        .post(sidecar.url("/upload"))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    let reply: serde_json::Value =
        serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    let sum = (0..SIZE).map(|i| pattern(i) as u64).sum::<u64>();
    assert_eq!(reply["bytes"], SIZE as u64);
    assert_eq!(reply["sum"], sum);

    // Download: checked as it streams, never held whole.
    let mut response = client
        .get(sidecar.url(&format!("/download?bytes={SIZE}")))
        .send()
        .await
        .unwrap();
    let mut seen = 0usize;
    while let Some(chunk) = response.chunk().await.unwrap() {
        for (offset, byte) in chunk.iter().enumerate() {
            assert_eq!(*byte, pattern(seen + offset), "byte {}", seen + offset);
        }
        seen += chunk.len();
    }
    assert_eq!(seen, SIZE);
}

#[tokio::test]
async fn server_sent_events_arrive_one_by_one() {
    let (_app, sidecar) = setup().await;
    let started = Instant::now();
    let mut response = reqwest::get(sidecar.url("/sse?events=3&interval_ms=700"))
        .await
        .unwrap();
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let first = response.chunk().await.unwrap().unwrap();
    let first_at = started.elapsed();
    assert_eq!(&first[..], b"data: event 0\n\n");
    let mut rest = Vec::new();
    while let Some(chunk) = response.chunk().await.unwrap() {
        rest.extend_from_slice(&chunk);
    }
    assert_eq!(rest, b"data: event 1\n\ndata: event 2\n\n");
    // The whole stream takes 1.4 s; the first event must not wait for it.
    assert!(
        first_at < started.elapsed() / 2,
        "first event at {first_at:?}, end at {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn websockets_are_tunnelled() {
    let (_app, sidecar) = setup().await;
    let (mut socket, response) =
        tokio_tungstenite::connect_async(format!("ws://{}/ws", sidecar.addr))
            .await
            .expect("upgrade through the sidecar");
    assert_eq!(response.status(), 101);
    assert_eq!(
        socket.next().await.unwrap().unwrap(),
        Message::text("hello")
    );
    for text in ["one", "two"] {
        socket.send(Message::text(text)).await.unwrap();
        assert_eq!(socket.next().await.unwrap().unwrap(), Message::text(text));
    }
    socket
        .send(Message::binary(vec![0u8, 1, 2, 255]))
        .await
        .unwrap();
    assert_eq!(
        socket.next().await.unwrap().unwrap(),
        Message::binary(vec![0u8, 1, 2, 255])
    );
    socket.close(None).await.unwrap();
}

#[tokio::test]
async fn connections_to_the_app_are_reused() {
    let (app, sidecar) = setup().await;
    let client = reqwest::Client::new();
    for _ in 0..20 {
        let response = client.get(sidecar.url("/echo")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        response.bytes().await.unwrap();
    }
    assert_eq!(app.requests(), 20);
    assert_eq!(
        app.connections(),
        1,
        "sequential requests share one pooled connection"
    );
}

#[tokio::test]
async fn a_slow_app_gets_504_after_read_timeout() {
    let app = FakeApp::start().await;
    let sidecar = Sidecar::builder(&app.url())
        .set("upstream", "read_timeout_ms = 200")
        .start()
        .await;
    let started = Instant::now();
    let response = raw::request(sidecar.addr, "GET", "/slow?ms=3000", "").await;
    assert_eq!(response.status, 504);
    assert_eq!(response.json()["error"], "The app did not answer in time");
    assert!(started.elapsed() < Duration::from_millis(2500));
    let fast = raw::request(sidecar.addr, "GET", "/slow?ms=0", "").await;
    assert_eq!(fast.status, 200);
    assert_eq!(fast.body, "slow done");
    // The timeout is between reads, as nginx's: a stream that keeps
    // sending lives on, one that falls silent is cut.
    let lively = reqwest::get(sidecar.url("/sse?events=4&interval_ms=100"))
        .await
        .unwrap();
    assert_eq!(
        lively.text().await.unwrap().matches("data: event").count(),
        4
    );
    let silent = reqwest::get(sidecar.url("/sse?events=2&interval_ms=1000"))
        .await
        .unwrap();
    assert_eq!(silent.status(), 200);
    assert!(silent.text().await.is_err(), "a silent stream must be cut");
}

#[tokio::test]
async fn an_unreachable_app_gets_502_and_is_counted() {
    let app = FakeApp::start().await;
    let url = app.url();
    drop(app);
    let sidecar = Sidecar::builder(&url).start().await;
    let response = raw::request(sidecar.addr, "GET", "/echo", "").await;
    assert_eq!(response.status, 502);
    assert_eq!(response.json()["error"], "The app is unavailable");
    let metrics = reqwest::get(sidecar.admin_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("stripe_sidecar_upstream_errors_total{kind=\"connect\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("stripe_sidecar_requests_total{action=\"proxy\",status=\"502\"} 1"));
}

#[tokio::test]
async fn large_headers_are_accepted_up_to_64_kib() {
    let (_app, sidecar) = setup().await;
    let cookie = format!("sb-ref-auth-token={}", "a".repeat(60 * 1024));
    let response = raw::request(
        sidecar.addr,
        "GET",
        "/echo",
        &format!("Cookie: {cookie}\r\n"),
    )
    .await;
    assert_eq!(response.status, 200);
    assert_eq!(echoed_header(&response.json(), "cookie"), [cookie.as_str()]);

    // Regression: the 101st header got 431, however small.
    let many: String = (0..4000).map(|i| format!("X-H{i}: v\r\n")).collect();
    assert!(many.len() < 60 * 1024);
    let response = raw::request(sidecar.addr, "GET", "/echo", &many).await;
    assert_eq!(response.status, 200);
    assert_eq!(echoed_header(&response.json(), "x-h3999"), ["v"]);

    let huge = format!("Cookie: x={}\r\n", "a".repeat(100 * 1024));
    let response = raw::request(sidecar.addr, "GET", "/echo", &huge).await;
    assert_eq!(response.status, 431);
    // Regression: hyper's own 431 was not counted. Counted when its
    // connection ends, which may be just after the client has the reply.
    let counted = "stripe_sidecar_requests_total{action=\"proxy\",status=\"431\"} 1";
    let mut metrics = String::new();
    for _ in 0..100 {
        metrics = raw::request(sidecar.admin, "GET", "/metrics", "")
            .await
            .body;
        if metrics.contains(counted) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(metrics.contains(counted), "{metrics}");
}

#[tokio::test]
async fn malformed_requests_get_400_and_others_are_unaffected() {
    let (app, sidecar) = setup().await;
    for bad in [
        &b"GET /echo HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n"[..],
        b"GET /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
        b"GET /ec ho HTTP/1.1\r\nHost: a\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    ] {
        let response = raw::send(sidecar.addr, bad).await;
        assert_eq!(response.status, 400, "{:?}", String::from_utf8_lossy(bad));
    }
    assert_eq!(app.requests(), 0);
    let good = raw::request(sidecar.addr, "GET", "/echo", "").await;
    assert_eq!(good.status, 200);
}

/// The warn line says what failed and where, as oauth2-proxy's does, and
/// carries the request's id.
#[tokio::test]
async fn an_unreachable_app_is_logged_with_cause_address_and_request_id() {
    let app = FakeApp::start().await;
    let url = app.url();
    drop(app);
    let process = Sidecar::builder(&url).spawn();
    let response = raw::request(process.addr, "GET", "/echo", "X-Request-Id: down-1\r\n").await;
    assert_eq!(response.status, 502);
    let address = url.trim_start_matches("http://");
    let warning = loop {
        let line = process
            .lines
            .recv_timeout(Duration::from_secs(10))
            .expect("a warn line");
        let json: serde_json::Value = serde_json::from_str(&line).unwrap();
        if json["message"] == "app unreachable" {
            break json;
        }
    };
    assert_eq!(warning["level"], "warn");
    assert_eq!(warning["request_id"], "down-1");
    assert_eq!(
        warning["cause"],
        format!("connection refused to {address}"),
        "{warning}"
    );
}

/// Fault injection (issue 10): an app that dies mid-body cuts that one
/// response short (the client can tell: fewer bytes than promised, the
/// connection closed) and nothing else.
#[tokio::test]
async fn an_app_dying_mid_body_cuts_only_that_response() {
    let (_app, sidecar) = setup().await;
    let cut = reqwest::get(sidecar.url("/cut")).await.unwrap();
    assert_eq!(cut.status(), 200);
    assert!(cut.bytes().await.is_err(), "the client sees the cut");
    for _ in 0..3 {
        let response = raw::request(sidecar.addr, "GET", "/echo", "").await;
        assert_eq!(response.status, 200, "healthy afterwards");
    }
}

/// `worker_threads = 4`: four threads accept on the one socket, each with
/// its own pool to the app; 64 clients at once are all served, each
/// connection's requests reuse a pooled connection of its worker.
#[tokio::test]
async fn several_workers_share_the_listener() {
    let app = FakeApp::start().await;
    let sidecar = Sidecar::builder(&app.url())
        .set("server", "worker_threads = 4")
        .start()
        .await;
    let clients = (0..64).map(|_| {
        let url = sidecar.url("/echo");
        tokio::spawn(async move {
            // One keep-alive connection each.
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .build()
                .unwrap();
            for _ in 0..10 {
                let response = client.get(&url).send().await.unwrap();
                assert_eq!(response.status(), 200);
                response.bytes().await.unwrap();
            }
        })
    });
    for client in futures_util::future::join_all(clients).await {
        client.unwrap();
    }
    assert_eq!(app.requests(), 640);
    assert!(
        app.connections() <= 64,
        "pooled per worker: {} connections to the app",
        app.connections()
    );
    let mut metrics = String::new();
    for _ in 0..100 {
        metrics = raw::request(sidecar.admin, "GET", "/metrics", "")
            .await
            .body;
        if metrics.contains("stripe_sidecar_requests_total{action=\"proxy\",status=\"200\"} 640") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("640 requests counted:\n{metrics}");
}
