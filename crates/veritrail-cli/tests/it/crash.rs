//! The acceptance test: SIGKILL under concurrent load loses no acknowledged event.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use veritrail_core::merkle::verify_inclusion;

use crate::support::{self, Receipt, Server, DEADLINE};

const CLIENTS: usize = 4;
const BATCH: usize = 20;
/// The server is killed once this many events are acknowledged.
const KILL_AFTER: usize = 2000;

/// What one client saw.
#[derive(Default)]
struct ClientLog {
    /// Acknowledged receipts with the event each acknowledges.
    acked: Vec<(Receipt, Value)>,
    /// Answers that are neither 200 nor a dropped connection (none are expected).
    unexpected: Vec<String>,
}

fn client(url: String, corr: String, acked_count: Arc<AtomicUsize>) -> ClientLog {
    let http = support::http_client();
    let mut log = ClientLog::default();
    let mut i = 0;
    loop {
        let batch: Vec<Value> = (0..BATCH).map(|k| support::event(i + k, &corr)).collect();
        i += BATCH;
        let sent = http
            .post(format!("{url}/v1/events"))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(serde_json::to_vec(&batch).expect("json"))
            .send();
        // A connection error, or a reply cut off mid-body, is "not acknowledged": the server
        // is gone, so the client stops.
        let Ok(resp) = sent else { return log };
        let status = resp.status().as_u16();
        let Ok(text) = resp.text() else { return log };
        if status != 200 {
            log.unexpected.push(format!("{status}: {text}"));
            return log;
        }
        let Ok(body) = serde_json::from_str::<Value>(&text) else {
            log.unexpected
                .push(format!("200 with a body that is not JSON: {text}"));
            return log;
        };
        let receipts = support::receipts(&body);
        assert_eq!(receipts.len(), BATCH, "one receipt per event: {body}");
        for (r, e) in receipts.into_iter().zip(batch) {
            assert_eq!(r.event_id, e["event_id"].as_str().unwrap(), "receipt order");
            log.acked.push((r, e));
        }
        acked_count.fetch_add(BATCH, Ordering::SeqCst);
    }
}

#[test]
fn sigkill_under_load_loses_no_acknowledged_event() {
    let scratch = support::Scratch::new();
    let data = scratch.data();
    let mut server = Server::start(&data);
    let corr = support::corr("crash");
    let acked_count = Arc::new(AtomicUsize::new(0));

    let handles: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (url, corr, count) = (server.url.clone(), corr.clone(), acked_count.clone());
            std::thread::spawn(move || client(url, corr, count))
        })
        .collect();

    // Let the clients get well into their work, then pull the plug while they are sending.
    let deadline = Instant::now() + DEADLINE;
    while acked_count.load(Ordering::SeqCst) < KILL_AFTER {
        let finished = handles.iter().filter(|h| h.is_finished()).count();
        assert!(
            finished == 0,
            "a client stopped before the kill; server stderr:\n{}",
            server.stderr()
        );
        assert!(
            Instant::now() < deadline,
            "only {} events acknowledged before the deadline",
            acked_count.load(Ordering::SeqCst)
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let still_sending = handles.iter().filter(|h| !h.is_finished()).count();
    server.kill9();
    assert_eq!(
        still_sending, CLIENTS,
        "every client was still sending at the kill"
    );

    let logs: Vec<ClientLog> = handles
        .into_iter()
        .map(|h| h.join().expect("client thread panicked"))
        .collect();
    let unexpected: Vec<&String> = logs.iter().flat_map(|l| &l.unexpected).collect();
    assert!(unexpected.is_empty(), "unexpected answers: {unexpected:?}");
    let acked: Vec<&(Receipt, Value)> = logs.iter().flat_map(|l| &l.acked).collect();
    assert!(acked.len() >= KILL_AFTER, "{} acked", acked.len());

    // Receipts themselves: unique sequence numbers and ids.
    let seqs: HashSet<u64> = acked.iter().map(|(r, _)| r.seq).collect();
    assert_eq!(
        seqs.len(),
        acked.len(),
        "two acknowledged events share a seq"
    );
    let ids: HashSet<&str> = acked.iter().map(|(r, _)| r.event_id.as_str()).collect();
    assert_eq!(ids.len(), acked.len(), "an event id was acknowledged twice");

    // Before the restart, fsck says the store needs the recovery a start does, not that it is
    // damaged; after the restart (below) it is clean.
    let out = support::fsck(&data);
    assert_eq!(out.status.code(), Some(3), "{}", support::show(&out));
    let text = support::show(&out);
    assert!(
        text.contains("NEEDS RECOVERY") && text.contains("starting it recovers the store"),
        "{text}"
    );
    assert!(!text.contains("DAMAGE"), "{text}");

    // Restart on the same directory: recovery must bring back every acknowledged event.
    let mut server = Server::start(&data);
    let vkey = server.vkey();
    let size = server.tree_size();
    eprintln!(
        "crash: {} events acknowledged before SIGKILL, {size} in the log after recovery",
        acked.len()
    );
    let max_seq = *seqs.iter().max().expect("some seqs");
    assert!(
        size > max_seq,
        "after restart the tree has {size} leaves but seq {max_seq} was acknowledged"
    );

    for (r, sent) in &acked {
        let got = server.get(&format!("/v1/events/{}", r.event_id));
        assert_eq!(
            got.status, 200,
            "acknowledged event {} (seq {}) is gone after the crash: {}",
            r.event_id, r.seq, got.text
        );
        let got = got.json();
        assert_eq!(got["seq"].as_u64(), Some(r.seq), "seq of {}", r.event_id);
        assert_eq!(
            got["leaf_hash"].as_str(),
            Some(r.leaf_hash.as_str()),
            "leaf hash of {}",
            r.event_id
        );
        for field in ["event_type", "actor_id", "correlation_id", "event_data"] {
            assert_eq!(got[field], sent[field], "{field} of {}", r.event_id);
        }

        let proof = server
            .get(&format!("/v1/proof/inclusion?event_id={}", r.event_id))
            .ok_json();
        let note = proof["checkpoint"].as_str().expect("a checkpoint note");
        let cp = support::open_note(note, &vkey);
        assert_eq!(proof["leaf_index"].as_u64(), Some(r.seq));
        assert_eq!(proof["tree_size"].as_u64(), Some(cp.size));
        assert_eq!(proof["leaf_hash"].as_str(), Some(r.leaf_hash.as_str()));
        let path: Vec<_> = proof["proof"]
            .as_array()
            .expect("proof array")
            .iter()
            .map(|h| support::hash(h.as_str().expect("base64 string")))
            .collect();
        verify_inclusion(
            r.seq,
            cp.size,
            &support::hash(&r.leaf_hash),
            &path,
            &cp.root,
        )
        .unwrap_or_else(|e| panic!("inclusion proof of seq {} fails: {e:?}", r.seq));
    }

    // The correlation query finds every acknowledged event, each once, with its receipt's seq.
    let found = server.by_correlation(&corr);
    let mut found_seq: HashMap<String, u64> = HashMap::new();
    for e in &found {
        let id = e["event_id"].as_str().expect("event_id").to_string();
        let seq = e["seq"].as_u64().expect("seq");
        assert!(
            found_seq.insert(id.clone(), seq).is_none(),
            "{id} returned twice"
        );
    }
    for (r, _) in &acked {
        assert_eq!(
            found_seq.get(&r.event_id),
            Some(&r.seq),
            "acknowledged event {} missing from the correlation query",
            r.event_id
        );
    }
    let found_seqs: HashSet<u64> = found_seq.values().copied().collect();
    assert_eq!(found_seqs.len(), found.len(), "query results share a seq");

    // Event ids stay idempotency keys across the crash: re-sending an acknowledged batch
    // returns the original receipts and appends nothing.
    let first_batch = &logs[0].acked[..BATCH];
    let resent: Vec<Value> = first_batch.iter().map(|(_, e)| e.clone()).collect();
    let reply = server.post(&Value::Array(resent)).ok_json();
    let again = support::receipts(&reply);
    let original: Vec<Receipt> = first_batch.iter().map(|(r, _)| r.clone()).collect();
    assert_eq!(again, original, "re-sent batch after recovery");
    assert_eq!(
        reply["tree_size"].as_u64(),
        Some(size),
        "a re-sent batch grew the tree"
    );

    // The restarted log still accepts writes, after the recovered ones.
    let more = server.ingest(&support::events(3, &corr));
    assert!(
        more.iter().all(|r| r.seq >= size),
        "{more:?} reuses a seq below {size}"
    );

    server.stop();
    let out = support::fsck(&data);
    assert!(
        out.status.success(),
        "fsck after the crash: {}",
        support::show(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("OK"),
        "{}",
        support::show(&out)
    );
}
