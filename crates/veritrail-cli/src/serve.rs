//! `veritrail serve`: settings from flags, `VERITRAIL_*` variables and a TOML file (in that
//! order of precedence), then the embedded store and the HTTP API.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use serde::Deserialize;
use veritrail_server::access::keys::KeyRegistry;
use veritrail_server::access::{bootstrap, Access, Bootstrap};
use veritrail_server::{ApiConfig, AppState};
use veritrail_store::embedded::LogConfig;
use veritrail_store::embedded::{EmbeddedConfig, EmbeddedEngine};
use veritrail_store::Ledger;
use veritrail_store::Store;

/// Flags of `serve`; each also reads a `VERITRAIL_*` variable.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Directory of the embedded store [default: ./veritrail-data].
    #[arg(long, env = "VERITRAIL_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "VERITRAIL_LISTEN")]
    listen: Option<SocketAddr>,
    /// A TOML file with any of these settings (snake_case keys).
    #[arg(long, env = "VERITRAIL_CONFIG")]
    config: Option<PathBuf>,
    /// Checkpoint origins are `<prefix>/<tenant>`, and each log's key is named after its origin
    /// [default: veritrail].
    #[arg(long, env = "VERITRAIL_ORIGIN_PREFIX")]
    origin_prefix: Option<String>,
    /// Sign a checkpoint at most this often while the log grows [default: 1000].
    #[arg(long, env = "VERITRAIL_CHECKPOINT_INTERVAL_MS")]
    checkpoint_interval_ms: Option<u64>,
    /// Start a new segment file after this many MiB [default: 64].
    #[arg(long, env = "VERITRAIL_SEGMENT_MIB")]
    segment_mib: Option<u64>,
    /// Start even when a tenant's checkpoints.log does not reach the signed checkpoints its log
    /// recorded (the history was lost or removed), and begin a new history with the next
    /// checkpoint. Only for a deliberate reset: without it such a store is refused.
    #[arg(long)]
    reset_checkpoint_history: bool,
    /// Events waiting for the disk beyond which requests get 429, and 503 on the Kubernaut API
    /// (whose client drops a batch on 429) [default: 100000].
    #[arg(long, env = "VERITRAIL_MAX_QUEUED_EVENTS")]
    max_queued_events: Option<usize>,
    /// Largest request body in bytes, as sent and, when compressed, decoded [default: 5242880].
    #[arg(long, env = "VERITRAIL_MAX_BODY_BYTES")]
    max_body_bytes: Option<usize>,
    /// Most events in one request [default: 1000].
    #[arg(long, env = "VERITRAIL_MAX_EVENTS_PER_REQUEST")]
    max_events_per_request: Option<usize>,
    /// Serve without authentication: anyone who reaches the port may read and write every
    /// tenant. For local experiments only.
    #[arg(long, env = "VERITRAIL_INSECURE_NO_AUTH")]
    insecure_no_auth: bool,
    /// Serve HTTPS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, env = "VERITRAIL_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, env = "VERITRAIL_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// Accept client certificates (mTLS) that chain to these CA certificates (PEM); a registered
    /// certificate then authenticates like a key.
    #[arg(long, env = "VERITRAIL_TLS_CLIENT_CA")]
    tls_client_ca: Option<PathBuf>,
    /// Also accept bearer JWTs (Kubernetes service-account tokens) from the issuers in this TOML
    /// file, mapped to tenants and roles (see `docs/security.md`).
    #[arg(long, env = "VERITRAIL_JWT_CONFIG")]
    jwt_config: Option<PathBuf>,
}

/// The TOML file's keys.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    data_dir: Option<PathBuf>,
    listen: Option<SocketAddr>,
    origin_prefix: Option<String>,
    checkpoint_interval_ms: Option<u64>,
    segment_mib: Option<u64>,
    max_queued_events: Option<usize>,
    max_body_bytes: Option<usize>,
    max_events_per_request: Option<usize>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_client_ca: Option<PathBuf>,
    jwt_config: Option<PathBuf>,
}

/// Resolved settings.
struct Settings {
    listen: SocketAddr,
    insecure_no_auth: bool,
    tls: Option<veritrail_server::tls::TlsFiles>,
    jwt_config: Option<PathBuf>,
    store: EmbeddedConfig,
    /// Checkpoint origins are `<origin_prefix>/<tenant>`; each log's key is named after its
    /// origin.
    origin_prefix: String,
    api: ApiConfig,
}

/// The origin prefix when none is set.
const DEFAULT_ORIGIN_PREFIX: &str = "veritrail";

fn read_file_settings(config: Option<&Path>) -> anyhow::Result<FileSettings> {
    Ok(match config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?
        }
        None => FileSettings::default(),
    })
}

/// The data directory and origin prefix as `serve` resolves them from these flags (or their
/// variables), then the TOML file `config`, then the defaults: for commands that name a log's
/// key without a server.
pub(crate) fn data_dir_and_origin_prefix(
    data_dir: Option<PathBuf>,
    config: Option<&Path>,
    origin_prefix: Option<String>,
) -> anyhow::Result<(PathBuf, String)> {
    let file = read_file_settings(config)?;
    Ok((
        data_dir
            .or(file.data_dir)
            .unwrap_or_else(crate::default_data_dir),
        origin_prefix
            .or(file.origin_prefix)
            .unwrap_or_else(|| DEFAULT_ORIGIN_PREFIX.into()),
    ))
}

fn resolve(args: ServeArgs) -> anyhow::Result<Settings> {
    let file = read_file_settings(args.config.as_deref())?;
    let log_defaults = LogConfig::default();
    let api_defaults = ApiConfig::default();
    let segment_mib = args
        .segment_mib
        .or(file.segment_mib)
        .unwrap_or(log_defaults.segment_bytes >> 20);
    anyhow::ensure!(segment_mib >= 1, "segment_mib must be at least 1");
    let interval_ms = args
        .checkpoint_interval_ms
        .or(file.checkpoint_interval_ms)
        .unwrap_or(1000);
    anyhow::ensure!(
        interval_ms >= 10,
        "checkpoint_interval_ms must be at least 10"
    );
    let tls = match (
        args.tls_cert.or(file.tls_cert),
        args.tls_key.or(file.tls_key),
        args.tls_client_ca.or(file.tls_client_ca),
    ) {
        (Some(cert), Some(key), client_ca) => Some(veritrail_server::tls::TlsFiles {
            cert,
            key,
            client_ca,
        }),
        (None, None, None) => None,
        _ => anyhow::bail!(
            "TLS needs both tls_cert and tls_key (and tls_client_ca only together with them)"
        ),
    };
    Ok(Settings {
        insecure_no_auth: args.insecure_no_auth,
        tls,
        jwt_config: args.jwt_config.or(file.jwt_config),
        listen: args
            .listen
            .or(file.listen)
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080))),
        store: EmbeddedConfig {
            data_dir: args
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(crate::default_data_dir),
            log: LogConfig {
                segment_bytes: segment_mib << 20,
                max_queued_events: args
                    .max_queued_events
                    .or(file.max_queued_events)
                    .unwrap_or(log_defaults.max_queued_events),
                ..log_defaults
            },
            reset_checkpoint_history: args.reset_checkpoint_history,
        },
        origin_prefix: args
            .origin_prefix
            .or(file.origin_prefix)
            .unwrap_or_else(|| DEFAULT_ORIGIN_PREFIX.into()),
        api: ApiConfig {
            max_body_bytes: args
                .max_body_bytes
                .or(file.max_body_bytes)
                .unwrap_or(api_defaults.max_body_bytes),
            max_events_per_request: args
                .max_events_per_request
                .or(file.max_events_per_request)
                .unwrap_or(api_defaults.max_events_per_request),
            checkpoint_interval: Duration::from_millis(interval_ms),
            ..api_defaults
        },
    })
}

/// Initializes logging to stderr at `info` (`RUST_LOG` adjusts the level).
pub fn init_logging() {
    init_logging_at("info");
}

/// Initializes logging to stderr at `level` unless `RUST_LOG` says otherwise.
pub fn init_logging_at(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Runs the server until SIGINT or SIGTERM.
pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    init_logging();
    let settings = resolve(args)?;
    veritrail_server::observe::install_metrics();
    // The port first: a busy port must not leave a new data directory with keys behind.
    let listener = std::net::TcpListener::bind(settings.listen)
        .with_context(|| format!("listening on {}", settings.listen))?;
    listener
        .set_nonblocking(true)
        .context("setting up the listening socket")?;
    let limits = veritrail_server::connections::Limits {
        max_connections: veritrail_server::connections::fit_to_file_limit(
            veritrail_server::connections::Limits::default().max_connections,
        ),
        ..Default::default()
    };
    let data_dir = settings.store.data_dir.clone();
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let signer = veritrail_store::keys::load_or_create_signer(&data_dir, &settings.origin_prefix)?;
    tracing::info!(data_dir = %data_dir.display(), "opening the store (recovering if needed)");
    let engine =
        EmbeddedEngine::open(settings.store, signer.verifier()).context("opening the store")?;
    let store = Arc::new(Ledger::new(
        engine,
        signer.clone(),
        &settings.origin_prefix,
    )?);
    let mut access = access_control(&data_dir, settings.insecure_no_auth)?;
    if let Some(path) = &settings.jwt_config {
        anyhow::ensure!(
            !settings.insecure_no_auth,
            "--jwt-config and --insecure-no-auth contradict each other"
        );
        let issuers = veritrail_server::access::jwt::Issuers::load(path, fetch_jwks)
            .with_context(|| format!("loading the JWT issuers of {}", path.display()))?;
        access = access.with_jwt(issuers);
    }
    let tls = settings
        .tls
        .as_ref()
        .map(veritrail_server::tls::acceptor)
        .transpose()
        .context("setting up TLS")?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let state = Arc::new(AppState::new(store.clone(), signer, settings.api, access));
    let served = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let addr = listener.local_addr()?;
        let url = veritrail_server::tls::url(addr, tls.is_some());
        outln!("veritrail listening on {url}");
        let vkey = state.log_signer(veritrail_server::DEFAULT_TENANT).map(|s| s.vkey());
        tracing::info!(%url, default_tenant_vkey = %vkey.unwrap_or_default(), max_connections = limits.max_connections, "serving");
        veritrail_server::spawn_checkpointer(state.clone());
        let app = veritrail_server::router(state);
        veritrail_server::connections::serve(listener, app, tls, limits, shutdown_signal())
            .await
            .context("serving")
    });
    tracing::info!("shutting down: finishing queued writes");
    store.close();
    served.map(|()| ExitCode::SUCCESS)
}

/// Reads an issuer's JWKS from its URL (once, at startup), trusting the CA in
/// `VERITRAIL_JWKS_CA` as well as the system's (a cluster's own CA, typically), and sending the
/// token in `VERITRAIL_JWKS_TOKEN` when the issuer wants one.
fn fetch_jwks(url: &str) -> Result<String, String> {
    let mut builder = reqwest::blocking::Client::builder().timeout(Duration::from_secs(10));
    if let Ok(ca) = std::env::var("VERITRAIL_JWKS_CA") {
        let pem = std::fs::read(&ca).map_err(|e| format!("reading {ca}: {e}"))?;
        let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| format!("{ca}: {e}"))?;
        builder = builder.add_root_certificate(cert);
    }
    let client = builder.build().map_err(|e| e.to_string())?;
    let mut request = client.get(url);
    if let Ok(token) = std::env::var("VERITRAIL_JWKS_TOKEN") {
        request = request.bearer_auth(token);
    }
    let response = request.send().map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("HTTP {}", response.status()));
    }
    response.text().map_err(|e| e.to_string())
}

/// The key registry, with the first admin key bootstrapped, or no authentication at all.
fn access_control(data_dir: &std::path::Path, insecure: bool) -> anyhow::Result<Access> {
    if insecure {
        tracing::warn!(
            "AUTHENTICATION IS OFF (--insecure-no-auth): anyone who can reach this port can read, \
             write and export every tenant's audit trail"
        );
        return Ok(Access::insecure());
    }
    let registry = KeyRegistry::open(data_dir).context("opening the key registry")?;
    let operator_key = std::env::var("VERITRAIL_ADMIN_KEY")
        .ok()
        .filter(|k| !k.is_empty());
    match bootstrap(&registry, operator_key.as_deref(), data_dir)
        .context("creating the first admin key (VERITRAIL_ADMIN_KEY)")?
    {
        Bootstrap::Existing if operator_key.is_some() => tracing::warn!(
            "VERITRAIL_ADMIN_KEY is ignored: keys exist already (manage them with `veritrail keys`)"
        ),
        Bootstrap::Existing => {}
        Bootstrap::FromEnvironment => {
            tracing::info!("registered VERITRAIL_ADMIN_KEY as the first admin key")
        }
        Bootstrap::Generated(path) => tracing::warn!(
            path = %path.display(),
            "generated the first admin key and wrote it to this file (mode 0600): move it to \
             your secret store and delete the file"
        ),
    }
    Ok(Access::with_keys(registry))
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! { () = ctrl_c => {}, () = term => {} }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Wrapper {
        #[command(flatten)]
        serve: ServeArgs,
    }

    #[test]
    fn flags_beat_the_file_and_the_file_beats_defaults() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("veritrail.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:9999\"\nsegment_mib = 8\norigin_prefix = \"audit.example\"\n",
        )
        .expect("write config");
        let args = Wrapper::parse_from([
            "x",
            "--config",
            file.to_str().expect("utf-8"),
            "--segment-mib",
            "2",
        ])
        .serve;
        let s = resolve(args).expect("resolves");
        assert_eq!(s.listen, "127.0.0.1:9999".parse().expect("addr"));
        assert_eq!(s.store.log.segment_bytes, 2 << 20);
        assert_eq!(s.origin_prefix, "audit.example");
        assert_eq!(s.api.max_events_per_request, 1000);
        assert_eq!(s.store.data_dir, crate::default_data_dir());
    }

    #[test]
    fn unknown_keys_in_the_file_are_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("veritrail.toml");
        std::fs::write(&file, "listne = \"127.0.0.1:1\"\n").expect("write config");
        let args = Wrapper::parse_from(["x", "--config", file.to_str().expect("utf-8")]).serve;
        let err = resolve(args).err().expect("refused");
        assert!(format!("{err:#}").contains("listne"), "{err:#}");
    }
}
