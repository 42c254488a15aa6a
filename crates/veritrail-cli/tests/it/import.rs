//! `veritrail import` over every Kubernetes and CloudTrail file of `../shared/corpus/`: counts,
//! rejections with their reasons, idempotence, and what the imported events say.

use crate::support::{self, Server};

const ADMIN: &str = "vt_import_admin_0123456789abcdefghijklmnopqr";

fn corpus(rel: &str) -> String {
    support::corpus(rel).to_string_lossy().into_owned()
}

/// Runs `veritrail import` and returns (exit code, stdout).
fn import(server: &Server, key: &str, format: &str, files: &[String]) -> (i32, String) {
    let out = support::command()
        .args(["import", "--format", format])
        .args(files)
        .env("VERITRAIL_KEY", key)
        .env("VERITRAIL_SERVER", &server.url)
        .output()
        .expect("running veritrail import");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn importing_the_corpus_twice_stores_everything_once() {
    let scratch = support::Scratch::new();
    let server = Server::start_authenticated(&scratch.data(), ADMIN);
    let (producer, auditor) = (server.key(ADMIN, "producer"), server.key(ADMIN, "auditor"));

    // Kubernetes: the v1 log records 37 requests the v1beta1 log also has, with other content
    // (conflicts); the falco trace repeats two (auditID, stage) pairs with other content; the
    // malformed file is not an event.
    let k8s = [
        corpus("kubernetes-audit/demo-v1beta1-full-501d132.log"),
        corpus("kubernetes-audit/demo-v1-dc2769a.log"),
        corpus("kubernetes-audit/falco-k8s-audit-2018.jsonl"),
        corpus("kubernetes-audit/falco-malformed-event.json"),
    ];
    let (code, out) = import(&server, &producer, "kubernetes-audit", &k8s);
    assert_eq!(code, 1, "rejections exit 1: {out}");
    assert!(
        out.starts_with("imported 806 events, skipped 0 already stored, rejected 40"),
        "{out}"
    );
    assert!(
        out.contains("39 × another event with the same id and different content is stored"),
        "{out}"
    );
    assert!(out.contains("falco-malformed-event.json:1"), "{out}");
    let (_, again) = import(&server, &producer, "kubernetes-audit", &k8s);
    assert!(
        again.starts_with("imported 0 events, skipped 806 already stored, rejected 40"),
        "{again}"
    );

    // CloudTrail: a Records file, its 64 KB sibling, 19 example records (three eventIDs used
    // twice with other content) and a digest file, which holds no records.
    let trail = [
        corpus("cloudtrail/alice_start_instances.json"),
        corpus("cloudtrail/alice_start_instances_bigevent.json"),
        corpus("cloudtrail/awsdocs_cloudtrail_examples.jsonl"),
        corpus("cloudtrail/awsdocs_cloudtrail_digest_example.json"),
    ];
    let (_, out) = import(&server, &producer, "cloudtrail", &trail);
    assert!(
        out.starts_with("imported 18 events, skipped 0 already stored, rejected 4"),
        "{out}"
    );
    assert!(out.contains("digest"), "{out}");
    let (_, again) = import(&server, &producer, "cloudtrail", &trail);
    assert!(
        again.starts_with("imported 0 events, skipped 18 already stored, rejected 4"),
        "{again}"
    );

    // What the events say: a request's stages in order, a denied request, Alice's call.
    let timeline = server
        .get_as(
            &auditor,
            "/v1/correlations/033d17af-082d-4b24-aa22-627752e83d71/timeline",
        )
        .ok_json();
    let first = &timeline["events"][0];
    assert_eq!(first["actor_id"], "system:admin");
    assert_eq!(first["event_outcome"], "failure");
    assert_eq!(first["event_data"]["impersonatedUser"]["username"], "bob");
    let alice = server
        .get_as(&auditor, "/v1/events?actor_id=arn:aws:iam::123456789012:user/Alice&event_type=aws.ec2.StartInstances")
        .ok_json();
    assert!(!alice["events"].as_array().unwrap().is_empty(), "{alice}");
    assert_eq!(alice["events"][0]["actor_ip"], "205.251.233.176");

    // Hand-made, often partial fixtures (EKS audit events, GCP audit log entries of which some
    // are GKE Kubernetes calls): every line is accounted for, imported or rejected with a reason.
    let fixtures = [
        corpus("detection-fixtures/panther_eks_k8s_audit_tests.jsonl"),
        corpus("detection-fixtures/panther_gcp_auditlog_tests.jsonl"),
    ];
    let (code, out) = import(&server, &producer, "kubernetes-audit", &fixtures);
    assert!(code == 0 || code == 1, "{out}");
    let counts: Vec<u64> = out
        .lines()
        .next()
        .unwrap_or_default()
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect();
    assert_eq!(counts.len(), 3, "{out}");
    assert_eq!(counts.iter().sum::<u64>(), 267 + 414, "{out}");
    assert!(counts[0] > 0, "no fixture imported: {out}");

    // Native NDJSON: events with ids are idempotent; a bad line is named.
    let corr = support::corr("nd");
    let mut lines: Vec<String> = (0..3)
        .map(|i| support::event(i, &corr).to_string())
        .collect();
    lines.push("{\"event_type\": 7}".into());
    let file = scratch.tmp.path().join("events.ndjson");
    std::fs::write(&file, lines.join("\n")).unwrap();
    let f = [file.to_string_lossy().into_owned()];
    let (_, out) = import(&server, &producer, "ndjson", &f);
    assert!(
        out.starts_with("imported 3 events, skipped 0 already stored, rejected 1"),
        "{out}"
    );
    assert!(out.contains("events.ndjson:4"), "{out}");
    let (_, again) = import(&server, &producer, "ndjson", &f);
    assert!(
        again.starts_with("imported 0 events, skipped 3 already stored, rejected 1"),
        "{again}"
    );
}
