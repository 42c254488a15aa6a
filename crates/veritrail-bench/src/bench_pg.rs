//! The PostgreSQL baseline of `veritrail-bench`: the same events, written into Kubernaut's
//! `audit_events` schema (monthly partitions and its indexes) the way its DataStorage service
//! writes them (one transaction per batch, multi-row INSERT), and with COPY; then the same
//! queries. Without `--postgres URL` a temporary cluster is created on loopback and removed.
//!
//! Rows are encoded before the timed phase: for INSERT every parameter in PostgreSQL's binary
//! format, for COPY the CSV text. The one value made while timing is each row's `event_id`, a
//! fresh UUIDv7 (Veritrail's server assigns its own ids, and a repeated pool batch needs new ones).
//!
//! The baseline is generous to PostgreSQL: it leaves out Kubernaut's per-correlation advisory lock
//! and hash chain, which cost it more on every write.

use std::collections::HashMap;
use std::io::Write;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use anyhow::{bail, Context};
use bytes::{Bytes, BytesMut};
use chrono::{DateTime, Datelike, NaiveDate, Utc};
use postgres::types::{IsNull, ToSql, Type};
use postgres::{Client, NoTls};
use serde_json::Value;
use uuid::Uuid;

use crate::bench::{drive, timed, Event, Measured, Pool, Rng, Workload, SERVICES};

/// Kubernaut's `audit_events` table and indexes (from its v1 migrations).
const SCHEMA: &str = include_str!("kubernaut_audit_events.sql");

/// Columns written for each event, in order.
const COLUMNS: [&str; 19] = [
    "event_id",
    "event_version",
    "event_timestamp",
    "event_date",
    "event_type",
    "event_category",
    "event_action",
    "event_outcome",
    "actor_type",
    "actor_id",
    "resource_type",
    "resource_id",
    "correlation_id",
    "namespace",
    "cluster_id",
    "event_data",
    "severity",
    "duration_ms",
    "retention_days",
];

/// A PostgreSQL cluster started for the run, stopped and removed afterwards.
pub struct OwnCluster {
    dir: PathBuf,
    pub url: String,
    /// The postmaster's process id.
    pub pid: u32,
    as_postgres: bool,
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        let _ = pg_command("pg_ctl", self.as_postgres)
            .args(["-D"])
            .arg(&data)
            .args(["-m", "fast", "-w", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Finds a PostgreSQL server binary on PATH or in Debian's versioned directory.
fn pg_binary(name: &str) -> PathBuf {
    if let Some(p) = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(name))
        .find(|p| p.is_file())
    {
        return p;
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.path().join("bin").join(name))
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default();
    versions.sort();
    versions.pop().unwrap_or_else(|| PathBuf::from(name))
}

/// PostgreSQL refuses to run as root: run its tools as the `postgres` user then.
fn pg_command(name: &str, as_postgres: bool) -> Command {
    let bin = pg_binary(name);
    if as_postgres {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin);
        c
    } else {
        Command::new(bin)
    }
}

fn run_ok(mut c: Command, what: &str) -> anyhow::Result<()> {
    let out = c.output().with_context(|| {
        format!("running {what} (is PostgreSQL installed? apt-get install postgresql)")
    })?;
    if !out.status.success() {
        bail!(
            "{what} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Creates and starts a throwaway cluster on a free loopback port.
pub fn start_cluster() -> anyhow::Result<OwnCluster> {
    let as_postgres = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0"))
        .unwrap_or(false);
    let dir = std::env::temp_dir().join(format!("veritrail-bench-pg-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    if as_postgres {
        run_ok(
            {
                let mut c = Command::new("chown");
                c.args(["postgres:postgres"]).arg(&dir);
                c
            },
            "chown",
        )?;
    }
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let mut cluster = OwnCluster {
        dir: dir.clone(),
        url: format!("host=127.0.0.1 port={port} user=postgres dbname=postgres"),
        pid: 0,
        as_postgres,
    };
    let data = dir.join("data");
    let mut init = pg_command("initdb", as_postgres);
    init.args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
        .arg(&data);
    run_ok(init, "initdb")?;
    let mut start = pg_command("pg_ctl", as_postgres);
    start
        .args(["-D"])
        .arg(&data)
        .args(["-l"])
        .arg(dir.join("log"))
        .args([
            "-o",
            &format!(
                "-p {port} -c listen_addresses=127.0.0.1 -k {}",
                dir.display()
            ),
            "-w",
            "start",
        ]);
    run_ok(start, "pg_ctl start")?;
    // The first line of `postmaster.pid` is the postmaster's process id.
    let lock = std::fs::read_to_string(data.join("postmaster.pid")).context("postmaster.pid")?;
    cluster.pid = lock
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .context("no process id in postmaster.pid")?;
    Ok(cluster)
}

/// Drops and recreates `audit_events` with monthly partitions around `now`.
fn create_schema(client: &mut Client, now: DateTime<Utc>) -> anyhow::Result<()> {
    client.batch_execute("DROP TABLE IF EXISTS audit_events CASCADE")?;
    client
        .batch_execute(SCHEMA)
        .context("creating Kubernaut's audit_events schema")?;
    let first = NaiveDate::from_ymd_opt(now.year(), now.month(), 1).context("date")?;
    let mut month = first - chrono::Months::new(1);
    for _ in 0..3 {
        let next = month + chrono::Months::new(1);
        client.batch_execute(&format!(
            "CREATE TABLE audit_events_{} PARTITION OF audit_events FOR VALUES FROM ('{month}') TO ('{next}')",
            month.format("%Y_%m")
        ))?;
        month = next;
    }
    Ok(())
}

/// Values of a row after its `event_id`, in `COLUMNS` order.
const VALUES_PER_ROW: usize = COLUMNS.len() - 1;

/// A value already in PostgreSQL's binary format, sent as it is.
#[derive(Debug)]
struct Encoded<'a>(&'a [u8]);

impl ToSql for Encoded<'_> {
    fn to_sql(
        &self,
        _: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        out.extend_from_slice(self.0);
        Ok(IsNull::No)
    }

    fn accepts(_: &Type) -> bool {
        // Encoded for its column's type by `encode_insert`.
        true
    }

    fn to_sql_checked(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        self.to_sql(ty, out)
    }
}

/// One batch as a multi-row INSERT: the statement, and each row's values after `event_id` as
/// Kubernaut's DataStorage would write them, in binary format, one after the other.
pub(crate) struct InsertBatch {
    sql: Arc<str>,
    rows: usize,
    values: Bytes,
    /// Where each value ends in `values`.
    ends: Vec<usize>,
}

fn insert_sql(n: usize) -> String {
    let per = COLUMNS.len();
    let rows: Vec<String> = (0..n)
        .map(|r| {
            let p: Vec<String> = (1..=per).map(|c| format!("${}", r * per + c)).collect();
            format!("({})", p.join(","))
        })
        .collect();
    format!(
        "INSERT INTO audit_events ({}) VALUES {}",
        COLUMNS.join(","),
        rows.join(",")
    )
}

fn encode_insert(
    batch: &[Event],
    statements: &mut HashMap<usize, Arc<str>>,
) -> anyhow::Result<InsertBatch> {
    let mut values = BytesMut::new();
    let mut ends = Vec::with_capacity(batch.len() * VALUES_PER_ROW);
    let retention = 2555i32;
    for e in batch {
        let s = |k: &str| e.json[k].as_str().unwrap_or("");
        let date = e.time.date_naive();
        let duration_ms = e.json["duration_ms"].as_i64().unwrap_or(0) as i32;
        let row: [(&(dyn ToSql + Sync), Type); VALUES_PER_ROW] = [
            (&"1.0", Type::VARCHAR),
            (&e.time, Type::TIMESTAMPTZ),
            (&date, Type::DATE),
            (&s("event_type"), Type::VARCHAR),
            (&s("event_category"), Type::VARCHAR),
            (&s("event_action"), Type::VARCHAR),
            (&s("event_outcome"), Type::VARCHAR),
            (&s("actor_type"), Type::VARCHAR),
            (&s("actor_id"), Type::VARCHAR),
            (&s("resource_type"), Type::VARCHAR),
            (&s("resource_id"), Type::VARCHAR),
            (&s("correlation_id"), Type::VARCHAR),
            (&s("namespace"), Type::VARCHAR),
            (&s("cluster_id"), Type::VARCHAR),
            (&e.json["event_data"], Type::JSONB),
            (&s("severity"), Type::VARCHAR),
            (&duration_ms, Type::INT4),
            (&retention, Type::INT4),
        ];
        for (value, ty) in row {
            value
                .to_sql_checked(&ty, &mut values)
                .map_err(|e| anyhow::anyhow!("encoding a row: {e}"))?;
            ends.push(values.len());
        }
    }
    let sql = statements
        .entry(batch.len())
        .or_insert_with(|| insert_sql(batch.len()).into())
        .clone();
    Ok(InsertBatch {
        sql,
        rows: batch.len(),
        values: values.freeze(),
        ends,
    })
}

/// One batch in one transaction, as a multi-row INSERT.
fn insert_batch(client: &mut Client, b: &InsertBatch) -> anyhow::Result<()> {
    let ids: Vec<Uuid> = (0..b.rows).map(|_| Uuid::now_v7()).collect();
    let mut start = 0;
    let values: Vec<Encoded> = b
        .ends
        .iter()
        .map(|&end| {
            let v = Encoded(&b.values[start..end]);
            start = end;
            v
        })
        .collect();
    let mut params: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(b.rows * COLUMNS.len());
    for (id, row) in ids.iter().zip(values.chunks(VALUES_PER_ROW)) {
        params.push(id);
        params.extend(row.iter().map(|v| v as &(dyn ToSql + Sync)));
    }
    let mut tx = client.transaction()?;
    tx.execute(&*b.sql, &params)?;
    tx.commit()?;
    Ok(())
}

/// One batch as COPY text: each row's CSV line after its `event_id` (starting with the comma
/// that follows it), one after the other.
pub(crate) struct CopyBatch {
    text: Bytes,
    /// Where each row ends in `text`.
    ends: Vec<usize>,
}

fn csv_field(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

fn encode_copy(batch: &[Event]) -> CopyBatch {
    let mut text = Vec::new();
    let mut ends = Vec::with_capacity(batch.len());
    for e in batch {
        let s = |k: &str| csv_field(e.json[k].as_str().unwrap_or(""));
        let fields = [
            "1.0".to_string(),
            e.time.to_rfc3339(),
            e.time.date_naive().to_string(),
            s("event_type"),
            s("event_category"),
            s("event_action"),
            s("event_outcome"),
            s("actor_type"),
            s("actor_id"),
            s("resource_type"),
            s("resource_id"),
            s("correlation_id"),
            s("namespace"),
            s("cluster_id"),
            csv_field(&e.json["event_data"].to_string()),
            s("severity"),
            e.json["duration_ms"].as_i64().unwrap_or(0).to_string(),
            "2555".into(),
        ];
        text.push(b',');
        text.extend_from_slice(fields.join(",").as_bytes());
        text.push(b'\n');
        ends.push(text.len());
    }
    CopyBatch {
        text: text.into(),
        ends,
    }
}

/// One batch in one transaction, with COPY (`statement`): the rows go out as one message.
fn copy_batch(client: &mut Client, statement: &str, b: &CopyBatch) -> anyhow::Result<()> {
    const ID: usize = uuid::fmt::Hyphenated::LENGTH;
    let mut data = Vec::with_capacity(b.text.len() + ID * b.ends.len());
    let mut id = [0u8; ID];
    let mut start = 0;
    for &end in &b.ends {
        data.extend_from_slice(Uuid::now_v7().hyphenated().encode_lower(&mut id).as_bytes());
        data.extend_from_slice(&b.text[start..end]);
        start = end;
    }
    let mut tx = client.transaction()?;
    let mut w = tx.copy_in(statement)?;
    w.write_all(&data)?;
    w.finish()?;
    tx.commit()?;
    Ok(())
}

/// How rows are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Insert,
    Copy,
}

/// Table, TOAST and index bytes of every partition.
fn bytes_on_disk(client: &mut Client) -> anyhow::Result<u64> {
    let row = client.query_one(
        "SELECT coalesce(sum(pg_total_relation_size(inhrelid)), 0)::bigint FROM pg_inherits WHERE inhparent = 'audit_events'::regclass",
        &[],
    )?;
    Ok(row.get::<_, i64>(0).max(0) as u64)
}

/// The PostgreSQL the run writes to.
pub struct Target {
    pub url: String,
    /// The postmaster's process id, when known: its CPU time and its descendants' is reported.
    pub pid: Option<u32>,
    pub queries: usize,
    /// Whether progress stays off stderr.
    pub quiet: bool,
}

/// Runs each plan (clients, method) on a fresh table, in order; returns their result objects.
/// Each method's rows are encoded before its first plan and dropped after its last.
pub fn run(
    target: &Target,
    work: &Workload,
    plans: &[(usize, Method)],
) -> anyhow::Result<Vec<Value>> {
    let mut inserts: Option<Pool<InsertBatch>> = None;
    let mut copies: Option<Pool<CopyBatch>> = None;
    let mut results = Vec::new();
    for (k, &(clients, method)) in plans.iter().enumerate() {
        let used_later = plans[k + 1..].iter().any(|p| p.1 == method);
        let result = match method {
            Method::Insert => {
                if inserts.is_none() {
                    let mut statements = HashMap::new();
                    inserts = Some(Pool::encode(
                        work,
                        target.quiet,
                        "PostgreSQL INSERT",
                        |batch| encode_insert(batch, &mut statements),
                    )?);
                }
                let pool = inserts.as_ref().context("encoded rows")?;
                let r = measure(target, work, clients, method, pool, insert_batch);
                if !used_later {
                    inserts = None;
                }
                r?
            }
            Method::Copy => {
                if copies.is_none() {
                    copies = Some(Pool::encode(work, target.quiet, "PostgreSQL COPY", |b| {
                        Ok(encode_copy(b))
                    })?);
                }
                let statement = format!(
                    "COPY audit_events ({}) FROM STDIN (FORMAT csv)",
                    COLUMNS.join(",")
                );
                let pool = copies.as_ref().context("encoded rows")?;
                let r = measure(target, work, clients, method, pool, |c, b| {
                    copy_batch(c, &statement, b)
                });
                if !used_later {
                    copies = None;
                }
                r?
            }
        };
        results.push(result);
    }
    Ok(results)
}

/// Writes every batch of `pool` with `send` from `clients` connections (one transaction per
/// batch) on a fresh table, then runs the queries; returns the result object.
fn measure<B: Sync>(
    target: &Target,
    work: &Workload,
    clients: usize,
    method: Method,
    pool: &Pool<B>,
    send: impl Fn(&mut Client, &B) -> anyhow::Result<()> + Sync,
) -> anyhow::Result<Value> {
    let url = target.url.as_str();
    let mut client = Client::connect(url, NoTls)
        .with_context(|| format!("connecting to PostgreSQL at {url}"))?;
    create_schema(&mut client, Utc::now())?;
    let ingest = drive(
        work,
        clients,
        pool,
        target.pid,
        |_| Ok(Client::connect(url, NoTls)?),
        send,
    )?;
    client.batch_execute("ANALYZE audit_events")?;
    let mut rng = Rng(42);
    let timeline = timed(target.queries, |_| {
        let corr = format!("rr-{:08}", rng.below(work.correlations));
        client.query(
            "SELECT * FROM audit_events WHERE correlation_id = $1 ORDER BY event_timestamp ASC LIMIT 1000",
            &[&corr],
        )?;
        Ok(())
    })?;
    let window = timed(target.queries, |i| {
        let ty = SERVICES[i % SERVICES.len()].1;
        client.query(
            "SELECT * FROM audit_events WHERE event_type = $1 AND event_timestamp >= now() - interval '30 minutes' \
             ORDER BY event_timestamp DESC LIMIT 100",
            &[&ty],
        )?;
        Ok(())
    })?;
    let bytes = Some(bytes_on_disk(&mut client)?);
    let mut result = Measured {
        work: *work,
        clients,
        ingest,
        timeline,
        window,
        bytes,
    }
    .to_json("postgres");
    result["method"] = match method {
        Method::Insert => "insert",
        Method::Copy => "copy",
    }
    .into();
    Ok(result)
}
