//! The CLI round trip: export a correlation's events, verify the bundle offline, and see every
//! kind of tampering (and the wrong key) rejected.

use serde_json::{json, Value};
use veritrail_core::checkpoint::open_checkpoint;
use veritrail_core::note::NoteVerifier;

use crate::support::{self, cli, show, Server};

/// The first admin key of the servers that check keys.
const ADMIN: &str = "vt_test_admin_signing_identity_0123456789abcdefghij";

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

/// The public key part of a vkey (`name+keyid+key`).
fn public_part(vkey: &str) -> &str {
    vkey.rsplit('+').next().unwrap_or_default()
}

/// True when the checkpoint note opens with exactly this vkey.
fn opens_with(note: &str, vkey: &str) -> bool {
    let verifier = NoteVerifier::from_vkey(vkey).expect("a valid vkey");
    open_checkpoint(note, &[verifier]).is_ok()
}

#[test]
fn each_tenant_signs_under_its_origin_and_is_served_its_own_key() {
    let scratch = support::Scratch::new();
    let data = scratch.data();
    let mut server = Server::start_authenticated(&data, ADMIN);
    let (_, producer) = server.create_key(ADMIN, Some("acme"), "producer", json!({}));
    let (_, acme) = server.create_key(ADMIN, Some("acme"), "auditor", json!({}));
    let (_, beta) = server.create_key(ADMIN, Some("beta"), "auditor", json!({}));
    let corr = support::corr("signing-identity");
    let posted = server.call(
        reqwest::Method::POST,
        "/v1/events",
        Some(&producer),
        None,
        Some(&support::events(3, &corr)),
    );
    posted.ok_json();

    // Each tenant is served the key named after its own origin: one secret, two names.
    let acme_vkey = server.get_as(&acme, "/v1/key").text.trim().to_string();
    let beta_vkey = server.get_as(&beta, "/v1/key").text.trim().to_string();
    assert!(acme_vkey.starts_with("veritrail/acme+"), "{acme_vkey}");
    assert!(beta_vkey.starts_with("veritrail/beta+"), "{beta_vkey}");
    assert_eq!(public_part(&acme_vkey), public_part(&beta_vkey));
    assert_ne!(acme_vkey, beta_vkey, "another name is another key ID");
    let named = server.call(
        reqwest::Method::GET,
        "/v1/key",
        Some(ADMIN),
        Some("acme"),
        None,
    );
    assert_eq!(
        named.text.trim(),
        acme_vkey,
        "a cross-tenant admin names the tenant"
    );

    // acme's checkpoint is signed under `veritrail/acme`: its key checks it, beta's does not.
    let note = server.get_as(&acme, "/v1/checkpoint").text;
    assert!(note.contains("\n\u{2014} veritrail/acme "), "{note}");
    let cp = support::open_note(&note, &acme_vkey);
    assert_eq!(cp.origin, "veritrail/acme");
    assert!(cp.size >= 3, "{note}");
    assert!(
        !opens_with(&note, &beta_vkey),
        "beta's key checks acme's checkpoint"
    );
    let legacy = stdout(&cli(&[
        "key",
        "show",
        "--legacy",
        "--data-dir",
        data.to_str().unwrap(),
    ]));
    assert!(legacy.starts_with("veritrail+"), "{legacy}");
    assert!(
        !opens_with(&note, legacy.trim()),
        "the key file's own name checks it"
    );

    // acme's bundle verifies offline with acme's key only.
    let bundle = scratch.other("acme.bundle");
    let out = cli(&[
        "export",
        "--server",
        &server.url,
        "--key",
        &acme,
        "-c",
        &corr,
        "-o",
        bundle.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "export: {}", show(&out));
    let out = verify(&bundle, &acme_vkey);
    assert_eq!(out.status.code(), Some(0), "verify: {}", show(&out));
    assert!(
        stdout(&out).contains("of veritrail/acme at tree size")
            && stdout(&out).contains("signed by veritrail/acme"),
        "{}",
        show(&out)
    );
    let out = verify(&bundle, &beta_vkey);
    assert_eq!(out.status.code(), Some(1), "beta's key: {}", show(&out));
    assert!(
        stdout(&out).contains("not signed by this key"),
        "{}",
        show(&out)
    );

    // `key show` names the same keys without the server.
    let dir = data.to_str().unwrap();
    let shown = stdout(&cli(&[
        "key",
        "show",
        "--data-dir",
        dir,
        "--tenant",
        "acme",
    ]));
    assert_eq!(shown.trim(), acme_vkey);
    let shown = stdout(&cli(&[
        "key",
        "show",
        "--data-dir",
        dir,
        "--tenant",
        "beta",
    ]));
    assert_eq!(shown.trim(), beta_vkey);
    let default = stdout(&cli(&["key", "show", "--data-dir", dir]));
    assert!(default.starts_with("veritrail/default+"), "{default}");
    let all = stdout(&cli(&["key", "show", "--data-dir", dir, "--all"]));
    assert!(all.lines().any(|l| l == acme_vkey), "{all}");
    assert!(all.lines().all(|l| l.starts_with("veritrail/")), "{all}");
    let prefixed = stdout(&cli(&[
        "key",
        "show",
        "--data-dir",
        dir,
        "--tenant",
        "acme",
        "--origin-prefix",
        "audit.example",
    ]));
    assert!(prefixed.starts_with("audit.example/acme+"), "{prefixed}");
    let out = cli(&["key", "show", "--data-dir", dir, "--tenant", "Not A Tenant"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    server.stop();
}

#[test]
fn a_history_of_an_older_version_opens_and_is_signed_on_under_the_origin() {
    let scratch = support::Scratch::new();
    let data = scratch.data();
    let mut server = Server::start(&data);
    let corr = support::corr("older-version");
    server.ingest(&support::events(3, &corr));
    let cp = server.checkpoint();
    assert_eq!(cp.size, 3);
    server.stop();

    // Leave the history as an older version wrote it: its checkpoints signed under the name
    // stored in the key file, the origin prefix.
    let key = veritrail_store::keys::load_signer(&data).expect("the signing key");
    let history = data.join("tenants/default/checkpoints.log");
    std::fs::remove_file(&history).expect("removing the history");
    let old = veritrail_store::SignedCheckpoint::sign(cp.clone(), &key).expect("signed");
    veritrail_store::embedded::formats::Checkpoints::open(&history, &key.verifier())
        .expect("a new history")
        .record(&old)
        .expect("recorded");
    assert!(old.note.contains("\n\u{2014} veritrail "), "{}", old.note);
    let out = support::fsck(&data);
    assert!(
        out.status.success(),
        "fsck of the older history: {}",
        show(&out)
    );
    let legacy = stdout(&cli(&[
        "key",
        "show",
        "--legacy",
        "--data-dir",
        data.to_str().unwrap(),
    ]));
    let legacy = legacy.trim().to_string();
    assert_eq!(legacy, key.vkey());
    assert!(opens_with(&old.note, &legacy));

    // The server opens it and signs the same tree again, under the origin's name only.
    let mut server = Server::start(&data);
    let vkey = server.vkey();
    assert!(vkey.starts_with("veritrail/default+"), "{vkey}");
    let note = server.get("/v1/checkpoint").text;
    assert_eq!(note.matches('\u{2014}').count(), 1, "one signature: {note}");
    assert_eq!(support::open_note(&note, &vkey), cp, "the same tree");
    assert!(!opens_with(&note, &legacy));
    assert!(
        !opens_with(&old.note, &vkey),
        "another name, another key ID"
    );

    // Its bundles verify with the tenant's key; the older key does not name their signatures.
    let bundle = scratch.other("after.bundle");
    let out = cli(&[
        "export",
        "--server",
        &server.url,
        "-c",
        &corr,
        "-o",
        bundle.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "export: {}", show(&out));
    let out = verify(&bundle, &vkey);
    assert!(
        stdout(&out).contains("OK: 3 events verified"),
        "{}",
        show(&out)
    );
    let out = verify(&bundle, &legacy);
    assert_eq!(out.status.code(), Some(1), "older key: {}", show(&out));
    server.stop();
    let out = support::fsck(&data);
    assert!(
        out.status.success(),
        "fsck after the upgrade: {}",
        show(&out)
    );
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
