//! Finding a user's Stripe customer: a moka cache in front of Stripe's
//! Customer Search (`source = "stripe"`) or the app's own lookup URL
//! (`source = "http"`), and creating the customer when a checkout finds
//! none (Stripe source).
//!
//! Found customers are kept `cache_ttl_seconds`, "none" only
//! `negative_ttl_seconds`. Concurrent misses for one user share one lookup
//! (moka's `try_get_with`), and concurrent creations for one user run once
//! (moka's per-key `and_try_compute_with`), the created id going into the
//! cache at once because Stripe's search index lags behind. A failed lookup
//! is an error, never "none", so nothing is created on a guess. Webhook
//! events update the cache through [`Customers::remember`] and
//! [`Customers::forget_customer`].

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use moka::future::Cache;
use moka::ops::compute::Op;
use sha2::{Digest, Sha256};
use stripe::{IdempotencyKey, RequestStrategy, StripeRequest};

use crate::config::{CustomerSource, Customers as Settings};
use crate::error::Error;
use crate::http_client::{fetch, HttpsClient};
use crate::identity::User;
use crate::metrics::Metrics;
use crate::shared::{Kind, Shared};
use crate::stripe::{Stripe, StripeError};

const LOOKUP_MAX_BYTES: usize = 64 * 1024;
/// Everything but RFC 3986's unreserved characters is escaped in `{userId}`.
const PATH_SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A user id's customer: `Some(cus_...)`, or `None` for "has none".
type Entry = Option<String>;
/// "Has none", as written to Redis.
const NONE: &str = "none";

pub struct Customers {
    settings: Settings,
    cache: Cache<String, Entry>,
    client: HttpsClient,
    /// Bounds an `http` lookup.
    timeout: Duration,
    /// Redis behind the cache, with several replicas.
    shared: Option<Shared>,
    metrics: Arc<Metrics>,
}

/// Found customers live `ttl`, "none" lives `negative_ttl`.
struct Lifetimes {
    ttl: Duration,
    negative_ttl: Duration,
}

impl Lifetimes {
    fn of(&self, entry: &Entry) -> Option<Duration> {
        Some(if entry.is_some() {
            self.ttl
        } else {
            self.negative_ttl
        })
    }
}

impl moka::Expiry<String, Entry> for Lifetimes {
    fn expire_after_create(
        &self,
        _: &String,
        entry: &Entry,
        _: std::time::Instant,
    ) -> Option<Duration> {
        self.of(entry)
    }

    fn expire_after_update(
        &self,
        _: &String,
        entry: &Entry,
        _: std::time::Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        self.of(entry)
    }
}

impl Customers {
    pub fn new(
        settings: &Settings,
        client: HttpsClient,
        timeout: Duration,
        shared: Option<Shared>,
        metrics: Arc<Metrics>,
    ) -> Customers {
        let cache = Cache::builder()
            .max_capacity(settings.cache_capacity)
            .support_invalidation_closures()
            .expire_after(Lifetimes {
                ttl: settings.cache_ttl,
                negative_ttl: settings.negative_ttl,
            })
            .build();
        Customers {
            settings: settings.clone(),
            cache,
            client,
            timeout,
            shared,
            metrics,
        }
    }

    /// Drops one user's entry (`Some`) or all (`None`) from this
    /// process's cache, for invalidations from other replicas.
    pub fn invalidator(&self) -> impl Fn(Option<&str>) + Send + Sync + 'static {
        let cache = self.cache.clone();
        move |user| match user {
            Some(user) => {
                let (cache, user) = (cache.clone(), user.to_string());
                tokio::spawn(async move { cache.invalidate(&user).await });
            }
            None => cache.invalidate_all(),
        }
    }

    /// Writes `user_id`'s entry to Redis (with the cache's lifetime for
    /// it) and tells the other replicas.
    async fn share(&self, user_id: &str, entry: &Entry) {
        if let Some(shared) = &self.shared {
            let value = entry.as_deref().unwrap_or(NONE);
            let ttl = match entry {
                Some(_) => self.settings.cache_ttl,
                None => self.settings.negative_ttl,
            };
            shared.put(Kind::Customer, user_id, value, ttl).await;
        }
    }

    /// The user's customer, if any.
    pub async fn find(&self, stripe: &Stripe, user_id: &str) -> Result<Entry, Error> {
        if let Some(entry) = self.cache.get(user_id).await {
            self.metrics.customer_cache(true);
            return Ok(entry);
        }
        self.metrics.customer_cache(false);
        // Requests that waited on one lookup share its error.
        self.cache
            .try_get_with(user_id.to_string(), self.lookup(stripe, user_id))
            .await
            .map_err(|error: Arc<Error>| match &*error {
                Error::Stripe(error) => Error::Stripe(error.clone()),
                Error::LookupUnavailable(cause) => Error::LookupUnavailable(cause.clone()),
                other => Error::LookupUnavailable(other.to_string()),
            })
    }

    /// The user's customer for a checkout: with the Stripe source, one is
    /// created when none exists; with the `http` source, `None` lets
    /// Checkout create it and the app link it from the webhook.
    pub async fn for_checkout(&self, stripe: &Stripe, user: &User) -> Result<Entry, Error> {
        let found = self.find(stripe, &user.id).await?;
        if found.is_some() || !matches!(self.settings.source, CustomerSource::Stripe) {
            return Ok(found);
        }
        let result = self
            .cache
            .entry(user.id.clone())
            .and_try_compute_with(|existing| async move {
                match existing.map(|e| e.into_value()) {
                    // Another request created it while this one waited.
                    Some(Some(_)) => Ok::<_, Error>(Op::Nop),
                    _ => {
                        // Or another replica, before Stripe's search shows it.
                        if let Some(id) = self.shared_customer(&user.id).await {
                            return Ok(Op::Put(Some(id)));
                        }
                        let id = self.create(stripe, user).await?;
                        self.share(&user.id, &Some(id.clone())).await;
                        Ok(Op::Put(Some(id)))
                    }
                }
            })
            .await?;
        Ok(result.into_entry().and_then(|entry| entry.into_value()))
    }

    /// Caches `customer_id` as `user_id`'s after a completed checkout, but
    /// only in place of a cached "none": a signed event can come from any
    /// Payment Link, so it may fill a gap, never replace a customer.
    pub async fn remember(&self, user_id: &str, customer_id: &str) {
        let customer = customer_id.to_string();
        let result = self
            .cache
            .entry(user_id.to_string())
            .and_compute_with(|existing| async move {
                match existing.map(|e| e.into_value()) {
                    Some(None) => Op::Put(Some(customer)),
                    _ => Op::Nop,
                }
            })
            .await;
        if let moka::ops::compute::CompResult::ReplacedWith(entry) = result {
            self.share(user_id, entry.value()).await;
        }
    }

    /// Drops every cached entry naming `customer_id` (a deleted customer).
    pub fn forget_customer(&self, customer_id: &str) {
        let customer_id = customer_id.to_string();
        let dropped = self
            .cache
            .invalidate_entries_if(move |_, entry| entry.as_deref() == Some(&*customer_id));
        if let Err(error) = dropped {
            tracing::error!(%error, "cannot drop a deleted customer from the cache");
        }
    }

    /// The customer another replica found or created for `user_id`.
    async fn shared_customer(&self, user_id: &str) -> Option<String> {
        let value = self.shared.as_ref()?.get(Kind::Customer, user_id).await?;
        Some(value).filter(|v| v != NONE)
    }

    /// Redis first (another replica may have found or created it), then
    /// the configured source, whose answer goes to Redis.
    async fn lookup(&self, stripe: &Stripe, user_id: &str) -> Result<Entry, Error> {
        if let Some(shared) = &self.shared {
            if let Some(value) = shared.get(Kind::Customer, user_id).await {
                return Ok(Some(value).filter(|v| v != NONE));
            }
        }
        let entry = self.lookup_source(stripe, user_id).await?;
        self.share(user_id, &entry).await;
        Ok(entry)
    }

    async fn lookup_source(&self, stripe: &Stripe, user_id: &str) -> Result<Entry, Error> {
        match &self.settings.source {
            CustomerSource::Stripe => self.search(stripe, user_id).await,
            CustomerSource::Http {
                lookup_url,
                lookup_headers,
                customer_id_pointer,
            } => {
                self.lookup_http(user_id, lookup_url, lookup_headers, customer_id_pointer)
                    .await
            }
        }
    }

    async fn search(&self, stripe: &Stripe, user_id: &str) -> Result<Entry, Error> {
        let query = format!(
            "metadata['{}']:'{}'",
            search_escape(&self.settings.metadata_key),
            search_escape(user_id)
        );
        let found = stripe_core::customer::SearchCustomer::new(query)
            .send(stripe)
            .await
            .map_err(|e| lookup_error("Stripe customer search", e))?;
        let key = &self.settings.metadata_key;
        Ok(found
            .data
            .into_iter()
            .find(|customer| owned_by(customer.metadata.as_ref(), key, user_id))
            .map(|customer| customer.id.to_string()))
    }

    async fn create(&self, stripe: &Stripe, user: &User) -> Result<String, Error> {
        let mut create =
            stripe_core::customer::CreateCustomer::new().metadata(std::collections::HashMap::from(
                [(self.settings.metadata_key.clone(), user.id.clone())],
            ));
        if let Some(email) = &user.email {
            create = create.email(email.clone());
        }
        // Derived from the user (and email, so a changed email is not an
        // idempotency conflict): racing checkouts, even on other replicas,
        // make one customer.
        let digest = Sha256::digest(format!(
            "{}\n{}",
            user.id,
            user.email.as_deref().unwrap_or("")
        ));
        let key = IdempotencyKey::new(format!(
            "stripe-sidecar-customer-{}",
            hex::encode(&digest[..16])
        ))
        .map_err(|e| Error::Internal(e.into()))?;
        let customer = create
            .customize()
            .request_strategy(RequestStrategy::Idempotent(key))
            .send(stripe)
            .await
            .map_err(Error::from)?;
        tracing::info!(customer = %customer.id, "created a Stripe customer");
        Ok(customer.id.to_string())
    }

    async fn lookup_http(
        &self,
        user_id: &str,
        url: &str,
        headers: &[(http::HeaderName, http::HeaderValue)],
        pointer: &str,
    ) -> Result<Entry, Error> {
        let encoded = percent_encoding::utf8_percent_encode(user_id, PATH_SEGMENT);
        let mut request = Request::get(url.replace("{userId}", &encoded.to_string()));
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let request = request
            .body(Full::new(Bytes::new()))
            .map_err(|e| Error::Internal(e.into()))?;
        // The URL itself may carry a credential: only the key is named.
        let failed = |why: String| Error::LookupUnavailable(format!("customers.lookup_url: {why}"));
        let (status, body) = fetch(&self.client, request, self.timeout, LOOKUP_MAX_BYTES)
            .await
            .map_err(|e| failed(e.to_string()))?;
        match status.as_u16() {
            404 => Ok(None),
            200 => {
                let json: serde_json::Value = serde_json::from_slice(&body)
                    .map_err(|_| failed("the reply is not JSON".into()))?;
                match json.pointer(pointer).and_then(|v| v.as_str()) {
                    Some(id) if id.starts_with("cus_") => Ok(Some(id.to_string())),
                    _ => Err(failed(format!("no cus_ string at {pointer}"))),
                }
            }
            other => Err(failed(format!("status {other}"))),
        }
    }
}

/// A read of `what` that failed: 500 when Stripe refused the key, else 503.
pub(crate) fn lookup_error(what: &str, error: StripeError) -> Error {
    if error.is_auth() {
        return Error::Stripe(error);
    }
    Error::LookupUnavailable(format!("{what}: {error}"))
}

/// Whether a customer's metadata names `user_id` exactly under `key`:
/// search matching is looser than equality, and a near miss must never
/// hand one user another's customer.
fn owned_by(
    metadata: Option<&std::collections::HashMap<String, String>>,
    key: &str,
    user_id: &str,
) -> bool {
    metadata
        .and_then(|m| m.get(key))
        .is_some_and(|v| v == user_id)
}

/// Escapes a value for a Stripe search query string (`'` and `\`).
fn search_escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('\'', "\\'")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: the first search hit was taken whatever its metadata.
    #[test]
    fn a_search_hit_must_name_the_user_exactly() {
        let metadata = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<std::collections::HashMap<_, _>>()
        };
        let user = "8f0e-uuid";
        assert!(owned_by(
            Some(&metadata(&[("user_id", user)])),
            "user_id",
            user
        ));
        for other in [
            metadata(&[("user_id", "8F0E-UUID")]),
            metadata(&[("user_id", "8f0e-uuid ")]),
            metadata(&[("user_id", "8f0e")]),
            metadata(&[("uid", user)]),
            metadata(&[]),
        ] {
            assert!(!owned_by(Some(&other), "user_id", user), "{other:?}");
        }
        assert!(!owned_by(None, "user_id", user));
    }

    #[test]
    fn search_values_are_escaped() {
        assert_eq!(search_escape("plain-uuid"), "plain-uuid");
        assert_eq!(search_escape("o'brien"), "o\\'brien");
        assert_eq!(search_escape("a\\'b"), "a\\\\\\'b");
    }
}
