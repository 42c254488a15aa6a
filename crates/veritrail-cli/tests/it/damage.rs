//! Damage on disk: a torn tail is cut at startup; a flipped byte is found and never served.

use std::io::Write;
use std::time::Instant;

use serde_json::json;

use crate::support::{self, Server, DEADLINE};

/// Asserts that every receipt's event reads back with its seq and leaf hash.
fn assert_all_present(server: &Server, receipts: &[support::Receipt]) {
    for r in receipts {
        let got = server.get(&format!("/v1/events/{}", r.event_id)).ok_json();
        assert_eq!(got["seq"].as_u64(), Some(r.seq), "{}", r.event_id);
        assert_eq!(got["leaf_hash"].as_str(), Some(r.leaf_hash.as_str()));
    }
}

#[track_caller]
fn assert_fsck_clean(data: &std::path::Path) {
    let out = support::fsck(data);
    assert!(out.status.success(), "fsck: {}", support::show(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("OK"),
        "{}",
        support::show(&out)
    );
}

#[test]
fn garbage_after_the_last_record_is_cut_as_a_torn_write() {
    const N: usize = 30;
    let scratch = support::Scratch::new();
    let data = scratch.data();
    let corr = support::corr("torn");
    let mut server = Server::start(&data);
    let receipts = server.ingest(&support::events(N, &corr));
    server.stop();

    // Half a record: a header whose declared length runs past the end of the file, then a few
    // payload bytes, as an interrupted write leaves it.
    let seg = support::newest_segment(&data);
    let before = std::fs::metadata(&seg).expect("segment").len();
    let mut torn = Vec::new();
    torn.extend_from_slice(&1000u32.to_le_bytes()); // payload length
    torn.extend_from_slice(&0xdead_beefu32.to_le_bytes()); // checksum
    torn.push(1); // kind: event
    torn.extend_from_slice(&(N as u64).to_le_bytes()); // seq
    torn.extend_from_slice(b"{\"v\":1,\"");
    assert_eq!(torn.len(), 25);
    std::fs::OpenOptions::new()
        .append(true)
        .open(&seg)
        .and_then(|mut f| f.write_all(&torn))
        .expect("appending the torn record");

    let mut server = Server::start(&data);
    assert_eq!(server.tree_size(), N as u64, "{}", server.stderr());
    assert_all_present(&server, &receipts);
    assert_eq!(server.by_correlation(&corr).len(), N);
    let next = server.ingest(&json!([support::event(N, &corr)]));
    assert_eq!(next[0].seq, N as u64, "the new event continues the log");
    assert_eq!(server.tree_size(), N as u64 + 1);
    server.stop();
    let after = std::fs::metadata(&seg).expect("segment").len();
    assert!(after > before, "the new record follows the intact ones");
    assert_fsck_clean(&data);

    // Zeros where the file system extended the file but the write never landed: also a torn
    // tail, also cut.
    std::fs::OpenOptions::new()
        .append(true)
        .open(&seg)
        .and_then(|mut f| f.write_all(&[0u8; 700]))
        .expect("appending zeros");
    let mut server = Server::start(&data);
    assert_eq!(server.tree_size(), N as u64 + 1, "{}", server.stderr());
    assert_all_present(&server, &receipts);
    assert_all_present(&server, &next);
    let last = server.ingest(&json!([support::event(N + 1, &corr)]));
    assert_eq!(last[0].seq, N as u64 + 1);
    server.stop();
    assert_fsck_clean(&data);
}

/// Waits until the checkpointer's first tick has published a checkpoint of `size` leaves for the
/// default tenant (visible in `/metrics`); with a long interval no other tick follows for an hour.
fn wait_first_checkpoint_tick(server: &Server, size: u64) {
    let want = format!("veritrail_checkpoint_size{{tenant=\"default\"}} {size}");
    let deadline = Instant::now() + DEADLINE;
    loop {
        let m = server.get("/metrics");
        if m.text.lines().any(|l| l.trim() == want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no `{want}` in /metrics:\n{}",
            m.text
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn a_record_cut_in_the_middle_by_a_crash_is_dropped() {
    const N: usize = 25;
    let scratch = support::Scratch::new();
    let data = scratch.data();
    let corr = support::corr("cut");
    // No checkpoint may be signed over the event we are about to tear: a real crash before the
    // fsync would have stopped it from being acknowledged, hence from being checkpointed.
    let slow = ["--checkpoint-interval-ms", "3600000"];
    let mut server = Server::start_with(&data, &slow);
    let receipts = server.ingest(&support::events(N, &corr));
    server.stop();

    let mut server = Server::start_with(&data, &slow);
    wait_first_checkpoint_tick(&server, N as u64);
    let doomed = support::event(N, &corr);
    let doomed_id = doomed["event_id"].as_str().unwrap().to_string();
    let r = server.ingest(&json!([doomed]));
    assert_eq!(r[0].seq, N as u64);
    // The index applies a group just after its acknowledgement; a read waits for that, so the
    // index holds the event (and witnesses it at restart) before the kill.
    server.get(&format!("/v1/events/{doomed_id}")).ok_json();
    server.kill9();

    // Cut the last record in the middle of its payload.
    let seg = support::newest_segment(&data);
    let bytes = std::fs::read(&seg).expect("reading the segment");
    let recs = support::records(&bytes);
    assert_eq!(recs.len(), N + 1, "one record per event");
    let last = recs[N];
    assert!(
        support::find(&bytes[last.payload()], doomed_id.as_bytes()).is_some(),
        "the last record holds the last event"
    );
    let cut = last.offset + support::RECORD_HEADER + last.len / 2;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .and_then(|f| f.set_len(cut as u64))
        .expect("truncating the segment");

    // The record was acknowledged, so its index entry survived the kill: losing it from the log
    // is lost acknowledged data, and startup refuses rather than carry on quietly.
    let (status, stderr) = Server::start_expecting_failure(&data);
    assert!(
        !status.success(),
        "the server started without an acknowledged event: {stderr}"
    );
    assert!(
        stderr.contains(&format!("seq {N}")) && stderr.contains("reindex"),
        "startup does not name the loss and the way out: {stderr}"
    );
    // The operator accepts the loss: the index is rebuilt from what the log holds.
    let out = support::cli(&["reindex", "--data-dir", data.to_str().expect("utf-8 path")]);
    assert!(out.status.success(), "{}", support::show(&out));
    let mut server = Server::start(&data);
    assert_eq!(server.tree_size(), N as u64, "{}", server.stderr());
    assert_all_present(&server, &receipts);
    server.get(&format!("/v1/events/{doomed_id}")).problem(404);
    assert_eq!(server.by_correlation(&corr).len(), N);
    let next = server.ingest(&json!([support::event(N + 1, &corr)]));
    assert_eq!(
        next[0].seq, N as u64,
        "the cut seq is reused by the next event"
    );
    server.stop();
    assert_fsck_clean(&data);
}

#[test]
fn a_flipped_byte_is_reported_by_fsck_and_never_served() {
    const N: usize = 50;
    const TARGET: usize = 23;
    const ACTOR: &str = "flip-target-actor";
    let scratch = support::Scratch::new();
    let data = scratch.data();
    let corr = support::corr("flip");
    let mut server = Server::start(&data);
    let mut batch = support::events(N, &corr);
    batch[TARGET]["actor_id"] = json!(ACTOR);
    let target_id = batch[TARGET]["event_id"].as_str().unwrap().to_string();
    let receipts = server.ingest(&batch);
    let target_seq = receipts[TARGET].seq;
    let neighbour = receipts[TARGET + 1].clone();
    server.stop();
    assert_fsck_clean(&data);

    // Change one character of the target's actor_id inside its stored record.
    let seg = support::newest_segment(&data);
    let mut bytes = std::fs::read(&seg).expect("reading the segment");
    let rec = support::records(&bytes)
        .into_iter()
        .find(|r| support::find(&bytes[r.payload()], target_id.as_bytes()).is_some())
        .expect("the target's record");
    let needle = format!("\"actor_id\":\"{ACTOR}\"");
    let at = support::find(&bytes[rec.payload()], needle.as_bytes())
        .expect("the actor id in the record")
        + rec.payload().start
        + "\"actor_id\":\"".len();
    assert_eq!(bytes[at], b'f');
    bytes[at] = b'g';
    std::fs::write(&seg, &bytes).expect("writing the damaged segment");

    let out = support::fsck(&data);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "fsck must find it: {}",
        support::show(&out)
    );
    assert!(
        text.contains(&target_id) || text.contains(&format!("seq {target_seq}")),
        "fsck does not name the damaged event {target_id} (seq {target_seq}): {}",
        support::show(&out)
    );

    // Startup scans only the unindexed tail, so the server starts, but it must refuse to serve
    // the damaged event.
    let server = Server::start(&data);
    let got = server.get(&format!("/v1/events/{target_id}"));
    assert!(
        (500..600).contains(&got.status),
        "the damaged event was answered with {}: {}",
        got.status,
        got.text
    );
    let p = got.problem(got.status);
    let words = format!("{} {}", p["title"], p["detail"]).to_lowercase();
    assert!(
        ["integrity", "damaged", "checksum"]
            .iter()
            .any(|w| words.contains(w)),
        "the problem does not say the data is damaged: {p}"
    );
    assert!(
        !got.text.contains("flip-target-actor") && !got.text.contains("glip-target-actor"),
        "the problem leaks the damaged content: {}",
        got.text
    );

    // Queries that would include it fail loudly instead of returning it or skipping it.
    for query in [
        format!("/v1/events?correlation_id={corr}&limit=1000"),
        format!("/v1/events?actor_id={ACTOR}"),
        "/v1/events?limit=1000&order=asc".to_string(),
        format!("/v1/correlations/{corr}/timeline"),
        format!("/v1/export?correlation_id={corr}"),
    ] {
        let r = server.get(&query);
        assert!(
            (500..600).contains(&r.status),
            "{query} answered {} instead of failing: {}",
            r.status,
            r.text
        );
        r.problem(r.status);
    }

    // Undamaged events are still served.
    let ok = server
        .get(&format!("/v1/events/{}", neighbour.event_id))
        .ok_json();
    assert_eq!(ok["seq"].as_u64(), Some(neighbour.seq));
    drop(server);
}

#[test]
fn a_corrupt_complete_record_at_the_tail_is_kept_and_never_served() {
    const N: usize = 10;
    let scratch = support::Scratch::new();
    let data = scratch.data();
    let slow = ["--checkpoint-interval-ms", "3600000"];
    let mut server = Server::start_with(&data, &slow);
    let receipts = server.ingest(&support::events(N, "corrupt-tail"));
    // SIGKILL: startup must scan (and check) these records.
    server.kill9();

    let seg = support::newest_segment(&data);
    let mut bytes = std::fs::read(&seg).expect("reading the segment");
    let last = *support::records(&bytes).last().expect("records");
    let id = &receipts[N - 1].event_id;
    let at = support::find(&bytes[last.payload()], id.as_bytes()).expect("the id in the record")
        + last.payload().start;
    // A complete record whose checksum fails is not an interrupted write: never cut it.
    bytes[at] = if bytes[at] == b'0' { b'1' } else { b'0' };
    std::fs::write(&seg, &bytes).expect("writing the damaged segment");

    // The tree knows the event's leaf (written once it was durable), so the log after it is
    // vouched for: the server starts, names the damage, and never serves the event.
    let mut server = Server::start_with(&data, &slow);
    assert!(
        server.stderr().contains("is never served") && server.stderr().contains("fsck"),
        "startup does not name the damage: {}",
        server.stderr()
    );
    assert_eq!(server.tree_size(), N as u64);
    let status = server.get("/v1/correlations/corrupt-tail/timeline").status;
    assert!(
        (500..600).contains(&status),
        "the damaged event was served: {status}"
    );
    server.stop();
    // The damaged record is still there for an operator to inspect.
    let after = std::fs::read(&seg).expect("segment");
    assert_eq!(after[..bytes.len()], bytes[..]);

    let out = support::fsck(&data);
    assert_eq!(out.status.code(), Some(1), "{}", support::show(&out));
    assert!(
        support::show(&out).contains(&format!("seq {}", N - 1)),
        "{}",
        support::show(&out)
    );
}

#[test]
fn losing_checkpointed_events_stops_startup() {
    const N: usize = 10;
    let scratch = support::Scratch::new();
    let data = scratch.data();
    let mut server = Server::start(&data);
    server.ingest(&support::events(N, "lost"));
    // A signed checkpoint now commits to all N events.
    assert_eq!(server.checkpoint().size, N as u64);
    server.kill9();

    // Cutting the last record looks like a torn write, but the checkpoint says it was there.
    let seg = support::newest_segment(&data);
    let bytes = std::fs::read(&seg).expect("reading the segment");
    let last = *support::records(&bytes).last().expect("records");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .and_then(|f| f.set_len((last.offset + support::RECORD_HEADER + 3) as u64))
        .expect("truncating the segment");

    let (status, stderr) = Server::start_expecting_failure(&data);
    assert!(
        !status.success(),
        "the server started without checkpointed events: {stderr}"
    );
    assert!(
        stderr.contains("acknowledged events are missing"),
        "startup does not say acknowledged events are missing: {stderr}"
    );
    // Rebuilding the index does not hide the loss: the signed checkpoint still commits to N.
    let out = support::cli(&["reindex", "--data-dir", data.to_str().expect("utf-8 path")]);
    assert!(out.status.success(), "{}", support::show(&out));
    let (status, stderr) = Server::start_expecting_failure(&data);
    assert!(
        !status.success(),
        "the server started without checkpointed events: {stderr}"
    );
    assert!(
        stderr.contains("checkpoint"),
        "startup does not say the checkpoint is not met: {stderr}"
    );
}

/// The log records every checkpoint it signs, so a checkpoint history that was emptied or
/// deleted is noticed: fsck reports it, serve refuses the store, and only a deliberate reset
/// starts a new history.
#[test]
fn a_removed_checkpoint_history_is_reported_and_refused() {
    let scratch = support::Scratch::new();
    let data = scratch.data();
    let mut server = Server::start(&data);
    server.ingest(&support::events(30, "history"));
    let signed = server.checkpoint();
    assert!(signed.size >= 30);
    // One more group after the checkpoint: its marker is in the log before the stop.
    server.ingest(&support::events(1, "history"));
    server.stop();
    let history = data.join("tenants/default/checkpoints.log");
    for removal in ["emptied", "deleted"] {
        match removal {
            "emptied" => std::fs::write(&history, b"").expect("emptying the history"),
            _ => {
                let _ = std::fs::remove_file(&history);
            }
        }
        let out = support::fsck(&data);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{removal}: {}",
            support::show(&out)
        );
        assert!(
            support::show(&out).contains("checkpoint history was removed"),
            "{removal}: {}",
            support::show(&out)
        );
        let (status, stderr) = Server::start_expecting_failure(&data);
        assert!(!status.success(), "{removal}: started: {stderr}");
        assert!(
            stderr.contains("checkpoint history was removed")
                && stderr.contains("--reset-checkpoint-history"),
            "{removal}: {stderr}"
        );
    }
    // A deliberate reset: the server starts and the next checkpoint begins a new history.
    let mut server = Server::start_with(&data, &["--reset-checkpoint-history"]);
    assert!(server
        .stderr()
        .contains("starting a new checkpoint history"));
    assert!(server.checkpoint().size >= 31);
    server.stop();
    let out = support::fsck(&data);
    assert!(out.status.success(), "{}", support::show(&out));
    let mut server = Server::start(&data);
    assert_eq!(server.tree_size(), 31);
    server.stop();
}
