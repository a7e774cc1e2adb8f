//! Forwarding to the app: header rewriting, the pooled upstream client,
//! streaming bodies and protocol upgrades (WebSocket and others).
//!
//! The request line goes out byte-for-byte (only the scheme and authority
//! are the app's), the body streams through hyper with its own
//! back-pressure (nothing is buffered, so a 1 GiB upload costs what a small
//! one does), and the response comes back unchanged but for hop-by-hop
//! headers, as HTTP/1.1. The forwarding headers follow the contract's
//! Proxying section: a peer in `server.trusted_proxies` may vouch for the
//! client, anyone else is the client. The client is hyper-util's pooled
//! keep-alive client with a bounded idle pool. This module does not decide
//! *whether* to proxy (the route table does) and is also how a verified
//! webhook reaches the app.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use ipnet::IpNet;
use thread_local::ThreadLocal;
use tokio_util::task::TaskTracker;
use tower_http::timeout::TimeoutBody;

use crate::body::{self, Body};
use crate::config::Upstream;
use crate::error::Error;
use crate::metrics::{Metrics, UpstreamFailure};

/// Idle keep-alive connections kept to the app; more are opened under load
/// and closed when idle.
const MAX_IDLE_CONNECTIONS: usize = 128;
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Request line and headers accepted, in all, whatever the number of
/// headers: Supabase session cookies are large. Beyond this a client gets
/// 431; the app's response heads get the same room. Clients speak HTTP/1.1
/// (or 1.0) to the sidecar, as to nginx by default.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");

pub struct Proxy {
    /// Each worker thread's own pool (see [`crate::server`]): a pooled
    /// connection is driven by the thread that uses it.
    clients: ThreadLocal<Client<HttpConnector, Body>>,
    connect_timeout: Duration,
    authority: http::uri::Authority,
    read_timeout: Option<Duration>,
    trusted_proxies: Vec<IpNet>,
    /// `[identity_headers]` names: never passed on from the client.
    identity_names: Vec<HeaderName>,
    metrics: Arc<Metrics>,
    /// Upgraded connections (WebSockets), which outlive their request;
    /// shutdown waits for them.
    tunnels: TaskTracker,
}

impl Proxy {
    pub fn new(
        upstream: &Upstream,
        trusted_proxies: Vec<IpNet>,
        identity_names: Vec<HeaderName>,
        metrics: Arc<Metrics>,
    ) -> Proxy {
        Proxy {
            clients: ThreadLocal::new(),
            connect_timeout: upstream.connect_timeout,
            authority: upstream.authority.clone(),
            read_timeout: upstream.read_timeout,
            trusted_proxies,
            identity_names,
            metrics,
            tunnels: TaskTracker::new(),
        }
    }

    /// This thread's client to the app.
    fn client(&self) -> &Client<HttpConnector, Body> {
        self.clients.get_or(|| {
            let mut connector = HttpConnector::new();
            connector.set_connect_timeout(Some(self.connect_timeout));
            connector.set_nodelay(true);
            Client::builder(TokioExecutor::new())
                .pool_max_idle_per_host(MAX_IDLE_CONNECTIONS)
                .pool_idle_timeout(IDLE_TIMEOUT)
                .pool_timer(TokioTimer::new())
                // The app's response head fits in what a client may send; the
                // default (~400 KiB) lets each pooled connection's read buffer
                // grow that far and keep it.
                .http1_max_buf_size(MAX_HEADER_BYTES + 4096)
                .build(connector)
        })
    }

    pub fn tunnels(&self) -> &TaskTracker {
        &self.tunnels
    }

    /// Forwards one request from `peer` to the app, with `identity` as
    /// its identity headers, and returns the app's response. An upgrade
    /// the app accepts becomes a tunnel.
    pub async fn forward(
        &self,
        mut request: Request<Body>,
        peer: SocketAddr,
        identity: Vec<(HeaderName, HeaderValue)>,
    ) -> Result<Response<Body>, Error> {
        let asked = upgrade_protocols(request.headers());
        let client_side = asked.is_some().then(|| hyper::upgrade::on(&mut request));
        strip_hop_by_hop(request.headers_mut(), asked.is_some());
        // After the hop-by-hop pass, so `Connection` cannot remove them.
        for name in &self.identity_names {
            request.headers_mut().remove(name);
        }
        for (name, value) in identity {
            request.headers_mut().insert(name, value);
        }
        request.headers_mut().remove(header::EXPECT);
        self.set_forwarding(request.headers_mut(), peer.ip());
        let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
        *request.uri_mut() = Uri::builder()
            .scheme("http")
            .authority(self.authority.clone())
            .path_and_query(path)
            .build()
            .map_err(|e| Error::Internal(e.into()))?;
        *request.version_mut() = Version::HTTP_11;

        let call = self.client().request(request);
        let result = match self.read_timeout {
            Some(limit) => tokio::time::timeout(limit, call).await.map_err(|_| {
                self.failed(
                    UpstreamFailure::Timeout,
                    format!(
                        "no response from {} within upstream.read_timeout_ms",
                        self.authority
                    ),
                )
            })?,
            None => call.await,
        };
        let mut response = result.map_err(|error| self.send_error(&error))?;

        let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
        if switching {
            let client_side = match (client_side, asked) {
                (Some(client_side), Some(asked)) if switches_to(&response, &asked) => client_side,
                _ => {
                    return Err(self.failed(
                        UpstreamFailure::Request,
                        format!(
                            "{} switched to a protocol the client did not ask for",
                            self.authority
                        ),
                    ))
                }
            };
            let app_side = hyper::upgrade::on(&mut response);
            self.tunnels.spawn(async move {
                if let (Ok(client), Ok(app)) = (client_side.await, app_side.await) {
                    let mut client = TokioIo::new(client);
                    let mut app = TokioIo::new(app);
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut app).await;
                }
            });
        }
        strip_hop_by_hop(response.headers_mut(), switching);
        // The client talks to the sidecar, which speaks HTTP/1.1 whatever
        // the app spoke.
        *response.version_mut() = Version::HTTP_11;
        Ok(match self.read_timeout {
            // Already a `BoxError` body: boxed as is (`body::boxed`'s
            // `Into` bound trips the compiler's Send check here).
            Some(limit) => response.map(|b| TimeoutBody::new(limit, b).boxed_unsync()),
            None => response.map(body::boxed),
        })
    }

    /// Counts a failure of the app and names it.
    fn failed(&self, failure: UpstreamFailure, cause: String) -> Error {
        self.metrics.upstream_error(failure);
        Error::Upstream { failure, cause }
    }

    /// Sorts a failed send: the client's own broken body is a 400 and not
    /// the app's fault; anything else names its cause and the app's
    /// address, as oauth2-proxy does (`connection refused to 127.0.0.1:3000`).
    fn send_error(&self, error: &hyper_util::client::legacy::Error) -> Error {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
        let mut io = None;
        while let Some(current) = source {
            if let Some(hyper) = current.downcast_ref::<hyper::Error>() {
                if hyper.is_user() {
                    // Only the client's body can fail on our side of a send.
                    return Error::MalformedBody(error.to_string().into());
                }
            }
            if let Some(e) = current.downcast_ref::<std::io::Error>() {
                io = Some(e);
            }
            source = current.source();
        }
        let cause = match io.map(std::io::Error::kind) {
            Some(std::io::ErrorKind::ConnectionRefused) => "connection refused".to_string(),
            Some(std::io::ErrorKind::TimedOut) => "connect timed out".to_string(),
            Some(std::io::ErrorKind::ConnectionReset) => "connection reset".to_string(),
            _ => match io {
                Some(io) => io.to_string(),
                None => last_source(error),
            },
        };
        let failure = if error.is_connect() {
            UpstreamFailure::Connect
        } else {
            UpstreamFailure::Request
        };
        self.failed(failure, format!("{cause} to {}", self.authority))
    }

    /// Sets the forwarding headers (see the module doc).
    fn set_forwarding(&self, headers: &mut HeaderMap, peer: IpAddr) {
        headers.remove(header::FORWARDED);
        let trusted = self.trusted_proxies.iter().any(|net| net.contains(&peer));
        let host = headers.get(header::HOST).cloned();
        if trusted {
            let client = client_ip(headers, peer, &self.trusted_proxies);
            set_if_absent(headers, X_REAL_IP, header_value(&client.to_string()));
            set_if_absent(
                headers,
                X_FORWARDED_PROTO,
                Some(HeaderValue::from_static("http")),
            );
            set_if_absent(headers, X_FORWARDED_HOST, host);
        } else {
            headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
            match host {
                Some(host) => headers.insert(X_FORWARDED_HOST, host),
                None => headers.remove(X_FORWARDED_HOST),
            };
            if let Some(peer) = header_value(&peer.to_string()) {
                headers.insert(X_REAL_IP, peer);
            }
        }
        let earlier: Vec<&str> = headers
            .get_all(X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        let forwarded_for = match earlier.is_empty() {
            true => peer.to_string(),
            false => format!("{}, {peer}", earlier.join(", ")),
        };
        match header_value(&forwarded_for) {
            Some(value) => headers.insert(X_FORWARDED_FOR, value),
            None => headers.remove(X_FORWARDED_FOR),
        };
    }
}

fn header_value(text: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(text).ok()
}

fn set_if_absent(headers: &mut HeaderMap, name: HeaderName, value: Option<HeaderValue>) {
    if let (false, Some(value)) = (headers.contains_key(&name), value) {
        headers.insert(name, value);
    }
}

fn last_source(error: &dyn std::error::Error) -> String {
    let mut last = error;
    while let Some(next) = last.source() {
        last = next;
    }
    last.to_string()
}

/// The client's address: the peer, unless the peer is a trusted proxy, in
/// which case the right-most `X-Forwarded-For` address that is not a
/// trusted proxy (the left-most when all are; the peer when the header says
/// nothing usable).
pub fn client_ip(headers: &HeaderMap, peer: IpAddr, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let hops: Vec<&str> = headers
        .get_all(X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        let Some(ip) = parse_hop(hop) else {
            // Garbage a trusted proxy passed on: nothing left to believe.
            return client;
        };
        client = ip;
        if !is_trusted(&ip) {
            break;
        }
    }
    client
}

/// An `X-Forwarded-For` entry: an IP, possibly with a port or brackets.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|s| s.ip()))
}

/// The protocols of an upgrade request (`Connection: upgrade` with an
/// `Upgrade` header), `None` for any other request. `h2c` is never
/// upgraded: such a request goes on as plain HTTP/1.1.
fn upgrade_protocols(headers: &HeaderMap) -> Option<Vec<String>> {
    if !connection_tokens(headers).any(|t| t.eq_ignore_ascii_case("upgrade")) {
        return None;
    }
    let protocols: Vec<String> = headers
        .get_all(header::UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_ascii_lowercase())
        .filter(|p| !p.is_empty())
        .collect();
    let h2c = protocols.iter().any(|p| protocol_name(p) == "h2c");
    (!protocols.is_empty() && !h2c).then_some(protocols)
}

/// Whether a `101` switches to a protocol the client asked for.
fn switches_to<B>(response: &Response<B>, asked: &[String]) -> bool {
    let Some(chosen) = response
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let chosen = chosen.trim().to_ascii_lowercase();
    // A version the client named must be the one chosen; a bare name
    // accepts any version of it.
    asked
        .iter()
        .any(|p| *p == chosen || (!p.contains('/') && *p == protocol_name(&chosen)))
}

fn protocol_name(protocol: &str) -> &str {
    protocol.split('/').next().unwrap_or(protocol).trim()
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
/// `Transfer-Encoding` and, outside an upgrade, `Upgrade`. `Host` and
/// `X-Request-Id` stay whatever `Connection` names.
fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    let named: Vec<HeaderName> = connection_tokens(headers)
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .filter(|name| *name != header::HOST && *name != X_REQUEST_ID)
        .filter(|name| !(upgrade && *name == header::UPGRADE))
        .collect();
    let proxy_headers: Vec<HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().starts_with("proxy-"))
        .cloned()
        .collect();
    for name in named.into_iter().chain(proxy_headers) {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        KEEP_ALIVE,
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

    fn proxy(trusted: &[&str]) -> Proxy {
        let config = crate::config::Config::parse("", &|_| None).unwrap();
        let trusted = trusted.iter().map(|n| n.parse().unwrap()).collect();
        Proxy::new(
            &config.upstream,
            trusted,
            Vec::new(),
            Arc::new(Metrics::default()),
        )
    }

    fn forwarded(trusted: &[&str], peer: &str, pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = headers(pairs);
        proxy(trusted).set_forwarding(&mut map, peer.parse().unwrap());
        map
    }

    fn values<'a>(map: &'a HeaderMap, name: &str) -> Vec<&'a str> {
        map.get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect()
    }

    #[test]
    fn hop_by_hop_headers_are_removed_but_host_and_request_id_stay() {
        let mut map = headers(&[
            ("host", "app.example"),
            ("connection", "keep-alive, X-Secret-Hop, Host, X-Request-Id"),
            ("connection", "close"),
            ("x-secret-hop", "1"),
            ("x-request-id", "r-1"),
            ("keep-alive", "timeout=5"),
            ("proxy-authorization", "Basic x"),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers"),
            ("trailer", "x-checksum"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("cookie", "a=1"),
        ]);
        strip_hop_by_hop(&mut map, false);
        assert_eq!(names(&map), ["cookie", "host", "x-request-id"]);
    }

    #[test]
    fn upgrades_are_for_the_protocols_asked_and_never_h2c() {
        let ws = headers(&[
            ("connection", "Upgrade, keep-alive"),
            ("upgrade", "WebSocket"),
        ]);
        assert_eq!(upgrade_protocols(&ws), Some(vec!["websocket".to_string()]));
        for not in [
            headers(&[("upgrade", "websocket")]),
            headers(&[("connection", "upgrade")]),
            headers(&[
                ("connection", "Upgrade, HTTP2-Settings"),
                ("upgrade", "h2c"),
            ]),
            headers(&[("connection", "upgrade"), ("upgrade", "websocket, h2c")]),
        ] {
            assert_eq!(upgrade_protocols(&not), None, "{not:?}");
        }
        let answer = |upgrade: &str| {
            Response::builder()
                .status(101)
                .header("upgrade", upgrade)
                .body(())
                .unwrap()
        };
        let asked = vec!["websocket".to_string()];
        assert!(switches_to(&answer("websocket"), &asked));
        assert!(switches_to(&answer("WebSocket"), &asked));
        assert!(!switches_to(&answer("h2c"), &asked));
        assert!(!switches_to(&answer("tls/1.3"), &asked));
        assert!(!switches_to(&Response::new(()), &asked));
        // Regression: a 101 to `websocket/2` opened a tunnel for a client
        // that asked for `websocket/1`.
        let asked = vec!["websocket/1".to_string()];
        assert!(switches_to(&answer("WebSocket/1"), &asked));
        assert!(!switches_to(&answer("websocket/2"), &asked));
        assert!(!switches_to(&answer("websocket"), &asked));
        assert!(switches_to(
            &answer("websocket/13"),
            &["websocket".to_string()]
        ));
    }

    #[test]
    fn an_untrusted_peer_is_the_client() {
        let map = forwarded(
            &[],
            "10.1.2.3",
            &[
                ("host", "a.com"),
                ("x-forwarded-for", "1.1.1.1"),
                ("x-forwarded-for", "2.2.2.2"),
                ("x-forwarded-proto", "https"),
                ("x-forwarded-host", "evil.com"),
                ("x-real-ip", "9.9.9.9"),
                ("forwarded", "for=9.9.9.9;proto=https"),
            ],
        );
        assert_eq!(
            values(&map, "x-forwarded-for"),
            ["1.1.1.1, 2.2.2.2, 10.1.2.3"]
        );
        assert_eq!(values(&map, "x-forwarded-proto"), ["http"]);
        assert_eq!(values(&map, "x-forwarded-host"), ["a.com"]);
        assert_eq!(values(&map, "x-real-ip"), ["10.1.2.3"]);
        assert!(values(&map, "forwarded").is_empty());
    }

    #[test]
    fn a_trusted_proxy_vouches_for_the_client() {
        let trusted = ["10.0.0.0/8"];
        let map = forwarded(
            &trusted,
            "10.1.2.3",
            &[
                ("host", "a.com"),
                ("x-forwarded-for", "203.0.113.7, 10.9.9.9"),
                ("x-forwarded-proto", "https"),
                ("x-forwarded-host", "shop.example"),
            ],
        );
        assert_eq!(
            values(&map, "x-forwarded-for"),
            ["203.0.113.7, 10.9.9.9, 10.1.2.3"]
        );
        assert_eq!(values(&map, "x-forwarded-proto"), ["https"]);
        assert_eq!(values(&map, "x-forwarded-host"), ["shop.example"]);
        assert_eq!(values(&map, "x-real-ip"), ["203.0.113.7"]);
        let kept = forwarded(&trusted, "10.1.2.3", &[("x-real-ip", "198.51.100.1")]);
        assert_eq!(values(&kept, "x-real-ip"), ["198.51.100.1"]);
    }

    #[test]
    fn the_client_ip_is_the_rightmost_untrusted_hop() {
        let trusted: Vec<IpNet> = ["10.0.0.0/8", "192.168.0.0/16"]
            .iter()
            .map(|n| n.parse().unwrap())
            .collect();
        let ip = |peer: &str, xff: &[&str]| {
            let pairs: Vec<(&str, &str)> = xff.iter().map(|v| ("x-forwarded-for", *v)).collect();
            client_ip(&headers(&pairs), peer.parse().unwrap(), &trusted).to_string()
        };
        assert_eq!(
            ip("203.0.113.1", &["1.1.1.1"]),
            "203.0.113.1",
            "untrusted peer"
        );
        assert_eq!(ip("10.0.0.1", &[]), "10.0.0.1");
        assert_eq!(ip("10.0.0.1", &["1.1.1.1, 2.2.2.2"]), "2.2.2.2");
        assert_eq!(ip("10.0.0.1", &["1.1.1.1", "2.2.2.2, 10.0.0.2"]), "2.2.2.2");
        assert_eq!(ip("10.0.0.1", &["192.168.1.1, 10.0.0.2"]), "192.168.1.1");
        assert_eq!(
            ip("10.0.0.1", &["1.1.1.1, [2001:db8::1]:443"]),
            "2001:db8::1"
        );
        assert_eq!(ip("10.0.0.1", &["1.1.1.1, garbage"]), "10.0.0.1");
    }
}
