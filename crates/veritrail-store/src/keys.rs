//! The log's Ed25519 signing key, created in the data directory on first start.
//!
//! One secret signs every tenant's log, under a name per log: the checkpoints of the log with
//! origin `<origin_prefix>/<tenant>` are signed by the key named after that origin
//! ([`log_signer`]), as C2SP tlog-checkpoint recommends and witnesses expect. The name stored in
//! `signing.key` is the origin prefix in force when the key was created; older versions signed
//! every tenant's checkpoints under it, so it still verifies their history.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use veritrail_core::note::NoteSigner;

use crate::error::StoreError;

/// File name of the signing key inside the data directory.
pub const SIGNING_KEY_FILE: &str = "signing.key";

/// Loads the signing key from `data_dir`, or creates one named `name` (mode 0600). The stored
/// name only checks what older versions signed; each log signs under [`log_signer`]'s name.
pub fn load_or_create_signer(data_dir: &Path, name: &str) -> Result<NoteSigner, StoreError> {
    let path = data_dir.join(SIGNING_KEY_FILE);
    if path.exists() {
        return load_signer(data_dir);
    }
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed)
        .map_err(|e| StoreError::Checkpoint(format!("no randomness for a key: {e}")))?;
    let signer = NoteSigner::new(name, &seed)
        .map_err(|e| StoreError::Checkpoint(format!("key name `{name}`: {e}")))?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(StoreError::io(format!("creating {}", path.display())))?;
    let text = format!("{}\n", signer.to_signer_key());
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(StoreError::io(format!("writing {}", path.display())))?;
    crate::embedded::segment::sync_parent(&path)?;
    tracing::info!(path = %path.display(), "created the log signing key");
    Ok(signer)
}

/// Loads the existing signing key from `data_dir`.
pub fn load_signer(data_dir: &Path) -> Result<NoteSigner, StoreError> {
    let path = data_dir.join(SIGNING_KEY_FILE);
    let text = std::fs::read_to_string(&path)
        .map_err(StoreError::io(format!("reading {}", path.display())))?;
    NoteSigner::from_signer_key(text.trim())
        .map_err(|e| StoreError::Checkpoint(format!("{}: {e}", path.display())))
}

/// The signer of the log with this origin: the data directory's key, named after the origin.
pub fn log_signer(key: &NoteSigner, origin: &str) -> Result<NoteSigner, StoreError> {
    key.with_name(origin).map_err(|e| {
        StoreError::Checkpoint(format!(
            "the origin `{origin}` cannot name a signing key ({e}); choose an origin prefix without `+` or spaces"
        ))
    })
}
