//! A fake checkout service that records audit events through the client, flushes, and prints
//! the client's counts.
//!
//! ```sh
//! veritrail serve &                      # a server on 127.0.0.1:8080
//! cargo run -p veritrail-client --example producer -- http://127.0.0.1:8080 1000 /tmp/checkout-spool
//! ```
//!
//! Arguments, all optional: the server URL, the number of events, a spool directory (without
//! one, the producer id `checkout-example` is used and nothing survives a restart).

use std::process::ExitCode;
use std::time::Duration;

use serde_json::json;
use veritrail_client::{Client, Config};

/// What the fake service does, in turn.
const ACTIONS: [(&str, &str); 4] = [
    ("checkout.cart.created", "created"),
    ("checkout.payment.authorized", "authorized"),
    ("checkout.order.placed", "placed"),
    ("checkout.receipt.sent", "sent"),
];

#[tokio::main]
async fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:8080".into());
    let n: u64 = match args.next().map(|s| s.parse()) {
        None => 1000,
        Some(Ok(n)) => n,
        Some(Err(e)) => {
            eprintln!("error: the event count must be a number: {e}");
            return ExitCode::from(2);
        }
    };
    let mut config = Config::new(url);
    match args.next() {
        // The spool keeps the producer id (a new one is made on first use) and the numbering.
        Some(dir) => config.spool_dir = Some(dir.into()),
        None => config.producer_id = Some("checkout-example".into()),
    }
    let client = match Client::start(config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    println!(
        "producer {} starting at producer_seq {}",
        client.producer_id(),
        client.next_producer_seq()
    );

    for i in 0..n {
        let (event_type, action) = ACTIONS[(i % ACTIONS.len() as u64) as usize];
        let order = i / ACTIONS.len() as u64;
        let event = json!({
            "event_type": event_type,
            "event_category": "checkout",
            "event_action": action,
            "event_outcome": "success",
            "actor_type": "user",
            "actor_id": format!("customer-{}", order % 50),
            "resource_type": "order",
            "resource_id": format!("order-{order}"),
            "correlation_id": format!("checkout-{order}"),
            "event_data": {"amount_cents": 1000 + order % 9000},
        });
        if let Err(e) = client.record(event) {
            // The client counts it too; a real service might fail the request here.
            eprintln!("event {i} not recorded: {e}");
        }
    }

    if let Err(e) = client.flush(Duration::from_secs(10)).await {
        eprintln!("flush: {e}");
    }
    let stats = client.shutdown(Duration::from_secs(5)).await;
    println!("{stats:#?}");
    if stats.dropped.total() > 0 || stats.rejected > 0 {
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}
