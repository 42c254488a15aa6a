//! Export bundles: bytes as text → `bundle::verify(text, &verifier)` with the fixed key of
//! `crates/veritrail-core/tests/bundle.rs`. Must never panic, and the report must be consistent:
//! `ok()` only with no problem, and a bundle that verifies has the checkpoint's origin and size.
#![no_main]

use libfuzzer_sys::fuzz_target;
use veritrail_core::bundle;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let report = bundle::verify(&text, veritrail_fuzz::verifier());
    // Display must not panic either (`veritrail verify` prints it).
    let shown = report.to_string();
    if report.ok() {
        assert!(shown.starts_with("OK"), "{shown}");
        assert!(
            report.origin.is_some() && report.tree_size.is_some(),
            "{report:?}"
        );
    }
});
