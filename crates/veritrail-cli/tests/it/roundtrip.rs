//! The round-trip invariant: anything the server acknowledges can be read back, re-validated,
//! re-indexed, recovered after a crash, exported and verified.
//!
//! Generated edge-case events (a seeded xorshift generator; set `ROUNDTRIP_SEED` to replay a run)
//! go in through every entry point: native `POST /v1/events` batches, Kubernaut's
//! `POST /api/v1/audit/events/batch`, the Kubernetes audit webhook and `veritrail import --format
//! ndjson`. Edge cases: timestamps in the years 0000 and 9999 with offsets up to ±23:59 (inside
//! and outside the range once converted to UTC), 1 to 9 and more fractional digits, leap seconds,
//! lowercase `t`/`z`; numbers across the double range and around 2^53; astral characters, U+2028,
//! NUL, combining marks, RTL, keys that sort differently in UTF-16; nesting and field lengths at
//! and beyond their limits. Each batch is either all valid (so it must be acknowledged) or a
//! single refused case (so it must be a 400 problem).
//!
//! Then, on one data directory: SIGKILL right after the last acknowledgement, restart, read every
//! event back by id and compare it with an independent model of the normalization (and hash the
//! model's RFC 8785 bytes, computed here, against the leaf hash); `fsck`, `reindex`, restart,
//! queries by correlation id and by time at the ends of the range, re-sent batches all duplicates;
//! export everything and `veritrail verify` it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::Path;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Datelike, NaiveDate, Timelike, Utc};
use reqwest::Method;
use serde_json::{json, Map, Number, Value};
use uuid::Uuid;
use veritrail_core::event::{FIELD_LIMITS, MAX_EVENT_DATA_BYTES, MAX_EVENT_DATA_DEPTH};

use crate::support::{self, Receipt, Resp, Server};

const ADMIN: &str = "vt_roundtrip_admin_0123456789abcdefghijklmno";
const DEFAULT_SEED: u64 = 0x5eed_2025_0d15_ea5e;

/// Events per entry point (import: valid lines; a few refused lines come on top).
const NATIVE_EVENTS: usize = 2000;
const KUBERNAUT_EVENTS: usize = 2000;
const WEBHOOK_EVENTS: usize = 1000;
const IMPORT_EVENTS: usize = 1000;

/// Largest integer the API takes in integer fields (2^53 − 1).
const MAX_SAFE: u64 = (1 << 53) - 1;

// ---------------------------------------------------------------------------------------------
// The generator.

/// xorshift64*: small, seeded, the same sequence on every machine.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng((seed ^ 0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// 0..n (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// lo..=hi.
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        let span = (hi as i128 - lo as i128 + 1) as u128;
        (lo as i128 + (u128::from(self.next()) % span) as i128) as i64
    }
    fn percent(&mut self, p: u64) -> bool {
        self.below(100) < p
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len() as u64) as usize]
    }
    fn uuid(&mut self) -> Uuid {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.next().to_le_bytes());
        b[8..].copy_from_slice(&self.next().to_le_bytes());
        uuid::Builder::from_random_bytes(b).into_uuid()
    }
}

/// Puts a field stored exactly as sent into both the request and the expected event.
fn both(
    sent: &mut Map<String, Value>,
    expected: &mut Map<String, Value>,
    name: &str,
    value: Value,
) {
    sent.insert(name.into(), value.clone());
    expected.insert(name.into(), value);
}

/// Characters strings are made of besides ASCII letters and digits: JSON's escapes and controls,
/// NUL, DEL, combining marks, RTL text and marks, the line and paragraph separators, BOM,
/// noncharacters, private use, astral characters up to U+10FFFF, query-string specials.
const CHARS: &[char] = &[
    ' ',
    '"',
    '\\',
    '/',
    '\u{0}',
    '\u{1}',
    '\u{8}',
    '\t',
    '\n',
    '\u{c}',
    '\r',
    '\u{1f}',
    '\u{7f}',
    '\u{80}',
    '\u{a0}',
    'é',
    '\u{301}',
    '\u{5d0}',
    '\u{627}',
    '\u{200f}',
    '\u{202e}',
    '\u{2028}',
    '\u{2029}',
    '\u{feff}',
    '\u{fffd}',
    '\u{ffff}',
    '\u{e000}',
    '\u{10000}',
    '\u{1f600}',
    '\u{10ffff}',
    '\u{200d}',
    '中',
    '%',
    '&',
    '=',
    '+',
    '?',
    '#',
    '<',
    '>',
    ',',
    ':',
    '{',
    '}',
    '[',
    ']',
    '.',
    '*',
];

/// Object keys: ones whose UTF-16 order differs from their code-point order (U+10000 and U+1F600
/// sort before U+E000 and U+FFFF in UTF-16), the empty key, controls, and the names of the leaf
/// document's own members (a reader that splices the stored bytes must not be fooled by them).
const KEYS: &[&str] = &[
    "",
    "a",
    "A",
    "b",
    "é",
    "e\u{301}",
    "\u{e000}",
    "\u{ffff}",
    "\u{10000}",
    "\u{1f600}",
    "\u{10ffff}",
    "\u{0}",
    "\u{1f}",
    "\u{7f}",
    "\u{2028}",
    "\u{202e}שלום",
    "ingested_at",
    "tenant",
    "v",
    "seq",
    "leaf_hash",
    "event",
    "event_id",
    "\"",
    "\\",
    "\u{fb33}",
    "\u{ff61}",
];

/// String values that look like the leaf document's structure.
const TRAPS: &[&str] = &[
    ",\"ingested_at\":\"2000-01-01T00:00:00.000000Z\",\"tenant\":\"evil\",\"v\":1}",
    "\"}",
    "{\"event\":{",
    "\\u0000",
    "\\",
];

/// Numbers the rule accepts, with their canonical (ECMAScript) form.
const ACCEPTED_NUMBERS: &[(&str, &str)] = &[
    ("1e-320", "1e-320"),
    ("5e-324", "5e-324"),
    ("4.9406564584124654e-324", "5e-324"),
    ("1.7976931348623157e308", "1.7976931348623157e+308"),
    ("-1.7976931348623157e308", "-1.7976931348623157e+308"),
    ("2.2250738585072014e-308", "2.2250738585072014e-308"),
    ("-0.0", "0"),
    ("-0", "0"),
    ("0.1", "0.1"),
    ("0.30000000000000004441", "0.30000000000000004"),
    // Two shortest forms equally close to the double: the even digit wins.
    ("702118230268256.3", "702118230268256.2"),
    ("702118230268256.25", "702118230268256.2"),
    ("9007199254740991", "9007199254740991"),
    ("-9007199254740991", "-9007199254740991"),
    ("9007199254740992", "9007199254740992"),
    ("9007199254740992.0", "9007199254740992"),
    ("18014398509481984", "18014398509481984"),
    ("1e16", "10000000000000000"),
    ("1e20", "100000000000000000000"),
    ("-1e16", "-10000000000000000"),
    ("123e18", "123000000000000000000"),
    ("1e21", "1e+21"),
    ("100000000000000000000000", "1e+23"),
    ("4.50", "4.5"),
    ("1E-7", "1e-7"),
    ("0.000001", "0.000001"),
    ("1.5e300", "1.5e+300"),
];

/// Numbers the rule refuses (the 400-digit integer is added at run time).
const REFUSED_NUMBERS: &[&str] = &[
    "9007199254740993",
    "9007199254740993.0",
    "-9007199254740993",
    "9007199254740993.5",
    "18014398509481985",
    "123456789012345678901",
    "1e400",
    "-1e400",
    "1e-400",
];

/// Timestamps that must be refused: RFC 3339 text whose UTC instant leaves 0000–9999, and text
/// that is not RFC 3339.
const REFUSED_TIMES: &[&str] = &[
    "0000-01-01T00:00:00+23:59",
    "0000-01-01T23:58:59.999999999+23:59",
    "0000-01-01T00:00:00.000001+00:01",
    "9999-12-31T23:59:59-23:59",
    "9999-12-31T00:01:00-23:59",
    "9999-12-31T23:59:59.999999999-00:01",
    "9999-12-31T23:59:60Z",
    "2025-13-01T00:00:00Z",
    "2025-02-29T00:00:00Z",
    "2025-01-01T24:00:00Z",
    "2025-01-01T00:00:61Z",
    "2025-01-01T00:00:00+24:00",
    "2025-01-01T00:00:00",
    "2025-01-01",
    "+10000-01-01T00:00:00Z",
    "-0001-12-31T00:00:00Z",
    "2025-01-01T00:00:00.Z",
    "2025-01-01T00:00:00+0100",
];

/// Accepted timestamps at the edges, with what the server must store.
const ACCEPTED_TIMES: &[(&str, &str)] = &[
    ("0000-01-01T23:59:00+23:59", "0000-01-01T00:00:00.000000Z"),
    ("0000-01-01T00:00:00Z", "0000-01-01T00:00:00.000000Z"),
    ("0000-02-29T12:00:00-23:59", "0000-03-01T11:59:00.000000Z"),
    (
        "9999-12-31T23:59:59.999999999Z",
        "9999-12-31T23:59:59.999999Z",
    ),
    (
        "9999-12-31T00:00:59.9999999-23:59",
        "9999-12-31T23:59:59.999999Z",
    ),
    ("9999-12-31T23:59:59+23:59", "9999-12-31T00:00:59.000000Z"),
    ("1990-12-31T23:59:60Z", "1991-01-01T00:00:00.000000Z"),
    ("2016-12-31t23:59:60.5z", "2017-01-01T00:00:00.500000Z"),
    ("1990-12-31T15:59:60-08:00", "1991-01-01T00:00:00.000000Z"),
    ("2025-06-30T12:00:00-00:00", "2025-06-30T12:00:00.000000Z"),
    (
        "1969-12-31T23:59:59.9999995Z",
        "1969-12-31T23:59:59.999999Z",
    ),
    (
        "1970-01-01T00:00:00.0000001+00:00",
        "1970-01-01T00:00:00.000000Z",
    ),
];

/// Parts of an RFC 3339 timestamp; the generator's model of what the server stores.
#[derive(Clone, Debug)]
struct Ts {
    y: i32,
    mo: u32,
    d: u32,
    h: u32,
    mi: u32,
    s: u32,
    frac: String,
    /// Offset in minutes; `None` is `Z`.
    off: Option<i32>,
    /// `-00:00` rather than `+00:00` for a zero offset.
    neg_zero: bool,
    /// Lowercase `t` and `z`.
    lower: bool,
}

impl Ts {
    fn text(&self) -> String {
        let mut s = format!(
            "{:04}-{:02}-{:02}{}{:02}:{:02}:{:02}",
            self.y,
            self.mo,
            self.d,
            if self.lower { 't' } else { 'T' },
            self.h,
            self.mi,
            self.s
        );
        if !self.frac.is_empty() {
            s.push('.');
            s.push_str(&self.frac);
        }
        match self.off {
            None => s.push(if self.lower { 'z' } else { 'Z' }),
            Some(0) if self.neg_zero => s.push_str("-00:00"),
            Some(m) => {
                let sign = if m < 0 { '-' } else { '+' };
                let _ = write!(s, "{sign}{:02}:{:02}", m.abs() / 60, m.abs() % 60);
            }
        }
        s
    }

    /// What the server must store: the UTC instant truncated to the microsecond (a leap second
    /// is the next second's start), or `None` when it falls outside the years 0000 to 9999.
    fn utc(&self) -> Option<String> {
        let date = NaiveDate::from_ymd_opt(self.y, self.mo, self.d)?;
        if self.h > 23 || self.mi > 59 || self.s > 60 || self.off.is_some_and(|m| m.abs() > 1439) {
            return None;
        }
        let local = date
            .and_hms_opt(self.h, self.mi, self.s.min(59))?
            .and_utc()
            .timestamp()
            + i64::from(self.s == 60);
        let secs = local - 60 * i64::from(self.off.unwrap_or(0));
        let micros: i64 = format!("{:0<6}", &self.frac[..self.frac.len().min(6)])
            .parse()
            .ok()?;
        let t = DateTime::from_timestamp_micros(secs.checked_mul(1_000_000)? + micros)?;
        (0..=9999).contains(&t.year()).then(|| utc_text(&t))
    }
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ`, written out here rather than by the code under test.
fn utc_text(t: &DateTime<Utc>) -> String {
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        t.year(),
        t.month(),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.timestamp_subsec_micros()
    )
}

fn days_in_month(y: i32, mo: u32) -> u32 {
    let (ny, nm) = if mo == 12 { (y + 1, 1) } else { (y, mo + 1) };
    let first_next = NaiveDate::from_ymd_opt(ny, nm, 1).expect("a date");
    let first = NaiveDate::from_ymd_opt(y, mo, 1).expect("a date");
    (first_next - first).num_days() as u32
}

/// ECMAScript `Number::toString` (RFC 8785 §3.2.2.3). Its digits are the fewest that read back
/// as the same double and, of those, the closest to it, ties going to the even digit. Rust's
/// shortest form (`{:e}`) gives the count but breaks ties otherwise (702118230268256.25 prints
/// as `…256.3`, ECMAScript says `…256.2`), so the digits come from Rust's exact formatting at
/// that count, which rounds half to even.
fn ecma(f: f64) -> String {
    if f == 0.0 {
        return "0".into();
    }
    let shortest = format!("{:e}", f.abs());
    let count = shortest
        .split_once('e')
        .expect("{:e} has an exponent")
        .0
        .chars()
        .filter(char::is_ascii_digit)
        .count();
    let sci = format!("{:.*e}", count - 1, f.abs());
    assert_eq!(
        sci.parse::<f64>().ok(),
        Some(f.abs()),
        "{sci} does not read back as {shortest}"
    );
    let (mantissa, exp) = sci.split_once('e').expect("{:e} has an exponent");
    let mut digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    while digits.len() > 1 && digits.ends_with('0') {
        digits.pop();
    }
    let k = digits.len() as i64;
    let n = exp.parse::<i64>().expect("exponent") + 1;
    let body = if k <= n && n <= 21 {
        format!("{digits}{}", "0".repeat((n - k) as usize))
    } else if 0 < n && n <= 21 {
        format!("{}.{}", &digits[..n as usize], &digits[n as usize..])
    } else if -6 < n && n <= 0 {
        format!("0.{}{digits}", "0".repeat((-n) as usize))
    } else {
        let e = n - 1;
        let sign = if e >= 0 { '+' } else { '-' };
        if k == 1 {
            format!("{digits}e{sign}{}", e.abs())
        } else {
            format!("{}.{}e{sign}{}", &digits[..1], &digits[1..], e.abs())
        }
    };
    if f < 0.0 {
        format!("-{body}")
    } else {
        body
    }
}

/// The exact decimal value of a JSON number's text.
#[derive(Debug, PartialEq, Eq)]
struct Decimal {
    negative: bool,
    digits: Vec<u8>,
    exponent: i128,
}

impl Decimal {
    fn parse(text: &str) -> Decimal {
        let (negative, rest) = match text.strip_prefix('-') {
            Some(r) => (true, r),
            None => (false, text),
        };
        let (mantissa, exp) = match rest.find(['e', 'E']) {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, "0"),
        };
        let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        let exp: i128 = exp.parse().unwrap_or(if exp.starts_with('-') {
            -(1 << 100)
        } else {
            1 << 100
        });
        let mut digits: Vec<u8> = int.bytes().chain(frac.bytes()).collect();
        let mut exponent = exp - frac.len() as i128;
        let lead = digits.iter().take_while(|&&d| d == b'0').count();
        digits.drain(..lead);
        while digits.last() == Some(&b'0') {
            digits.pop();
            exponent += 1;
        }
        if digits.is_empty() {
            return Decimal {
                negative: false,
                digits,
                exponent: 0,
            };
        }
        Decimal {
            negative,
            digits,
            exponent,
        }
    }
    fn whole(&self) -> bool {
        self.digits.is_empty() || self.exponent >= 0
    }
}

/// The rule for numbers: accepted iff finite as a double and, when the number sent or its
/// canonical form is a whole number, both denote exactly the same value. Returns the canonical
/// form of an accepted number. This transcribes the documented rule (with `Decimal`, as the
/// encoder does, but over the test's own ECMAScript formatter); the fixed tables
/// `ACCEPTED_NUMBERS` and `REFUSED_NUMBERS` check the rule itself independently.
fn expect_number(text: &str) -> Option<String> {
    let f: f64 = text.parse().ok()?;
    if !f.is_finite() {
        return None;
    }
    let canonical = ecma(f);
    let (sent, kept) = (Decimal::parse(text), Decimal::parse(&canonical));
    if (sent.whole() || kept.whole()) && sent != kept {
        return None;
    }
    Some(canonical)
}

fn number(text: &str) -> Number {
    Number::from_str(text).unwrap_or_else(|e| panic!("`{text}` is not a JSON number: {e}"))
}

/// A 400-digit integer.
fn huge_integer() -> String {
    format!("1{}", "7".repeat(399))
}

/// What one generated event is and what the server must make of it.
#[derive(Clone, Debug)]
struct Case {
    entry: Entry,
    /// What was sent: the event, the audit event, or the NDJSON line's value.
    sent: Value,
    /// The stored event as the server must answer it (without `event_id` when the server picks it).
    expected: Map<String, Value>,
    /// The normalized event id: known in advance, or from the acknowledgement.
    id: Option<String>,
    /// The receipt of a native append.
    receipt: Option<Receipt>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Entry {
    Native,
    Kubernaut,
    Webhook,
    Import,
}

/// A placeholder whose JSON text is replaced by raw text before sending (lone surrogates cannot
/// be held in a Rust string).
const RAW: &str = "@@raw@@";

fn with_raw(v: &Value, raw: &str) -> Vec<u8> {
    let text = serde_json::to_string(v).expect("json");
    let quoted = format!("\"{RAW}\"");
    assert!(text.contains(&quoted), "no placeholder in {text}");
    text.replace(&quoted, raw).into_bytes()
}

struct Gen {
    rng: Rng,
    /// Refused numbers and timestamps met while generating, kept (a few) for refusal probes.
    refused_numbers: Vec<String>,
    refused_times: Vec<String>,
}

impl Gen {
    fn char(&mut self) -> char {
        if self.rng.percent(45) {
            let alnum = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
            char::from(*self.rng.pick(alnum))
        } else {
            *self.rng.pick(CHARS)
        }
    }

    /// `n` characters.
    fn chars(&mut self, n: usize) -> String {
        (0..n).map(|_| self.char()).collect()
    }

    /// A string of at most `max` characters, or one time in ten one of `max + 1` up to (not
    /// including) `longest`, which the server must cut or refuse.
    fn sometimes_too_long(&mut self, max: usize, longest: i64) -> String {
        if self.rng.percent(10) {
            let n = self.rng.range(max as i64 + 1, longest) as usize;
            self.chars(n)
        } else {
            self.field(max)
        }
    }

    /// A value for a string field of at most `max` characters: often exactly `max`.
    fn field(&mut self, max: usize) -> String {
        let n = if self.rng.percent(15) {
            max
        } else {
            self.rng.range(1, max.min(40) as i64) as usize
        };
        self.chars(n)
    }

    fn id_form(&mut self, u: Uuid) -> String {
        match self.rng.below(10) {
            0 => u.simple().to_string(),
            1 => u.hyphenated().to_string().to_uppercase(),
            2 => u.braced().to_string(),
            3 => u.urn().to_string(),
            _ => u.hyphenated().to_string(),
        }
    }

    /// A dotted event type of ASCII letters, digits and `_-:/`; sometimes exactly 100 long.
    fn event_type(&mut self) -> String {
        let part_chars = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-:/";
        if self.rng.percent(5) {
            let tail: String = (0..97)
                .map(|_| char::from(*self.rng.pick(part_chars)))
                .collect();
            return format!("rt.{tail}");
        }
        let parts = self.rng.range(1, 4);
        (0..parts)
            .map(|_| {
                let n = self.rng.range(1, 12);
                (0..n)
                    .map(|_| char::from(*self.rng.pick(part_chars)))
                    .collect::<String>()
            })
            .collect::<Vec<_>>()
            .join(".")
    }

    /// Any timestamp of the years 0000 to 9999 in local time, some of which leave that range in
    /// UTC.
    fn any_ts(&mut self) -> Ts {
        let r = &mut self.rng;
        let y = match r.below(10) {
            0 | 1 => 0,
            2 => 1,
            3 | 4 => 9999,
            5 => 9998,
            6 => 1970,
            7 => 1969,
            _ => r.range(0, 9999) as i32,
        };
        let mo = if r.percent(40) {
            *r.pick(&[1, 12, 2])
        } else {
            r.range(1, 12) as u32
        };
        let dim = days_in_month(y, mo);
        let d = if r.percent(40) {
            *r.pick(&[1, dim])
        } else {
            r.range(1, i64::from(dim)) as u32
        };
        let (h, mi, s) = match r.below(7) {
            0 => (0, 0, 0),
            1 => (23, 59, 59),
            2 => (23, 59, 60),
            _ => (
                r.range(0, 23) as u32,
                r.range(0, 59) as u32,
                r.range(0, 59) as u32,
            ),
        };
        let frac_len = r.below(10) as usize;
        let nines = r.percent(20);
        let frac: String = (0..frac_len)
            .map(|_| {
                if nines {
                    '9'
                } else {
                    char::from(b'0' + r.below(10) as u8)
                }
            })
            .collect();
        let off = match r.below(7) {
            0 => None,
            1 => Some(0),
            2 => Some(1439),
            3 => Some(-1439),
            _ => Some(r.range(-1439, 1439) as i32),
        };
        Ts {
            y,
            mo,
            d,
            h,
            mi,
            s,
            frac,
            off,
            neg_zero: r.percent(20),
            lower: r.percent(15),
        }
    }

    /// An edge timestamp the server must accept: (text, stored form).
    fn accepted_ts(&mut self) -> (String, String) {
        if self.rng.percent(5) {
            let (t, u) = *self.rng.pick(ACCEPTED_TIMES);
            return (t.to_string(), u.to_string());
        }
        loop {
            let t = self.any_ts();
            match t.utc() {
                Some(u) => return (t.text(), u),
                None => {
                    if self.refused_times.len() < 12 {
                        self.refused_times.push(t.text());
                    }
                }
            }
        }
    }

    /// A timestamp within Kubernaut's window (60 minutes ahead, 7 days back) in an odd offset
    /// with 1 to 9 fractional digits.
    fn recent_ts(&mut self, now: DateTime<Utc>) -> (String, String) {
        let r = &mut self.rng;
        let instant = now.timestamp() + r.range(-6 * 86_400, 50 * 60);
        let off = match r.below(6) {
            0 => 1439,
            1 => -1439,
            2 => 0,
            3 => *r.pick(&[330, 345, -570, 1, -1, 840, -720]),
            _ => r.range(-1439, 1439) as i32,
        };
        let local = DateTime::from_timestamp(instant + 60 * i64::from(off), 0)
            .expect("a time")
            .naive_utc();
        let frac_len = r.range(1, 9) as usize;
        let frac: String = (0..frac_len)
            .map(|_| char::from(b'0' + r.below(10) as u8))
            .collect();
        let ts = Ts {
            y: local.year(),
            mo: local.month(),
            d: local.day(),
            h: local.hour(),
            mi: local.minute(),
            s: local.second(),
            frac,
            off: if off == 0 && r.percent(50) {
                None
            } else {
                Some(off)
            },
            neg_zero: r.percent(30),
            lower: r.percent(20),
        };
        let u = ts.utc().expect("a recent time is in range");
        (ts.text(), u)
    }

    /// Number text as the client's JSON encoder writes it, and its canonical form if accepted.
    fn number_text(&mut self) -> String {
        let r = &mut self.rng;
        let text = match r.below(7) {
            0 => r.pick(ACCEPTED_NUMBERS).0.to_string(),
            1 => {
                let m = (r.next() & MAX_SAFE) >> r.below(53);
                if r.percent(50) {
                    format!("-{m}")
                } else {
                    m.to_string()
                }
            }
            2 | 3 => {
                let f = loop {
                    let f = f64::from_bits(r.next());
                    if f.is_finite() {
                        break f;
                    }
                };
                match r.below(5) {
                    0 => format!("{f:?}"),
                    1 => format!("{f:e}"),
                    2 => format!("{f}"),
                    3 => format!("{f:.17e}"),
                    _ => format!("{f:.25e}"),
                }
            }
            4 => {
                let n = r.range(1, 25) as usize;
                let mut digits: String = (0..n)
                    .map(|i| {
                        let d = if i == 0 { 1 + r.below(9) } else { r.below(10) };
                        char::from(b'0' + d as u8)
                    })
                    .collect();
                if n > 1 && r.percent(40) {
                    let at = r.range(1, n as i64 - 1) as usize;
                    digits.insert(at, '.');
                } else if r.percent(20) {
                    digits = format!("0.{digits}");
                }
                if r.percent(60) {
                    format!("{digits}e{}", r.range(-340, 340))
                } else {
                    digits
                }
            }
            5 => format!("{:?}", r.range(-1_000_000, 1_000_000) as f64 / 1000.0),
            _ => r.next().to_string(),
        };
        // The text the server sees: the client's encoder may rewrite it (`1e16` → `1e+16`).
        number(&text).to_string()
    }

    /// A number the server must accept: (sent, stored).
    fn accepted_number(&mut self) -> (Value, Value) {
        loop {
            let text = self.number_text();
            match expect_number(&text) {
                Some(c) => return (Value::Number(number(&text)), Value::Number(number(&c))),
                None => {
                    if self.refused_numbers.len() < 12 && !self.refused_numbers.contains(&text) {
                        self.refused_numbers.push(text);
                    }
                }
            }
        }
    }

    fn key(&mut self) -> String {
        if self.rng.percent(60) {
            self.rng.pick(KEYS).to_string()
        } else {
            let n = self.rng.range(0, 12) as usize;
            self.chars(n)
        }
    }

    /// A scalar: (sent, stored).
    fn scalar(&mut self) -> (Value, Value) {
        match self.rng.below(8) {
            0 => (Value::Null, Value::Null),
            1 => {
                let b = self.rng.percent(50);
                (Value::Bool(b), Value::Bool(b))
            }
            2..=4 => self.accepted_number(),
            5 => {
                let s = self.rng.pick(TRAPS).to_string();
                (json!(s), json!(s))
            }
            _ => {
                let n = self.rng.range(0, 30) as usize;
                let s = self.chars(n);
                (json!(s), json!(s))
            }
        }
    }

    /// A value inside a container at `depth` (`event_data` itself is depth 1): containers stop at
    /// [`MAX_EVENT_DATA_DEPTH`].
    fn value(&mut self, depth: usize, budget: &mut usize) -> (Value, Value) {
        if *budget == 0 || depth >= MAX_EVENT_DATA_DEPTH || self.rng.percent(65) {
            *budget = budget.saturating_sub(1);
            return self.scalar();
        }
        *budget -= 1;
        let n = self.rng.range(0, 5);
        if self.rng.percent(50) {
            let (mut s, mut e) = (Vec::new(), Vec::new());
            for _ in 0..n {
                let (a, b) = self.value(depth + 1, budget);
                s.push(a);
                e.push(b);
            }
            (Value::Array(s), Value::Array(e))
        } else {
            let (s, e) = self.object(depth + 1, n as usize, budget);
            (Value::Object(s), Value::Object(e))
        }
    }

    /// An object at `depth` with up to `n` members.
    fn object(
        &mut self,
        depth: usize,
        n: usize,
        budget: &mut usize,
    ) -> (Map<String, Value>, Map<String, Value>) {
        let (mut s, mut e) = (Map::new(), Map::new());
        for _ in 0..n {
            let k = self.key();
            let (a, b) = self.value(depth, budget);
            s.insert(k.clone(), a);
            e.insert(k, b);
        }
        (s, e)
    }

    /// `levels` nested containers around a scalar.
    fn chain(&mut self, levels: usize) -> (Value, Value) {
        let (mut s, mut e) = self.scalar();
        for i in 0..levels {
            if (i + self.rng.below(2) as usize).is_multiple_of(2) {
                s = Value::Array(vec![s]);
                e = Value::Array(vec![e]);
            } else {
                let k = self.key();
                s = json!({ k.clone(): s });
                e = json!({ k: e });
            }
        }
        (s, e)
    }

    /// A payload object at `depth`: random members, sometimes a chain that nests exactly to the
    /// limit, sometimes the edge numbers all at once.
    fn payload(&mut self, depth: usize) -> (Map<String, Value>, Map<String, Value>) {
        let mut budget = 25;
        let n = self.rng.range(0, 8) as usize;
        let (mut s, mut e) = self.object(depth, n, &mut budget);
        if self.rng.percent(6) {
            let (a, b) = self.chain(MAX_EVENT_DATA_DEPTH - depth);
            s.insert("deep".into(), a);
            e.insert("deep".into(), b);
        }
        if self.rng.percent(4) {
            let all: Vec<(Value, Value)> = ACCEPTED_NUMBERS
                .iter()
                .map(|(t, c)| (Value::Number(number(t)), Value::Number(number(c))))
                .collect();
            s.insert(
                "numbers".into(),
                Value::Array(all.iter().map(|p| p.0.clone()).collect()),
            );
            e.insert(
                "numbers".into(),
                Value::Array(all.into_iter().map(|p| p.1).collect()),
            );
        }
        (s, e)
    }

    /// An optional string field: absent, null, or a value (`empty_absent`: sometimes "").
    fn optional(
        &mut self,
        name: &str,
        s: &mut Map<String, Value>,
        e: &mut Map<String, Value>,
        empty_absent: bool,
    ) -> Option<String> {
        let max = limit(name);
        match self.rng.below(10) {
            0..=3 => None,
            4 => {
                s.insert(name.into(), Value::Null);
                None
            }
            5 if empty_absent => {
                s.insert(name.into(), json!(""));
                None
            }
            _ => {
                let v = self.field(max);
                s.insert(name.into(), json!(v));
                e.insert(name.into(), json!(v));
                Some(v)
            }
        }
    }

    /// The fields every event may carry beyond the required ones, with their defaults.
    fn common_fields(
        &mut self,
        s: &mut Map<String, Value>,
        e: &mut Map<String, Value>,
        category: &str,
        corr: &str,
        kubernaut: bool,
    ) {
        let actor_type = self.optional("actor_type", s, e, kubernaut);
        e.insert(
            "actor_type".into(),
            json!(actor_type.unwrap_or_else(|| "service".into())),
        );
        let actor_id = self.optional("actor_id", s, e, kubernaut);
        e.insert(
            "actor_id".into(),
            json!(actor_id.unwrap_or_else(|| format!("{category}-service"))),
        );
        let resource_type = self.optional("resource_type", s, e, kubernaut);
        e.insert(
            "resource_type".into(),
            json!(resource_type.unwrap_or_else(|| category.to_string())),
        );
        if self.optional("resource_id", s, e, kubernaut).is_none() {
            e.insert("resource_id".into(), json!(corr));
        }
        for name in [
            "actor_ip",
            "resource_name",
            "trace_id",
            "span_id",
            "namespace",
            "cluster_id",
            "severity",
            "error_code",
            "error_message",
            "producer_id",
        ] {
            self.optional(name, s, e, kubernaut);
        }
        if self.rng.percent(40) {
            let u = self.rng.uuid();
            s.insert("parent_event_id".into(), json!(self.id_form(u)));
            e.insert("parent_event_id".into(), json!(u.to_string()));
        }
        if self.rng.percent(40) {
            let (t, u) = self.accepted_ts();
            s.insert("parent_event_date".into(), json!(t));
            e.insert("parent_event_date".into(), json!(u));
        } else if kubernaut && self.rng.percent(20) {
            s.insert("parent_event_date".into(), json!(""));
        }
        for name in ["duration_ms", "producer_seq"] {
            if self.rng.percent(30) {
                let v = match self.rng.below(3) {
                    0 => 0,
                    1 => MAX_SAFE,
                    _ => self.rng.below(MAX_SAFE + 1),
                };
                s.insert(name.into(), json!(v));
                e.insert(name.into(), json!(v));
            }
        }
        let retention = match self.rng.below(8) {
            0 => Some(1),
            1 => Some(36_500),
            2 | 3 => Some(self.rng.range(1, 36_500) as u32),
            4 => {
                s.insert("retention_days".into(), Value::Null);
                None
            }
            _ => None,
        };
        if let Some(d) = retention {
            s.insert("retention_days".into(), json!(d));
        }
        e.insert("retention_days".into(), json!(retention.unwrap_or(2555)));
        let sensitive = match self.rng.below(4) {
            0 => Some(true),
            1 => Some(false),
            _ => None,
        };
        if let Some(b) = sensitive {
            s.insert("is_sensitive".into(), json!(b));
        }
        e.insert("is_sensitive".into(), json!(sensitive.unwrap_or(false)));
    }

    /// A native event (also an NDJSON line for `import`).
    fn native(&mut self, entry: Entry, corr: &str, with_id: bool) -> Case {
        let (mut s, mut e) = (Map::new(), Map::new());
        let id = with_id.then(|| self.rng.uuid());
        if let Some(u) = id {
            s.insert("event_id".into(), json!(self.id_form(u)));
            e.insert("event_id".into(), json!(u.to_string()));
        }
        match self.rng.below(4) {
            0 => {}
            1 => {
                s.insert("version".into(), Value::Null);
            }
            _ => {
                let v = self.field(limit("version"));
                both(&mut s, &mut e, "version", json!(v));
            }
        }
        if !e.contains_key("version") {
            e.insert("version".into(), json!("1.0"));
        }
        let t = self.event_type();
        both(&mut s, &mut e, "event_type", json!(t));
        let (ts, utc) = self.accepted_ts();
        s.insert("event_timestamp".into(), json!(ts));
        e.insert("event_timestamp".into(), json!(utc));
        let category = self.field(limit("event_category"));
        both(&mut s, &mut e, "event_category", json!(category));
        let action = self.field(limit("event_action"));
        both(&mut s, &mut e, "event_action", json!(action));
        let outcome = *self.rng.pick(&["success", "failure", "pending"]);
        both(&mut s, &mut e, "event_outcome", json!(outcome));
        both(&mut s, &mut e, "correlation_id", json!(corr));
        self.common_fields(&mut s, &mut e, &category, corr, false);
        match self.rng.below(10) {
            0 => {
                e.insert("event_data".into(), json!({}));
            }
            1 => {
                s.insert("event_data".into(), Value::Null);
                e.insert("event_data".into(), json!({}));
            }
            _ => {
                let (a, b) = self.payload(1);
                s.insert("event_data".into(), Value::Object(a));
                e.insert("event_data".into(), Value::Object(b));
            }
        }
        Case {
            entry,
            sent: Value::Object(s),
            expected: e,
            id: id.map(|u| u.to_string()),
            receipt: None,
        }
    }

    /// A Kubernaut `AuditEventRequest`.
    fn kubernaut(&mut self, corr: &str, now: DateTime<Utc>, with_id: bool) -> Case {
        let (mut s, mut e) = (Map::new(), Map::new());
        let id = with_id.then(|| self.rng.uuid());
        if let Some(u) = id {
            s.insert("event_id".into(), json!(self.id_form(u)));
            e.insert("event_id".into(), json!(u.to_string()));
        }
        let version = self.field(limit("version"));
        both(&mut s, &mut e, "version", json!(version));
        let t = *self
            .rng
            .pick(&veritrail_server::kubernaut::event_types::EVENT_TYPES);
        both(&mut s, &mut e, "event_type", json!(t));
        let (ts, utc) = self.recent_ts(now);
        s.insert("event_timestamp".into(), json!(ts));
        e.insert("event_timestamp".into(), json!(utc));
        let category = *self.rng.pick(&veritrail_server::kubernaut::CATEGORIES);
        both(&mut s, &mut e, "event_category", json!(category));
        let action = self.field(limit("event_action"));
        both(&mut s, &mut e, "event_action", json!(action));
        let outcome = *self.rng.pick(&["success", "failure", "pending"]);
        both(&mut s, &mut e, "event_outcome", json!(outcome));
        both(&mut s, &mut e, "correlation_id", json!(corr));
        self.common_fields(&mut s, &mut e, category, corr, true);
        // The API marks its events as its own, whatever the request says.
        e.insert(
            "producer_id".into(),
            json!(veritrail_server::kubernaut::PRODUCER),
        );
        e.remove("producer_seq");
        let (mut a, mut b) = self.payload(1);
        a.insert("event_type".into(), json!(t));
        b.insert("event_type".into(), json!(t));
        s.insert("event_data".into(), Value::Object(a));
        e.insert("event_data".into(), Value::Object(b));
        Case {
            entry: Entry::Kubernaut,
            sent: Value::Object(s),
            expected: e,
            id: id.map(|u| u.to_string()),
            receipt: None,
        }
    }

    /// A Kubernetes audit event of (`audit_id`, `stage`) and the event the webhook must store.
    fn audit(&mut self, audit_id: &str, stage: &str, shape: &Shape) -> Case {
        let mut a = Map::new();
        a.insert("kind".into(), json!("Event"));
        a.insert("apiVersion".into(), json!("audit.k8s.io/v1"));
        let level = *self.rng.pick(&["Metadata", "Request", "RequestResponse"]);
        a.insert("level".into(), json!(level));
        a.insert("auditID".into(), json!(audit_id));
        a.insert("stage".into(), json!(stage));
        let verb = shape.verb.clone().unwrap_or_else(|| {
            self.rng
                .pick(&[
                    "get",
                    "list",
                    "watch",
                    "create",
                    "update",
                    "patch",
                    "delete",
                    "deletecollection",
                    "Proxy",
                    "ëxec",
                ])
                .to_string()
        });
        a.insert("verb".into(), json!(verb));
        let uri = format!("/api/v1/{}", self.field(60));
        a.insert("requestURI".into(), json!(uri));
        let username = match (&shape.username, self.rng.below(8)) {
            (Some(forced), _) => forced.clone(),
            (None, 0) => None,
            (None, 1) => Some(format!("system:serviceaccount:{}", self.field(40))),
            (None, 2) => Some(format!("system:{}", self.field(20))),
            (None, 3) => {
                let n = self.rng.range(256, 300) as usize;
                Some(self.chars(n))
            }
            (None, _) => Some(self.field(255)),
        };
        let mut user = Map::new();
        if let Some(u) = &username {
            user.insert("username".into(), json!(u));
        }
        if self.rng.percent(50) {
            user.insert("uid".into(), json!(self.rng.uuid().to_string()));
            let groups: Vec<String> = (0..self.rng.range(0, 3)).map(|_| self.field(30)).collect();
            user.insert("groups".into(), json!(groups));
            let k = self.key();
            let v = self.field(30);
            user.insert("extra".into(), json!({ k: [v] }));
        }
        a.insert("user".into(), Value::Object(user));
        if self.rng.percent(15) {
            a.insert(
                "impersonatedUser".into(),
                json!({"username": self.field(40)}),
            );
        }
        let ip = match self.rng.below(5) {
            0 => None,
            1 => Some("10.0.0.1".to_string()),
            2 => Some("::ffff:192.168.0.1".to_string()),
            _ => {
                let n = self.rng.range(1, 60) as usize;
                Some(self.chars(n))
            }
        };
        if let Some(ip) = &ip {
            a.insert("sourceIPs".into(), json!([ip, "10.9.9.9"]));
        }
        if self.rng.percent(70) {
            a.insert("userAgent".into(), json!(self.field(200)));
        }
        let resource = if let Some((r, _)) = &shape.resource {
            Some(r.clone())
        } else if self.rng.percent(85) {
            Some(
                self.rng
                    .pick(&[
                        "pods",
                        "deployments",
                        "Secrets",
                        "customresourcedefinitions",
                        "widgets.ünïcode",
                        "a-b_c:d",
                    ])
                    .to_string(),
            )
        } else {
            None
        };
        let (mut namespace, mut name, mut sub) = (None, None, None);
        if let Some(r) = &resource {
            let mut o = Map::new();
            o.insert("resource".into(), json!(r));
            if self.rng.percent(70) {
                let n = self.sometimes_too_long(253, 270);
                o.insert("namespace".into(), json!(n));
                namespace = Some(n);
            }
            if self.rng.percent(80) {
                let n = self.sometimes_too_long(1024, 1040);
                o.insert("name".into(), json!(n));
                name = Some(n);
            }
            if let Some((_, forced)) = &shape.resource {
                if let Some(s) = forced {
                    o.insert("subresource".into(), json!(s));
                    sub = Some(s.clone());
                }
            } else if self.rng.percent(20) {
                let s = self
                    .rng
                    .pick(&["status", "log", "exec", "scälé"])
                    .to_string();
                o.insert("subresource".into(), json!(s));
                sub = Some(s);
            }
            o.insert("apiGroup".into(), json!(self.field(30)));
            o.insert("apiVersion".into(), json!("v1"));
            a.insert("objectRef".into(), Value::Object(o));
        }
        let code = if stage == "RequestReceived" {
            None
        } else {
            Some(
                *self
                    .rng
                    .pick(&[200i64, 201, 204, 301, 400, 401, 403, 404, 409, 500, 503]),
            )
        };
        let mut message = None;
        if let Some(c) = code {
            let mut st = Map::new();
            st.insert("metadata".into(), json!({}));
            st.insert("code".into(), json!(c));
            if self.rng.percent(40) {
                let m = self.sometimes_too_long(8192, 8200);
                st.insert("message".into(), json!(m));
                message = Some(m);
            }
            a.insert("responseStatus".into(), Value::Object(st));
        }
        if self.rng.percent(60) {
            let mut ann = Map::new();
            ann.insert(
                "authorization.k8s.io/decision".into(),
                json!(self.rng.pick(&["allow", "forbid"])),
            );
            for _ in 0..self.rng.range(0, 4) {
                let k = self.key();
                let v = self.field(100);
                ann.insert(k, json!(v));
            }
            a.insert("annotations".into(), Value::Object(ann));
        }
        // The stage time is the event time; the received time is only data (any text at all).
        let (stage_ts, stage_utc) = self.accepted_ts();
        let time_utc = if self.rng.percent(90) {
            a.insert("stageTimestamp".into(), json!(stage_ts));
            let received = match self.rng.below(3) {
                0 => self.accepted_ts().0,
                1 => self.rng.pick(REFUSED_TIMES).to_string(),
                _ => self.field(64),
            };
            a.insert("requestReceivedTimestamp".into(), json!(received));
            stage_utc
        } else {
            a.insert("requestReceivedTimestamp".into(), json!(stage_ts));
            stage_utc
        };
        // Request and response bodies: edge numbers, nesting to the limit; sometimes a number
        // or a depth no event may hold, which the mapping drops (and says so).
        let mut body_sent = Map::new();
        let mut body_kept = Map::new();
        let mut too_much = false;
        for member in ["requestObject", "responseObject"] {
            if self.rng.percent(35) {
                let (mut s, e) = self.payload(2);
                if self.rng.percent(8) {
                    too_much = true;
                    if self.rng.percent(50) {
                        let bad = self.rng.pick(REFUSED_NUMBERS).to_string();
                        s.insert("refused".into(), Value::Number(number(&bad)));
                    } else {
                        let (deep, _) = self.chain(MAX_EVENT_DATA_DEPTH - 1);
                        s.insert("deeper".into(), deep);
                    }
                }
                a.insert(member.into(), Value::Object(s.clone()));
                body_sent.insert(member.to_string(), Value::Object(s));
                body_kept.insert(member.to_string(), Value::Object(e));
            }
        }

        // The mapping (docs/kubernetes.md), written out independently.
        let cut = |s: &str, n: usize| -> String { s.chars().take(n).collect() };
        let type_part = |s: &str| -> String {
            s.chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || "_-:/".contains(c) {
                        c.to_ascii_lowercase()
                    } else {
                        '_'
                    }
                })
                .collect()
        };
        let mut e = Map::new();
        e.insert(
            "event_id".into(),
            json!(veritrail_core::k8s::event_id(audit_id, stage).to_string()),
        );
        e.insert("version".into(), json!("1.0"));
        let path = match (&resource, &sub) {
            (Some(r), Some(s)) => format!("{r}/{s}"),
            (Some(r), None) => r.clone(),
            (None, _) => "nonresource".into(),
        };
        e.insert(
            "event_type".into(),
            json!(format!("k8s.{}.{}", type_part(&path), type_part(&verb))),
        );
        e.insert("event_timestamp".into(), json!(time_utc));
        e.insert("event_category".into(), json!("kubernetes"));
        e.insert("event_action".into(), json!(verb));
        let outcome = match (stage, code) {
            ("Panic", _) => "failure",
            ("ResponseComplete", Some(c)) if c >= 400 => "failure",
            ("ResponseComplete", _) => "success",
            _ => "pending",
        };
        e.insert("event_outcome".into(), json!(outcome));
        let username = username.unwrap_or_else(|| "system:unknown".into());
        let actor_type = if username.starts_with("system:serviceaccount:") {
            "serviceaccount"
        } else if username.starts_with("system:") {
            "system"
        } else {
            "user"
        };
        e.insert("actor_type".into(), json!(actor_type));
        e.insert("actor_id".into(), json!(cut(&username, 255)));
        if let Some(ip) = &ip {
            e.insert("actor_ip".into(), json!(cut(ip, 45)));
        }
        e.insert(
            "resource_type".into(),
            json!(cut(resource.as_deref().unwrap_or("nonResourceURL"), 100)),
        );
        let resource_id = match (&namespace, &name) {
            (Some(ns), Some(n)) => format!("{ns}/{n}"),
            (None, Some(n)) => n.clone(),
            (Some(ns), None) => ns.clone(),
            (None, None) => uri.clone(),
        };
        e.insert("resource_id".into(), json!(cut(&resource_id, 255)));
        if let Some(n) = &name {
            e.insert("resource_name".into(), json!(cut(n, 1024)));
        }
        if let Some(ns) = &namespace {
            e.insert("namespace".into(), json!(cut(ns, 253)));
        }
        e.insert("correlation_id".into(), json!(cut(audit_id, 255)));
        if let Some(c) = code.filter(|c| *c >= 400) {
            e.insert("error_code".into(), json!(c.to_string()));
            if let Some(m) = &message {
                e.insert("error_message".into(), json!(cut(m, 8192)));
            }
        }
        let mut data = Map::new();
        for (k, v) in &a {
            if k != "kind" && k != "auditID" {
                data.insert(k.clone(), v.clone());
            }
        }
        if too_much {
            for k in body_sent.keys() {
                data.remove(k);
            }
            let members: Vec<&String> = body_sent.keys().collect();
            data.insert(
                "omitted".into(),
                json!({"members": members, "why": OMITTED_WHY}),
            );
        } else {
            data.extend(body_kept);
        }
        e.insert("event_data".into(), Value::Object(data));
        e.insert("is_sensitive".into(), json!(false));
        e.insert("retention_days".into(), json!(2555));
        let id = e["event_id"].as_str().map(str::to_string);
        Case {
            entry: Entry::Webhook,
            sent: Value::Object(a),
            expected: e,
            id,
            receipt: None,
        }
    }
}

/// Stands for the mapping's explanation of dropped members, whose wording is not part of the
/// invariant (it is copied from the answer before comparing).
const OMITTED_WHY: &str = "@@why@@";

/// Stands for a member whose value the rules leave open (copied from the answer before
/// comparing; the rest of the event and its leaf hash are still checked).
const LOOSE: &str = "@@loose@@";

/// What a generated audit event must be like, where a case needs it.
#[derive(Default)]
struct Shape {
    verb: Option<String>,
    username: Option<Option<String>>,
    resource: Option<(String, Option<String>)>,
}

fn limit(field: &str) -> usize {
    veritrail_core::event::max_chars(field).unwrap_or_else(|| panic!("{field} has no limit"))
}

// ---------------------------------------------------------------------------------------------
// RFC 8785, written here to check the server's bytes against an independent encoder.

fn canon(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            let f: f64 = n.to_string().parse().expect("a number");
            out.push_str(&ecma(f));
        }
        Value::String(s) => canon_str(s, out),
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canon(x, out);
            }
            out.push(']');
        }
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort_by(|a, b| a.encode_utf16().cmp(b.encode_utf16()));
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canon_str(k, out);
                out.push(':');
                canon(&m[k], out);
            }
            out.push('}');
        }
    }
}

fn canon_str(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\u{c}' => out.push_str("\\f"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

// ---------------------------------------------------------------------------------------------
// Talking to the server.

/// Text for assertion messages, cut to a readable length.
fn short(s: &str) -> String {
    const MAX: usize = 1500;
    if s.len() <= MAX {
        return s.to_string();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &s[..end], s.len())
}

fn show_value(v: &Value) -> String {
    short(&serde_json::to_string(v).unwrap_or_default())
}

struct Api {
    url: String,
    http: reqwest::blocking::Client,
    key: String,
}

impl Api {
    fn new(url: &str, key: &str) -> Api {
        Api {
            url: url.to_string(),
            http: support::http_client(),
            key: key.to_string(),
        }
    }

    /// A request, retried while the server says it is busy (503 or 429).
    fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Resp {
        let deadline = Instant::now() + support::DEADLINE;
        loop {
            let mut r = self
                .http
                .request(method.clone(), format!("{}{path}", self.url))
                .bearer_auth(&self.key)
                .query(query);
            if let Some(b) = &body {
                r = r
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(b.clone());
            }
            let resp =
                support::into_resp(r.send().unwrap_or_else(|e| panic!("{method} {path}: {e}")));
            if (resp.status == 503 || resp.status == 429) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            return resp;
        }
    }

    fn post(&self, path: &str, body: Vec<u8>) -> Resp {
        self.send(Method::POST, path, &[], Some(body))
    }

    fn get(&self, path: &str, query: &[(&str, &str)]) -> Resp {
        self.send(Method::GET, path, query, None)
    }

    /// Every event a query finds, following cursors.
    fn query_all(&self, params: &[(&str, &str)]) -> Result<Vec<Value>, String> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut q: Vec<(&str, &str)> = params.to_vec();
            q.push(("order", "asc"));
            q.push(("limit", "1000"));
            if let Some(c) = &cursor {
                q.push(("cursor", c));
            }
            let r = self.get("/v1/events", &q);
            if r.status != 200 {
                return Err(format!("query {params:?}: {} {}", r.status, short(&r.text)));
            }
            let page: Value = serde_json::from_str(&r.text).map_err(|e| e.to_string())?;
            out.extend(page["events"].as_array().cloned().unwrap_or_default());
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => return Ok(out),
            }
        }
    }
}

/// Checks a refusal: 400, `application/problem+json`, a detail, and the field named if given.
fn refusal(r: &Resp, field: Option<&str>) -> Result<(), String> {
    if r.status != 400 {
        return Err(format!(
            "answered {} instead of 400: {}",
            r.status,
            short(&r.text)
        ));
    }
    if !r.content_type.starts_with("application/problem+json") {
        return Err(format!(
            "content-type {:?}, not application/problem+json",
            r.content_type
        ));
    }
    let p: Value =
        serde_json::from_str(&r.text).map_err(|e| format!("problem is not JSON: {e}"))?;
    if p["status"] != json!(400) || p["detail"].as_str().is_none_or(|d| d.trim().is_empty()) {
        return Err(format!("not a complete problem: {p}"));
    }
    if let Some(f) = field {
        let named = p["errors"]
            .as_array()
            .is_some_and(|es| es.iter().any(|e| e["field"] == json!(f)))
            || p["detail"]
                .as_str()
                .is_some_and(|d| d.contains(&format!("`{f}`")));
        if !named {
            return Err(format!(
                "the problem does not name `{f}`: {}",
                short(&r.text)
            ));
        }
    }
    Ok(())
}

/// The members the server adds to a stored event in an answer.
const SERVER_MEMBERS: [&str; 4] = ["seq", "leaf_hash", "ingested_at", "tenant"];

/// Compares an answered event (or an exported leaf shaped like one) with its case: the model of
/// the stored event, the server's members, and the leaf hash of this test's own canonical bytes.
fn check_event(case: &Case, got: &Value) -> Result<(), String> {
    let Some(obj) = got.as_object() else {
        return Err(format!("the answer is not an object: {}", show_value(got)));
    };
    let mut event = obj.clone();
    for m in SERVER_MEMBERS {
        event.remove(m);
    }
    let mut expected = case.expected.clone();
    if let Some(id) = &case.id {
        expected.insert("event_id".into(), json!(id));
    }
    // The wording of the mapping's note on dropped members is the server's own.
    if let Some(omitted) = expected
        .get_mut("event_data")
        .and_then(|d| d.get_mut("omitted"))
    {
        if omitted["why"] == json!(OMITTED_WHY) {
            let why = got["event_data"]["omitted"]["why"].clone();
            if !why.is_string() {
                return Err(format!(
                    "`event_data.omitted.why` is not a string in {}",
                    show_value(got)
                ));
            }
            omitted["why"] = why;
        }
    }
    let loose: Vec<String> = expected
        .iter()
        .filter(|(_, v)| **v == json!(LOOSE))
        .map(|(k, _)| k.clone())
        .collect();
    for k in loose {
        match event.get(&k) {
            Some(v) => expected.insert(k, v.clone()),
            None => expected.remove(&k),
        };
    }
    if event != expected {
        let mut diff = String::new();
        let keys: BTreeSet<&String> = event.keys().chain(expected.keys()).collect();
        for k in keys {
            if event.get(k) != expected.get(k) {
                let _ = writeln!(
                    diff,
                    "    `{k}`: expected {} got {}",
                    expected.get(k).map_or("(absent)".into(), show_value),
                    event.get(k).map_or("(absent)".into(), show_value)
                );
            }
        }
        return Err(format!(
            "{:?} event {} differs from what was sent:\n{diff}    sent: {}",
            case.entry,
            case.id.as_deref().unwrap_or("?"),
            show_value(&case.sent)
        ));
    }
    let ingested = obj.get("ingested_at").and_then(Value::as_str).unwrap_or("");
    let well_formed = ingested.len() == 27
        && ingested.ends_with('Z')
        && DateTime::parse_from_rfc3339(ingested).is_ok();
    if !well_formed || obj.get("tenant") != Some(&json!("default")) {
        return Err(format!(
            "server members of {}: ingested_at {ingested:?}, tenant {:?}",
            case.id.as_deref().unwrap_or("?"),
            obj.get("tenant")
        ));
    }
    // The leaf hash of this test's own RFC 8785 bytes of the expected leaf document.
    let leaf = json!({
        "event": Value::Object(expected),
        "ingested_at": ingested,
        "tenant": "default",
        "v": 1,
    });
    let mut bytes = String::new();
    canon(&leaf, &mut bytes);
    let mine = veritrail_core::hash::to_b64(&veritrail_core::hash::leaf_hash(bytes.as_bytes()));
    let claimed = obj.get("leaf_hash").and_then(Value::as_str).unwrap_or("");
    if mine != claimed {
        return Err(format!(
            "{:?} event {}: the leaf hash {claimed} is not that of the canonical bytes {mine}:\n    {}",
            case.entry,
            case.id.as_deref().unwrap_or("?"),
            short(&bytes)
        ));
    }
    if let Some(r) = &case.receipt {
        if obj.get("seq").and_then(Value::as_u64) != Some(r.seq) || claimed != r.leaf_hash {
            return Err(format!(
                "event {}: answer's seq/leaf_hash {:?}/{claimed} differ from the receipt's {}/{}",
                r.event_id,
                obj.get("seq"),
                r.seq,
                r.leaf_hash
            ));
        }
    }
    Ok(())
}

/// Runs `veritrail import` against the server; returns (exit code, stdout, stderr).
fn run_import(url: &str, key: &str, file: &Path) -> (Option<i32>, String, String) {
    let out = support::command()
        .args(["import", "--format", "ndjson", "--batch", "250"])
        .arg(file)
        .env("VERITRAIL_KEY", key)
        .env("VERITRAIL_SERVER", url)
        .output()
        .expect("running veritrail import");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Splits `cases` into batches of `lo..=hi` events.
fn batches(rng: &mut Rng, mut cases: Vec<Case>, lo: i64, hi: i64) -> Vec<Vec<Case>> {
    let mut out = Vec::new();
    while !cases.is_empty() {
        let n = (rng.range(lo, hi) as usize).min(cases.len());
        out.push(cases.drain(..n).collect());
    }
    out
}

/// A refused request and what it must be refused for.
struct Probe {
    entry: Entry,
    what: String,
    path: &'static str,
    body: Vec<u8>,
    /// The field the problem must name (in `errors` or in backticks in its `detail`).
    field: Option<String>,
    /// Ids of the events in the request, which must not be stored.
    ids: Vec<String>,
}

#[test]
fn whatever_is_acknowledged_reads_back_after_crash_reindex_and_export() {
    let started = Instant::now();
    let seed = std::env::var("ROUNDTRIP_SEED")
        .ok()
        .and_then(|s| {
            s.strip_prefix("0x")
                .map_or_else(|| s.parse().ok(), |h| u64::from_str_radix(h, 16).ok())
        })
        .unwrap_or(DEFAULT_SEED);
    eprintln!("roundtrip: seed {seed:#x} (set ROUNDTRIP_SEED to replay)");

    // The test's own models agree with the rules as written.
    for (sent, kept) in ACCEPTED_NUMBERS {
        assert_eq!(expect_number(sent).as_deref(), Some(*kept), "model: {sent}");
    }
    for sent in REFUSED_NUMBERS
        .iter()
        .copied()
        .chain([huge_integer().as_str()])
    {
        assert_eq!(expect_number(sent), None, "model: {sent} must be refused");
    }

    let now = Utc::now();
    let mut g = Gen {
        rng: Rng::new(seed),
        refused_numbers: Vec::new(),
        refused_times: Vec::new(),
    };

    // Correlation ids: plain ones and edge ones (NUL, astral, RTL, separators, query-string
    // specials, 255 characters of four-byte UTF-8).
    let edge_corrs = [
        "rt-nul-\u{0}-end".to_string(),
        "rt-astral-\u{1f600}\u{10ffff}".to_string(),
        "rt-rtl-\u{202e}שלום\u{200f}".to_string(),
        "rt-sep-\u{2028}\u{2029}".to_string(),
        "rt-query-%2F&a=b+c #?".to_string(),
        "e\u{301}\u{301}\u{301}-combining".to_string(),
        "\u{1f600}".repeat(255),
    ];
    // Each entry point has its own pool; the 255-character one stays 255 characters long, its
    // first character replaced by `lead`.
    let corr_pool = |prefix: &str, lead: &str| -> Vec<String> {
        (0..4)
            .map(|i| format!("rt-{prefix}-{i}"))
            .chain(edge_corrs.iter().map(|c| {
                if c.chars().count() >= 255 {
                    format!("{lead}{}", "\u{1f600}".repeat(255 - lead.chars().count()))
                } else {
                    format!("{c}-{prefix}")
                }
            }))
            .collect()
    };
    let native_corrs = corr_pool("native", "");
    let kubernaut_corrs = corr_pool("kubernaut", "k");
    let import_corrs = corr_pool("import", "i");

    // Native: the first batch has every id set (it is sent again later); the others let the
    // server pick some ids.
    let mut native = Vec::new();
    for i in 0..NATIVE_EVENTS {
        let corr = g.rng.pick(&native_corrs).clone();
        let with_id = i < 500 || g.rng.percent(85);
        native.push(g.native(Entry::Native, &corr, with_id));
    }
    // One event with every string field exactly at its limit and the edge numbers, one with a
    // 64-character timestamp (the limit) and one whose payload is exactly the size limit.
    {
        let mut c = g.native(Entry::Native, &native_corrs[0], true);
        let s = c.sent.as_object_mut().expect("object");
        for (field, max) in FIELD_LIMITS {
            if matches!(
                field,
                "event_id"
                    | "event_timestamp"
                    | "event_type"
                    | "event_outcome"
                    | "parent_event_id"
                    | "parent_event_date"
                    | "correlation_id"
            ) {
                continue;
            }
            let v = g.chars(max);
            s.insert(field.to_string(), json!(v));
            c.expected.insert(field.to_string(), json!(v));
        }
        s.insert("event_type".into(), json!(format!("rt.{}", "x".repeat(97))));
        c.expected
            .insert("event_type".into(), json!(format!("rt.{}", "x".repeat(97))));
        native.push(c);
    }
    {
        let mut c = g.native(Entry::Native, &native_corrs[1], true);
        let long = format!("2025-01-01T00:00:00.{}Z", &"1234567".repeat(7)[..43]);
        assert_eq!(long.chars().count(), limit("event_timestamp"));
        c.sent["event_timestamp"] = json!(long);
        c.expected.insert(
            "event_timestamp".into(),
            json!("2025-01-01T00:00:00.123456Z"),
        );
        native.push(c);
    }
    let mut size_limit_case = g.native(Entry::Native, &native_corrs[2], true);
    let filler = "x".repeat(MAX_EVENT_DATA_BYTES - r#"{"big":""}"#.len());
    size_limit_case.sent["event_data"] = json!({ "big": filler });
    size_limit_case
        .expected
        .insert("event_data".into(), json!({ "big": filler }));

    let mut kubernaut = Vec::new();
    for _ in 0..KUBERNAUT_EVENTS {
        let corr = g.rng.pick(&kubernaut_corrs).clone();
        let with_id = g.rng.percent(50);
        kubernaut.push(g.kubernaut(&corr, now, with_id));
    }

    let mut webhook = Vec::new();
    let mut audit_ids = Vec::new();
    while webhook.len() < WEBHOOK_EVENTS {
        let n = webhook.len();
        let audit_id = match g.rng.below(6) {
            0 => {
                let len = g.rng.range(250, 280) as usize;
                format!("{}-{n}", g.chars(len))
            }
            1 => format!("rt-{n}-{}", g.field(40)),
            _ => format!("{}", g.rng.uuid()),
        };
        let stages: &[&str] = match g.rng.below(6) {
            0 => &["RequestReceived", "ResponseComplete"],
            1 => &["ResponseStarted"],
            2 => &["Panic"],
            3 => &["RequestReceived"],
            _ => &["ResponseComplete"],
        };
        for stage in stages {
            webhook.push(g.audit(&audit_id, stage, &Shape::default()));
        }
        audit_ids.push(audit_id);
    }

    let mut import_cases = Vec::new();
    for _ in 0..IMPORT_EVENTS {
        let corr = g.rng.pick(&import_corrs).clone();
        import_cases.push(g.native(Entry::Import, &corr, true));
    }

    let refused_numbers: Vec<String> = REFUSED_NUMBERS
        .iter()
        .map(|s| s.to_string())
        .chain([huge_integer()])
        .chain(g.refused_numbers.clone())
        .collect();
    let refused_times: Vec<String> = REFUSED_TIMES
        .iter()
        .map(|s| s.to_string())
        .chain(g.refused_times.clone())
        .collect();
    for t in &g.refused_times {
        // Only the generator's out-of-range instants land here.
        assert!(t.starts_with("0000") || t.starts_with("9999"), "model: {t}");
    }

    // The import file: every valid line, CRLF endings and a blank line among them, and refused
    // lines, each with an id that must never be stored.
    let scratch = support::Scratch::new();
    let data = scratch.data();
    let import_file = scratch.other("events.ndjson");
    let mut import_text = String::new();
    let mut bad_lines: Vec<(usize, String, String)> = Vec::new(); // (line, id, why)
    let mut line_no = 0;
    let bad_import = |g: &mut Gen, why: &str| -> (String, String) {
        let mut c = g.native(Entry::Import, &import_corrs[0], true);
        let id = c.id.clone().expect("id");
        let s = c.sent.as_object_mut().expect("object");
        let text = match why {
            "time-low" => {
                s.insert("event_timestamp".into(), json!("0000-01-01T00:00:00+23:59"));
                serde_json::to_string(&c.sent).expect("json")
            }
            "time-high" => {
                s.insert(
                    "parent_event_date".into(),
                    json!("9999-12-31T23:59:59-23:59"),
                );
                serde_json::to_string(&c.sent).expect("json")
            }
            "unsafe" => {
                s.insert(
                    "event_data".into(),
                    json!({"n": number("9007199254740993")}),
                );
                serde_json::to_string(&c.sent).expect("json")
            }
            "huge" => {
                s.insert("event_data".into(), json!({"n": number(&huge_integer())}));
                serde_json::to_string(&c.sent).expect("json")
            }
            "deep" => {
                let (deep, _) = g.chain(MAX_EVENT_DATA_DEPTH);
                s.insert("event_data".into(), json!({ "d": deep }));
                serde_json::to_string(&c.sent).expect("json")
            }
            "long" => {
                s.insert("correlation_id".into(), json!("c".repeat(256)));
                serde_json::to_string(&c.sent).expect("json")
            }
            "surrogate" => {
                s.insert("event_data".into(), json!({ "s": RAW }));
                String::from_utf8(with_raw(&c.sent, "\"\\ud800x\"")).expect("utf-8")
            }
            _ => format!("{{\"event_id\": \"{id}\", \"event_type\": "),
        };
        (id, text)
    };
    let bad_kinds = [
        "time-low",
        "time-high",
        "unsafe",
        "huge",
        "deep",
        "long",
        "surrogate",
        "malformed",
    ];
    let mut next_bad = 0;
    for (i, c) in import_cases.iter().enumerate() {
        if i % 120 == 60 && next_bad < bad_kinds.len() {
            let (id, text) = bad_import(&mut g, bad_kinds[next_bad]);
            line_no += 1;
            import_text.push_str(&text);
            import_text.push('\n');
            bad_lines.push((line_no, id, bad_kinds[next_bad].to_string()));
            next_bad += 1;
        }
        if i == 500 {
            line_no += 1;
            import_text.push_str("   \n");
        }
        line_no += 1;
        import_text.push_str(&serde_json::to_string(&c.sent).expect("json"));
        import_text.push_str(if i % 7 == 3 { "\r\n" } else { "\n" });
    }
    while next_bad < bad_kinds.len() {
        let (id, text) = bad_import(&mut g, bad_kinds[next_bad]);
        line_no += 1;
        import_text.push_str(&text);
        import_text.push('\n');
        bad_lines.push((line_no, id, bad_kinds[next_bad].to_string()));
        next_bad += 1;
    }
    std::fs::write(&import_file, &import_text).expect("writing the import file");

    // Refusal probes, one event per request.
    let mut probes: Vec<Probe> = Vec::new();
    let native_probe = |g: &mut Gen,
                        what: String,
                        field: Option<&str>,
                        change: &dyn Fn(&mut Map<String, Value>)|
     -> Probe {
        let mut c = g.native(Entry::Native, &native_corrs[0], true);
        let s = c.sent.as_object_mut().expect("object");
        change(s);
        let body = serde_json::to_vec(&json!([c.sent])).expect("json");
        Probe {
            entry: Entry::Native,
            what,
            path: "/v1/events",
            body,
            field: field.map(str::to_string),
            ids: c.id.into_iter().collect(),
        }
    };
    for t in &refused_times {
        let t2 = t.clone();
        probes.push(native_probe(
            &mut g,
            format!("event_timestamp {t}"),
            Some("event_timestamp"),
            &move |s| {
                s.insert("event_timestamp".into(), json!(t2));
            },
        ));
        let t2 = t.clone();
        probes.push(native_probe(
            &mut g,
            format!("parent_event_date {t}"),
            Some("parent_event_date"),
            &move |s| {
                s.insert("parent_event_date".into(), json!(t2));
            },
        ));
    }
    for n in &refused_numbers {
        let n2 = n.clone();
        probes.push(native_probe(
            &mut g,
            format!("number {}", short(n)),
            Some("event_data"),
            &move |s| {
                s.insert("event_data".into(), json!({"a": [1, {"n": number(&n2)}]}));
            },
        ));
    }
    for (field, max) in FIELD_LIMITS {
        let v = match field {
            "event_type" => format!("rt.{}", "y".repeat(max - 2)),
            "event_timestamp" | "parent_event_date" => {
                format!("2025-01-01T00:00:00.{}Z", "1".repeat(max - 20))
            }
            _ => "\u{1f600}".repeat(max + 1),
        };
        probes.push(native_probe(
            &mut g,
            format!("{field} of {} characters", v.chars().count()),
            Some(field),
            &move |s| {
                s.insert(field.to_string(), json!(v));
            },
        ));
    }
    {
        let deep = g.chain(MAX_EVENT_DATA_DEPTH).0;
        probes.push(native_probe(
            &mut g,
            format!("event_data nested {} deep", MAX_EVENT_DATA_DEPTH + 1),
            Some("event_data"),
            &move |s| {
                s.insert("event_data".into(), json!({ "d": deep }));
            },
        ));
        let filler = "x".repeat(MAX_EVENT_DATA_BYTES - r#"{"big":""}"#.len() + 1);
        probes.push(native_probe(
            &mut g,
            "event_data one byte over the size limit".into(),
            Some("event_data"),
            &move |s| {
                s.insert("event_data".into(), json!({ "big": filler }));
            },
        ));
    }
    for (field, v) in [
        ("duration_ms", json!(MAX_SAFE + 1)),
        ("producer_seq", json!(MAX_SAFE + 1)),
        ("retention_days", json!(0)),
        ("retention_days", json!(36_501)),
    ] {
        let v2 = v.clone();
        probes.push(native_probe(
            &mut g,
            format!("{field} {v}"),
            Some(field),
            &move |s| {
                s.insert(field.to_string(), v2.clone());
            },
        ));
    }
    for raw in [
        "\"\\ud800\"",
        "\"\\udc00\"",
        "\"a\\ud800\\u0041\"",
        "{\"\\ud83d\": 1}",
    ] {
        let mut c = g.native(Entry::Native, &native_corrs[0], true);
        c.sent["event_data"] = json!({ "s": RAW });
        probes.push(Probe {
            entry: Entry::Native,
            what: format!("lone surrogate {raw}"),
            path: "/v1/events",
            body: with_raw(&json!([c.sent]), raw),
            field: None,
            ids: c.id.into_iter().collect(),
        });
    }
    {
        // An atomic batch: five valid events and a bad one store nothing.
        let mut batch: Vec<Case> = (0..5)
            .map(|_| g.native(Entry::Native, &native_corrs[0], true))
            .collect();
        let mut bad = g.native(Entry::Native, &native_corrs[0], true);
        bad.sent["event_timestamp"] = json!("9999-12-31T23:59:59-23:59");
        batch.push(bad);
        probes.push(Probe {
            entry: Entry::Native,
            what: "a batch whose sixth event is out of range".into(),
            path: "/v1/events",
            body: serde_json::to_vec(&batch.iter().map(|c| c.sent.clone()).collect::<Vec<_>>())
                .expect("json"),
            field: Some("event_timestamp".into()),
            ids: batch.iter().filter_map(|c| c.id.clone()).collect(),
        });
    }
    let kubernaut_probe = |g: &mut Gen,
                           what: String,
                           field: Option<&str>,
                           change: &dyn Fn(&mut Map<String, Value>),
                           raw: Option<&str>|
     -> Probe {
        let mut c = g.kubernaut(&kubernaut_corrs[0], now, true);
        change(c.sent.as_object_mut().expect("object"));
        let batch = json!([c.sent]);
        Probe {
            entry: Entry::Kubernaut,
            what,
            path: "/api/v1/audit/events/batch",
            body: match raw {
                Some(r) => with_raw(&batch, r),
                None => serde_json::to_vec(&batch).expect("json"),
            },
            field: field.map(str::to_string),
            ids: c.id.into_iter().collect(),
        }
    };
    for t in REFUSED_TIMES.iter().take(7) {
        probes.push(kubernaut_probe(
            &mut g,
            format!("parent_event_date {t}"),
            Some("parent_event_date"),
            &|s| {
                s.insert("parent_event_date".into(), json!(t));
            },
            None,
        ));
    }
    for n in refused_numbers.iter().take(10) {
        let n2 = n.clone();
        probes.push(kubernaut_probe(
            &mut g,
            format!("number {}", short(n)),
            Some("event_data"),
            &move |s| {
                s["event_data"]["n"] = Value::Number(number(&n2));
            },
            None,
        ));
    }
    {
        let deep = g.chain(MAX_EVENT_DATA_DEPTH).0;
        probes.push(kubernaut_probe(
            &mut g,
            "event_data too deep".into(),
            Some("event_data"),
            &move |s| {
                s["event_data"]["d"] = deep.clone();
            },
            None,
        ));
        probes.push(kubernaut_probe(
            &mut g,
            "correlation_id of 256 characters".into(),
            Some("correlation_id"),
            &|s| {
                s.insert("correlation_id".into(), json!("\u{1f600}".repeat(256)));
            },
            None,
        ));
        probes.push(kubernaut_probe(
            &mut g,
            "version of 21 characters".into(),
            Some("version"),
            &|s| {
                s.insert("version".into(), json!("v".repeat(21)));
            },
            None,
        ));
        probes.push(kubernaut_probe(
            &mut g,
            "error_message of 8193 characters".into(),
            Some("error_message"),
            &|s| {
                s.insert("error_message".into(), json!("\u{2028}".repeat(8193)));
            },
            None,
        ));
        probes.push(kubernaut_probe(
            &mut g,
            "lone surrogate".into(),
            None,
            &|s| {
                s["event_data"]["s"] = json!(RAW);
            },
            Some("\"\\ud800\""),
        ));
        // Atomic: two valid requests and an out-of-range one.
        let cases: Vec<Case> = (0..3)
            .map(|_| g.kubernaut(&kubernaut_corrs[0], now, true))
            .collect();
        let mut sent: Vec<Value> = cases.iter().map(|c| c.sent.clone()).collect();
        sent[2]["parent_event_date"] = json!("0000-01-01T00:00:00+23:59");
        probes.push(Probe {
            entry: Entry::Kubernaut,
            what: "a batch whose third request is out of range".into(),
            path: "/api/v1/audit/events/batch",
            body: serde_json::to_vec(&sent).expect("json"),
            field: Some("parent_event_date".into()),
            ids: cases.iter().filter_map(|c| c.id.clone()).collect(),
        });
    }
    let webhook_probe =
        |what: String, items: Vec<Value>, ids: Vec<String>, raw: Option<&str>| -> Probe {
            let list =
                json!({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": items});
            Probe {
                entry: Entry::Webhook,
                what,
                path: "/v1/ingest/kubernetes",
                body: match raw {
                    Some(r) => with_raw(&list, r),
                    None => serde_json::to_vec(&list).expect("json"),
                },
                field: None,
                ids,
            }
        };
    for (i, t) in REFUSED_TIMES.iter().take(7).enumerate() {
        let mut c = g.audit(
            &format!("rt-refused-{i}"),
            "ResponseComplete",
            &Shape::default(),
        );
        c.sent["stageTimestamp"] = json!(t);
        probes.push(webhook_probe(
            format!("stageTimestamp {t}"),
            vec![c.sent],
            c.id.into_iter().collect(),
            None,
        ));
    }
    {
        let mut c = g.audit(
            "rt-refused-objectref",
            "ResponseComplete",
            &Shape::default(),
        );
        c.sent["objectRef"] =
            json!({"resource": "pods", "name": "x", "generation": number("9007199254740993")});
        probes.push(webhook_probe(
            "objectRef with 9007199254740993".into(),
            vec![c.sent],
            c.id.into_iter().collect(),
            None,
        ));
        let mut c = g.audit(
            "rt-refused-surrogate",
            "ResponseComplete",
            &Shape::default(),
        );
        c.sent["user"] = json!({"username": RAW});
        probes.push(webhook_probe(
            "a lone surrogate in user.username".into(),
            vec![c.sent],
            c.id.into_iter().collect(),
            Some("\"\\udfff\""),
        ));
        let mut items: Vec<Case> = (0..3)
            .map(|i| {
                g.audit(
                    &format!("rt-atomic-{i}"),
                    "ResponseComplete",
                    &Shape::default(),
                )
            })
            .collect();
        items[1].sent["stageTimestamp"] = json!("9999-12-31T23:59:59-23:59");
        probes.push(webhook_probe(
            "an EventList whose second event is out of range".into(),
            items.iter().map(|c| c.sent.clone()).collect(),
            items.iter().filter_map(|c| c.id.clone()).collect(),
            None,
        ));
    }

    // Cases whose acceptance the rules leave open: either answer is fine, but an accepted one
    // must read back like any other.
    let mut open_cases: Vec<(String, &'static str, Vec<u8>, Case)> = Vec::new();
    for (t, stored) in [
        ("2025-06-30 23:59:59Z", "2025-06-30T23:59:59.000000Z"),
        ("2025-01-01T12:34:60Z", "2025-01-01T12:35:00.000000Z"),
        ("2025-01-01T00:00:00,5Z", "2025-01-01T00:00:00.500000Z"),
    ] {
        let mut c = g.native(Entry::Native, &native_corrs[3], true);
        c.sent["event_timestamp"] = json!(t);
        c.expected.insert("event_timestamp".into(), json!(stored));
        let body = serde_json::to_vec(&json!([c.sent])).expect("json");
        open_cases.push((format!("native event_timestamp {t}"), "/v1/events", body, c));
    }
    {
        // A verb longer than `event_action` may be (the mapping cuts verbs to 100 characters),
        // an empty user name, a resource path that makes the event type longer than 100.
        let open_webhook = [
            (
                "webhook verb of 60 characters",
                Shape {
                    verb: Some("v".repeat(60)),
                    ..Shape::default()
                },
                &["event_action", "event_type"][..],
            ),
            (
                "webhook empty user.username",
                Shape {
                    username: Some(Some(String::new())),
                    ..Shape::default()
                },
                &["actor_id", "actor_type"][..],
            ),
            (
                "webhook event type of 113 characters",
                Shape {
                    verb: Some("deletecollection".into()),
                    resource: Some(("r".repeat(63), Some("s".repeat(40)))),
                    ..Shape::default()
                },
                &["event_type"][..],
            ),
        ];
        for (i, (what, shape, loose)) in open_webhook.into_iter().enumerate() {
            let mut c = g.audit(&format!("rt-open-{i}"), "ResponseComplete", &shape);
            for k in loose {
                c.expected.insert(k.to_string(), json!(LOOSE));
            }
            let list = json!({"kind": "EventList", "items": [c.sent]});
            open_cases.push((
                what.into(),
                "/v1/ingest/kubernetes",
                serde_json::to_vec(&list).expect("json"),
                c,
            ));
        }
    }

    let mut server = Server::start_authenticated(&data, ADMIN);
    let producer = server.key(ADMIN, "producer");
    let auditor = server.key(ADMIN, "auditor");
    let writer = Api::new(&server.url, &producer);

    // Phase 1a: refusals, and the open cases.
    let mut violations: Vec<String> = Vec::new();
    let mut refused_ids: Vec<(String, String)> = Vec::new();
    for p in &probes {
        let r = writer.post(p.path, p.body.clone());
        if let Err(why) = refusal(&r, p.field.as_deref()) {
            violations.push(format!(
                "{:?} {}: {why}\n    sent: {}",
                p.entry,
                p.what,
                short(&String::from_utf8_lossy(&p.body))
            ));
        }
        for id in &p.ids {
            refused_ids.push((id.clone(), format!("{:?} {}", p.entry, p.what)));
        }
    }
    let mut acked: Vec<Case> = Vec::new();
    let mut open_outcomes = Vec::new();
    for (what, path, body, mut c) in open_cases {
        let r = writer.post(path, body.clone());
        match r.status {
            200 | 201 => {
                if path == "/v1/events" {
                    let rs = support::receipts(&r.json());
                    c.id = Some(rs[0].event_id.clone());
                    c.receipt = Some(rs[0].clone());
                }
                open_outcomes.push(format!("{what}: accepted"));
                acked.push(c);
            }
            _ => {
                let why = refusal(&r, None).err();
                let detail = serde_json::from_str::<Value>(&r.text)
                    .ok()
                    .and_then(|p| p["detail"].as_str().map(str::to_string))
                    .unwrap_or_default();
                open_outcomes.push(format!(
                    "{what}: refused ({}: {})",
                    r.status,
                    short(&detail)
                ));
                if let Some(why) = why {
                    violations.push(format!("open case {what}: {why}"));
                }
            }
        }
    }
    {
        let r = writer.post(
            "/v1/events",
            serde_json::to_vec(&json!([size_limit_case.sent])).expect("json"),
        );
        match r.status {
            200 => {
                size_limit_case.receipt = Some(support::receipts(&r.json())[0].clone());
                acked.push(size_limit_case);
            }
            s => violations.push(format!(
                "event_data of exactly {MAX_EVENT_DATA_BYTES} canonical bytes refused: {s} {}",
                short(&r.text)
            )),
        }
    }
    assert!(
        violations.is_empty(),
        "{} refusal probes went wrong:\n{}",
        violations.len(),
        violations.join("\n")
    );
    eprintln!(
        "roundtrip: {} refusal probes answered 400; open cases: {}",
        probes.len(),
        open_outcomes.join("; ")
    );

    // Phase 1b: every entry point at once; SIGKILL right after the last acknowledgement.
    let native_batches = batches(&mut g.rng, native, 100, 500);
    let kubernaut_batches = batches(&mut g.rng, kubernaut, 100, 500);
    let webhook_batches = batches(&mut g.rng, webhook, 100, 400);
    let failures = Mutex::new(Vec::<String>::new());
    let fail = |m: String| failures.lock().expect("lock").push(m);
    let url = server.url.clone();
    let ingest_started = Instant::now();
    let (native_acked, kubernaut_acked, webhook_acked, import_out) = std::thread::scope(|s| {
        let native = s.spawn(|| {
            let api = Api::new(&url, &producer);
            let mut out = Vec::new();
            for batch in &native_batches {
                let body: Vec<Value> = batch.iter().map(|c| c.sent.clone()).collect();
                let r = api.post("/v1/events", serde_json::to_vec(&body).expect("json"));
                if r.status != 200 {
                    fail(describe_refusal(Entry::Native, &r, batch));
                    continue;
                }
                let rs = support::receipts(&r.json());
                if rs.len() != batch.len() {
                    fail(format!("{} receipts for {} events", rs.len(), batch.len()));
                    continue;
                }
                for (c, rc) in batch.iter().zip(rs) {
                    if c.id.as_ref().is_some_and(|id| *id != rc.event_id) {
                        fail(format!("receipt id {} for sent id {:?}", rc.event_id, c.id));
                    }
                    let mut c = c.clone();
                    c.id = Some(rc.event_id.clone());
                    c.receipt = Some(rc);
                    out.push(c);
                }
                if r.json()["receipts"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|x| x["duplicate"] != json!(false)))
                {
                    fail(format!(
                        "a first send reports a duplicate: {}",
                        short(&r.text)
                    ));
                }
            }
            out
        });
        let kubernaut = s.spawn(|| {
            let api = Api::new(&url, &producer);
            let mut out = Vec::new();
            for batch in &kubernaut_batches {
                let body: Vec<Value> = batch.iter().map(|c| c.sent.clone()).collect();
                let r = api.post(
                    "/api/v1/audit/events/batch",
                    serde_json::to_vec(&body).expect("json"),
                );
                if r.status != 201 {
                    fail(describe_refusal(Entry::Kubernaut, &r, batch));
                    continue;
                }
                let ids: Vec<String> = r.json()["event_ids"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|v| v.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default();
                if ids.len() != batch.len() {
                    fail(format!(
                        "{} ids for {} Kubernaut events: {}",
                        ids.len(),
                        batch.len(),
                        short(&r.text)
                    ));
                    continue;
                }
                for (c, id) in batch.iter().zip(ids) {
                    if c.id.as_ref().is_some_and(|sent| *sent != id) {
                        fail(format!("Kubernaut answered id {id} for sent id {:?}", c.id));
                    }
                    let mut c = c.clone();
                    c.id = Some(id);
                    out.push(c);
                }
            }
            out
        });
        let webhook = s.spawn(|| {
            let api = Api::new(&url, &producer);
            let mut out = Vec::new();
            for batch in &webhook_batches {
                let list = json!({
                    "kind": "EventList",
                    "apiVersion": "audit.k8s.io/v1",
                    "items": batch.iter().map(|c| c.sent.clone()).collect::<Vec<_>>(),
                });
                let r = api.post(
                    "/v1/ingest/kubernetes",
                    serde_json::to_vec(&list).expect("json"),
                );
                if r.status != 200 {
                    fail(describe_refusal(Entry::Webhook, &r, batch));
                    continue;
                }
                let a = r.json();
                if (
                    a["events"].as_u64(),
                    a["stored"].as_u64(),
                    a["repeated"].as_u64(),
                ) != (Some(batch.len() as u64), Some(batch.len() as u64), Some(0))
                {
                    fail(format!(
                        "webhook answer for {} new events: {a}",
                        batch.len()
                    ));
                }
                out.extend(batch.iter().cloned());
            }
            out
        });
        let importer = s.spawn(|| run_import(&url, &producer, &import_file));
        (
            native.join().expect("native sender"),
            kubernaut.join().expect("Kubernaut sender"),
            webhook.join().expect("webhook sender"),
            importer.join().expect("importer"),
        )
    });
    server.kill9();
    let ingest_time = ingest_started.elapsed();
    let failures = failures.into_inner().expect("lock");
    assert!(
        failures.is_empty(),
        "{} valid batches were not acknowledged as they should be:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // The import's summary: every valid line imported, every bad one rejected by place.
    let (code, out, err) = import_out;
    let file_name = import_file.display().to_string();
    let summary = format!(
        "imported {IMPORT_EVENTS} events, skipped 0 already stored, rejected {}",
        bad_lines.len()
    );
    assert!(
        code == Some(1) && out.starts_with(&summary),
        "import: exit {code:?}, expected 1 and `{summary}`:\n{out}\n{err}"
    );
    for (line, _, why) in &bad_lines {
        assert!(
            out.contains(&format!("{file_name}:{line}")),
            "import does not name the {why} line {line}:\n{out}"
        );
    }
    let import_acked = import_cases.clone();

    let counts = [
        (
            Entry::Native,
            native_acked.len() + acked.iter().filter(|c| c.entry == Entry::Native).count(),
        ),
        (Entry::Kubernaut, kubernaut_acked.len()),
        (
            Entry::Webhook,
            webhook_acked.len() + acked.iter().filter(|c| c.entry == Entry::Webhook).count(),
        ),
        (Entry::Import, import_acked.len()),
    ];
    acked.extend(native_acked);
    acked.extend(kubernaut_acked);
    acked.extend(webhook_acked);
    acked.extend(import_acked);
    eprintln!(
        "roundtrip: acknowledged {counts:?} = {} events in {:.1} s, then SIGKILL",
        acked.len(),
        ingest_time.as_secs_f64()
    );
    let ids: BTreeSet<&String> = acked.iter().filter_map(|c| c.id.as_ref()).collect();
    assert_eq!(
        ids.len(),
        acked.len(),
        "two acknowledged events share an id"
    );

    // Phase 2: recovery, then every acknowledged event read back by id.
    let mut server = Server::start_authenticated(&data, ADMIN);
    let reader = Api::new(&server.url, &auditor);
    let problems = read_back(&reader, &acked);
    assert!(
        problems.is_empty(),
        "{} acknowledged events did not read back after the crash (first 20):\n{}",
        problems.len(),
        problems
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    for (id, what) in &refused_ids {
        let r = reader.get(&format!("/v1/events/{id}"), &[]);
        assert_eq!(
            r.status,
            404,
            "the refused request ({what}) stored event {id}: {}",
            short(&r.text)
        );
    }
    for (_, id, why) in &bad_lines {
        let r = reader.get(&format!("/v1/events/{id}"), &[]);
        assert_eq!(
            r.status, 404,
            "the rejected import line ({why}) stored event {id}"
        );
    }
    eprintln!(
        "roundtrip: after recovery all {} events read back ({:.1} s so far)",
        acked.len(),
        started.elapsed().as_secs_f64()
    );

    // Phase 3: fsck, reindex, restart; queries; re-sent batches are duplicates.
    server.stop();
    let out = support::fsck(&data);
    assert_eq!(
        out.status.code(),
        Some(0),
        "fsck after recovery: {}",
        support::show(&out)
    );
    let out = support::cli(&["reindex", "--data-dir", data.to_str().expect("utf-8 path")]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "reindex: {}",
        support::show(&out)
    );
    let mut server = Server::start_authenticated(&data, ADMIN);
    let reader = Api::new(&server.url, &auditor);
    let writer = Api::new(&server.url, &producer);
    let by_id: HashMap<&str, &Case> = acked
        .iter()
        .map(|c| (c.id.as_deref().expect("id"), c))
        .collect();

    let mut by_corr: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for c in &acked {
        if let Some(corr) = c.expected.get("correlation_id").and_then(Value::as_str) {
            by_corr
                .entry(corr.to_string())
                .or_default()
                .insert(c.id.clone().expect("id"));
        }
    }
    let mut queried: Vec<String> = native_corrs
        .iter()
        .chain(&kubernaut_corrs)
        .chain(&import_corrs)
        .cloned()
        .collect();
    queried.extend(
        audit_ids
            .iter()
            .step_by(15)
            .map(|a| a.chars().take(255).collect::<String>()),
    );
    let mut query_problems = Vec::new();
    for corr in &queried {
        let want = by_corr.get(corr).cloned().unwrap_or_default();
        match reader.query_all(&[("correlation_id", corr.as_str())]) {
            Ok(found) => {
                let got: BTreeSet<String> = found
                    .iter()
                    .filter_map(|e| e["event_id"].as_str().map(str::to_string))
                    .collect();
                if got != want || found.len() != want.len() {
                    query_problems.push(format!(
                        "correlation_id {corr:?}: {} found ({} distinct), {} expected; missing {:?}, extra {:?}",
                        found.len(),
                        got.len(),
                        want.len(),
                        want.difference(&got).take(5).collect::<Vec<_>>(),
                        got.difference(&want).take(5).collect::<Vec<_>>()
                    ));
                }
                for e in &found {
                    if let Some(c) = e["event_id"].as_str().and_then(|id| by_id.get(id)) {
                        if let Err(why) = check_event(c, e) {
                            query_problems.push(format!("in a query: {why}"));
                        }
                    }
                }
            }
            Err(why) => query_problems.push(why),
        }
    }
    // The ends of the time range, across entry points.
    for (param, bound, early) in [
        ("until", "0001-01-01T00:00:00Z", true),
        ("since", "9999-01-01T00:00:00Z", false),
    ] {
        let want: BTreeSet<String> = acked
            .iter()
            .filter(|c| {
                let t = c.expected["event_timestamp"].as_str().unwrap_or("");
                if early {
                    t < "0001"
                } else {
                    t >= "9999"
                }
            })
            .filter_map(|c| c.id.clone())
            .collect();
        assert!(
            !want.is_empty(),
            "the generator made no event for {param}={bound}"
        );
        match reader.query_all(&[(param, bound)]) {
            Ok(found) => {
                let got: BTreeSet<String> = found
                    .iter()
                    .filter_map(|e| e["event_id"].as_str().map(str::to_string))
                    .collect();
                if got != want {
                    query_problems.push(format!(
                        "{param}={bound}: {} found, {} expected; missing {:?}, extra {:?}",
                        got.len(),
                        want.len(),
                        want.difference(&got).take(5).collect::<Vec<_>>(),
                        got.difference(&want).take(5).collect::<Vec<_>>()
                    ));
                }
                let times: Vec<&str> = found
                    .iter()
                    .filter_map(|e| e["event_timestamp"].as_str())
                    .collect();
                if times.windows(2).any(|w| w[0] > w[1]) {
                    query_problems.push(format!("{param}={bound}: not in time order"));
                }
                eprintln!("roundtrip: {param}={bound} finds {} events", got.len());
            }
            Err(why) => query_problems.push(why),
        }
    }
    assert!(
        query_problems.is_empty(),
        "queries after reindex (first 20 of {}):\n{}",
        query_problems.len(),
        query_problems
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );

    // The first native batch (every id set) again, as sent and with its ids in upper case.
    let first = &native_batches[0];
    let originals: Vec<&Receipt> = first
        .iter()
        .map(|c| {
            by_id[c.id.as_deref().expect("id")]
                .receipt
                .as_ref()
                .expect("receipt")
        })
        .collect();
    for upper in [false, true] {
        let body: Vec<Value> = first
            .iter()
            .map(|c| {
                let mut v = c.sent.clone();
                if upper {
                    v["event_id"] = json!(c.id.as_deref().expect("id").to_uppercase());
                }
                v
            })
            .collect();
        let r = writer.post("/v1/events", serde_json::to_vec(&body).expect("json"));
        assert_eq!(
            r.status,
            200,
            "re-sent batch (upper-case ids: {upper}): {}",
            short(&r.text)
        );
        let answer = r.json();
        let receipts = answer["receipts"].as_array().expect("receipts");
        assert_eq!(receipts.len(), first.len());
        for (rc, orig) in receipts.iter().zip(&originals) {
            assert!(
                rc["duplicate"] == json!(true)
                    && rc["event_id"] == json!(orig.event_id)
                    && rc["seq"] == json!(orig.seq)
                    && rc["leaf_hash"] == json!(orig.leaf_hash),
                "re-sent event (upper-case ids: {upper}) is not the stored duplicate {orig:?}: {rc}"
            );
        }
    }
    let again = json!({
        "kind": "EventList",
        "items": webhook_batches[0].iter().map(|c| c.sent.clone()).collect::<Vec<_>>(),
    });
    let r = writer.post(
        "/v1/ingest/kubernetes",
        serde_json::to_vec(&again).expect("json"),
    );
    let n = webhook_batches[0].len() as u64;
    assert_eq!(
        (
            r.status,
            r.json()["stored"].as_u64(),
            r.json()["repeated"].as_u64()
        ),
        (200, Some(0), Some(n)),
        "re-sent webhook batch: {}",
        short(&r.text)
    );
    let (code, out, err) = run_import(&server.url, &producer, &import_file);
    let summary = format!(
        "imported 0 events, skipped {IMPORT_EVENTS} already stored, rejected {}",
        bad_lines.len()
    );
    assert!(
        code == Some(1) && out.starts_with(&summary),
        "second import: exit {code:?}, expected `{summary}`:\n{out}\n{err}"
    );

    // Phase 4: export everything and verify it offline.
    let vkey = reader.get("/v1/key", &[]).text.trim().to_string();
    let bundle = scratch.other("everything.bundle");
    let out = support::command()
        .args(["export", "-o"])
        .arg(&bundle)
        .env("VERITRAIL_KEY", &auditor)
        .env("VERITRAIL_SERVER", &server.url)
        .output()
        .expect("running veritrail export");
    assert!(out.status.success(), "export: {}", support::show(&out));
    let out = support::cli(&[
        "verify",
        bundle.to_str().expect("utf-8 path"),
        "--vkey",
        &vkey,
    ]);
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    let text = std::fs::read_to_string(&bundle).expect("the bundle");
    let mut lines = text.lines();
    let header: Value = serde_json::from_str(lines.next().expect("a header")).expect("header JSON");
    let count = header["count"].as_u64().expect("count");
    assert!(
        out.status.code() == Some(0) && said.starts_with(&format!("OK: {count} events verified")),
        "verify: {}",
        support::show(&out)
    );
    let mut exported: HashMap<String, Value> = HashMap::new();
    for line in lines {
        let v: Value = serde_json::from_str(line).expect("an event line");
        let id = v["leaf"]["event"]["event_id"]
            .as_str()
            .expect("event_id")
            .to_string();
        assert!(
            exported.insert(id.clone(), v).is_none(),
            "event {id} exported twice"
        );
    }
    assert_eq!(
        exported.len() as u64,
        count,
        "the header counts every event line"
    );
    assert!(
        exported.len() >= acked.len(),
        "fewer events exported than acknowledged"
    );
    let mut export_problems = Vec::new();
    for c in &acked {
        let id = c.id.as_deref().expect("id");
        let Some(line) = exported.get(id) else {
            export_problems.push(format!("{:?} event {id} is not in the export", c.entry));
            continue;
        };
        // The bundle's leaf, shaped like an answer, must match the model too.
        let mut answer = line["leaf"]["event"].clone();
        answer["leaf_hash"] = line["leaf_hash"].clone();
        answer["ingested_at"] = line["leaf"]["ingested_at"].clone();
        answer["tenant"] = line["leaf"]["tenant"].clone();
        answer["seq"] = line["leaf_index"].clone();
        if let Err(why) = check_event(c, &answer) {
            export_problems.push(format!("in the export: {why}"));
        }
    }
    assert!(
        export_problems.is_empty(),
        "export (first 20 of {}):\n{}",
        export_problems.len(),
        export_problems
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    server.stop();
    let out = support::fsck(&data);
    assert_eq!(
        out.status.code(),
        Some(0),
        "fsck at the end: {}",
        support::show(&out)
    );
    eprintln!(
        "roundtrip: {} events verified in a bundle of {count}; done in {:.1} s",
        acked.len(),
        started.elapsed().as_secs_f64()
    );
}

/// Names what went wrong with a valid batch that was not acknowledged, with the offending event.
fn describe_refusal(entry: Entry, r: &Resp, batch: &[Case]) -> String {
    let problem: Value = serde_json::from_str(&r.text).unwrap_or(Value::Null);
    let detail = problem["detail"].as_str().unwrap_or(&r.text).to_string();
    let index = problem["errors"][0]["index"]
        .as_u64()
        .map(|i| i as usize)
        .or_else(|| {
            let at = detail.find("event at index ")? + "event at index ".len();
            detail[at..]
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        });
    let offending = index
        .and_then(|i| batch.get(i))
        .map_or("(not named)".into(), |c| show_value(&c.sent));
    format!(
        "{entry:?} batch of {} refused with {}: {}\n    offending input: {offending}",
        batch.len(),
        r.status,
        short(&detail)
    )
}

/// Reads every case back by id (four readers at once); returns what did not match.
fn read_back(api: &Api, cases: &[Case]) -> Vec<String> {
    let problems = Mutex::new(Vec::new());
    let chunk = cases.len().div_ceil(4).max(1);
    std::thread::scope(|s| {
        for part in cases.chunks(chunk) {
            let problems = &problems;
            s.spawn(move || {
                let api = Api::new(&api.url, &api.key);
                for c in part {
                    let id = c.id.as_deref().expect("an acknowledged event has an id");
                    let r = api.get(&format!("/v1/events/{id}"), &[]);
                    let result = if r.status != 200 {
                        Err(format!(
                            "{:?} event {id}: {} {}\n    sent: {}",
                            c.entry,
                            r.status,
                            short(&r.text),
                            show_value(&c.sent)
                        ))
                    } else {
                        match serde_json::from_str::<Value>(&r.text) {
                            Ok(v) => check_event(c, &v),
                            Err(e) => Err(format!("event {id}: the answer is not JSON: {e}")),
                        }
                    };
                    if let Err(why) = result {
                        problems.lock().expect("lock").push(why);
                    }
                }
            });
        }
    });
    problems.into_inner().expect("lock")
}
