//! The fake upstream web app the end-to-end tests put behind the sidecar.
//!
//! It is a real HTTP/1.1 server on an ephemeral 127.0.0.1 port, built directly on hyper so
//! the tests exercise the proxy against genuine sockets: echo (to see exactly what the proxy
//! forwarded), fixed statuses, streaming upload/download, server-sent events, a WebSocket
//! echo, a slow endpoint and a settable JWKS document. It counts accepted TCP connections
//! and served requests so tests can prove keep-alive reuse.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// Unsync so streaming bodies may hold any `Send` future (e.g. a timer) without a `Sync` bound.
type Body = UnsyncBoxBody<Bytes, Infallible>;

const CHUNK: usize = 64 * 1024;

struct Shared {
    connections: AtomicUsize,
    requests: AtomicUsize,
    jwks: Mutex<String>,
    jwks_fetches: AtomicUsize,
    /// The customer lookup the app implements for `customers.source = "http"`.
    customers: Mutex<std::collections::HashMap<String, String>>,
    /// Each lookup: the request target and its `x-lookup-key` header.
    lookups: Mutex<Vec<(String, Option<String>)>>,
    /// The app's own webhook endpoint: its secret, the status it answers
    /// verified events with, and what it received.
    webhook_secret: Mutex<String>,
    webhook_status: Mutex<u16>,
    webhooks: Mutex<Vec<Received>>,
}

/// A webhook as the app received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub uri: String,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    /// Whether the app's own Stripe signature check passed.
    pub verified: bool,
}

/// A running fake app; dropping it stops the listener and every open HTTP connection.
pub struct FakeApp {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl FakeApp {
    /// Binds 127.0.0.1:0 and spawns the accept loop; the socket is listening on return.
    pub async fn start() -> FakeApp {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake app");
        let addr = listener.local_addr().expect("fake app addr");
        let shared = Arc::new(Shared {
            connections: AtomicUsize::new(0),
            requests: AtomicUsize::new(0),
            jwks: Mutex::new(r#"{"keys":[]}"#.to_string()),
            jwks_fetches: AtomicUsize::new(0),
            customers: Mutex::default(),
            lookups: Mutex::default(),
            webhook_secret: Mutex::new(String::new()),
            webhook_status: Mutex::new(200),
            webhooks: Mutex::default(),
        });
        let task = tokio::spawn(accept_loop(listener, shared.clone()));
        FakeApp { addr, shared, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Requests received so far (counted as soon as the head is parsed).
    pub fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// Makes `/customers/{user_id}` answer 200 `{"customerId": customer_id}`
    /// (otherwise 404).
    pub fn set_customer(&self, user_id: &str, customer_id: &str) {
        let mut customers = self.shared.customers.lock().unwrap();
        customers.insert(user_id.into(), customer_id.into());
    }

    /// The customer lookups received: target and `x-lookup-key` header.
    pub fn lookups(&self) -> Vec<(String, Option<String>)> {
        self.shared.lookups.lock().unwrap().clone()
    }

    /// The secret the app's own `/api/stripe/webhook` verifies with, as an
    /// app using `stripe.webhooks.constructEvent` would.
    pub fn set_webhook_secret(&self, secret: &str) {
        *self.shared.webhook_secret.lock().unwrap() = secret.into();
    }

    /// The status the app answers verified webhooks with (default 200).
    pub fn set_webhook_status(&self, status: u16) {
        *self.shared.webhook_status.lock().unwrap() = status;
    }

    /// The webhooks the app received.
    pub fn webhooks(&self) -> Vec<Received> {
        self.shared.webhooks.lock().unwrap().clone()
    }

    /// How many times `/jwks.json` was fetched.
    pub fn jwks_fetches(&self) -> usize {
        self.shared.jwks_fetches.load(Ordering::SeqCst)
    }

    /// Replaces the body served at `/jwks.json`.
    pub fn set_jwks(&self, body: String) {
        *self.shared.jwks.lock().unwrap() = body;
    }
}

impl Drop for FakeApp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    // Connections live in this JoinSet so aborting the loop also closes them, making a
    // dropped app look like a dead upstream rather than a half-alive one.
    let mut conns = JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        shared.connections.fetch_add(1, Ordering::SeqCst);
        while conns.try_join_next().is_some() {}
        let shared = shared.clone();
        conns.spawn(async move {
            let svc = service_fn(move |req| {
                let shared = shared.clone();
                async move {
                    shared.requests.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, Infallible>(route(req, &shared).await)
                }
            });
            // Takes as many headers as the sidecar passes on.
            let _ = http1::Builder::new()
                .max_headers(16 * 1024)
                .serve_connection(TokioIo::new(stream), svc)
                .with_upgrades()
                .await;
        });
    }
}

async fn route(req: Request<Incoming>, shared: &Shared) -> Response<Body> {
    let path = req.uri().path().to_string();
    let get = req.method() == Method::GET;
    match path.as_str() {
        p if p.starts_with("/echo") => echo(req).await,
        p if p.starts_with("/status/") => match p["/status/".len()..].parse::<u16>() {
            Ok(code) => match StatusCode::from_u16(code) {
                Ok(status) => text(status, format!("app says {code}")),
                Err(_) => not_found(),
            },
            Err(_) => not_found(),
        },
        "/upload" if req.method() == Method::POST => upload(req).await,
        "/download" if get => download(query_num(&req, "bytes").unwrap_or(0)),
        "/sse" if get => sse(
            query_num(&req, "events").unwrap_or(1),
            query_num(&req, "interval_ms").unwrap_or(0),
        ),
        "/ws" if get => websocket(req),
        // Promises 1000 bytes, sends 10, and closes: an app dying mid-body.
        "/cut" => {
            // The ten bytes go out (the stream then waits), then it ends.
            let body = StreamBody::new(futures_util::stream::unfold(0, |sent| async move {
                if sent > 0 {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    return None;
                }
                Some((Ok(Frame::data(Bytes::from_static(b"0123456789"))), 1))
            }));
            let mut resp = Response::new(body.boxed_unsync());
            resp.headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from_static("1000"));
            resp
        }
        // Answers 101 with whatever protocol `?to=` names, asked or not.
        "/switch" => {
            let to = req.uri().query().and_then(|q| q.strip_prefix("to="));
            let mut resp = Response::new(empty());
            *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            let to = HeaderValue::from_str(to.unwrap_or("h2c")).unwrap();
            resp.headers_mut().insert(header::UPGRADE, to);
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            resp
        }
        "/slow" if get => {
            let ms = query_num(&req, "ms").unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            text(StatusCode::OK, "slow done".into())
        }
        p if p.starts_with("/customers/") && get => {
            let key = req.headers().get("x-lookup-key");
            let key = key.map(|v| v.to_str().unwrap_or_default().to_string());
            let target = req.uri().to_string();
            shared.lookups.lock().unwrap().push((target, key));
            let user = percent_encoding::percent_decode_str(&p["/customers/".len()..])
                .decode_utf8_lossy()
                .into_owned();
            match shared.customers.lock().unwrap().get(&user) {
                Some(id) => json(serde_json::json!({ "customerId": id }).to_string()),
                None => not_found(),
            }
        }
        p if p.starts_with("/api/stripe/webhook") || p.starts_with("/hooks/") => {
            webhook(req, shared).await
        }
        "/jwks.json" => {
            shared.jwks_fetches.fetch_add(1, Ordering::SeqCst);
            let body = shared.jwks.lock().unwrap().clone();
            json(body)
        }
        _ => not_found(),
    }
}

/// The app's own webhook handler: it checks `Stripe-Signature` itself
/// (HMAC-SHA256 over `t.body`, any `v1`), independently of the sidecar.
async fn webhook(req: Request<Incoming>, shared: &Shared) -> Response<Body> {
    use hmac::Mac;
    let (parts, body) = req.into_parts();
    let body = read_all(body).await;
    let header = parts
        .headers
        .get("stripe-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let timestamp = header
        .split(',')
        .find_map(|p| p.strip_prefix("t="))
        .unwrap_or_default();
    let secret = shared.webhook_secret.lock().unwrap().clone();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(&body);
    let expected: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let verified = header
        .split(',')
        .filter_map(|p| p.strip_prefix("v1="))
        .any(|sig| sig == expected);
    shared.webhooks.lock().unwrap().push(Received {
        uri: parts.uri.to_string(),
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| {
                (
                    n.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body,
        verified,
    });
    if !verified {
        return text(StatusCode::BAD_REQUEST, "app: bad signature".into());
    }
    let status = *shared.webhook_status.lock().unwrap();
    let mut response = text(
        StatusCode::from_u16(status).unwrap(),
        format!("app handled the event ({status})"),
    );
    response
        .headers_mut()
        .insert("x-app-webhook", HeaderValue::from_static("1"));
    response
}

async fn echo(req: Request<Incoming>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let body = read_all(body).await;
    // hyper's HeaderMap keeps first-seen name order but groups repeated names together.
    let headers: Vec<[String; 2]> = parts
        .headers
        .iter()
        .map(|(n, v)| {
            [
                n.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            ]
        })
        .collect();
    let doc = serde_json::json!({
        "method": parts.method.as_str(),
        "uri": parts.uri.to_string(),
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
        "body_len": body.len(),
        "version": format!("{:?}", parts.version),
    });
    let mut resp = json(doc.to_string());
    let h = resp.headers_mut();
    h.append(header::SET_COOKIE, HeaderValue::from_static("a=1; Path=/"));
    h.append(header::SET_COOKIE, HeaderValue::from_static("b=2"));
    h.insert("x-app", HeaderValue::from_static("echo"));
    resp
}

async fn upload(req: Request<Incoming>) -> Response<Body> {
    // Frame by frame, so tests can push bodies far larger than we would want in memory.
    let mut body = req.into_body();
    let (mut bytes, mut sum) = (0u64, 0u64);
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return text(StatusCode::BAD_REQUEST, "body error".into());
        };
        if let Some(data) = frame.data_ref() {
            bytes += data.len() as u64;
            sum = data.iter().fold(sum, |s, b| s.wrapping_add(*b as u64));
        }
    }
    json(serde_json::json!({ "bytes": bytes, "sum": sum }).to_string())
}

fn download(total: u64) -> Response<Body> {
    // One 64 KiB chunk allocated at a time; no length hint, so hyper uses chunked encoding.
    let stream = futures_util::stream::unfold(0u64, move |off| async move {
        if off >= total {
            return None;
        }
        let n = (total - off).min(CHUNK as u64);
        let chunk: Vec<u8> = (off..off + n).map(|i| (i % 251) as u8).collect();
        Some((Ok(Frame::data(Bytes::from(chunk))), off + n))
    });
    let mut resp = Response::new(StreamBody::new(stream).boxed_unsync());
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    resp
}

fn sse(events: u64, interval_ms: u64) -> Response<Body> {
    // The sleep between events makes hyper flush each one as its own frame on the wire.
    let stream = futures_util::stream::unfold(0u64, move |i| async move {
        if i >= events {
            return None;
        }
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(interval_ms)).await;
        }
        Some((
            Ok(Frame::data(Bytes::from(format!("data: event {i}\n\n")))),
            i + 1,
        ))
    });
    let mut resp = Response::new(StreamBody::new(stream).boxed_unsync());
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

fn websocket(mut req: Request<Incoming>) -> Response<Body> {
    let h = req.headers();
    let wants_ws = h
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let key = match (wants_ws, h.get(header::SEC_WEBSOCKET_KEY)) {
        (true, Some(key)) => derive_accept_key(key.as_bytes()),
        _ => return text(StatusCode::BAD_REQUEST, "expected websocket upgrade".into()),
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let mut ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        if ws.send(Message::text("hello")).await.is_err() {
            return;
        }
        // Keep polling after a Close: that is what flushes tungstenite's close reply.
        while let Some(Ok(msg)) = ws.next().await {
            if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                return;
            }
        }
    });
    let mut resp = Response::new(empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&key).unwrap(),
    );
    resp
}

/// A numeric query parameter; the tests only ever pass plain digits, so no decoding.
fn query_num(req: &Request<Incoming>, name: &str) -> Option<u64> {
    req.uri()
        .query()?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .and_then(|(_, v)| v.parse().ok())
}

fn empty() -> Body {
    Full::new(Bytes::new()).boxed_unsync()
}

fn text(status: StatusCode, body: String) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(body)).boxed_unsync());
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

fn json(body: String) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(body)).boxed_unsync());
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn not_found() -> Response<Body> {
    text(StatusCode::NOT_FOUND, "not found".into())
}

/// The whole request body (empty if the client broke off).
async fn read_all(body: Incoming) -> Bytes {
    body.collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default()
}
