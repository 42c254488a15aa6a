//! Commands on a data directory or a bundle, with no server: `verify`, `fsck`, `reindex`,
//! `migrate`, `key`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use veritrail_core::note::NoteVerifier;
use veritrail_store::embedded::EmbeddedEngine;

/// Flags of `verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The bundle written by `veritrail export`.
    bundle: PathBuf,
    /// The log's verifier key (`name+hash+base64`, as `veritrail key show --tenant T` prints and
    /// `GET /v1/key` serves to T's callers), or a file holding it.
    #[arg(long, visible_alias = "key", env = "VERITRAIL_VKEY")]
    vkey: String,
}

/// Reads a vkey given inline or as a file name.
fn read_vkey(arg: &str) -> anyhow::Result<NoteVerifier> {
    let text = if Path::new(arg).is_file() {
        std::fs::read_to_string(arg).with_context(|| format!("reading {arg}"))?
    } else {
        arg.to_string()
    };
    NoteVerifier::from_vkey(text.trim())
        .map_err(|e| anyhow::anyhow!("`{}` is not a verifier key: {e}", text.trim()))
}

/// `veritrail verify`: exit 0 only if every event, proof and signature holds.
pub fn verify(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let vkey = read_vkey(&args.vkey)?;
    let text = std::fs::read_to_string(&args.bundle)
        .with_context(|| format!("reading {}", args.bundle.display()))?;
    let report = veritrail_core::bundle::verify(&text, &vkey);
    if report.ok() {
        outln!(
            "OK: {} events verified against the signed checkpoint of {} at tree size {}, signed by {}",
            report.events_checked,
            report.origin.as_deref().unwrap_or("?"),
            report.tree_size.map_or("?".into(), |s| s.to_string()),
            vkey.name()
        );
        return Ok(ExitCode::SUCCESS);
    }
    for p in &report.problems {
        outln!("FAIL: {p}");
    }
    outln!(
        "{} problem(s) found in {}",
        report.problems.len(),
        args.bundle.display()
    );
    Ok(ExitCode::from(1))
}

/// A data directory argument.
#[derive(Debug, Args)]
pub struct DataDirArgs {
    /// The server's data directory (the server must be stopped).
    #[arg(long, env = "VERITRAIL_DATA_DIR", default_value_os_t = crate::default_data_dir())]
    data_dir: PathBuf,
}

fn tenants(data_dir: &Path) -> anyhow::Result<Vec<String>> {
    let dir = data_dir.join("tenants");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .with_context(|| format!("{} is not a Veritrail data directory", data_dir.display()))?
        .filter_map(|e| e.ok()?.file_name().to_str().map(str::to_string))
        .filter(|n| veritrail_store::valid_tenant(n))
        .collect();
    names.sort();
    Ok(names)
}

/// Checks that `data_dir` is a data directory and takes its lock, which a running server holds.
fn lock_stopped(data_dir: &std::path::Path) -> anyhow::Result<std::fs::File> {
    anyhow::ensure!(
        data_dir.join("tenants").is_dir(),
        "{} is not a Veritrail data directory (it has no tenants/ directory; `veritrail serve` creates one)",
        data_dir.display()
    );
    Ok(veritrail_store::embedded::lock_data_dir(data_dir)?)
}

/// `veritrail fsck`: exit 0 when clean, 1 naming the damage, 3 when there is no damage but the
/// store needs the recovery the next server start does (it stopped without a clean shutdown).
pub fn fsck(args: DataDirArgs) -> anyhow::Result<ExitCode> {
    let _lock = lock_stopped(&args.data_dir)?;
    let key = veritrail_store::keys::load_signer(&args.data_dir)?.verifier();
    let mut clean = true;
    let mut recovery = false;
    for tenant in tenants(&args.data_dir)? {
        let dir = EmbeddedEngine::tenant_dir(&args.data_dir, &tenant);
        let vkey = latest_checkpoint_key(&dir, &key);
        let bar = ProgressBar::new(0).with_style(
            ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_message(format!("fsck {tenant}"));
        let report = veritrail_store::embedded::fsck::check(&dir, &vkey, |done, total| {
            bar.set_length(total);
            bar.set_position(done);
        })
        .with_context(|| format!("checking tenant {tenant} (is the server stopped?)"))?;
        bar.finish_and_clear();
        let cp = report
            .checkpoint_size
            .map_or("no checkpoint yet".into(), |s| format!("checkpoint at {s}"));
        if report.ok() && !report.needs_recovery.is_empty() {
            recovery = true;
            for n in &report.needs_recovery {
                outln!("{tenant}: NEEDS RECOVERY: {n}");
            }
            outln!(
                "{tenant}: no damage in {} events, {cp}; the server stopped without a clean shutdown: starting it recovers the store",
                report.events
            );
        } else if report.ok() {
            outln!(
                "{tenant}: OK, {} events in {} segments ({} bytes), {cp}",
                report.events,
                report.segments,
                report.bytes
            );
        } else {
            clean = false;
            for p in &report.problems {
                outln!("{tenant}: DAMAGE: {p}");
            }
            outln!(
                "{tenant}: {} problem(s) in {} events",
                report.problems.len(),
                report.events
            );
        }
    }
    Ok(if !clean {
        ExitCode::from(1)
    } else if recovery {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    })
}

/// The key that signed the tenant's latest checkpoint: the data directory's key under the name
/// the checkpoint's signature carries (the log's origin, or the key's own name for a checkpoint
/// of an older version). fsck checks that checkpoint with it; a history that does not open is
/// left to fsck to report.
fn latest_checkpoint_key(dir: &Path, key: &NoteVerifier) -> NoteVerifier {
    let history = dir.join("checkpoints.log");
    if !history.exists() {
        return key.clone();
    }
    veritrail_store::embedded::formats::Checkpoints::open(&history, key)
        .ok()
        .and_then(|c| c.latest())
        .and_then(|latest| key.with_name(&latest.key_name).ok())
        .unwrap_or_else(|| key.clone())
}

/// `veritrail migrate`: converts a data directory written by an older version to the current
/// layout, tenant by tenant, and proves each log hashes to the same tree and its signed
/// checkpoints still hold. Exit 0 when every tenant converted, 1 naming the one that did not.
pub fn migrate(args: DataDirArgs) -> anyhow::Result<ExitCode> {
    crate::serve::init_logging();
    let _lock = lock_stopped(&args.data_dir)?;
    let key = veritrail_store::keys::load_signer(&args.data_dir)?.verifier();
    for tenant in tenants(&args.data_dir)? {
        let dir = EmbeddedEngine::tenant_dir(&args.data_dir, &tenant);
        let vkey = latest_checkpoint_key(&dir, &key);
        let spinner = ProgressBar::new_spinner().with_message(format!("converting {tenant}"));
        spinner.enable_steady_tick(Duration::from_millis(120));
        let done = EmbeddedEngine::migrate(&args.data_dir, &tenant, &vkey, |left| {
            spinner.set_message(format!(
                "converting {tenant}: {left} segment(s) left to seal"
            ));
        });
        spinner.finish_and_clear();
        match done {
            Ok(m) => outln!(
                "{tenant}: converted: {} events in {} segments ({} sealed now), root {} unchanged, {}",
                m.events,
                m.segments,
                m.sealed,
                veritrail_core::hash::to_b64(&m.root),
                m.checkpoint_size
                    .map_or("no checkpoint yet".into(), |s| format!("signed checkpoint at {s} verifies"))
            ),
            Err(e) => {
                outln!("{tenant}: NOT CONVERTED: {e}");
                return Ok(ExitCode::from(1));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `veritrail reindex`: deletes and rebuilds every tenant's derived state.
pub fn reindex(args: DataDirArgs) -> anyhow::Result<ExitCode> {
    crate::serve::init_logging();
    let _lock = lock_stopped(&args.data_dir)?;
    for tenant in tenants(&args.data_dir)? {
        let spinner =
            ProgressBar::new_spinner().with_message(format!("rebuilding the indexes of {tenant}"));
        spinner.enable_steady_tick(Duration::from_millis(120));
        let size = EmbeddedEngine::reindex(&args.data_dir, &tenant)
            .with_context(|| format!("rebuilding the indexes of {tenant}"))?;
        spinner.finish_and_clear();
        outln!("{tenant}: indexed {size} events");
    }
    Ok(ExitCode::SUCCESS)
}

/// `veritrail key …`.
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Print a log's verifier key (C2SP vkey), which checks its checkpoints and bundles: the
    /// data directory's key named after the log's origin, `<origin prefix>/<tenant>`.
    Show(KeyShowArgs),
}

/// Flags of `key show`.
#[derive(Debug, Args)]
pub struct KeyShowArgs {
    /// The server's data directory [default: ./veritrail-data].
    #[arg(long, env = "VERITRAIL_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// The server's TOML settings file, for its `data_dir` and `origin_prefix`.
    #[arg(long, env = "VERITRAIL_CONFIG")]
    config: Option<PathBuf>,
    /// The origin prefix the server runs with [default: veritrail].
    #[arg(long, env = "VERITRAIL_ORIGIN_PREFIX")]
    origin_prefix: Option<String>,
    /// The tenant whose key to print [default: default].
    #[arg(long, conflicts_with_all = ["all", "legacy"])]
    tenant: Option<String>,
    /// Print the key of every tenant that has a log, one per line.
    #[arg(long, conflicts_with = "legacy")]
    all: bool,
    /// Print the key under the name stored in the key file, the name under which older versions
    /// signed every tenant's checkpoints and bundles; it checks those.
    #[arg(long)]
    legacy: bool,
}

/// Runs a key command.
pub fn key(cmd: KeyCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        KeyCommand::Show(args) => {
            let (data_dir, prefix) = crate::serve::data_dir_and_origin_prefix(
                args.data_dir,
                args.config.as_deref(),
                args.origin_prefix,
            )?;
            let key = veritrail_store::keys::load_signer(&data_dir)
                .context("no signing key yet: it is created on the first `veritrail serve`")?;
            if args.legacy {
                outln!("{}", key.vkey());
                return Ok(ExitCode::SUCCESS);
            }
            let names = match args.tenant {
                _ if args.all => tenants(&data_dir)?,
                Some(t) => {
                    anyhow::ensure!(
                        veritrail_store::valid_tenant(&t),
                        "`{t}` is not a tenant name (a-z, 0-9, - and _, at most 64)"
                    );
                    vec![t]
                }
                None => vec![veritrail_server::DEFAULT_TENANT.to_string()],
            };
            for tenant in names {
                let origin = veritrail_store::ledger::log_origin(&prefix, &tenant);
                outln!(
                    "{}",
                    veritrail_store::keys::log_signer(&key, &origin)?.vkey()
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
