//! The listeners, the connection loop, graceful shutdown, and the
//! access-log body wrapper. Every app-port request goes to
//! [`app::handle`], every admin-port request to [`admin::handle`]; this
//! module knows no routes, identity or Stripe.
//!
//! The access log line and the request metrics are written when the
//! response body ends (or is dropped), so durations cover streamed bodies
//! too. Shutdown follows the contract: readiness fails at once, requests
//! are still served for the drain period (SIGTERM only), then the listeners
//! close and in-flight requests and upgraded tunnels get the grace period.
//!
//! Workers run as nginx's do: each of `server.worker_threads` has its own
//! thread and single-threaded runtime, accepts on its own descriptor of the
//! one listening socket (whichever is free takes the next connection), and
//! keeps its own pool of connections to the app ([`crate::proxy`]), so a
//! request is served start to end on one thread with no cross-thread
//! wake-ups. The first worker is the caller's runtime, which also runs the
//! admin port and the background tasks.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
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
use prometheus_client::metrics::gauge::Gauge;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::app::{self, Access, State};
use crate::body::{self, Body};
use crate::config::Config;
use crate::logging::AccessLine;
use crate::metrics::PROXY;
use crate::proxy::MAX_HEADER_BYTES;
use crate::{admin, BoxError};

/// The most headers that fit in [`MAX_HEADER_BYTES`] (`a:` and CRLF).
const MAX_HEADERS: usize = MAX_HEADER_BYTES / 4;
/// Time a client has to send a request's headers (slow-loris bound).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// At shutdown, how long a connection accepted before the listener closed
/// has for its first request to arrive. hyper closes a connection that
/// has not begun a request at once (hyperium/hyper#2730), which would drop
/// a request already on its way; idle keep-alive connections still close
/// at once.
const FIRST_REQUEST_WAIT: Duration = Duration::from_secs(2);

/// How the process was asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM: drain, then stop with a grace period.
    Terminate,
    /// SIGINT: stop with a grace period, no drain.
    Interrupt,
}

/// How [`Server::run`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// Drained and finished (or the grace period ran out).
    Clean,
    /// A second signal during the shutdown: stopped at once.
    Forced,
}

/// Installs the SIGTERM and SIGINT handlers now (so a signal that comes
/// early is not missed) and returns the signals as they come.
pub fn signals() -> std::io::Result<mpsc::UnboundedReceiver<Signal>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let (send, receive) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let signal = tokio::select! {
                _ = term.recv() => Signal::Terminate,
                _ = int.recv() => Signal::Interrupt,
            };
            if send.send(signal).is_err() {
                return;
            }
        }
    });
    Ok(receive)
}

/// The bound listeners and the shared state, ready to run.
pub struct Server {
    state: Arc<State>,
    /// One per worker, all on `addr`.
    listeners: Vec<std::net::TcpListener>,
    admin: TcpListener,
    addr: SocketAddr,
    admin_addr: SocketAddr,
}

impl Server {
    /// Binds `server.listen` and `server.admin_listen` and builds the state.
    pub async fn bind(config: Config) -> std::io::Result<Server> {
        let listener = listen(config.server.listen, "server.listen").await?;
        Server::with_listener(config, listener).await
    }

    /// As [`Server::bind`], but serving on `listener`, already bound (by a
    /// caller that must know the port before the configuration is built:
    /// the demo); `server.listen` is not read.
    pub async fn with_listener(config: Config, listener: TcpListener) -> std::io::Result<Server> {
        let addr = listener.local_addr()?;
        let workers = match config.server.worker_threads {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        };
        // One socket; each worker accepts on its own descriptor of it.
        let listener = listener.into_std()?;
        let mut listeners = Vec::with_capacity(workers);
        for _ in 1..workers {
            listeners.push(listener.try_clone()?);
        }
        listeners.insert(0, listener);
        let admin = listen(config.server.admin_listen, "server.admin_listen").await?;
        let admin_addr = admin.local_addr()?;
        Ok(Server {
            state: Arc::new(State::new(config)?),
            listeners,
            admin,
            addr,
            admin_addr,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// Serves until the first of `signals` (or until every sender is
    /// gone: as SIGINT), then stops as the contract says; a second signal
    /// during the shutdown stops at once.
    pub async fn run(self, mut signals: mpsc::UnboundedReceiver<Signal>) -> Stopped {
        let Server {
            state,
            listeners,
            admin,
            addr,
            admin_addr,
        } = self;
        let stop = CancellationToken::new();
        let connections = TaskTracker::new();
        let limit = Limit::new(
            state.config.server.max_connections,
            state.metrics.connections().clone(),
        );
        let worker = {
            let (state, stop, connections) = (state.clone(), stop.clone(), connections.clone());
            move |listener: std::net::TcpListener| {
                let state = state.clone();
                let refused_state = state.clone();
                let (stop, connections, limit) = (stop.clone(), connections.clone(), limit.clone());
                async move {
                    let listener = match TcpListener::from_std(listener) {
                        Ok(listener) => listener,
                        Err(error) => return tracing::error!(%error, "a worker cannot listen"),
                    };
                    let service = move |peer| {
                        let state = state.clone();
                        // Boxed: the request future lives on the heap only while a
                        // request is in flight, not inline in every idle connection.
                        tower::service_fn(move |request| {
                            Box::pin(respond(state.clone(), request, peer))
                        })
                    };
                    let refused = move |status| refused(&refused_state, status);
                    serve(listener, service, refused, stop, connections, Some(limit)).await;
                }
            }
        };
        // Every worker but the first on a thread of its own; each keeps
        // running its connections and tunnels after its listener closes,
        // until they end or the process gives up on them (`force`).
        let force = CancellationToken::new();
        let mut accepting = Vec::new();
        let mut listeners = listeners.into_iter();
        let first = listeners.next();
        for (n, listener) in listeners.enumerate() {
            let (done, accepted) = tokio::sync::oneshot::channel::<()>();
            accepting.push(accepted);
            let serve = worker(listener);
            let (connections, tunnels) = (connections.clone(), state.proxy.tunnels().clone());
            let force = force.clone();
            let thread = std::thread::Builder::new().name(format!("worker-{}", n + 1));
            let started = thread.spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(error) => return tracing::error!(%error, "a worker cannot start"),
                };
                runtime.block_on(async move {
                    serve.await;
                    let _ = done.send(());
                    tokio::select! {
                        _ = async { tokio::join!(connections.wait(), tunnels.wait()) } => {}
                        _ = force.cancelled() => {}
                    }
                });
            });
            if let Err(error) = started {
                tracing::error!(%error, "cannot start a worker thread");
            }
        }
        let app = tokio::spawn(async move {
            if let Some(listener) = first {
                worker(listener).await;
            }
            for accepted in accepting {
                let _ = accepted.await;
            }
        });
        // The admin port outlives the app port: /healthz answers while the
        // process runs, through the grace period.
        let admin_stop = CancellationToken::new();
        let admin_state = state.clone();
        let admin = tokio::spawn(serve(
            admin,
            move |_peer| {
                let state = admin_state.clone();
                tower::service_fn(move |request: Request<Incoming>| {
                    let response = admin::handle(state.is_ready(), &state.metrics, &request);
                    async move { Ok::<_, Infallible>(response) }
                })
            },
            |_| {},
            admin_stop.clone(),
            TaskTracker::new(),
            None,
        ));
        state.set_ready(true);
        tracing::info!(
            listen = %addr,
            admin_listen = %admin_addr,
            upstream = %state.config.upstream.authority,
            "stripe-sidecar ready"
        );

        let signal = signals.recv().await.unwrap_or(Signal::Interrupt);
        state.set_ready(false);
        let drain = match signal {
            Signal::Terminate => state.config.server.shutdown_drain,
            Signal::Interrupt => Duration::ZERO,
        };
        tracing::info!(?signal, drain_seconds = drain.as_secs(), "shutting down");
        let grace = state.config.server.shutdown_grace;
        let shutdown = async {
            tokio::time::sleep(drain).await;
            stop.cancel();
            let _ = app.await;
            connections.close();
            let tunnels = state.proxy.tunnels();
            tunnels.close();
            tokio::time::timeout(grace, async {
                tokio::join!(connections.wait(), tunnels.wait())
            })
            .await
        };
        let stopped = tokio::select! {
            finished = shutdown => {
                match finished {
                    Ok(_) => tracing::info!("stopped"),
                    Err(_) => tracing::warn!(
                        grace_seconds = grace.as_secs(),
                        "stopped with requests still in flight after the grace period"
                    ),
                }
                Stopped::Clean
            }
            Some(second) = signals.recv() => {
                tracing::warn!(signal = ?second, "a second signal: stopping at once");
                Stopped::Forced
            }
        };
        force.cancel();
        admin_stop.cancel();
        let _ = admin.await;
        stopped
    }
}

/// Binds `addr`; the error names the address and the config key.
pub(crate) async fn listen(addr: SocketAddr, key: &str) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr} ({key}): {e}")))
}

/// Accepts connections until `stop`, serving each with the service
/// `make_service` builds for its peer; on `stop` each connection finishes
/// its in-flight request and closes. `refused` is told the status of each
/// request hyper answers itself (a malformed or oversized head: no
/// request reaches the service).
async fn serve<M, S, R>(
    listener: TcpListener,
    make_service: M,
    refused: R,
    stop: CancellationToken,
    connections: TaskTracker,
    limit: Option<Limit>,
) where
    M: Fn(SocketAddr) -> S,
    R: Fn(u16) + Clone + Send + 'static,
    S: tower::Service<Request<Incoming>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let mut builder = http1::Builder::new();
    builder
        .max_header_size(MAX_HEADER_BYTES)
        .max_headers(MAX_HEADERS)
        .max_buf_size(MAX_HEADER_BYTES + 4096)
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    loop {
        // Past the limit, new connections wait in the kernel's queue.
        let permit = match &limit {
            Some(limit) => tokio::select! {
                _ = stop.cancelled() => break,
                permit = limit.permit() => permit,
            },
            None => None,
        };
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
        let slot = limit.as_ref().map(|limit| limit.open(permit));
        let _ = stream.set_nodelay(true);
        let started = CancellationToken::new();
        let first = started.clone();
        let service = TowerToHyperService::new(make_service(peer).map_request(move |request| {
            if !first.is_cancelled() {
                first.cancel();
            }
            request
        }));
        let connection = builder
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        let stop = stop.clone();
        let refused = refused.clone();
        connections.spawn(async move {
            let _slot = slot;
            tokio::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                _ = stop.cancelled() => {
                    let begun = tokio::time::timeout(FIRST_REQUEST_WAIT, started.cancelled());
                    tokio::select! {
                        result = connection.as_mut() => result,
                        _ = begun => {
                            connection.as_mut().graceful_shutdown();
                            connection.await
                        }
                    }
                }
            };
            match result {
                // hyper's own answer to a head it cannot parse.
                Err(error) if error.is_parse_too_large() => refused(431),
                Err(error) if error.is_parse() => refused(400),
                Err(error) => tracing::debug!(%peer, %error, "connection ended with an error"),
                Ok(()) => {}
            }
        });
    }
}

/// `server.max_connections` and the open-connections gauge of a listener.
#[derive(Clone)]
struct Limit {
    slots: Arc<Semaphore>,
    open: Gauge,
}

impl Limit {
    fn new(max_connections: usize, open: Gauge) -> Limit {
        let slots = max_connections.min(Semaphore::MAX_PERMITS);
        Limit {
            slots: Arc::new(Semaphore::new(slots)),
            open,
        }
    }

    /// Waits for a free slot (the semaphore is never closed, so this
    /// cannot fail: `None` only in name).
    async fn permit(&self) -> Option<OwnedSemaphorePermit> {
        self.slots.clone().acquire_owned().await.ok()
    }

    /// An accepted connection holding `permit` while it lives.
    fn open(&self, permit: Option<OwnedSemaphorePermit>) -> Slot {
        self.open.inc();
        Slot {
            _permit: permit,
            open: self.open.clone(),
        }
    }
}

/// One open connection: a slot of [`Limit`], counted in the gauge.
struct Slot {
    _permit: Option<OwnedSemaphorePermit>,
    open: Gauge,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.open.dec();
    }
}

/// One app-port request: answered by the pipeline, its body wrapped so the
/// access line and metrics are written when it ends.
async fn respond(
    state: Arc<State>,
    request: Request<Incoming>,
    peer: SocketAddr,
) -> Result<Response<Body>, Infallible> {
    let started = Instant::now();
    let method = request.method().to_string();
    let path = request.uri().path().to_owned();
    let mut response = app::handle(&state, request.map(body::boxed), peer).await;
    let access = response.extensions_mut().remove::<Access>();
    let log = RequestLog {
        status: response.status().as_u16(),
        access,
        state,
        started,
        method,
        path,
    };
    Ok(response.map(|inner| {
        body::boxed(Logged {
            inner,
            log: Some(log),
        })
    }))
}

/// The access line and metrics of a request hyper refused before it was
/// one (no method or path to log: `-`; no `X-Request-Id` on hyper's
/// reply, so the line's id is a new one).
fn refused(state: &Arc<State>, status: u16) {
    drop(RequestLog {
        state: state.clone(),
        started: Instant::now(),
        method: "-".to_string(),
        path: "-".to_string(),
        status,
        access: Some(Access {
            request_id: app::request_id(None),
            action: PROXY,
            user_id: None,
        }),
    });
}

/// One request's metrics and access line, written when dropped: at the end
/// of the response body, or when the client goes away mid-body.
struct RequestLog {
    state: Arc<State>,
    started: Instant,
    method: String,
    path: String,
    status: u16,
    access: Option<Access>,
}

impl Drop for RequestLog {
    fn drop(&mut self) {
        let elapsed = self.started.elapsed();
        let access = self.access.take();
        let action = access.as_ref().map_or(PROXY, |a| a.action);
        self.state.metrics.request(action, self.status, elapsed);
        if self.state.config.server.access_log {
            let request_id = access.as_ref().and_then(|a| a.request_id.to_str().ok());
            AccessLine {
                request_id: request_id.unwrap_or_default(),
                method: &self.method,
                path: &self.path,
                action,
                status: self.status,
                duration_ms: (elapsed.as_secs_f64() * 1e6).round() / 1e3,
                user_id: access.as_ref().and_then(|a| a.user_id.as_deref()),
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
