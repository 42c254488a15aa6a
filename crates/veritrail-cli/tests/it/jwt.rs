//! Kubernetes service-account tokens as bearer JWTs: a key pair made with `openssl`, its JWKS
//! written as a cluster publishes it, tokens signed for the test, and the server configured to
//! trust that issuer and map the Kubernaut service accounts to the producer role.

use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::Method;
use serde_json::{json, Value};

use crate::support;

const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// A P-256 key: (PKCS#8 DER private key, JWKS entry with `kid`).
fn key_pair(dir: &Path, name: &str, kid: &str) -> (Vec<u8>, Value) {
    let pem = format!("{name}.pem");
    support::openssl(
        dir,
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            &pem,
        ],
    );
    let der = support::openssl(
        dir,
        &[
            "pkcs8", "-topk8", "-nocrypt", "-in", &pem, "-outform", "DER",
        ],
    );
    let public = support::openssl(dir, &["ec", "-in", &pem, "-pubout", "-outform", "DER"]);
    // The SubjectPublicKeyInfo ends with the uncompressed point 04 ‖ X ‖ Y.
    let point = &public[public.len() - 65..];
    assert_eq!(point[0], 4);
    let jwk = json!({
        "kty": "EC", "crv": "P-256", "kid": kid, "use": "sig", "alg": "ES256",
        "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
        "y": URL_SAFE_NO_PAD.encode(&point[33..]),
    });
    (der, jwk)
}

fn token(der: &[u8], kid: &str, sub: &str, aud: &str, exp_in: i64) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(kid.into());
    let now = chrono::Utc::now().timestamp();
    let claims = json!({"iss": ISSUER, "sub": sub, "aud": [aud], "iat": now, "exp": now + exp_in});
    jsonwebtoken::encode(&header, &claims, &EncodingKey::from_ec_der(der)).expect("signing")
}

const ADMIN: &str = "vt_jwt_admin_0123456789abcdefghijklmnopqrstu";

/// Starts a server trusting one issuer whose keys come from `jwks` (a `jwks_file = …` or
/// `jwks_url = …` line), mapping `subject` to the `default` tenant's producer role.
fn start(scratch: &support::Scratch, jwks: &str, subject: &str) -> support::Server {
    let config = scratch.tmp.path().join("jwt.toml");
    std::fs::write(
        &config,
        format!(
            "[[issuer]]\nissuer = \"{ISSUER}\"\naudiences = [\"veritrail\"]\n{jwks}\n\n\
             [[issuer.subject]]\nsubject = \"{subject}\"\ntenant = \"default\"\nrole = \"producer\"\n"
        ),
    )
    .unwrap();
    support::Server::start_authenticated_with(
        &scratch.data(),
        ADMIN,
        &["--jwt-config", config.to_str().unwrap()],
    )
}

#[test]
fn service_account_tokens_authenticate_as_their_mapped_role() {
    let scratch = support::Scratch::new();
    let dir = scratch.tmp.path();
    let (cluster_key, jwk) = key_pair(dir, "cluster", "k1");
    let (rogue_key, _) = key_pair(dir, "rogue", "k1");
    std::fs::write(dir.join("jwks.json"), json!({"keys": [jwk]}).to_string()).unwrap();
    let server = start(
        &scratch,
        "jwks_file = \"jwks.json\"",
        "system:serviceaccount:kubernaut-system:*",
    );
    let event = json!({
        "version": "1.0", "event_type": "gateway.signal.received",
        "event_timestamp": chrono::Utc::now().to_rfc3339(), "event_category": "gateway",
        "event_action": "received", "event_outcome": "success", "correlation_id": "rr-jwt",
        "event_data": {"event_type": "gateway.signal.received"},
    });
    let post = |bearer: &str| {
        server.call(
            Method::POST,
            "/api/v1/audit/events",
            Some(bearer),
            None,
            Some(&event),
        )
    };
    let gateway = "system:serviceaccount:kubernaut-system:gateway";
    let ok = post(&token(&cluster_key, "k1", gateway, "veritrail", 600));
    assert_eq!(ok.status, 201, "{}", ok.text);
    // The caller is the service account, with the producer role only.
    let reader = token(&cluster_key, "k1", gateway, "veritrail", 600);
    server.get_as(&reader, "/v1/events").problem(403);
    for (why, bad) in [
        (
            "another audience",
            token(&cluster_key, "k1", gateway, "someone-else", 600),
        ),
        (
            "expired",
            token(&cluster_key, "k1", gateway, "veritrail", -120),
        ),
        (
            "an unmapped subject",
            token(
                &cluster_key,
                "k1",
                "system:serviceaccount:default:intruder",
                "veritrail",
                600,
            ),
        ),
        (
            "a key the cluster does not have",
            token(&rogue_key, "k1", gateway, "veritrail", 600),
        ),
        (
            "an unknown kid",
            token(&cluster_key, "k9", gateway, "veritrail", 600),
        ),
    ] {
        let r = post(&bad);
        assert_eq!(r.status, 401, "{why}: {}", r.text);
        assert!(!r.text.contains(&bad), "the answer repeats the token");
    }
    // API keys keep working beside tokens.
    let auditor = server.key(ADMIN, "auditor");
    let page = server
        .get_as(&auditor, "/v1/events?correlation_id=rr-jwt")
        .ok_json();
    assert_eq!(page["events"][0]["correlation_id"], "rr-jwt");
}

/// The same issuer with its JWKS fetched from a URL at startup, as from a cluster's
/// `/openid/v1/jwks`.
#[test]
fn the_jwks_can_come_from_a_url() {
    let scratch = support::Scratch::new();
    let dir = scratch.tmp.path();
    let (cluster_key, jwk) = key_pair(dir, "cluster", "k1");
    let jwks = json!({"keys": [jwk]}).to_string();
    // A one-file HTTP server on loopback.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for mut conn in listener.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
            let reply = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{jwks}",
                jwks.len()
            );
            let _ = conn.write_all(reply.as_bytes());
        }
    });
    let gateway = "system:serviceaccount:kubernaut-system:gateway";
    let server = start(
        &scratch,
        &format!("jwks_url = \"http://{addr}/openid/v1/jwks\""),
        gateway,
    );
    let body = support::events(1, &support::corr("jwt-url"));
    let token = token(&cluster_key, "k1", gateway, "veritrail", 600);
    let r = server.call(Method::POST, "/v1/events", Some(&token), None, Some(&body));
    assert_eq!(r.status, 200, "{}", r.text);
}

/// A JWT with exactly this header and these claims (as JSON, so that the header may carry
/// members `jsonwebtoken::Header` does not know, such as `crit`), signed with `alg`.
fn signed(header: &Value, claims: &Value, key: &EncodingKey, alg: Algorithm) -> String {
    let message = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), key, alg).expect("signing");
    format!("{message}.{signature}")
}

/// Claims that the server accepts for `sub` (audience `veritrail`, ten minutes to live).
fn claims(sub: &str) -> Value {
    let now = chrono::Utc::now().timestamp();
    json!({"iss": ISSUER, "sub": sub, "aud": ["veritrail"], "iat": now, "exp": now + 600})
}

/// POSTs one event with `bearer`.
fn post_as(server: &support::Server, bearer: &str) -> support::Resp {
    let body = support::events(1, &support::corr("jwt"));
    server.call(Method::POST, "/v1/events", Some(bearer), None, Some(&body))
}

/// Asserts that `token` is refused with 401 and that the answer does not repeat it.
fn assert_refused(server: &support::Server, token: &str) {
    let r = post_as(server, token);
    r.problem(401);
    assert!(!r.text.contains(token), "the answer repeats the token");
}

/// A server trusting one ES256 key (kid `k1`) for [`GATEWAY`], and that key for signing.
fn es256_server(scratch: &support::Scratch) -> (support::Server, EncodingKey) {
    let dir = scratch.tmp.path();
    let (der, jwk) = key_pair(dir, "cluster", "k1");
    std::fs::write(dir.join("jwks.json"), json!({"keys": [jwk]}).to_string()).unwrap();
    let server = start(scratch, "jwks_file = \"jwks.json\"", GATEWAY);
    (server, EncodingKey::from_ec_der(&der))
}

const GATEWAY: &str = "system:serviceaccount:kubernaut-system:gateway";

/// A token that is not valid yet (`nbf` a day ahead, well beyond any leeway) is refused, though
/// everything else about it is right.
#[test]
fn a_token_not_valid_yet_is_refused() {
    let scratch = support::Scratch::new();
    let (server, key) = es256_server(&scratch);
    let header = json!({"alg": "ES256", "typ": "JWT", "kid": "k1"});
    let now = chrono::Utc::now().timestamp();

    let mut current = claims(GATEWAY);
    current["nbf"] = json!(now - 10);
    let ok = post_as(&server, &signed(&header, &current, &key, Algorithm::ES256));
    assert_eq!(ok.status, 200, "an nbf in the past: {}", ok.text);

    let mut future = claims(GATEWAY);
    future["nbf"] = json!(now + 86_400);
    future["exp"] = json!(now + 2 * 86_400);
    assert_refused(&server, &signed(&header, &future, &key, Algorithm::ES256));
}

/// A header naming critical extensions (`crit`) is refused even when the signature and the
/// claims are good: the server understands no extension (RFC 7515 §4.1.11).
#[test]
fn a_token_with_critical_extensions_is_refused() {
    let scratch = support::Scratch::new();
    let (server, key) = es256_server(&scratch);
    let claims = claims(GATEWAY);

    let plain = json!({"alg": "ES256", "typ": "JWT", "kid": "k1"});
    let ok = post_as(&server, &signed(&plain, &claims, &key, Algorithm::ES256));
    assert_eq!(ok.status, 200, "the same token without crit: {}", ok.text);

    for crit in [
        json!({"alg": "ES256", "typ": "JWT", "kid": "k1", "crit": ["exp"]}),
        json!({"alg": "ES256", "typ": "JWT", "kid": "k1", "crit": ["b64"], "b64": true}),
    ] {
        assert_refused(&server, &signed(&crit, &claims, &key, Algorithm::ES256));
    }
}

/// An RSA key marked `"alg": "RS256"` in the JWKS verifies RS256 signatures only: a PS256
/// signature made with the very same private key is refused (RFC 7517 §4.4).
#[test]
fn a_key_marked_for_one_algorithm_verifies_only_that_one() {
    let scratch = support::Scratch::new();
    let dir = scratch.tmp.path();
    support::openssl(
        dir,
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            "rsa.pem",
        ],
    );
    // ring signs with a PKCS#1 RSAPrivateKey.
    let der = support::openssl(
        dir,
        &["rsa", "-in", "rsa.pem", "-traditional", "-outform", "DER"],
    );
    let modulus = String::from_utf8(support::openssl(
        dir,
        &["rsa", "-in", "rsa.pem", "-noout", "-modulus"],
    ))
    .expect("utf-8");
    let modulus = modulus
        .trim()
        .strip_prefix("Modulus=")
        .unwrap_or_else(|| panic!("unexpected modulus output {modulus:?}"));
    let jwk = json!({
        "kty": "RSA", "kid": "r1", "use": "sig", "alg": "RS256",
        "n": URL_SAFE_NO_PAD.encode(support::unhex(modulus)),
        "e": "AQAB",
    });
    std::fs::write(dir.join("jwks.json"), json!({"keys": [jwk]}).to_string()).unwrap();
    let server = start(&scratch, "jwks_file = \"jwks.json\"", GATEWAY);
    let key = EncodingKey::from_rsa_der(&der);
    let claims = claims(GATEWAY);

    let rs256 = signed(
        &json!({"alg": "RS256", "typ": "JWT", "kid": "r1"}),
        &claims,
        &key,
        Algorithm::RS256,
    );
    let ok = post_as(&server, &rs256);
    assert_eq!(ok.status, 200, "RS256 with the RS256 key: {}", ok.text);

    let ps256 = signed(
        &json!({"alg": "PS256", "typ": "JWT", "kid": "r1"}),
        &claims,
        &key,
        Algorithm::PS256,
    );
    assert_refused(&server, &ps256);
}

/// A subject rule whose tenant is not a tenant name (here a path escape) stops `serve` at
/// startup, with a message naming it, instead of serving with it.
#[test]
fn a_subject_rule_with_a_bad_tenant_name_stops_the_server() {
    let scratch = support::Scratch::new();
    let dir = scratch.tmp.path();
    let (_, jwk) = key_pair(dir, "cluster", "k1");
    std::fs::write(dir.join("jwks.json"), json!({"keys": [jwk]}).to_string()).unwrap();
    let config = dir.join("jwt.toml");
    std::fs::write(
        &config,
        format!(
            "[[issuer]]\nissuer = \"{ISSUER}\"\naudiences = [\"veritrail\"]\njwks_file = \"jwks.json\"\n\n\
             [[issuer.subject]]\nsubject = \"{GATEWAY}\"\ntenant = \"../evil\"\nrole = \"producer\"\n"
        ),
    )
    .unwrap();
    // Output to files, so that neither pipe can fill and stall the child.
    let stdout_path = dir.join("serve.stdout");
    let stderr_path = dir.join("serve.stderr");
    let mut child = support::command()
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(scratch.data())
        .arg("--jwt-config")
        .arg(&config)
        .env("VERITRAIL_ADMIN_KEY", ADMIN)
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&stdout_path).unwrap())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .expect("spawning veritrail serve");
    let deadline = std::time::Instant::now() + support::DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for the server") {
            break status;
        }
        let listening = std::fs::read_to_string(&stdout_path)
            .unwrap_or_default()
            .contains("listening on");
        if listening || std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the server {} although a subject rule names tenant `../evil`; stderr:\n{}",
                if listening { "started" } else { "kept running" },
                std::fs::read_to_string(&stderr_path).unwrap_or_default()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    assert!(!status.success(), "exit {status}; stderr:\n{stderr}");
    assert!(
        stderr.contains("../evil"),
        "the message does not name the tenant; stderr:\n{stderr}"
    );
    assert!(
        !scratch
            .data()
            .join("tenants")
            .join("..")
            .join("evil")
            .exists()
            && !dir.join("evil").exists(),
        "a directory was made outside the tenants"
    );
}
