//! Kubernaut's RemediationRequest reconstruction
//! (`POST /api/v1/audit/remediation-requests/{correlation_id}/reconstruct`): a pure function from
//! one correlation id's Kubernaut events, oldest first, to the API's `ReconstructionResponse`,
//! the RemediationRequest written as YAML ([`reconstruct`], no I/O), and the route's handler
//! ([`handle`]), which reads the events the Kubernaut API wrote and records the read.
//!
//! What is mapped (event type → RemediationRequest field, with the API's gap numbers):
//! - the first `gateway.signal.received` → `spec`: `signalName` (`signal_name`, required),
//!   `signalType` (`signal_type`, required), `signalFingerprint` (`fingerprint`), `severity`,
//!   `signalSource` (the event's `actor_id`, where the gateway keeps the adapter),
//!   `targetType`/`targetResource` (`resource_kind`, `resource_name`, `namespace`),
//!   `receivedTime` (the event's time), `originalPayload` (#1), `signalLabels` (#2) and
//!   `signalAnnotations` (#3);
//! - `aianalysis.analysis.completed` `provider_response_summary` → `spec.providerData` (#4);
//! - `workflowexecution.selection.completed` → `status.selectedWorkflowRef` (#5);
//! - `workflowexecution.execution.started` → `status.executionRef` (#6);
//! - `orchestrator.lifecycle.failed` → `status.failurePhase`, `status.failureReason`
//!   (`error_details.message`, #7, else `failure_reason`);
//! - `orchestrator.lifecycle.created` `timeout_config` and an operator's
//!   `webhook.remediationrequest.timeout_modified` `new_timeout_config` → `status.timeoutConfig`
//!   (#8, durations normalised as Go prints them), the latter also `status.lastModifiedBy`/`At`;
//! - orchestrator lifecycle events → `status.overallPhase`; their `crd_outcome` →
//!   `status.outcome`.
//!
//! The first gateway event defines the spec (the RR's spec is immutable); for everything else the
//! latest event in log order wins. Completeness is the share of nine fields present: the two
//! required ones and gaps #1-#6 and #8. Gap #7 exists only for failed remediations, so it is
//! mapped but not counted.
//!
//! Left out: what no event carries (`firingTime`, deduplication and storm data, references to
//! child resources other than the execution, conditions, phase start times, notification
//! tracking), the original RR's name (the reconstruction gets its own, as Kubernaut's does) and
//! events of other types.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Map, Value};

use crate::access::Caller;
use crate::problem::{PathText, Problem};
use crate::AppState;

type Object = Map<String, Value>;

/// Why a RemediationRequest could not be rebuilt; each maps to the status the API documents.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Failure {
    /// 404: no Kubernaut event has this correlation id.
    #[error("No audit events found for correlation_id: {0}")]
    NoEvents(String),
    /// 400: the events hold no `gateway.signal.received`.
    #[error("gateway.signal.received event is required for reconstruction")]
    MissingGateway,
    /// 400: under 50 % of the fields could be rebuilt.
    #[error("Reconstructed RR is only {completeness}% complete ({detail})")]
    Incomplete {
        /// The completeness reached, 0-49.
        completeness: u8,
        /// Which counted fields were rebuilt.
        detail: String,
    },
    /// 422: the events are there but do not make a valid RemediationRequest (e.g. gateway
    /// event_data lacks signal_name, or fields of the wrong JSON type).
    #[error("{0}")]
    Unprocessable(String),
}

const GATEWAY: &str = "gateway.signal.received";
/// Where Kubernaut puts reconstructed RRs.
const NAMESPACE: &str = "kubernaut-system";
const NAME_PREFIX: &str = "rr-reconstructed-";
const CORRELATION_KEY: &str = "kubernaut.ai/correlation-id";
/// Below this completeness the API refuses the reconstruction.
const MIN_COMPLETENESS: u8 = 50;
/// Longest Kubernetes object name (a DNS subdomain).
const MAX_NAME: usize = 253;
/// Longest Kubernetes label value.
const MAX_LABEL: usize = 63;
const TIMEOUTS: [&str; 4] = ["global", "processing", "analyzing", "executing"];

/// A field completeness counts: whether it lives in `status`, its key, and the warning when it is
/// absent (`None`: the field is required and its absence is an error).
struct Counted {
    in_status: bool,
    key: &'static str,
    warning: Option<&'static str>,
}

const COUNTED: [Counted; 9] = [
    Counted {
        in_status: false,
        key: "signalName",
        warning: None,
    },
    Counted {
        in_status: false,
        key: "signalType",
        warning: None,
    },
    Counted {
        in_status: false,
        key: "originalPayload",
        warning: Some(
            "OriginalPayload is missing (Gap #1) - full audit trail requires original data",
        ),
    },
    Counted {
        in_status: false,
        key: "signalLabels",
        warning: Some("SignalLabels are missing (Gap #2) - labels provide context for signal"),
    },
    Counted {
        in_status: false,
        key: "signalAnnotations",
        warning: Some(
            "SignalAnnotations are missing (Gap #3) - annotations provide additional metadata",
        ),
    },
    Counted {
        in_status: false,
        key: "providerData",
        warning: Some("ProviderData is missing (Gap #4) - AI analysis summary unavailable"),
    },
    Counted {
        in_status: true,
        key: "selectedWorkflowRef",
        warning: Some(
            "SelectedWorkflowRef is missing (Gap #5) - workflow selection data unavailable",
        ),
    },
    Counted {
        in_status: true,
        key: "executionRef",
        warning: Some(
            "ExecutionRef is missing (Gap #6) - workflow execution reference unavailable",
        ),
    },
    Counted {
        in_status: true,
        key: "timeoutConfig",
        warning: Some("TimeoutConfig is missing (Gap #8) - operational timeouts may use defaults"),
    },
];

/// Rebuilds the RemediationRequest of `correlation_id` from its Kubernaut `events` (JSON
/// objects, oldest first) and answers the API's `ReconstructionResponse`, dated `now`.
///
/// Fails with [`Failure::NoEvents`] for no events, [`Failure::MissingGateway`] without a
/// `gateway.signal.received`, [`Failure::Unprocessable`] when a mapped field has the wrong JSON
/// type (or the gateway event names no signal), and [`Failure::Incomplete`] under 50 %
/// completeness. A missing `signal_type` is a validation error (`is_valid: false`), not a failure.
pub fn reconstruct(
    correlation_id: &str,
    events: &[Value],
    now: DateTime<Utc>,
) -> Result<Value, Failure> {
    let events: Vec<&Object> = events.iter().filter_map(Value::as_object).collect();
    if events.is_empty() {
        return Err(Failure::NoEvents(correlation_id.to_string()));
    }
    let gateway = events
        .iter()
        .copied()
        .find(|e| event_type(e) == Some(GATEWAY))
        .ok_or(Failure::MissingGateway)?;
    let mut spec = gateway_spec(gateway)?;
    let mut status = Object::new();
    for event in &events {
        apply(event, &mut spec, &mut status)?;
    }

    let (mut errors, mut warnings, mut present) = (Vec::new(), Vec::new(), Vec::new());
    for field in &COUNTED {
        let section = if field.in_status { &status } else { &spec };
        if section.contains_key(field.key) {
            present.push(field.key);
        } else if let Some(warning) = field.warning {
            warnings.push(warning.to_string());
        } else {
            errors.push(format!("{} is required in spec", field.key));
        }
    }
    let completeness = u8::try_from(present.len() * 100 / COUNTED.len()).unwrap_or(100);
    if completeness < MIN_COMPLETENESS {
        return Err(Failure::Incomplete {
            completeness,
            detail: only(&present),
        });
    }

    let at = now.to_rfc3339_opts(SecondsFormat::Secs, true);
    let metadata = metadata(correlation_id, now, &at, &mut warnings);
    let rr = json!({
        "apiVersion": "remediation.kubernaut.ai/v1alpha1",
        "kind": "RemediationRequest",
        "metadata": metadata,
        "spec": spec,
        "status": status,
    });
    // The gateway's cluster first: it is where the signal was seen.
    let cluster_id = std::iter::once(gateway)
        .chain(events.iter().copied())
        .find_map(|e| {
            e.get("cluster_id")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        })
        .unwrap_or("");
    Ok(json!({
        "remediation_request_yaml": to_yaml(&rr),
        "validation": {
            "is_valid": errors.is_empty(),
            "completeness": completeness,
            "errors": errors,
            "warnings": warnings,
        },
        "reconstructed_at": at,
        "correlation_id": correlation_id,
        "cluster_id": cluster_id,
    }))
}

/// `POST /api/v1/audit/remediation-requests/{correlation_id}/reconstruct` → 200
/// `ReconstructionResponse`; 404 without events, 400 without a gateway event or under 50 %
/// complete, 422 when the events do not make a RemediationRequest.
pub async fn handle(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    PathText(correlation_id): PathText,
) -> Result<Json<Value>, Problem> {
    let (store, tenant, id) = (
        state.store.clone(),
        caller.tenant.clone(),
        correlation_id.clone(),
    );
    let (outcome, read) = crate::blocking(move || {
        let (hits, damage) = super::read_correlation(store.as_ref(), &tenant, &id)?;
        if let Some(why) = damage {
            return Err(veritrail_store::StoreError::Damaged(why).into());
        }
        let mut events = Vec::with_capacity(hits.len());
        for hit in &hits {
            events.push(hit.event.leaf()?.event().clone());
        }
        Ok((reconstruct(&id, &events, Utc::now()), events.len()))
    })
    .await?;
    let details = json!({"reconstruct": correlation_id, "results": read});
    crate::access::record(&state, &caller, "access.query", details).await?;
    outcome.map(Json).map_err(|failure| {
        let (status, title) = match failure {
            Failure::NoEvents(_) => (StatusCode::NOT_FOUND, "Audit Events Not Found"),
            Failure::MissingGateway => (StatusCode::BAD_REQUEST, "Reconstruction Failed"),
            Failure::Incomplete { .. } => (StatusCode::BAD_REQUEST, "Incomplete Reconstruction"),
            Failure::Unprocessable(_) => (StatusCode::UNPROCESSABLE_ENTITY, "Build Failed"),
        };
        Problem::new(status, title, failure.to_string())
    })
}

fn event_type(event: &Object) -> Option<&str> {
    event.get("event_type").and_then(Value::as_str)
}

fn event_data<'a>(event: &'a Object, ty: &str) -> Result<&'a Object, Failure> {
    event
        .get("event_data")
        .and_then(Value::as_object)
        .ok_or_else(|| Failure::Unprocessable(format!("{ty} event has no event_data object")))
}

fn wrong(ctx: &str, key: &str, what: &str) -> Failure {
    Failure::Unprocessable(format!("{ctx}: `{key}` must be {what}"))
}

/// A string field; absent, null and "" all mean "not there", another JSON type is an error.
fn text<'a>(obj: &'a Object, key: &str, ctx: &str) -> Result<Option<&'a str>, Failure> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str()).filter(|s| !s.is_empty())),
        Some(_) => Err(wrong(ctx, key, "a string")),
    }
}

/// An RFC 3339 time, written as Kubernetes writes times (seconds, UTC).
fn time(obj: &Object, key: &str, ctx: &str) -> Result<Option<String>, Failure> {
    let Some(s) = text(obj, key, ctx)? else {
        return Ok(None);
    };
    let t = DateTime::parse_from_rfc3339(s).map_err(|_| wrong(ctx, key, "an RFC 3339 time"))?;
    Ok(Some(
        t.with_timezone(&Utc)
            .to_rfc3339_opts(SecondsFormat::Secs, true),
    ))
}

/// A map of strings (labels, annotations); empty counts as absent.
fn string_map(obj: &Object, key: &str, ctx: &str) -> Result<Option<Object>, Failure> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) if m.values().all(Value::is_string) => {
            Ok(Some(m.clone()).filter(|m| !m.is_empty()))
        }
        Some(_) => Err(wrong(ctx, key, "an object of strings")),
    }
}

/// A JSON document the RR keeps as text (`originalPayload`, `providerData`): an object is
/// written compactly, text is kept as given; empty counts as absent.
fn json_text(obj: &Object, key: &str, ctx: &str) -> Result<Option<String>, Failure> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone()).filter(|s| !s.is_empty())),
        Some(v) if v.as_object().is_some_and(|m| !m.is_empty()) => Ok(Some(v.to_string())),
        Some(Value::Object(_)) => Ok(None),
        Some(_) => Err(wrong(ctx, key, "an object")),
    }
}

fn set(map: &mut Object, key: &str, value: Option<impl Into<Value>>) {
    if let Some(v) = value {
        map.insert(key.to_string(), v.into());
    }
}

/// The spec, from the first gateway event.
fn gateway_spec(event: &Object) -> Result<Object, Failure> {
    let ctx = "gateway.signal.received event_data";
    let d = event_data(event, GATEWAY)?;
    let name = text(d, "signal_name", ctx)?.ok_or_else(|| {
        Failure::Unprocessable(
            "gateway.signal.received event_data lacks `signal_name`: \
             the RemediationRequest cannot be assembled"
                .to_string(),
        )
    })?;
    let mut spec = Object::new();
    set(&mut spec, "signalName", Some(name));
    set(&mut spec, "signalType", text(d, "signal_type", ctx)?);
    set(&mut spec, "signalFingerprint", text(d, "fingerprint", ctx)?);
    set(&mut spec, "severity", text(d, "severity", ctx)?);
    set(
        &mut spec,
        "signalSource",
        text(event, "actor_id", "gateway.signal.received event")?,
    );
    let (kind, resource) = (
        text(d, "resource_kind", ctx)?,
        text(d, "resource_name", ctx)?,
    );
    if kind.is_some() || resource.is_some() {
        // The gateway admits only signals that name a Kubernetes resource.
        set(&mut spec, "targetType", Some("kubernetes"));
        let mut target = Object::new();
        set(&mut target, "kind", kind);
        set(&mut target, "name", resource);
        set(&mut target, "namespace", text(d, "namespace", ctx)?);
        spec.insert("targetResource".to_string(), target.into());
    }
    set(
        &mut spec,
        "receivedTime",
        time(event, "event_timestamp", "gateway.signal.received event")?,
    );
    set(
        &mut spec,
        "originalPayload",
        json_text(d, "original_payload", ctx)?,
    );
    set(
        &mut spec,
        "signalLabels",
        string_map(d, "signal_labels", ctx)?,
    );
    set(
        &mut spec,
        "signalAnnotations",
        string_map(d, "signal_annotations", ctx)?,
    );
    Ok(spec)
}

/// Folds one event into the RR; called oldest first, so later events overwrite earlier ones.
fn apply(event: &Object, spec: &mut Object, status: &mut Object) -> Result<(), Failure> {
    let Some(ty) = event_type(event) else {
        return Ok(());
    };
    let phase = |status: &mut Object, p: &str| set(status, "overallPhase", Some(p));
    match ty {
        "aianalysis.analysis.completed" => {
            let d = event_data(event, ty)?;
            set(
                spec,
                "providerData",
                json_text(d, "provider_response_summary", ty)?,
            );
        }
        "workflowexecution.selection.completed" => {
            let d = event_data(event, ty)?;
            if let Some(id) = text(d, "workflow_id", ty)? {
                let mut r = Object::new();
                set(&mut r, "workflowId", Some(id));
                set(&mut r, "version", text(d, "workflow_version", ty)?);
                set(&mut r, "executionBundle", text(d, "container_image", ty)?);
                status.insert("selectedWorkflowRef".to_string(), r.into());
            }
        }
        "workflowexecution.execution.started" => {
            let d = event_data(event, ty)?;
            if let Some(name) = text(d, "execution_name", ty)? {
                // The reference is to the WorkflowExecution resource, not its PipelineRun.
                let mut r = Object::new();
                set(
                    &mut r,
                    "apiVersion",
                    Some("workflowexecution.kubernaut.ai/v1alpha1"),
                );
                set(&mut r, "kind", Some("WorkflowExecution"));
                set(&mut r, "name", Some(name));
                set(&mut r, "namespace", text(event, "namespace", ty)?);
                status.insert("executionRef".to_string(), r.into());
            }
        }
        "orchestrator.lifecycle.created" => {
            let d = event_data(event, ty)?;
            set(status, "timeoutConfig", timeouts(d, "timeout_config", ty)?);
        }
        "webhook.remediationrequest.timeout_modified" => {
            let d = event_data(event, ty)?;
            set(
                status,
                "timeoutConfig",
                timeouts(d, "new_timeout_config", ty)?,
            );
            set(status, "lastModifiedBy", text(d, "modified_by", ty)?);
            set(status, "lastModifiedAt", time(d, "modified_at", ty)?);
        }
        "orchestrator.lifecycle.transitioned" => {
            let d = event_data(event, ty)?;
            set(status, "overallPhase", text(d, "to_phase", ty)?);
        }
        "orchestrator.lifecycle.verifying_started" => phase(status, "Verifying"),
        "orchestrator.lifecycle.completed"
        | "orchestrator.lifecycle.verification_completed"
        | "orchestrator.lifecycle.verification_timed_out" => {
            let d = event_data(event, ty)?;
            phase(status, "Completed");
            set(status, "outcome", text(d, "crd_outcome", ty)?);
        }
        "orchestrator.lifecycle.failed" => {
            let d = event_data(event, ty)?;
            phase(status, "Failed");
            set(status, "outcome", text(d, "crd_outcome", ty)?);
            set(status, "failurePhase", text(d, "failure_phase", ty)?);
            let message = match d.get("error_details") {
                None | Some(Value::Null) => None,
                Some(Value::Object(e)) => text(e, "message", &format!("{ty} error_details"))?,
                Some(_) => return Err(wrong(ty, "error_details", "an object")),
            };
            set(
                status,
                "failureReason",
                message.or(text(d, "failure_reason", ty)?),
            );
        }
        _ => {}
    }
    Ok(())
}

/// A `TimeoutConfig`: each duration checked and written as Go prints it (Kubernetes' form);
/// one with no durations counts as absent.
fn timeouts(d: &Object, key: &str, ctx: &str) -> Result<Option<Object>, Failure> {
    let config = match d.get(key) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(m)) => m,
        Some(_) => return Err(wrong(ctx, key, "an object")),
    };
    let mut out = Object::new();
    for field in TIMEOUTS {
        let Some(s) = text(config, field, &format!("{ctx} {key}"))? else {
            continue;
        };
        let nanos = parse_go_duration(s).ok_or_else(|| {
            Failure::Unprocessable(format!(
                "{ctx}: `{key}.{field}` is not a duration (e.g. \"1h30m\")"
            ))
        })?;
        out.insert(field.to_string(), format_go_duration(nanos).into());
    }
    Ok(Some(out).filter(|o| !o.is_empty()))
}

/// Go's `time.ParseDuration`: an optional sign, then decimal numbers each with a unit
/// (`ns`, `us`/`µs`, `ms`, `s`, `m`, `h`), or a bare `0`; `None` when invalid or past `i64` ns.
fn parse_go_duration(s: &str) -> Option<i64> {
    let (negative, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Some(0);
    }
    if rest.is_empty() {
        return None;
    }
    let limit = 1u128 << 63;
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let whole_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (whole, mut after) = rest.split_at(whole_len);
        let mut fraction = "";
        if let Some(f) = after.strip_prefix('.') {
            let len = f.bytes().take_while(u8::is_ascii_digit).count();
            (fraction, after) = f.split_at(len);
        }
        if whole.is_empty() && fraction.is_empty() {
            return None;
        }
        let unit_len = after
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        let unit: u128 = match unit {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return None,
        };
        let digits = |d: &str| {
            d.bytes().try_fold(0u128, |n, b| {
                n.checked_mul(10)?.checked_add(u128::from(b - b'0'))
            })
        };
        let mut part = digits(whole)?.checked_mul(unit)?;
        if !fraction.is_empty() {
            // Digits past the 24th are below a nanosecond; dropping them keeps the sum in range.
            let kept = &fraction[..fraction.len().min(24)];
            let scale = 10u128.checked_pow(u32::try_from(kept.len()).ok()?)?;
            part = part.checked_add(digits(kept)?.checked_mul(unit)? / scale)?;
        }
        total = total.checked_add(part)?;
        if total > limit {
            return None;
        }
        rest = next;
    }
    if negative {
        i64::try_from(-i128::try_from(total).ok()?).ok()
    } else {
        i64::try_from(total).ok()
    }
}

/// Go's `time.Duration.String`: `1h0m0s`, `2m30.5s`, `1.5ms`, `0s`.
fn format_go_duration(nanos: i64) -> String {
    let sign = if nanos < 0 { "-" } else { "" };
    let u = nanos.unsigned_abs();
    let body = if u == 0 {
        "0s".to_string()
    } else if u < 1_000 {
        format!("{u}ns")
    } else if u < 1_000_000 {
        format!("{}{}\u{b5}s", u / 1_000, fraction(u % 1_000, 3))
    } else if u < 1_000_000_000 {
        format!("{}{}ms", u / 1_000_000, fraction(u % 1_000_000, 6))
    } else {
        let secs = u / 1_000_000_000;
        let s = format!("{}{}", secs % 60, fraction(u % 1_000_000_000, 9));
        let (h, m) = (secs / 3600, secs / 60 % 60);
        if h > 0 {
            format!("{h}h{m}m{s}s")
        } else if m > 0 {
            format!("{m}m{s}s")
        } else {
            format!("{s}s")
        }
    };
    format!("{sign}{body}")
}

/// `.5` for 500 of 3 digits; nothing for 0.
fn fraction(value: u64, digits: usize) -> String {
    if value == 0 {
        return String::new();
    }
    let padded = format!("{value:0digits$}");
    format!(".{}", padded.trim_end_matches('0'))
}

/// "a, b and c only", for the incomplete answer.
fn only(present: &[&str]) -> String {
    match present {
        [] => "no field".to_string(),
        [one] => format!("{one} only"),
        [init @ .., last] => format!("{} and {last} only", init.join(", ")),
    }
}

fn metadata(id: &str, now: DateTime<Utc>, at: &str, warnings: &mut Vec<String>) -> Value {
    let mut labels = Object::new();
    set(
        &mut labels,
        "app.kubernetes.io/managed-by",
        Some("kubernaut-datastorage"),
    );
    set(&mut labels, "kubernaut.ai/reconstructed", Some("true"));
    if is_label_value(id) {
        set(&mut labels, CORRELATION_KEY, Some(id));
    } else {
        // Kubernetes would refuse the whole object over one bad label value.
        warnings.push(format!(
            "The correlation id is not a valid Kubernetes label value: it is kept in the \
             {CORRELATION_KEY} annotation only"
        ));
    }
    let mut annotations = Object::new();
    set(&mut annotations, "kubernaut.ai/reconstructed-at", Some(at));
    set(
        &mut annotations,
        "kubernaut.ai/reconstruction-source",
        Some("audit-trail"),
    );
    set(&mut annotations, CORRELATION_KEY, Some(id));
    json!({
        "name": object_name(id, now.timestamp()),
        "namespace": NAMESPACE,
        "labels": labels,
        "annotations": annotations,
        "finalizers": ["kubernaut.ai/audit-retention"],
    })
}

/// `rr-reconstructed-<id>-<unix time>`, kept a valid Kubernetes name whatever the id holds:
/// lowercase letters, digits and dashes, at most 253 characters.
fn object_name(id: &str, unix: i64) -> String {
    let suffix = format!("-{unix}");
    let room = MAX_NAME.saturating_sub(NAME_PREFIX.len() + suffix.len());
    let middle: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(room)
        .collect();
    format!("{NAME_PREFIX}{middle}{suffix}")
}

/// Kubernetes' label value rule: up to 63 of `[A-Za-z0-9_.-]`, alphanumeric at both ends.
fn is_label_value(s: &str) -> bool {
    let edge = |c: Option<char>| c.is_none_or(|c| c.is_ascii_alphanumeric());
    s.len() <= MAX_LABEL
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && edge(s.chars().next())
        && edge(s.chars().last())
}

/// Writes `value` as block-style YAML. Every string is a double-quoted scalar with JSON's escapes
/// (plus `\u` for what YAML does not allow raw), so no producer text can end a scalar, start a
/// line, or be read as another type; keys are quoted unless plainly safe.
fn to_yaml(value: &Value) -> String {
    let mut out = String::new();
    if is_block(value) {
        yaml_block(&mut out, value, 0);
    } else {
        out.push_str(&yaml_scalar(value));
        out.push('\n');
    }
    out
}

/// Non-empty maps and lists take lines of their own; everything else is written inline.
fn is_block(value: &Value) -> bool {
    match value {
        Value::Object(m) => !m.is_empty(),
        Value::Array(a) => !a.is_empty(),
        _ => false,
    }
}

fn yaml_block(out: &mut String, value: &Value, indent: usize) {
    let pad = " ".repeat(indent);
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                out.push_str(&pad);
                out.push_str(&yaml_key(key));
                out.push(':');
                if is_block(v) {
                    out.push('\n');
                    yaml_block(out, v, indent + 2);
                } else {
                    out.push(' ');
                    out.push_str(&yaml_scalar(v));
                    out.push('\n');
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                out.push_str(&pad);
                out.push_str("- ");
                if is_block(item) {
                    // Compact form: the nested block's first line continues after "- ".
                    let mut nested = String::new();
                    yaml_block(&mut nested, item, indent + 2);
                    out.push_str(nested.get(indent + 2..).unwrap_or(&nested));
                } else {
                    out.push_str(&yaml_scalar(item));
                    out.push('\n');
                }
            }
        }
        scalar => {
            out.push_str(&pad);
            out.push_str(&yaml_scalar(scalar));
            out.push('\n');
        }
    }
}

/// A scalar (or, defensively, a flow collection) on one line.
fn yaml_scalar(value: &Value) -> String {
    match value {
        Value::Null => "null".to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => yaml_quoted(s),
        Value::Array(items) => {
            let parts: Vec<String> = items.iter().map(yaml_scalar).collect();
            format!("[{}]", parts.join(", "))
        }
        Value::Object(map) => {
            let parts: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{}: {}", yaml_quoted(k), yaml_scalar(v)))
                .collect();
            format!("{{{}}}", parts.join(", "))
        }
    }
}

/// Keys starting with a letter or `_`, made of `[A-Za-z0-9_./-]` and not a word YAML reads as
/// a boolean or null, stay plain; every other key is quoted.
fn yaml_key(key: &str) -> String {
    let plain = key.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '-'))
        && !matches!(
            key.to_ascii_lowercase().as_str(),
            "y" | "n" | "yes" | "no" | "on" | "off" | "true" | "false" | "null"
        );
    if plain {
        key.to_string()
    } else {
        yaml_quoted(key)
    }
}

/// A double-quoted scalar, valid as YAML 1.2 and as a JSON string.
fn yaml_quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            // Controls, DEL and C1 (NEL among them) are not printable to YAML; LS and PS are line
            // breaks to YAML 1.1 readers; BOM, U+FFFE and U+FFFF are not allowed inside either.
            c if u32::from(c) < 0x20
                || ('\u{7f}'..='\u{9f}').contains(&c)
                || matches!(
                    c,
                    '\u{2028}' | '\u{2029}' | '\u{feff}' | '\u{fffe}' | '\u{ffff}'
                ) =>
            {
                out.push_str(&format!("\\u{:04x}", u32::from(c)));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const CORR: &str = "rr-prometheus-alert-highcpu-abc123";

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-01-12T19:53:00Z")
            .expect("a time")
            .with_timezone(&Utc)
    }

    fn event(ty: &str, at: &str, mut data: Value) -> Value {
        data["event_type"] = json!(ty);
        json!({
            "event_type": ty,
            "event_timestamp": at,
            "event_category": ty.split('.').next(),
            "namespace": "payment",
            "cluster_id": "prod-east-1",
            "correlation_id": CORR,
            "actor_id": "prometheus-adapter",
            "event_data": data,
        })
    }

    fn gateway(data: Value) -> Value {
        event(GATEWAY, "2026-01-12T19:40:00.123456Z", data)
    }

    fn full_gateway() -> Value {
        gateway(json!({
            "signal_name": "HighCPU",
            "signal_type": "alert",
            "fingerprint": "abc123",
            "severity": "critical",
            "namespace": "payment",
            "resource_kind": "Deployment",
            "resource_name": "payment-api",
            "original_payload": {"alert": "data"},
            "signal_labels": {"alertname": "HighCPU", "severity": "critical"},
            "signal_annotations": {"summary": "CPU usage is high"},
        }))
    }

    fn created(at: &str, global: &str) -> Value {
        event(
            "orchestrator.lifecycle.created",
            at,
            json!({"rr_name": "rr-1", "namespace": "payment",
                   "timeout_config": {"global": global, "processing": "10m", "analyzing": "15m"}}),
        )
    }

    fn started(at: &str, name: &str) -> Value {
        event(
            "workflowexecution.execution.started",
            at,
            json!({"workflow_id": "restart", "workflow_version": "v1", "target_resource": "x",
                   "phase": "Running", "container_image": "img", "execution_name": name}),
        )
    }

    /// The reconstructed RR, read back from its YAML.
    fn rr(answer: &Value) -> Value {
        read_yaml(
            answer["remediation_request_yaml"]
                .as_str()
                .expect("yaml text"),
        )
    }

    fn unprocessable(events: &[Value]) -> String {
        match reconstruct(CORR, events, now()) {
            Err(Failure::Unprocessable(m)) => m,
            other => panic!("expected Unprocessable, got {other:?}"),
        }
    }

    #[test]
    fn a_full_lifecycle_rebuilds_every_counted_field() {
        let events = [
            full_gateway(),
            created("2026-01-12T19:40:01Z", "1h"),
            event(
                "aianalysis.analysis.completed",
                "2026-01-12T19:41:00Z",
                json!({"analysis_name": "a", "namespace": "payment", "phase": "Completed",
                       "approval_required": false, "degraded_mode": false, "warnings_count": 0,
                       "provider_response_summary": {"incident_id": "i-1",
                           "analysis_preview": "pool exhausted", "needs_human_review": false,
                           "warnings_count": 0}}),
            ),
            event(
                "workflowexecution.selection.completed",
                "2026-01-12T19:42:00Z",
                json!({"workflow_id": "restart", "workflow_version": "v1.0.0",
                       "target_resource": "payment/deployment/payment-api", "phase": "Pending",
                       "container_image": "ghcr.io/kubernaut/kubectl:v1", "execution_name": "wfe-1"}),
            ),
            started("2026-01-12T19:43:00Z", "wfe-1"),
            event(
                "orchestrator.lifecycle.completed",
                "2026-01-12T19:50:00Z",
                json!({"rr_name": "rr-1", "namespace": "payment", "outcome": "Success",
                       "crd_outcome": "Remediated"}),
            ),
        ];
        let answer = reconstruct(CORR, &events, now()).expect("rebuilt");
        assert_eq!(
            answer["validation"],
            json!({"is_valid": true, "completeness": 100, "errors": [], "warnings": []})
        );
        assert_eq!(answer["reconstructed_at"], "2026-01-12T19:53:00Z");
        assert_eq!(answer["correlation_id"], CORR);
        assert_eq!(answer["cluster_id"], "prod-east-1");

        let yaml = answer["remediation_request_yaml"]
            .as_str()
            .expect("yaml text");
        for line in [
            "apiVersion: \"remediation.kubernaut.ai/v1alpha1\"",
            "kind: \"RemediationRequest\"",
            "    kubernaut.ai/reconstructed: \"true\"",
            "  finalizers:\n    - \"kubernaut.ai/audit-retention\"",
            "  signalName: \"HighCPU\"",
            "  originalPayload: \"{\\\"alert\\\":\\\"data\\\"}\"",
            "    global: \"1h0m0s\"",
        ] {
            assert!(yaml.contains(line), "{line:?} not in\n{yaml}");
        }

        let rr = rr(&answer);
        let unix = now().timestamp();
        assert_eq!(
            rr["metadata"]["name"],
            format!("rr-reconstructed-{CORR}-{unix}")
        );
        assert_eq!(rr["metadata"]["namespace"], "kubernaut-system");
        assert_eq!(rr["metadata"]["labels"][CORRELATION_KEY], CORR);
        assert_eq!(
            rr["metadata"]["annotations"]["kubernaut.ai/reconstructed-at"],
            "2026-01-12T19:53:00Z"
        );
        assert_eq!(
            rr["spec"],
            json!({
                "signalName": "HighCPU",
                "signalType": "alert",
                "signalFingerprint": "abc123",
                "severity": "critical",
                "signalSource": "prometheus-adapter",
                "targetType": "kubernetes",
                "targetResource": {"kind": "Deployment", "name": "payment-api", "namespace": "payment"},
                "receivedTime": "2026-01-12T19:40:00Z",
                "originalPayload": "{\"alert\":\"data\"}",
                "signalLabels": {"alertname": "HighCPU", "severity": "critical"},
                "signalAnnotations": {"summary": "CPU usage is high"},
                "providerData": "{\"analysis_preview\":\"pool exhausted\",\"incident_id\":\"i-1\",\"needs_human_review\":false,\"warnings_count\":0}",
            })
        );
        assert_eq!(
            rr["status"],
            json!({
                "timeoutConfig": {"global": "1h0m0s", "processing": "10m0s", "analyzing": "15m0s"},
                "selectedWorkflowRef": {"workflowId": "restart", "version": "v1.0.0",
                                        "executionBundle": "ghcr.io/kubernaut/kubectl:v1"},
                "executionRef": {"apiVersion": "workflowexecution.kubernaut.ai/v1alpha1",
                                 "kind": "WorkflowExecution", "name": "wfe-1", "namespace": "payment"},
                "overallPhase": "Completed",
                "outcome": "Remediated",
            })
        );
    }

    #[test]
    fn gateway_and_orchestrator_alone_warn_of_the_other_gaps() {
        let answer = reconstruct(
            CORR,
            &[full_gateway(), created("2026-01-12T19:40:01Z", "30m")],
            now(),
        )
        .expect("rebuilt");
        let v = &answer["validation"];
        assert_eq!(v["is_valid"], true);
        assert_eq!(v["completeness"], 66);
        let warnings: Vec<&str> = v["warnings"]
            .as_array()
            .expect("a list")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(warnings.len(), 3);
        for gap in ["(Gap #4)", "(Gap #5)", "(Gap #6)"] {
            assert!(
                warnings.iter().any(|w| w.contains(gap)),
                "{gap} in {warnings:?}"
            );
        }
    }

    #[test]
    fn no_events_is_not_found() {
        assert_eq!(
            reconstruct("nonexistent-correlation", &[], now()),
            Err(Failure::NoEvents("nonexistent-correlation".into()))
        );
        assert_eq!(
            Failure::NoEvents("x".into()).to_string(),
            "No audit events found for correlation_id: x"
        );
    }

    #[test]
    fn events_without_the_gateway_event_are_refused() {
        let events = [
            created("2026-01-12T19:40:01Z", "1h"),
            event(
                "gateway.crd.created",
                "2026-01-12T19:40:02Z",
                json!({"signal_name": "HighCPU"}),
            ),
        ];
        assert_eq!(
            reconstruct(CORR, &events, now()),
            Err(Failure::MissingGateway)
        );
    }

    #[test]
    fn a_gateway_event_without_a_signal_name_is_unprocessable() {
        let message =
            unprocessable(&[gateway(json!({"signal_type": "alert", "fingerprint": "f"}))]);
        assert!(message.contains("signal_name"), "{message}");
        let message = unprocessable(&[json!({"event_type": GATEWAY, "event_data": "HighCPU"})]);
        assert!(message.contains("event_data"), "{message}");
    }

    #[test]
    fn only_the_required_signal_fields_are_incomplete() {
        let events = [gateway(
            json!({"signal_name": "HighCPU", "signal_type": "alert"}),
        )];
        let failure = reconstruct(CORR, &events, now()).expect_err("incomplete");
        assert_eq!(
            failure,
            Failure::Incomplete {
                completeness: 22,
                detail: "signalName and signalType only".into()
            }
        );
        assert_eq!(
            failure.to_string(),
            "Reconstructed RR is only 22% complete (signalName and signalType only)"
        );
    }

    #[test]
    fn a_missing_signal_type_is_a_validation_error() {
        let mut g = full_gateway();
        g["event_data"]
            .as_object_mut()
            .expect("an object")
            .remove("signal_type");
        let answer =
            reconstruct(CORR, &[g, created("2026-01-12T19:40:01Z", "1h")], now()).expect("rebuilt");
        assert_eq!(answer["validation"]["is_valid"], false);
        assert_eq!(answer["validation"]["completeness"], 55);
        assert_eq!(
            answer["validation"]["errors"],
            json!(["signalType is required in spec"])
        );
    }

    #[test]
    fn fields_of_the_wrong_json_type_are_unprocessable() {
        let with = |key: &str, value: Value| {
            let mut g = full_gateway();
            g["event_data"][key] = value;
            g
        };
        for g in [
            with("signal_name", json!(42)),
            with("signal_labels", json!({"team": 1})),
            with("signal_annotations", json!("summary")),
            with("original_payload", json!(5)),
        ] {
            unprocessable(&[g]);
        }
        for timeout in [
            json!({"global": 3600}),
            json!({"global": "an hour"}),
            json!("1h"),
        ] {
            let mut c = created("2026-01-12T19:40:01Z", "1h");
            c["event_data"]["timeout_config"] = timeout;
            unprocessable(&[full_gateway(), c]);
        }
        let mut s = started("2026-01-12T19:43:00Z", "wfe-1");
        s["event_data"] = json!("wfe-1");
        unprocessable(&[full_gateway(), s]);
        let failed = event(
            "orchestrator.lifecycle.failed",
            "2026-01-12T19:44:00Z",
            json!({"rr_name": "rr-1", "namespace": "payment", "error_details": "boom"}),
        );
        unprocessable(&[full_gateway(), failed]);
    }

    #[test]
    fn the_latest_status_wins_and_the_first_gateway_event_defines_the_spec() {
        let mut second = full_gateway();
        second["event_data"]["signal_name"] = json!("SecondSignal");
        second["event_timestamp"] = json!("2026-01-12T19:45:00Z");
        let events = [
            full_gateway(),
            created("2026-01-12T19:40:01Z", "1h"),
            started("2026-01-12T19:41:00Z", "wfe-1"),
            second,
            created("2026-01-12T19:42:00Z", "2h"),
            event(
                "webhook.remediationrequest.timeout_modified",
                "2026-01-12T19:43:00Z",
                json!({"rr_name": "rr-1", "namespace": "payment", "modified_by": "ops@example.com",
                       "modified_at": "2026-01-12T19:43:00.5+01:00",
                       "new_timeout_config": {"global": "45m", "executing": "1.5h"}}),
            ),
            started("2026-01-12T19:44:00Z", "wfe-2"),
            event(
                "orchestrator.lifecycle.transitioned",
                "2026-01-12T19:45:00Z",
                json!({"rr_name": "rr-1", "namespace": "payment", "from_phase": "Analyzing",
                       "to_phase": "Executing"}),
            ),
            event(
                "orchestrator.lifecycle.failed",
                "2026-01-12T19:46:00Z",
                json!({"rr_name": "rr-1", "namespace": "payment", "failure_phase": "WorkflowExecution",
                       "failure_reason": "Timeout",
                       "error_details": {"message": "job deadline exceeded", "code": "ERR_TIMEOUT",
                                         "component": "workflowexecution", "retry_possible": true}}),
            ),
        ];
        let answer = reconstruct(CORR, &events, now()).expect("rebuilt");
        let rr = rr(&answer);
        assert_eq!(rr["spec"]["signalName"], "HighCPU");
        assert_eq!(rr["spec"]["receivedTime"], "2026-01-12T19:40:00Z");
        let status = &rr["status"];
        assert_eq!(
            status["timeoutConfig"],
            json!({"global": "45m0s", "executing": "1h30m0s"})
        );
        assert_eq!(status["lastModifiedBy"], "ops@example.com");
        assert_eq!(status["lastModifiedAt"], "2026-01-12T18:43:00Z");
        assert_eq!(status["executionRef"]["name"], "wfe-2");
        assert_eq!(status["overallPhase"], "Failed");
        assert_eq!(status["failurePhase"], "WorkflowExecution");
        assert_eq!(status["failureReason"], "job deadline exceeded");
    }

    #[test]
    fn producer_text_cannot_break_the_yaml() {
        let nasty = [
            "line one\nline two",
            "key: value",
            "# not a comment",
            "---",
            "...",
            "\"quoted\" and 'single'",
            "back\\slash",
            "- not a list item",
            "tab\tand\rreturn",
            "unicode: ünïcødé 日本語 🚀",
            "separators \u{2028} \u{2029} nel \u{85} del \u{7f} bom \u{feff} nul \u{0}",
            "true",
            "null",
            "123",
            "{a: b}",
            "&anchor *alias !tag %directive @ `",
            "",
        ];
        let labels: Object = nasty
            .iter()
            .enumerate()
            .map(|(i, s)| (format!("k{i}"), json!(s)))
            .collect();
        let annotations: Object = nasty.iter().map(|s| (s.to_string(), json!(s))).collect();
        let mut g = full_gateway();
        g["event_data"]["signal_labels"] = Value::Object(labels.clone());
        g["event_data"]["signal_annotations"] = Value::Object(annotations.clone());
        g["event_data"]["original_payload"] = json!({"text": nasty.join("\n")});
        g["event_data"]["signal_name"] = json!("HighCPU\n---\nkind: Secret");
        let answer =
            reconstruct(CORR, &[g, created("2026-01-12T19:40:01Z", "1h")], now()).expect("rebuilt");
        let yaml = answer["remediation_request_yaml"]
            .as_str()
            .expect("yaml text");
        check_lines(yaml);
        let rr = read_yaml(yaml);
        assert_eq!(rr["kind"], "RemediationRequest");
        assert_eq!(rr["spec"]["signalName"], "HighCPU\n---\nkind: Secret");
        assert_eq!(rr["spec"]["signalLabels"], Value::Object(labels));
        assert_eq!(rr["spec"]["signalAnnotations"], Value::Object(annotations));
        assert_eq!(
            rr["spec"]["originalPayload"],
            json!({"text": nasty.join("\n")}).to_string()
        );

        // Every shape the emitter knows, with hostile keys at every level.
        let doc = json!({
            "plain": 1, "-": [1, -2.5, true, null, "x"], "a b": {}, "": [], "yes": "no",
            "k: v\n- x": [{"#": "---", "n": [[], [{}], ["deep", {"x\"y": "z"}]]}, [["a"], "b"]],
            "_ok.key/x-y": {"nested": {"deeper": "é\u{2028}"}},
        });
        let text = to_yaml(&doc);
        check_lines(&text);
        assert_eq!(read_yaml(&text), doc, "\n{text}");
    }

    /// Each line is indentation, then "- " markers, then a plain key, a quoted scalar or key, or
    /// a JSON literal: nothing that could start a document, a comment or another type.
    fn check_lines(yaml: &str) {
        for bad in [
            '\r', '\u{85}', '\u{2028}', '\u{2029}', '\u{feff}', '\u{7f}', '\t',
        ] {
            assert!(!yaml.contains(bad), "raw {bad:?} in\n{yaml}");
        }
        for line in yaml.lines() {
            let mut rest = line.trim_start_matches(' ');
            while let Some(r) = rest.strip_prefix("- ") {
                rest = r;
            }
            let first = rest.chars().next().expect("a non-empty line");
            assert!(
                first == '"'
                    || first.is_ascii_alphabetic()
                    || first == '_'
                    || first == '['
                    || first == '{'
                    || first == '-'
                    || first.is_ascii_digit(),
                "line {line:?}"
            );
            if first == '-' || first.is_ascii_digit() {
                // Only numbers start this way, and only as whole list items.
                assert!(
                    serde_json::from_str::<serde_json::Number>(rest).is_ok(),
                    "line {line:?}"
                );
            }
        }
    }

    /// Reads back exactly the block YAML `to_yaml` writes: indentation-nested maps and lists whose
    /// scalars are JSON literals (YAML double-quoted scalars with JSON's escapes are JSON
    /// strings), so a test sees what a YAML reader would.
    fn read_yaml(text: &str) -> Value {
        let mut lines: Vec<(usize, String)> = text
            .lines()
            .map(|l| {
                let t = l.trim_start_matches(' ');
                (l.len() - t.len(), t.to_string())
            })
            .collect();
        let mut at = 0;
        let value = read_block(&mut lines, &mut at, 0);
        assert_eq!(at, lines.len(), "unread lines in\n{text}");
        value
    }

    fn read_block(lines: &mut [(usize, String)], at: &mut usize, indent: usize) -> Value {
        let is_item = |l: &(usize, String)| l.1.starts_with("- ");
        if is_item(&lines[*at]) {
            let mut items = Vec::new();
            while *at < lines.len() && lines[*at].0 == indent && is_item(&lines[*at]) {
                let rest = lines[*at].1["- ".len()..].to_string();
                if let Ok(v) = serde_json::from_str::<Value>(&rest) {
                    items.push(v);
                    *at += 1;
                } else {
                    lines[*at] = (indent + 2, rest);
                    items.push(read_block(lines, at, indent + 2));
                }
            }
            return Value::Array(items);
        }
        let mut map = Object::new();
        while *at < lines.len() && lines[*at].0 == indent && !is_item(&lines[*at]) {
            let line = lines[*at].1.clone();
            let (key, rest) = split_key(&line);
            *at += 1;
            let value = if rest.is_empty() {
                let next = lines[*at].0;
                assert!(
                    next > indent || is_item(&lines[*at]),
                    "nested block under {key:?}"
                );
                read_block(lines, at, next)
            } else {
                let literal = rest.strip_prefix(' ').expect("a space after the colon");
                serde_json::from_str(literal).expect("one JSON literal")
            };
            assert!(map.insert(key, value).is_none(), "duplicate key");
        }
        Value::Object(map)
    }

    fn split_key(line: &str) -> (String, &str) {
        if line.starts_with('"') {
            let mut stream = serde_json::Deserializer::from_str(line).into_iter::<String>();
            let key = stream.next().expect("a key").expect("a quoted key");
            let rest = &line[stream.byte_offset()..];
            (key, rest.strip_prefix(':').expect("a colon after the key"))
        } else {
            let (key, rest) = line.split_once(':').expect("a colon after the key");
            assert!(
                key.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_./-".contains(c)),
                "{key:?}"
            );
            (key.to_string(), rest)
        }
    }

    #[test]
    fn go_durations_are_checked_and_written_as_go_writes_them() {
        for (given, written) in [
            ("1h", "1h0m0s"),
            ("30m", "30m0s"),
            ("90s", "1m30s"),
            ("1.5h", "1h30m0s"),
            ("2h45m30.5s", "2h45m30.5s"),
            ("0", "0s"),
            ("-5m", "-5m0s"),
            ("+10s", "10s"),
            ("100ns", "100ns"),
            ("1500us", "1.5ms"),
            ("1\u{b5}s", "1\u{b5}s"),
            ("2\u{3bc}s", "2\u{b5}s"),
            (".5s", "500ms"),
            ("5.s", "5s"),
            ("1h0m0s", "1h0m0s"),
        ] {
            let nanos = parse_go_duration(given).unwrap_or_else(|| panic!("{given:?} refused"));
            assert_eq!(format_go_duration(nanos), written, "{given:?}");
        }
        assert_eq!(format_go_duration(i64::MIN), "-2562047h47m16.854775808s");
        for bad in [
            "",
            "1",
            "1d",
            "h",
            ".s",
            ".",
            "1.2.3s",
            "1h 2m",
            "+",
            "-",
            "9999999999999h",
            "1hm",
        ] {
            assert_eq!(parse_go_duration(bad), None, "{bad:?} accepted");
        }
    }

    #[test]
    fn the_name_stays_a_kubernetes_name_whatever_the_correlation_id() {
        let id = format!("Weird ID/with:chars\n{}", "x".repeat(300));
        let answer = reconstruct(
            &id,
            &[full_gateway(), created("2026-01-12T19:40:01Z", "1h")],
            now(),
        )
        .expect("rebuilt");
        let rr = rr(&answer);
        let name = rr["metadata"]["name"].as_str().expect("a name");
        assert!(name.len() <= MAX_NAME);
        assert!(
            name.starts_with("rr-reconstructed-weird-id-with-chars-xxx"),
            "{name}"
        );
        assert!(name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'));
        assert!(rr["metadata"]["labels"].get(CORRELATION_KEY).is_none());
        assert_eq!(rr["metadata"]["annotations"][CORRELATION_KEY], id.as_str());
        assert_eq!(answer["correlation_id"], id.as_str());
        let warnings = answer["validation"]["warnings"].as_array().expect("a list");
        assert!(warnings
            .iter()
            .any(|w| w.as_str().is_some_and(|w| w.contains("label value"))));
        assert!(
            is_label_value(CORR)
                && is_label_value("")
                && !is_label_value("-a")
                && !is_label_value("a b")
        );
    }

    #[test]
    fn cluster_id_is_empty_when_no_event_names_one() {
        let mut g = full_gateway();
        g["cluster_id"] = Value::Null;
        let mut c = created("2026-01-12T19:40:01Z", "1h");
        c["cluster_id"] = json!("");
        let answer = reconstruct(CORR, &[g, c], now()).expect("rebuilt");
        assert_eq!(answer["cluster_id"], "");
    }
}
