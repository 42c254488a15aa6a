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
