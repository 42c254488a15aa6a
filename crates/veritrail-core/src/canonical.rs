//! Canonical JSON bytes (RFC 8785, JSON Canonicalization Scheme).
//!
//! These are the bytes that get hashed into the Merkle tree, so they must never depend on
//! "whatever serde emits today": keys sorted by UTF-16 code units, ECMAScript number
//! formatting, minimal string escaping, no whitespace.
//!
//! One deliberate restriction on top of RFC 8785: integer literals outside ±(2^53 − 1) are
//! rejected instead of being rounded to the nearest double, because rounding would silently
//! alter what the producer sent (RFC 8785 §3.2.2.3 / I-JSON: such numbers must travel as strings).

use serde_json::{Map, Number, Value};
use thiserror::Error;

/// Largest integer magnitude an IEEE-754 double represents exactly (2^53 − 1).
pub const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// Why a JSON value has no canonical form.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum CanonicalError {
    /// An integer that a double cannot hold exactly.
    #[error(
        "number {0} is outside ±(2^53−1) and cannot be represented exactly; send it as a string"
    )]
    UnsafeInteger(String),
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

fn write_object(map: &Map<String, Value>, out: &mut Vec<u8>) -> Result<(), CanonicalError> {
    let mut entries: Vec<(&String, &Value)> = map.iter().collect();
    // RFC 8785 §3.2.3: sort by UTF-16 code units, which differs from UTF-8 byte order only
    // for characters above U+FFFF versus U+E000..U+FFFF.
    entries.sort_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()));
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

fn write_number(n: &Number, out: &mut Vec<u8>) -> Result<(), CanonicalError> {
    if let Some(u) = n.as_u64() {
        if u > MAX_SAFE_INTEGER {
            return Err(CanonicalError::UnsafeInteger(n.to_string()));
        }
        out.extend_from_slice(u.to_string().as_bytes());
    } else if let Some(i) = n.as_i64() {
        if i.unsigned_abs() > MAX_SAFE_INTEGER {
            return Err(CanonicalError::UnsafeInteger(n.to_string()));
        }
        out.extend_from_slice(i.to_string().as_bytes());
    } else {
        let f = n.as_f64().ok_or(CanonicalError::NotFinite)?;
        if !f.is_finite() {
            return Err(CanonicalError::NotFinite);
        }
        // An integer literal too long for 64 bits: serde_json keeps its text (the workspace
        // enables `arbitrary_precision`), so it is refused here rather than rounded.
        let text = n.to_string();
        if !text.contains(['.', 'e', 'E']) {
            return Err(CanonicalError::UnsafeInteger(text));
        }
        // ryu-js implements ECMAScript's Number::toString, which RFC 8785 §3.2.2.3 mandates.
        let mut buf = ryu_js::Buffer::new();
        out.extend_from_slice(buf.format_finite(f).as_bytes());
    }
    Ok(())
}

/// Appends the canonical form of the string `s` (quotes included).
pub fn write_string(s: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: Option<&[u8]> = match b {
            b'"' => Some(b"\\\""),
            b'\\' => Some(b"\\\\"),
            b'\x08' => Some(b"\\b"),
            b'\t' => Some(b"\\t"),
            b'\n' => Some(b"\\n"),
            b'\x0c' => Some(b"\\f"),
            b'\r' => Some(b"\\r"),
            0..=0x1f => None,
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        match escape {
            Some(e) => out.extend_from_slice(e),
            None => out.extend_from_slice(format!("\\u{b:04x}").as_bytes()),
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
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

    #[test]
    fn integers_beyond_2_pow_53_are_refused() {
        assert!(to_vec(&json!(9007199254740991u64)).is_ok());
        assert_eq!(
            to_vec(&json!(9007199254740993u64)),
            Err(CanonicalError::UnsafeInteger("9007199254740993".into()))
        );
        assert!(to_vec(&json!(-9007199254740993i64)).is_err());
        let too_long: Value = serde_json::from_str("100000000000000000000000").expect("json");
        assert!(matches!(
            to_vec(&too_long),
            Err(CanonicalError::UnsafeInteger(_))
        ));
        assert!(to_vec(&json!(1.5e300)).is_ok());
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
}
