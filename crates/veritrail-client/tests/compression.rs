//! Compressed batches: the client sends batches of 1 KiB or more with zstd (or gzip), the real
//! server stores them as sent, a spool replay compresses too, and a server that refuses the
//! coding gets the batch again uncompressed.

mod support;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use support::{closed_port, events_of, fast_config, poll_until, read_message, wait_ready};
use support::{Server, DEADLINE};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use veritrail_client::{Client, Compression, Config, COMPRESS_MIN_BYTES};

/// What the proxy saw of one request: its `Content-Encoding` (empty when none) and body length.
#[derive(Debug, Clone)]
struct Seen {
    coding: String,
    body_len: usize,
}

/// A proxy that records each request's coding and forwards it; with `refuse_coded` it answers
/// every request that has a `Content-Encoding` itself, as a server that does not decode bodies
/// would: 400, malformed JSON, no event named.
async fn start_proxy(
    upstream: SocketAddr,
    refuse_coded: bool,
) -> (SocketAddr, Arc<Mutex<Vec<Seen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy bind");
    let addr = listener.local_addr().expect("proxy address");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let Ok(server) = TcpStream::connect(upstream).await else {
                    return;
                };
                let mut client = BufReader::new(client);
                let mut server = BufReader::new(server);
                while let Some(request) = read_message(&mut client).await {
                    let head_end = request
                        .windows(4)
                        .position(|w| w == b"\r\n\r\n")
                        .map_or(request.len(), |p| p + 4);
                    let head = String::from_utf8_lossy(&request[..head_end]).to_ascii_lowercase();
                    let coding = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-encoding:"))
                        .unwrap_or("")
                        .trim()
                        .to_string();
                    if head.starts_with("post ") {
                        log.lock().unwrap_or_else(|e| e.into_inner()).push(Seen {
                            coding: coding.clone(),
                            body_len: request.len() - head_end,
                        });
                    }
                    let reply = if refuse_coded && !coding.is_empty() {
                        let body = r#"{"type":"about:blank","title":"Bad request","status":400,"detail":"malformed JSON: expected value at line 1 column 1"}"#;
                        format!(
                            "HTTP/1.1 400 Bad Request\r\ncontent-type: application/problem+json\r\ncontent-length: {}\r\n\r\n{body}",
                            body.len()
                        )
                        .into_bytes()
                    } else {
                        if server.get_mut().write_all(&request).await.is_err() {
                            return;
                        }
                        let Some(reply) = read_message(&mut server).await else {
                            return;
                        };
                        reply
                    };
                    if client.get_mut().write_all(&reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, seen)
}

fn upstream(server: &Server) -> SocketAddr {
    format!("127.0.0.1:{}", server.port)
        .parse()
        .expect("address")
}

/// An event of more than 1 KiB, so that every batch is compressed.
fn event(i: u64, tag: &str) -> Value {
    let mut e = support::event(i, tag);
    e["event_data"]["note"] =
        Value::String(format!("request {i} of a compression test; ").repeat(24));
    assert!(e.to_string().len() > COMPRESS_MIN_BYTES);
    e
}

fn seen(log: &Mutex<Vec<Seen>>) -> Vec<Seen> {
    log.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Records `n` events through `config`, waits until all are acknowledged; returns their ids.
async fn record_all(config: Config, n: u64, tag: &str) -> HashSet<String> {
    let client = Client::start(config).expect("starting the client");
    let mut ids = HashSet::new();
    for i in 0..n {
        ids.insert(
            client
                .record(event(i, tag))
                .expect("record")
                .event_id
                .to_string(),
        );
    }
    client.flush(DEADLINE).await.expect("flush");
    let stats = client.shutdown(DEADLINE).await;
    assert_eq!(stats.sent, n, "{stats:?}");
    assert_eq!(stats.rejected, 0, "{stats:?}");
    assert_eq!(stats.dropped.total(), 0, "{stats:?}");
    ids
}

async fn stored_ids(url: &str, producer: &str) -> (usize, HashSet<String>) {
    let stored = events_of(url, producer).await;
    let ids = stored
        .iter()
        .filter_map(|e| e["event_id"].as_str().map(str::to_string))
        .collect();
    (stored.len(), ids)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_arrive_compressed_with_each_coding() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&tmp.path().join("data"), None);
    wait_ready(&server.url()).await;
    let (proxy, log) = start_proxy(upstream(&server), false).await;
    for (compression, name) in [
        (Compression::Zstd, "zstd"),
        (Compression::Gzip, "gzip"),
        (Compression::None, ""),
    ] {
        let before = seen(&log).len();
        let producer = format!("compression-{compression:?}");
        let mut config = fast_config(&format!("http://{proxy}"));
        config.producer_id = Some(producer.clone());
        config.compression = compression;
        let ids = record_all(config, 100, &producer).await;
        let (count, stored) = stored_ids(&server.url(), &producer).await;
        assert_eq!(count, 100, "{compression:?}: every event once");
        assert_eq!(stored, ids, "{compression:?}");
        let requests = seen(&log).split_off(before);
        assert!(!requests.is_empty());
        for r in &requests {
            assert_eq!(r.coding, name, "{compression:?}: {requests:?}");
        }
        let biggest = requests.iter().map(|r| r.body_len).max().unwrap_or(0);
        if compression == Compression::None {
            assert!(biggest > 20 * COMPRESS_MIN_BYTES, "{requests:?}");
        } else {
            // 20 events of well over 1 KiB, compressed to a fraction.
            assert!(
                biggest < 4 * COMPRESS_MIN_BYTES,
                "{compression:?}: {requests:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_batches_go_uncompressed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&tmp.path().join("data"), None);
    wait_ready(&server.url()).await;
    let (proxy, log) = start_proxy(upstream(&server), false).await;
    let mut config = fast_config(&format!("http://{proxy}"));
    config.producer_id = Some("compression-small".into());
    let client = Client::start(config).expect("starting the client");
    client.record(support::event(0, "small")).expect("record");
    client.flush(DEADLINE).await.expect("flush");
    client.shutdown(DEADLINE).await;
    let requests = seen(&log);
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert!(requests[0].body_len < COMPRESS_MIN_BYTES, "{requests:?}");
    assert_eq!(requests[0].coding, "", "{requests:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spool_replay_is_compressed_too() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let spool = tmp.path().join("spool");
    // The server is away: every batch goes to the spool, which keeps them uncompressed.
    let mut config = fast_config(&format!("http://127.0.0.1:{}", closed_port()));
    config.spool_dir = Some(spool.clone());
    config.producer_id = Some("compression-spool".into());
    let client = Client::start(config.clone()).expect("starting the client");
    let mut ids = HashSet::new();
    for i in 0..100u64 {
        ids.insert(
            client
                .record(event(i, "spool"))
                .expect("record")
                .event_id
                .to_string(),
        );
    }
    let first = client.shutdown(std::time::Duration::from_secs(2)).await;
    assert_eq!(first.spool_events, 100, "{first:?}");

    let server = Server::start(&tmp.path().join("data"), None);
    wait_ready(&server.url()).await;
    let (proxy, log) = start_proxy(upstream(&server), false).await;
    config.url = format!("http://{proxy}");
    let client = Client::start(config).expect("restarting the client");
    assert!(
        poll_until(DEADLINE, || async { client.stats().spool_events == 0 }).await,
        "the spool was not replayed: {:?}",
        client.stats()
    );
    client.shutdown(DEADLINE).await;
    let (count, stored) = stored_ids(&server.url(), "compression-spool").await;
    assert_eq!(count, 100);
    assert_eq!(stored, ids);
    let requests = seen(&log);
    assert!(!requests.is_empty());
    assert!(
        requests.iter().all(|r| r.coding == "zstd"),
        "replayed batches are compressed: {requests:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_refuses_the_coding_gets_plain_batches() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&tmp.path().join("data"), None);
    wait_ready(&server.url()).await;
    let (proxy, log) = start_proxy(upstream(&server), true).await;
    let mut config = fast_config(&format!("http://{proxy}"));
    config.producer_id = Some("compression-refused".into());
    let ids = record_all(config, 100, "refused").await;
    let (count, stored) = stored_ids(&server.url(), "compression-refused").await;
    assert_eq!(count, 100, "nothing lost, nothing twice");
    assert_eq!(stored, ids);
    let requests = seen(&log);
    let coded = requests.iter().filter(|r| !r.coding.is_empty()).count();
    assert_eq!(
        coded, 1,
        "one refusal turns compression off for good: {requests:?}"
    );
    assert_eq!(requests[0].coding, "zstd", "{requests:?}");
    assert!(
        requests[1..].iter().all(|r| r.coding.is_empty()),
        "{requests:?}"
    );
}
