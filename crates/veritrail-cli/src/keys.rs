//! `veritrail keys create|list|revoke`: API key management through a running server, with an
//! admin key (`VERITRAIL_KEY`). Here `--tenant` names the tenant the keys belong to.

use std::process::ExitCode;

use clap::Subcommand;
use serde_json::{json, Value};

use crate::client::{Client, ServerArgs};

/// `veritrail keys …`.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key; its secret is printed once and never again.
    Create {
        /// Server, admin key, and `--tenant`: the tenant the new key acts on (leave it out only
        /// for a cross-tenant admin key).
        #[command(flatten)]
        server: ServerArgs,
        /// producer, reader, auditor, legal or admin.
        #[arg(long)]
        role: String,
        /// A name to recognise the key by.
        #[arg(long)]
        name: Option<String>,
        /// The person the key belongs to: recorded as the actor of the events it writes.
        #[arg(long)]
        person: Option<String>,
        /// Expiry: a duration from now (90d, 12h, 30m) or an RFC 3339 time.
        #[arg(long)]
        expires: Option<String>,
        /// The key may see personal data.
        #[arg(long)]
        pii: bool,
        /// Register a client certificate (mTLS) by its SHA-256 fingerprint instead of making a
        /// key (`openssl x509 -in cert.pem -noout -fingerprint -sha256`).
        #[arg(long)]
        client_cert_sha256: Option<String>,
        /// Print the server's JSON answer instead of the key alone.
        #[arg(long)]
        json: bool,
    },
    /// List keys (never their secrets).
    List {
        /// Server, admin key, and `--tenant` to list only that tenant's keys.
        #[command(flatten)]
        server: ServerArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key by its id; requests with it get 401 from now on.
    Revoke {
        #[command(flatten)]
        server: ServerArgs,
        /// The key's id (from `keys list` or `keys create --json`).
        id: String,
    },
}

/// Runs a `keys` command.
pub fn run(command: KeysCommand) -> anyhow::Result<ExitCode> {
    match command {
        KeysCommand::Create {
            mut server,
            role,
            name,
            person,
            expires,
            pii,
            client_cert_sha256,
            json,
        } => {
            let body = json!({
                "tenant": server.tenant.take(), "role": role, "name": name,
                "person": person, "expires": expires, "pii": pii,
                "client_cert_sha256": client_cert_sha256,
            });
            let answer = Client::new(&server)?.post_json("/v1/admin/keys", &body)?;
            let (id, role) = (
                answer["id"].as_str().unwrap_or("?"),
                answer["role"].as_str().unwrap_or("?"),
            );
            let tenant = answer["tenant"].as_str().unwrap_or("every tenant");
            match (json, answer["key"].as_str()) {
                (true, _) => outln!("{answer:#}"),
                (false, Some(key)) => {
                    eprintln!("created key {id} ({role} on {tenant}); it is shown only now:");
                    outln!("{key}");
                }
                (false, None) => {
                    outln!("registered the client certificate as {id} ({role} on {tenant})")
                }
            }
        }
        KeysCommand::List { mut server, json } => {
            let params: Vec<(String, String)> = server
                .tenant
                .take()
                .map(|t| ("tenant".to_string(), t))
                .into_iter()
                .collect();
            let answer: Value = Client::new(&server)?
                .get("/v1/admin/keys", &params)?
                .json()?;
            if json {
                outln!("{answer:#}");
            } else {
                outln!(
                    "{:<16}  {:<9} {:<16} {:<20} state",
                    "id",
                    "role",
                    "tenant",
                    "name"
                );
                for k in answer["keys"].as_array().into_iter().flatten() {
                    let state = if k["revoked_at"].is_string() {
                        format!("revoked {}", k["revoked_at"].as_str().unwrap_or(""))
                    } else if let Some(at) = k["expires_at"].as_str() {
                        format!("expires {at}")
                    } else {
                        "active".to_string()
                    };
                    outln!(
                        "{:<16}  {:<9} {:<16} {:<20} {state}",
                        k["id"].as_str().unwrap_or(""),
                        k["role"].as_str().unwrap_or(""),
                        k["tenant"].as_str().unwrap_or("*"),
                        k["name"].as_str().unwrap_or(""),
                    );
                }
            }
        }
        KeysCommand::Revoke { server, id } => {
            Client::new(&server)?.delete(&format!("/v1/admin/keys/{id}"))?;
            outln!("revoked key {id}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
