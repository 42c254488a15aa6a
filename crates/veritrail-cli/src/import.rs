//! `veritrail import --format kubernetes-audit|cloudtrail|ndjson FILE…`: existing audit logs into
//! a running server, in batches, idempotently (event ids come from the records), with a progress
//! bar and a summary of what was imported, skipped as already stored, and rejected (and why).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;
use uuid::Uuid;
use veritrail_core::event::Event;

use crate::client::{Client, ServerArgs};

/// Largest CloudTrail file read whole (a `{"Records": [...]}` document); larger ones must be
/// one record per line.
const MAX_WHOLE_FILE: u64 = 256 << 20;
/// Places listed under each reason for rejection in the summary.
const LISTED: usize = 10;

/// What the files hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// kube-apiserver's log backend: one audit.k8s.io Event per line.
    KubernetesAudit,
    /// CloudTrail: `{"Records":[…]}` files, or one record per line.
    Cloudtrail,
    /// Veritrail's own events, one per line.
    Ndjson,
}

/// Flags of `import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// What the files hold.
    #[arg(long, value_enum)]
    format: Format,
    /// Events per request.
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// The files to import.
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

/// What an import did.
#[derive(Debug, Default)]
struct Summary {
    imported: u64,
    already_stored: u64,
    /// Reason → places (file:line).
    rejected: BTreeMap<String, Vec<String>>,
}

impl Summary {
    fn reject(&mut self, place: String, why: impl Into<String>) {
        self.rejected.entry(why.into()).or_default().push(place);
    }

    fn rejected_count(&self) -> usize {
        self.rejected.values().map(Vec::len).sum()
    }
}

/// Events waiting to be sent, with where each came from.
struct Pending<'a> {
    client: &'a Client,
    size: usize,
    events: Vec<(String, Event)>,
}

impl Pending<'_> {
    fn push(&mut self, place: String, e: Event, summary: &mut Summary) -> anyhow::Result<()> {
        self.events.push((place, e));
        if self.events.len() >= self.size {
            self.flush(summary)?;
        }
        Ok(())
    }

    /// Sends what is waiting as one request; on a conflict, one by one to find the event.
    fn flush(&mut self, summary: &mut Summary) -> anyhow::Result<()> {
        let batch = std::mem::take(&mut self.events);
        if batch.is_empty() {
            return Ok(());
        }
        let body: Vec<Value> = batch.iter().map(|(_, e)| e.to_value()).collect();
        match self.send(&body)? {
            Sent::Receipts(dups) => {
                summary.already_stored += dups;
                summary.imported += batch.len() as u64 - dups;
            }
            Sent::Conflict => {
                for (place, e) in batch {
                    match self.send(&[e.to_value()])? {
                        Sent::Receipts(dups) => {
                            summary.already_stored += dups;
                            summary.imported += 1 - dups;
                        }
                        Sent::Conflict => summary.reject(
                            place,
                            "another event with the same id and different content is stored",
                        ),
                    }
                }
            }
        }
        Ok(())
    }

    fn send(&self, events: &[Value]) -> anyhow::Result<Sent> {
        let body = serde_json::to_vec(events)?;
        loop {
            let (status, text) = self.client.post_json_raw("/v1/events", body.clone())?;
            match status {
                200 => {
                    let answer: Value = serde_json::from_str(&text)?;
                    let dups = answer["receipts"]
                        .as_array()
                        .map_or(0, |r| r.iter().filter(|r| r["duplicate"] == true).count());
                    return Ok(Sent::Receipts(dups as u64));
                }
                409 => return Ok(Sent::Conflict),
                429 | 503 => std::thread::sleep(std::time::Duration::from_millis(500)),
                _ => {
                    let detail = serde_json::from_str::<Value>(&text)
                        .ok()
                        .and_then(|p| p["detail"].as_str().map(str::to_string))
                        .unwrap_or(text);
                    bail!("the server refused a batch ({status}): {detail}");
                }
            }
        }
    }
}

enum Sent {
    /// Accepted; this many were already stored.
    Receipts(u64),
    Conflict,
}

/// Maps one record to events according to the format.
fn map(format: Format, value: &Value) -> Result<Vec<Event>, String> {
    match format {
        Format::KubernetesAudit => veritrail_core::k8s::events_of(value)?
            .iter()
            .map(veritrail_core::k8s::to_event)
            .collect(),
        Format::Cloudtrail => veritrail_core::cloudtrail::records_of(value)?
            .into_iter()
            .map(veritrail_core::cloudtrail::to_event)
            .collect(),
        Format::Ndjson => Event::from_json(value, Uuid::now_v7)
            .map(|e| vec![e])
            .map_err(|e| e.to_string()),
    }
}

fn take(
    place: String,
    format: Format,
    text: &str,
    pending: &mut Pending<'_>,
    summary: &mut Summary,
) -> anyhow::Result<()> {
    let parsed = veritrail_core::json::from_str(text).map_err(|e| format!("malformed JSON: {e}"));
    match parsed.and_then(|v| map(format, &v)) {
        Ok(events) => {
            for e in events {
                pending.push(place.clone(), e, summary)?;
            }
        }
        Err(why) => summary.reject(place, why),
    }
    Ok(())
}

fn import_file(
    path: &Path,
    format: Format,
    pending: &mut Pending<'_>,
    summary: &mut Summary,
    bar: &ProgressBar,
) -> anyhow::Result<()> {
    let name = path.display().to_string();
    let file = std::fs::File::open(path).with_context(|| format!("opening {name}"))?;
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    // A CloudTrail `{"Records": [...]}` file is one JSON document, usually pretty-printed.
    if format == Format::Cloudtrail && len <= MAX_WHOLE_FILE {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {name}"))?;
        if veritrail_core::json::from_str(&text).is_ok() {
            take(name, format, &text, pending, summary)?;
            bar.inc(len);
            return Ok(());
        }
    }
    let mut reader = BufReader::new(file);
    let mut line = String::new();
    let mut number = 0;
    loop {
        line.clear();
        let n = reader
            .read_line(&mut line)
            .with_context(|| format!("reading {name}"))?;
        if n == 0 {
            return Ok(());
        }
        number += 1;
        bar.inc(n as u64);
        if !line.trim().is_empty() {
            take(format!("{name}:{number}"), format, &line, pending, summary)?;
        }
    }
}

/// Runs `import`: exit 0 when every record was imported or already stored, 1 when some were
/// rejected (each reason is listed).
pub fn run(args: ImportArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.batch >= 1, "--batch must be at least 1");
    let client = Client::new(&args.server)?;
    let total: u64 = args
        .files
        .iter()
        .map(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0))
        .sum();
    let bar = ProgressBar::new(total).with_style(
        ProgressStyle::with_template(
            "import [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut summary = Summary::default();
    let mut pending = Pending {
        client: &client,
        size: args.batch.min(1000),
        events: Vec::new(),
    };
    for file in &args.files {
        import_file(file, args.format, &mut pending, &mut summary, &bar)?;
    }
    pending.flush(&mut summary)?;
    bar.finish_and_clear();
    let rejected = summary.rejected_count();
    outln!(
        "imported {} events, skipped {} already stored, rejected {rejected}",
        summary.imported,
        summary.already_stored
    );
    for (why, places) in &summary.rejected {
        outln!("  {} × {why}", places.len());
        for place in places.iter().take(LISTED) {
            outln!("      {place}");
        }
        if places.len() > LISTED {
            outln!("      … and {} more", places.len() - LISTED);
        }
    }
    Ok(if rejected == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
