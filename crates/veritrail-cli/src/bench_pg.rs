//! The PostgreSQL baseline of `veritrail bench`: the same events, written into Kubernaut's
//! `audit_events` schema (monthly partitions and its indexes) the way its DataStorage service
//! writes them (one transaction per batch, multi-row INSERT), and with COPY; then the same
//! queries. Without `--postgres URL` a temporary cluster is created on loopback and removed.
//!
//! The baseline is generous to PostgreSQL: it leaves out Kubernaut's per-correlation advisory lock
//! and hash chain, which cost it more on every write.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};
use chrono::{DateTime, Datelike, NaiveDate, Utc};
use postgres::types::ToSql;
use postgres::{Client, NoTls};
use serde_json::Value;

use crate::bench::{timed, Measured, Rng, Workload, SERVICES};

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
    let cluster = OwnCluster {
        dir: dir.clone(),
        url: format!("host=127.0.0.1 port={port} user=postgres dbname=postgres"),
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

/// One event as the row values Kubernaut's DataStorage would write.
struct Row {
    id: uuid::Uuid,
    ts: DateTime<Utc>,
    date: NaiveDate,
    text: [String; 14],
    data: Value,
    duration_ms: i32,
}

fn row(e: &Value) -> anyhow::Result<Row> {
    let s = |k: &str| e[k].as_str().unwrap_or("").to_string();
    let ts = veritrail_core::event::parse_time(e["event_timestamp"].as_str().unwrap_or(""))
        .context("timestamp")?;
    Ok(Row {
        id: uuid::Uuid::try_parse(e["event_id"].as_str().unwrap_or("")).context("event_id")?,
        ts,
        date: ts.date_naive(),
        text: [
            "1.0".into(),
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
            s("severity"),
            String::new(),
        ],
        data: e["event_data"].clone(),
        duration_ms: e["duration_ms"].as_i64().unwrap_or(0) as i32,
    })
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

/// One batch in one transaction, as a multi-row INSERT.
fn insert_batch(client: &mut Client, rows: &[Row]) -> anyhow::Result<()> {
    let retention = 2555i32;
    let mut params: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(rows.len() * COLUMNS.len());
    for r in rows {
        let t = &r.text;
        params.extend_from_slice(&[
            &r.id,
            &t[0],
            &r.ts,
            &r.date,
            &t[1],
            &t[2],
            &t[3],
            &t[4],
            &t[5],
            &t[6],
            &t[7],
            &t[8],
            &t[9],
            &t[10],
            &t[11],
            &r.data,
            &t[12],
            &r.duration_ms,
            &retention,
        ]);
    }
    let mut tx = client.transaction()?;
    tx.execute(insert_sql(rows.len()).as_str(), &params)?;
    tx.commit()?;
    Ok(())
}

fn csv_field(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// One batch in one transaction, with COPY.
fn copy_batch(client: &mut Client, rows: &[Row]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut tx = client.transaction()?;
    let mut w = tx.copy_in(&format!(
        "COPY audit_events ({}) FROM STDIN (FORMAT csv)",
        COLUMNS.join(",")
    ))?;
    for r in rows {
        let t = &r.text;
        let fields = [
            r.id.to_string(),
            t[0].clone(),
            r.ts.to_rfc3339(),
            r.date.to_string(),
            csv_field(&t[1]),
            csv_field(&t[2]),
            csv_field(&t[3]),
            csv_field(&t[4]),
            csv_field(&t[5]),
            csv_field(&t[6]),
            csv_field(&t[7]),
            csv_field(&t[8]),
            csv_field(&t[9]),
            csv_field(&t[10]),
            csv_field(&t[11]),
            csv_field(&r.data.to_string()),
            csv_field(&t[12]),
            r.duration_ms.to_string(),
            "2555".into(),
        ];
        writeln!(w, "{}", fields.join(","))?;
    }
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

/// Writes every batch from `clients` connections, one transaction per batch.
fn ingest(
    url: &str,
    work: Workload,
    clients: usize,
    method: Method,
) -> anyhow::Result<(Vec<Duration>, Duration)> {
    let url = url.to_string();
    crate::bench::drive(
        work,
        clients,
        move || Ok(Client::connect(&url, NoTls)?),
        move |client, batch| {
            let rows: Vec<Row> = batch.iter().map(row).collect::<anyhow::Result<_>>()?;
            match method {
                Method::Insert => insert_batch(client, &rows),
                Method::Copy => copy_batch(client, &rows),
            }
        },
    )
}

/// Table, TOAST and index bytes of every partition.
fn bytes_on_disk(client: &mut Client) -> anyhow::Result<u64> {
    let row = client.query_one(
        "SELECT coalesce(sum(pg_total_relation_size(inhrelid)), 0)::bigint FROM pg_inherits WHERE inhparent = 'audit_events'::regclass",
        &[],
    )?;
    Ok(row.get::<_, i64>(0).max(0) as u64)
}

/// Runs one write method on a fresh table, then the queries; returns the result object.
pub fn run(
    url: &str,
    work: Workload,
    clients: usize,
    method: Method,
    queries: usize,
) -> anyhow::Result<Value> {
    let mut client = Client::connect(url, NoTls)
        .with_context(|| format!("connecting to PostgreSQL at {url}"))?;
    create_schema(&mut client, Utc::now())?;
    let (writes, elapsed) = ingest(url, work, clients, method)?;
    client.batch_execute("ANALYZE audit_events")?;
    let mut rng = Rng(42);
    let timeline = timed(queries, |_| {
        let corr = format!("rr-{:08}", rng.below(work.correlations));
        client.query(
            "SELECT * FROM audit_events WHERE correlation_id = $1 ORDER BY event_timestamp ASC LIMIT 1000",
            &[&corr],
        )?;
        Ok(())
    })?;
    let window = timed(queries, |i| {
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
        work,
        clients,
        elapsed,
        writes,
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
