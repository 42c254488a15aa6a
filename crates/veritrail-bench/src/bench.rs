//! Durable ingest throughput, latency and CPU per event, then query latency, against a Veritrail
//! server (one it starts from the `veritrail` binary on a temporary data directory, or one given
//! with `--server`) and against PostgreSQL (`bench_pg`).
//!
//! Every request body is encoded before the timed phase, so that the timed loop only sends bytes
//! and the load generator's own CPU time stays small beside the server's. Both are reported.

use std::io::{BufRead, BufReader};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use clap::Parser;
use serde_json::{json, Value};

use crate::client::Client;
use crate::cpu::Reading;

/// What to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    Veritrail,
    Postgres,
}

/// Veritrail's load generator: the same Kubernaut-like workload against a Veritrail server and
/// against PostgreSQL with Kubernaut's `audit_events` schema, in one run, with ratios.
#[derive(Debug, Parser)]
#[command(name = "veritrail-bench", version)]
pub struct BenchArgs {
    /// Measure only this target; without it both run, one after the other, and the ratios follow.
    #[arg(long, value_enum)]
    target: Option<Target>,
    /// Veritrail server to drive; without it a fresh server is started on a temporary directory.
    #[arg(long)]
    server: Option<String>,
    /// Process id of `--server` on this machine, so that its CPU time is reported; without it
    /// `server_cpu_us_per_event` is null for a server the run did not start.
    #[arg(long, requires = "server")]
    server_pid: Option<u32>,
    /// An admin key of `--server`, with which the run creates (and afterwards revokes) a producer
    /// key and an auditor key for the `default` tenant. Without it the run sends no keys (for a
    /// server started with `--insecure-no-auth`, whose reads write no access events).
    #[arg(long = "key", env = "VERITRAIL_KEY", hide_env_values = true)]
    admin_key: Option<String>,
    /// The `veritrail` binary to start a server from when no `--server` is given [default: the
    /// `veritrail` beside this executable].
    #[arg(long, value_name = "PATH")]
    veritrail_bin: Option<PathBuf>,
    /// PostgreSQL to write to (libpq URL or key=value string; the `audit_events` table is dropped
    /// and recreated); without it a temporary cluster is started on loopback.
    #[arg(long)]
    postgres: Option<String>,
    /// Process id of the postmaster of `--postgres` on this machine, so that its CPU time (with
    /// every process below it) is reported; without it `server_cpu_us_per_event` is null for a
    /// cluster the run did not start.
    #[arg(long, requires = "postgres")]
    postgres_pid: Option<u32>,
    /// Events to send.
    #[arg(long, default_value_t = 100_000)]
    events: usize,
    /// Concurrent clients.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Events per request.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Distinct correlation ids (operations) the events belong to. By default one per
    /// `EVENTS_PER_CORRELATION` (100) events, so that a timeline holds about 100 events at every
    /// run length, as an operation's events do in production however long the log.
    #[arg(long)]
    correlations: Option<usize>,
    /// Query requests per query kind.
    #[arg(long, default_value_t = 200)]
    queries: usize,
    /// At most this many events are generated and encoded before the timed phase (about 1 KB of
    /// memory each); a longer run sends the same batches again, in a cycle.
    #[arg(long, default_value_t = 1_000_000)]
    pool_events: usize,
    /// How PostgreSQL is written to: multi-row INSERT from `--clients`, from one client, COPY.
    /// Long runs may keep only the best (usually `insert`).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "insert,insert-one,copy"
    )]
    postgres_methods: Vec<PgPlan>,
    /// Print one JSON object per line instead of a summary.
    #[arg(long)]
    json: bool,
}

/// One way of writing to PostgreSQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PgPlan {
    /// Multi-row INSERT transactions from `--clients` clients.
    Insert,
    /// Multi-row INSERT transactions from one client.
    InsertOne,
    /// COPY from one client.
    Copy,
}

/// The `veritrail` binary: `--veritrail-bin`, or the one beside this executable (in a cargo
/// target directory both sit in `target/<profile>/`; test executables sit one level deeper, in
/// `target/<profile>/deps/`).
fn veritrail_bin(args: &BenchArgs) -> anyhow::Result<PathBuf> {
    const BUILD: &str = "build it with `cargo build --release -p veritrail-cli`";
    if let Some(path) = &args.veritrail_bin {
        anyhow::ensure!(
            path.is_file(),
            "--veritrail-bin {}: no such file ({BUILD})",
            path.display()
        );
        return Ok(path.clone());
    }
    let exe = std::env::current_exe().context("locating this executable")?;
    let name = format!("veritrail{}", std::env::consts::EXE_SUFFIX);
    let dir = exe
        .parent()
        .context("locating this executable's directory")?;
    let mut candidates = vec![dir.join(&name)];
    if let Some(up) = dir.parent().filter(|_| dir.ends_with("deps")) {
        candidates.push(up.join(&name));
    }
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .with_context(|| {
            format!(
                "no `veritrail` binary at {} to start a server from: {BUILD}, or give \
             --veritrail-bin PATH or --server URL",
                candidates[0].display()
            )
        })
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

fn start_server(exe: &Path) -> anyhow::Result<OwnServer> {
    let dir = std::env::temp_dir().join(format!("veritrail-bench-{}", std::process::id()));
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
        .with_context(|| format!("starting a server with {}", exe.display()))?;
    let stdout = child.stdout.take().context("server stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let url = line.trim().rsplit(' ').next().unwrap_or("").to_string();
    let server = OwnServer {
        child,
        dir,
        url,
        admin_key,
    };
    anyhow::ensure!(
        server.url.starts_with("http://"),
        "the server did not start: {line}"
    );
    Ok(server)
}

/// Producer keys (one per [`CLIENTS_PER_KEY`] clients: the server admits at most 16 requests
/// of one key at once) and an auditor key for one run, revoked when dropped.
struct RunKeys {
    admin: Client,
    producers: Vec<(String, String)>,
    auditor: (String, String),
}

/// Clients that share one producer key.
const CLIENTS_PER_KEY: usize = 16;

impl RunKeys {
    fn create(url: &str, admin_key: &str, clients: usize) -> anyhow::Result<RunKeys> {
        let admin = Client::new(url, Some(admin_key))?;
        let make = |role: &str| -> anyhow::Result<(String, String)> {
            let body = json!({"tenant": "default", "role": role, "name": format!("bench-{role}"), "expires": "1d"});
            let k: Value = admin
                .post_json("/v1/admin/keys", body.to_string())
                .context("creating the run's keys (is --key an admin key of --server?)")?
                .json()?;
            let field = |n: &str| k[n].as_str().unwrap_or_default().to_string();
            Ok((field("id"), field("key")))
        };
        let producers = (0..clients.div_ceil(CLIENTS_PER_KEY).max(1))
            .map(|_| make("producer"))
            .collect::<anyhow::Result<_>>()?;
        let auditor = make("auditor")?;
        Ok(RunKeys {
            admin,
            producers,
            auditor,
        })
    }
}

impl Drop for RunKeys {
    fn drop(&mut self) {
        for (id, _) in self.producers.iter().chain([&self.auditor]) {
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

/// One generated event: its JSON (without `event_id`: each receiver assigns one) and its time.
pub(crate) struct Event {
    pub(crate) json: Value,
    pub(crate) time: DateTime<Utc>,
}

/// A Kubernaut-like event with a 400–700 byte payload.
fn make_event(rng: &mut Rng, correlations: usize, now: DateTime<Utc>) -> Event {
    let (category, event_type) = SERVICES[rng.below(SERVICES.len())];
    let corr = format!("rr-{:08}", rng.below(correlations));
    let outcome = ["success", "success", "success", "failure", "pending"][rng.below(5)];
    let severity = ["info", "warning", "critical"][rng.below(3)];
    let filler: String = (0..(150 + rng.below(300)))
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    let time = now - chrono::Duration::milliseconds(rng.below(3_600_000) as i64);
    let json = json!({
        "event_type": event_type,
        "event_timestamp": time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
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
    });
    Event { json, time }
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

/// Events per correlation id when `--correlations` is not given.
const EVENTS_PER_CORRELATION: usize = 100;

/// The workload: batch `i` is the same for every target. Batches are generated from their index
/// alone, and at most `pool_events` events' worth of them are encoded; a longer run cycles
/// through those (`Pool`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Workload {
    pub(crate) events: usize,
    pub(crate) batch: usize,
    pub(crate) correlations: usize,
    pool_events: usize,
    /// Whole microseconds, as the events' timestamps are written.
    now: DateTime<Utc>,
}

impl Workload {
    fn new(args: &BenchArgs) -> anyhow::Result<Workload> {
        let now =
            DateTime::from_timestamp_micros(Utc::now().timestamp_micros()).context("clock")?;
        Ok(Workload {
            events: args.events,
            batch: args.batch,
            correlations: args
                .correlations
                .unwrap_or(args.events / EVENTS_PER_CORRELATION)
                .max(1),
            pool_events: args.pool_events,
            now,
        })
    }

    /// Number of batches sent.
    pub(crate) fn batches(&self) -> usize {
        self.events.div_ceil(self.batch)
    }

    /// Number of batches encoded: all of them, or as many whole ones as `pool_events` holds (at
    /// least one).
    fn pool_batches(&self) -> usize {
        self.batches().min((self.pool_events / self.batch).max(1))
    }

    /// `n` events from the generator of batch `i`.
    fn events_of(&self, i: usize, n: usize) -> Vec<Event> {
        let mut rng =
            Rng(0x9E37_79B9_7F4A_7C15 ^ (i as u64 + 1).wrapping_mul(0x2545_F491_4F6C_DD1D));
        (0..n)
            .map(|_| make_event(&mut rng, self.correlations, self.now))
            .collect()
    }

    /// Batch `i`.
    fn batch(&self, i: usize) -> Vec<Event> {
        self.events_of(i, self.batch.min(self.events - i * self.batch))
    }
}

/// Batches encoded for one target before its timed phase. When the run is longer than the pool,
/// batch `i` is pool batch `i % len` (a shorter last batch is encoded on its own); events carry
/// no id, so each receiver gives repeated events new ones.
pub(crate) struct Pool<B> {
    batches: Vec<B>,
    tail: Option<B>,
}

impl<B> Pool<B> {
    /// Generates and encodes the workload's pool with `encode`.
    pub(crate) fn encode(
        work: &Workload,
        quiet: bool,
        what: &str,
        mut encode: impl FnMut(&[Event]) -> anyhow::Result<B>,
    ) -> anyhow::Result<Pool<B>> {
        let n = work.pool_batches();
        if !quiet {
            eprintln!("encoding {n} batches for {what}");
        }
        let batches = (0..n)
            .map(|i| encode(&work.batch(i)))
            .collect::<anyhow::Result<Vec<B>>>()?;
        let last = work.batches() - 1;
        let rest = work.events % work.batch;
        let tail = if last >= n && rest != 0 {
            Some(encode(&work.events_of(last % n, rest))?)
        } else {
            None
        };
        Ok(Pool { batches, tail })
    }

    /// What is sent as batch `i` of `work`.
    fn get(&self, work: &Workload, i: usize) -> &B {
        match &self.tail {
            Some(tail) if i + 1 == work.batches() => tail,
            _ => &self.batches[i % self.batches.len()],
        }
    }
}

/// What one timed ingest phase measured.
pub(crate) struct Ingest {
    /// Sorted per-batch write latencies.
    pub(crate) writes: Vec<Duration>,
    pub(crate) elapsed: Duration,
    /// CPU seconds of the server, when its process is known.
    pub(crate) server_cpu: Option<f64>,
    /// CPU seconds of this process.
    pub(crate) client_cpu: f64,
}

/// A client's result, a panic turned into an error (so that every client reaches every barrier).
fn caught<T>(what: &str, r: std::thread::Result<anyhow::Result<T>>) -> anyhow::Result<T> {
    r.unwrap_or_else(|_| Err(anyhow::anyhow!("a client panicked while {what}")))
}

/// Sends every batch from `clients` threads (batch `i` on thread `i % clients`), each with its
/// own connection from `connect`. The timed phase starts once every client has connected and ends
/// when the last batch is acknowledged, before the connections close; the CPU times of the server
/// (the process `server` and everything below it) and of this process are read at both ends.
pub(crate) fn drive<C, B: Sync>(
    work: &Workload,
    clients: usize,
    pool: &Pool<B>,
    server: Option<u32>,
    connect: impl Fn(usize) -> anyhow::Result<C> + Sync,
    send: impl Fn(&mut C, &B) -> anyhow::Result<()> + Sync,
) -> anyhow::Result<Ingest> {
    let gate = Barrier::new(clients + 1);
    let failed = AtomicBool::new(false);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..clients)
            .map(|c| {
                let (gate, failed, connect, send) = (&gate, &failed, &connect, &send);
                s.spawn(move || -> anyhow::Result<Vec<Duration>> {
                    let conn = caught("connecting", catch_unwind(AssertUnwindSafe(|| connect(c))));
                    if conn.is_err() {
                        failed.store(true, Ordering::Relaxed);
                    }
                    gate.wait(); // every client connected
                    gate.wait(); // the CPU times are read: go
                    let mut lat = Vec::new();
                    let conn = conn.and_then(|mut conn| {
                        for i in (c..work.batches()).step_by(clients) {
                            if failed.load(Ordering::Relaxed) {
                                break;
                            }
                            let batch = pool.get(work, i);
                            let t = Instant::now();
                            let sent = catch_unwind(AssertUnwindSafe(|| send(&mut conn, batch)));
                            if let Err(e) = caught("sending", sent) {
                                failed.store(true, Ordering::Relaxed);
                                return Err(e);
                            }
                            lat.push(t.elapsed());
                        }
                        Ok(conn)
                    });
                    gate.wait(); // every batch acknowledged
                    gate.wait(); // the CPU times are read again: the connections may close
                    drop(conn?);
                    Ok(lat)
                })
            })
            .collect();
        gate.wait();
        let before = Reading::before(server);
        let started = Instant::now();
        gate.wait();
        gate.wait();
        let elapsed = started.elapsed();
        let after = Reading::after(server);
        gate.wait();
        let mut writes = Vec::new();
        for h in handles {
            writes.extend(
                h.join()
                    .map_err(|_| anyhow::anyhow!("a client thread panicked"))??,
            );
        }
        writes.sort();
        let (server_cpu, client_cpu) = after?.since(&before?);
        Ok(Ingest {
            writes,
            elapsed,
            server_cpu,
            client_cpu,
        })
    })
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
    pub(crate) ingest: Ingest,
    pub(crate) timeline: Vec<Duration>,
    pub(crate) window: Vec<Duration>,
    pub(crate) bytes: Option<u64>,
}

impl Measured {
    /// The result object (`target`, `events`, `events_per_s`, CPU per event, percentiles,
    /// `bytes_per_event`).
    pub(crate) fn to_json(&self, target: &str) -> Value {
        let events = self.work.events;
        let ingest = &self.ingest;
        let us_per_event = |s: f64| (s * 1e6 / events as f64 * 100.0).round() / 100.0;
        json!({
            "target": target,
            "events": events,
            "clients": self.clients,
            "batch": self.work.batch,
            "events_per_s": (events as f64 / ingest.elapsed.as_secs_f64()).round(),
            "server_cpu_us_per_event": ingest.server_cpu.map(us_per_event),
            "client_cpu_us_per_event": us_per_event(ingest.client_cpu),
            "p50_ms": pct(&ingest.writes, 0.50),
            "p99_ms": pct(&ingest.writes, 0.99),
            "max_ms": pct(&ingest.writes, 1.0),
            "timeline_p50_ms": pct(&self.timeline, 0.50),
            "timeline_p99_ms": pct(&self.timeline, 0.99),
            "filtered_window_p50_ms": pct(&self.window, 0.50),
            "filtered_window_p99_ms": pct(&self.window, 0.99),
            "bytes_per_event": self.bytes.map(|b| b / events.max(1) as u64),
        })
    }
}

/// Each batch as the body of one `POST /v1/events`.
fn encode_bodies(work: &Workload, quiet: bool) -> anyhow::Result<Pool<Bytes>> {
    Pool::encode(work, quiet, "Veritrail", |batch| {
        let events: Vec<&Value> = batch.iter().map(|e| &e.json).collect();
        Ok(Bytes::from(serde_json::to_vec(&events)?))
    })
}

/// Sends every batch to Veritrail's `POST /v1/events`, client `c` with producer key
/// `keys[c / CLIENTS_PER_KEY]` (none without keys).
fn ingest(
    url: &str,
    keys: &[String],
    work: &Workload,
    clients: usize,
    pool: &Pool<Bytes>,
    server: Option<u32>,
) -> anyhow::Result<Ingest> {
    drive(
        work,
        clients,
        pool,
        server,
        |c| Client::new(url, keys.get(c / CLIENTS_PER_KEY).map(String::as_str)),
        |client, body| {
            // The receipts are read whole, as a producer reads them, and not decoded.
            client.post_json_retrying("/v1/events", body)?.bytes()?;
            Ok(())
        },
    )
}

/// Measures Veritrail: ingest, then queries and proofs.
fn run_veritrail(args: &BenchArgs, work: &Workload) -> anyhow::Result<Value> {
    let own = if args.server.is_none() {
        Some(start_server(&veritrail_bin(args)?)?)
    } else {
        None
    };
    let url = args
        .server
        .clone()
        .or_else(|| own.as_ref().map(|o| o.url.clone()))
        .unwrap_or_default();
    let pid = args.server_pid.or(own.as_ref().map(|o| o.child.id()));
    let admin_key = args
        .admin_key
        .clone()
        .or_else(|| own.as_ref().map(|o| o.admin_key.clone()));
    let keys = admin_key
        .map(|k| RunKeys::create(&url, &k, args.clients))
        .transpose()?;
    let key = |f: fn(&RunKeys) -> &str| keys.as_ref().map(f);
    let pool = encode_bodies(work, args.json)?;
    let producer_keys: Vec<String> = keys
        .iter()
        .flat_map(|k| k.producers.iter().map(|p| p.1.clone()))
        .collect();
    let ingest = ingest(&url, &producer_keys, work, args.clients, &pool, pid)?;
    drop(pool);
    // Like ANALYZE on the PostgreSQL side: queries start once the server has sealed and indexed
    // what the ingest left it, and the time that took is reported.
    let settled = pid
        .map(|p| crate::cpu::wait_idle(p, Duration::from_secs(120)))
        .transpose()?;
    let client = Client::new(&url, key(|k| &k.auditor.1))?;
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
        work: *work,
        clients: args.clients,
        ingest,
        timeline,
        window,
        bytes,
    }
    .to_json("veritrail");
    // Whether each read also wrote (and waited for) its access event.
    result["access_events"] = keys.is_some().into();
    result["settled_after_s"] = settled.map(|d| d.as_secs_f64()).into();
    result["inclusion_proof_p50_ms"] = pct(&proofs, 0.50).into();
    result["inclusion_proof_p99_ms"] = pct(&proofs, 0.99).into();
    Ok(result)
}

/// Measures PostgreSQL: multi-row INSERT from `--clients` and from one client, and COPY.
fn run_postgres(args: &BenchArgs, work: &Workload) -> anyhow::Result<Vec<Value>> {
    use crate::bench_pg::{Method, Target as Pg};
    let own = if args.postgres.is_none() {
        Some(crate::bench_pg::start_cluster()?)
    } else {
        None
    };
    let target = Pg {
        url: args
            .postgres
            .clone()
            .or_else(|| own.as_ref().map(|o| o.url.clone()))
            .unwrap_or_default(),
        pid: args.postgres_pid.or(own.as_ref().map(|o| o.pid)),
        queries: args.queries,
        quiet: args.json,
    };
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
    crate::bench_pg::run(&target, work, &plans)
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
            "server_cpu_per_event_postgres_over_veritrail": f(&pg0, "server_cpu_us_per_event") / f(v, "server_cpu_us_per_event"),
            "timeline_p50_speedup": f(&pg0, "timeline_p50_ms") / f(v, "timeline_p50_ms"),
            "filtered_window_p50_speedup": f(&pg0, "filtered_window_p50_ms") / f(v, "filtered_window_p50_ms"),
            "bytes_per_event_postgres_over_veritrail": f(&pg0, "bytes_per_event") / f(v, "bytes_per_event"),
        }
    })
}

/// One line of the summary: throughput and CPU per event of a target.
fn summary(v: &Value) -> String {
    let method = v["method"]
        .as_str()
        .map(|m| format!(" {m}"))
        .unwrap_or_default();
    let server = match v["server_cpu_us_per_event"].as_f64() {
        Some(us) => format!("{us:.1} µs"),
        None if v["target"] == "postgres" => "unknown (give --postgres-pid)".into(),
        None => "unknown (give --server-pid)".into(),
    };
    format!(
        "{}{method} ×{}: {:.0} events/s; server CPU per event {server}; load generator CPU per \
         event {:.1} µs",
        v["target"].as_str().unwrap_or("?"),
        v["clients"],
        v["events_per_s"].as_f64().unwrap_or(f64::NAN),
        v["client_cpu_us_per_event"].as_f64().unwrap_or(f64::NAN),
    )
}

/// Runs the benchmark.
pub fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        args.clients > 0 && args.batch > 0 && args.events > 0 && args.pool_events > 0,
        "--events, --clients, --batch and --pool-events must be positive"
    );
    let work = Workload::new(&args)?;
    let show = |v: &Value| -> anyhow::Result<()> {
        if args.json {
            outln!("{v}");
        } else {
            if v.get("target").is_some() {
                outln!("{}", summary(v));
            }
            outln!("{}", serde_json::to_string_pretty(v)?);
        }
        Ok(())
    };
    if !args.json {
        eprintln!(
            "workload: {} events in batches of {} from {} clients, {} events encoded beforehand",
            args.events,
            args.batch,
            args.clients,
            (work.pool_batches() * args.batch).min(args.events)
        );
    }
    let veritrail = match args.target {
        None | Some(Target::Veritrail) => Some(run_veritrail(&args, &work)?),
        Some(Target::Postgres) => None,
    };
    if let Some(v) = &veritrail {
        show(v)?;
    }
    let postgres = match args.target {
        None | Some(Target::Postgres) => run_postgres(&args, &work)?,
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
