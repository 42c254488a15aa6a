//! Shared helpers: a `veritrail serve` child process, an HTTP client, event builders, the CLI,
//! and a small reader of segment files for the damage tests.

#![allow(dead_code)]

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use veritrail_core::checkpoint::{open_checkpoint, Checkpoint};
use veritrail_core::hash::{from_b64, Hash};
use veritrail_core::note::NoteVerifier;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_veritrail");

/// Upper bound for anything the tests wait for; reaching it is a failure, not a pass.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// A scratch directory: the data directory lives in `data/`, server logs next to it.
pub struct Scratch {
    pub tmp: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Scratch {
        Scratch {
            tmp: tempfile::Builder::new()
                .prefix("veritrail-it-")
                .tempdir()
                .expect("creating a tempdir"),
        }
    }

    /// The data directory (created by the server on first start).
    pub fn data(&self) -> PathBuf {
        self.tmp.path().join("data")
    }

    /// Another data directory in the same scratch space.
    pub fn other(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }
}

/// A command for the binary with no `VERITRAIL_*` setting inherited from the environment.
pub fn command() -> Command {
    let mut cmd = Command::new(BIN);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("VERITRAIL_") {
            cmd.env_remove(&k);
        }
    }
    cmd
}

/// `veritrail serve` on `data_dir`, listening on an ephemeral loopback port.
fn serve_command(data_dir: &Path) -> Command {
    let mut cmd = command();
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir);
    cmd
}

/// Runs the CLI to completion.
pub fn cli(args: &[&str]) -> Output {
    command()
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running veritrail")
}

/// stdout and stderr of a finished command, for assertion messages.
pub fn show(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout ---\n{}--- stderr ---\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `veritrail fsck --data-dir DIR`.
pub fn fsck(dir: &Path) -> Output {
    cli(&["fsck", "--data-dir", dir.to_str().expect("utf-8 path")])
}

/// One HTTP answer.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub content_type: String,
    pub text: String,
}

impl Resp {
    /// The body as JSON (panics with the body when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| {
            panic!(
                "status {}: body is not JSON ({e}): {}",
                self.status, self.text
            )
        })
    }

    /// Asserts an RFC 7807 problem with this status and a non-empty `detail`; returns it.
    #[track_caller]
    pub fn problem(&self, status: u16) -> Value {
        assert_eq!(
            self.status, status,
            "unexpected status; body: {}",
            self.text
        );
        assert!(
            self.content_type.starts_with("application/problem+json"),
            "content-type is {:?}, not application/problem+json; body: {}",
            self.content_type,
            self.text
        );
        let p = self.json();
        let detail = p["detail"].as_str().unwrap_or("");
        assert!(!detail.trim().is_empty(), "problem without a detail: {p}");
        assert_eq!(p["status"], json!(status), "problem's status member: {p}");
        p
    }

    /// Like [`Resp::problem`], and asserts that the detail says `says`.
    #[track_caller]
    pub fn problem_saying(&self, status: u16, says: &str) -> Value {
        let p = self.problem(status);
        let detail = p["detail"].as_str().unwrap_or("");
        assert!(
            detail.contains(says),
            "the detail does not say `{says}`: {p}"
        );
        p
    }

    /// Asserts 200 and returns the JSON body.
    #[track_caller]
    pub fn ok_json(&self) -> Value {
        assert_eq!(self.status, 200, "expected 200; body: {}", self.text);
        self.json()
    }
}

/// A blocking HTTP client with a generous per-request timeout (a guard against hangs only).
pub fn http_client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("building an HTTP client")
}

/// Status, content type and body of a response.
pub fn into_resp(r: reqwest::blocking::Response) -> Resp {
    try_into_resp(r).expect("reading a response body")
}

/// Status, content type and body of a response, or why the body could not be read (a body cut
/// short, which a client treats as a network error).
pub fn try_into_resp(r: reqwest::blocking::Response) -> Result<Resp, String> {
    let status = r.status().as_u16();
    let content_type = r
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let text = r
        .text()
        .map_err(|e| format!("reading the answer to a {status}: {e}"))?;
    Ok(Resp {
        status,
        content_type,
        text,
    })
}

/// A running `veritrail serve`; killed (SIGKILL) on drop if still running.
pub struct Server {
    pub url: String,
    pub child: Option<Child>,
    pub data_dir: PathBuf,
    /// Kept open so that the server never writes to a closed pipe.
    _stdout: BufReader<ChildStdout>,
    stderr_path: PathBuf,
    http: reqwest::blocking::Client,
}

impl Server {
    /// Starts a server on `data_dir` with default settings.
    pub fn start(data_dir: &Path) -> Server {
        Server::start_with(data_dir, &[])
    }

    /// Starts a server on `data_dir` with extra `serve` flags, listening on an ephemeral port,
    /// and waits until `/healthz` answers. Authentication is off (these tests are about other
    /// things; `access.rs` tests authentication with [`Server::start_authenticated`]).
    pub fn start_with(data_dir: &Path, extra: &[&str]) -> Server {
        let mut flags = vec!["--insecure-no-auth"];
        flags.extend_from_slice(extra);
        Server::spawn(data_dir, &flags, None)
    }

    /// Starts a server that checks keys, with `admin_key` as its first admin key.
    pub fn start_authenticated(data_dir: &Path, admin_key: &str) -> Server {
        Server::spawn(data_dir, &[], Some(admin_key))
    }

    /// Like [`Server::start_authenticated`], with extra `serve` flags.
    pub fn start_authenticated_with(data_dir: &Path, admin_key: &str, extra: &[&str]) -> Server {
        Server::spawn(data_dir, extra, Some(admin_key))
    }

    fn spawn(data_dir: &Path, extra: &[&str], admin_key: Option<&str>) -> Server {
        Server::spawn_limited(data_dir, extra, admin_key, None)
    }

    /// Like [`Server::start_authenticated`], with the server's open-file limit (soft and hard)
    /// set to `files`.
    pub fn start_with_file_limit(data_dir: &Path, admin_key: &str, files: u64) -> Server {
        Server::spawn_limited(data_dir, &[], Some(admin_key), Some(files))
    }

    fn spawn_limited(
        data_dir: &Path,
        extra: &[&str],
        admin_key: Option<&str>,
        files: Option<u64>,
    ) -> Server {
        Server::launch(data_dir, extra, admin_key, files).unwrap_or_else(|stderr| {
            panic!("the server did not announce its address; stderr:\n{stderr}")
        })
    }

    /// Like [`Server::start`], but a server that exits before it listens is an `Err` with its
    /// stderr, not a failed test.
    pub fn try_start(data_dir: &Path) -> Result<Server, String> {
        Server::launch(data_dir, &["--insecure-no-auth"], None, None)
    }

    fn launch(
        data_dir: &Path,
        extra: &[&str],
        admin_key: Option<&str>,
        files: Option<u64>,
    ) -> Result<Server, String> {
        let parent = data_dir.parent().expect("data dir has a parent");
        let name = data_dir
            .file_name()
            .expect("data dir has a name")
            .to_string_lossy()
            .into_owned();
        let stderr_path = parent.join(format!("{name}.server-stderr.log"));
        let stderr = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&stderr_path)
            .expect("creating the server log");
        let mut cmd = serve_command(data_dir);
        if let Some(files) = files {
            use std::os::unix::process::CommandExt;
            // SAFETY: setrlimit is async-signal-safe and touches nothing of the parent.
            unsafe {
                cmd.pre_exec(move || {
                    let lim = libc::rlimit {
                        rlim_cur: files,
                        rlim_max: files,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        let mut child = cmd
            .args(extra)
            .env("RUST_LOG", "info")
            .env("VERITRAIL_ADMIN_KEY", admin_key.unwrap_or_default())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .spawn()
            .expect("spawning veritrail serve");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut line = String::new();
        let read = stdout.read_line(&mut line);
        let url = match (read, line.trim().strip_prefix("veritrail listening on ")) {
            (Ok(n), Some(url)) if n > 0 => url.to_string(),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "(first line {line:?})\n{}",
                    std::fs::read_to_string(&stderr_path).unwrap_or_default()
                ));
            }
        };
        let server = Server {
            url,
            child: Some(child),
            data_dir: data_dir.to_path_buf(),
            _stdout: stdout,
            stderr_path,
            http: http_client(),
        };
        server.wait_healthy();
        Ok(server)
    }

    /// Starts a server that is expected to fail; returns its exit status and stderr.
    pub fn start_expecting_failure(data_dir: &Path) -> (ExitStatus, String) {
        let mut child = serve_command(data_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning veritrail serve");
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = child.try_wait().expect("waiting for the server") {
                let out = child.wait_with_output().expect("collecting output");
                return (status, String::from_utf8_lossy(&out.stderr).into_owned());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the server kept running although it was expected to refuse to start");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait_healthy(&self) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Ok(r) = self.http.get(format!("{}/healthz", self.url)).send() {
                if r.status().is_success() {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "the server at {} never became healthy; stderr:\n{}",
                self.url,
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The server's log so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server running").id()
    }

    /// SIGKILL: no chance to finish anything.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().expect("SIGKILL");
            c.wait().expect("reaping the server");
        }
    }

    /// SIGTERM, then waits (bounded) for a graceful exit, which must succeed.
    pub fn stop(&mut self) {
        let mut c = self.child.take().expect("server running");
        let sent = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status()
            .expect("running kill");
        assert!(sent.success(), "kill -TERM failed");
        let deadline = Instant::now() + DEADLINE;
        let status = loop {
            if let Some(s) = c.try_wait().expect("waiting for the server") {
                break s;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                panic!(
                    "the server did not exit after SIGTERM; stderr:\n{}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(
            status.success(),
            "the server exited with {status} after SIGTERM; stderr:\n{}",
            self.stderr()
        );
    }

    /// GET a path (with query string).
    pub fn get(&self, path: &str) -> Resp {
        into_resp(
            self.http
                .get(format!("{}{path}", self.url))
                .send()
                .unwrap_or_else(|e| panic!("GET {path}: {e}")),
        )
    }

    /// Any request, with an API key and a tenant header when given.
    pub fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        key: Option<&str>,
        tenant: Option<&str>,
        body: Option<&Value>,
    ) -> Resp {
        let mut r = self.http.request(method, format!("{}{path}", self.url));
        if let Some(k) = key {
            r = r.bearer_auth(k);
        }
        if let Some(t) = tenant {
            r = r.header("Veritrail-Tenant", t);
        }
        if let Some(b) = body {
            r = r.json(b);
        }
        into_resp(r.send().unwrap_or_else(|e| panic!("{path}: {e}")))
    }

    /// Creates a key of `role` on `tenant` (with `extra` members) through the admin API with the
    /// admin key `admin`; returns (id, key).
    pub fn create_key(
        &self,
        admin: &str,
        tenant: Option<&str>,
        role: &str,
        extra: Value,
    ) -> (String, String) {
        let mut body = json!({"tenant": tenant, "role": role, "name": format!("it-{role}")});
        if let (Value::Object(b), Value::Object(e)) = (&mut body, extra) {
            b.extend(e);
        }
        let r = self.call(
            reqwest::Method::POST,
            "/v1/admin/keys",
            Some(admin),
            None,
            Some(&body),
        );
        assert_eq!(r.status, 201, "{}", r.text);
        let k = r.json();
        assert!(
            k.get("mac").is_none(),
            "the answer leaks the stored hash: {k}"
        );
        let field = |n: &str| k[n].as_str().unwrap_or_default().to_string();
        (field("id"), field("key"))
    }

    /// A key of `role` on the `default` tenant.
    pub fn key(&self, admin: &str, role: &str) -> String {
        self.create_key(admin, Some("default"), role, json!({})).1
    }

    /// POST a JSON body with an API key.
    pub fn post_as(&self, key: &str, path: &str, body: &Value) -> Resp {
        self.call(reqwest::Method::POST, path, Some(key), None, Some(body))
    }

    /// Runs the CLI against this server with `key`: (success, stdout, everything for a message).
    pub fn cli_as(&self, key: &str, args: &[&str]) -> (bool, String, String) {
        let out = command()
            .args(args)
            .env("VERITRAIL_SERVER", &self.url)
            .env("VERITRAIL_KEY", key)
            .stdin(Stdio::null())
            .output()
            .expect("running veritrail");
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        (out.status.success(), stdout, show(&out))
    }

    /// GET with an API key.
    pub fn get_as(&self, key: &str, path: &str) -> Resp {
        self.call(reqwest::Method::GET, path, Some(key), None, None)
    }

    /// POST events (a JSON value: one event or an array) as application/json.
    pub fn post(&self, events: &Value) -> Resp {
        self.post_raw(
            "application/json",
            serde_json::to_vec(events).expect("json"),
        )
    }

    /// POST raw bytes with a content type.
    pub fn post_raw(&self, content_type: &str, body: Vec<u8>) -> Resp {
        into_resp(
            self.http
                .post(format!("{}/v1/events", self.url))
                .header(reqwest::header::CONTENT_TYPE, content_type)
                .body(body)
                .send()
                .unwrap_or_else(|e| panic!("POST /v1/events: {e}")),
        )
    }

    /// POST events that must be accepted; returns the receipts.
    #[track_caller]
    pub fn ingest(&self, events: &Value) -> Vec<Receipt> {
        let body = self.post(events).ok_json();
        receipts(&body)
    }

    /// The verifier key, from `GET /v1/key`.
    pub fn vkey(&self) -> String {
        let r = self.get("/v1/key");
        assert_eq!(r.status, 200, "{}", r.text);
        r.text.trim().to_string()
    }

    /// The latest signed checkpoint, verified with the server's own key.
    pub fn checkpoint(&self) -> Checkpoint {
        let r = self.get("/v1/checkpoint");
        assert_eq!(r.status, 200, "{}", r.text);
        open_note(&r.text, &self.vkey())
    }

    /// The tree size from the second line of `GET /v1/checkpoint`.
    pub fn tree_size(&self) -> u64 {
        self.tree_size_with(None)
    }

    /// [`Server::tree_size`] with an API key. Reading a checkpoint leaves no access event, so the
    /// size counts only what was written.
    pub fn tree_size_as(&self, key: &str) -> u64 {
        self.tree_size_with(Some(key))
    }

    fn tree_size_with(&self, key: Option<&str>) -> u64 {
        let r = self.call(reqwest::Method::GET, "/v1/checkpoint", key, None, None);
        assert_eq!(r.status, 200, "{}", r.text);
        r.text
            .lines()
            .nth(1)
            .and_then(|l| l.parse().ok())
            .unwrap_or_else(|| panic!("checkpoint without a size line: {}", r.text))
    }

    /// Every event of a correlation id, oldest first, following cursors.
    pub fn by_correlation(&self, corr: &str) -> Vec<Value> {
        self.by_correlation_with(None, corr)
    }

    /// [`Server::by_correlation`] with an API key.
    pub fn by_correlation_as(&self, key: &str, corr: &str) -> Vec<Value> {
        self.by_correlation_with(Some(key), corr)
    }

    fn by_correlation_with(&self, key: Option<&str>, corr: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut path = format!("/v1/events?correlation_id={corr}&order=asc&limit=1000");
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let page = self
                .call(reqwest::Method::GET, &path, key, None, None)
                .ok_json();
            out.extend(page["events"].as_array().expect("events array").clone());
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => return out,
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Opens a signed checkpoint note with a vkey (checking the signature).
pub fn open_note(note: &str, vkey: &str) -> Checkpoint {
    let verifier = NoteVerifier::from_vkey(vkey).expect("a valid vkey");
    open_checkpoint(note, &[verifier])
        .unwrap_or_else(|e| panic!("checkpoint does not open with {vkey}: {e}\n{note}"))
}

/// One receipt of an acknowledged append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub event_id: String,
    pub seq: u64,
    pub leaf_hash: String,
}

/// Reads the receipts of a 200 reply to `POST /v1/events`.
pub fn receipts(body: &Value) -> Vec<Receipt> {
    body["receipts"]
        .as_array()
        .unwrap_or_else(|| panic!("no receipts in {body}"))
        .iter()
        .map(|r| Receipt {
            event_id: r["event_id"].as_str().expect("event_id").to_string(),
            seq: r["seq"].as_u64().expect("seq"),
            leaf_hash: r["leaf_hash"].as_str().expect("leaf_hash").to_string(),
        })
        .collect()
}

/// A valid event with a client-chosen UUIDv7 `event_id`, number `i`, correlation `corr`.
pub fn event(i: usize, corr: &str) -> Value {
    json!({
        "event_id": uuid::Uuid::now_v7().to_string(),
        "event_type": "it.widget.created",
        "event_timestamp": chrono::Utc::now()
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "event_category": "it",
        "event_action": "created",
        "event_outcome": "success",
        "actor_id": format!("actor-{i}"),
        "correlation_id": corr,
        "event_data": {"i": i, "note": "integration test"},
    })
}

/// `n` events for one correlation id.
pub fn events(n: usize, corr: &str) -> Value {
    Value::Array((0..n).map(|i| event(i, corr)).collect())
}

/// A unique correlation id.
pub fn corr(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::now_v7())
}

/// Decodes a base64 hash.
pub fn hash(b64: &str) -> Hash {
    from_b64(b64).unwrap_or_else(|e| panic!("`{b64}` is not a hash: {e}"))
}

/// The log directory of the default tenant.
pub fn log_dir(data: &Path) -> PathBuf {
    data.join("tenants").join("default").join("log")
}

/// The newest segment file of the default tenant.
pub fn newest_segment(data: &Path) -> PathBuf {
    let mut segs: Vec<PathBuf> = std::fs::read_dir(log_dir(data))
        .expect("listing the log directory")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segs.sort();
    segs.pop().expect("at least one segment")
}

/// Bytes in a segment header and a record header (see the log format).
pub const SEGMENT_HEADER: usize = 24;
pub const RECORD_HEADER: usize = 17;

/// One record found by walking a segment: where it starts and its payload length.
#[derive(Debug, Clone, Copy)]
pub struct RecordSpan {
    pub offset: usize,
    pub len: usize,
}

impl RecordSpan {
    pub fn payload(&self) -> std::ops::Range<usize> {
        self.offset + RECORD_HEADER..self.offset + RECORD_HEADER + self.len
    }
    pub fn end(&self) -> usize {
        self.offset + RECORD_HEADER + self.len
    }
}

/// Walks the event records of a segment's bytes by their length prefixes (no checksum checks),
/// passing over the records of signed checkpoints (kind 2).
pub fn records(bytes: &[u8]) -> Vec<RecordSpan> {
    let mut out = Vec::new();
    let mut at = SEGMENT_HEADER;
    while at + RECORD_HEADER <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        if at + RECORD_HEADER + len > bytes.len() {
            break;
        }
        if bytes[at + 8] == 1 {
            out.push(RecordSpan { offset: at, len });
        }
        at += RECORD_HEADER + len;
    }
    assert_eq!(at, bytes.len(), "segment does not end on a record boundary");
    out
}

/// Finds `needle` in `hay`.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A file of `../shared/corpus/` beside the repository, found at run time (so that a build cache
/// shared between checkouts cannot point elsewhere).
pub fn corpus(rel: &str) -> PathBuf {
    let crate_dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let p = PathBuf::from(crate_dir)
        .join("../../../shared/corpus")
        .join(rel);
    assert!(p.exists(), "{} is missing", p.display());
    p
}

/// Runs `openssl` in `dir`; returns what it printed.
pub fn openssl(dir: &Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("running openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Decodes hexadecimal digits (as `openssl rsa -modulus` prints them, or Kubernaut's export its
/// hashes).
pub fn unhex(hex: &str) -> Vec<u8> {
    assert!(hex.len().is_multiple_of(2), "odd hex: {hex}");
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex digits"))
        .collect()
}
