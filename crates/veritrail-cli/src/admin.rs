//! Commands on a data directory or a bundle, with no server: `verify`, `fsck`, `reindex`, `key`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use veritrail_core::note::NoteVerifier;
use veritrail_store::embedded::EmbeddedStore;

/// Flags of `verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The bundle written by `veritrail export`.
    bundle: PathBuf,
    /// The log's verifier key (`name+hash+base64`, as `veritrail key show` prints), or a file holding it.
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
        .filter(|n| veritrail_store::embedded::valid_tenant(n))
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

/// `veritrail fsck`: exit 0 when clean, 1 naming the damage.
pub fn fsck(args: DataDirArgs) -> anyhow::Result<ExitCode> {
    let _lock = lock_stopped(&args.data_dir)?;
    let signer = veritrail_store::keys::load_signer(&args.data_dir)?;
    let vkey = signer.verifier();
    let mut clean = true;
    for tenant in tenants(&args.data_dir)? {
        let dir = EmbeddedStore::tenant_dir(&args.data_dir, &tenant);
        let bar = ProgressBar::new(0).with_style(
            ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_message(format!("fsck {tenant}"));
        let report = veritrail_store::fsck::check(&dir, &vkey, |done, total| {
            bar.set_length(total);
            bar.set_position(done);
        })
        .with_context(|| format!("checking tenant {tenant} (is the server stopped?)"))?;
        bar.finish_and_clear();
        let cp = report
            .checkpoint_size
            .map_or("no checkpoint yet".into(), |s| format!("checkpoint at {s}"));
        if report.ok() {
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
    Ok(if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `veritrail reindex`: deletes and rebuilds every tenant's derived state.
pub fn reindex(args: DataDirArgs) -> anyhow::Result<ExitCode> {
    crate::serve::init_logging();
    let _lock = lock_stopped(&args.data_dir)?;
    for tenant in tenants(&args.data_dir)? {
        let dir = EmbeddedStore::tenant_dir(&args.data_dir, &tenant);
        let spinner =
            ProgressBar::new_spinner().with_message(format!("rebuilding the indexes of {tenant}"));
        spinner.enable_steady_tick(Duration::from_millis(120));
        let index = dir.join(veritrail_store::index::INDEX_DIR);
        // Hold the index's lock while deleting it: a running server holds it, and then nothing is
        // deleted. The lock file itself stays; it is released just before the rebuild takes it.
        let lock = veritrail_store::index::lock(&index)
            .with_context(|| format!("locking {}", index.display()))?;
        if index.exists() {
            std::fs::remove_dir_all(&index)
                .with_context(|| format!("removing {}", index.display()))?;
        }
        drop(lock);
        let log = veritrail_store::log::TenantLog::open(&dir, &tenant, Default::default())
            .with_context(|| format!("replaying the log of {tenant}"))?;
        let size = log.head()?.size;
        log.close();
        spinner.finish_and_clear();
        outln!("{tenant}: indexed {size} events");
    }
    Ok(ExitCode::SUCCESS)
}

/// `veritrail key …`.
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Print the verifier key (C2SP vkey) that checks this server's checkpoints and bundles.
    Show(DataDirArgs),
}

/// Runs a key command.
pub fn key(cmd: KeyCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        KeyCommand::Show(args) => {
            let signer = veritrail_store::keys::load_signer(&args.data_dir)
                .context("no signing key yet: it is created on the first `veritrail serve`")?;
            outln!("{}", signer.vkey());
        }
    }
    Ok(ExitCode::SUCCESS)
}
