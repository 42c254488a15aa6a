//! The CLI round trip: export a correlation's events, verify the bundle offline, and see every
//! kind of tampering (and the wrong key) rejected.

use serde_json::{json, Value};

use crate::support::{self, cli, show, Server};

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn verify(bundle: &std::path::Path, vkey: &str) -> std::process::Output {
    cli(&["verify", bundle.to_str().unwrap(), "--vkey", vkey])
}

#[test]
fn export_then_verify_detects_tampering_and_the_wrong_key() {
    let scratch = support::Scratch::new();
    let data = scratch.data();
    let mut server = Server::start(&data);
    let (a, b) = (support::corr("export-a"), support::corr("export-b"));
    // Interleave the two operations so that A's leaves are not contiguous.
    for i in 0..5 {
        let mut ea = support::event(i, &a);
        ea["actor_id"] = json!(format!("actor-a-{i}"));
        server.ingest(&json!([ea, support::event(i, &b)]));
    }
    server.ingest(&support::events(2, &b));

    let key_out = cli(&["key", "show", "--data-dir", data.to_str().unwrap()]);
    assert!(key_out.status.success(), "{}", show(&key_out));
    let vkey = stdout(&key_out).trim().to_string();
    assert_eq!(vkey, server.vkey(), "`key show` and GET /v1/key agree");

    let bundle = scratch.other("a.bundle");
    let out = cli(&[
        "export",
        "--server",
        &server.url,
        "-c",
        &a,
        "-o",
        bundle.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "export: {}", show(&out));
    let text = std::fs::read_to_string(&bundle).expect("the bundle");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 6, "a header and five events:\n{text}");
    let header: Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(header["count"].as_u64(), Some(5), "{header}");
    let leaves: Vec<Value> = lines[1..]
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for l in &leaves {
        assert_eq!(
            l["leaf"]["event"]["correlation_id"].as_str(),
            Some(a.as_str())
        );
    }

    // The untouched bundle verifies.
    let out = verify(&bundle, &vkey);
    assert_eq!(out.status.code(), Some(0), "verify: {}", show(&out));
    assert!(
        stdout(&out).contains("OK: 5 events verified"),
        "{}",
        show(&out)
    );
    // The vkey may also be given as a file.
    let vkey_file = scratch.other("vkey.txt");
    std::fs::write(&vkey_file, format!("{vkey}\n")).unwrap();
    let out = verify(&bundle, vkey_file.to_str().unwrap());
    assert_eq!(
        out.status.code(),
        Some(0),
        "verify with a key file: {}",
        show(&out)
    );

    // An edited value inside one event line.
    let victim = 2;
    let victim_leaf = leaves[victim]["leaf_index"].as_u64().unwrap();
    let edited_line = lines[1 + victim].replace("actor-a-2", "actor-a-9");
    assert_ne!(
        edited_line,
        lines[1 + victim],
        "the actor id is in the line"
    );
    let mut edited: Vec<&str> = lines.clone();
    edited[1 + victim] = &edited_line;
    let edited_path = scratch.other("edited.bundle");
    std::fs::write(&edited_path, edited.join("\n") + "\n").unwrap();
    let out = verify(&edited_path, &vkey);
    assert_eq!(out.status.code(), Some(1), "edited bundle: {}", show(&out));
    assert!(
        stdout(&out).contains(&format!("leaf {victim_leaf}")),
        "does not name leaf {victim_leaf}: {}",
        show(&out)
    );
    assert!(!stdout(&out).contains("OK:"), "{}", show(&out));

    // A deleted event line.
    let gone = 3;
    let gone_leaf = leaves[gone]["leaf_index"].as_u64().unwrap();
    let mut shorter: Vec<&str> = lines.clone();
    shorter.remove(1 + gone);
    let shorter_path = scratch.other("shorter.bundle");
    std::fs::write(&shorter_path, shorter.join("\n") + "\n").unwrap();
    let out = verify(&shorter_path, &vkey);
    assert_eq!(
        out.status.code(),
        Some(1),
        "shortened bundle: {}",
        show(&out)
    );
    let said = stdout(&out);
    assert!(
        said.contains("missing") && said.contains(&format!("leaf {gone_leaf}")),
        "does not name the missing leaf {gone_leaf}: {}",
        show(&out)
    );

    // Another log's key.
    let other = scratch.other("other-data");
    let mut other_server = Server::start(&other);
    other_server.stop();
    let other_key = cli(&["key", "show", "--data-dir", other.to_str().unwrap()]);
    assert!(other_key.status.success(), "{}", show(&other_key));
    let other_vkey = stdout(&other_key).trim().to_string();
    assert_ne!(other_vkey, vkey, "two data directories have two keys");
    let out = verify(&bundle, &other_vkey);
    assert_eq!(out.status.code(), Some(1), "wrong key: {}", show(&out));
    assert!(!stdout(&out).contains("OK:"), "{}", show(&out));

    // Not a key at all: a usage error, not a verdict.
    let out = verify(&bundle, "not-a-key");
    assert_eq!(out.status.code(), Some(2), "garbage key: {}", show(&out));

    // The other operation exports its own seven events.
    let bundle_b = scratch.other("b.bundle");
    let out = cli(&[
        "export",
        "--server",
        &server.url,
        "--correlation-id",
        &b,
        "-o",
        bundle_b.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "export b: {}", show(&out));
    let out = verify(&bundle_b, &vkey);
    assert!(
        stdout(&out).contains("OK: 7 events verified"),
        "{}",
        show(&out)
    );

    server.stop();
}

#[test]
fn query_json_prints_one_event_per_line() {
    let scratch = support::Scratch::new();
    let server = Server::start(&scratch.data());
    let (a, b) = (support::corr("query-a"), support::corr("query-b"));
    let ra = server.ingest(&support::events(4, &a));
    server.ingest(&support::events(3, &b));

    let out = cli(&[
        "query",
        "--server",
        &server.url,
        "-c",
        &a,
        "--json",
        "--asc",
    ]);
    assert!(out.status.success(), "{}", show(&out));
    let text = stdout(&out);
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    assert_eq!(lines.len(), 4, "{text}");
    for (line, r) in lines.iter().zip(&ra) {
        assert_eq!(line["correlation_id"].as_str(), Some(a.as_str()));
        assert_eq!(line["event_id"].as_str(), Some(r.event_id.as_str()));
        assert_eq!(line["seq"].as_u64(), Some(r.seq));
    }

    // --limit is honoured across pages.
    let out = cli(&[
        "query",
        "--server",
        &server.url,
        "-c",
        &b,
        "--json",
        "-l",
        "2",
    ]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(stdout(&out).lines().count(), 2, "{}", show(&out));

    // A server-side rejection is an error exit with the server's detail.
    let out = cli(&[
        "query",
        "--server",
        &server.url,
        "--since",
        "whenever",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("whenever"),
        "{}",
        show(&out)
    );
}
