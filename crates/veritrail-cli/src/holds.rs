//! `veritrail hold place|list|release`: legal holds through a running server, with a `legal` or
//! `admin` key (`VERITRAIL_KEY`).

use std::process::ExitCode;

use clap::Subcommand;
use serde_json::{json, Map, Value};

use crate::client::{Client, ServerArgs};
use crate::filters::FilterArgs;

/// `veritrail hold …`.
#[derive(Debug, Subcommand)]
pub enum HoldCommand {
    /// Place a hold on the events a filter matches, now and as they arrive. Retention and
    /// erasure never remove a held event.
    Place {
        #[command(flatten)]
        server: ServerArgs,
        /// The events held: the same flags as `query` (at least one, or --whole-tenant).
        #[command(flatten)]
        filter: Box<FilterArgs>,
        /// Hold every event of the tenant.
        #[arg(long)]
        whole_tenant: bool,
        /// Why (a case number, a matter): recorded in the log with the hold.
        #[arg(long)]
        reason: String,
        /// Print the server's JSON answer.
        #[arg(long)]
        json: bool,
    },
    /// List the active holds (with --released, every hold ever placed).
    List {
        #[command(flatten)]
        server: ServerArgs,
        #[arg(long)]
        released: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Release a hold by its id; the events it held become removable again.
    Release {
        #[command(flatten)]
        server: ServerArgs,
        /// The hold's id (from `hold place` or `hold list`).
        id: String,
        /// Why: recorded in the log with the release.
        #[arg(long)]
        reason: String,
    },
}

/// Runs a `hold` command.
pub fn run(command: HoldCommand) -> anyhow::Result<ExitCode> {
    match command {
        HoldCommand::Place {
            server,
            filter,
            whole_tenant,
            reason,
            json,
        } => {
            let pairs = filter.to_params()?;
            anyhow::ensure!(
                pairs.is_empty() == whole_tenant,
                "name the events to hold with filter flags (--correlation-id, --actor-id, --since…), or hold everything with --whole-tenant (not both)"
            );
            let filter: Map<String, Value> = pairs
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect();
            let body = json!({"filter": filter, "reason": reason});
            let answer = Client::new(&server)?.post_json("/v1/holds", &body)?;
            if json {
                outln!("{answer:#}");
            } else {
                outln!(
                    "placed hold {} on {} (covers {} events now, and matching events as they arrive)",
                    answer["hold_id"].as_str().unwrap_or("?"),
                    describe(&answer["filter"]),
                    answer["events_covered"]
                );
            }
        }
        HoldCommand::List {
            server,
            released,
            json,
        } => {
            let params = vec![("released".to_string(), released.to_string())];
            let answer: Value = Client::new(&server)?.get("/v1/holds", &params)?.json()?;
            if json {
                outln!("{answer:#}");
                return Ok(ExitCode::SUCCESS);
            }
            let holds = answer["holds"].as_array().cloned().unwrap_or_default();
            if holds.is_empty() {
                outln!("no holds");
            }
            for h in holds {
                let placed = &h["placed"];
                let state = match h["released"].as_object() {
                    Some(r) => format!(
                        "released {} by {}",
                        r["released_at"].as_str().unwrap_or("?"),
                        r["released_by"].as_str().unwrap_or("?")
                    ),
                    None => format!("active, {} events", h["events_covered"]),
                };
                outln!(
                    "{}  {}  placed {} by {}: {}  ({state})",
                    h["hold_id"].as_str().unwrap_or("?"),
                    describe(&h["filter"]),
                    placed["placed_at"].as_str().unwrap_or("?"),
                    placed["placed_by"].as_str().unwrap_or("?"),
                    placed["reason"].as_str().unwrap_or(""),
                );
            }
        }
        HoldCommand::Release { server, id, reason } => {
            let body = json!({"reason": reason});
            Client::new(&server)?.post_json(&format!("/v1/holds/{id}/release"), &body)?;
            outln!("released hold {id}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A hold's filter as `name=value` words, or "the whole tenant".
fn describe(filter: &Value) -> String {
    let words: Vec<String> = filter
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("?")))
        .collect();
    if words.is_empty() {
        "the whole tenant".into()
    } else {
        words.join(" ")
    }
}
