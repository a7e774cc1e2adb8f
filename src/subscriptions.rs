//! Each customer's subscription state, and the one function that syncs it
//! from Stripe.
//!
//! A customer's [`State`] is its subscriptions (all but `canceled` and
//! `incomplete_expired`) and, with `subscriptions.entitlements`, the lookup
//! keys of its active Entitlements features. It is read from Stripe
//! (`GET /v1/subscriptions?customer=..&status=all`, then the active
//! entitlements), never from an event's payload, so events that arrive
//! late, twice or out of order do no harm: whatever triggers a sync, the
//! state is what Stripe says now.
//!
//! Syncs of one customer run one at a time (a per-customer async lock),
//! and a caller waiting on the lock takes the result of any sync that
//! started after it asked instead of running another: concurrent syncs of
//! one customer are one. A reader takes the cached state while it is
//! younger than `subscriptions.cache_ttl_seconds`; a webhook event needs a
//! sync that started after the event arrived; `?refresh=true` accepts one
//! from the last [`REFRESH_WINDOW`]. A failed sync serves the last known
//! state; with none, the caller gets the error. Hand-written rather than
//! moka's `try_get_with` because that shares a load only between callers
//! that missed together, and a webhook must never take a read that began
//! before its event.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use moka::future::Cache;
use serde::{Deserialize, Serialize};
use stripe_billing::subscription::{ListSubscription, ListSubscriptionStatus};
use stripe_misc::entitlements_active_entitlement::ListEntitlementsActiveEntitlement;

use crate::account::{State, Subscription};
use crate::config;
use crate::error::Error;
use crate::metrics::{Metrics, Trigger};
use crate::shared::{Kind, Shared};
use crate::stripe::{Stripe, StripeError};

/// A `?refresh=true` within this long of the customer's last sync is
/// served from the cache.
pub const REFRESH_WINDOW: Duration = Duration::from_secs(2);
/// After a failed sync, readers get the last known state without waiting
/// on Stripe again for this long.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5);
/// Pages of 100 read at most per list (10,000 subscriptions).
const MAX_PAGES: usize = 100;

/// The states, built once at start-up.
pub struct Subscriptions {
    settings: config::Subscriptions,
    /// Price id -> `checkout.prices` alias.
    aliases: HashMap<String, String>,
    slots: Cache<String, Arc<Slot>>,
    /// Redis behind the slots, with several replicas.
    shared: Option<Shared>,
    metrics: Arc<Metrics>,
}

/// A state as written to Redis: with when its sync started, so a replica
/// reading it knows its age.
#[derive(Serialize, Deserialize)]
struct Stored {
    /// Milliseconds since the Unix epoch.
    synced_at: u64,
    state: State,
}

fn unix_millis(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// One customer's state and its sync lock.
#[derive(Default)]
struct Slot {
    /// Held while a sync of this customer runs.
    syncing: tokio::sync::Mutex<()>,
    known: Mutex<Known>,
}

#[derive(Default, Clone)]
struct Known {
    state: Option<Arc<State>>,
    /// When the sync that read `state` started.
    synced: Option<Instant>,
    /// When the last failed sync started.
    failed: Option<Instant>,
}

impl Slot {
    fn known(&self) -> MutexGuard<'_, Known> {
        // Known is plain data, whole after any panic: keep going.
        self.known.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The state, if a sync that started at or after `since` read it.
    fn synced_since(&self, since: Option<Instant>) -> Option<Arc<State>> {
        let known = self.known();
        let fresh = match (known.synced, since) {
            (Some(synced), Some(since)) => synced >= since,
            (Some(_), None) => true,
            (None, _) => false,
        };
        known.state.clone().filter(|_| fresh)
    }
}

impl Subscriptions {
    pub fn new(
        settings: &config::Subscriptions,
        prices: &std::collections::BTreeMap<String, String>,
        capacity: u64,
        shared: Option<Shared>,
        metrics: Arc<Metrics>,
    ) -> Subscriptions {
        Subscriptions {
            settings: settings.clone(),
            aliases: prices
                .iter()
                .map(|(alias, id)| (id.clone(), alias.clone()))
                .collect(),
            slots: Cache::builder().max_capacity(capacity).build(),
            shared,
            metrics,
        }
    }

    /// Marks one customer's state (`Some`) or all (`None`) in this process
    /// as needing a sync, for invalidations from other replicas; the last
    /// known state stays for when that sync fails.
    pub fn invalidator(&self) -> impl Fn(Option<&str>) + Send + Sync + 'static {
        let slots = self.slots.clone();
        move |customer| match customer {
            Some(customer) => {
                let (slots, customer) = (slots.clone(), customer.to_string());
                tokio::spawn(async move {
                    if let Some(slot) = slots.get(&customer).await {
                        slot.known().synced = None;
                    }
                });
            }
            None => slots
                .iter()
                .for_each(|(_, slot)| slot.known().synced = None),
        }
    }

    /// The statuses that count as subscribed.
    pub fn subscribed_statuses(&self) -> &[String] {
        &self.settings.subscribed_statuses
    }

    /// The customer's state: cached while younger than the TTL, else synced.
    pub async fn get(&self, stripe: Option<&Stripe>, customer: &str) -> Result<Arc<State>, Error> {
        let since = Instant::now().checked_sub(self.settings.cache_ttl);
        self.state(stripe, customer, Trigger::Miss, since).await
    }

    /// The customer's state from a sync that started at most
    /// [`REFRESH_WINDOW`] ago (`?refresh=true`).
    pub async fn refresh(
        &self,
        stripe: Option<&Stripe>,
        customer: &str,
    ) -> Result<Arc<State>, Error> {
        let since = Instant::now().checked_sub(REFRESH_WINDOW);
        self.state(stripe, customer, Trigger::Refresh, since).await
    }

    /// Syncs the customer after a verified event; returns when the sync has
    /// finished or failed.
    pub async fn event(&self, stripe: Option<&Stripe>, customer: &str) {
        let since = Some(Instant::now());
        if let Err(error) = self.state(stripe, customer, Trigger::Webhook, since).await {
            tracing::warn!(customer, %error, "could not sync a customer's subscriptions after an event");
        }
    }

    /// Drops a deleted customer's state, here and in Redis.
    pub async fn forget(&self, customer: &str) {
        self.slots.invalidate(customer).await;
        if let Some(shared) = &self.shared {
            shared.remove(Kind::Subscription, customer).await;
        }
    }

    /// The state another replica synced, if it is recent enough for
    /// `since`; kept in `slot` as if synced here when it was synced there.
    async fn read_shared(
        &self,
        slot: &Slot,
        customer: &str,
        since: Option<Instant>,
    ) -> Option<Arc<State>> {
        let text = self
            .shared
            .as_ref()?
            .get(Kind::Subscription, customer)
            .await?;
        let stored: Stored = serde_json::from_str(&text).ok()?;
        let age =
            Duration::from_millis(unix_millis(SystemTime::now()).saturating_sub(stored.synced_at));
        let synced = Instant::now().checked_sub(age)?;
        if since.is_some_and(|since| synced < since) {
            return None;
        }
        let state = Arc::new(stored.state);
        let mut known = slot.known();
        known.state = Some(state.clone());
        known.synced = Some(synced);
        Some(state)
    }

    async fn state(
        &self,
        stripe: Option<&Stripe>,
        customer: &str,
        trigger: Trigger,
        since: Option<Instant>,
    ) -> Result<Arc<State>, Error> {
        let asked = Instant::now();
        let slot = self
            .slots
            .get_with_by_ref(customer, async { Arc::default() })
            .await;
        if let Some(state) = slot.synced_since(since) {
            return Ok(state);
        }
        let _one_at_a_time = slot.syncing.lock().await;
        if let Some(state) = slot.synced_since(since) {
            return Ok(state);
        }
        if let Some(state) = self.read_shared(&slot, customer, since).await {
            return Ok(state);
        }
        let known = slot.known().clone();
        let last = || {
            let cause = "the sync this request waited on failed".to_string();
            known.state.clone().ok_or(Error::LookupUnavailable(cause))
        };
        if let Some(failed) = known.failed {
            // A sync that started after this caller asked has failed: share
            // its outcome rather than queue another behind it.
            if failed >= asked {
                return last();
            }
            // Readers during an outage get the last state at once.
            if trigger == Trigger::Miss
                && known.state.is_some()
                && failed.elapsed() < RETRY_AFTER_FAILURE
            {
                return last();
            }
        }
        let started = Instant::now();
        let started_at = SystemTime::now();
        let fetched = match stripe {
            Some(stripe) => self.fetch(stripe, customer).await,
            None => Err(StripeError::Unavailable("no stripe.secret_key".into())),
        };
        self.metrics.subscription_sync(trigger, fetched.is_ok());
        if let (Ok(state), Some(shared)) = (&fetched, &self.shared) {
            let stored = Stored {
                synced_at: unix_millis(started_at),
                state: state.clone(),
            };
            if let Ok(text) = serde_json::to_string(&stored) {
                let ttl = self.settings.cache_ttl;
                shared.put(Kind::Subscription, customer, &text, ttl).await;
            }
        }
        let mut known = slot.known();
        match fetched {
            Ok(state) => {
                let state = Arc::new(state);
                known.state = Some(state.clone());
                known.synced = Some(started);
                Ok(state)
            }
            Err(error) => {
                known.failed = Some(started);
                match &known.state {
                    Some(state) => {
                        tracing::warn!(customer, %error, "subscription sync failed; serving the last known state");
                        Ok(state.clone())
                    }
                    None => Err(crate::customers::lookup_error(
                        "Stripe subscriptions",
                        error,
                    )),
                }
            }
        }
    }

    /// Reads the customer's state from Stripe.
    async fn fetch(&self, stripe: &Stripe, customer: &str) -> Result<State, StripeError> {
        let mut subscriptions = Vec::new();
        let mut after: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let mut list = ListSubscription::new()
                .customer(customer)
                .status(ListSubscriptionStatus::All)
                .limit(100);
            if let Some(id) = after.take() {
                list = list.starting_after(id);
            }
            let page = list.send(stripe).await?;
            after = page.data.last().map(|s| s.id.to_string());
            subscriptions.extend(page.data.iter().filter_map(|s| self.summary(s)));
            if !page.has_more || after.is_none() {
                break;
            }
        }
        let mut features = Vec::new();
        if self.settings.entitlements {
            let mut after: Option<String> = None;
            for _ in 0..MAX_PAGES {
                let mut list = ListEntitlementsActiveEntitlement::new(customer).limit(100);
                if let Some(id) = after.take() {
                    list = list.starting_after(id);
                }
                let page = list.send(stripe).await?;
                after = page.data.last().map(|e| e.id.to_string());
                features.extend(page.data.into_iter().map(|e| e.lookup_key));
                if !page.has_more || after.is_none() {
                    break;
                }
            }
        }
        Ok(State {
            subscriptions,
            features,
        })
    }

    /// A subscription as kept, or `None` for one that is over.
    fn summary(&self, s: &stripe_billing::Subscription) -> Option<Subscription> {
        let status = s.status.as_str();
        if matches!(status, "canceled" | "incomplete_expired") {
            return None;
        }
        let items = &s.items.data;
        let price_ids: Vec<String> = items.iter().map(|item| item.price.id.to_string()).collect();
        Some(Subscription {
            id: s.id.to_string(),
            status: status.to_string(),
            plan: price_ids
                .first()
                .and_then(|id| self.aliases.get(id).cloned()),
            price_ids,
            // In the pinned API version the period lives on the items.
            current_period_end: items.iter().map(|item| item.current_period_end).min(),
            cancel_at_period_end: s.cancel_at_period_end,
            trial_end: s.trial_end,
            created: s.created,
        })
    }
}
