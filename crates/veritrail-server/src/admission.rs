//! The admission gate: every route that reads a request body goes through [`read_body`], which
//! takes a permit, checks the media type and reads a bounded body in a bounded time.
//!
//! Permits bound the memory of bodies held at once (`max_concurrent_ingests` times the largest
//! body) and are shared fairly: one key holds at most `max_concurrent_ingests_per_key` of them,
//! so a producer that opens endless slow bodies is refused itself while the others go on.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{to_bytes, Body, Bytes};
use axum::http::{header, HeaderMap, StatusCode};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::access::Caller;
use crate::problem::Problem;
use crate::AppState;

/// Longest time to receive a request body.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(60);

/// Media types of JSON documents.
pub const JSON: &[&str] = &["application/json"];

/// Permits for requests that read a body, shared across keys.
pub struct Admission {
    permits: Arc<Semaphore>,
    total: usize,
    per_key_max: usize,
    held: Arc<Mutex<HashMap<String, usize>>>,
}

/// A granted admission; dropping it returns the permit.
pub struct Admitted {
    _permit: OwnedSemaphorePermit,
    key: String,
    held: Arc<Mutex<HashMap<String, usize>>>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = held.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.key);
            }
        }
    }
}

impl Admission {
    /// A gate of `total` permits, at most `per_key` of them held by one key.
    pub fn new(total: usize, per_key: usize) -> Admission {
        Admission {
            permits: Arc::new(Semaphore::new(total)),
            total,
            per_key_max: per_key.clamp(1, total.max(1)),
            held: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Admits one request of `who`, or answers 503 with `Retry-After` (which every client
    /// retries, Kubernaut's included; a 429 it would drop).
    pub fn admit(&self, who: &str) -> Result<Admitted, Problem> {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let mine = held.get(who).copied().unwrap_or(0);
        if mine >= self.per_key_max {
            metrics::counter!("veritrail_admission_refusals_total", "reason" => "per_key")
                .increment(1);
            return Err(busy(format!(
                "this key already has {mine} requests in progress (at most {} at once); retry shortly",
                self.per_key_max
            )));
        }
        let permit = self.permits.clone().try_acquire_owned().map_err(|_| {
            metrics::counter!("veritrail_admission_refusals_total", "reason" => "total")
                .increment(1);
            busy(format!(
                "{} requests are in progress; retry shortly",
                self.total
            ))
        })?;
        *held.entry(who.to_string()).or_insert(0) += 1;
        Ok(Admitted {
            _permit: permit,
            key: who.to_string(),
            held: self.held.clone(),
        })
    }
}

fn busy(detail: String) -> Problem {
    let mut p = Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "Too many concurrent requests",
        detail,
    );
    p.retry_after_s = Some(1);
    p
}

/// Whom permits are counted against: the key, else (authentication off) everyone together.
fn principal(caller: &Caller) -> String {
    match &caller.key {
        Some(k) => format!("key:{}", k.id),
        None => format!("tenant:{}", caller.tenant),
    }
}

/// The request's media type, lowercased, without parameters (`application/json` when absent).
pub fn media_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| "application/json".into())
}

/// Admits the request, checks that its media type is one of `accepted` (415 otherwise) and reads
/// its body: at most `limit` bytes (413 beyond) within [`BODY_TIMEOUT`] (408). The permit is held
/// until the returned guard is dropped, so a handler keeps it while it works on the body.
pub async fn read_body(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    accepted: &[&str],
) -> Result<(Admitted, String, Bytes), Problem> {
    let media = media_type(headers);
    if !accepted.contains(&media.as_str()) {
        return Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Unsupported media type",
            format!(
                "`{media}` is not accepted here; send {}",
                accepted.join(" or ")
            ),
        ));
    }
    let admitted = state.admission.admit(&principal(caller))?;
    // A slow sender holds a permit and a connection: give it a bounded time.
    let bytes = tokio::time::timeout(BODY_TIMEOUT, to_bytes(body, limit))
        .await
        .map_err(|_| {
            Problem::new(
                StatusCode::REQUEST_TIMEOUT,
                "Request too slow",
                format!(
                    "the body did not arrive within {} s",
                    BODY_TIMEOUT.as_secs()
                ),
            )
        })?
        .map_err(|_| {
            Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "Request too large",
                format!("the body exceeds {limit} bytes"),
            )
        })?;
    Ok((admitted, media, bytes))
}

/// [`read_body`] for routes that take a JSON document.
pub async fn read_json(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<(Admitted, Bytes), Problem> {
    let (admitted, _, bytes) = read_body(state, caller, headers, body, limit, JSON).await?;
    Ok((admitted, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_key_cannot_take_every_permit() {
        let gate = Admission::new(4, 2);
        let a1 = gate.admit("a").expect("first");
        let _a2 = gate.admit("a").expect("second");
        assert!(gate.admit("a").is_err(), "a third for one key is refused");
        let _b1 = gate.admit("b").expect("another key still gets one");
        let _b2 = gate.admit("b").expect("and its share");
        assert!(gate.admit("c").is_err(), "all permits taken");
        drop(a1);
        let _c = gate.admit("c").expect("a returned permit is reusable");
        assert!(gate.admit("a").is_err(), "no permit left for anyone");
    }
}
