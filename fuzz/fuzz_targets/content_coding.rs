//! A request body's content coding: bytes → `admission::decode` as gzip and as zstd (what every
//! body-reading route does with `Content-Encoding: gzip` or `zstd`) under a small limit. The
//! decoder never panics, never returns more than the limit nor holds a buffer beyond one byte
//! past it; and the input itself, compressed either way, decodes back to itself, or is refused
//! as too large exactly when it is longer than the limit.
#![no_main]

use std::io::Write;

use libfuzzer_sys::fuzz_target;
use veritrail_server::admission::{decode, Coding, DecodeError};

/// Small, so that inputs reach it and bombs are cheap to find.
const LIMIT: usize = 4096;

fn compress(coding: Coding, data: &[u8]) -> Vec<u8> {
    match coding {
        Coding::Identity => data.to_vec(),
        Coding::Gzip => {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            enc.write_all(data).expect("compressing into memory");
            enc.finish().expect("compressing into memory")
        }
        Coding::Zstd => zstd::bulk::compress(data, 1).expect("compressing into memory"),
    }
}

fuzz_target!(|data: &[u8]| {
    for coding in [Coding::Identity, Coding::Gzip, Coding::Zstd] {
        match decode(coding, data, LIMIT) {
            Ok(out) => assert!(
                out.len() <= LIMIT && out.capacity() <= LIMIT + 1,
                "{coding:?}: {} bytes in a buffer of {}",
                out.len(),
                out.capacity()
            ),
            Err(DecodeError::TooLarge) | Err(DecodeError::Corrupt(_)) => {}
        }
        let back = decode(coding, &compress(coding, data), LIMIT);
        if data.len() <= LIMIT {
            assert_eq!(back.as_deref(), Ok(data), "{coding:?} round trip");
        } else {
            assert_eq!(
                back,
                Err(DecodeError::TooLarge),
                "{coding:?} over the limit"
            );
        }
    }
});
