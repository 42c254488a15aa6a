//! Shared helpers: a real `veritrail serve` child process, queries, event builders, polling.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;

use tokio::io::{AsyncBufReadExt, AsyncReadExt};

/// Upper bound for anything a test waits for; reaching it is a failure, not a pass.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// The `veritrail` binary: `VERITRAIL_BIN` if set, else the workspace's debug build (under
/// `CARGO_TARGET_DIR` when that is set, else `target/`), built here first if it is missing.
///
/// `veritrail-client` cannot depend on the binary crate, so `cargo test -p veritrail-client`
/// alone would not build it; `cargo test --workspace` does (the CLI's own tests need it).
pub fn server_bin() -> PathBuf {
    static BUILT: Mutex<Option<PathBuf>> = Mutex::new(None);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = built.as_ref() {
        return p.clone();
    }
    if let Some(p) = std::env::var_os("VERITRAIL_BIN") {
        let p = PathBuf::from(p);
        assert!(p.exists(), "VERITRAIL_BIN={} does not exist", p.display());
        *built = Some(p.clone());
        return p;
    }
    // Read at run time: a build cache shared between checkouts must not point at another one.
    let crate_dir = std::env::var("CARGO_MANIFEST_DIR")
        .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string());
    let workspace = Path::new(&crate_dir).join("../..");
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(t) if Path::new(&t).is_absolute() => PathBuf::from(t),
        Some(t) => workspace.join(t),
        None => workspace.join("target"),
    };
    let bin = target.join("debug").join("veritrail");
    if !bin.exists() {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", "veritrail-cli"])
            .current_dir(&workspace)
            .env("CARGO_TARGET_DIR", &target)
            .status()
            .expect("running cargo build -p veritrail-cli");
        assert!(status.success(), "cargo build -p veritrail-cli failed");
    }
    assert!(bin.exists(), "{} was not built", bin.display());
    *built = Some(bin.clone());
    bin
}

/// A running `veritrail serve`, killed when dropped.
pub struct Server {
    child: Option<Child>,
    pub port: u16,
    pub data_dir: PathBuf,
}

impl Server {
    /// Starts a server on `data_dir`, on `port` if given (to come back where it was), else on
    /// a free port.
    pub fn start(data_dir: &Path, port: Option<u16>) -> Server {
        Server::start_keyed(data_dir, port, None)
    }

    /// Like [`Server::start`]; with `admin_key` the server checks keys and that is its first
    /// admin key, without it authentication is off.
    pub fn start_keyed(data_dir: &Path, port: Option<u16>, admin_key: Option<&str>) -> Server {
        let deadline = std::time::Instant::now() + DEADLINE;
        loop {
            match Server::try_start(data_dir, port, admin_key) {
                Ok(s) => return s,
                // The old listener's port may take a moment to be free again.
                Err(why) if std::time::Instant::now() < deadline && port.is_some() => {
                    eprintln!("server start failed ({why}); trying again");
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(why) => panic!("starting veritrail serve: {why}"),
            }
        }
    }

    fn try_start(
        data_dir: &Path,
        port: Option<u16>,
        admin_key: Option<&str>,
    ) -> Result<Server, String> {
        let listen = format!("127.0.0.1:{}", port.unwrap_or(0));
        let log_path = data_dir.with_extension("log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| format!("opening {}: {e}", log_path.display()))?;
        let mut cmd = Command::new(server_bin());
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("VERITRAIL_") {
                cmd.env_remove(&k);
            }
        }
        let mut auth = Vec::new();
        match admin_key {
            Some(k) => {
                cmd.env("VERITRAIL_ADMIN_KEY", k);
            }
            None => auth.push("--insecure-no-auth"),
        }
        let mut child = cmd
            .args(["serve", "--listen", &listen, "--data-dir"])
            .arg(data_dir)
            .args(["--checkpoint-interval-ms", "100"])
            .args(&auth)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(|e| format!("spawning: {e}"))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let first = lines.next().and_then(Result::ok);
            let _ = tx.send(first);
            // Keep draining so the server never blocks on a full pipe.
            for _ in lines {}
        });
        let first = rx.recv_timeout(DEADLINE).ok().flatten();
        let Some(line) = first else {
            let _ = child.kill();
            let _ = child.wait();
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            let tail: String = log.lines().rev().take(5).collect::<Vec<_>>().join(" | ");
            return Err(format!("no listening line; log tail: {tail}"));
        };
        let port = line
            .rsplit(':')
            .next()
            .and_then(|p| p.trim().parse::<u16>().ok())
            .ok_or_else(|| format!("unexpected first line {line:?}"))?;
        Ok(Server {
            child: Some(child),
            port,
            data_dir: data_dir.to_path_buf(),
        })
    }

    /// The base URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Kills the process (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A valid audit event number `i`; its timestamp grows with `i`, so that the server's
/// time order matches recording order.
pub fn event(i: u64, tag: &str) -> Value {
    let base = chrono::DateTime::parse_from_rfc3339("2025-12-13T02:00:00Z")
        .expect("constant timestamp")
        .with_timezone(&chrono::Utc);
    let ts = base + chrono::Duration::milliseconds(i as i64);
    json!({
        "event_type": "test.client.recorded",
        "event_timestamp": ts.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "event_category": "test",
        "event_action": "recorded",
        "event_outcome": "success",
        "actor_id": "tester",
        "correlation_id": tag,
        "event_data": {"i": i},
    })
}

/// Every event of `producer_id` on the server, oldest first, following `next_cursor`.
pub async fn events_of(url: &str, producer_id: &str) -> Vec<Value> {
    let http = reqwest::Client::new();
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut req = http.get(format!("{url}/v1/events")).query(&[
            ("producer_id", producer_id),
            ("order", "asc"),
            ("limit", "1000"),
        ]);
        if let Some(c) = &cursor {
            req = req.query(&[("cursor", c.as_str())]);
        }
        let resp = req.send().await.expect("querying events");
        assert!(resp.status().is_success(), "query: HTTP {}", resp.status());
        let page: Value = resp.json().await.expect("query reply is JSON");
        out.extend(page["events"].as_array().cloned().unwrap_or_default());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return out,
        }
    }
}

/// Waits until the server answers `/readyz`.
pub async fn wait_ready(url: &str) {
    let http = reqwest::Client::new();
    let ok = poll_until(DEADLINE, || async {
        http.get(format!("{url}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await;
    assert!(ok, "the server at {url} did not become ready");
}

/// Polls `check` every 10 ms until it holds or `limit` passes; returns whether it held.
pub async fn poll_until<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A port nothing listens on (bound, then released).
pub fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a probe port");
    l.local_addr().expect("probe address").port()
}

/// Settings with small thresholds so that tests reach the spool quickly.
pub fn fast_config(url: &str) -> veritrail_client::Config {
    let mut c = veritrail_client::Config::new(url);
    c.batch_size = 20;
    c.flush_interval = Duration::from_millis(20);
    c.retry.initial_backoff = Duration::from_millis(10);
    c.retry.max_backoff = Duration::from_millis(100);
    c.retry.spool_after_failures = 3;
    c.retry.spool_after = Duration::from_secs(2);
    c.request_timeout = Duration::from_secs(3);
    c
}

/// Reads one HTTP/1.1 message (head and `Content-Length` body); `None` at a clean end.
pub async fn read_message(
    conn: &mut tokio::io::BufReader<tokio::net::TcpStream>,
) -> Option<Vec<u8>> {
    let mut msg = Vec::new();
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        let n = conn.read_line(&mut line).await.ok()?;
        if n == 0 {
            return None;
        }
        msg.extend_from_slice(line.as_bytes());
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().expect("a numeric Content-Length");
        }
        assert!(
            !lower.starts_with("transfer-encoding:"),
            "the proxy only handles Content-Length bodies"
        );
        if line == "\r\n" {
            break;
        }
    }
    let start = msg.len();
    msg.resize(start + length, 0);
    conn.read_exact(&mut msg[start..]).await.ok()?;
    Some(msg)
}
