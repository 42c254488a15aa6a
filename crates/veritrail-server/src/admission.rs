//! The admission gate: every route that reads a request body goes through [`read_body`], which
//! checks the media type and the content coding, takes a permit, reads a bounded body in a
//! bounded time and decodes it (gzip or zstd) within the same bound.
//!
//! Permits bound the memory of bodies held at once (`max_concurrent_ingests` times the largest
//! body, twice that while a compressed body is decoded) and are shared fairly: one key holds at
//! most `max_concurrent_ingests_per_key` of them, so a producer that opens endless slow bodies is
//! refused itself while the others go on.

use std::collections::HashMap;
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{to_bytes, Body, Bytes};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
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

/// The content codings a request body may have, as the `Accept-Encoding` of a 415 lists them.
pub const ACCEPTED_CODINGS: &str = "gzip, zstd, identity";

/// The largest zstd window decoded: 8 MiB, the most RFC 9659 lets an HTTP encoder use, so the
/// decoder's own buffer stays bounded whatever a frame header asks for.
pub const ZSTD_WINDOW_LOG_MAX: u32 = 23;

/// A request body's content coding (RFC 9110 §8.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    /// Sent as it is.
    Identity,
    /// RFC 1952 gzip (also named `x-gzip`), one member or several.
    Gzip,
    /// RFC 8878 Zstandard, one frame or several.
    Zstd,
}

impl Coding {
    /// The coding's name in `Content-Encoding`.
    pub fn name(self) -> &'static str {
        match self {
            Coding::Identity => "identity",
            Coding::Gzip => "gzip",
            Coding::Zstd => "zstd",
        }
    }
}

/// The content coding named by the request's `Content-Encoding` fields: none, `identity`,
/// `gzip` (or `x-gzip`) or `zstd`, case-insensitive, `identity` entries ignored. Anything else,
/// and more than one coding applied in turn, is a 415 whose `Accept-Encoding` lists what is taken.
pub fn content_coding(headers: &HeaderMap) -> Result<Coding, Problem> {
    let mut codings = Vec::new();
    for value in headers.get_all(header::CONTENT_ENCODING) {
        let text = value
            .to_str()
            .map_err(|_| unsupported_coding("a Content-Encoding that is not ASCII".into()))?;
        for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if !name.eq_ignore_ascii_case("identity") {
                codings.push(name.to_ascii_lowercase());
            }
        }
    }
    match codings.as_slice() {
        [] => Ok(Coding::Identity),
        [one] => match one.as_str() {
            "gzip" | "x-gzip" => Ok(Coding::Gzip),
            "zstd" => Ok(Coding::Zstd),
            other => Err(unsupported_coding(format!("`{other}`"))),
        },
        many => Err(unsupported_coding(format!(
            "`{}` (one coding at most)",
            many.join(", ")
        ))),
    }
}

fn unsupported_coding(what: String) -> Problem {
    Problem::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "Unsupported content encoding",
        format!("{what} is not accepted here; send the body as gzip, zstd or identity"),
    )
    .with_header(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static(ACCEPTED_CODINGS),
    )
}

/// Why a compressed body was not decoded.
#[derive(Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// It decodes to more than the limit; decoding stopped one byte past it.
    TooLarge,
    /// It is not valid data of its coding (or asks for a zstd window beyond
    /// [`ZSTD_WINDOW_LOG_MAX`]); the decoder's message.
    Corrupt(String),
}

/// Decodes `raw`, sent with `coding`, into at most `limit` bytes. Decoding stops once it has
/// produced `limit + 1` bytes, and the output buffer never grows beyond that, so a small body
/// that would decode to gigabytes (a "zip bomb") costs at most `limit + 1` bytes and the time to
/// produce them. The gzip decoder's window is 32 KiB by its format, the zstd decoder's at most
/// 8 MiB ([`ZSTD_WINDOW_LOG_MAX`]).
pub fn decode(coding: Coding, raw: &[u8], limit: usize) -> Result<Vec<u8>, DecodeError> {
    let corrupt = |e: std::io::Error| DecodeError::Corrupt(e.to_string());
    match coding {
        Coding::Identity if raw.len() > limit => Err(DecodeError::TooLarge),
        Coding::Identity => Ok(raw.to_vec()),
        Coding::Gzip => read_bounded(flate2::read::MultiGzDecoder::new(raw), limit),
        Coding::Zstd => {
            if zstd_declared_size(raw) > limit as u64 {
                return Err(DecodeError::TooLarge);
            }
            let mut decoder = zstd::stream::read::Decoder::with_buffer(raw).map_err(corrupt)?;
            decoder
                .window_log_max(ZSTD_WINDOW_LOG_MAX)
                .map_err(corrupt)?;
            read_bounded(decoder, limit)
        }
    }
}

/// The decoded size the zstd frames of `raw` declare in their headers, as far as they declare
/// one: a body that says it is too large is refused before anything is decoded. Frames that
/// declare no size (streaming encoders) are bounded while they are decoded.
fn zstd_declared_size(raw: &[u8]) -> u64 {
    use zstd::zstd_safe;
    let (mut rest, mut total) = (raw, 0u64);
    while !rest.is_empty() {
        match zstd_safe::get_frame_content_size(rest) {
            Ok(Some(n)) => total = total.saturating_add(n),
            _ => break,
        }
        match zstd_safe::find_frame_compressed_size(rest) {
            Ok(k) if k > 0 && k <= rest.len() => rest = &rest[k..],
            _ => break,
        }
    }
    total
}

/// Reads `reader` to its end into a buffer of at most `limit` bytes, growing it by doubling but
/// never past `limit + 1`: one byte more than the limit shows that the limit is exceeded.
fn read_bounded(mut reader: impl Read, limit: usize) -> Result<Vec<u8>, DecodeError> {
    const CHUNK: usize = 64 << 10;
    let cap = limit.saturating_add(1);
    let mut chunk = vec![0u8; CHUNK.min(cap)];
    let mut out: Vec<u8> = Vec::new();
    loop {
        let room = cap - out.len();
        if room == 0 {
            return Err(DecodeError::TooLarge);
        }
        let want = room.min(chunk.len());
        let n = match reader.read(&mut chunk[..want]) {
            Ok(0) => return Ok(out),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(DecodeError::Corrupt(e.to_string())),
        };
        if out.capacity() - out.len() < n {
            let grown = (out.capacity() * 2).max(out.len() + n).max(CHUNK).min(cap);
            out.reserve_exact(grown - out.len());
        }
        out.extend_from_slice(&chunk[..n]);
    }
}

fn too_large(limit: usize, what: &str) -> Problem {
    Problem::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "Request too large",
        format!("the body {what} {limit} bytes"),
    )
}

/// Admits the request, checks that its media type is one of `accepted` (415 otherwise) and its
/// content coding one of [`ACCEPTED_CODINGS`] (415 otherwise, with `Accept-Encoding`), and reads
/// its body: at most `limit` bytes (413 beyond) within [`BODY_TIMEOUT`] (408). A gzip or zstd
/// body is decoded off the async workers, and what it decodes to must be within `limit` too (413
/// beyond, found after at most `limit + 1` decoded bytes; 400 when it does not decode). The
/// permit is held until the returned guard is dropped, so a handler keeps it while it works on
/// the body.
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
    let coding = content_coding(headers)?;
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
        .map_err(|_| too_large(limit, "exceeds"))?;
    if coding == Coding::Identity {
        return Ok((admitted, media, bytes));
    }
    // Inflating a few MiB takes milliseconds: off the async workers, like parsing.
    let decoded = crate::blocking(move || {
        decode(coding, &bytes, limit).map_err(|e| match e {
            DecodeError::TooLarge => too_large(limit, "decodes to more than"),
            DecodeError::Corrupt(why) => Problem::new(
                StatusCode::BAD_REQUEST,
                "Malformed compressed body",
                format!("the body is not valid {}: {why}", coding.name()),
            ),
        })
    })
    .await?;
    metrics::counter!("veritrail_compressed_bodies_total", "coding" => coding.name()).increment(1);
    Ok((admitted, media, Bytes::from(decoded)))
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
    use std::io::Write;

    use super::*;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(data).expect("compressing");
        enc.finish().expect("compressing")
    }

    fn zstd(data: &[u8]) -> Vec<u8> {
        zstd::stream::encode_all(data, 3).expect("compressing")
    }

    fn coding_of(values: &[&str]) -> Result<Coding, Problem> {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(
                header::CONTENT_ENCODING,
                HeaderValue::from_str(v).expect("header value"),
            );
        }
        content_coding(&headers)
    }

    #[test]
    fn content_encodings_are_read_case_insensitively_and_others_refused() {
        assert_eq!(coding_of(&[]).ok(), Some(Coding::Identity));
        assert_eq!(coding_of(&["identity"]).ok(), Some(Coding::Identity));
        assert_eq!(coding_of(&[""]).ok(), Some(Coding::Identity));
        assert_eq!(coding_of(&["GZip"]).ok(), Some(Coding::Gzip));
        assert_eq!(coding_of(&["x-gzip"]).ok(), Some(Coding::Gzip));
        assert_eq!(coding_of(&[" zstd "]).ok(), Some(Coding::Zstd));
        assert_eq!(coding_of(&["identity, zstd"]).ok(), Some(Coding::Zstd));
        for refused in [
            &["br"][..],
            &["deflate"],
            &["gzip, zstd"],
            &["gzip", "gzip"],
        ] {
            let p = coding_of(refused).expect_err("refused");
            assert_eq!(p.status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{refused:?}");
            let accept = p
                .headers
                .as_ref()
                .and_then(|h| h.get(header::ACCEPT_ENCODING))
                .map(|v| v.to_str().unwrap_or_default().to_string());
            assert_eq!(accept.as_deref(), Some(ACCEPTED_CODINGS), "{refused:?}");
        }
    }

    #[test]
    fn compressed_bodies_decode_to_what_was_sent() {
        let body: Vec<u8> = (0..200_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        assert_eq!(
            decode(Coding::Gzip, &gzip(&body), body.len()),
            Ok(body.clone())
        );
        assert_eq!(
            decode(Coding::Zstd, &zstd(&body), body.len()),
            Ok(body.clone())
        );
        assert_eq!(
            decode(Coding::Identity, &body, body.len()),
            Ok(body.clone())
        );
        // Several gzip members or zstd frames are one body.
        let two = [gzip(b"[1,"), gzip(b"2]")].concat();
        assert_eq!(decode(Coding::Gzip, &two, 100), Ok(b"[1,2]".to_vec()));
        let two = [zstd(b"[1,"), zstd(b"2]")].concat();
        assert_eq!(decode(Coding::Zstd, &two, 100), Ok(b"[1,2]".to_vec()));
        // Exactly the limit is taken, one byte more is not.
        for coding in [Coding::Identity, Coding::Gzip, Coding::Zstd] {
            let raw = match coding {
                Coding::Identity => body.clone(),
                Coding::Gzip => gzip(&body),
                Coding::Zstd => zstd(&body),
            };
            assert!(decode(coding, &raw, body.len()).is_ok(), "{coding:?}");
            assert_eq!(
                decode(coding, &raw, body.len() - 1),
                Err(DecodeError::TooLarge),
                "{coding:?}"
            );
        }
    }

    #[test]
    fn a_bomb_stops_one_byte_past_the_limit() {
        let zeros = vec![0u8; 64 << 20];
        let limit = 1 << 20;
        for (coding, raw) in [(Coding::Gzip, gzip(&zeros)), (Coding::Zstd, zstd(&zeros))] {
            assert!(raw.len() < 1 << 20, "{coding:?} compresses zeros well");
            assert_eq!(decode(coding, &raw, limit), Err(DecodeError::TooLarge));
        }
        assert_eq!(
            read_bounded(std::io::repeat(0), limit),
            Err(DecodeError::TooLarge)
        );
        // The buffer itself never grows beyond the limit and one byte.
        let got = read_bounded(std::io::repeat(0).take(limit as u64), limit).expect("at the limit");
        assert_eq!(got.len(), limit);
        assert!(got.capacity() <= limit + 1, "capacity {}", got.capacity());
    }

    #[test]
    fn corrupt_and_truncated_bodies_are_named() {
        let body = br#"[{"event_type":"x"}]"#;
        let good = gzip(body);
        for raw in [
            b"not gzip at all".to_vec(),
            good[..good.len() - 4].to_vec(),
            [good.clone(), b"trailing".to_vec()].concat(),
        ] {
            assert!(
                matches!(
                    decode(Coding::Gzip, &raw, 1000),
                    Err(DecodeError::Corrupt(_))
                ),
                "{raw:?}"
            );
        }
        let good = zstd(body);
        for raw in [
            b"not zstd at all".to_vec(),
            good[..good.len() - 2].to_vec(),
            [good.clone(), b"trailing".to_vec()].concat(),
        ] {
            assert!(
                matches!(
                    decode(Coding::Zstd, &raw, 1000),
                    Err(DecodeError::Corrupt(_))
                ),
                "{raw:?}"
            );
        }
    }

    #[test]
    fn a_zstd_body_that_declares_a_large_size_is_refused_before_decoding() {
        let declared = zstd::bulk::compress(&vec![0u8; 50 << 20], 3).expect("compressing");
        assert_eq!(zstd_declared_size(&declared), 50 << 20);
        assert_eq!(
            decode(Coding::Zstd, &declared, 5 << 20),
            Err(DecodeError::TooLarge)
        );
        // Sizes add up across frames; a streaming frame declares none.
        let bulk = |d: &[u8]| zstd::bulk::compress(d, 3).expect("compressing");
        let two = [bulk(b"[1,"), bulk(b"2]")].concat();
        assert_eq!(zstd_declared_size(&two), 5);
        assert_eq!(zstd_declared_size(&zstd(b"[]")), 0);
        assert_eq!(zstd_declared_size(b"junk"), 0);
    }

    #[test]
    fn zstd_windows_beyond_rfc_9659_are_refused() {
        let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).expect("encoder");
        enc.window_log(ZSTD_WINDOW_LOG_MAX + 4).expect("window");
        enc.include_contentsize(false).expect("no content size");
        enc.write_all(&vec![7u8; 1 << 16]).expect("compressing");
        let raw = enc.finish().expect("compressing");
        assert!(
            matches!(
                decode(Coding::Zstd, &raw, 1 << 20),
                Err(DecodeError::Corrupt(_))
            ),
            "a 128 MiB window is not allocated"
        );
    }

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
