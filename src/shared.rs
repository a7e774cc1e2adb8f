//! State shared between replicas: Redis behind each process's own caches.
//!
//! With `state.redis_url`, the user -> customer map and the subscription
//! states are written to Redis under `<key_prefix>customer:<user id>` and
//! `<key_prefix>subscription:<customer>` with the config's TTLs, and a
//! replica that syncs a customer publishes `<kind>:<id>` on
//! `<key_prefix>invalidate`; every other replica drops its in-process
//! entry on receipt, and reads Redis before Stripe on its next miss.
//!
//! Redis is never on the critical path: every call is bounded by
//! [`TIMEOUT`], a failure counts in `stripe_sidecar_state_errors_total{op}`,
//! pauses calls for [`PAUSE_AFTER_FAILURE`] (so a request meets at most one
//! timeout) and reads as "not in Redis", so the sidecar goes on with its own caches
//! and Stripe, and readiness does not depend on it. Connecting happens in
//! the background (Redis down at start delays nothing), with the `redis`
//! crate's connection manager reconnecting by itself; the pub/sub
//! listener reconnects within a second of Redis being back. While it is
//! cut off, invalidations are missed, so an in-process entry may live its
//! whole TTL (that TTL bounds how stale a replica can be); on every
//! (re)subscription the in-process entries are dropped, so nothing missed
//! outlives the reconnection.

use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::config;
use crate::metrics::{Metrics, StateOp};

/// The longest any request waits on Redis.
pub const TIMEOUT: Duration = Duration::from_millis(500);
/// Between attempts to (re)connect the pub/sub listener.
const RECONNECT_EVERY: Duration = Duration::from_millis(500);
/// After a failed call, calls are skipped (as failures) this long, so one
/// request meets at most one [`TIMEOUT`] however many calls it makes.
const PAUSE_AFTER_FAILURE: Duration = Duration::from_secs(1);

/// What an invalidation names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Customer,
    Subscription,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Customer => "customer",
            Kind::Subscription => "subscription",
        }
    }

    fn parse(text: &str) -> Option<Kind> {
        [Kind::Customer, Kind::Subscription]
            .into_iter()
            .find(|kind| kind.as_str() == text)
    }
}

/// Called with each invalidation from another replica (`Some`), and with
/// `None` on every (re)subscription: drop everything in-process.
pub type OnInvalidate = Arc<dyn Fn(Option<(Kind, &str)>) + Send + Sync>;

/// The Redis side of the shared state; cheap to clone.
#[derive(Clone)]
pub struct Shared {
    inner: Arc<Inner>,
}

struct Inner {
    client: redis::Client,
    prefix: String,
    /// Set once the first connection is made.
    connection: OnceLock<ConnectionManager>,
    /// Tells this replica's own invalidations from the others'.
    replica: String,
    /// Until when calls are skipped after a failure.
    paused_until: Mutex<Option<Instant>>,
    metrics: Arc<Metrics>,
}

impl Shared {
    /// `None` without `state.redis_url`. Connects in the background; call
    /// [`Shared::listen`] once the in-process caches exist.
    pub fn start(settings: &config::State, metrics: Arc<Metrics>) -> Option<Shared> {
        let url = settings.redis_url.as_deref()?;
        let client = match redis::Client::open(url) {
            Ok(client) => client,
            Err(error) => {
                // The URL was checked at start; this is a bad TLS setup or the like.
                tracing::error!(error = %error, "state.redis_url cannot be used; state is per process");
                return None;
            }
        };
        let shared = Shared {
            inner: Arc::new(Inner {
                client,
                prefix: settings.key_prefix.clone(),
                connection: OnceLock::new(),
                replica: uuid::Uuid::new_v4().simple().to_string(),
                paused_until: Mutex::new(None),
                metrics,
            }),
        };
        tokio::spawn(connect(shared.inner.clone()));
        Some(shared)
    }

    fn key(&self, kind: Kind, id: &str) -> String {
        format!("{}{}:{id}", self.inner.prefix, kind.as_str())
    }

    fn channel(&self) -> String {
        format!("{}invalidate", self.inner.prefix)
    }

    /// The value under `kind:id`; `None` when absent or Redis failed.
    pub async fn get(&self, kind: Kind, id: &str) -> Option<String> {
        let command = redis::cmd("GET").arg(self.key(kind, id)).clone();
        self.run::<Option<String>>(StateOp::Get, command)
            .await
            .flatten()
    }

    /// Writes `value` under `kind:id` for `ttl`, then tells the other
    /// replicas to drop their copy.
    pub async fn put(&self, kind: Kind, id: &str, value: &str, ttl: Duration) {
        let millis = ttl.as_millis().clamp(1, u64::MAX as u128) as u64;
        let mut set = redis::cmd("SET");
        set.arg(self.key(kind, id)).arg(value).arg("PX").arg(millis);
        if self.run::<()>(StateOp::Set, set).await.is_some() {
            self.invalidate(kind, id).await;
        }
    }

    /// Deletes `kind:id` and tells the other replicas.
    pub async fn remove(&self, kind: Kind, id: &str) {
        let command = redis::cmd("DEL").arg(self.key(kind, id)).clone();
        if self.run::<()>(StateOp::Set, command).await.is_some() {
            self.invalidate(kind, id).await;
        }
    }

    /// Tells the other replicas to drop `kind:id`.
    pub async fn invalidate(&self, kind: Kind, id: &str) {
        let message = format!("{} {}:{id}", self.inner.replica, kind.as_str());
        let mut publish = redis::cmd("PUBLISH");
        publish.arg(self.channel()).arg(message);
        self.run::<()>(StateOp::Publish, publish).await;
    }

    /// Runs `command` within [`TIMEOUT`]; `None` (counted) on any failure,
    /// and for [`PAUSE_AFTER_FAILURE`] after one.
    async fn run<T: redis::FromRedisValue>(&self, op: StateOp, command: redis::Cmd) -> Option<T> {
        let paused = self
            .paused_until()
            .is_some_and(|until| Instant::now() < until);
        let connection = self.inner.connection.get().filter(|_| !paused);
        let Some(connection) = connection else {
            self.inner.metrics.state_error(op);
            return None;
        };
        let mut connection = connection.clone();
        let failure =
            match tokio::time::timeout(TIMEOUT, command.query_async::<T>(&mut connection)).await {
                Ok(Ok(value)) => return Some(value),
                Ok(Err(error)) => error.to_string(),
                Err(_) => "timed out".to_string(),
            };
        tracing::debug!(?op, error = %failure, "redis call failed");
        self.inner.metrics.state_error(op);
        *self.paused_until() = Some(Instant::now() + PAUSE_AFTER_FAILURE);
        None
    }

    fn paused_until(&self) -> MutexGuard<'_, Option<Instant>> {
        // A plain Instant: whole after any panic.
        self.inner
            .paused_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Listens on the invalidation channel for as long as the process
    /// runs, reconnecting by itself.
    pub fn listen(&self, on_invalidate: OnInvalidate) {
        tokio::spawn(listen(self.clone(), on_invalidate));
    }
}

/// Makes the first connection, retrying until Redis answers; from then on
/// the connection manager reconnects by itself.
async fn connect(inner: Arc<Inner>) {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(TIMEOUT * 4))
        .set_response_timeout(Some(TIMEOUT))
        .set_number_of_retries(3)
        .set_max_delay(Duration::from_secs(1));
    let mut warned = false;
    loop {
        match ConnectionManager::new_with_config(inner.client.clone(), config.clone()).await {
            Ok(connection) => {
                let _ = inner.connection.set(connection);
                tracing::info!("connected to redis");
                return;
            }
            Err(error) => {
                inner.metrics.state_error(StateOp::Connect);
                if !warned {
                    tracing::warn!(error = %error, "cannot reach redis; serving from this process's caches meanwhile");
                    warned = true;
                }
                tokio::time::sleep(RECONNECT_EVERY).await;
            }
        }
    }
}

async fn listen(shared: Shared, on_invalidate: OnInvalidate) {
    let channel = shared.channel();
    let own = format!("{} ", shared.inner.replica);
    let mut warned = false;
    loop {
        let subscribed = async {
            let mut pubsub = shared.inner.client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        let pubsub = match tokio::time::timeout(TIMEOUT * 4, subscribed).await {
            Ok(Ok(pubsub)) => pubsub,
            failed => {
                shared.inner.metrics.state_error(StateOp::Subscribe);
                if !warned {
                    let error = match failed {
                        Ok(Err(error)) => error.to_string(),
                        _ => "timed out".to_string(),
                    };
                    tracing::warn!(%error, "cannot subscribe to redis invalidations; retrying");
                    warned = true;
                }
                tokio::time::sleep(RECONNECT_EVERY).await;
                continue;
            }
        };
        warned = false;
        // Whatever was published while this replica was not listening is
        // lost: start over from Redis and Stripe.
        on_invalidate(None);
        let mut messages = pubsub.into_on_message();
        while let Some(message) = messages.next().await {
            let Ok(payload) = message.get_payload::<String>() else {
                continue;
            };
            if payload.starts_with(&own) {
                continue;
            }
            let target = payload.split_once(' ').map_or("", |(_, target)| target);
            if let Some((kind, id)) = target
                .split_once(':')
                .and_then(|(kind, id)| Some((Kind::parse(kind)?, id)))
            {
                on_invalidate(Some((kind, id)));
            }
        }
        // The connection dropped.
        shared.inner.metrics.state_error(StateOp::Subscribe);
        tracing::warn!("lost the redis invalidation channel; reconnecting");
        tokio::time::sleep(RECONNECT_EVERY).await;
    }
}
