//! docs/contract.md's checked tables (each after a `<!-- checked: … -->` line) against
//! the code: the reason codes against `RejectReason`, the routing keys, event fields
//! and channel values against the serde types of `shared::events`, the queues against
//! `shared::topology::system_queues`, the endpoints against the routes in the source.

use std::collections::BTreeSet;

use serde_json::Value;
use shared::events::{Channel, Event, RejectReason};
use shared::topology::system_queues;

use super::markdown::{self, code_spans, table_after};
use super::openapi::routes_in_code;

fn contract() -> String {
    markdown::read("docs/contract.md")
}

/// The first code span of each row's `column`.
fn first_spans(rows: &[Vec<String>], column: usize) -> Vec<String> {
    rows.iter()
        .map(|r| {
            code_spans(&r[column])
                .into_iter()
                .next()
                .unwrap_or_default()
        })
        .collect()
}

/// Every channel, with a `match` that stops compiling when one is added.
fn every_channel() -> Vec<Channel> {
    let all = vec![Channel::Sms, Channel::Paper, Channel::Web];
    for c in &all {
        match c {
            Channel::Sms | Channel::Paper | Channel::Web => {}
        }
    }
    all
}

/// One event of each kind with every field given, as a publisher would send it. An
/// event type that gains a required field refuses its sample (update it here and in
/// the contract); one that gains an optional field writes it back (the contract's
/// table must list it).
fn samples() -> Vec<Value> {
    let at = "2026-11-20T10:00:00+05:00";
    vec![
        serde_json::json!({"schema": "sms.received/v1", "message_id": "gw-1", "from": "+79001234567",
            "to": "7377", "text": "1000001 45100", "received_at": at, "channel": "sms"}),
        serde_json::json!({"schema": "reading.accepted/v1", "reading_id": "00000000-0000-0000-0000-000000000001",
            "message_id": "gw-1", "account": "1000001", "meter": "M-1", "period": "2026-11",
            "values": [45100], "received_at": at, "channel": "sms", "email": "ivan@example.ru",
            "supersedes": "00000000-0000-0000-0000-000000000002"}),
        serde_json::json!({"schema": "reading.rejected/v1", "message_id": "gw-2", "from": "+79001234567",
            "account": "1000001", "reason": "format", "reply": "Напишите…", "received_at": at,
            "channel": "sms"}),
    ]
}

/// What the contract's "type" column says of a JSON value.
fn json_type(v: &Value) -> &'static str {
    match v {
        Value::String(_) => "string",
        Value::Number(_) => "integer",
        Value::Array(a) if a.iter().all(Value::is_u64) => "array of integers",
        Value::Array(_) => "array",
        Value::Bool(_) => "boolean",
        Value::Object(_) => "object",
        Value::Null => "null",
    }
}

#[test]
fn contract_reason_codes_are_reject_reason_in_order() {
    let rows = table_after(&contract(), "<!-- checked: reasons -->");
    let documented = first_spans(&rows, 0);
    let code: Vec<String> = RejectReason::ALL
        .iter()
        .map(|r| r.as_str().to_owned())
        .collect();
    assert_eq!(
        documented, code,
        "docs/contract.md §3: the reason codes, in the order the checks run"
    );
}

#[test]
fn contract_events_match_the_serde_types() {
    let doc = contract();
    let mut found = Vec::new();
    let mut keys = BTreeSet::new();
    for sample in samples() {
        let event = Event::from_json(sample.to_string().as_bytes()).unwrap_or_else(|e| {
            panic!("the sample {sample} no longer decodes ({e}): update it and the contract")
        });
        let key = event.routing_key();
        keys.insert(key.to_owned());
        let written: Value =
            serde_json::from_slice(&event.to_json()).expect("an event writes JSON");
        let written = written.as_object().expect("an object");
        let rows = table_after(&doc, &format!("<!-- checked: event {key} -->"));
        let fields = first_spans(&rows, 0);
        let names: Vec<String> = written.keys().cloned().collect();
        if fields.iter().collect::<BTreeSet<_>>() != names.iter().collect::<BTreeSet<_>>() {
            found.push(format!(
                "{key}: the contract lists {fields:?}, the event writes {names:?}"
            ));
        }
        for (row, name) in rows.iter().zip(&fields) {
            let Some(value) = written.get(name) else {
                continue;
            };
            let mut probe = sample.clone();
            probe[name.as_str()] = Value::Null;
            let nullable =
                name != "schema" && Event::from_json(probe.to_string().as_bytes()).is_ok();
            let want = if nullable {
                format!("{} or null", json_type(value))
            } else {
                json_type(value).to_owned()
            };
            if row[1] != want {
                found.push(format!(
                    "{key}.{name}: the contract says `{}`, the type is `{want}`",
                    row[1]
                ));
            }
        }
        if name_of_schema(written) != format!("{key}/v1") {
            found.push(format!("{key}: writes schema {:?}", written.get("schema")));
        }
    }

    let rows = table_after(&doc, "<!-- checked: routing-keys -->");
    let documented: BTreeSet<String> = first_spans(&rows, 0).into_iter().collect();
    if documented != keys {
        found.push(format!(
            "routing keys: the contract lists {documented:?}, the events are {keys:?}"
        ));
    }
    let queues = system_queues();
    for row in &rows {
        let key = code_spans(&row[0]).into_iter().next().unwrap_or_default();
        if code_spans(&row[1]) != [format!("{key}/v1")] {
            found.push(format!("{key}: schema column {:?}", row[1]));
        }
        let consumers: BTreeSet<String> = code_spans(&row[3]).into_iter().collect();
        let bound: BTreeSet<String> = queues
            .iter()
            .filter(|q| q.bindings.contains(&key) || q.filtered.contains(&key))
            .map(|q| q.name.clone())
            .collect();
        if consumers != bound {
            found.push(format!(
                "{key}: the contract names the queues {consumers:?}, the topology binds {bound:?}"
            ));
        }
    }

    let channels = first_spans(&table_after(&doc, "<!-- checked: channels -->"), 0);
    let code: Vec<String> = every_channel()
        .iter()
        .map(|c| c.as_str().to_owned())
        .collect();
    if channels != code {
        found.push(format!(
            "channels: the contract lists {channels:?}, `Channel` has {code:?}"
        ));
    }
    for c in every_channel() {
        if serde_json::to_value(c).ok() != Some(Value::String(c.as_str().to_owned())) {
            found.push(format!(
                "channel {c:?} is written otherwise than {:?}",
                c.as_str()
            ));
        }
    }
    assert!(
        found.is_empty(),
        "docs/contract.md §4.2 is out of date:\n{}",
        found.join("\n")
    );
}

fn name_of_schema(event: &serde_json::Map<String, Value>) -> String {
    event
        .get("schema")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn contract_queues_match_the_topology() {
    let rows = table_after(&contract(), "<!-- checked: queues -->");
    let documented: Vec<(String, Vec<String>, String, String)> = rows
        .iter()
        .map(|r| {
            (
                first_spans(std::slice::from_ref(r), 0)[0].clone(),
                code_spans(&r[1]),
                r[2].clone(),
                r[3].clone(),
            )
        })
        .collect();
    let code: Vec<(String, Vec<String>, String, String)> = system_queues()
        .into_iter()
        .map(|q| {
            let keys: BTreeSet<String> = q.bindings.iter().chain(&q.filtered).cloned().collect();
            let attempts = q
                .retry
                .max_attempts
                .map_or("unlimited".to_owned(), |n| n.to_string());
            let delays: Vec<String> = q
                .retry
                .delays
                .iter()
                .map(|d| d.as_secs().to_string())
                .collect();
            (
                q.name,
                keys.into_iter().collect(),
                attempts,
                delays.join(", "),
            )
        })
        .collect();
    let sorted = |mut v: Vec<(String, Vec<String>, String, String)>| {
        for row in &mut v {
            row.1.sort();
        }
        v
    };
    assert_eq!(
        sorted(documented),
        sorted(code),
        "docs/contract.md §4.2's queue table and shared::topology::system_queues"
    );
}

#[test]
fn contract_endpoints_are_the_routes() {
    let rows = table_after(&contract(), "<!-- checked: endpoints -->");
    let mut documented = BTreeSet::new();
    for row in &rows {
        let service = if row[0] == "every service" {
            "all".to_owned()
        } else {
            row[0].clone()
        };
        for endpoint in code_spans(&row[1]) {
            let (method, path) = endpoint
                .split_once(' ')
                .unwrap_or_else(|| panic!("`METHOD /path`: {endpoint}"));
            documented.insert((service.clone(), method.to_owned(), path.to_owned()));
        }
    }
    let code = routes_in_code();
    let missing: Vec<_> = code.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&code).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "docs/contract.md §4's endpoint table: not listed {missing:?}; listed but not served {extra:?}"
    );
}
