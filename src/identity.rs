//! Who is calling: the session token from the `Authorization: Bearer`
//! header or a Supabase auth cookie, verified with jsonwebtoken against
//! `hs256_secret` or the JWKS; or a server-to-server API key.
//!
//! The pipeline calls [`Identity::caller`] once per request; a handler
//! then asks [`Caller::subject`] whom the call is for, given the user or
//! customer the body names. Each refusal is a [`Rejection`], which `error`
//! turns into the contract's 401/403 and `metrics` labels. No token,
//! cookie or key is ever logged.
//!
//! Hand-written here: reading `@supabase/ssr` cookies (its chunking and
//! `base64-` encoding have no Rust crate) and the JWKS cache (jsonwebtoken
//! parses a JWK set but does not fetch, refresh or rate-limit one). The
//! algorithm of a token is always tied to its key: HS256 only with the
//! configured secret, RS256/ES256/EdDSA only with a JWKS key of that type
//! found by `kid`, so neither `alg: none` nor an HMAC check with a public
//! key can pass.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use bytes::Bytes;
use http::{header, HeaderMap, Request};
use http_body_util::Full;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use moka::future::Cache;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::{ApiKey, Auth};
use crate::http_client::{fetch, HttpsClient};
use crate::routes::Action;

/// Longest session token accepted; Supabase's are 1-2 KB.
const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Verified tokens kept at most.
const VERIFIED_CAPACITY: u64 = 50_000;
const JWKS_TIMEOUT: Duration = Duration::from_secs(5);
const JWKS_MAX_BYTES: usize = 1024 * 1024;

/// A signed-in user, from a verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: String,
    pub email: Option<String>,
}

/// Who sent the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    Anonymous,
    User(Arc<User>),
    /// A server-to-server caller, by the key's configured name.
    ApiKey(String),
}

impl Caller {
    /// Whom the call is for: an API-key caller acts for the user or
    /// customer the body names; anyone else is who they are, and naming
    /// someone is refused.
    pub fn subject(&self, named: Named) -> Result<Subject, Rejection> {
        let names_someone = named.user_id.is_some() || named.customer_id.is_some();
        match self {
            Caller::ApiKey(_) => Ok(match (named.customer_id, named.user_id) {
                (Some(id), _) => Subject::Customer {
                    id,
                    email: named.email,
                },
                (None, Some(id)) => Subject::User(User {
                    id,
                    email: named.email,
                }),
                (None, None) => Subject::Anonymous,
            }),
            _ if names_someone => Err(Rejection::NeedsApiKey),
            Caller::User(user) => Ok(Subject::User(User::clone(user))),
            Caller::Anonymous => Ok(Subject::Anonymous),
        }
    }

    /// The verified user's id, for the access log.
    pub fn user_id(&self) -> Option<&str> {
        match self {
            Caller::User(user) => Some(&user.id),
            _ => None,
        }
    }
}

/// Whom a billing call is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    Anonymous,
    User(User),
    /// An API-key caller naming a Stripe customer directly.
    Customer {
        id: String,
        email: Option<String>,
    },
}

/// What the body of a billing request names, for API-key callers.
#[derive(Debug, Clone, Default)]
pub struct Named {
    pub user_id: Option<String>,
    pub customer_id: Option<String>,
    pub email: Option<String>,
}

/// Why a caller was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// No token on a route that needs a user.
    NotSignedIn,
    /// A configured auth cookie that yields no token.
    BadCookie,
    /// Not a well-formed JWT, or over the size limit.
    Malformed,
    /// An algorithm with no configured key of its kind (`none`, HS256
    /// without a secret, RS256 without a JWKS, ...).
    Algorithm,
    /// No JWKS key with the token's `kid`, even after a refetch.
    UnknownKey,
    Signature,
    Expired,
    NotYetValid,
    Issuer,
    Audience,
    /// `exp` missing, a `required_claims` pair not matching, or no
    /// usable user id.
    Claims,
    UnknownApiKey,
    /// An API key calling an action it does not list.
    ActionNotAllowed,
    /// A session (or anonymous) caller naming a user or customer.
    NeedsApiKey,
}

impl Rejection {
    pub const ALL: [Rejection; 14] = [
        Rejection::NotSignedIn,
        Rejection::BadCookie,
        Rejection::Malformed,
        Rejection::Algorithm,
        Rejection::UnknownKey,
        Rejection::Signature,
        Rejection::Expired,
        Rejection::NotYetValid,
        Rejection::Issuer,
        Rejection::Audience,
        Rejection::Claims,
        Rejection::UnknownApiKey,
        Rejection::ActionNotAllowed,
        Rejection::NeedsApiKey,
    ];
}

/// The verifier, built once at start-up.
pub struct Identity {
    settings: Auth,
    hs256: Option<DecodingKey>,
    jwks: Option<Arc<Jwks>>,
    verified: Cache<[u8; 32], Arc<Verified>>,
}

/// A verified token and when it stops being valid.
struct Verified {
    user: Arc<User>,
    expires: SystemTime,
}

struct UntilExp;

impl moka::Expiry<[u8; 32], Arc<Verified>> for UntilExp {
    fn expire_after_create(
        &self,
        _key: &[u8; 32],
        value: &Arc<Verified>,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(
            value
                .expires
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO),
        )
    }
}

/// A credential found in a request.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Credential {
    Jwt(String),
    ApiKey(String),
}

impl Identity {
    /// Builds the verifier; with a `jwks_url`, starts fetching the JWKS in
    /// the background (so it must run inside the runtime).
    pub fn new(settings: &Auth, client: HttpsClient) -> Identity {
        let jwks = settings.jwks_url.as_ref().map(|url| {
            Jwks::start(
                url.as_str(),
                client,
                settings.jwks_refresh,
                settings.jwks_min_refetch,
            )
        });
        Identity {
            hs256: settings
                .hs256_secret
                .as_ref()
                .map(|s| DecodingKey::from_secret(s.as_bytes())),
            jwks,
            verified: Cache::builder()
                .max_capacity(VERIFIED_CAPACITY)
                .expire_after(UntilExp)
                .build(),
            settings: settings.clone(),
        }
    }

    /// Who sent these headers, for a route doing `action`. No credential
    /// is [`Caller::Anonymous`]; a present but unusable one is refused.
    pub async fn caller(&self, headers: &HeaderMap, action: Action) -> Result<Caller, Rejection> {
        match credential(headers, &self.settings)? {
            None => Ok(Caller::Anonymous),
            Some(Credential::Jwt(token)) => self.verify(&token).await.map(Caller::User),
            Some(Credential::ApiKey(key)) => {
                let key = api_key(&self.settings.api_keys, &key).ok_or(Rejection::UnknownApiKey)?;
                if !key.actions.contains(&action) {
                    return Err(Rejection::ActionNotAllowed);
                }
                Ok(Caller::ApiKey(key.name.clone()))
            }
        }
    }

    /// The verified session in these headers, for identity headers and
    /// gates: `None` without one (an API key is not a session here); a
    /// present but unusable token is refused.
    pub async fn session(&self, headers: &HeaderMap) -> Result<Option<Arc<User>>, Rejection> {
        match credential(headers, &self.settings)? {
            Some(Credential::Jwt(token)) => self.verify(&token).await.map(Some),
            Some(Credential::ApiKey(_)) | None => Ok(None),
        }
    }

    /// Verifies a session token, from the cache when it was verified before.
    async fn verify(&self, token: &str) -> Result<Arc<User>, Rejection> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(Rejection::Malformed);
        }
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(hit) = self.verified.get(&key).await {
            // moka may keep an entry until its next sweep; exp is the rule.
            if hit.expires > SystemTime::now() {
                return Ok(hit.user.clone());
            }
        }
        let verified = Arc::new(self.verify_uncached(token).await?);
        let user = verified.user.clone();
        self.verified.insert(key, verified).await;
        Ok(user)
    }

    async fn verify_uncached(&self, token: &str) -> Result<Verified, Rejection> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| Rejection::Malformed)?;
        let jwks_key;
        let key = match header.alg {
            Algorithm::HS256 => self.hs256.as_ref().ok_or(Rejection::Algorithm)?,
            Algorithm::RS256 | Algorithm::ES256 | Algorithm::EdDSA => {
                let jwks = self.jwks.as_ref().ok_or(Rejection::Algorithm)?;
                let kid = header.kid.as_deref().ok_or(Rejection::UnknownKey)?;
                jwks_key = jwks.key(kid, header.alg).await?;
                &jwks_key
            }
            _ => return Err(Rejection::Algorithm),
        };
        let mut validation = Validation::new(header.alg);
        validation.leeway = self.settings.leeway.as_secs();
        validation.validate_nbf = true;
        // A configured audience or issuer is required, not just checked
        // when present: a token without it (or with `aud: null`) fails.
        let mut required = vec!["exp"];
        match &self.settings.audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        if let Some(issuer) = &self.settings.issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        let claims = jsonwebtoken::decode::<Map<String, Value>>(token, key, &validation)
            .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind;
                match e.kind() {
                    ErrorKind::InvalidSignature => Rejection::Signature,
                    ErrorKind::ExpiredSignature => Rejection::Expired,
                    ErrorKind::ImmatureSignature => Rejection::NotYetValid,
                    ErrorKind::InvalidIssuer => Rejection::Issuer,
                    ErrorKind::InvalidAudience => Rejection::Audience,
                    ErrorKind::MissingRequiredClaim(_) => Rejection::Claims,
                    ErrorKind::InvalidAlgorithm => Rejection::Algorithm,
                    _ => Rejection::Malformed,
                }
            })?
            .claims;
        self.check_claims(&claims)
    }

    fn check_claims(&self, claims: &Map<String, Value>) -> Result<Verified, Rejection> {
        for (name, expected) in &self.settings.required_claims {
            if claims.get(name) != Some(expected) {
                return Err(Rejection::Claims);
            }
        }
        let id = match claims.get(&self.settings.user_id_claim) {
            Some(Value::String(id)) if !id.is_empty() => id.clone(),
            _ => return Err(Rejection::Claims),
        };
        let email = match claims.get(&self.settings.email_claim) {
            Some(Value::String(email)) if !email.is_empty() => Some(email.clone()),
            _ => None,
        };
        // An `exp` past what the clock can say is refused, not a panic.
        let expires = claims
            .get("exp")
            .and_then(Value::as_u64)
            .and_then(|exp| UNIX_EPOCH.checked_add(Duration::from_secs(exp)))
            .ok_or(Rejection::Claims)?;
        Ok(Verified {
            user: Arc::new(User { id, email }),
            expires,
        })
    }
}

/// The configured API key whose SHA-256 is that of `presented`, compared in
/// constant time against every key.
fn api_key<'a>(keys: &'a [ApiKey], presented: &str) -> Option<&'a ApiKey> {
    let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
    let mut found = None;
    for key in keys {
        if bool::from(key.sha256.ct_eq(&digest)) {
            found = Some(key);
        }
    }
    found
}

/// The credential in a request: a bearer token in the header first, then
/// each configured cookie in order. Another scheme in the header (Basic
/// auth in front of a staging site, Digest) or an empty one is not a
/// session token, so the cookies are still read.
pub(crate) fn credential(
    headers: &HeaderMap,
    settings: &Auth,
) -> Result<Option<Credential>, Rejection> {
    if let Some(token) = headers.get(&settings.header).and_then(bearer) {
        return Ok(Some(if looks_like_jwt(token) {
            Credential::Jwt(token.to_string())
        } else {
            Credential::ApiKey(token.to_string())
        }));
    }
    let cookies = request_cookies(headers);
    for pattern in &settings.cookies {
        if let Some(value) = cookie_value(&cookies, pattern)? {
            let token = session_token(&value).ok_or(Rejection::BadCookie)?;
            return Ok(Some(Credential::Jwt(token)));
        }
    }
    Ok(None)
}

/// The token of a `Bearer <token>` header value (scheme in any case).
fn bearer(value: &http::HeaderValue) -> Option<&str> {
    let (scheme, token) = value.to_str().ok()?.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Three dot-separated base64url parts (the last may be empty, as in the
/// `alg: none` tokens attackers send, which must still be refused as JWTs).
fn looks_like_jwt(value: &str) -> bool {
    let base64url = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'=')
    };
    // Checked on every request that carries a token: no allocation.
    let mut parts = value.split('.');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(header), Some(claims), Some(signature), None) => {
            !header.is_empty()
                && !claims.is_empty()
                && [header, claims, signature].into_iter().all(base64url)
        }
        _ => false,
    }
}

/// Every `name=value` of every `Cookie` header, in order.
fn request_cookies(headers: &HeaderMap) -> Vec<(&str, &str)> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.split_once('='))
        .map(|(name, value)| (name.trim(), value.trim().trim_matches('"')))
        .collect()
}

/// Whether a cookie name matches a configured name, where a `*` stands for
/// one or more characters other than `.` (`sb-*-auth-token` matches
/// `sb-abcd-auth-token` and `sb-my-app-auth-token`, never a `NAME.0`
/// chunk, whose base name is matched instead).
fn name_matches(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((prefix, suffix)) => {
            name.len() > prefix.len() + suffix.len()
                && name.starts_with(prefix)
                && name.ends_with(suffix)
                && !name[prefix.len()..name.len() - suffix.len()].contains('.')
        }
    }
}

/// The value of the first cookie matching `pattern`, its `NAME.0`,
/// `NAME.1`, ... chunks joined in order. A gap in the chunks is an error.
fn cookie_value(cookies: &[(&str, &str)], pattern: &str) -> Result<Option<String>, Rejection> {
    // The first matching base name, whole or chunked, in cookie order.
    let base = cookies.iter().find_map(|(name, _)| {
        let base = match name.rsplit_once('.') {
            Some((base, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => base,
            _ => name,
        };
        name_matches(pattern, base).then_some(base)
    });
    let Some(base) = base else { return Ok(None) };
    if let Some((_, value)) = cookies.iter().find(|(name, _)| *name == base) {
        return Ok(Some(percent_decode(value)));
    }
    let mut chunks: Vec<(usize, &str)> = cookies
        .iter()
        .filter_map(|(name, value)| {
            let n = name.strip_prefix(base)?.strip_prefix('.')?;
            Some((n.parse().ok()?, *value))
        })
        .collect();
    chunks.sort_by_key(|(n, _)| *n);
    chunks.dedup_by_key(|(n, _)| *n);
    if chunks.iter().enumerate().any(|(i, (n, _))| i != *n) {
        return Err(Rejection::BadCookie);
    }
    Ok(Some(
        chunks.iter().map(|(_, v)| percent_decode(v)).collect(),
    ))
}

fn percent_decode(value: &str) -> String {
    percent_encoding::percent_decode_str(value)
        .decode_utf8_lossy()
        .into_owned()
}

/// The access token in a Supabase auth cookie value: `base64-` + base64url
/// of the session JSON, the session JSON itself (older `@supabase/ssr`),
/// a JSON array whose first item is the token (auth-helpers), or a raw JWT.
fn session_token(value: &str) -> Option<String> {
    let json = match value.strip_prefix("base64-") {
        Some(encoded) => {
            let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(encoded.trim_end_matches('='))
                .ok()?;
            String::from_utf8(bytes).ok()?
        }
        None if looks_like_jwt(value) => return Some(value.to_string()),
        None => value.to_string(),
    };
    let token = match serde_json::from_str::<Value>(&json).ok()? {
        Value::Object(session) => session.get("access_token")?.as_str()?.to_string(),
        Value::Array(items) => items.first()?.as_str()?.to_string(),
        _ => return None,
    };
    looks_like_jwt(&token).then_some(token)
}

/// The JWKS: keys by `kid`, refreshed in the background, refetched (at most
/// once per `min_refetch`) when a token names an unknown `kid`, and kept
/// when a fetch fails.
struct Jwks {
    url: String,
    client: HttpsClient,
    keys: RwLock<Arc<HashMap<String, (Algorithm, DecodingKey)>>>,
    /// When the last fetch started; also serializes refetches.
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
    min_refetch: Duration,
}

impl Jwks {
    fn start(
        url: &str,
        client: HttpsClient,
        refresh: Duration,
        min_refetch: Duration,
    ) -> Arc<Jwks> {
        let jwks = Arc::new(Jwks {
            url: url.to_string(),
            client,
            keys: RwLock::new(Arc::default()),
            last_fetch: tokio::sync::Mutex::new(None),
            min_refetch,
        });
        tokio::spawn(refresh_forever(Arc::downgrade(&jwks), refresh));
        jwks
    }

    fn lookup(&self, kid: &str, alg: Algorithm) -> Option<DecodingKey> {
        // A panic while the lock was held cannot leave a half-written map
        // (it is swapped whole), so a poisoned lock is still good.
        let keys = self
            .keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        keys.get(kid)
            .filter(|(key_alg, _)| *key_alg == alg)
            .map(|(_, key)| key.clone())
    }

    /// The key for `kid`, refetching once if it is unknown and the last
    /// fetch is older than `min_refetch`.
    async fn key(&self, kid: &str, alg: Algorithm) -> Result<DecodingKey, Rejection> {
        if let Some(key) = self.lookup(kid, alg) {
            return Ok(key);
        }
        let mut last = self.last_fetch.lock().await;
        // A fetch may have finished while this request waited for the lock.
        if let Some(key) = self.lookup(kid, alg) {
            return Ok(key);
        }
        if last.is_none_or(|at| at.elapsed() >= self.min_refetch) {
            *last = Some(Instant::now());
            self.fetch().await;
        }
        drop(last);
        self.lookup(kid, alg).ok_or(Rejection::UnknownKey)
    }

    /// Fetches and installs the key set; on failure keeps the last one.
    async fn fetch(&self) -> bool {
        let request = Request::get(&self.url)
            .header(header::ACCEPT, "application/json")
            .body(Full::new(Bytes::new()));
        let keys = match request {
            Err(error) => Err(error.to_string()),
            Ok(request) => match fetch(&self.client, request, JWKS_TIMEOUT, JWKS_MAX_BYTES).await {
                Ok((status, body)) if status.is_success() => parse_jwks(&body),
                Ok((status, _)) => Err(format!("status {status}")),
                Err(error) => Err(error.to_string()),
            },
        };
        match keys {
            Ok(keys) => {
                tracing::debug!(url = %self.url, keys = keys.len(), "JWKS fetched");
                *self.keys.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(keys);
                true
            }
            Err(error) => {
                tracing::warn!(url = %self.url, %error, "JWKS fetch failed; keeping the last keys");
                false
            }
        }
    }
}

/// Fetches at start and every `refresh`; after a failure, retries sooner.
async fn refresh_forever(jwks: Weak<Jwks>, refresh: Duration) {
    loop {
        let Some(strong) = jwks.upgrade() else { return };
        // Held through the fetch: a request meeting an unknown kid meanwhile
        // waits for these keys instead of fetching them again.
        let mut last = strong.last_fetch.lock().await;
        *last = Some(Instant::now());
        let ok = strong.fetch().await;
        drop(last);
        let wait = if ok {
            refresh
        } else {
            strong.min_refetch.clamp(Duration::from_secs(1), refresh)
        };
        drop(strong);
        tokio::time::sleep(wait).await;
    }
}

/// The signing keys of a JWK set, by `kid`, each tied to its one algorithm.
/// Keys this verifier cannot use (encryption keys, other curves, no `kid`)
/// are skipped rather than failing the set.
fn parse_jwks(body: &[u8]) -> Result<HashMap<String, (Algorithm, DecodingKey)>, String> {
    #[derive(serde::Deserialize)]
    struct Set {
        keys: Vec<Value>,
    }
    let set: Set = serde_json::from_slice(body).map_err(|e| format!("not a JWK set: {e}"))?;
    let mut keys = HashMap::new();
    for value in set.keys {
        let Ok(jwk) = serde_json::from_value::<Jwk>(value) else {
            continue;
        };
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
            continue;
        }
        let kind = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => Algorithm::RS256,
            AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => {
                Algorithm::ES256
            }
            AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
                Algorithm::EdDSA
            }
            _ => continue,
        };
        let declared = match jwk.common.key_algorithm {
            None => Some(kind),
            Some(KeyAlgorithm::RS256) => Some(Algorithm::RS256),
            Some(KeyAlgorithm::ES256) => Some(Algorithm::ES256),
            Some(KeyAlgorithm::EdDSA) => Some(Algorithm::EdDSA),
            Some(_) => None,
        };
        if declared != Some(kind) {
            continue;
        }
        let (Some(kid), Ok(key)) = (jwk.common.key_id.clone(), DecodingKey::from_jwk(&jwk)) else {
            continue;
        };
        keys.insert(kid, (kind, key));
    }
    // A set with nothing usable is a failed fetch: the last good keys stay.
    if keys.is_empty() {
        return Err("no usable signing key in the JWK set".into());
    }
    Ok(keys)
}

#[cfg(test)]
mod tests;
