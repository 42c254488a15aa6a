//! Kubernetes audit events (`audit.k8s.io/v1` and `v1beta1`) as Veritrail events.
//!
//! The mapping (also in `docs/kubernetes.md`): `user.username` is the actor (`impersonatedUser`
//! is kept in `event_data`), `objectRef` the resource, `verb` the action, `responseStatus.code`
//! the outcome, `sourceIPs[0]` the actor's address, `auditID` the correlation id, and the stage's
//! time the event time. The event type is `k8s.<resource>[/<subresource>].<verb>`. The event id
//! is derived from (`auditID`, `stage`), so a batch sent again stores nothing new.

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::event::{Event, MAX_EVENT_DATA_BYTES};

/// Category of every Kubernetes audit event.
pub const CATEGORY: &str = "kubernetes";

/// Members of an audit event copied into `event_data` when present.
const KEPT: [&str; 16] = [
    "apiVersion",
    "level",
    "stage",
    "verb",
    "requestURI",
    "user",
    "impersonatedUser",
    "sourceIPs",
    "userAgent",
    "objectRef",
    "responseStatus",
    "annotations",
    "requestReceivedTimestamp",
    "stageTimestamp",
    "requestObject",
    "responseObject",
];

/// The audit events of a webhook body or a log line: an `EventList`'s items, one `Event`, or one
/// event in a managed cluster's wrapper (GKE's Cloud Logging entry with a `protoPayload`, AKS's
/// diagnostic record whose `properties.log` holds the event as an object or a JSON string).
pub fn events_of(body: &Value) -> Result<Vec<Value>, String> {
    match body.get("kind").and_then(Value::as_str) {
        Some("EventList") => {
            return body
                .get("items")
                .and_then(Value::as_array)
                .cloned()
                .ok_or_else(|| "an EventList without `items`".to_string())
        }
        Some("Event") => return Ok(vec![body.clone()]),
        _ => {}
    }
    if let Some(log) = body.get("properties").and_then(|p| p.get("log")) {
        let inner = match log {
            Value::String(text) => serde_json::from_str(text)
                .map_err(|e| format!("`properties.log` is not JSON: {e}"))?,
            other => other.clone(),
        };
        return events_of(&inner);
    }
    if let Some(proto) = body.get("protoPayload") {
        return Ok(vec![from_gke(body, proto)?]);
    }
    Err("not an audit.k8s.io Event or EventList (`kind` is missing or other)".into())
}

/// HTTP status of a google.rpc status code.
fn http_code(grpc: i64) -> i64 {
    match grpc {
        0 => 200,
        3 => 400,
        16 => 401,
        7 => 403,
        5 => 404,
        6 => 409,
        8 => 429,
        _ => 500,
    }
}

/// A GKE Cloud Logging entry as the audit event it records.
fn from_gke(entry: &Value, proto: &Value) -> Result<Value, String> {
    let text = |v: &Value, name: &str| v.get(name).and_then(Value::as_str).map(str::to_string);
    let method = text(proto, "methodName").ok_or("`protoPayload.methodName` is missing")?;
    if !method.starts_with("io.k8s.") {
        return Err(format!("`{method}` is not a Kubernetes API call"));
    }
    let verb = method.rsplit('.').next().unwrap_or_default().to_string();
    let time = text(entry, "timestamp")
        .or_else(|| text(proto, "timestamp"))
        .ok_or("no `timestamp`")?;
    // `core/v1/namespaces/<ns>/<resource>/<name>[/<subresource>]` or `<group>/<version>/<resource>…`
    let path = text(proto, "resourceName").unwrap_or_default();
    let parts: Vec<&str> = path.split('/').collect();
    let mut object = serde_json::Map::new();
    if parts.len() >= 3 {
        let group = if parts[0] == "core" { "" } else { parts[0] };
        object.insert("apiGroup".into(), json!(group));
        object.insert("apiVersion".into(), json!(parts[1]));
        let rest = if parts.get(2) == Some(&"namespaces") && parts.len() >= 5 {
            object.insert("namespace".into(), json!(parts[3]));
            &parts[4..]
        } else {
            &parts[2..]
        };
        for (key, value) in ["resource", "name", "subresource"].iter().zip(rest) {
            object.insert((*key).into(), json!(value));
        }
    }
    let code = proto
        .get("status")
        .and_then(|s| s.get("code"))
        .and_then(Value::as_i64)
        .map_or(200, http_code);
    let meta = proto.get("requestMetadata").cloned().unwrap_or(Value::Null);
    // The entry's own id, else its content: the same entry always gives the same audit id.
    let audit_id = text(entry, "insertId").unwrap_or_else(|| {
        let digest = Sha256::digest(entry.to_string().as_bytes());
        digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
    });
    Ok(json!({
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": "Metadata",
        "auditID": audit_id,
        "stage": "ResponseComplete",
        "requestURI": format!("/{path}"),
        "verb": verb,
        "user": {"username": proto["authenticationInfo"]["principalEmail"].as_str().unwrap_or("system:unknown")},
        "sourceIPs": meta.get("callerIp").map(|ip| json!([ip])).unwrap_or(json!([])),
        "userAgent": meta.get("callerSuppliedUserAgent").cloned().unwrap_or(Value::Null),
        "objectRef": Value::Object(object),
        "responseStatus": {"code": code},
        "annotations": entry.get("labels").cloned().unwrap_or(json!({})),
        "stageTimestamp": time,
    }))
}

/// The event id of (`audit_id`, `stage`): the same pair always gives the same id.
pub fn event_id(audit_id: &str, stage: &str) -> Uuid {
    let digest = Sha256::digest(format!("k8s-audit\0{audit_id}\0{stage}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

/// Only the characters an event type may hold; anything else becomes `_`.
fn type_part(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_-:/".contains(c) {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

fn cut(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// `s` cut to the longest value the event field `field` may hold.
fn limited(field: &str, s: &str) -> String {
    cut(s, crate::event::max_chars(field).unwrap_or(255))
}

/// One audit event as a Veritrail event.
pub fn to_event(audit: &Value) -> Result<Event, String> {
    let text = |v: &Value, name: &str| v.get(name).and_then(Value::as_str).map(str::to_string);
    if audit.get("kind").and_then(Value::as_str) != Some("Event") {
        return Err("`kind` must be `Event`".into());
    }
    let audit_id = text(audit, "auditID").ok_or("`auditID` is missing")?;
    let stage = text(audit, "stage").ok_or("`stage` is missing")?;
    let verb = text(audit, "verb").ok_or("`verb` is missing")?;
    let time = ["stageTimestamp", "timestamp", "requestReceivedTimestamp"]
        .iter()
        .find_map(|n| text(audit, n))
        .ok_or("no timestamp (`stageTimestamp`, `timestamp` or `requestReceivedTimestamp`)")?;
    let username = audit
        .get("user")
        .and_then(|u| text(u, "username"))
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "system:unknown".into());
    let actor_type = if username.starts_with("system:serviceaccount:") {
        "serviceaccount"
    } else if username.starts_with("system:") {
        "system"
    } else {
        "user"
    };
    let object = audit.get("objectRef");
    let field = |name: &str| object.and_then(|o| text(o, name));
    let (resource, namespace, name) = (field("resource"), field("namespace"), field("name"));
    let resource_path = match (&resource, field("subresource")) {
        (Some(r), Some(sub)) => format!("{r}/{sub}"),
        (Some(r), None) => r.clone(),
        (None, _) => "nonresource".into(),
    };
    let code = audit
        .get("responseStatus")
        .and_then(|s| s.get("code"))
        .and_then(Value::as_i64);
    let outcome = match (stage.as_str(), code) {
        ("Panic", _) => "failure",
        ("ResponseComplete", Some(c)) if c >= 400 => "failure",
        ("ResponseComplete", _) => "success",
        _ => "pending",
    };
    let uri = text(audit, "requestURI").unwrap_or_default();
    let resource_id = match (&namespace, &name) {
        (Some(ns), Some(n)) => format!("{ns}/{n}"),
        (None, Some(n)) => n.clone(),
        (Some(ns), None) => ns.clone(),
        (None, None) => uri.clone(),
    };
    let mut data = Map::new();
    for key in KEPT {
        if let Some(v) = audit.get(key) {
            data.insert(key.to_string(), v.clone());
        }
    }
    let mut event = json!({
        "event_id": event_id(&audit_id, &stage).to_string(),
        "event_type": limited("event_type", &format!("k8s.{}.{}", type_part(&resource_path), type_part(&verb))).trim_end_matches('.'),
        "event_timestamp": time,
        "event_category": CATEGORY,
        "event_action": limited("event_action", &verb),
        "event_outcome": outcome,
        "actor_type": actor_type,
        "actor_id": limited("actor_id", &username),
        "resource_type": limited("resource_type", resource.as_deref().unwrap_or("nonResourceURL")),
        "resource_id": limited("resource_id", &resource_id),
        "correlation_id": limited("correlation_id", &audit_id),
        "event_data": Value::Object(data),
    });
    let e = event.as_object_mut().ok_or("internal: not an object")?;
    if let Some(ip) = audit
        .get("sourceIPs")
        .and_then(|ips| ips.get(0))
        .and_then(Value::as_str)
    {
        e.insert("actor_ip".into(), json!(limited("actor_ip", ip)));
    }
    if let Some(ns) = namespace {
        e.insert("namespace".into(), json!(limited("namespace", &ns)));
    }
    if let Some(n) = name {
        e.insert("resource_name".into(), json!(limited("resource_name", &n)));
    }
    if let Some(c) = code.filter(|c| *c >= 400) {
        e.insert("error_code".into(), json!(c.to_string()));
        if let Some(m) = audit["responseStatus"]
            .get("message")
            .and_then(Value::as_str)
        {
            e.insert("error_message".into(), json!(limited("error_message", m)));
        }
    }
    // An empty optional value is an absent one (the event model refuses empty strings).
    e.retain(|_, v| v.as_str() != Some(""));
    match Event::from_json(&event, Uuid::now_v7) {
        Ok(e) => Ok(e),
        Err(first) => {
            // Request and response bodies (RequestResponse level) can be larger or deeper than
            // an event may hold: keep the rest of the record and say what was left out.
            let data = event["event_data"]
                .as_object_mut()
                .ok_or("internal: no event_data")?;
            let dropped: Vec<Value> = ["requestObject", "responseObject"]
                .into_iter()
                .filter(|k| data.remove(*k).is_some())
                .map(Value::from)
                .collect();
            if dropped.is_empty() {
                return Err(first.to_string());
            }
            data.insert(
                "omitted".into(),
                json!({"members": dropped, "why": format!("over the event limits ({} KiB, nesting, exact numbers)", MAX_EVENT_DATA_BYTES / 1024)}),
            );
            Event::from_json_owned(event, Uuid::now_v7).map_err(|e| e.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeSet, HashMap};
    use std::path::PathBuf;

    /// `../shared/corpus/kubernetes-audit/<name>` beside the repository, found at run time.
    fn corpus(name: &str) -> Option<PathBuf> {
        let crate_dir = std::env::var("CARGO_MANIFEST_DIR").ok()?;
        let p = PathBuf::from(crate_dir)
            .join("../../../shared/corpus/kubernetes-audit")
            .join(name);
        p.exists().then_some(p)
    }

    fn lines(name: &str) -> Vec<Value> {
        let path = corpus(name)
            .unwrap_or_else(|| panic!("../shared/corpus/kubernetes-audit/{name} is missing"));
        std::fs::read_to_string(path)
            .expect("read")
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect()
    }

    #[test]
    fn every_event_of_the_real_logs_maps_and_matches_its_source() {
        for (file, count) in [
            ("demo-v1beta1-full-501d132.log", 757),
            ("demo-v1-dc2769a.log", 37),
            ("falco-k8s-audit-2018.jsonl", 51),
        ] {
            let raw = lines(file);
            assert_eq!(raw.len(), count, "{file}");
            let mut ids = BTreeSet::new();
            let mut corr = BTreeSet::new();
            for a in &raw {
                let e = to_event(a).unwrap_or_else(|why| panic!("{file}: {why}: {a}"));
                assert_eq!(e.correlation_id.as_deref(), a["auditID"].as_str());
                assert_eq!(
                    e.actor_id,
                    a["user"]["username"].as_str().unwrap_or("system:unknown")
                );
                assert_eq!(e.event_action, a["verb"].as_str().unwrap());
                let code = a["responseStatus"]["code"].as_i64();
                if a["stage"] == "ResponseComplete" {
                    let failed = code.is_some_and(|c| c >= 400);
                    assert_eq!(
                        e.event_outcome,
                        if failed { "failure" } else { "success" },
                        "{a}"
                    );
                }
                assert!(e.event_type.starts_with("k8s."), "{}", e.event_type);
                ids.insert(e.event_id);
                corr.insert(a["auditID"].as_str().unwrap().to_string());
            }
            // One id per (auditID, stage). The falco trace was edited by hand and holds two
            // pairs twice with different content: those are the same event id (and the store
            // refuses the second as a conflict).
            let pairs: BTreeSet<(String, String)> = raw
                .iter()
                .map(|a| (a["auditID"].to_string(), a["stage"].to_string()))
                .collect();
            assert_eq!(
                ids.len(),
                pairs.len(),
                "{file}: one id per (auditID, stage)"
            );
            assert_eq!(
                count - pairs.len(),
                if file.starts_with("falco") { 2 } else { 0 }
            );
            if file.starts_with("demo-v1beta1") {
                assert_eq!(corr.len(), 437, "{file}");
                // 320 requests have both stages, in order by time.
                let mut stages: HashMap<String, Vec<String>> = HashMap::new();
                for a in &raw {
                    stages
                        .entry(a["auditID"].as_str().unwrap().into())
                        .or_default()
                        .push(a["stage"].as_str().unwrap().into());
                }
                let both = stages.values().filter(|s| s.len() == 2).count();
                assert_eq!(both, 320);
            }
        }
    }

    #[test]
    fn impersonation_is_kept_and_the_same_stage_has_the_same_id() {
        let raw = lines("demo-v1-dc2769a.log");
        let a = &raw[0];
        let e = to_event(a).expect("maps");
        assert_eq!(e.actor_id, "system:admin");
        assert_eq!(e.event_data["impersonatedUser"]["username"], "bob");
        assert_eq!(e.actor_ip.as_deref(), Some("::1"));
        assert_eq!(e.event_outcome, "failure");
        assert_eq!(e.error_code.as_deref(), Some("403"));
        assert_eq!(e.event_type, "k8s.pods.list");
        assert_eq!(to_event(a).expect("maps").event_id, e.event_id);
        let mut other = a.clone();
        other["stage"] = json!("RequestReceived");
        assert_ne!(to_event(&other).expect("maps").event_id, e.event_id);
    }

    #[test]
    fn lists_bare_events_and_garbage() {
        let raw = lines("demo-v1-dc2769a.log");
        let list = json!({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": raw});
        assert_eq!(events_of(&list).expect("list").len(), 37);
        assert_eq!(events_of(&raw[0]).expect("event").len(), 1);
        let malformed: Value = serde_json::from_str(
            &std::fs::read_to_string(corpus("falco-malformed-event.json").expect("file"))
                .expect("read"),
        )
        .expect("json");
        assert!(events_of(&malformed).is_err());
        assert!(to_event(&malformed).is_err());
    }

    #[test]
    fn managed_cluster_wrappers_unwrap_to_the_same_events() {
        let raw = lines("demo-v1-dc2769a.log");
        let plain = to_event(&raw[0]).expect("maps");
        // AKS: the event as a JSON string, or as an object, in `properties.log`.
        for log in [Value::String(raw[0].to_string()), raw[0].clone()] {
            let aks = json!({"category": "kube-audit", "properties": {"log": log}});
            let inner = events_of(&aks).expect("unwraps");
            assert_eq!(to_event(&inner[0]).expect("maps"), plain);
        }
        // GKE: a Cloud Logging entry (shape of the GCP audit logs of `detection-fixtures/`).
        let gke = json!({
            "insertId": "abc123",
            "protoPayload": {
                "authenticationInfo": {"principalEmail": "dev@example.com"},
                "methodName": "io.k8s.core.v1.pods.exec.create",
                "requestMetadata": {"callerIp": "88.88.88.88", "callerSuppliedUserAgent": "kubectl/v1.40.8"},
                "resourceName": "core/v1/namespaces/example/pods/web-1/exec",
                "status": {"code": 7}
            },
            "timestamp": "2022-03-04T16:01:49.978756Z",
            "labels": {"authorization.k8s.io/decision": "forbid"}
        });
        let inner = events_of(&gke).expect("converts");
        let e = to_event(&inner[0]).expect("maps");
        assert_eq!(e.event_type, "k8s.pods/exec.create");
        assert_eq!(e.actor_id, "dev@example.com");
        assert_eq!(e.actor_ip.as_deref(), Some("88.88.88.88"));
        assert_eq!(e.namespace.as_deref(), Some("example"));
        assert_eq!(e.resource_id.as_deref(), Some("example/web-1"));
        assert_eq!(
            (e.event_outcome.as_str(), e.error_code.as_deref()),
            ("failure", Some("403"))
        );
        assert_eq!(e.correlation_id.as_deref(), Some("abc123"));
        let not_k8s =
            json!({"protoPayload": {"methodName": "v2.deploymentmanager.deployments.insert"}});
        assert!(events_of(&not_k8s).is_err());
    }

    #[test]
    fn odd_but_valid_audit_events_are_mapped_not_refused() {
        let audit = json!({
            "kind": "Event", "auditID": "0c9e5c4c-8a34-4d7e-9d8a-4f1b2f1d7a10", "stage": "ResponseComplete",
            "verb": "v".repeat(60),
            "user": {"username": ""},
            "objectRef": {"resource": "r".repeat(63), "subresource": "s".repeat(40), "namespace": ""},
            "requestURI": "",
            "stageTimestamp": "2025-01-01T00:00:00Z",
        });
        let e = to_event(&audit).expect("an apiserver can send this; refusing it loses the batch");
        assert_eq!(e.actor_id, "system:unknown");
        assert_eq!(e.event_action.chars().count(), 50);
        assert!(e.event_type.chars().count() <= 100, "{}", e.event_type);
        assert_eq!(e.namespace, None);
    }
}
