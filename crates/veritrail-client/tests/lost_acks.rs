//! Replies lost after the server committed: the client retries and the server's idempotency
//! keeps each event once.

mod support;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use support::{events_of, fast_config, read_message, wait_ready, Server, DEADLINE};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use veritrail_client::Client;

/// A proxy that forwards each request and, for the first `cut` of them, reads the server's
/// whole reply and then closes the client's connection without passing it on.
async fn start_proxy(upstream: SocketAddr, cut: usize) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy bind");
    let addr = listener.local_addr().expect("proxy address");
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let Ok(server) = TcpStream::connect(upstream).await else {
                    return;
                };
                let mut client = BufReader::new(client);
                let mut server = BufReader::new(server);
                while let Some(request) = read_message(&mut client).await {
                    if server.get_mut().write_all(&request).await.is_err() {
                        return;
                    }
                    let Some(reply) = read_message(&mut server).await else {
                        return;
                    };
                    if counter.fetch_add(1, Ordering::SeqCst) < cut {
                        // The server has committed; the client never hears of it.
                        return;
                    }
                    if client.get_mut().write_all(&reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_acknowledgements_do_not_duplicate() {
    const CUT: usize = 3;
    let tmp = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&tmp.path().join("data"), None);
    wait_ready(&server.url()).await;
    let upstream: SocketAddr = format!("127.0.0.1:{}", server.port)
        .parse()
        .expect("address");
    let (proxy, requests) = start_proxy(upstream, CUT).await;

    let mut config = fast_config(&format!("http://{proxy}"));
    config.producer_id = Some("lost-acks".into());
    // More consecutive failures than are cut, so nothing needs a spool.
    config.retry.spool_after_failures = 10;
    let client = Client::start(config).expect("starting the client");
    let mut ids = HashSet::new();
    for i in 0..100u64 {
        let r = client
            .record(support::event(i, "lost-acks"))
            .expect("record");
        ids.insert(r.event_id.to_string());
    }
    client.flush(DEADLINE).await.expect("flush");
    let stats = client.shutdown(DEADLINE).await;

    assert!(
        requests.load(Ordering::SeqCst) > CUT,
        "replies were cut, then requests got through"
    );
    assert!(stats.retried >= CUT as u64, "{stats:?}");
    assert_eq!(stats.sent, 100, "{stats:?}");
    assert_eq!(stats.dropped.total(), 0, "{stats:?}");
    let stored = events_of(&server.url(), "lost-acks").await;
    let stored_ids: HashSet<String> = stored
        .iter()
        .filter_map(|e| e["event_id"].as_str().map(str::to_string))
        .collect();
    assert_eq!(stored.len(), 100, "no duplicates and nothing missing");
    assert_eq!(stored_ids, ids);
}
