//! Access control: who is calling (an API key), what the route needs (its [`Action`]), which
//! tenant the request acts on, and the trace every look at the trail leaves (access events).
//!
//! One middleware ([`authorize`]) runs on every matched route. It looks the route up in
//! [`required`], authenticates the bearer key, checks the key's role, resolves the tenant and
//! hands the handler a [`Caller`]. Handlers never choose a tenant themselves.

pub mod jwt;
pub mod keys;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use uuid::Uuid;
use veritrail_core::event::{format_time, Event};
use veritrail_store::valid_tenant;

use crate::problem::Problem;
use crate::{AppState, DEFAULT_TENANT};
use keys::{KeyInfo, KeyRegistry, Role};

/// Header with which a cross-tenant admin key names the tenant it acts on.
pub const TENANT_HEADER: &str = "veritrail-tenant";

/// One denied request per source is written to the log per this interval; the others are
/// counted and the count goes into the next event.
const DENIAL_EVENT_INTERVAL: Duration = Duration::from_secs(60);
/// Sources remembered for that limit (beyond it the table starts afresh).
const MAX_DENIAL_SOURCES: usize = 10_000;

/// What a route does, which decides the roles that may call it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// No key needed (health and readiness).
    Public,
    /// Any valid key (the public verifier key).
    AnyKey,
    /// Append events.
    Write,
    /// Read events: queries, timelines, producers.
    Read,
    /// Proofs and exports.
    Prove,
    /// Legal holds.
    Hold,
    /// Keys and settings.
    Admin,
    /// What spans tenants (metrics): cross-tenant admin keys only.
    Operate,
}

impl Action {
    /// True when `role` may do this.
    pub fn permits(self, role: Role) -> bool {
        match self {
            Action::Public | Action::AnyKey => true,
            Action::Write => role == Role::Producer,
            Action::Read => matches!(
                role,
                Role::Reader | Role::Auditor | Role::Legal | Role::Admin
            ),
            Action::Prove => matches!(role, Role::Auditor | Role::Admin),
            Action::Hold => matches!(role, Role::Legal | Role::Admin),
            Action::Admin | Action::Operate => role == Role::Admin,
        }
    }
}

/// The action each route needs. A route missing here needs an admin key: forgetting to list a
/// new route can only make it stricter.
pub fn required(method: &Method, path: &str) -> Action {
    let read = *method == Method::GET || *method == Method::HEAD;
    match (read, path) {
        (_, "/healthz" | "/readyz") => Action::Public,
        (true, "/v1/key") => Action::AnyKey,
        (
            false,
            "/v1/events"
            | "/api/v1/audit/events"
            | "/api/v1/audit/events/batch"
            | "/api/v1/audit/notifications"
            | "/v1/ingest/kubernetes",
        ) if *method == Method::POST => Action::Write,
        (true, "/v1/events" | "/v1/events/{event_id}" | "/v1/producers") => Action::Read,
        (true, "/api/v1/audit/events") => Action::Read,
        // A rebuilt RemediationRequest is read from the trail; it is a POST only in Kubernaut's API.
        (false, "/api/v1/audit/remediation-requests/{correlation_id}/reconstruct")
            if *method == Method::POST =>
        {
            Action::Read
        }
        (true, "/v1/correlations/{id}/timeline") => Action::Read,
        (true, "/v1/checkpoint" | "/v1/proof/inclusion" | "/v1/proof/consistency") => Action::Prove,
        (true, "/v1/export") => Action::Prove,
        (false, "/api/v1/audit/verify-chain") | (true, "/api/v1/audit/export") => Action::Prove,
        (
            _,
            "/api/v1/audit/legal-hold"
            | "/api/v1/audit/legal-hold/{correlation_id}"
            | "/v1/holds"
            | "/v1/holds/{hold_id}/release",
        ) => Action::Hold,
        (true, "/metrics") => Action::Operate,
        _ => Action::Admin,
    }
}

/// Authentication settings and state.
pub struct Access {
    /// `None` when authentication is off (`--insecure-no-auth`).
    registry: Option<KeyRegistry>,
    /// Trusted JWT issuers (service-account tokens), beside the keys.
    jwt: Option<jwt::Issuers>,
    denials: Mutex<HashMap<IpAddr, (Instant, u64)>>,
    /// Denial events logged, across all sources (many sources must not flood the log either).
    denial_events: Mutex<TokenBucket>,
    /// Refusals answered at once, across all sources; beyond it each refusal is slowed.
    refusals: Mutex<TokenBucket>,
}

/// How many denial events are logged at most, in a burst and per second after it.
const DENIAL_EVENTS_BURST: f64 = 60.0;
const DENIAL_EVENTS_PER_S: f64 = 1.0;
/// How many refusals are answered at once, in a burst and per second after it, before each
/// further one waits [`REFUSAL_DELAY`]: key guessing gets slow, and an honest client with a wrong
/// key hardly notices.
const REFUSALS_BURST: f64 = 100.0;
const REFUSALS_PER_S: f64 = 50.0;
const REFUSAL_DELAY: Duration = Duration::from_secs(1);

/// A token bucket: `burst` tokens, refilled at `per_s`.
#[derive(Debug)]
struct TokenBucket {
    tokens: f64,
    burst: f64,
    per_s: f64,
    at: Instant,
}

impl TokenBucket {
    fn new(burst: f64, per_s: f64) -> TokenBucket {
        TokenBucket {
            tokens: burst,
            burst,
            per_s,
            at: Instant::now(),
        }
    }

    /// Takes a token if there is one.
    fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_s).min(self.burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

impl Access {
    /// Access checked against `registry`.
    pub fn with_keys(registry: KeyRegistry) -> Access {
        Access {
            registry: Some(registry),
            jwt: None,
            denials: Mutex::new(HashMap::new()),
            denial_events: Mutex::new(TokenBucket::new(DENIAL_EVENTS_BURST, DENIAL_EVENTS_PER_S)),
            refusals: Mutex::new(TokenBucket::new(REFUSALS_BURST, REFUSALS_PER_S)),
        }
    }

    /// Also accepts bearer JWTs from `issuers`.
    pub fn with_jwt(mut self, issuers: jwt::Issuers) -> Access {
        self.jwt = Some(issuers);
        self
    }

    /// No authentication: every caller may do everything. Only for `--insecure-no-auth`.
    pub fn insecure() -> Access {
        Access {
            registry: None,
            jwt: None,
            denials: Mutex::new(HashMap::new()),
            denial_events: Mutex::new(TokenBucket::new(DENIAL_EVENTS_BURST, DENIAL_EVENTS_PER_S)),
            refusals: Mutex::new(TokenBucket::new(REFUSALS_BURST, REFUSALS_PER_S)),
        }
    }

    /// The key registry, unless authentication is off.
    pub fn registry(&self) -> Option<&KeyRegistry> {
        self.registry.as_ref()
    }

    /// How long to wait before answering a refusal: nothing while refusals are rare.
    fn refusal_delay(&self, now: Instant) -> Option<Duration> {
        let mut bucket = self.refusals.lock().unwrap_or_else(|p| p.into_inner());
        (!bucket.take(now)).then_some(REFUSAL_DELAY)
    }

    /// Whether a denial from `source` goes to the log now, and how many were left out before.
    fn admit_denial_event(&self, source: IpAddr, now: Instant) -> Option<u64> {
        // An IPv6 host controls a whole /64: count it as one source.
        let source = match source {
            IpAddr::V6(v6) => {
                let mut o = v6.octets();
                o[8..].fill(0);
                IpAddr::from(o)
            }
            v4 => v4,
        };
        let mut denials = self.denials.lock().unwrap_or_else(|p| p.into_inner());
        if denials.len() >= MAX_DENIAL_SOURCES && !denials.contains_key(&source) {
            denials.clear();
        }
        let over_budget = || {
            !self
                .denial_events
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take(now)
        };
        match denials.get_mut(&source) {
            Some((last, skipped)) if now.duration_since(*last) < DENIAL_EVENT_INTERVAL => {
                *skipped += 1;
                None
            }
            Some((_, skipped)) if over_budget() => {
                *skipped += 1;
                None
            }
            None if over_budget() => {
                denials.insert(source, (now, 1));
                None
            }
            Some((last, skipped)) => {
                *last = now;
                Some(std::mem::take(skipped))
            }
            None => {
                denials.insert(source, (now, 0));
                Some(0)
            }
        }
    }
}

/// File the generated bootstrap admin key is written to, inside the data directory.
pub const ADMIN_KEY_FILE: &str = "admin.key";

/// How the first admin key came to be.
#[derive(Debug, PartialEq, Eq)]
pub enum Bootstrap {
    /// Keys existed already.
    Existing,
    /// The operator's `VERITRAIL_ADMIN_KEY` was registered.
    FromEnvironment,
    /// A key was generated and written to this file (mode 0600).
    Generated(std::path::PathBuf),
}

/// On a registry with no keys, registers the first (cross-tenant) admin key: `operator_key` when
/// given, else a generated one written to `<data_dir>/admin.key`.
pub fn bootstrap(
    registry: &KeyRegistry,
    operator_key: Option<&str>,
    data_dir: &std::path::Path,
) -> Result<Bootstrap, keys::KeyError> {
    if !registry.is_empty() {
        return Ok(Bootstrap::Existing);
    }
    let new = keys::NewKey {
        name: "bootstrap-admin".into(),
        tenant: None,
        role: Role::Admin,
        person: None,
        pii: false,
        expires_at: None,
    };
    if let Some(token) = operator_key {
        registry.register(token, new)?;
        return Ok(Bootstrap::FromEnvironment);
    }
    // The file first: a key registered but written nowhere would lock the operator out.
    let token = keys::new_token()?;
    let path = data_dir.join(ADMIN_KEY_FILE);
    keys::write_durable(&path, format!("{token}\n").as_bytes())?;
    registry.register(&token, new)?;
    Ok(Bootstrap::Generated(path))
}

/// Who is calling and on which tenant, as the handlers see it.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The key, or `None` when authentication is off.
    pub key: Option<KeyInfo>,
    /// The tenant the request acts on.
    pub tenant: String,
}

impl Caller {
    /// The person behind the key, recorded as the actor of what it writes.
    pub fn person(&self) -> Option<&str> {
        self.key.as_ref().and_then(|k| k.person.as_deref())
    }

    /// `(actor_type, actor_id)` for the access events of this caller.
    pub fn actor(&self) -> (&'static str, String) {
        match (&self.key, self.person()) {
            (_, Some(p)) => ("user", p.to_string()),
            (Some(k), None) => ("api_key", format!("key:{}", k.id)),
            (None, None) => ("anonymous", "anonymous".into()),
        }
    }

    /// What access events say about the key.
    fn key_json(&self) -> Value {
        match &self.key {
            Some(k) => json!({"id": k.id, "name": k.name, "role": k.role.as_str()}),
            None => Value::Null,
        }
    }
}

/// The middleware run on every matched route (see the module documentation).
pub async fn authorize(
    State(state): State<Arc<AppState>>,
    matched: Option<MatchedPath>,
    mut req: Request,
    next: Next,
) -> Response {
    let path = matched.as_ref().map_or("", |m| m.as_str()).to_string();
    let action = required(req.method(), &path);
    if action == Action::Public {
        return next.run(req).await;
    }
    let source = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let cert = req.extensions().get::<crate::tls::ClientCert>().cloned();
    match identify(&state, req.headers(), cert.as_ref(), action) {
        Ok(caller) => {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err(denied) => {
            let method = req.method().to_string();
            denied.record(&state, source, &method, &path);
            if let Some(delay) = state.access.refusal_delay(Instant::now()) {
                metrics::counter!("veritrail_auth_failures_slowed_total").increment(1);
                tokio::time::sleep(delay).await;
            }
            denied.problem.into_response()
        }
    }
}

/// A refused request: the answer, and what the log and the metrics say about it.
struct Denied {
    problem: Problem,
    reason: &'static str,
    /// The key, when it was valid but not allowed.
    key: Option<KeyInfo>,
}

impl Denied {
    fn unauthenticated(reason: &'static str, detail: &str) -> Denied {
        Denied {
            problem: Problem::new(StatusCode::UNAUTHORIZED, "Unauthorized", detail),
            reason,
            key: None,
        }
    }

    fn forbidden(key: KeyInfo, reason: &'static str, detail: String) -> Denied {
        Denied {
            problem: Problem::new(StatusCode::FORBIDDEN, "Forbidden", detail),
            reason,
            key: Some(key),
        }
    }

    /// Counts the denial and, at most once a minute per source, appends a
    /// `veritrail.access.denied` event (to the key's tenant, or `default` without a key).
    fn record(&self, state: &AppState, source: Option<IpAddr>, method: &str, path: &str) {
        metrics::counter!("veritrail_auth_failures_total", "reason" => self.reason).increment(1);
        let access = &state.access;
        let from = source.unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let Some(skipped) = access.admit_denial_event(from, Instant::now()) else {
            metrics::counter!("veritrail_auth_failure_events_suppressed_total").increment(1);
            return;
        };
        let tenant = self
            .key
            .as_ref()
            .and_then(|k| k.tenant.clone())
            .unwrap_or_else(|| DEFAULT_TENANT.to_string());
        let (actor_type, actor_id) = match &self.key {
            Some(k) => ("api_key", format!("key:{}", k.id)),
            None => ("anonymous", "unknown".to_string()),
        };
        let event = json!({
            "event_type": "veritrail.access.denied",
            "event_timestamp": format_time(&chrono::Utc::now()),
            "event_category": "veritrail",
            "event_action": "authorize",
            "event_outcome": "failure",
            "actor_type": actor_type,
            "actor_id": actor_id,
            "actor_ip": source.map(|s| s.to_string()),
            "resource_type": "audit_trail",
            "resource_id": tenant,
            "error_message": self.reason,
            "event_data": {
                "method": method,
                "path": path,
                "status": self.problem.status.as_u16(),
                "reason": self.reason,
                "earlier_denials_not_logged": skipped,
            }
        });
        let store = state.store.clone();
        // The answer does not wait for this event: a flood of bad keys must not queue on the disk.
        tokio::spawn(async move {
            if let Err(e) = append(&store, &tenant, &event).await {
                tracing::warn!(error = %e.detail, "could not record a denied request");
            }
        });
    }
}

/// The caller of a request that needs `action`.
fn identify(
    state: &AppState,
    headers: &HeaderMap,
    cert: Option<&crate::tls::ClientCert>,
    action: Action,
) -> Result<Caller, Box<Denied>> {
    let named = headers
        .get(TENANT_HEADER)
        .map(|v| {
            v.to_str()
                .ok()
                .filter(|t| valid_tenant(t))
                .map(str::to_string)
                .ok_or_else(|| {
                    let mut d = Denied::unauthenticated("bad tenant header", "");
                    d.problem = Problem::bad_request(format!(
                        "`{TENANT_HEADER}` must be a tenant name (a-z, 0-9, - and _, at most 64)"
                    ));
                    Box::new(d)
                })
        })
        .transpose()?;
    let Some(registry) = state.access.registry() else {
        return Ok(Caller {
            key: None,
            tenant: named.unwrap_or_else(|| DEFAULT_TENANT.to_string()),
        });
    };
    let now = chrono::Utc::now();
    // A bearer key wins; without one, a verified client certificate identifies the caller.
    let invalid_key = |r: keys::Refusal| {
        (
            r.as_str(),
            "the API key is not valid (unknown, revoked or expired)".to_string(),
        )
    };
    let key = match (bearer(headers), cert) {
        (Some(token), _) if token.starts_with(keys::CERT_PREFIX) => {
            Err(invalid_key(keys::Refusal::Unknown))
        }
        // A JWT, when issuers are configured; anything else is an API key.
        (Some(token), _) => match &state.access.jwt {
            Some(issuers) if jwt::Issuers::looks_like_jwt(token) => issuers
                .authenticate(token)
                .map_err(|e| ("bad token", e.to_string())),
            _ => registry.authenticate(token, now).map_err(invalid_key),
        },
        (None, Some(cert)) => registry
            .authenticate_certificate(&cert.0, now)
            .map_err(invalid_key),
        (None, None) => {
            return Err(Box::new(Denied::unauthenticated(
                "missing key",
                "this endpoint needs an API key: send `Authorization: Bearer <key>` \
                 (or a registered client certificate)",
            )))
        }
    };
    let key = key.map_err(|(reason, detail)| Box::new(Denied::unauthenticated(reason, &detail)))?;
    if !action.permits(key.role) {
        let detail = format!(
            "a key with the role `{}` may not do this; it needs the role {}",
            key.role.as_str(),
            roles_for(action)
        );
        return Err(Box::new(Denied::forbidden(key, "role", detail)));
    }
    if action == Action::Operate && key.tenant.is_some() {
        let detail = "this needs a cross-tenant admin key: it shows every tenant".to_string();
        return Err(Box::new(Denied::forbidden(key, "tenant", detail)));
    }
    let tenant = match (&key.tenant, named) {
        (Some(own), Some(named)) if *own != named => {
            let detail = format!("this key acts on tenant `{own}` only");
            return Err(Box::new(Denied::forbidden(key, "tenant", detail)));
        }
        (Some(own), _) => own.clone(),
        (None, named) => named.unwrap_or_else(|| DEFAULT_TENANT.to_string()),
    };
    Ok(Caller {
        key: Some(key),
        tenant,
    })
}

fn roles_for(action: Action) -> String {
    let names: Vec<String> = Role::ALL
        .into_iter()
        .filter(|r| action.permits(*r))
        .map(|r| format!("`{}`", r.as_str()))
        .collect();
    names.join(" or ")
}

/// The token of an `Authorization: Bearer` header.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The `WWW-Authenticate` value of a 401.
pub fn challenge() -> HeaderValue {
    HeaderValue::from_static("Bearer realm=\"veritrail\"")
}

/// Appends the access event of a request that looked at the trail (`kind` is e.g.
/// `access.query`), and waits until it is durable: no answer leaves without its trace. With
/// authentication off there is no caller to attribute anything to, and nothing is recorded.
pub async fn record(
    state: &AppState,
    caller: &Caller,
    kind: &str,
    details: Value,
) -> Result<(), Problem> {
    let pending = queue_record(state, caller, kind, details)?;
    wait_recorded(pending).await
}

/// Queues the access event of [`record`] without waiting, so that its fsync can overlap the
/// rest of the request; [`wait_recorded`] must be awaited before the answer leaves.
pub fn queue_record(
    state: &AppState,
    caller: &Caller,
    kind: &str,
    details: Value,
) -> Result<Option<veritrail_store::PendingAppend>, Problem> {
    if state.access.registry().is_none() {
        return Ok(None);
    }
    let (actor_type, actor_id) = caller.actor();
    let action = kind.rsplit('.').next().unwrap_or(kind);
    let mut data = json!({"key": caller.key_json()});
    if let (Value::Object(d), Value::Object(more)) = (&mut data, details) {
        d.extend(more);
    }
    let event = json!({
        "event_type": format!("veritrail.{kind}"),
        "event_timestamp": format_time(&chrono::Utc::now()),
        "event_category": "veritrail",
        "event_action": action,
        "event_outcome": "success",
        "actor_type": actor_type,
        "actor_id": actor_id,
        "resource_type": "audit_trail",
        "resource_id": caller.tenant,
        "event_data": data,
    });
    queue(&state.store, &caller.tenant, &event)
        .map(Some)
        .map_err(unrecorded)
}

/// Waits until a queued access event is durable.
pub async fn wait_recorded(pending: Option<veritrail_store::PendingAppend>) -> Result<(), Problem> {
    if let Some(pending) = pending {
        crate::ingest::durable(pending).await.map_err(unrecorded)?;
    }
    Ok(())
}

/// A look at the trail whose access event could not be recorded is refused: a read that leaves
/// no trace must not happen. The answer says so, with the cause.
fn unrecorded(mut p: Problem) -> Problem {
    p.detail = format!(
        "refused because this request's access event could not be recorded (every look at the trail leaves a trace): {}",
        p.detail
    );
    p
}

/// Validates and queues one event of the server's own.
pub(crate) fn queue(
    store: &Arc<dyn veritrail_store::Store>,
    tenant: &str,
    event: &Value,
) -> Result<veritrail_store::PendingAppend, Problem> {
    queue_all(store, tenant, std::slice::from_ref(event))
}

/// Validates and queues events of the server's own, as one atomic append.
pub(crate) fn queue_all(
    store: &Arc<dyn veritrail_store::Store>,
    tenant: &str,
    events: &[Value],
) -> Result<veritrail_store::PendingAppend, Problem> {
    let mut valid = Vec::with_capacity(events.len());
    for event in events {
        valid.push(Event::from_json(event, Uuid::now_v7).map_err(|e| {
            Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Internal error",
                format!("an event the server writes itself did not validate: {e}"),
            )
        })?);
    }
    Ok(store.append(tenant, valid)?)
}

async fn append(
    store: &Arc<dyn veritrail_store::Store>,
    tenant: &str,
    event: &Value,
) -> Result<(), Problem> {
    crate::ingest::durable(queue(store, tenant, event)?).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_role_gets_exactly_its_actions() {
        use Action as A;
        let table = [
            (Role::Producer, vec![A::AnyKey, A::Write]),
            (Role::Reader, vec![A::AnyKey, A::Read]),
            (Role::Auditor, vec![A::AnyKey, A::Read, A::Prove]),
            (Role::Legal, vec![A::AnyKey, A::Read, A::Hold]),
            (
                Role::Admin,
                vec![A::AnyKey, A::Read, A::Prove, A::Hold, A::Admin],
            ),
        ];
        for (role, allowed) in table {
            for action in [A::AnyKey, A::Write, A::Read, A::Prove, A::Hold, A::Admin] {
                assert_eq!(
                    action.permits(role),
                    allowed.contains(&action),
                    "{role:?} {action:?}"
                );
            }
        }
    }

    #[test]
    fn unlisted_routes_need_an_admin() {
        assert_eq!(required(&Method::GET, "/v1/something-new"), Action::Admin);
        assert_eq!(required(&Method::DELETE, "/v1/events"), Action::Admin);
        assert_eq!(required(&Method::POST, "/v1/events"), Action::Write);
        assert_eq!(
            required(&Method::POST, "/api/v1/audit/events/batch"),
            Action::Write
        );
        assert_eq!(required(&Method::GET, "/healthz"), Action::Public);
        assert_eq!(required(&Method::GET, "/metrics"), Action::Operate);
    }

    #[test]
    fn denial_events_are_limited_per_source() {
        let access = Access::insecure();
        let a = IpAddr::from([10, 0, 0, 1]);
        let b = IpAddr::from([10, 0, 0, 2]);
        let t0 = Instant::now();
        assert_eq!(access.admit_denial_event(a, t0), Some(0));
        assert_eq!(access.admit_denial_event(a, t0), None);
        assert_eq!(access.admit_denial_event(a, t0), None);
        assert_eq!(access.admit_denial_event(b, t0), Some(0));
        let later = t0 + DENIAL_EVENT_INTERVAL;
        assert_eq!(access.admit_denial_event(a, later), Some(2));
        // One IPv6 /64 is one source.
        let v6 = |last: u16| IpAddr::from([0x2001, 0xdb8, 0, 1, 0, 0, 0, last]);
        assert_eq!(access.admit_denial_event(v6(1), t0), Some(0));
        assert_eq!(access.admit_denial_event(v6(2), t0), None);
    }

    #[test]
    fn bearer_tokens_are_read_case_insensitively_and_empty_ones_are_none() {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer abc"),
        );
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer "));
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer(&h), None);
    }
}
