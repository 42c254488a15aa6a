//! A data directory written by the previous layout (commit ad08424: appended segments only, a
//! fjall index, checkpoints signed under the key name `veritrail`; made by
//! `tests/fixtures/make-old-data-dir.sh` with that version's binary) converts with
//! `veritrail migrate`, and afterwards yields the same tree, leaf hashes and signed checkpoint.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

use crate::support::{self, Server};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

#[test]
fn a_data_dir_of_the_previous_layout_migrates_to_the_same_tree() {
    let scratch = support::Scratch::new();
    let data = scratch.data();
    let status = Command::new("tar")
        .arg("-xzf")
        .arg(fixtures().join("data-dir-ad08424.tar.gz"))
        .arg("-C")
        .arg(scratch.tmp.path())
        .status()
        .expect("running tar");
    assert!(status.success());
    let expected: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("data-dir-ad08424.json")).expect("expected"),
    )
    .expect("json");
    let log = data.join("tenants/default/log");
    assert!(
        data.join("tenants/default/index/kv").is_dir(),
        "the old index is there"
    );

    let data_arg = data.to_str().expect("utf-8");
    let out = support::cli(&["migrate", "--data-dir", data_arg]);
    assert!(out.status.success(), "{}", support::show(&out));
    let text = support::show(&out);
    let root = expected["root"].as_str().expect("root");
    assert!(text.contains("converted") && text.contains(root), "{text}");
    // Every full segment is sealed, with its index file; the old index is gone.
    let names: Vec<String> = std::fs::read_dir(&log)
        .expect("log dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    let sealed = names.iter().filter(|n| n.ends_with(".zseg")).count();
    let appended = names.iter().filter(|n| n.ends_with(".seg")).count();
    assert!(sealed >= 2 && appended == 1, "{names:?}");
    assert!(!data.join("tenants/default/index/kv").exists());

    let mut server = Server::start(&data);
    assert_eq!(
        server.tree_size(),
        expected["tree_size"].as_u64().expect("size")
    );
    for r in expected["events"].as_array().expect("events") {
        let id = r["event_id"].as_str().expect("id");
        let got = server.get(&format!("/v1/events/{id}")).ok_json();
        assert_eq!(got["leaf_hash"], r["leaf_hash"], "{id}");
        assert_eq!(got["seq"], r["seq"], "{id}");
    }
    // The old checkpoint still opens with the old key and commits to this very tree; the server
    // signs the same tree under the tenant's origin.
    let old = support::open_note(
        expected["checkpoint_note"].as_str().expect("note"),
        expected["vkey"].as_str().expect("vkey"),
    );
    let fresh = server.checkpoint();
    assert_eq!((fresh.size, fresh.root), (old.size, old.root));
    server.stop();
    let out = support::fsck(&data);
    assert!(out.status.success(), "{}", support::show(&out));
}
