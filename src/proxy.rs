//! Forwarding to the app: header rewriting, the pooled upstream client,
//! streaming bodies and protocol upgrades (WebSocket and others).
//!
//! The request line goes out byte-for-byte (only the scheme and authority
//! are the app's), the body streams through hyper with its own
//! back-pressure (nothing is buffered, so a 1 GiB upload costs what a small
//! one does), and the response comes back unchanged but for hop-by-hop
//! headers. The client is hyper-util's pooled keep-alive client with a
//! bounded idle pool. This module does not decide *whether* to proxy; the
//! route table does.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::Frame;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio_util::task::TaskTracker;

use crate::config::Upstream;
use crate::error::Error;
use crate::metrics::KindLabel;
use crate::{Body, BoxError};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

/// Idle keep-alive connections kept to the app; more are opened under load
/// and closed when idle.
const MAX_IDLE_CONNECTIONS: usize = 128;
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Proxy {
    client: Client<HttpConnector, Body>,
    authority: http::uri::Authority,
    read_timeout: Option<Duration>,
    errors: Family<KindLabel, Counter>,
}

impl Proxy {
    pub fn new(upstream: &Upstream, errors: Family<KindLabel, Counter>) -> Proxy {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(upstream.connect_timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(MAX_IDLE_CONNECTIONS)
            .pool_idle_timeout(IDLE_TIMEOUT)
            .pool_timer(TokioTimer::new())
            .build(connector);
        Proxy {
            client,
            authority: upstream.authority.clone(),
            read_timeout: upstream.read_timeout,
            errors,
        }
    }

    /// Proxies one client request to the app. Upgraded connections are
    /// spawned on `tunnels` so shutdown can wait for them.
    pub async fn forward(
        &self,
        mut request: Request<Incoming>,
        peer: SocketAddr,
        tunnels: &TaskTracker,
    ) -> Result<Response<Body>, Error> {
        let upgrade = is_upgrade(request.headers()).then(|| hyper::upgrade::on(&mut request));
        let (mut parts, body) = request.into_parts();
        rewrite_request_headers(
            &mut parts.headers,
            parts.uri.authority(),
            peer.ip(),
            upgrade.is_some(),
        );
        let outbound = Request::from_parts(parts, crate::boxed(body));
        let mut response = self.send(outbound).await?;
        let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
        if let (true, Some(client_side)) = (switching, upgrade) {
            let app_side = hyper::upgrade::on(&mut response);
            tunnels.spawn(async move {
                if let (Ok(client), Ok(app)) = (client_side.await, app_side.await) {
                    let mut client = TokioIo::new(client);
                    let mut app = TokioIo::new(app);
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut app).await;
                }
            });
        }
        strip_hop_by_hop(response.headers_mut(), switching);
        Ok(match self.read_timeout {
            Some(limit) => response.map(|body| crate::boxed(IdleTimeout::new(body, limit))),
            None => response.map(crate::boxed),
        })
    }

    /// Sends a request to the app: the path and query of `request` are kept
    /// byte-for-byte, the scheme and authority become the app's. Failures
    /// are counted by kind.
    pub async fn send(&self, request: Request<Body>) -> Result<Response<Incoming>, Error> {
        let result = self.send_uncounted(request).await;
        if let Err(error) = &result {
            let kind = match error {
                Error::UpstreamTimeout => "timeout",
                Error::Upstream { kind, .. } => kind,
                _ => "request",
            };
            self.errors.get_or_create(&KindLabel { kind }).inc();
        }
        result
    }

    async fn send_uncounted(
        &self,
        mut request: Request<Body>,
    ) -> Result<Response<Incoming>, Error> {
        let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
        *request.uri_mut() = Uri::builder()
            .scheme("http")
            .authority(self.authority.clone())
            .path_and_query(path)
            .build()
            .map_err(|e| Error::Internal(e.into()))?;
        // The app speaks HTTP/1.1 whatever the client spoke.
        *request.version_mut() = Version::HTTP_11;
        let call = self.client.request(request);
        let result = match self.read_timeout {
            Some(limit) => tokio::time::timeout(limit, call)
                .await
                .map_err(|_| Error::UpstreamTimeout)?,
            None => call.await,
        };
        result.map_err(|e| Error::Upstream {
            kind: if e.is_connect() { "connect" } else { "request" },
            source: e.into(),
        })
    }
}

/// A response body that fails when the app sends nothing for `limit`, as
/// nginx's `proxy_read_timeout` does between two reads: the client sees the
/// response cut short instead of waiting forever.
struct IdleTimeout {
    inner: Incoming,
    limit: Duration,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl IdleTimeout {
    fn new(inner: Incoming, limit: Duration) -> IdleTimeout {
        IdleTimeout {
            inner,
            limit,
            deadline: Box::pin(tokio::time::sleep(limit)),
        }
    }
}

impl http_body::Body for IdleTimeout {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            let next = tokio::time::Instant::now() + self.limit;
            self.deadline.as_mut().reset(next);
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(
                "the app sent nothing for upstream.read_timeout_ms".into(),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// `Connection: upgrade` with an `Upgrade` header (HTTP/1.1 only).
fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && connection_tokens(headers).any(|t| t.eq_ignore_ascii_case("upgrade"))
}

fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Removes hop-by-hop headers (RFC 9110 section 7.6.1): `Connection` and the
/// headers it names, `Keep-Alive`, `Proxy-*`, `TE`, `Trailer`,
/// `Transfer-Encoding` and, outside an upgrade, `Upgrade`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    let named: Vec<HeaderName> = connection_tokens(headers)
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .collect();
    for name in named {
        if !(upgrade && name == header::UPGRADE) {
            headers.remove(&name);
        }
    }
    let proxy_headers: Vec<HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().starts_with("proxy-"))
        .cloned()
        .collect();
    for name in proxy_headers {
        headers.remove(&name);
    }
    for name in [
        header::CONNECTION,
        HeaderName::from_static("keep-alive"),
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
    ] {
        headers.remove(name);
    }
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(header::UPGRADE);
    }
}

/// Rewrites a client request's headers for the app: hop-by-hop headers
/// removed, `X-Forwarded-For` appended, `X-Forwarded-Proto` and
/// `X-Forwarded-Host` set, `Host` kept (taken from the authority for HTTP/2
/// clients, which send none). `Expect` is answered here by hyper, so it is
/// not passed on.
pub fn rewrite_request_headers(
    headers: &mut HeaderMap,
    authority: Option<&http::uri::Authority>,
    client_ip: IpAddr,
    upgrade: bool,
) {
    strip_hop_by_hop(headers, upgrade);
    headers.remove(header::EXPECT);
    if !headers.contains_key(header::HOST) {
        if let Some(value) = authority.and_then(|a| HeaderValue::from_str(a.as_str()).ok()) {
            headers.insert(header::HOST, value);
        }
    }
    let forwarded_for = match headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
    {
        earlier if earlier.is_empty() => client_ip.to_string(),
        earlier => format!("{}, {client_ip}", earlier.join(", ")),
    };
    if let Ok(value) = HeaderValue::from_str(&forwarded_for) {
        headers.insert("x-forwarded-for", value);
    }
    headers.insert("x-forwarded-proto", HeaderValue::from_static("http"));
    match headers.get(header::HOST).cloned() {
        Some(host) => headers.insert("x-forwarded-host", host),
        None => headers.remove("x-forwarded-host"),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    fn names(map: &HeaderMap) -> Vec<&str> {
        let mut names: Vec<_> = map.keys().map(|k| k.as_str()).collect();
        names.sort();
        names
    }

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 1, 2, 3));

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut map = headers(&[
            ("host", "app.example"),
            ("connection", "keep-alive, X-Secret-Hop"),
            ("connection", "close"),
            ("x-secret-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-authorization", "Basic x"),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers"),
            ("trailer", "x-checksum"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("expect", "100-continue"),
            ("cookie", "a=1"),
            ("authorization", "Bearer t"),
        ]);
        rewrite_request_headers(&mut map, None, IP, false);
        assert_eq!(
            names(&map),
            [
                "authorization",
                "cookie",
                "host",
                "x-forwarded-for",
                "x-forwarded-host",
                "x-forwarded-proto"
            ]
        );
        assert_eq!(map["host"], "app.example");
    }

    #[test]
    fn upgrades_keep_upgrade_and_connection() {
        let mut map = headers(&[
            ("host", "h"),
            ("connection", "Upgrade, keep-alive"),
            ("upgrade", "websocket"),
            ("sec-websocket-key", "k"),
        ]);
        assert!(is_upgrade(&map));
        rewrite_request_headers(&mut map, None, IP, true);
        assert_eq!(map["connection"], "upgrade");
        assert_eq!(map["upgrade"], "websocket");
        assert_eq!(map["sec-websocket-key"], "k");
        assert!(!is_upgrade(&headers(&[("upgrade", "websocket")])));
    }

    #[test]
    fn forwarded_headers_append_for_and_overwrite_proto_and_host() {
        type Headers<'a> = &'a [(&'a str, &'a str)];
        let cases: &[(Headers, &str, &str)] = &[
            (&[("host", "a.com")], "10.1.2.3", "a.com"),
            (
                &[("host", "a.com"), ("x-forwarded-for", "1.1.1.1")],
                "1.1.1.1, 10.1.2.3",
                "a.com",
            ),
            (
                &[
                    ("host", "a.com"),
                    ("x-forwarded-for", "1.1.1.1"),
                    ("x-forwarded-for", "2.2.2.2"),
                    ("x-forwarded-proto", "https-spoofed"),
                    ("x-forwarded-host", "evil.com"),
                ],
                "1.1.1.1, 2.2.2.2, 10.1.2.3",
                "a.com",
            ),
        ];
        for (input, xff, xfh) in cases {
            let mut map = headers(input);
            rewrite_request_headers(&mut map, None, IP, false);
            assert_eq!(map["x-forwarded-for"], *xff);
            assert_eq!(map.get_all("x-forwarded-for").iter().count(), 1);
            assert_eq!(map["x-forwarded-proto"], "http");
            assert_eq!(map["x-forwarded-host"], *xfh);
        }
    }

    #[test]
    fn http2_clients_get_host_from_the_authority() {
        let mut map = HeaderMap::new();
        let authority = http::uri::Authority::from_static("h2.example:8080");
        rewrite_request_headers(&mut map, Some(&authority), IP, false);
        assert_eq!(map["host"], "h2.example:8080");
        assert_eq!(map["x-forwarded-host"], "h2.example:8080");
    }

    #[test]
    fn response_hop_by_hop_headers_are_removed_but_set_cookie_kept() {
        let mut map = headers(&[
            ("connection", "close"),
            ("transfer-encoding", "chunked"),
            ("set-cookie", "a=1"),
            ("set-cookie", "b=2"),
        ]);
        strip_hop_by_hop(&mut map, false);
        assert_eq!(names(&map), ["set-cookie"]);
        assert_eq!(map.get_all("set-cookie").iter().count(), 2);
    }
}
