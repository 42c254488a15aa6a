//! The benchmark harness runs end to end against both targets, each started by the harness
//! itself: a Veritrail server on a temporary directory and a PostgreSQL cluster on loopback.
//! Figures are not asserted (timing has no place in tests); the shape and the accounting are.

use serde_json::Value;

use crate::support;

#[test]
fn bench_runs_both_targets_and_reports_ratios() {
    let out = support::cli(&[
        "bench",
        "--events",
        "300",
        "--clients",
        "2",
        "--batch",
        "50",
        "--queries",
        "3",
        "--correlations",
        "20",
        "--json",
    ]);
    assert!(out.status.success(), "{}", support::show(&out));
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    // veritrail, postgres insert (2 clients), postgres insert (1 client), postgres copy, ratios.
    assert_eq!(lines.len(), 5, "{}", support::show(&out));
    assert_eq!(lines[0]["target"], "veritrail");
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
        assert_eq!(l["events"], 300, "{l}");
        for k in [
            "events_per_s",
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
        "timeline_p50_speedup",
        "bytes_per_event_postgres_over_veritrail",
    ] {
        assert!(
            ratios[k].as_f64().is_some_and(f64::is_finite),
            "`{k}` missing in {ratios}"
        );
    }
}
