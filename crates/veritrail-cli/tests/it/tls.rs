//! HTTPS and client certificates, with certificates made by the `openssl` command for the test:
//! a CA, a server certificate for 127.0.0.1, a client certificate from the same CA, and one from
//! a CA the server does not trust.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;

use serde_json::{json, Value};

use crate::support;

const ADMIN: &str = "vt_tls_admin_0123456789abcdefghijklmnopqrstuv";

fn openssl(dir: &Path, args: &[&str]) {
    support::openssl(dir, args);
}

/// A CA `name` (name.pem, name.key).
fn ca(dir: &Path, name: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign",
        ],
    );
}

/// A certificate `name` signed by CA `ca`, with extensions `ext`.
fn leaf(dir: &Path, name: &str, ca: &str, ext: &str) {
    std::fs::write(dir.join(format!("{name}.ext")), ext).expect("ext file");
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={name}"),
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-out",
            &format!("{name}.pem"),
            "-days",
            "2",
            "-extfile",
            &format!("{name}.ext"),
        ],
    );
    let mut both = std::fs::read(dir.join(format!("{name}.pem"))).expect("cert");
    both.extend(std::fs::read(dir.join(format!("{name}.key"))).expect("key"));
    std::fs::write(dir.join(format!("{name}.both.pem")), both).expect("identity file");
}

fn fingerprint(dir: &Path, name: &str) -> String {
    let pem = format!("{name}.pem");
    let out = support::openssl(
        dir,
        &["x509", "-noout", "-fingerprint", "-sha256", "-in", &pem],
    );
    let text = String::from_utf8_lossy(&out).to_string();
    text.trim()
        .rsplit('=')
        .next()
        .expect("fingerprint")
        .to_string()
}

fn client(dir: &Path, identity: Option<&str>) -> reqwest::blocking::Client {
    let ca = std::fs::read(dir.join("ca.pem")).expect("ca");
    let mut b = reqwest::blocking::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("ca pem"))
        .timeout(std::time::Duration::from_secs(30));
    if let Some(name) = identity {
        let pem = std::fs::read(dir.join(format!("{name}.both.pem"))).expect("identity");
        b = b.identity(reqwest::Identity::from_pem(&pem).expect("identity pem"));
    }
    b.build().expect("client")
}

#[test]
fn https_with_keys_and_client_certificates() {
    let scratch = support::Scratch::new();
    let dir = scratch.tmp.path();
    ca(dir, "ca");
    ca(dir, "rogue-ca");
    leaf(
        dir,
        "server",
        "ca",
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    );
    leaf(dir, "producer", "ca", "extendedKeyUsage=clientAuth\n");
    leaf(dir, "stranger", "ca", "extendedKeyUsage=clientAuth\n");
    leaf(dir, "rogue", "rogue-ca", "extendedKeyUsage=clientAuth\n");

    let data = scratch.data();
    let mut child = support::command()
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .arg("--tls-cert")
        .arg(dir.join("server.pem"))
        .arg("--tls-key")
        .arg(dir.join("server.key"))
        .arg("--tls-client-ca")
        .arg(dir.join("ca.pem"))
        .env("VERITRAIL_ADMIN_KEY", ADMIN)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting the server");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("first line");
    let url = line.trim().rsplit(' ').next().expect("url").to_string();
    assert!(url.starts_with("https://127.0.0.1:"), "{line}");
    let _guard = KillOnDrop(child);

    // HTTPS with a bearer key; plain HTTP on the same port gets nowhere.
    let https = client(dir, None);
    let keys = https
        .get(format!("{url}/v1/admin/keys"))
        .bearer_auth(ADMIN)
        .send()
        .expect("https");
    assert_eq!(keys.status(), 200);
    let plain = url.replacen("https://", "http://", 1);
    assert!(
        reqwest::blocking::get(format!("{plain}/healthz"))
            .map_or(true, |r| !r.status().is_success()),
        "plain HTTP was served on the TLS port"
    );

    // Register the producer's certificate; it then authenticates without a key.
    let fp = fingerprint(dir, "producer");
    let reg: Value = https
        .post(format!("{url}/v1/admin/keys"))
        .bearer_auth(ADMIN)
        .json(&json!({"tenant": "default", "role": "producer", "client_cert_sha256": fp}))
        .send()
        .expect("register")
        .json()
        .expect("json");
    assert!(
        reg.get("key").is_none(),
        "a certificate identity has no key: {reg}"
    );
    let event = support::events(1, &support::corr("mtls"));
    let with_cert = client(dir, Some("producer"));
    let r = with_cert
        .post(format!("{url}/v1/events"))
        .json(&event)
        .send()
        .expect("post");
    assert_eq!(r.status(), 200, "{}", r.text().unwrap_or_default());
    // A certificate is still limited to its role.
    let r = with_cert
        .get(format!("{url}/v1/events"))
        .send()
        .expect("get");
    assert_eq!(r.status(), 403);
    // A valid certificate that nobody registered: 401.
    let r = client(dir, Some("stranger"))
        .post(format!("{url}/v1/events"))
        .json(&event)
        .send();
    assert_eq!(r.expect("post").status(), 401);
    // A certificate from another CA does not get through the handshake.
    let r = client(dir, Some("rogue"))
        .post(format!("{url}/v1/events"))
        .json(&event)
        .send();
    assert!(
        r.map_or(true, |r| !r.status().is_success()),
        "a rogue certificate was accepted"
    );
    // The fingerprint is no key: sent as a bearer token it is refused.
    let forged = format!("cert:sha256:{}", fp.replace(':', "").to_lowercase());
    let r = https
        .post(format!("{url}/v1/events"))
        .bearer_auth(forged)
        .json(&event)
        .send();
    assert_eq!(r.expect("post").status(), 401);
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
