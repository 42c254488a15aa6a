//! `veritrail`: the command line. It parses arguments and wires the library crates together.
//!
//! Exit codes: 0 success, 1 the check found problems (verify, fsck), 2 usage or runtime error,
//! 3 fsck found no damage but the store needs the recovery that starting the server does.

/// Writes a line to stdout. A closed pipe (`veritrail verify … | head`) is a normal end, not a
/// panic, so write errors are ignored: there is nowhere left to report them.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

mod admin;
mod client;
mod filters;
mod holds;
mod import;
mod keys;
mod retention;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The server's request handlers allocate and free many short-lived strings and trees from
/// several threads at once; glibc's allocator took about a third of the server's CPU under 64
/// concurrent batches of 1 000 events (docs/BENCHMARKS.md). mimalloc keeps per-thread heaps.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Veritrail: a tamper-evident audit trail.
#[derive(Debug, Parser)]
#[command(name = "veritrail", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the service on the embedded store.
    Serve(serve::ServeArgs),
    /// Record one event (from flags, or JSON/NDJSON on stdin with `--stdin`).
    Emit(client::EmitArgs),
    /// Search events.
    Query(client::QueryArgs),
    /// Write an export bundle (events, inclusion proofs, signed checkpoint and manifest).
    Export(client::ExportArgs),
    /// Verify an export bundle offline with the log's verifier key.
    Verify(admin::VerifyArgs),
    /// Check a stopped server's data directory: re-hash everything, cross-check indexes.
    Fsck(admin::DataDirArgs),
    /// Rebuild the derived indexes of a stopped server's data directory from its log.
    Reindex(admin::DataDirArgs),
    /// Convert a stopped server's data directory written by an older version, and prove the
    /// same tree and checkpoints come out.
    Migrate(admin::DataDirArgs),
    /// The log's signing key.
    Key {
        #[command(subcommand)]
        command: admin::KeyCommand,
    },
    /// Import existing audit logs (Kubernetes, CloudTrail, NDJSON) into a running server.
    Import(import::ImportArgs),
    /// Place, list and release legal holds (through the server, with a legal or admin key).
    Hold {
        #[command(subcommand)]
        command: holds::HoldCommand,
    },
    /// The retention policy, and what a retention run would remove (through the server, with an
    /// admin key).
    Retention {
        #[command(subcommand)]
        command: retention::RetentionCommand,
    },
    /// Create, list and revoke API keys (through the server, with an admin key).
    Keys {
        #[command(subcommand)]
        command: keys::KeysCommand,
    },
}

/// The data directory used when none is given.
pub fn default_data_dir() -> PathBuf {
    PathBuf::from("veritrail-data")
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Emit(args) => client::emit(args),
        Command::Query(args) => client::query(args),
        Command::Export(args) => client::export(args),
        Command::Verify(args) => admin::verify(args),
        Command::Fsck(args) => admin::fsck(args),
        Command::Reindex(args) => admin::reindex(args),
        Command::Migrate(args) => admin::migrate(args),
        Command::Key { command } => admin::key(command),
        Command::Import(args) => import::run(args),
        Command::Hold { command } => holds::run(command),
        Command::Retention { command } => retention::run(command),
        Command::Keys { command } => keys::run(command),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", describe(&e));
            ExitCode::from(2)
        }
    }
}

/// An error and its causes on one line, each cause once: library errors often repeat their
/// source in their own message, and a person should read a cause once.
fn describe(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        if text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}
