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

/// What to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    Veritrail,
    Postgres,
}

/// Flags of `bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Measure only this target; without it both run, one after the other, and the ratios follow.
    #[arg(long, value_enum)]
    target: Option<Target>,
    /// Veritrail server to drive; without it a fresh server is started on a temporary directory.
    #[arg(long)]
    server: Option<String>,
    /// An admin key of `--server`, with which the run creates (and afterwards revokes) a producer
    /// key and an auditor key for the `default` tenant. Without it the run sends no keys (for a
    /// server started with `--insecure-no-auth`, whose reads write no access events).
    #[arg(long = "key", env = "VERITRAIL_KEY", hide_env_values = true)]
    admin_key: Option<String>,
    /// PostgreSQL to write to (libpq URL or key=value string; the `audit_events` table is dropped
    /// and recreated); without it a temporary cluster is started on loopback.
    #[arg(long)]
    postgres: Option<String>,
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
    /// How PostgreSQL is written to: multi-row INSERT from `--clients`, from one client, COPY.
    /// Long runs may keep only the best (usually `insert`).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "insert,insert-one,copy"
    )]
    postgres_methods: Vec<PgPlan>,
    /// Print one JSON object instead of a summary.
    #[arg(long)]
    json: bool,
}

/// One way of writing to PostgreSQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum PgPlan {
    /// Multi-row INSERT transactions from `--clients` clients.
    Insert,
    /// Multi-row INSERT transactions from one client.
    InsertOne,
    /// COPY from one client.
    Copy,
}

/// A server process started for the run, removed afterwards.
struct OwnServer {
    child: Child,
    dir: PathBuf,
    url: String,
    admin_key: String,
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
    let admin_key = format!(
        "vt_bench_{}{}",
        uuid::Uuid::now_v7().simple(),
        uuid::Uuid::now_v7().simple()
    );
    let mut child = Command::new(exe)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&dir)
        .env("RUST_LOG", "warn")
        .env("VERITRAIL_ADMIN_KEY", &admin_key)
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
    Ok(OwnServer {
        child,
        dir,
        url,
        admin_key,
    })
}

/// A producer key and an auditor key for one run, revoked when dropped.
struct RunKeys {
    admin: Client,
    producer: (String, String),
    auditor: (String, String),
}

impl RunKeys {
    fn create(url: &str, admin_key: &str) -> anyhow::Result<RunKeys> {
        let admin = Client::new(&ServerArgs::at(url, Some(admin_key)))?;
        let make = |role: &str| -> anyhow::Result<(String, String)> {
            let body = serde_json::json!({"tenant": "default", "role": role, "name": format!("bench-{role}"), "expires": "1d"});
            let k: Value = admin
                .post(
                    "/v1/admin/keys",
                    "application/json",
                    body.to_string().into_bytes(),
                )
                .context("creating the run's keys (is --key an admin key of --server?)")?
                .json()?;
            let field = |n: &str| k[n].as_str().unwrap_or_default().to_string();
            Ok((field("id"), field("key")))
        };
        let producer = make("producer")?;
        let auditor = make("auditor")?;
        Ok(RunKeys {
            admin,
            producer,
            auditor,
        })
    }
}

impl Drop for RunKeys {
    fn drop(&mut self) {
        for (id, _) in [&self.producer, &self.auditor] {
            let _ = self.admin.delete(&format!("/v1/admin/keys/{id}"));
        }
    }
}

/// A small deterministic generator, so runs are comparable.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Kubernaut's services: category and a typical event type.
pub(crate) const SERVICES: [(&str, &str); 8] = [
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
pub(crate) fn pct(sorted: &[Duration], p: f64) -> f64 {
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

/// The workload: batches generated on demand, batch `i` the same for every target, so that
/// millions of events never sit in memory at once.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Workload {
    pub(crate) events: usize,
    pub(crate) batch: usize,
    pub(crate) correlations: usize,
    now: chrono::DateTime<chrono::Utc>,
}

impl Workload {
    fn new(args: &BenchArgs) -> Workload {
        Workload {
            events: args.events,
            batch: args.batch,
            correlations: args.correlations,
            now: chrono::Utc::now(),
        }
    }

    /// Number of batches.
    pub(crate) fn batches(&self) -> usize {
        self.events.div_ceil(self.batch)
    }

    /// Batch `i`.
    pub(crate) fn batch(&self, i: usize) -> Vec<Value> {
        let n = self.batch.min(self.events - i * self.batch);
        let mut rng =
            Rng(0x9E37_79B9_7F4A_7C15 ^ (i as u64 + 1).wrapping_mul(0x2545_F491_4F6C_DD1D));
        (0..n)
            .map(|_| make_event(&mut rng, self.correlations, self.now))
            .collect()
    }
}

/// Runs `send` for every batch from `clients` threads (batch `i` on thread `i % clients`);
/// returns the sorted latencies of `send` alone and the elapsed time.
pub(crate) fn drive<C>(
    work: Workload,
    clients: usize,
    connect: impl Fn() -> anyhow::Result<C> + Send + Sync + 'static,
    send: impl Fn(&mut C, Vec<Value>) -> anyhow::Result<()> + Send + Sync + 'static,
) -> anyhow::Result<(Vec<Duration>, Duration)> {
    let connect = std::sync::Arc::new(connect);
    let send = std::sync::Arc::new(send);
    let started = Instant::now();
    let handles: Vec<_> = (0..clients)
        .map(|c| {
            let (connect, send) = (connect.clone(), send.clone());
            std::thread::spawn(move || -> anyhow::Result<Vec<Duration>> {
                let mut conn = connect()?;
                let mut lat = Vec::new();
                for i in (c..work.batches()).step_by(clients) {
                    let batch = work.batch(i);
                    let t = Instant::now();
                    send(&mut conn, batch)?;
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
    let elapsed = started.elapsed();
    all.sort();
    Ok((all, elapsed))
}

/// Sends every batch to Veritrail's `POST /v1/events` with the producer `key`.
fn ingest(
    url: &str,
    key: Option<&str>,
    work: Workload,
    clients: usize,
) -> anyhow::Result<(Vec<Duration>, Duration)> {
    let server = ServerArgs::at(url, key);
    drive(
        work,
        clients,
        move || Client::new(&server),
        |client, batch| {
            client.post(
                "/v1/events",
                "application/json",
                serde_json::to_vec(&batch)?,
            )?;
            Ok(())
        },
    )
}

/// Times `n` runs of `query` after `n` unmeasured ones (so that both targets are measured warm,
/// not while caches fill or compaction finishes); returns the sorted latencies.
pub(crate) fn timed(
    n: usize,
    mut query: impl FnMut(usize) -> anyhow::Result<()>,
) -> anyhow::Result<Vec<Duration>> {
    for i in 0..n {
        query(i)?;
    }
    let mut lat = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        query(i)?;
        lat.push(t.elapsed());
    }
    lat.sort();
    Ok(lat)
}

/// What every target reports.
pub(crate) struct Measured {
    pub(crate) work: Workload,
    pub(crate) clients: usize,
    pub(crate) elapsed: Duration,
    /// Sorted per-batch write latencies.
    pub(crate) writes: Vec<Duration>,
    pub(crate) timeline: Vec<Duration>,
    pub(crate) window: Vec<Duration>,
    pub(crate) bytes: Option<u64>,
}

impl Measured {
    /// The result object (`target`, `events`, `events_per_s`, percentiles, `bytes_per_event`).
    pub(crate) fn to_json(&self, target: &str) -> Value {
        let events = self.work.events;
        json!({
            "target": target,
            "events": events,
            "clients": self.clients,
            "batch": self.work.batch,
            "events_per_s": (events as f64 / self.elapsed.as_secs_f64()).round(),
            "p50_ms": pct(&self.writes, 0.50),
            "p99_ms": pct(&self.writes, 0.99),
            "max_ms": pct(&self.writes, 1.0),
            "timeline_p50_ms": pct(&self.timeline, 0.50),
            "timeline_p99_ms": pct(&self.timeline, 0.99),
            "filtered_window_p50_ms": pct(&self.window, 0.50),
            "filtered_window_p99_ms": pct(&self.window, 0.99),
            "bytes_per_event": self.bytes.map(|b| b / events.max(1) as u64),
        })
    }
}

/// Measures Veritrail: ingest, then queries and proofs.
fn run_veritrail(args: &BenchArgs, work: Workload) -> anyhow::Result<Value> {
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
    let admin_key = args
        .admin_key
        .clone()
        .or_else(|| own.as_ref().map(|o| o.admin_key.clone()));
    let keys = admin_key.map(|k| RunKeys::create(&url, &k)).transpose()?;
    let key = |f: fn(&RunKeys) -> &str| keys.as_ref().map(f);
    let (writes, elapsed) = ingest(&url, key(|k| &k.producer.1), work, args.clients)?;
    let client = Client::new(&ServerArgs::at(&url, key(|k| &k.auditor.1)))?;
    // Like the PostgreSQL side, which receives its rows without decoding them, take the whole
    // answer but do not parse it.
    let get = |path: &str, p: &[(String, String)]| -> anyhow::Result<()> {
        let body = client.get(path, p)?.bytes()?;
        anyhow::ensure!(body.first() == Some(&b'{'), "unexpected reply from {path}");
        Ok(())
    };
    let mut rng = Rng(42);
    let timeline = timed(args.queries, |_| {
        get(
            &format!(
                "/v1/correlations/rr-{:08}/timeline",
                rng.below(work.correlations)
            ),
            &[],
        )
    })?;
    let window = timed(args.queries, |i| {
        let p = [
            ("event_type".into(), SERVICES[i % SERVICES.len()].1.into()),
            ("since".into(), "30m".into()),
            ("limit".into(), "100".into()),
        ];
        get("/v1/events", &p)
    })?;
    let size = args.events as u64;
    let proofs = timed(args.queries, |_| {
        get(
            "/v1/proof/inclusion",
            &[("leaf_index".into(), (rng.next() % size).to_string())],
        )
    })?;
    let bytes = own.as_ref().map(|o| dir_bytes(&o.dir));
    let mut result = Measured {
        work,
        clients: args.clients,
        elapsed,
        writes,
        timeline,
        window,
        bytes,
    }
    .to_json("veritrail");
    // Whether each read also wrote (and waited for) its access event.
    result["access_events"] = keys.is_some().into();
    result["inclusion_proof_p50_ms"] = pct(&proofs, 0.50).into();
    result["inclusion_proof_p99_ms"] = pct(&proofs, 0.99).into();
    Ok(result)
}

/// Measures PostgreSQL: multi-row INSERT from `--clients` and from one client, and COPY.
fn run_postgres(args: &BenchArgs, work: Workload) -> anyhow::Result<Vec<Value>> {
    let own = if args.postgres.is_none() {
        Some(crate::bench_pg::start_cluster()?)
    } else {
        None
    };
    let url = args
        .postgres
        .clone()
        .or_else(|| own.as_ref().map(|o| o.url.clone()))
        .unwrap_or_default();
    use crate::bench_pg::Method;
    let mut plans = Vec::new();
    for plan in &args.postgres_methods {
        let p = match plan {
            PgPlan::Insert => (args.clients, Method::Insert),
            PgPlan::InsertOne => (1, Method::Insert),
            PgPlan::Copy => (1, Method::Copy),
        };
        if !plans.contains(&p) {
            plans.push(p);
        }
    }
    plans
        .into_iter()
        .map(|(clients, method)| crate::bench_pg::run(&url, work, clients, method, args.queries))
        .collect()
}

/// Veritrail's advantage on each measure (greater than 1 means Veritrail is better).
fn ratios(v: &Value, pg: &[Value]) -> Value {
    let f = |x: &Value, k: &str| x[k].as_f64().unwrap_or(f64::NAN);
    let best = pg.iter().map(|p| f(p, "events_per_s")).fold(0.0, f64::max);
    let pg0 = pg.first().cloned().unwrap_or(Value::Null);
    json!({
        "ratios": {
            "ingest_vs_best_postgres_method": f(v, "events_per_s") / best,
            "ingest_vs_postgres_insert_same_clients": f(v, "events_per_s") / f(&pg0, "events_per_s"),
            "timeline_p50_speedup": f(&pg0, "timeline_p50_ms") / f(v, "timeline_p50_ms"),
            "filtered_window_p50_speedup": f(&pg0, "filtered_window_p50_ms") / f(v, "filtered_window_p50_ms"),
            "bytes_per_event_postgres_over_veritrail": f(&pg0, "bytes_per_event") / f(v, "bytes_per_event"),
        }
    })
}

/// Runs the benchmark.
pub fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        args.clients > 0 && args.batch > 0 && args.events > 0,
        "--events, --clients and --batch must be positive"
    );
    let work = Workload::new(&args);
    let show = |v: &Value| -> anyhow::Result<()> {
        if args.json {
            outln!("{v}");
        } else {
            outln!("{}", serde_json::to_string_pretty(v)?);
        }
        Ok(())
    };
    if !args.json {
        eprintln!(
            "workload: {} events in batches of {} from {} clients",
            args.events, args.batch, args.clients
        );
    }
    let veritrail = match args.target {
        None | Some(Target::Veritrail) => Some(run_veritrail(&args, work)?),
        Some(Target::Postgres) => None,
    };
    if let Some(v) = &veritrail {
        show(v)?;
    }
    let postgres = match args.target {
        None | Some(Target::Postgres) => run_postgres(&args, work)?,
        Some(Target::Veritrail) => Vec::new(),
    };
    for p in &postgres {
        show(p)?;
    }
    if let (Some(v), false) = (&veritrail, postgres.is_empty()) {
        show(&ratios(v, &postgres))?;
    }
    Ok(ExitCode::SUCCESS)
}
