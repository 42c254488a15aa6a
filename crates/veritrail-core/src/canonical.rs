//! Canonical JSON bytes (RFC 8785, JSON Canonicalization Scheme).
//!
//! These are the bytes that get hashed into the Merkle tree, so they must never depend on
//! "whatever serde emits today": keys sorted by UTF-16 code units, ECMAScript number
//! formatting, minimal string escaping, no whitespace.
//!
//! One deliberate restriction on top of RFC 8785, so that no number is silently altered: a number
//! is accepted only when its value survives the trip through an IEEE-754 double. Fractions round
//! to the nearest double as RFC 8785 prescribes (`0.1`, `333333333.33333329`), but when the number
//! sent or its canonical form is a whole number, both must denote exactly the same value
//! (`1e16` and `10000000000000000` are kept, `9007199254740993` and `9007199254740993.0`, which a
//! double would turn into `…992`, are refused; I-JSON says such numbers travel as strings). The
//! canonical form of an accepted number is accepted again and is its own canonical form, so
//! whatever ingest accepts the reader accepts too: both call [`write_value`].

use serde_json::{Map, Number, Value};
use thiserror::Error;

/// Largest integer magnitude an IEEE-754 double represents exactly (2^53 − 1).
pub const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// Why a JSON value has no canonical form.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum CanonicalError {
    /// A whole number that a double cannot hold exactly, or a number a double would turn into a
    /// different whole number.
    #[error(
        "number {0} cannot be stored exactly as an IEEE-754 double (it would become {1}); send it as a string"
    )]
    Inexact(String, String),
    /// A number beyond the range of a double (magnitude above about 1.8e308).
    #[error("number {0} is beyond the range of an IEEE-754 double; send it as a string")]
    OutOfRange(String),
    /// NaN or infinity (cannot come from parsed JSON, but can from constructed values).
    #[error("number is not finite")]
    NotFinite,
}

/// Returns the RFC 8785 canonical bytes of `value`.
pub fn to_vec(value: &Value) -> Result<Vec<u8>, CanonicalError> {
    let mut out = Vec::with_capacity(256);
    write_value(value, &mut out)?;
    Ok(out)
}

/// Appends the canonical bytes of `value` to `out`.
pub fn write_value(value: &Value, out: &mut Vec<u8>) -> Result<(), CanonicalError> {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => write_number(n, out)?,
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(item, out)?;
            }
            out.push(b']');
        }
        Value::Object(map) => write_object(map, out)?,
    }
    Ok(())
}

/// Appends the canonical bytes of the object `map` to `out`.
pub fn write_object(map: &Map<String, Value>, out: &mut Vec<u8>) -> Result<(), CanonicalError> {
    let mut entries: Vec<(&String, &Value)> = map.iter().collect();
    // RFC 8785 §3.2.3: sort by UTF-16 code units, which differs from UTF-8 byte order only
    // for characters above U+FFFF versus U+E000..U+FFFF.
    // For ASCII keys (nearly all) the orders agree and bytes compare faster. A map that keeps
    // its keys in byte order (serde_json's default) is then in order already: checked in one
    // pass, sorted only when it is not.
    let utf16 = |a: &str, b: &str| {
        if a.is_ascii() && b.is_ascii() {
            a.cmp(b)
        } else {
            a.encode_utf16().cmp(b.encode_utf16())
        }
    };
    if !entries.windows(2).all(|w| utf16(w[0].0, w[1].0).is_lt()) {
        entries.sort_by(|a, b| utf16(a.0, b.0));
    }
    out.push(b'{');
    for (i, (key, item)) in entries.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_string(key, out);
        out.push(b':');
        write_value(item, out)?;
    }
    out.push(b'}');
    Ok(())
}

/// Appends the canonical form of the number `n` to `out` (refusing what a double would alter).
pub fn write_number(n: &Number, out: &mut Vec<u8>) -> Result<(), CanonicalError> {
    // Whole numbers within ±(2^53 − 1) are exact doubles and print as themselves.
    let small = match (n.as_u64(), n.as_i64()) {
        (Some(u), _) => (u <= MAX_SAFE_INTEGER).then(|| u.to_string()),
        (None, Some(i)) => (i.unsigned_abs() <= MAX_SAFE_INTEGER).then(|| i.to_string()),
        _ => None,
    };
    if let Some(text) = small {
        out.extend_from_slice(text.as_bytes());
        return Ok(());
    }
    // serde_json keeps the number's text (the workspace enables `arbitrary_precision`).
    let text = n.to_string();
    let f: f64 = text.parse().map_err(|_| CanonicalError::NotFinite)?;
    if !f.is_finite() {
        return Err(CanonicalError::OutOfRange(abbreviate(&text)));
    }
    // ryu-js implements ECMAScript's Number::toString, which RFC 8785 §3.2.2.3 mandates.
    let mut buf = ryu_js::Buffer::new();
    let canonical = buf.format_finite(f);
    // Most numbers producers send are already in canonical form: nothing can have changed.
    if canonical != text {
        check_unaltered(&text, canonical)?;
    }
    out.extend_from_slice(canonical.as_bytes());
    Ok(())
}

/// Refuses a number whose canonical form would alter a whole number (see the module docs).
fn check_unaltered(text: &str, canonical: &str) -> Result<(), CanonicalError> {
    let (sent, kept) = (Decimal::parse(text), Decimal::parse(canonical));
    if (sent.is_whole() || kept.is_whole()) && sent != kept {
        return Err(CanonicalError::Inexact(
            abbreviate(text),
            canonical.to_string(),
        ));
    }
    Ok(())
}

/// A number's text shortened for an error message (a 400-digit number is named, not echoed).
fn abbreviate(text: &str) -> String {
    const KEEP: usize = 40;
    if text.len() <= KEEP {
        return text.to_string();
    }
    format!("{}… ({} characters)", &text[..KEEP], text.len())
}

/// The exact value of a JSON number's text: sign, significant digits (no leading or trailing
/// zeros) and a power of ten, so that two texts are equal exactly when they denote one value.
#[derive(Debug, PartialEq, Eq)]
struct Decimal {
    negative: bool,
    digits: Vec<u8>,
    exponent: i64,
}

impl Decimal {
    /// Reads text of the JSON number grammar (`-?int(.frac)?([eE][+-]?digits)?`).
    fn parse(text: &str) -> Decimal {
        let (negative, rest) = match text.strip_prefix('-') {
            Some(r) => (true, r),
            None => (false, text),
        };
        let (mantissa, exp_text) = match rest.find(['e', 'E']) {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, "0"),
        };
        let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        // Exponents too long for i64 are beyond any double; saturating keeps the comparison sound.
        let exp: i64 = exp_text.parse().unwrap_or(if exp_text.starts_with('-') {
            i64::MIN / 2
        } else {
            i64::MAX / 2
        });
        let mut digits: Vec<u8> = int.bytes().chain(frac.bytes()).collect();
        let mut exponent = exp.saturating_sub(frac.len() as i64);
        let leading = digits.iter().take_while(|&&d| d == b'0').count();
        digits.drain(..leading);
        while digits.last() == Some(&b'0') {
            digits.pop();
            exponent = exponent.saturating_add(1);
        }
        if digits.is_empty() {
            // Zero, with either sign, is one value.
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

    fn is_whole(&self) -> bool {
        self.digits.is_empty() || self.exponent >= 0
    }
}

/// Appends the canonical form of the string `s` (quotes included).
pub fn write_string(s: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    loop {
        let i = next_escape(bytes, start);
        out.extend_from_slice(&bytes[start..i]);
        let Some(&b) = bytes.get(i) else { break };
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\x08' => out.extend_from_slice(b"\\b"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\x0c' => out.extend_from_slice(b"\\f"),
            b'\r' => out.extend_from_slice(b"\\r"),
            _ => out.extend_from_slice(format!("\\u{b:04x}").as_bytes()),
        }
        start = i + 1;
    }
    out.push(b'"');
}

/// True for a byte that a canonical string escapes: `"`, `\` and the control characters.
fn needs_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

/// The index of the first byte at or after `from` that needs escaping (`bytes.len()` if none).
/// Eight bytes at a time while none of them can: most text has nothing to escape.
fn next_escape(bytes: &[u8], from: usize) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // Non-zero when some byte of `w` is zero (exact as a yes or no).
    let has_zero = |w: u64| w.wrapping_sub(ONES) & !w & HIGH;
    let mut i = from;
    while let Some(chunk) = bytes.get(i..i + 8) {
        let mut w = [0u8; 8];
        w.copy_from_slice(chunk);
        let w = u64::from_le_bytes(w);
        // A byte below 0x20, or equal to `"` or `\`, stops the fast scan.
        let control = w.wrapping_sub(ONES * 0x20) & !w & HIGH;
        if control
            | has_zero(w ^ (ONES * u64::from(b'"')))
            | has_zero(w ^ (ONES * u64::from(b'\\')))
            != 0
        {
            break;
        }
        i += 8;
    }
    while i < bytes.len() && !needs_escape(bytes[i]) {
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(input: &str, expected: &str) {
        let value: Value = serde_json::from_str(input).expect("test input is JSON");
        let got = to_vec(&value).expect("canonicalizes");
        assert_eq!(String::from_utf8(got).expect("utf-8"), expected);
    }

    #[test]
    fn rfc8785_section_3_2_2_example() {
        check(
            r#"{"numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
                "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
                "literals": [null, true, false]}"#,
            r#"{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],"string":"€$\u000f\nA'B\"\\\\\"/"}"#,
        );
    }

    #[test]
    fn keys_sort_by_utf16_code_units() {
        // RFC 8785 §3.2.3 sorting example.
        check(
            r#"{"\u20ac": "Euro Sign", "\r": "Carriage Return", "\ufb33": "Hebrew Letter Dalet With Dagesh",
                "1": "One", "\ud83d\ude00": "Emoji: Grinning Face", "\u0080": "Control", "\u00f6": "Latin Small Letter O With Diaeresis"}"#,
            "{\"\\r\":\"Carriage Return\",\"1\":\"One\",\"\u{80}\":\"Control\",\"ö\":\"Latin Small Letter O With Diaeresis\",\"€\":\"Euro Sign\",\"😀\":\"Emoji: Grinning Face\",\"\u{fb33}\":\"Hebrew Letter Dalet With Dagesh\"}",
        );
    }

    fn canon(text: &str) -> Result<String, CanonicalError> {
        let value: Value = serde_json::from_str(text).expect("test input is JSON");
        to_vec(&value).map(|b| String::from_utf8(b).expect("utf-8"))
    }

    #[test]
    fn whole_numbers_a_double_would_change_are_refused() {
        assert_eq!(canon("9007199254740991").as_deref(), Ok("9007199254740991"));
        assert!(matches!(
            canon("9007199254740993"),
            Err(CanonicalError::Inexact(..))
        ));
        assert!(canon("-9007199254740993").is_err());
        // A fraction-looking literal of a whole number is held to the same rule.
        assert!(matches!(
            canon("9007199254740993.0"),
            Err(CanonicalError::Inexact(..))
        ));
        assert!(canon("9007199254740993.5").is_err());
        assert!(canon("123456789012345678901234567").is_err());
        // 10^23 has no exact double, but its canonical text still denotes 10^23.
        assert_eq!(canon("100000000000000000000000").as_deref(), Ok("1e+23"));
        assert!(canon("1.5e300").is_ok());
        assert!(canon("1e-400").is_err(), "underflows to 0");
    }

    #[test]
    fn whole_numbers_a_double_holds_exactly_are_kept() {
        // These were once stored and then refused by the reader.
        for (sent, kept) in [
            ("1e16", "10000000000000000"),
            ("1e20", "100000000000000000000"),
            ("-1e16", "-10000000000000000"),
            ("123e18", "123000000000000000000"),
            ("9007199254740992.0", "9007199254740992"),
            ("9007199254740992", "9007199254740992"),
            ("10000000000000000", "10000000000000000"),
            ("1000000000000000000000", "1e+21"),
            ("-0", "0"),
            ("-0.0", "0"),
            ("4.50", "4.5"),
        ] {
            assert_eq!(canon(sent).as_deref(), Ok(kept), "{sent}");
            assert_eq!(canon(kept).as_deref(), Ok(kept), "{kept} is a fixed point");
        }
    }

    #[test]
    fn out_of_range_numbers_are_named_briefly() {
        let long = format!("1{}", "0".repeat(399));
        let err = canon(&long).expect_err("beyond a double");
        assert!(matches!(err, CanonicalError::OutOfRange(_)));
        let message = err.to_string();
        assert!(message.contains("(400 characters)"), "{message}");
        assert!(message.len() < 200, "{message}");
        assert!(canon("-1e309").is_err());
    }

    #[test]
    fn canonical_form_is_a_fixed_point() {
        let v = json!({"b": [1.5, -0.0, 1e21, "x\u{1}"], "a": {"z": null, "y": 100}});
        let once = to_vec(&v).expect("canonical");
        let again =
            to_vec(&serde_json::from_slice::<Value>(&once).expect("reparse")).expect("canonical");
        assert_eq!(once, again);
        assert_eq!(
            String::from_utf8(once).expect("utf-8"),
            r#"{"a":{"y":100,"z":null},"b":[1.5,0,1e+21,"x\u0001"]}"#
        );
    }

    /// Escapes one byte at a time: what [`write_string`]'s fast scan must agree with.
    fn write_string_bytewise(s: &str, out: &mut Vec<u8>) {
        out.push(b'"');
        for c in s.chars() {
            match c {
                '"' => out.extend_from_slice(b"\\\""),
                '\\' => out.extend_from_slice(b"\\\\"),
                '\u{8}' => out.extend_from_slice(b"\\b"),
                '\t' => out.extend_from_slice(b"\\t"),
                '\n' => out.extend_from_slice(b"\\n"),
                '\u{c}' => out.extend_from_slice(b"\\f"),
                '\r' => out.extend_from_slice(b"\\r"),
                c if (c as u32) < 0x20 => {
                    out.extend_from_slice(format!("\\u{:04x}", c as u32).as_bytes())
                }
                c => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
            }
        }
        out.push(b'"');
    }

    proptest::proptest! {
        /// The eight-bytes-at-a-time scan escapes exactly what a byte-by-byte one does, wherever
        /// the few bytes to escape fall among ASCII and multi-byte UTF-8.
        #[test]
        fn strings_escape_as_byte_by_byte(
            s in "([a-zé€]{0,12}[\"\\\\\u{0}-\u{1f}\u{7f}😀]){0,4}[a-z]{0,12}",
        ) {
            let (mut fast, mut slow) = (Vec::new(), Vec::new());
            write_string(&s, &mut fast);
            write_string_bytewise(&s, &mut slow);
            proptest::prop_assert_eq!(fast, slow);
        }

        /// Whatever number is accepted has a canonical form that is accepted again and is its own
        /// canonical form: ingest and the reader cannot disagree about a number.
        #[test]
        fn accepted_numbers_are_fixed_points(
            mantissa in "-?(0|[1-9][0-9]{0,25})(\\.[0-9]{1,20})?",
            exponent in proptest::option::of(-330i32..330),
            bits in proptest::num::f64::ANY,
        ) {
            let mut texts = vec![match exponent {
                Some(e) => format!("{mantissa}e{e}"),
                None => mantissa,
            }];
            if bits.is_finite() {
                texts.push(format!("{bits:?}"));
                texts.push(format!("{bits:e}"));
            }
            for text in texts {
                if let Ok(kept) = canon(&text) {
                    proptest::prop_assert_eq!(canon(&kept), Ok(kept.clone()), "{} → {}", text, kept);
                }
            }
        }
    }
}
