//! The benchmark runs end to end against both targets, each started by the benchmark itself: a
//! Veritrail server (the `veritrail` binary) on a temporary directory and a PostgreSQL cluster on
//! loopback. Figures are not asserted (timing has no place in tests); the shape and the
//! accounting are.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const BENCH: &str = env!("CARGO_BIN_EXE_veritrail-bench");

/// The `veritrail` binary where the benchmark looks for it by default: beside its own executable,
/// in `target/<profile>/`. `cargo test --workspace` has built it there before any test runs (the
/// CLI's integration tests need it); when only this package is tested and it is missing, it is
/// built here, into the same target directory and profile.
fn veritrail_binary() -> PathBuf {
    let profile_dir = Path::new(BENCH).parent().expect("target/<profile>");
    let bin = profile_dir.join(format!("veritrail{}", std::env::consts::EXE_SUFFIX));
    if bin.is_file() {
        return bin;
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.toml");
    let mut build = Command::new(cargo);
    build
        .args([
            "build",
            "-p",
            "veritrail-cli",
            "--bin",
            "veritrail",
            "--manifest-path",
        ])
        .arg(&workspace);
    match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => {}
        Some("release") => {
            build.arg("--release");
        }
        Some(other) => {
            build.args(["--profile", other]);
        }
        None => {}
    }
    // A plain target directory (no `--target` triple in the path) holds CACHEDIR.TAG.
    if let Some(target_dir) = profile_dir
        .parent()
        .filter(|d| d.join("CACHEDIR.TAG").is_file())
    {
        build.arg("--target-dir").arg(target_dir);
    }
    let status = build.status().expect("running cargo build");
    assert!(status.success(), "cargo build -p veritrail-cli failed");
    assert!(bin.is_file(), "cargo build did not leave {}", bin.display());
    bin
}

fn show(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn bench_runs_both_targets_and_reports_ratios() {
    // Found by the benchmark on its own (no --veritrail-bin), as a user's run finds it.
    veritrail_binary();
    let out = Command::new(BENCH)
        .args([
            "--events",
            "320",
            "--clients",
            "2",
            "--batch",
            "50",
            "--queries",
            "3",
            "--correlations",
            "20",
            // Smaller than the run: batches 4 and 5 repeat batches 0 and 1, and the last one (20
            // events) is encoded on its own.
            "--pool-events",
            "200",
            "--json",
        ])
        .env_remove("VERITRAIL_KEY")
        .output()
        .expect("running veritrail-bench");
    assert!(out.status.success(), "{}", show(&out));
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    // veritrail, postgres insert (2 clients), postgres insert (1 client), postgres copy, ratios.
    assert_eq!(lines.len(), 5, "{}", show(&out));
    assert_eq!(lines[0]["target"], "veritrail");
    assert_eq!(lines[0]["access_events"], true, "{}", lines[0]);
    for (line, method, clients) in [
        (&lines[1], "insert", 2),
        (&lines[2], "insert", 1),
        (&lines[3], "copy", 1),
    ] {
        assert_eq!(line["target"], "postgres");
        assert_eq!(line["method"], method);
        assert_eq!(line["clients"], clients);
    }
    for l in &lines[..4] {
        assert_eq!(l["events"], 320, "{l}");
        for k in [
            "events_per_s",
            "server_cpu_us_per_event",
            "client_cpu_us_per_event",
            "p50_ms",
            "p99_ms",
            "timeline_p50_ms",
            "filtered_window_p50_ms",
            "bytes_per_event",
        ] {
            assert!(
                l[k].as_f64().is_some_and(|v| v > 0.0),
                "`{k}` missing or not positive in {l}"
            );
        }
    }
    let ratios = &lines[4]["ratios"];
    for k in [
        "ingest_vs_best_postgres_method",
        "server_cpu_per_event_postgres_over_veritrail",
        "timeline_p50_speedup",
        "bytes_per_event_postgres_over_veritrail",
    ] {
        assert!(
            ratios[k].as_f64().is_some_and(f64::is_finite),
            "`{k}` missing in {ratios}"
        );
    }
}

#[test]
fn a_missing_veritrail_binary_is_named_with_the_build_command() {
    let out = Command::new(BENCH)
        .args([
            "--target",
            "veritrail",
            "--veritrail-bin",
            "/nonexistent/veritrail",
        ])
        .output()
        .expect("running veritrail-bench");
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/veritrail"), "{err}");
    assert!(
        err.contains("cargo build --release -p veritrail-cli"),
        "{err}"
    );
}
