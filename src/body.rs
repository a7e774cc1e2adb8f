//! The body type every response and forwarded request uses, and the few
//! helpers around it: a complete body, a JSON reply, and [`Reader`], which
//! reads a whole local-route body under a size limit, a deadline and a
//! process-wide budget of bytes being read, so no number of slow or
//! never-finishing clients can hold more memory than the budget.
//!
//! This module knows nothing of routes or errors beyond [`ReadError`],
//! which `error` turns into a reply.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Full};

use crate::BoxError;

/// A streaming body of bytes: what the sidecar sends and forwards.
pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// Boxes any body into [`Body`].
pub fn boxed<B>(body: B) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}

/// A complete body.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A JSON reply with `status`.
pub fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut response = Response::new(full(value.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Why a request body could not be read whole.
#[derive(Debug)]
pub enum ReadError {
    TooLarge,
    /// The body did not arrive whole within the deadline.
    TimedOut,
    /// The client broke the framing or went away.
    Malformed(BoxError),
}

/// Local-route body bytes being read at once, in all. Past this, reads
/// wait (within their deadline) for others to finish.
pub const BYTES_IN_FLIGHT: usize = 32 * 1024 * 1024;

/// Reads whole request bodies for the local routes.
pub struct Reader {
    budget: tokio::sync::Semaphore,
    timeout: Duration,
}

impl Reader {
    /// A reader whose bodies must arrive whole within `timeout`.
    pub fn new(timeout: Duration) -> Reader {
        Reader {
            budget: tokio::sync::Semaphore::new(BYTES_IN_FLIGHT),
            timeout,
        }
    }

    /// Reads a whole body into one buffer, refusing more than `limit`
    /// bytes (by `Content-Length` before reading anything, or while
    /// reading), and failing when it has not arrived within the deadline
    /// (waiting for the budget included). While it reads, the body holds
    /// its declared length, or `limit`, of the budget.
    pub async fn read(
        &self,
        headers: &http::HeaderMap,
        body: Body,
        limit: usize,
    ) -> Result<Bytes, ReadError> {
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(ReadError::TooLarge);
        }
        let share = declared.map_or(limit, |n| n as usize).min(BYTES_IN_FLIGHT);
        let read = async {
            let permits = u32::try_from(share).unwrap_or(u32::MAX);
            let _held = self
                .budget
                .acquire_many(permits)
                .await
                .map_err(|e| ReadError::Malformed(e.into()))?;
            collect(body, declared.map_or(0, |n| n as usize), limit).await
        };
        tokio::time::timeout(self.timeout, read)
            .await
            .unwrap_or(Err(ReadError::TimedOut))
    }
}

/// Collects `body` into one buffer of `capacity`, at most `limit` bytes.
async fn collect(mut body: Body, capacity: usize, limit: usize) -> Result<Bytes, ReadError> {
    let mut buffer = BytesMut::with_capacity(capacity);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(ReadError::Malformed)?;
        if let Ok(data) = frame.into_data() {
            if buffer.len() + data.len() > limit {
                return Err(ReadError::TooLarge);
            }
            buffer.extend_from_slice(&data);
        }
    }
    Ok(buffer.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn declared(length: usize) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
        headers
    }

    /// A body whose bytes never come.
    fn stalled() -> Body {
        let never = futures_util::stream::pending::<Result<http_body::Frame<Bytes>, BoxError>>();
        boxed(http_body_util::StreamBody::new(never))
    }

    #[tokio::test]
    async fn bodies_are_bounded_in_size_time_and_in_all() {
        let reader = Reader::new(Duration::from_millis(200));
        let small = || full("{}");
        assert_eq!(
            reader.read(&declared(2), small(), 64).await.unwrap(),
            Bytes::from_static(b"{}")
        );
        assert!(matches!(
            reader.read(&declared(65), small(), 64).await,
            Err(ReadError::TooLarge)
        ));
        assert!(matches!(
            reader
                .read(&http::HeaderMap::new(), full(vec![b'x'; 65]), 64)
                .await,
            Err(ReadError::TooLarge)
        ));
        // A client that stops sending is cut at the deadline.
        assert!(matches!(
            reader.read(&declared(10), stalled(), 64).await,
            Err(ReadError::TimedOut)
        ));
        // While stalled reads hold the whole budget, others wait instead
        // of adding to memory.
        let whole = BYTES_IN_FLIGHT;
        let all = declared(whole);
        let two = declared(2);
        let (hog, waiter) = tokio::join!(reader.read(&all, stalled(), whole), async {
            tokio::task::yield_now().await;
            tokio::time::timeout(Duration::from_millis(100), reader.read(&two, small(), 64)).await
        });
        assert!(matches!(hog, Err(ReadError::TimedOut)));
        assert!(waiter.is_err(), "still waiting for the budget: {waiter:?}");
        assert!(
            reader.read(&declared(2), small(), 64).await.is_ok(),
            "the budget came back"
        );
    }
}
