//! AWS CloudTrail records as Veritrail events (for `veritrail import --format cloudtrail`).
//!
//! The mapping: `userIdentity` is the actor (its `arn`, else `userName`, `principalId` or
//! `accountId`), `eventName` the action, `errorCode` the outcome, `sourceIPAddress` the actor's
//! address, `requestID` (else `eventID`) the correlation id, and the whole record is `event_data`.
//! The event type is `aws.<service>.<eventName>`. The event id is derived from `eventID`, or from
//! the record's content when it has none, so importing a file twice stores nothing new.

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::event::Event;

/// Category of every CloudTrail event.
pub const CATEGORY: &str = "aws";

/// The records of a CloudTrail file (`{"Records": [...]}`) or of one line (a record).
pub fn records_of(value: &Value) -> Result<Vec<&Value>, String> {
    if let Some(records) = value.get("Records") {
        return records
            .as_array()
            .map(|r| r.iter().collect())
            .ok_or_else(|| "`Records` is not an array".to_string());
    }
    if value.get("eventName").is_some() && value.get("eventTime").is_some() {
        return Ok(vec![value]);
    }
    if value.get("digestStartTime").is_some() {
        return Err(
            "a CloudTrail digest file (the trail's own integrity chain), not records".into(),
        );
    }
    Err("not a CloudTrail record (no `eventName` and `eventTime`) nor a `Records` file".into())
}

fn derived_id(kind: &str, text: &str) -> Uuid {
    let digest = Sha256::digest(format!("aws-cloudtrail\0{kind}\0{text}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

/// The event id of a record: from its `eventID`, else from its canonical bytes.
pub fn event_id(record: &Value) -> Uuid {
    match record.get("eventID").and_then(Value::as_str) {
        Some(id) => derived_id("eventID", id),
        None => derived_id(
            "content",
            &crate::canonical::to_vec(record)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_else(|_| record.to_string()),
        ),
    }
}

fn type_part(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn cut(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// One CloudTrail record as a Veritrail event.
pub fn to_event(record: &Value) -> Result<Event, String> {
    let text = |v: &Value, name: &str| v.get(name).and_then(Value::as_str).map(str::to_string);
    let name = text(record, "eventName").ok_or("`eventName` is missing")?;
    let time = text(record, "eventTime").ok_or("`eventTime` is missing")?;
    let source = text(record, "eventSource").unwrap_or_else(|| "unknown.amazonaws.com".into());
    let service = source.trim_end_matches(".amazonaws.com");
    let who = record.get("userIdentity").cloned().unwrap_or(Value::Null);
    let actor_id = ["arn", "userName", "principalId", "accountId", "invokedBy"]
        .iter()
        .find_map(|k| text(&who, k))
        .unwrap_or_else(|| "unknown".into());
    let actor_type = text(&who, "type").unwrap_or_else(|| "unknown".into());
    let resource = record
        .get("resources")
        .and_then(|r| r.get(0))
        .cloned()
        .unwrap_or(Value::Null);
    let resource_type = text(&resource, "type").unwrap_or_else(|| service.to_string());
    let resource_id = text(&resource, "ARN")
        .or_else(|| text(record, "recipientAccountId"))
        .unwrap_or_else(|| source.clone());
    let failed = record.get("errorCode").is_some_and(|c| !c.is_null());
    let mut event = json!({
        "event_id": event_id(record).to_string(),
        "event_type": format!("aws.{}.{}", type_part(service), type_part(&name)),
        "event_timestamp": time,
        "event_category": CATEGORY,
        "event_action": cut(&name, 100),
        "event_outcome": if failed { "failure" } else { "success" },
        "actor_type": cut(&actor_type, 100),
        "actor_id": cut(&actor_id, 255),
        "resource_type": cut(&resource_type, 100),
        "resource_id": cut(&resource_id, 255),
        "correlation_id": cut(&text(record, "requestID").or_else(|| text(record, "eventID")).unwrap_or_else(|| event_id(record).to_string()), 255),
        "event_data": record,
    });
    let e = event.as_object_mut().ok_or("internal: not an object")?;
    if let Some(ip) = text(record, "sourceIPAddress") {
        e.insert("actor_ip".into(), json!(cut(&ip, 45)));
    }
    if let Some(region) = text(record, "awsRegion") {
        e.insert("cluster_id".into(), json!(cut(&region, 255)));
    }
    if let Some(code) = text(record, "errorCode") {
        e.insert("error_code".into(), json!(cut(&code, 255)));
    }
    if let Some(msg) = text(record, "errorMessage") {
        e.insert("error_message".into(), json!(cut(&msg, 8192)));
    }
    Event::from_json_owned(event, Uuid::now_v7).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// `../shared/corpus/cloudtrail/<name>` beside the repository, found at run time.
    fn corpus(name: &str) -> String {
        let crate_dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it");
        let p = PathBuf::from(crate_dir)
            .join("../../../shared/corpus/cloudtrail")
            .join(name);
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    #[test]
    fn the_example_records_map_with_their_actor_and_outcome() {
        let text = corpus("awsdocs_cloudtrail_examples.jsonl");
        let records: Vec<Value> = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect();
        assert_eq!(records.len(), 19);
        for r in &records {
            let e = to_event(r).unwrap_or_else(|why| panic!("{why}: {r}"));
            assert_eq!(e.event_action, r["eventName"].as_str().unwrap());
            let failed = r.get("errorCode").is_some();
            assert_eq!(e.event_outcome, if failed { "failure" } else { "success" });
            assert!(e.event_type.starts_with("aws."), "{}", e.event_type);
        }
        let update = records
            .iter()
            .find(|r| r["eventName"] == "UpdateTrail")
            .unwrap();
        let e = to_event(update).unwrap();
        assert_eq!(e.error_code.as_deref(), Some("TrailNotFoundException"));
        assert_eq!(e.event_type, "aws.cloudtrail.UpdateTrail");
    }

    #[test]
    fn records_files_the_big_record_and_the_digest() {
        let file: Value = serde_json::from_str(&corpus("alice_start_instances.json")).unwrap();
        let records = records_of(&file).unwrap();
        let e = to_event(records[0]).unwrap();
        assert_eq!(e.actor_id, "arn:aws:iam::123456789012:user/Alice");
        assert_eq!(e.actor_ip.as_deref(), Some("205.251.233.176"));
        assert_eq!(e.cluster_id.as_deref(), Some("us-east-2"));
        // No eventID: the id comes from the content, the same every time.
        assert_eq!(event_id(records[0]), to_event(records[0]).unwrap().event_id);
        let big: Value =
            serde_json::from_str(&corpus("alice_start_instances_bigevent.json")).unwrap();
        let big = records_of(&big).unwrap();
        assert!(
            to_event(big[0]).is_ok(),
            "the 64 KB record fits in an event"
        );
        let digest: Value =
            serde_json::from_str(&corpus("awsdocs_cloudtrail_digest_example.json")).unwrap();
        let why = records_of(&digest).expect_err("a digest holds no records");
        assert!(why.contains("digest"), "{why}");
    }
}
