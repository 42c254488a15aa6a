//! API keys: random 256-bit tokens, kept only as HMAC-SHA256 under a server secret.
//!
//! A key's id is the first 8 bytes (hex) of its HMAC, so a presented token is found by
//! recomputing its HMAC, never by searching with the token; the full HMAC is then compared in
//! constant time. Neither the token nor anything from which it can be computed is stored: a
//! thief of the data directory gets the HMACs and the secret, and a 256-bit random token is not
//! recovered from its HMAC. The registry is one JSON file, replaced atomically on every change.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Directory of the access-control files inside the data directory.
pub const ACCESS_DIR: &str = "access";
const SECRET_FILE: &str = "hmac.secret";
const KEYS_FILE: &str = "keys.json";
/// Prefix of generated keys, so that a leaked one is recognisable (secret scanners).
pub const KEY_PREFIX: &str = "vt_";
/// Shortest key accepted from an operator (`VERITRAIL_ADMIN_KEY`).
pub const MIN_KEY_LEN: usize = 32;
/// How a client certificate is registered: this prefix and its SHA-256 fingerprint stand in
/// for a key. Only a verified TLS certificate produces one; a bearer key never may.
pub const CERT_PREFIX: &str = "cert:sha256:";

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Writes events.
    Producer,
    /// Queries and reads timelines.
    Reader,
    /// A reader that may also take proofs, checkpoints and exports.
    Auditor,
    /// Places and lifts legal holds (and reads, to find what to hold).
    Legal,
    /// Manages keys and settings, and reads and proves, but never writes events.
    Admin,
}

impl Role {
    /// Every role, for messages.
    pub const ALL: [Role; 5] = [
        Role::Producer,
        Role::Reader,
        Role::Auditor,
        Role::Legal,
        Role::Admin,
    ];

    /// The role's name as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Producer => "producer",
            Role::Reader => "reader",
            Role::Auditor => "auditor",
            Role::Legal => "legal",
            Role::Admin => "admin",
        }
    }

    /// Parses a role name.
    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// A key as the registry keeps it. The token itself is never kept.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyRecord {
    #[serde(flatten)]
    pub info: KeyInfo,
    /// HMAC-SHA256 of the token under the server secret, hex.
    mac: String,
}

/// A key as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyInfo {
    pub id: String,
    pub name: String,
    /// The tenant the key acts on; `None` for a cross-tenant admin key.
    pub tenant: Option<String>,
    pub role: Role,
    /// The person the key belongs to: recorded as the actor of everything written with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub person: Option<String>,
    /// May see personal data (for the personal-data features).
    #[serde(default)]
    pub pii: bool,
    /// For a client-certificate identity (mTLS): the certificate's SHA-256 fingerprint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert_sha256: Option<String>,
    pub created_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<DateTime<Utc>>,
}

/// What a new key is for.
#[derive(Debug, Clone)]
pub struct NewKey {
    pub name: String,
    pub tenant: Option<String>,
    pub role: Role,
    pub person: Option<String>,
    pub pii: bool,
    pub expires_at: Option<DateTime<Utc>>,
}

/// Why a presented key was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Unknown,
    Revoked,
    Expired,
}

impl Refusal {
    /// For messages and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Unknown => "unknown key",
            Refusal::Revoked => "revoked key",
            Refusal::Expired => "expired key",
        }
    }
}

/// The registry's errors.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
    #[error("{path} is not a key registry: {source}")]
    Corrupt {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("no random bytes from the operating system: {0}")]
    Random(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> KeyError {
    let what = what.into();
    move |e| KeyError::Io(what, e)
}

/// The key registry of one data directory.
pub struct KeyRegistry {
    dir: PathBuf,
    secret: [u8; 32],
    keys: RwLock<BTreeMap<String, KeyRecord>>,
}

impl KeyRegistry {
    /// Opens the registry in `<data_dir>/access/`, creating the directory and the HMAC secret
    /// (32 random bytes, mode 0600) on first use.
    pub fn open(data_dir: &Path) -> Result<KeyRegistry, KeyError> {
        let dir = data_dir.join(ACCESS_DIR);
        std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
        set_mode(&dir, 0o700)?;
        let secret_path = dir.join(SECRET_FILE);
        let secret = match std::fs::read(&secret_path) {
            Ok(bytes) => bytes.try_into().map_err(|_| {
                KeyError::Invalid(format!(
                    "{} must hold exactly 32 bytes",
                    secret_path.display()
                ))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let secret: [u8; 32] = random()?;
                write_durable(&secret_path, &secret)?;
                secret
            }
            Err(e) => return Err(io(format!("reading {}", secret_path.display()))(e)),
        };
        let keys_path = dir.join(KEYS_FILE);
        let keys = match std::fs::read(&keys_path) {
            Ok(bytes) => {
                let list: Vec<KeyRecord> =
                    serde_json::from_slice(&bytes).map_err(|source| KeyError::Corrupt {
                        path: keys_path.display().to_string(),
                        source,
                    })?;
                list.into_iter().map(|k| (k.info.id.clone(), k)).collect()
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(io(format!("reading {}", keys_path.display()))(e)),
        };
        Ok(KeyRegistry {
            dir,
            secret,
            keys: RwLock::new(keys),
        })
    }

    /// True when no key was ever created.
    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    /// Creates a key with a fresh random token; returns it with the token, shown only now.
    pub fn create(&self, new: NewKey) -> Result<(KeyInfo, String), KeyError> {
        let token = new_token()?;
        let info = self.register(&token, new)?;
        Ok((info, token))
    }

    /// Forgets a key entirely. Only for undoing a creation whose audit event could not be
    /// written; revocation is [`KeyRegistry::revoke`].
    pub fn remove(&self, id: &str) -> Result<(), KeyError> {
        let mut keys = self.write();
        if let Some(removed) = keys.remove(id) {
            self.save(&keys).inspect_err(|_| {
                keys.insert(id.to_string(), removed);
            })?;
        }
        Ok(())
    }

    /// Registers a token chosen by the operator (the bootstrap admin key).
    pub fn register(&self, token: &str, new: NewKey) -> Result<KeyInfo, KeyError> {
        if token.len() < MIN_KEY_LEN {
            return Err(KeyError::Invalid(format!(
                "a key must be at least {MIN_KEY_LEN} characters long"
            )));
        }
        if new.tenant.is_none() && new.role != Role::Admin {
            return Err(KeyError::Invalid(
                "only an admin key may be cross-tenant; name a tenant".into(),
            ));
        }
        let mac = self.mac(token);
        let info = KeyInfo {
            id: id_of(&mac),
            name: new.name,
            tenant: new.tenant,
            role: new.role,
            person: new.person,
            pii: new.pii,
            client_cert_sha256: token.strip_prefix(CERT_PREFIX).map(str::to_string),
            created_at: Utc::now(),
            expires_at: new.expires_at,
            revoked_at: None,
        };
        let mut keys = self.write();
        if keys.contains_key(&info.id) {
            return Err(KeyError::Invalid("this key is already registered".into()));
        }
        keys.insert(
            info.id.clone(),
            KeyRecord {
                info: info.clone(),
                mac: hex(&mac),
            },
        );
        self.save(&keys).inspect_err(|_| {
            keys.remove(&info.id);
        })?;
        Ok(info)
    }

    /// Registers a client certificate (mTLS) by its SHA-256 fingerprint (hex, colons allowed).
    pub fn register_certificate(&self, sha256: &str, new: NewKey) -> Result<KeyInfo, KeyError> {
        self.register(&certificate_token(sha256)?, new)
    }

    /// The identity of a verified client certificate, by its fingerprint.
    pub fn authenticate_certificate(
        &self,
        sha256: &str,
        now: DateTime<Utc>,
    ) -> Result<KeyInfo, Refusal> {
        let token = certificate_token(sha256).map_err(|_| Refusal::Unknown)?;
        self.authenticate(&token, now)
    }

    /// The key a presented token belongs to, if it is known, unrevoked and unexpired.
    pub fn authenticate(&self, token: &str, now: DateTime<Utc>) -> Result<KeyInfo, Refusal> {
        let mac = self.mac(token);
        let keys = self.read();
        let record = keys.get(&id_of(&mac)).ok_or(Refusal::Unknown)?;
        // The id is only a lookup handle; the whole HMAC decides, compared in constant time.
        let stored = unhex(&record.mac).ok_or(Refusal::Unknown)?;
        if !bool::from(stored.as_slice().ct_eq(mac.as_slice())) {
            return Err(Refusal::Unknown);
        }
        let info = &record.info;
        if info.revoked_at.is_some() {
            return Err(Refusal::Revoked);
        }
        if info.expires_at.is_some_and(|at| at <= now) {
            return Err(Refusal::Expired);
        }
        Ok(info.clone())
    }

    /// Every key, oldest first; with `tenant`, only that tenant's.
    pub fn list(&self, tenant: Option<&str>) -> Vec<KeyInfo> {
        let mut list: Vec<KeyInfo> = self
            .read()
            .values()
            .filter(|k| tenant.is_none() || k.info.tenant.as_deref() == tenant)
            .map(|k| k.info.clone())
            .collect();
        list.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        list
    }

    /// The key with `id`.
    pub fn get(&self, id: &str) -> Option<KeyInfo> {
        self.read().get(id).map(|k| k.info.clone())
    }

    /// Revokes a key (it stays listed, with `revoked_at`). `None` if there is no such key.
    pub fn revoke(&self, id: &str) -> Result<Option<KeyInfo>, KeyError> {
        let mut keys = self.write();
        let Some(record) = keys.get_mut(id) else {
            return Ok(None);
        };
        let before = record.info.revoked_at;
        record.info.revoked_at.get_or_insert_with(Utc::now);
        let info = record.info.clone();
        self.save(&keys).inspect_err(|_| {
            if let Some(r) = keys.get_mut(id) {
                r.info.revoked_at = before;
            }
        })?;
        Ok(Some(info))
    }

    fn mac(&self, token: &str) -> [u8; 32] {
        // HMAC accepts keys of any length, so this cannot fail for a 32-byte secret.
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.secret)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(token.as_bytes());
        mac.finalize().into_bytes().into()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, KeyRecord>> {
        // Updates replace whole entries; a panic elsewhere cannot leave one half-written.
        self.keys.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, KeyRecord>> {
        self.keys.write().unwrap_or_else(|p| p.into_inner())
    }

    fn save(&self, keys: &BTreeMap<String, KeyRecord>) -> Result<(), KeyError> {
        let list: Vec<&KeyRecord> = keys.values().collect();
        let bytes = serde_json::to_vec_pretty(&list)
            .map_err(|e| KeyError::Invalid(format!("encoding the key registry: {e}")))?;
        write_durable(&self.dir.join(KEYS_FILE), &bytes)
    }
}

/// The stand-in token of a certificate fingerprint.
fn certificate_token(sha256: &str) -> Result<String, KeyError> {
    let hex: String = sha256
        .chars()
        .filter(|c| *c != ':')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(KeyError::Invalid(format!(
            "`{sha256}` is not a SHA-256 fingerprint (64 hex digits, colons allowed)"
        )));
    }
    Ok(format!("{CERT_PREFIX}{hex}"))
}

fn id_of(mac: &[u8; 32]) -> String {
    hex(&mac[..8])
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A fresh random key: `vt_` and 32 random bytes, base64url.
pub fn new_token() -> Result<String, KeyError> {
    Ok(format!(
        "{KEY_PREFIX}{}",
        URL_SAFE_NO_PAD.encode(random::<32>()?)
    ))
}

fn random<const N: usize>() -> Result<[u8; N], KeyError> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| KeyError::Random(e.to_string()))?;
    Ok(b)
}

fn set_mode(path: &Path, mode: u32) -> Result<(), KeyError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(io(format!("setting the mode of {}", path.display())))
}

/// Replaces `path` with `bytes` (mode 0600): a temporary file, fsync'd, renamed over it, and
/// the directory fsync'd, so a crash leaves the old or the new content, never a mix.
pub fn write_durable(path: &Path, bytes: &[u8]) -> Result<(), KeyError> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io(format!("creating {}", tmp.display())))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(io(format!("writing {}", tmp.display())))?;
    std::fs::rename(&tmp, path).map_err(io(format!("replacing {}", path.display())))?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io(format!("syncing {}", dir.display())))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_key(tenant: &str, role: Role) -> NewKey {
        NewKey {
            name: "test".into(),
            tenant: Some(tenant.into()),
            role,
            person: None,
            pii: false,
            expires_at: None,
        }
    }

    #[test]
    fn keys_authenticate_until_revoked_or_expired_and_survive_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let reg = KeyRegistry::open(dir.path()).expect("open");
        let (info, token) = reg.create(new_key("a", Role::Reader)).expect("create");
        let now = Utc::now();
        assert_eq!(reg.authenticate(&token, now), Ok(info.clone()));
        // One changed character anywhere, first or last, is a different key.
        let mut first = token.clone().into_bytes();
        first[KEY_PREFIX.len()] ^= 1;
        let mut last = token.clone().into_bytes();
        *last.last_mut().expect("non-empty") ^= 1;
        for bad in [first, last] {
            let bad = String::from_utf8(bad).expect("ascii");
            assert_eq!(reg.authenticate(&bad, now), Err(Refusal::Unknown));
        }
        let reopened = KeyRegistry::open(dir.path()).expect("reopen");
        assert_eq!(reopened.authenticate(&token, now), Ok(info.clone()));
        reopened.revoke(&info.id).expect("revoke").expect("known");
        assert_eq!(reopened.authenticate(&token, now), Err(Refusal::Revoked));
        let expiring = NewKey {
            expires_at: Some(now + chrono::Duration::seconds(60)),
            ..new_key("a", Role::Producer)
        };
        let (_, t) = reopened.create(expiring).expect("create");
        assert!(reopened.authenticate(&t, now).is_ok());
        let later = now + chrono::Duration::seconds(61);
        assert_eq!(reopened.authenticate(&t, later), Err(Refusal::Expired));
    }

    #[test]
    fn no_token_is_written_to_disk() {
        let dir = tempfile::tempdir().expect("tempdir");
        let reg = KeyRegistry::open(dir.path()).expect("open");
        let tokens: Vec<String> = (0..3)
            .map(|_| reg.create(new_key("a", Role::Auditor)).expect("create").1)
            .collect();
        let mut files = vec![dir.path().join(ACCESS_DIR)];
        let mut seen = 0;
        while let Some(p) = files.pop() {
            if p.is_dir() {
                files.extend(
                    std::fs::read_dir(&p)
                        .expect("dir")
                        .map(|e| e.expect("entry").path()),
                );
                continue;
            }
            let bytes = std::fs::read(&p).expect("read");
            seen += 1;
            for t in &tokens {
                let secret = &t[KEY_PREFIX.len()..];
                assert!(
                    !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                    "{} holds a key",
                    p.display()
                );
            }
        }
        assert!(seen >= 2, "the registry and the secret were written");
    }

    #[test]
    fn only_admin_keys_may_be_cross_tenant_and_short_keys_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let reg = KeyRegistry::open(dir.path()).expect("open");
        let cross = NewKey {
            tenant: None,
            ..new_key("a", Role::Reader)
        };
        assert!(reg.create(cross).is_err());
        assert!(reg.register("short", new_key("a", Role::Admin)).is_err());
        assert!(reg.is_empty());
    }
}
