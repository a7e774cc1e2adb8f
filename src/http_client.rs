//! The outbound HTTP(S) client for the sidecar's own calls (Stripe, JWKS
//! fetches, the `http` customer lookup): pooled keep-alive connections,
//! rustls with the webpki roots and the ring provider, and [`fetch`], a
//! deadline and a size limit on a whole reply.
//!
//! Proxied app traffic does not come through here; it uses the plain-HTTP
//! client in `proxy`.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::BoxError;

pub type HttpsClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Builds the shared client.
pub fn https_client(connect_timeout: Duration) -> std::io::Result<HttpsClient> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
        .map_err(std::io::Error::other)?
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_timer(TokioTimer::new())
        .build(https))
}

/// Sends `request` and reads the whole reply, failing after `timeout` or
/// beyond `max_bytes`.
pub async fn fetch(
    client: &HttpsClient,
    request: Request<Full<Bytes>>,
    timeout: Duration,
    max_bytes: usize,
) -> Result<(StatusCode, Bytes), BoxError> {
    tokio::time::timeout(timeout, async {
        let response = client.request(request).await?;
        let status = response.status();
        let body = Limited::new(response.into_body(), max_bytes)
            .collect()
            .await?
            .to_bytes();
        Ok((status, body))
    })
    .await
    .map_err(|_| BoxError::from(format!("no complete reply within {timeout:?}")))?
}
