//! `veritrail retention show|set|dry-run`: the tenant's retention policy and what a retention run
//! would remove, through a running server with an admin key (`VERITRAIL_KEY`).

use std::process::ExitCode;

use clap::Subcommand;
use serde_json::{json, Map, Value};

use crate::client::{Client, ServerArgs};

/// `veritrail retention …`.
#[derive(Debug, Subcommand)]
pub enum RetentionCommand {
    /// Show the policy in force.
    Show {
        #[command(flatten)]
        server: ServerArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Set the policy: floors that lengthen every event's own retention_days, never shorten it.
    Set {
        #[command(flatten)]
        server: ServerArgs,
        /// Every event is kept at least this many days.
        #[arg(long)]
        min_days: Option<u32>,
        /// Events of a category are kept at least DAYS days; repeatable.
        #[arg(long = "category", value_name = "CATEGORY=DAYS")]
        categories: Vec<String>,
        /// Why: recorded in the log with the policy.
        #[arg(long)]
        reason: String,
    },
    /// Count what a retention run at a time (default now) would remove; removes nothing.
    DryRun {
        #[command(flatten)]
        server: ServerArgs,
        /// An RFC 3339 time or a date (in the future, to plan).
        #[arg(long)]
        at: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs a `retention` command.
pub fn run(command: RetentionCommand) -> anyhow::Result<ExitCode> {
    match command {
        RetentionCommand::Show { server, json } => {
            let answer: Value = Client::new(&server)?
                .get("/v1/admin/retention/policy", &[])?
                .json()?;
            if json {
                outln!("{answer:#}");
            } else {
                print_policy(&answer);
            }
        }
        RetentionCommand::Set {
            server,
            min_days,
            categories,
            reason,
        } => {
            let mut floors = Map::new();
            for c in &categories {
                let (name, days) = c
                    .split_once('=')
                    .and_then(|(n, d)| Some((n, d.parse::<u32>().ok()?)))
                    .ok_or_else(|| {
                        anyhow::anyhow!("--category expects CATEGORY=DAYS, got `{c}`")
                    })?;
                floors.insert(name.to_string(), days.into());
            }
            let body =
                json!({"policy": {"min_days": min_days, "categories": floors}, "reason": reason});
            let answer = Client::new(&server)?.post_json("/v1/admin/retention/policy", &body)?;
            print_policy(&answer);
        }
        RetentionCommand::DryRun { server, at, json } => {
            let params: Vec<(String, String)> =
                at.map(|a| ("at".to_string(), a)).into_iter().collect();
            eprintln!("reading every event of the log (this takes about as long as `fsck`)…");
            let answer: Value = Client::new(&server)?
                .get("/v1/admin/retention/dry-run", &params)?
                .json()?;
            if json {
                outln!("{answer:#}");
                return Ok(ExitCode::SUCCESS);
            }
            outln!(
                "at {}: {} of {} events expired; {} kept by holds, {} removable ({} bytes as stored)",
                answer["at"].as_str().unwrap_or("?"),
                answer["expired"],
                answer["events"],
                answer["held"],
                answer["removable"],
                answer["removable_bytes"]
            );
            let whole = &answer["whole_segments"];
            outln!(
                "{} of {} segments hold only removable events: {} events, {} bytes on disk",
                whole["segments"],
                answer["segments"],
                whole["events"],
                whole["bytes"]
            );
            for (category, t) in answer["by_category"].as_object().into_iter().flatten() {
                outln!(
                    "  {category:<24} expired {:>10}  held {:>10}  removable {:>10}",
                    t["expired"],
                    t["held"],
                    t["removable"]
                );
            }
            if let Some(next) = answer["next_expiry"].as_str() {
                outln!("the next event expires at {next}");
            }
            outln!("nothing was removed: retention runs are not built yet");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_policy(answer: &Value) {
    let policy = &answer["policy"];
    let min = match policy["min_days"].as_u64() {
        Some(d) => format!("at least {d} days for every event"),
        None => "no floor for every event".to_string(),
    };
    outln!("{min}; each event's own retention_days (default 2555) counts when longer");
    for (category, days) in policy["categories"].as_object().into_iter().flatten() {
        outln!("  category {category}: at least {days} days");
    }
    match answer["set_by"].as_str() {
        Some(by) => outln!(
            "set by {by} at {}: {}",
            answer["set_at"].as_str().unwrap_or("?"),
            answer["reason"].as_str().unwrap_or("")
        ),
        None => outln!("{}", answer["reason"].as_str().unwrap_or("")),
    }
}
