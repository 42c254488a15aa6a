//! `veritrail-bench`: the load generator. It measures durable ingest (throughput, latency, and the
//! CPU time the server and the generator spend per event) and query latency of a Veritrail server
//! and of PostgreSQL with Kubernaut's schema, on the same workload in the same run.
//!
//! Exit codes: 0 success, 2 usage or runtime error.

/// Writes a line to stdout. A closed pipe (`veritrail-bench … | head`) is a normal end, not a
/// panic, so write errors are ignored: there is nowhere left to report them.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

mod bench;
mod bench_pg;
mod client;
mod cpu;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = bench::BenchArgs::parse();
    match bench::run(args) {
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
