//! The listeners, the connection loop, graceful shutdown, and [`handle`],
//! the one function every app-port request goes through.
//!
//! `handle` matches the route table once and sends the request to a billing
//! handler or to the proxy; the access log line and the request metrics are
//! written when the response body ends (or is dropped), so durations cover
//! streamed bodies too. Shutdown follows the contract: readiness fails at
//! once, requests are still served for the drain period (SIGTERM only),
//! then the listeners close and in-flight requests and upgraded tunnels get
//! the grace period. This module does not parse configuration or know
//! Stripe.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestUuid, SetRequestIdLayer};

use crate::config::Config;
use crate::customers::Customers;
use crate::error::Error;
use crate::http_client::https_client;
use crate::identity::Identity;
use crate::logging::AccessLine;
use crate::metrics::{ActionLabel, Metrics, RequestLabels};
use crate::proxy::Proxy;
use crate::routes::{Match, RouteTable, ALLOW};
use crate::stripe::Stripe;
use crate::{billing, Body, BoxError};

/// Request line and headers accepted, in all: Supabase session cookies are
/// large. Beyond this a client gets 431. Clients speak HTTP/1.1 (or 1.0)
/// to the sidecar, as to nginx by default: hyper-util's HTTP/1 + h2c
/// builder cannot bound the header size of a request that arrives in one
/// read, and h2c from a browser does not exist.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// Time a client has to send a request's headers (slow-loris bound).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Everything built once at start-up and shared by every request.
pub struct State {
    pub config: Config,
    pub routes: RouteTable,
    pub proxy: Proxy,
    pub identity: Identity,
    /// `None` without `stripe.secret_key`: checkout and portal answer 503.
    pub stripe: Option<Stripe>,
    pub customers: Customers,
    pub metrics: Metrics,
    ready: AtomicBool,
    /// Upgraded connections (WebSockets), which outlive their request.
    tunnels: TaskTracker,
}

impl State {
    /// Builds the state; inside the runtime, as it starts background work
    /// (the JWKS refresh).
    pub fn new(config: Config) -> State {
        let metrics = Metrics::new();
        let client = https_client(config.upstream.connect_timeout);
        State {
            routes: RouteTable::new(config.routes.clone()),
            proxy: Proxy::new(&config.upstream, metrics.upstream_errors.clone()),
            identity: Identity::new(
                &config.auth,
                client.clone(),
                metrics.auth_rejections.clone(),
            ),
            stripe: Stripe::new(
                &config.stripe,
                client.clone(),
                metrics.stripe_requests.clone(),
            ),
            customers: Customers::new(
                &config.customers,
                client,
                config.stripe.timeout,
                metrics.customer_cache.clone(),
            ),
            metrics,
            ready: AtomicBool::new(false),
            tunnels: TaskTracker::new(),
            config,
        }
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }
}

/// How the process was asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM: drain, then stop with a grace period.
    Terminate,
    /// SIGINT: stop with a grace period, no drain.
    Interrupt,
}

/// Installs the SIGTERM and SIGINT handlers now (so a signal that comes
/// early is not missed) and returns a future that resolves on the first.
pub fn signal_listener() -> std::io::Result<impl Future<Output = Signal>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => Signal::Terminate,
            _ = int.recv() => Signal::Interrupt,
        }
    })
}

/// The bound listeners and the shared state, ready to run.
pub struct Server {
    state: Arc<State>,
    listener: TcpListener,
    admin: TcpListener,
}

impl Server {
    /// Binds `server.listen` and `server.admin_listen`.
    pub async fn bind(config: Config) -> std::io::Result<Server> {
        let listen = |addr: SocketAddr, key: &'static str| async move {
            TcpListener::bind(addr).await.map_err(|e| {
                std::io::Error::new(e.kind(), format!("cannot listen on {addr} ({key}): {e}"))
            })
        };
        let listener = listen(config.server.listen, "server.listen").await?;
        let admin = listen(config.server.admin_listen, "server.admin_listen").await?;
        Ok(Server {
            state: Arc::new(State::new(config)),
            listener,
            admin,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound")
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin.local_addr().expect("bound")
    }

    /// Serves until `shutdown` resolves, then stops as the contract says.
    pub async fn run(self, shutdown: impl Future<Output = Signal>) {
        let Server {
            state,
            listener,
            admin,
        } = self;
        let stop = CancellationToken::new();
        let connections = TaskTracker::new();
        let address = |l: &TcpListener| {
            l.local_addr()
                .map_or_else(|e| e.to_string(), |a| a.to_string())
        };
        let (listen, admin_listen) = (address(&listener), address(&admin));

        let app_state = state.clone();
        let app = tokio::spawn(serve(
            listener,
            move |peer| {
                let state = app_state.clone();
                ServiceBuilder::new()
                    .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                    .service_fn(move |request| handle(state.clone(), request, peer))
            },
            stop.clone(),
            connections.clone(),
        ));
        // The admin port outlives the app port: /healthz answers while the
        // process runs, through the grace period.
        let admin_stop = CancellationToken::new();
        let admin_state = state.clone();
        let admin = tokio::spawn(serve(
            admin,
            move |_peer| {
                let state = admin_state.clone();
                tower::service_fn(move |request: Request<Incoming>| {
                    let response = crate::admin::handle(&state, &request);
                    async move { Ok::<_, Infallible>(response) }
                })
            },
            admin_stop.clone(),
            TaskTracker::new(),
        ));
        state.ready.store(true, Ordering::SeqCst);
        tracing::info!(
            listen,
            admin_listen,
            upstream = %state.config.upstream.authority,
            "stripe-sidecar ready"
        );

        let signal = shutdown.await;
        state.ready.store(false, Ordering::SeqCst);
        let drain = match signal {
            Signal::Terminate => state.config.server.shutdown_drain,
            Signal::Interrupt => Duration::ZERO,
        };
        tracing::info!(?signal, drain_seconds = drain.as_secs(), "shutting down");
        tokio::time::sleep(drain).await;

        stop.cancel();
        let _ = app.await;
        connections.close();
        state.tunnels.close();
        let grace = state.config.server.shutdown_grace;
        let finished = tokio::time::timeout(grace, async {
            tokio::join!(connections.wait(), state.tunnels.wait())
        })
        .await;
        admin_stop.cancel();
        let _ = admin.await;
        match finished {
            Ok(_) => tracing::info!("stopped"),
            Err(_) => tracing::warn!(
                grace_seconds = grace.as_secs(),
                "stopped with requests still in flight after the grace period"
            ),
        }
    }
}

/// Accepts connections until `stop`, serving each with the service
/// `make_service` builds for its peer; on `stop` each connection finishes
/// its in-flight request and closes.
async fn serve<M, S>(
    listener: TcpListener,
    make_service: M,
    stop: CancellationToken,
    connections: TaskTracker,
) where
    M: Fn(SocketAddr) -> S,
    S: tower::Service<Request<Incoming>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let mut builder = http1::Builder::new();
    builder
        .max_header_size(MAX_HEADER_BYTES)
        .max_buf_size(MAX_HEADER_BYTES + 4096)
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off, keep going.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(make_service(peer));
        let connection = builder
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        let stop = stop.clone();
        connections.spawn(async move {
            tokio::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                _ = stop.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(error) = result {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
        });
    }
}

/// Every app-port request: route, answer, log.
async fn handle(
    state: Arc<State>,
    request: Request<Incoming>,
    peer: SocketAddr,
) -> Result<Response<Body>, Infallible> {
    let started = Instant::now();
    let request_id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let method = request.method().to_string();
    let path = request.uri().path().to_owned();
    let mut user_id = None;
    let (action, result) = match state.routes.find(request.method(), request.uri().path()) {
        Match::Local { route, params } => (
            route.action.as_str(),
            billing::handle(&state, route, params, request, peer, &mut user_id).await,
        ),
        Match::WrongMethod { route } => (
            route.action.as_str(),
            Err(Error::MethodNotAllowed { allow: ALLOW }),
        ),
        Match::Proxy => (
            "proxy",
            state.proxy.forward(request, peer, &state.tunnels).await,
        ),
    };
    let response = result.unwrap_or_else(|error| error.into_response(&request_id));
    let log = RequestLog {
        status: response.status().as_u16(),
        user_id,
        state,
        started,
        request_id,
        method,
        path,
        action,
    };
    Ok(response.map(|inner| {
        crate::boxed(Logged {
            inner,
            log: Some(log),
        })
    }))
}

/// One request's metrics and access line, written when dropped: at the end
/// of the response body, or when the client goes away mid-body.
struct RequestLog {
    state: Arc<State>,
    started: Instant,
    request_id: String,
    method: String,
    path: String,
    action: &'static str,
    status: u16,
    user_id: Option<String>,
}

impl Drop for RequestLog {
    fn drop(&mut self) {
        let elapsed = self.started.elapsed();
        let metrics = &self.state.metrics;
        metrics
            .requests
            .get_or_create(&RequestLabels {
                action: self.action,
                status: self.status,
            })
            .inc();
        metrics
            .request_duration
            .get_or_create(&ActionLabel {
                action: self.action,
            })
            .observe(elapsed.as_secs_f64());
        if self.state.config.server.access_log {
            AccessLine {
                request_id: &self.request_id,
                method: &self.method,
                path: &self.path,
                action: self.action,
                status: self.status,
                duration_ms: (elapsed.as_secs_f64() * 1e6).round() / 1e3,
                user_id: self.user_id.as_deref(),
            }
            .emit();
        }
    }
}

/// A response body that drops its [`RequestLog`] when it ends.
struct Logged {
    inner: Body,
    log: Option<RequestLog>,
}

impl http_body::Body for Logged {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let poll = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(poll, Poll::Ready(None | Some(Err(_)))) {
            self.log.take();
        }
        poll
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
