//! `veritrail bench`: durable ingest throughput and latency, then query latency, against a
//! server it starts itself (temporary data directory) or one given with `--server`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use serde_json::{json, Value};

use crate::client::{Client, ServerArgs};

/// Flags of `bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Server to drive; without it a fresh server is started on a temporary directory.
    #[arg(long)]
    server: Option<String>,
    /// Events to send.
    #[arg(long, default_value_t = 100_000)]
    events: usize,
    /// Concurrent clients.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Events per request.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Distinct correlation ids (operations) the events belong to.
    #[arg(long, default_value_t = 10_000)]
    correlations: usize,
    /// Query requests per query kind.
    #[arg(long, default_value_t = 200)]
    queries: usize,
    /// Print one JSON object instead of a summary.
    #[arg(long)]
    json: bool,
}

/// A server process started for the run, removed afterwards.
struct OwnServer {
    child: Child,
    dir: PathBuf,
    url: String,
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start_server() -> anyhow::Result<OwnServer> {
    let dir = std::env::temp_dir().join(format!("veritrail-bench-{}", std::process::id()));
    let exe = std::env::current_exe().context("locating the veritrail binary")?;
    let mut child = Command::new(exe)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting a server")?;
    let stdout = child.stdout.take().context("server stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let url = line.trim().rsplit(' ').next().unwrap_or("").to_string();
    anyhow::ensure!(
        url.starts_with("http://"),
        "the server did not start: {line}"
    );
    Ok(OwnServer { child, dir, url })
}

/// A small deterministic generator, so runs are comparable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const SERVICES: [(&str, &str); 8] = [
    ("gateway", "gateway.signal.received"),
    ("signalprocessing", "signalprocessing.signal.enriched"),
    ("analysis", "aianalysis.analysis.completed"),
    ("workflow", "workflow.catalog.selected"),
    ("workflowexecution", "workflowexecution.execution.started"),
    ("orchestration", "orchestrator.remediation.completed"),
    ("notification", "notification.message.sent"),
    ("effectiveness", "effectiveness.assessment.completed"),
];

/// A Kubernaut-like event with a 400–700 byte payload.
fn make_event(rng: &mut Rng, correlations: usize, now: chrono::DateTime<chrono::Utc>) -> Value {
    let (category, event_type) = SERVICES[rng.below(SERVICES.len())];
    let corr = format!("rr-{:08}", rng.below(correlations));
    let outcome = ["success", "success", "success", "failure", "pending"][rng.below(5)];
    let severity = ["info", "warning", "critical"][rng.below(3)];
    let filler: String = (0..(150 + rng.below(300)))
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    json!({
        "event_id": uuid::Uuid::now_v7().to_string(),
        "event_type": event_type,
        "event_timestamp": (now - chrono::Duration::milliseconds(rng.below(3_600_000) as i64))
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "event_category": category,
        "event_action": event_type.rsplit('.').next().unwrap_or("done"),
        "event_outcome": outcome,
        "actor_type": "service",
        "actor_id": format!("{category}-service"),
        "resource_type": "RemediationRequest",
        "resource_id": corr.clone(),
        "correlation_id": corr,
        "namespace": format!("team-{}", rng.below(20)),
        "cluster_id": "prod-eu-1",
        "severity": severity,
        "duration_ms": rng.below(5000),
        "event_data": {
            "event_type": event_type,
            "signal": {"name": "KubePodCrashLooping", "fingerprint": format!("{:016x}", rng.next())},
            "target": {"kind": "Deployment", "name": format!("svc-{}", rng.below(500)), "namespace": "payments"},
            "notes": filler,
        }
    })
}

/// Percentile of sorted samples, in milliseconds.
fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

fn dir_bytes(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Sends every batch from `clients` threads; returns per-request latencies and elapsed time.
fn ingest(url: &str, args: &BenchArgs) -> anyhow::Result<(Vec<Duration>, Duration)> {
    let now = chrono::Utc::now();
    let mut batches: Vec<Vec<u8>> = Vec::new();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut left = args.events;
    while left > 0 {
        let n = left.min(args.batch);
        let events: Vec<Value> = (0..n)
            .map(|_| make_event(&mut rng, args.correlations, now))
            .collect();
        batches.push(serde_json::to_vec(&events)?);
        left -= n;
    }
    let started = Instant::now();
    let chunks: Vec<Vec<Vec<u8>>> = (0..args.clients)
        .map(|c| {
            batches
                .iter()
                .skip(c)
                .step_by(args.clients)
                .cloned()
                .collect()
        })
        .collect();
    let handles: Vec<_> = chunks
        .into_iter()
        .map(|mine| {
            let server = ServerArgs {
                server: url.to_string(),
            };
            std::thread::spawn(move || -> anyhow::Result<Vec<Duration>> {
                let client = Client::new(&server)?;
                let mut lat = Vec::with_capacity(mine.len());
                for body in mine {
                    let t = Instant::now();
                    client.post("/v1/events", "application/json", body)?;
                    lat.push(t.elapsed());
                }
                Ok(lat)
            })
        })
        .collect();
    let mut all = Vec::new();
    for h in handles {
        all.extend(
            h.join()
                .map_err(|_| anyhow::anyhow!("a client thread panicked"))??,
        );
    }
    Ok((all, started.elapsed()))
}

fn time_queries(
    client: &Client,
    n: usize,
    mut params: impl FnMut(usize) -> (String, Vec<(String, String)>),
) -> anyhow::Result<Vec<Duration>> {
    let mut lat = Vec::with_capacity(n);
    for i in 0..n {
        let (path, p) = params(i);
        let t = Instant::now();
        let body: Value = client.get(&path, &p)?.json()?;
        lat.push(t.elapsed());
        anyhow::ensure!(body.is_object(), "unexpected reply");
    }
    lat.sort();
    Ok(lat)
}

/// Runs the benchmark.
pub fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        args.clients > 0 && args.batch > 0 && args.events > 0,
        "--events, --clients and --batch must be positive"
    );
    let own = if args.server.is_none() {
        Some(start_server()?)
    } else {
        None
    };
    let url = args
        .server
        .clone()
        .or_else(|| own.as_ref().map(|o| o.url.clone()))
        .unwrap_or_default();
    if !args.json {
        eprintln!(
            "ingesting {} events in batches of {} from {} clients into {url}",
            args.events, args.batch, args.clients
        );
    }
    let (mut lat, elapsed) = ingest(&url, &args)?;
    lat.sort();
    let client = Client::new(&ServerArgs {
        server: url.clone(),
    })?;
    let mut rng = Rng(42);
    let corrs = args.correlations;
    let timeline = time_queries(&client, args.queries, |_| {
        (
            format!("/v1/correlations/rr-{:08}/timeline", rng.below(corrs)),
            Vec::new(),
        )
    })?;
    let window = time_queries(&client, args.queries, |i| {
        let p = vec![
            ("event_type".into(), SERVICES[i % SERVICES.len()].1.into()),
            ("since".into(), "30m".into()),
            ("limit".into(), "100".into()),
        ];
        ("/v1/events".into(), p)
    })?;
    let size = args.events as u64;
    let proofs = time_queries(&client, args.queries, |_| {
        let p = vec![("leaf_index".into(), (rng.next() % size).to_string())];
        ("/v1/proof/inclusion".into(), p)
    })?;
    let bytes = own.as_ref().map(|o| dir_bytes(&o.dir));
    let result = json!({
        "target": "veritrail",
        "events": args.events,
        "clients": args.clients,
        "batch": args.batch,
        "events_per_s": (args.events as f64 / elapsed.as_secs_f64()).round(),
        "p50_ms": pct(&lat, 0.50),
        "p99_ms": pct(&lat, 0.99),
        "max_ms": pct(&lat, 1.0),
        "timeline_p50_ms": pct(&timeline, 0.50),
        "timeline_p99_ms": pct(&timeline, 0.99),
        "filtered_window_p50_ms": pct(&window, 0.50),
        "filtered_window_p99_ms": pct(&window, 0.99),
        "inclusion_proof_p50_ms": pct(&proofs, 0.50),
        "inclusion_proof_p99_ms": pct(&proofs, 0.99),
        "bytes_per_event": bytes.map(|b| b / args.events as u64),
    });
    if args.json {
        println!("{result}");
    } else {
        println!("{}", serde_json::to_string_pretty(&result)?);
    }
    Ok(ExitCode::SUCCESS)
}
