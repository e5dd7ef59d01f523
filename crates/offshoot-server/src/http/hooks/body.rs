//! Webhook bodies under load: read as they stream in, never more than [`MAX_BODY_BYTES`] of one
//! body, never more than [`BODY_BUDGET_BYTES`] of all bodies being read at once, and never more
//! than [`MAX_CONCURRENT_REQUESTS`] webhook requests at a time. What does not fit is refused at
//! once (413, or 503 with `Retry-After`) instead of queuing, so a flood of unsigned requests costs
//! a bounded amount of memory.
//!
//! Each provider authenticates what it can before the body is read (GitHub: the signature header
//! is present and well-formed; GitLab: the token itself), and GitHub's HMAC is fed chunk by chunk
//! while the body streams in ([`read`] hands every chunk to the caller); nothing parses a body
//! before it is authenticated.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::http::error::ApiError;

/// GitHub caps webhook payloads at 25 MB and does not send larger ones; GitLab's are smaller.
/// A larger body is refused: by its `Content-Length` before any of it is read, or as soon as a
/// body without one grows past the cap.
pub const MAX_BODY_BYTES: usize = 25 * 1024 * 1024;

/// Bytes of webhook bodies held at once, across all requests: two bodies of the largest size, or
/// thousands of ordinary ones (a pull-request event is 10–30 KB).
pub const BODY_BUDGET_BYTES: usize = 64 * 1024 * 1024;

/// Webhook requests being read or handled at once; one more is answered 503 at once.
pub const MAX_CONCURRENT_REQUESTS: usize = 32;

/// A body must have arrived within this time (GitHub itself gives up on a delivery after 10 s), so
/// a client trickling bytes cannot hold a slot or its share of the budget.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// What a refused request is told to wait before trying again.
const RETRY_AFTER_SECONDS: &str = "1";

/// The shared bounds of every webhook endpoint.
#[derive(Clone)]
pub struct Limits {
    requests: Arc<Semaphore>,
    body_bytes: Arc<Semaphore>,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            requests: Arc::new(Semaphore::new(MAX_CONCURRENT_REQUESTS)),
            body_bytes: Arc::new(Semaphore::new(BODY_BUDGET_BYTES)),
        }
    }
}

impl Limits {
    /// A slot for one request, held until it is answered; `Err` (503) when all are taken.
    pub fn admit(&self) -> Result<OwnedSemaphorePermit, Refused> {
        self.requests
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refused::Busy("too many webhook requests at once"))
    }
}

/// A body that was read whole; its share of the budget is given back when it is dropped.
pub struct Received {
    pub bytes: Vec<u8>,
    _reserved: Option<OwnedSemaphorePermit>,
}

/// Why a body was not read.
#[derive(Debug)]
pub enum Refused {
    /// 413: larger than [`MAX_BODY_BYTES`].
    TooLarge,
    /// 503 with `Retry-After`: the request slots or the body budget are used up.
    Busy(&'static str),
    /// 408: the body did not arrive within [`BODY_TIMEOUT`].
    TooSlow,
    /// 400: the connection broke or the framing was invalid.
    Broken,
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let error = match self {
            Refused::TooLarge => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("webhook bodies are limited to {} MB", MAX_BODY_BYTES / (1024 * 1024)),
            ),
            Refused::Busy(why) => {
                let error = ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "webhooks_busy",
                    format!("{why}; retry later"),
                );
                let mut response = error.into_response();
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECONDS));
                return response;
            }
            Refused::TooSlow => ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                "the webhook body did not arrive in time",
            ),
            Refused::Broken => {
                ApiError::bad_request("invalid_request", "the webhook body could not be read")
            }
        };
        error.into_response()
    }
}

/// The declared length, if any; an unparsable one is treated as absent (hyper refuses those
/// before a handler runs anyway).
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH)?.to_str().ok()?.trim().parse().ok()
}

/// Refuses a body by its declared length alone, before any of it is read.
fn check_declared_length(headers: &HeaderMap) -> Result<(), Refused> {
    match declared_length(headers) {
        Some(length) if length > MAX_BODY_BYTES as u64 => Err(Refused::TooLarge),
        _ => Ok(()),
    }
}

/// Reads `body` within the cap, the budget and the time limit, handing each chunk to `inspect`
/// as it arrives (GitHub's HMAC). The caller has authenticated what the headers allow already.
pub async fn read(
    limits: &Limits,
    headers: &HeaderMap,
    body: Body,
    inspect: impl FnMut(&[u8]),
) -> Result<Received, Refused> {
    check_declared_length(headers)?;
    match tokio::time::timeout(
        BODY_TIMEOUT,
        read_within_budget(limits, declared_length(headers), body, inspect),
    )
    .await
    {
        Ok(result) => result,
        Err(_) => Err(Refused::TooSlow),
    }
}

async fn read_within_budget(
    limits: &Limits,
    declared: Option<u64>,
    mut body: Body,
    mut inspect: impl FnMut(&[u8]),
) -> Result<Received, Refused> {
    // A declared length is reserved whole, before reading: a body that cannot be held is refused
    // before it costs anything. Without one, each chunk is reserved as it arrives.
    let mut reserved = match declared {
        Some(length) => {
            let length = u32::try_from(length).map_err(|_| Refused::TooLarge)?;
            Some(
                limits
                    .body_bytes
                    .clone()
                    .try_acquire_many_owned(length)
                    .map_err(|_| no_budget())?,
            )
        }
        None => None,
    };
    let mut bytes = Vec::with_capacity(declared.map_or(0, |length| length as usize));
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| Refused::Broken)?;
        let Ok(chunk) = frame.into_data() else { continue };
        if bytes.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(Refused::TooLarge);
        }
        if declared.is_none() {
            let more = u32::try_from(chunk.len()).map_err(|_| Refused::TooLarge)?;
            let permit =
                limits.body_bytes.clone().try_acquire_many_owned(more).map_err(|_| no_budget())?;
            match reserved.as_mut() {
                Some(held) => held.merge(permit),
                None => reserved = Some(permit),
            }
        }
        inspect(&chunk);
        bytes.extend_from_slice(&chunk);
    }
    Ok(Received { bytes, _reserved: reserved })
}

fn no_budget() -> Refused {
    Refused::Busy("too many webhook bodies are being read at once")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(length: Option<usize>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(length) = length {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
        }
        headers
    }

    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime")
            .block_on(future)
    }

    #[test]
    fn a_body_is_read_and_inspected_chunk_by_chunk() {
        let limits = Limits::default();
        let mut seen = Vec::new();
        let received = block_on(read(&limits, &headers(Some(5)), Body::from("hello"), |chunk| {
            seen.extend_from_slice(chunk)
        }))
        .expect("read");
        assert_eq!((received.bytes.as_slice(), seen.as_slice()), (&b"hello"[..], &b"hello"[..]));
        assert_eq!(
            limits.body_bytes.available_permits(),
            BODY_BUDGET_BYTES - 5,
            "held while the body is"
        );
        drop(received);
        assert_eq!(limits.body_bytes.available_permits(), BODY_BUDGET_BYTES, "given back");
    }

    #[test]
    fn oversized_bodies_are_refused_by_length_or_as_they_grow() {
        let limits = Limits::default();
        let refused =
            block_on(read(&limits, &headers(Some(MAX_BODY_BYTES + 1)), Body::empty(), |_| ()));
        assert!(matches!(refused, Err(Refused::TooLarge)));
        let big = vec![b'x'; MAX_BODY_BYTES + 1];
        let refused = block_on(read(&limits, &headers(None), Body::from(big), |_| ()));
        assert!(matches!(refused, Err(Refused::TooLarge)));
        assert_eq!(limits.body_bytes.available_permits(), BODY_BUDGET_BYTES);
    }

    #[test]
    fn the_budget_refuses_what_it_cannot_hold() {
        let limits = Limits::default();
        let two_large = block_on(async {
            let first = read(
                &limits,
                &headers(Some(MAX_BODY_BYTES)),
                Body::from(vec![b' '; MAX_BODY_BYTES]),
                |_| (),
            )
            .await
            .expect("read");
            let second = read(
                &limits,
                &headers(Some(MAX_BODY_BYTES)),
                Body::from(vec![b' '; MAX_BODY_BYTES]),
                |_| (),
            )
            .await
            .expect("read");
            (first, second)
        });
        let refused =
            block_on(read(&limits, &headers(Some(MAX_BODY_BYTES)), Body::empty(), |_| ()));
        assert!(matches!(refused, Err(Refused::Busy(_))), "a third large body is over the budget");
        let refused =
            block_on(read(&limits, &headers(None), Body::from(vec![b' '; MAX_BODY_BYTES]), |_| ()));
        assert!(
            matches!(refused, Err(Refused::Busy(_))),
            "also when its length shows only as it streams"
        );
        assert!(
            block_on(read(&limits, &headers(Some(5)), Body::from("hello"), |_| ())).is_ok(),
            "a small one still fits"
        );
        drop(two_large);
        assert_eq!(limits.body_bytes.available_permits(), BODY_BUDGET_BYTES);
        let slots: Vec<_> =
            (0..MAX_CONCURRENT_REQUESTS).map(|_| limits.admit().expect("a slot")).collect();
        assert!(limits.admit().is_err(), "one more than the slots");
        drop(slots);
        assert!(limits.admit().is_ok());
    }
}
