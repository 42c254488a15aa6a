//! Bearer JWTs from trusted issuers, Kubernetes service-account tokens above all: verified against
//! the issuer's JWKS (from a file), then mapped to a tenant and a role by configuration.
//!
//! The configuration (TOML, `serve --jwt-config FILE`):
//!
//! ```toml
//! [[issuer]]
//! issuer = "https://kubernetes.default.svc.cluster.local"
//! audiences = ["veritrail"]
//! jwks_file = "/etc/veritrail/cluster-jwks.json"   # kubectl get --raw /openid/v1/jwks
//! # or: jwks_url = "https://kubernetes.default.svc/openid/v1/jwks" (read once, at startup)
//!
//! [[issuer.subject]]
//! subject = "system:serviceaccount:kubernaut-system:*"   # a trailing * matches a prefix
//! tenant = "default"
//! role = "producer"
//! ```

use std::path::Path;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use super::keys::{KeyInfo, Role};

/// The configuration file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    issuer: Vec<IssuerConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IssuerConfig {
    issuer: String,
    audiences: Vec<String>,
    jwks_file: Option<std::path::PathBuf>,
    jwks_url: Option<String>,
    #[serde(default)]
    subject: Vec<SubjectRule>,
}

/// Which subjects get which tenant and role.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct SubjectRule {
    subject: String,
    tenant: String,
    role: Role,
}

impl SubjectRule {
    fn matches(&self, sub: &str) -> bool {
        match self.subject.strip_suffix('*') {
            Some(prefix) => sub.starts_with(prefix),
            None => sub == self.subject,
        }
    }
}

/// One trusted issuer, its keys loaded.
struct Issuer {
    issuer: String,
    audiences: Vec<String>,
    keys: JwkSet,
    rules: Vec<SubjectRule>,
}

/// The trusted issuers.
pub struct Issuers(Vec<Issuer>);

/// Why a JWT was refused (the message never includes the token).
#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    #[error("{0}")]
    Config(String),
    #[error("the token is not valid: {0}")]
    Invalid(String),
    #[error("no role is configured for subject `{0}`")]
    Unmapped(String),
}

#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
}

impl Issuers {
    /// Loads the configuration at `path` and each issuer's JWKS, from its file or, through
    /// `fetch`, from its URL.
    pub fn load(
        path: &Path,
        fetch: impl Fn(&str) -> Result<String, String>,
    ) -> Result<Issuers, JwtError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| JwtError::Config(format!("reading {}: {e}", path.display())))?;
        let config: Config = toml::from_str(&text)
            .map_err(|e| JwtError::Config(format!("{}: {e}", path.display())))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut issuers = Vec::new();
        for c in config.issuer {
            let (jwks, from) = match (&c.jwks_file, &c.jwks_url) {
                (Some(f), None) => {
                    let file = base.join(f);
                    let text = std::fs::read_to_string(&file).map_err(|e| {
                        JwtError::Config(format!("reading {}: {e}", file.display()))
                    })?;
                    (text, file.display().to_string())
                }
                (None, Some(url)) => {
                    let text =
                        fetch(url).map_err(|e| JwtError::Config(format!("fetching {url}: {e}")))?;
                    (text, url.clone())
                }
                _ => {
                    return Err(JwtError::Config(format!(
                        "issuer {}: give exactly one of jwks_file and jwks_url",
                        c.issuer
                    )))
                }
            };
            let keys: JwkSet = serde_json::from_str(&jwks)
                .map_err(|e| JwtError::Config(format!("{from} is not a JWKS: {e}")))?;
            if c.audiences.is_empty() {
                return Err(JwtError::Config(format!(
                    "issuer {}: give at least one audience",
                    c.issuer
                )));
            }
            if let Some(r) = c
                .subject
                .iter()
                .find(|r| !veritrail_store::valid_tenant(&r.tenant))
            {
                return Err(JwtError::Config(format!(
                    "issuer {}, subject `{}`: `{}` is not a tenant name (a-z, 0-9, - and _, at most 64)",
                    c.issuer, r.subject, r.tenant
                )));
            }
            issuers.push(Issuer {
                issuer: c.issuer,
                audiences: c.audiences,
                keys,
                rules: c.subject,
            });
        }
        Ok(Issuers(issuers))
    }

    /// True when `token` has the shape of a JWT (three base64url parts).
    pub fn looks_like_jwt(token: &str) -> bool {
        token.split('.').count() == 3 && token.starts_with("eyJ")
    }

    /// The identity of a verified token: a key record named after its subject.
    pub fn authenticate(&self, token: &str) -> Result<KeyInfo, JwtError> {
        let bad = |e: jsonwebtoken::errors::Error| JwtError::Invalid(e.to_string());
        let header = jsonwebtoken::decode_header(token).map_err(bad)?;
        if !matches!(
            header.alg,
            Algorithm::RS256 | Algorithm::ES256 | Algorithm::ES384 | Algorithm::PS256
        ) {
            return Err(JwtError::Invalid(format!(
                "algorithm {:?} is not accepted",
                header.alg
            )));
        }
        refuse_critical_extensions(token)?;
        let kid = header
            .kid
            .ok_or_else(|| JwtError::Invalid("no `kid` in the header".into()))?;
        for issuer in &self.0 {
            let Some(jwk) = issuer.keys.find(&kid) else {
                continue;
            };
            // A key marked for one algorithm verifies only that one (RFC 7517 §4.4): an RSA key
            // for RS256 must not accept a PS256 signature.
            if let Some(marked) = jwk.common.key_algorithm {
                if marked.to_string() != format!("{:?}", header.alg) {
                    return Err(JwtError::Invalid(format!(
                        "the key `{kid}` is for {marked}, not {:?}",
                        header.alg
                    )));
                }
            }
            let key = DecodingKey::from_jwk(jwk).map_err(bad)?;
            let mut validation = Validation::new(header.alg);
            validation.validate_nbf = true;
            validation.set_issuer(&[&issuer.issuer]);
            validation.set_audience(&issuer.audiences);
            validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
            let data = jsonwebtoken::decode::<Claims>(token, &key, &validation).map_err(bad)?;
            let sub = data.claims.sub;
            let rule = issuer
                .rules
                .iter()
                .find(|r| r.matches(&sub))
                .ok_or_else(|| JwtError::Unmapped(sub.clone()))?;
            return Ok(KeyInfo {
                id: format!("jwt:{sub}"),
                name: sub,
                tenant: Some(rule.tenant.clone()),
                role: rule.role,
                person: None,
                pii: false,
                client_cert_sha256: None,
                created_at: chrono::Utc::now(),
                expires_at: None,
                revoked_at: None,
            });
        }
        Err(JwtError::Invalid(format!(
            "no trusted issuer has the key `{kid}`"
        )))
    }
}

/// Refuses a token whose header names critical extensions (`crit`): this verifier understands
/// none, and RFC 7515 §4.1.11 says such a token must then be rejected.
fn refuse_critical_extensions(token: &str) -> Result<(), JwtError> {
    use base64::Engine;
    let invalid = |m: &str| JwtError::Invalid(m.to_string());
    let head = token.split('.').next().unwrap_or("");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(head.trim_end_matches('='))
        .map_err(|_| invalid("the header is not base64url"))?;
    let header: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|_| invalid("the header is not JSON"))?;
    if header.get("crit").is_some() {
        return Err(invalid(
            "the header names critical extensions (`crit`), which this server does not support",
        ));
    }
    Ok(())
}
