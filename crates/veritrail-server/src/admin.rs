//! `/v1/admin/keys`: create, list and revoke API keys (admin keys only; see [`crate::access`]).
//!
//! A tenant's admin manages that tenant's keys; a cross-tenant admin manages every tenant's and
//! may create other cross-tenant admin keys. Every change is recorded in the tenant's log.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{json, Value};
use veritrail_store::valid_tenant;

use crate::access::keys::{KeyInfo, KeyRegistry, NewKey, Role};
use crate::access::{self, Caller};
use crate::problem::{PathText, Problem};
use crate::{blocking, AppState};

/// Largest body of `POST /v1/admin/keys` (a key request is a few hundred bytes).
pub const MAX_BODY_BYTES: usize = 64 << 10;

/// Body of `POST /v1/admin/keys`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// The tenant the key acts on; absent for a cross-tenant admin key.
    tenant: Option<String>,
    role: String,
    name: Option<String>,
    /// The person the key belongs to, recorded as the actor of what it writes.
    person: Option<String>,
    #[serde(default)]
    pii: bool,
    /// RFC 3339 time, or a duration from now such as `90d`, `12h`, `30m`.
    expires: Option<String>,
    /// Register a client certificate (mTLS) by its SHA-256 fingerprint instead of making a key.
    client_cert_sha256: Option<String>,
}

fn registry(state: &AppState) -> Result<&KeyRegistry, Problem> {
    state.access.registry().ok_or_else(|| {
        Problem::new(
            StatusCode::CONFLICT,
            "Authentication is off",
            "the server runs with --insecure-no-auth, so there are no keys to manage",
        )
    })
}

/// A tenant admin may only touch its own tenant; a cross-tenant admin any.
fn may_manage(caller: &Caller, tenant: Option<&str>) -> bool {
    match caller.key.as_ref().map(|k| k.tenant.as_deref()) {
        Some(Some(own)) => tenant == Some(own),
        _ => true,
    }
}

/// `POST /v1/admin/keys` → 201 with the key, whose `key` member is shown this once only.
pub async fn create(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Value>), Problem> {
    let (_admitted, bytes) =
        crate::admission::read_json(&state, &caller, &headers, body, MAX_BODY_BYTES).await?;
    let req: CreateKey = serde_json::from_slice(&bytes)
        .map_err(|e| Problem::bad_request(format!("the key request is not valid: {e}")))?;
    let role = Role::parse(&req.role).ok_or_else(|| {
        let names: Vec<&str> = Role::ALL.iter().map(|r| r.as_str()).collect();
        Problem::bad_request(format!(
            "`role` must be one of {}; got `{}`",
            names.join(", "),
            req.role
        ))
    })?;
    if let Some(t) = &req.tenant {
        if !valid_tenant(t) {
            return Err(Problem::bad_request(format!(
                "`{t}` is not a tenant name (a-z, 0-9, - and _, at most 64)"
            )));
        }
    }
    if req.tenant.is_none() && role != Role::Admin {
        return Err(Problem::bad_request(
            "only admin keys may be cross-tenant: give a `tenant`",
        ));
    }
    for (what, text) in [("name", &req.name), ("person", &req.person)] {
        if let Some(t) = text {
            if t.trim().is_empty() || t.chars().count() > 255 || t.chars().any(char::is_control) {
                return Err(Problem::bad_request(format!(
                    "`{what}` must be 1 to 255 characters, without control characters"
                )));
            }
        }
    }
    let tenant_admin = caller.key.as_ref().is_some_and(|k| k.tenant.is_some());
    if req.client_cert_sha256.is_some() && tenant_admin {
        // A certificate is global: who registers it decides which tenant its client writes to.
        return Err(Problem::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "registering a client certificate needs a cross-tenant admin key",
        ));
    }
    if !may_manage(&caller, req.tenant.as_deref()) {
        return Err(Problem::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "this admin key manages its own tenant's keys only",
        ));
    }
    let expires_at = req
        .expires
        .as_deref()
        .map(|e| parse_expiry(e, Utc::now()))
        .transpose()?;
    let new = NewKey {
        name: req.name.unwrap_or_else(|| format!("{}-key", role.as_str())),
        tenant: req.tenant,
        role,
        person: req.person,
        pii: req.pii,
        expires_at,
    };
    let inner = state.clone();
    let cert = req.client_cert_sha256;
    let (info, token) = blocking(move || {
        let registry = registry(&inner)?;
        match cert {
            Some(fp) => registry
                .register_certificate(&fp, new)
                .map(|info| (info, None))
                .map_err(|e| Problem::bad_request(e.to_string())),
            None => registry
                .create(new)
                .map(|(info, token)| (info, Some(token)))
                .map_err(|e| {
                    Problem::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "Key not created",
                        e.to_string(),
                    )
                }),
        }
    })
    .await?;
    if let Err(e) = record(&state, &caller, &info, "admin.key_created").await {
        // No key without its trace: undo the creation.
        if let Some(reg) = state.access.registry() {
            if let Err(undo) = reg.remove(&info.id) {
                tracing::error!(key = %info.id, error = %undo, "a key was created without its audit event and could not be removed");
            }
        }
        return Err(e);
    }
    let mut body = serde_json::to_value(&info).unwrap_or_default();
    if let Some(token) = token {
        body["key"] = Value::String(token);
    }
    Ok((StatusCode::CREATED, Json(body)))
}

/// Query of `GET /v1/admin/keys`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    tenant: Option<String>,
}

/// `GET /v1/admin/keys[?tenant=…]`: every key the caller may manage, without secrets.
pub async fn list(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    q: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, Problem> {
    let Query(q) = q.map_err(|e| Problem::bad_request(e.to_string()))?;
    let own = caller.key.as_ref().and_then(|k| k.tenant.clone());
    let tenant = own.or(q.tenant);
    let keys = registry(&state)?.list(tenant.as_deref());
    let details = json!({"tenant": tenant, "results": keys.len()});
    access::record(&state, &caller, "admin.keys_listed", details).await?;
    Ok(Json(json!({ "keys": keys })))
}

/// `DELETE /v1/admin/keys/{id}`: revokes the key (it stays listed, with `revoked_at`).
pub async fn revoke(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    PathText(id): PathText,
) -> Result<Json<KeyInfo>, Problem> {
    let reg = registry(&state)?;
    let not_found = || Problem::not_found(format!("no key with id `{id}`"));
    let existing = reg.get(&id).ok_or_else(not_found)?;
    // Another tenant's key is reported as absent, not as forbidden.
    if !may_manage(&caller, existing.tenant.as_deref()) {
        return Err(not_found());
    }
    // The trace first: a revocation is never left unrecorded.
    record(&state, &caller, &existing, "admin.key_revoked").await?;
    let (inner, key_id) = (state.clone(), id.clone());
    let info = blocking(move || {
        registry(&inner)?.revoke(&key_id).map_err(|e| {
            Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Key not revoked",
                e.to_string(),
            )
        })
    })
    .await?
    .ok_or_else(not_found)?;
    Ok(Json(info))
}

/// Records a key change in the log of the key's tenant (the caller's, for cross-tenant keys).
async fn record(
    state: &AppState,
    caller: &Caller,
    key: &KeyInfo,
    kind: &str,
) -> Result<(), Problem> {
    let mut at = caller.clone();
    if let Some(t) = &key.tenant {
        at.tenant = t.clone();
    }
    let details = json!({"subject_key": key});
    access::record(state, &at, kind, details).await
}

/// An expiry: an RFC 3339 time, or a number followed by `d`, `h`, `m` or `s` from `now`.
pub fn parse_expiry(s: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, Problem> {
    let bad = || {
        Problem::bad_request(format!(
            "`expires` must be a time (2026-12-31T00:00:00Z) or a duration such as 90d, 12h, 30m; got `{s}`"
        ))
    };
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    let unit_at = s.char_indices().last().map_or(0, |(i, _)| i);
    let (digits, unit) = s.split_at(unit_at);
    let n: i64 = digits.parse().map_err(|_| bad())?;
    let secs = match unit {
        "d" => n.checked_mul(86_400),
        "h" => n.checked_mul(3_600),
        "m" => n.checked_mul(60),
        "s" => Some(n),
        _ => None,
    }
    .filter(|s| *s > 0)
    .ok_or_else(bad)?;
    chrono::Duration::try_seconds(secs)
        .and_then(|d| now.checked_add_signed(d))
        .ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiries_read_durations_and_times() {
        let now = Utc::now();
        assert_eq!(
            parse_expiry("90d", now).ok(),
            Some(now + chrono::Duration::days(90))
        );
        assert_eq!(
            parse_expiry("12h", now).ok(),
            Some(now + chrono::Duration::hours(12))
        );
        assert!(parse_expiry("2030-01-01T00:00:00Z", now).is_ok());
        for bad in [
            "",
            "d",
            "-3d",
            "0d",
            "5w",
            "soon",
            "99999999999999999d",
            "5é",
        ] {
            assert!(parse_expiry(bad, now).is_err(), "{bad}");
        }
    }
}
