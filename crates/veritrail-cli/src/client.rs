//! Commands that talk to a running server: `emit`, `query`, `export`.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Args;
use serde_json::{json, Value};

use crate::filters::FilterArgs;

/// Where the server is and how to authenticate.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// Base URL of the server.
    #[arg(
        long,
        env = "VERITRAIL_SERVER",
        default_value = "http://127.0.0.1:8080"
    )]
    pub server: String,
    /// API key, sent as `Authorization: Bearer` (prefer the variable: flags show in `ps`).
    #[arg(long = "key", env = "VERITRAIL_KEY", hide_env_values = true)]
    pub key: Option<String>,
    /// Tenant to act on, for a cross-tenant admin key (sent as `Veritrail-Tenant`).
    #[arg(long, env = "VERITRAIL_TENANT")]
    pub tenant: Option<String>,
    /// A CA certificate (PEM) to trust for an `https://` server, beside the system's.
    #[arg(long, env = "VERITRAIL_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// A client certificate and its key (PEM, one file) for servers that accept them (mTLS).
    #[arg(long, env = "VERITRAIL_CLIENT_CERT")]
    pub client_cert: Option<PathBuf>,
}

impl ServerArgs {
    /// The PEM files named by `--ca-cert` and `--client-cert`.
    pub fn tls_pems(&self) -> anyhow::Result<TlsPems> {
        let read = |p: &Option<PathBuf>| -> anyhow::Result<Option<Vec<u8>>> {
            p.as_ref()
                .map(|p| std::fs::read(p).with_context(|| format!("reading {}", p.display())))
                .transpose()
        };
        Ok((read(&self.ca_cert)?, read(&self.client_cert)?))
    }
}

/// The contents of `--ca-cert` and `--client-cert`, when given.
pub type TlsPems = (Option<Vec<u8>>, Option<Vec<u8>>);

/// An HTTP client that sends the API key as a bearer token when there is one.
pub struct Client {
    http: reqwest::blocking::Client,
    base: String,
    key: Option<String>,
    tenant: Option<String>,
}

impl Client {
    /// A client for `args.server`.
    pub fn new(args: &ServerArgs) -> anyhow::Result<Client> {
        let mut builder = reqwest::blocking::Client::builder().timeout(None);
        let (ca, identity) = args.tls_pems()?;
        if let Some(pem) = ca {
            builder = builder.add_root_certificate(
                reqwest::Certificate::from_pem(&pem).context("reading --ca-cert")?,
            );
        }
        if let Some(pem) = identity {
            builder = builder
                .identity(reqwest::Identity::from_pem(&pem).context("reading --client-cert")?);
        }
        let http = builder.build().context("building the HTTP client")?;
        Ok(Client {
            http,
            base: args.server.trim_end_matches('/').to_string(),
            key: args.key.clone().filter(|k| !k.is_empty()),
            tenant: args.tenant.clone(),
        })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::blocking::RequestBuilder {
        let mut r = self.http.request(method, format!("{}{path}", self.base));
        if let Some(k) = &self.key {
            r = r.bearer_auth(k);
        }
        if let Some(t) = &self.tenant {
            r = r.header("Veritrail-Tenant", t);
        }
        r
    }

    /// POST JSON and return the status and body whatever the status (for callers that handle
    /// particular refusals themselves).
    pub fn post_json_raw(&self, path: &str, body: Vec<u8>) -> anyhow::Result<(u16, String)> {
        let resp = self
            .request(reqwest::Method::POST, path)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .with_context(|| self.unreachable())?;
        let status = resp.status().as_u16();
        Ok((status, resp.text().unwrap_or_default()))
    }

    /// DELETE; the response must be a success.
    pub fn delete(&self, path: &str) -> anyhow::Result<reqwest::blocking::Response> {
        let resp = self
            .request(reqwest::Method::DELETE, path)
            .send()
            .with_context(|| self.unreachable())?;
        check(resp)
    }

    /// GET with query parameters; the response must be a success.
    pub fn get(
        &self,
        path: &str,
        params: &[(String, String)],
    ) -> anyhow::Result<reqwest::blocking::Response> {
        let resp = self
            .request(reqwest::Method::GET, path)
            .query(params)
            .send()
            .with_context(|| self.unreachable())?;
        check(resp)
    }

    /// POST a body with a media type; the response must be a success.
    pub fn post(
        &self,
        path: &str,
        media: &str,
        body: Vec<u8>,
    ) -> anyhow::Result<reqwest::blocking::Response> {
        let resp = self
            .request(reqwest::Method::POST, path)
            .header(reqwest::header::CONTENT_TYPE, media)
            .body(body)
            .send()
            .with_context(|| self.unreachable())?;
        check(resp)
    }

    /// POST a JSON body; the response must be a success, and its JSON body is returned.
    pub fn post_json(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let resp = self.post(path, "application/json", body.to_string().into_bytes())?;
        Ok(resp.json()?)
    }

    fn unreachable(&self) -> String {
        format!("cannot reach the server at {} (is `veritrail serve` running? set --server or VERITRAIL_SERVER)", self.base)
    }
}

/// Turns an error response (problem+json or not) into a readable error.
fn check(resp: reqwest::blocking::Response) -> anyhow::Result<reqwest::blocking::Response> {
    if resp.status().is_success() {
        return Ok(resp);
    }
    let status = resp.status();
    let body = resp.text().unwrap_or_default();
    let Ok(problem) = serde_json::from_str::<Value>(&body) else {
        bail!("server answered {status}: {}", body.trim());
    };
    let mut msg = format!(
        "server answered {status}: {}",
        problem["detail"]
            .as_str()
            .or(problem["title"].as_str())
            .unwrap_or("no detail")
    );
    for e in problem["errors"].as_array().into_iter().flatten() {
        msg.push_str(&format!(
            "\n  event {}: `{}` {}",
            e["index"],
            e["field"].as_str().unwrap_or("?"),
            e["message"].as_str().unwrap_or("")
        ));
    }
    bail!(msg)
}

/// Flags of `emit`.
#[derive(Debug, Args)]
pub struct EmitArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Read events from stdin instead: one JSON object, a JSON array, or NDJSON.
    #[arg(long, conflicts_with = "event_type")]
    stdin: bool,
    /// Dotted event type, e.g. `deploy.release.completed`.
    #[arg(long, short = 't', required_unless_present = "stdin")]
    event_type: Option<String>,
    /// Defaults to the type's first segment.
    #[arg(long)]
    category: Option<String>,
    /// Defaults to the type's last segment.
    #[arg(long)]
    action: Option<String>,
    #[arg(long, default_value = "success")]
    outcome: String,
    #[arg(long)]
    actor_type: Option<String>,
    #[arg(long, short = 'a')]
    actor_id: Option<String>,
    #[arg(long)]
    resource_type: Option<String>,
    #[arg(long, short = 'r')]
    resource_id: Option<String>,
    #[arg(long, short = 'c')]
    correlation_id: Option<String>,
    #[arg(long, short = 'n')]
    namespace: Option<String>,
    #[arg(long)]
    severity: Option<String>,
    /// Idempotency key (a UUID); a random UUIDv7 otherwise.
    #[arg(long)]
    event_id: Option<String>,
    /// `event_data` as a JSON object.
    #[arg(long, value_name = "JSON")]
    data: Option<String>,
    /// Where the producer keeps its id, sequence and unsent events
    /// [default: $XDG_STATE_HOME/veritrail/emit-spool].
    #[arg(long, env = "VERITRAIL_SPOOL_DIR")]
    spool_dir: Option<std::path::PathBuf>,
    /// How long to wait for the server's acknowledgement before leaving events in the spool.
    #[arg(long, default_value_t = 15)]
    timeout_secs: u64,
}

fn event_from_flags(a: &EmitArgs) -> anyhow::Result<Value> {
    let t = a.event_type.clone().unwrap_or_default();
    let first = t.split('.').next().unwrap_or("").to_string();
    let last = t.rsplit('.').next().unwrap_or("").to_string();
    let mut e = json!({
        "event_type": t,
        "event_timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "event_category": a.category.clone().unwrap_or(first),
        "event_action": a.action.clone().unwrap_or(last),
        "event_outcome": a.outcome,
    });
    let optional = [
        ("event_id", &a.event_id),
        ("actor_type", &a.actor_type),
        ("actor_id", &a.actor_id),
        ("resource_type", &a.resource_type),
        ("resource_id", &a.resource_id),
        ("correlation_id", &a.correlation_id),
        ("namespace", &a.namespace),
        ("severity", &a.severity),
    ];
    for (k, v) in optional {
        if let Some(v) = v {
            e[k] = v.clone().into();
        }
    }
    if let Some(d) = &a.data {
        let data: Value = serde_json::from_str(d).context("--data is not JSON")?;
        anyhow::ensure!(data.is_object(), "--data must be a JSON object");
        e["event_data"] = data;
    }
    Ok(e)
}

/// Where `emit` keeps its producer identity and spool when `--spool-dir` is not given.
fn default_spool_dir() -> std::path::PathBuf {
    let state = std::env::var_os("XDG_STATE_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".local/state"))
        })
        .unwrap_or_else(std::env::temp_dir);
    state.join("veritrail").join("emit-spool")
}

/// Reads the events of `--stdin`: one JSON object, a JSON array, or NDJSON.
fn events_from_stdin() -> anyhow::Result<Vec<Value>> {
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .context("reading stdin")?;
    if let Ok(v) = veritrail_core::json::from_str(&text) {
        return Ok(match v {
            Value::Array(items) => items,
            other => vec![other],
        });
    }
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            veritrail_core::json::from_str(l)
                .with_context(|| format!("stdin line {}: not JSON", i + 1))
        })
        .collect()
}

/// `veritrail emit`: records through the producer SDK, so an event is either acknowledged by the
/// server or kept in the spool (and sent by the next `emit`), never silently lost.
pub fn emit(args: EmitArgs) -> anyhow::Result<ExitCode> {
    crate::serve::init_logging_at("warn");
    let events = if args.stdin {
        events_from_stdin()?
    } else {
        vec![event_from_flags(&args)?]
    };
    let spool_dir = args.spool_dir.clone().unwrap_or_else(default_spool_dir);
    let mut config = veritrail_client::Config::new(args.server.server.trim_end_matches('/'));
    config.api_key = args.server.key.clone().filter(|k| !k.is_empty());
    (config.ca_cert_pem, config.client_identity_pem) = args.server.tls_pems()?;
    config.spool_dir = Some(spool_dir.clone());
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let stats = runtime.block_on(async {
        let client = veritrail_client::Client::start(config)
            .with_context(|| format!("opening the producer spool {}", spool_dir.display()))?;
        for e in events {
            let r = client
                .record_wait(e)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            outln!(
                "{}  producer {} seq {}",
                r.event_id,
                client.producer_id(),
                r.producer_seq
            );
        }
        anyhow::Ok(
            client
                .shutdown(std::time::Duration::from_secs(args.timeout_secs))
                .await,
        )
    })?;
    let lost = stats.rejected + stats.dropped.total();
    if lost > 0 {
        bail!(
            "{lost} event(s) were refused or dropped (see the messages above); {} acknowledged",
            stats.sent
        );
    }
    if stats.spool_events > 0 {
        eprintln!(
            "the server did not acknowledge everything in time: {} event(s) wait in {} and are sent by the next `veritrail emit`",
            stats.spool_events,
            spool_dir.display()
        );
        return Ok(ExitCode::from(1));
    }
    eprintln!("durable: {} event(s) acknowledged", stats.sent);
    Ok(ExitCode::SUCCESS)
}

/// Flags of `query`.
#[derive(Debug, Args)]
pub struct QueryArgs {
    #[command(flatten)]
    server: ServerArgs,
    #[command(flatten)]
    filters: FilterArgs,
    /// Most events to show.
    #[arg(long, short = 'l', default_value_t = 50)]
    limit: usize,
    /// Oldest first instead of newest first.
    #[arg(long)]
    asc: bool,
    /// One JSON object per line (NDJSON) instead of a table.
    #[arg(long)]
    json: bool,
}

/// `veritrail query`: follows cursors until `--limit` events are shown.
pub fn query(args: QueryArgs) -> anyhow::Result<ExitCode> {
    let client = Client::new(&args.server)?;
    let mut params = args.filters.to_params()?;
    if args.asc {
        params.push(("order".into(), "asc".into()));
    }
    let mut events = Vec::new();
    let mut cursor: Option<String> = None;
    while events.len() < args.limit {
        let mut p = params.clone();
        p.push((
            "limit".into(),
            (args.limit - events.len()).min(1000).to_string(),
        ));
        if let Some(c) = &cursor {
            p.push(("cursor".into(), c.clone()));
        }
        let page: Value = client
            .get("/v1/events", &p)?
            .json()
            .context("reading the reply")?;
        events.extend(page["events"].as_array().cloned().unwrap_or_default());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        for e in &events {
            writeln!(out, "{e}")?;
        }
    } else {
        print_table(&mut out, &events)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn print_table(out: &mut impl Write, events: &[Value]) -> std::io::Result<()> {
    let cols = [
        "event_timestamp",
        "event_type",
        "event_outcome",
        "actor_id",
        "resource_id",
        "correlation_id",
    ];
    let heads = [
        "TIME",
        "TYPE",
        "OUTCOME",
        "ACTOR",
        "RESOURCE",
        "CORRELATION",
    ];
    let cell = |e: &Value, c: &str| e[c].as_str().unwrap_or("-").to_string();
    let widths: Vec<usize> = cols
        .iter()
        .zip(heads)
        .map(|(c, h)| {
            events
                .iter()
                .map(|e| cell(e, c).chars().count())
                .max()
                .unwrap_or(0)
                .max(h.len())
        })
        .collect();
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    writeln!(
        out,
        "{}",
        line(heads.iter().map(|h| h.to_string()).collect())
    )?;
    for e in events {
        writeln!(out, "{}", line(cols.iter().map(|c| cell(e, c)).collect()))?;
    }
    if events.is_empty() {
        writeln!(out, "(no events)")?;
    }
    Ok(())
}

/// Flags of `export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    server: ServerArgs,
    #[command(flatten)]
    filters: FilterArgs,
    /// Bundle file to write.
    #[arg(long, short = 'o')]
    output: PathBuf,
}

/// `veritrail export`.
pub fn export(args: ExportArgs) -> anyhow::Result<ExitCode> {
    let client = Client::new(&args.server)?;
    let mut resp = client.get("/v1/export", &args.filters.to_params()?)?;
    let tmp = args.output.with_extension("partial");
    let mut file =
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let bytes = resp.copy_to(&mut file).context("downloading the bundle")?;
    file.sync_all()?;
    std::fs::rename(&tmp, &args.output)
        .with_context(|| format!("writing {}", args.output.display()))?;
    let text = std::fs::read_to_string(&args.output)?;
    let header: Value = text
        .lines()
        .next()
        .map(serde_json::from_str)
        .transpose()?
        .unwrap_or(Value::Null);
    eprintln!(
        "wrote {} events ({bytes} bytes) to {}, proven against tree size {}",
        header["count"],
        args.output.display(),
        header["tree_size"]
    );
    Ok(ExitCode::SUCCESS)
}
