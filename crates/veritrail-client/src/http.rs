//! One request to `POST /v1/events` and what its answer means for the batch.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, RETRY_AFTER};
use reqwest::StatusCode;
use serde_json::Value;

use crate::config::{Compression, Config, KeyRefresh, COMPRESS_MIN_BYTES};
use crate::error::ClientError;

/// Largest reply body read: receipts for 1000 events take about 150 KiB.
const MAX_REPLY_BYTES: usize = 1024 * 1024;

/// What one attempt means for the batch.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// 200 with one receipt per event: the events are durable on the server.
    Delivered,
    /// Worth trying again later: no connection, a timeout, 408, 429, 5xx, or a reply that does
    /// not look like the server's.
    Retry {
        /// The server's `Retry-After`, if any.
        retry_after: Option<Duration>,
        /// For the log.
        why: String,
    },
    /// 401 or 403.
    Unauthorized {
        /// The status.
        status: u16,
    },
    /// 400 naming the events at these indexes as invalid; nothing was stored.
    Invalid {
        /// Indexes into the request's array, sorted, without repeats.
        indexes: Vec<usize>,
        /// The server's problem detail.
        detail: String,
    },
    /// The request as a whole was refused (another 4xx); nothing was stored.
    Rejected {
        /// The status.
        status: u16,
        /// The server's problem detail.
        detail: String,
    },
    /// 413: too many events or bytes in one request.
    TooLarge {
        /// The server's problem detail.
        detail: String,
    },
    /// 409: an `event_id` of the request was already stored with other content.
    Conflict {
        /// The server's problem detail.
        detail: String,
    },
}

/// The HTTP side: a connection pool, the endpoint and the current key.
pub(crate) struct Transport {
    http: reqwest::Client,
    endpoint: reqwest::Url,
    key: Mutex<Option<String>>,
    refresh: Option<KeyRefresh>,
    max_retry_after: Duration,
    compression: Compression,
    /// Set once the server refused a compressed body and took it uncompressed.
    compression_refused: AtomicBool,
}

impl Transport {
    /// Builds the pool for `config`.
    pub(crate) fn new(config: &Config) -> Result<Transport, ClientError> {
        let base = config.url.trim_end_matches('/');
        let endpoint = reqwest::Url::parse(&format!("{base}/v1/events"))
            .map_err(|e| ClientError::Config(format!("url {:?}: {e}", config.url)))?;
        if !matches!(endpoint.scheme(), "http" | "https") {
            return Err(ClientError::Config(format!(
                "url {:?} must start with http:// or https://",
                config.url
            )));
        }
        let mut builder = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .connect_timeout(config.request_timeout);
        if let Some(pem) = &config.ca_cert_pem {
            let ca = reqwest::Certificate::from_pem(pem)
                .map_err(|e| ClientError::Config(format!("ca_cert_pem: {e}")))?;
            builder = builder.add_root_certificate(ca);
        }
        if let Some(pem) = &config.client_identity_pem {
            let id = reqwest::Identity::from_pem(pem)
                .map_err(|e| ClientError::Config(format!("client_identity_pem: {e}")))?;
            builder = builder.identity(id);
        }
        let http = builder.build().map_err(ClientError::Http)?;
        Ok(Transport {
            http,
            endpoint,
            key: Mutex::new(config.api_key.clone()),
            refresh: config.key_refresh.clone(),
            max_retry_after: config.retry.max_retry_after,
            compression: config.compression,
            compression_refused: AtomicBool::new(false),
        })
    }

    /// True if a key refresh hook is configured.
    pub(crate) fn can_refresh(&self) -> bool {
        self.refresh.is_some()
    }

    /// Asks the hook for a new key (on a blocking thread: the hook may do I/O) and uses it for
    /// the following requests. Returns false if there is no new key.
    pub(crate) async fn refresh_key(&self) -> bool {
        let Some(hook) = self.refresh.clone() else {
            return false;
        };
        let fresh = tokio::task::spawn_blocking(move || hook())
            .await
            .ok()
            .flatten();
        match fresh {
            Some(key) => {
                if let Ok(mut k) = self.key.lock() {
                    *k = Some(key);
                }
                true
            }
            None => false,
        }
    }

    /// Sends one batch (`body` is a JSON array of `events` events) and classifies the answer.
    ///
    /// A body of [`COMPRESS_MIN_BYTES`] or more goes compressed as [`Config::compression`]
    /// says. Should the server refuse the coding (415, or a 400 naming no event: a server that
    /// does not decode bodies finds no JSON), the same batch goes again uncompressed at once,
    /// and if that is taken, compression stays off from then on. Neither answer stored anything.
    pub(crate) async fn send(self: Arc<Self>, body: Vec<u8>, events: usize) -> Outcome {
        let coding = match self.compression {
            _ if body.len() < COMPRESS_MIN_BYTES => None,
            _ if self.compression_refused.load(Ordering::Relaxed) => None,
            Compression::None => None,
            c => Some(c),
        };
        let Some(coding) = coding else {
            return self.attempt(body, None, events).await;
        };
        // Compressing a few MiB takes milliseconds: off the async workers.
        let packed = tokio::task::spawn_blocking(move || {
            let packed = compress(coding, &body);
            (body, packed)
        })
        .await;
        let (body, packed) = match packed {
            Ok((body, Ok(packed))) => (body, packed),
            Ok((body, Err(e))) => {
                tracing::warn!(error = %e, "veritrail client: compressing a batch failed; it is sent uncompressed");
                return self.attempt(body, None, events).await;
            }
            Err(e) => {
                return Outcome::Retry {
                    retry_after: None,
                    why: format!("compressing the batch: {e}"),
                }
            }
        };
        let outcome = self.clone().attempt(packed, Some(coding), events).await;
        if !refuses_coding(&outcome) {
            return outcome;
        }
        let plain = self.clone().attempt(body, None, events).await;
        if !refuses_coding(&plain) {
            self.compression_refused.store(true, Ordering::Relaxed);
            tracing::warn!(
                coding = content_coding(coding),
                refusal = ?outcome,
                "veritrail client: the server refused a compressed batch and took it \
                 uncompressed; batches are sent uncompressed from now on"
            );
        }
        plain
    }

    /// One request with `body`, sent with `Content-Encoding: <coding>` when given.
    async fn attempt(
        self: Arc<Self>,
        body: Vec<u8>,
        coding: Option<Compression>,
        events: usize,
    ) -> Outcome {
        let key = self.key.lock().ok().and_then(|k| k.clone());
        let mut req = self
            .http
            .post(self.endpoint.clone())
            .header(CONTENT_TYPE, "application/json");
        if let Some(coding) = coding {
            req = req.header(CONTENT_ENCODING, content_coding(coding));
        }
        let mut req = req.body(body);
        if let Some(key) = key {
            req = req.header(AUTHORIZATION, format!("Bearer {key}"));
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                return Outcome::Retry {
                    retry_after: None,
                    why: error_chain(&e),
                }
            }
        };
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|s| Duration::from_secs(s).min(self.max_retry_after));
        let reply = match read_limited(resp).await {
            Ok(b) => b,
            Err(why) => {
                return Outcome::Retry {
                    retry_after,
                    why: format!("HTTP {status}: reading the reply: {why}"),
                }
            }
        };
        classify(status, retry_after, &reply, events)
    }
}

/// The `Content-Encoding` name of a compression.
fn content_coding(c: Compression) -> &'static str {
    match c {
        Compression::None => "identity",
        Compression::Gzip => "gzip",
        Compression::Zstd => "zstd",
    }
}

/// Zstandard level of [`Compression::Zstd`].
const ZSTD_LEVEL: i32 = 3;

/// `body` compressed with `c`.
pub(crate) fn compress(c: Compression, body: &[u8]) -> std::io::Result<Vec<u8>> {
    match c {
        Compression::None => Ok(body.to_vec()),
        Compression::Gzip => {
            let out = Vec::with_capacity(body.len() / 4);
            let mut enc = flate2::write::GzEncoder::new(out, flate2::Compression::fast());
            enc.write_all(body)?;
            enc.finish()
        }
        Compression::Zstd => zstd::bulk::compress(body, ZSTD_LEVEL),
    }
}

/// Whether an answer to a compressed request may mean that the server does not take the coding:
/// 415, or a 400 that names no event (the batch's own JSON is always well-formed).
fn refuses_coding(o: &Outcome) -> bool {
    matches!(
        o,
        Outcome::Rejected {
            status: 400 | 415,
            ..
        }
    )
}

/// Reads a reply body up to [`MAX_REPLY_BYTES`].
async fn read_limited(mut resp: reqwest::Response) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if out.len() + chunk.len() > MAX_REPLY_BYTES {
                    return Err(format!("the reply exceeds {MAX_REPLY_BYTES} bytes"));
                }
                out.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(out),
            Err(e) => return Err(error_chain(&e)),
        }
    }
}

/// An error with its causes, which name the actual failure (refused, reset, timed out).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

/// Decides what an answer means for the batch.
pub(crate) fn classify(
    status: StatusCode,
    retry_after: Option<Duration>,
    body: &[u8],
    events: usize,
) -> Outcome {
    let json: Option<Value> = serde_json::from_slice(body).ok();
    let detail = json
        .as_ref()
        .and_then(|v| v["detail"].as_str())
        .map(str::to_string)
        .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned());
    match status.as_u16() {
        200..=299 => {
            let receipts = json
                .as_ref()
                .and_then(|v| v["receipts"].as_array())
                .map(Vec::len);
            if receipts == Some(events) {
                Outcome::Delivered
            } else {
                // Not the server's answer (a proxy, a wrong URL): the events may not be stored,
                // so they are kept and retried rather than counted as sent.
                Outcome::Retry {
                    retry_after,
                    why: format!(
                        "HTTP {status} without {events} receipts (got {receipts:?}); is the URL right?"
                    ),
                }
            }
        }
        401 | 403 => Outcome::Unauthorized {
            status: status.as_u16(),
        },
        400 => {
            let mut indexes: Vec<usize> = json
                .as_ref()
                .and_then(|v| v["errors"].as_array())
                .map(|errs| {
                    errs.iter()
                        .filter_map(|e| e["index"].as_u64())
                        .filter_map(|i| usize::try_from(i).ok())
                        .filter(|i| *i < events)
                        .collect()
                })
                .unwrap_or_default();
            indexes.sort_unstable();
            indexes.dedup();
            if indexes.is_empty() {
                Outcome::Rejected {
                    status: 400,
                    detail,
                }
            } else {
                Outcome::Invalid { indexes, detail }
            }
        }
        408 | 429 => Outcome::Retry {
            retry_after,
            why: format!("HTTP {status}: {detail}"),
        },
        409 => Outcome::Conflict { detail },
        413 => Outcome::TooLarge { detail },
        402..=499 => Outcome::Rejected {
            status: status.as_u16(),
            detail,
        },
        _ => Outcome::Retry {
            retry_after,
            why: format!("HTTP {status}: {detail}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(n: u16) -> StatusCode {
        StatusCode::from_u16(n).unwrap_or(StatusCode::IM_A_TEAPOT)
    }

    #[test]
    fn compressed_bodies_decode_to_the_batch() {
        use std::io::Read;
        let body = br#"{"event_type":"a.b","actor_id":"x"},"#.repeat(100);
        let z = compress(Compression::Zstd, &body).expect("zstd");
        assert!(z.len() < body.len() / 4, "{} of {}", z.len(), body.len());
        assert_eq!(zstd::decode_all(&z[..]).ok(), Some(body.clone()));
        let g = compress(Compression::Gzip, &body).expect("gzip");
        assert!(g.len() < body.len() / 4, "{} of {}", g.len(), body.len());
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&g[..])
            .read_to_end(&mut back)
            .expect("gunzip");
        assert_eq!(back, body);
        assert_eq!(
            compress(Compression::Zstd, &body).ok(),
            Some(z),
            "the same bytes each time"
        );
        assert!(refuses_coding(&Outcome::Rejected {
            status: 415,
            detail: String::new()
        }));
        assert!(!refuses_coding(&Outcome::Invalid {
            indexes: vec![0],
            detail: String::new()
        }));
    }

    #[test]
    fn answers_map_to_outcomes() {
        let ok = br#"{"receipts":[{},{}],"tree_size":2}"#;
        assert!(matches!(classify(st(200), None, ok, 2), Outcome::Delivered));
        assert!(matches!(
            classify(st(200), None, ok, 3),
            Outcome::Retry { .. }
        ));
        let bad = br#"{"detail":"x","errors":[{"index":2},{"index":0},{"index":2},{"index":9}]}"#;
        match classify(st(400), None, bad, 3) {
            Outcome::Invalid { indexes, .. } => assert_eq!(indexes, vec![0, 2]),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            classify(st(400), None, b"{}", 3),
            Outcome::Rejected { status: 400, .. }
        ));
        let ra = Some(Duration::from_secs(1));
        match classify(st(429), ra, b"", 1) {
            Outcome::Retry { retry_after, .. } => assert_eq!(retry_after, ra),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            classify(st(503), None, b"", 1),
            Outcome::Retry { .. }
        ));
        assert!(matches!(
            classify(st(408), None, b"", 1),
            Outcome::Retry { .. }
        ));
        assert!(matches!(
            classify(st(409), None, b"", 1),
            Outcome::Conflict { .. }
        ));
        assert!(matches!(
            classify(st(413), None, b"", 1),
            Outcome::TooLarge { .. }
        ));
        assert!(matches!(
            classify(st(401), None, b"", 1),
            Outcome::Unauthorized { status: 401 }
        ));
        assert!(matches!(
            classify(st(404), None, b"", 1),
            Outcome::Rejected { status: 404, .. }
        ));
    }
}
