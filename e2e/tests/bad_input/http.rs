//! The HTTP probes: requests as raw bytes (so that nothing a client library would
//! refuse to send is out of reach), a minimal HTTP/1.1 exchange over a socket, and
//! the generators of bad requests for every endpoint of docs/openapi.yaml.

use std::time::Duration;

use e2e::drill::plan::Rng;
use e2e::system::{EXPORT_TOKEN, MAX_SECRET, TELEGRAM_SECRET, TOKEN};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One request as bytes on the wire.
pub struct Probe {
    pub service: &'static str,
    pub label: String,
    pub raw: Vec<u8>,
    /// Whether the request reaches an API operation (`/v1/…`, well-formed HTTP): its
    /// 4xx answers must carry a JSON reason.
    pub api: bool,
    /// Stop writing after this many bytes and half-close (a truncated request).
    pub cut_at: Option<usize>,
}

/// What came back.
pub enum Answer {
    Status {
        code: u16,
        body: Vec<u8>,
    },
    /// Closed without a byte of answer.
    Dropped,
    Hung,
}

pub fn request(method: &str, target: &str, headers: &[(&str, String)], body: &[u8]) -> Vec<u8> {
    let mut raw = format!("{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n")
        .into_bytes();
    for (k, v) in headers {
        raw.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    if !body.is_empty() || method == "POST" {
        raw.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    raw.extend_from_slice(b"\r\n");
    raw.extend_from_slice(body);
    raw
}

pub fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = body.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&body[..eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s.trim(), 16).ok())
            .unwrap_or(0);
        body = &body[eol + 2..];
        if size == 0 || size > body.len() {
            break;
        }
        out.extend_from_slice(&body[..size]);
        body = body.get(size + 2..).unwrap_or_default();
    }
    out
}

/// Whether `got` holds a whole response (headers, and the body its framing announces).
pub fn complete(got: &[u8]) -> bool {
    let Some(head_end) = got.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&got[..head_end]).to_lowercase();
    let body = &got[head_end + 4..];
    if head.contains("transfer-encoding: chunked") {
        return body.ends_with(b"0\r\n\r\n");
    }
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    body.len() >= length
}

/// Writes the probe and reads one response. Probes without `Connection: close` (raw
/// protocol garbage) leave the connection open after the answer: reading stops at the
/// end of the first response.
pub async fn send(port: u16, probe: &Probe) -> Answer {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)).await else {
        return Answer::Dropped;
    };
    let bytes = match probe.cut_at {
        Some(n) => &probe.raw[..n.min(probe.raw.len())],
        None => &probe.raw[..],
    };
    // The server may answer (413, 400) and close before it has read everything.
    let _ = stream.write_all(bytes).await;
    if probe.cut_at.is_some() {
        let _ = stream.shutdown().await;
    }
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => break,
            Ok(Ok(0) | Err(_)) => break,
            Ok(Ok(n)) => {
                got.extend_from_slice(&buf[..n]);
                if complete(&got) {
                    break;
                }
            }
        }
    }
    if got.is_empty() {
        return if tokio::time::Instant::now() >= deadline {
            Answer::Hung
        } else {
            Answer::Dropped
        };
    }
    let head_end = got
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(got.len());
    let head = String::from_utf8_lossy(&got[..head_end]).to_lowercase();
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = got.get(head_end + 4..).unwrap_or_default();
    let body = if head.contains("transfer-encoding: chunked") {
        dechunk(body)
    } else {
        body.to_vec()
    };
    Answer::Status { code, body }
}

pub fn valid_sms(rng: &mut Rng) -> serde_json::Value {
    serde_json::json!({
        "message_id": format!("bad-input-{}", rng.next_u64()),
        "from": "+79001234567",
        "to": "7377",
        "text": "1000001 45100",
        "received_at": "2026-11-20T10:00:00+05:00",
    })
}

/// A random string: ASCII, Cyrillic, controls, surrogate-free Unicode, digits.
pub fn random_text(rng: &mut Rng, max: u64) -> String {
    let len = rng.below(max + 1);
    (0..len)
        .map(|_| match rng.below(6) {
            0 => char::from(u8::try_from(rng.below(128)).unwrap_or(b'x')),
            1 => {
                char::from_u32(0x0400 + u32::try_from(rng.below(0x60)).unwrap_or(0)).unwrap_or('ж')
            }
            2 => char::from(b'0' + u8::try_from(rng.below(10)).unwrap_or(0)),
            3 => *rng.pick(&[
                '+', ' ', '@', '.', '#', '%', '\u{a0}', '\u{200b}', '"', '\\',
            ]),
            _ => char::from_u32(u32::try_from(rng.below(0x10FFFF)).unwrap_or(0x41)).unwrap_or('�'),
        })
        .collect()
}

pub fn random_bytes(rng: &mut Rng, max: u64) -> Vec<u8> {
    (0..rng.below(max + 1))
        .map(|_| u8::try_from(rng.below(256)).unwrap_or(0))
        .collect()
}

/// Percent-encodes every byte that is not unreserved.
pub fn pct(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(b) {
                char::from(*b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

pub fn post_sms_probes(rng: &mut Rng) -> Vec<Probe> {
    let auth = || {
        vec![
            ("Authorization", format!("Bearer {TOKEN}")),
            ("Content-Type", "application/json".to_owned()),
        ]
    };
    let mut probes = Vec::new();
    let mut add = |label: String, raw: Vec<u8>, cut_at: Option<usize>| {
        probes.push(Probe {
            service: "ingest",
            label,
            raw,
            api: true,
            cut_at,
        });
    };
    let good = serde_json::to_vec(&valid_sms(rng)).unwrap_or_default();
    // Authentication.
    for (label, value) in [
        ("no token", None),
        ("wrong token", Some("Bearer wrong-token-123".to_owned())),
        ("basic auth", Some("Basic Z3Vlc3Q6Z3Vlc3Q=".to_owned())),
        ("empty bearer", Some("Bearer ".to_owned())),
        ("token without scheme", Some(TOKEN.to_owned())),
        (
            "non-UTF-8 token",
            Some("Bearer \u{fffd}\u{fffd}".to_owned()),
        ),
    ] {
        let mut h = vec![("Content-Type", "application/json".to_owned())];
        if let Some(v) = value {
            h.push(("Authorization", v));
        }
        add(
            format!("POST /v1/sms {label}"),
            request("POST", "/v1/sms", &h, &good),
            None,
        );
    }
    // Garbage and wrong-typed bodies.
    let fixed: Vec<(&str, Vec<u8>)> = vec![
        ("empty body", vec![]),
        ("null", b"null".to_vec()),
        ("array", b"[1,2,3]".to_vec()),
        ("empty object", b"{}".to_vec()),
        ("string", b"\"1000001 45100\"".to_vec()),
        ("binary", vec![0, 159, 146, 150, 255, 254, 0, 1]),
        (
            "form encoded",
            b"from=%2B79001234567&to=7377&text=1000001+45100".to_vec(),
        ),
        ("xml", b"<sms><from>+79001234567</from></sms>".to_vec()),
        ("deep nesting", "[".repeat(10_000).into_bytes()),
        ("deep object nesting", "{\"a\":".repeat(5_000).into_bytes()),
        (
            "lone surrogate escape",
            br#"{"from":"+79001234567","to":"7377","text":"\ud800"}"#.to_vec(),
        ),
        (
            "Latin-1 text",
            b"{\"from\":\"+79001234567\",\"to\":\"7377\",\"text\":\"caf\xe9\"}".to_vec(),
        ),
        (
            "overlong UTF-8",
            b"{\"from\":\"+79001234567\",\"to\":\"7377\",\"text\":\"\xc0\xaf\"}".to_vec(),
        ),
        (
            "UTF-16 body",
            "{\"from\":\"+79001234567\",\"to\":\"7377\",\"text\":\"1\"}"
                .encode_utf16()
                .flat_map(u16::to_le_bytes)
                .collect(),
        ),
        (
            "UTF-8 BOM",
            [b"\xef\xbb\xbf".as_slice(), good.as_slice()].concat(),
        ),
        (
            "trailing garbage",
            [good.as_slice(), b"}}}garbage".as_slice()].concat(),
        ),
        ("two documents", [good.as_slice(), good.as_slice()].concat()),
        (
            "huge number",
            br#"{"from":"+79001234567","to":"7377","text":"1","received_at":1e999999}"#.to_vec(),
        ),
        (
            "NaN",
            br#"{"from":"+79001234567","to":"7377","text":"1","received_at":NaN}"#.to_vec(),
        ),
    ];
    for (label, body) in fixed {
        add(
            format!("POST /v1/sms {label}"),
            request("POST", "/v1/sms", &auth(), &body),
            None,
        );
    }
    // Each field missing, null, or of a wrong type, or with a wrong value.
    for field in ["message_id", "from", "to", "text", "received_at"] {
        let wrongs: Vec<(&str, Option<serde_json::Value>)> = vec![
            ("missing", None),
            ("null", Some(serde_json::Value::Null)),
            ("number", Some(serde_json::json!(79001234567u64))),
            ("bool", Some(serde_json::json!(true))),
            ("array", Some(serde_json::json!(["1000001", "45100"]))),
            ("object", Some(serde_json::json!({"value": "x"}))),
            ("empty", Some(serde_json::json!(""))),
            ("spaces", Some(serde_json::json!("   "))),
            ("control chars", Some(serde_json::json!("a\u{0}b\u{7}\r\n"))),
            ("4 KiB", Some(serde_json::json!("7".repeat(4096)))),
            ("random", Some(serde_json::json!(random_text(rng, 60)))),
        ];
        for (how, value) in wrongs {
            let mut body = valid_sms(rng);
            match value {
                None => {
                    if let Some(o) = body.as_object_mut() {
                        o.remove(field);
                    }
                }
                Some(v) => body[field] = v,
            }
            let bytes = serde_json::to_vec(&body).unwrap_or_default();
            add(
                format!("POST /v1/sms {field} {how}"),
                request("POST", "/v1/sms", &auth(), &bytes),
                None,
            );
        }
    }
    for at in [
        "yesterday",
        "2026-11-20",
        "2026-13-45T99:99:99+05:00",
        "2026-11-20T10:00:00",
        "+275760-09-13T00:00:00Z",
        "0000-01-01T00:00:00Z",
    ] {
        let mut body = valid_sms(rng);
        body["received_at"] = serde_json::json!(at);
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        add(
            format!("POST /v1/sms received_at {at}"),
            request("POST", "/v1/sms", &auth(), &bytes),
            None,
        );
    }
    // Oversized (413) and a Content-Length that lies.
    for size in [16 * 1024 + 1, 1024 * 1024, 8 * 1024 * 1024] {
        let mut body = valid_sms(rng);
        body["text"] = serde_json::json!("1".repeat(size));
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        add(
            format!("POST /v1/sms {size} bytes"),
            request("POST", "/v1/sms", &auth(), &bytes),
            None,
        );
    }
    let whole = request("POST", "/v1/sms", &auth(), &good);
    let cut = whole.len() - good.len() / 2;
    add(
        "POST /v1/sms truncated body (half-close)".into(),
        whole,
        Some(cut),
    );
    // Truncated JSON at every tenth prefix length.
    for n in (0..good.len()).step_by(10) {
        add(
            format!("POST /v1/sms JSON cut at {n}"),
            request("POST", "/v1/sms", &auth(), &good[..n]),
            None,
        );
    }
    // Random mutations of a valid body.
    for i in 0..400 {
        let mut body = good.clone();
        for _ in 0..=rng.below(8) {
            let at = usize::try_from(rng.below(body.len() as u64 + 1)).unwrap_or(0);
            match rng.below(3) {
                0 if at < body.len() => body[at] = u8::try_from(rng.below(256)).unwrap_or(0),
                1 if at < body.len() => {
                    body.remove(at);
                }
                _ => body.insert(
                    at.min(body.len()),
                    u8::try_from(rng.below(256)).unwrap_or(0),
                ),
            }
        }
        add(
            format!("POST /v1/sms mutation {i}"),
            request("POST", "/v1/sms", &auth(), &body),
            None,
        );
    }
    // Random phone numbers and texts in a well-formed body (libphonenumber gets them).
    for i in 0..300 {
        let mut body = valid_sms(rng);
        body["from"] = serde_json::json!(random_text(rng, 40));
        body["to"] = serde_json::json!(if i % 2 == 0 {
            random_text(rng, 20)
        } else {
            "7377".into()
        });
        body["text"] = serde_json::json!(random_text(rng, 300));
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        add(
            format!("POST /v1/sms random fields {i}"),
            request("POST", "/v1/sms", &auth(), &bytes),
            None,
        );
    }
    probes
}

/// The bots' webhooks and the cabinet's endpoint (SPEC §4.9): wrong or missing
/// secrets, bodies that are no update, updates whose fields are garbage, cut and
/// oversized bodies. Only `2xx` and a `4xx` with a JSON reason are right answers (an
/// update the platform sent but that does not read is `200`).
pub fn chat_and_cabinet_probes(rng: &mut Rng) -> Vec<Probe> {
    let telegram = serde_json::json!({"update_id": 1, "message": {
        "message_id": 17, "from": {"id": 5, "is_bot": false, "first_name": "Иван"},
        "chat": {"id": 5, "type": "private"}, "date": 1_795_000_000_i64, "text": "1000001 45100"}});
    let max = serde_json::json!({"update_type": "message_created", "timestamp": 1_795_000_000_000_i64,
        "message": {"sender": {"user_id": 5, "is_bot": false}, "recipient": {"chat_id": 9, "chat_type": "dialog"},
        "timestamp": 1_795_000_000_000_i64, "body": {"mid": "mid.1", "seq": 1, "text": "1000001 45100"}}});
    let cabinet = serde_json::json!({"request_id": "r-1", "resident_id": "u-1", "account": "1000001",
        "values": [45100], "email": null});
    let mut probes = Vec::new();
    for (path, header, secret, good) in [
        (
            "/v1/bots/telegram",
            "X-Telegram-Bot-Api-Secret-Token",
            TELEGRAM_SECRET,
            telegram,
        ),
        ("/v1/bots/max", "X-Max-Bot-Api-Secret", MAX_SECRET, max),
        ("/v1/readings", "Authorization", TOKEN, cabinet),
    ] {
        let right = if header == "Authorization" {
            format!("Bearer {secret}")
        } else {
            secret.to_owned()
        };
        let with = |value: Option<String>| {
            let mut h = vec![("Content-Type", "application/json".to_owned())];
            if let Some(v) = value {
                h.push((header, v));
            }
            h
        };
        let good = serde_json::to_vec(&good).unwrap_or_default();
        let mut add = |label: String, raw: Vec<u8>, cut_at: Option<usize>| {
            probes.push(Probe {
                service: "ingest",
                label: format!("POST {path} {label}"),
                raw,
                api: true,
                cut_at,
            });
        };
        for (label, value) in [
            ("no secret", None),
            ("wrong secret", Some("wrong-secret-0123456789".to_owned())),
            ("empty secret", Some(String::new())),
            ("the secret twice", Some(format!("{right},{right}"))),
        ] {
            add(
                label.into(),
                request("POST", path, &with(value), &good),
                None,
            );
        }
        let h = with(Some(right.clone()));
        add("empty body".into(), request("POST", path, &h, b""), None);
        add(
            "not JSON".into(),
            request("POST", path, &h, b"\x00\xff{"),
            None,
        );
        add(
            "a JSON array".into(),
            request("POST", path, &h, b"[1,2]"),
            None,
        );
        add(
            "over a mebibyte".into(),
            request("POST", path, &h, &vec![b'{'; 1024 * 1024 + 1]),
            None,
        );
        let whole = request("POST", path, &h, &good);
        add(
            "truncated body (half-close)".into(),
            whole.clone(),
            Some(whole.len() - good.len() / 2),
        );
        // Each field of the good body replaced by garbage, then random documents.
        let value: serde_json::Value = serde_json::from_slice(&good).unwrap_or_default();
        for i in 0..60 {
            let mut v = value.clone();
            garble(rng, &mut v);
            let body = serde_json::to_vec(&v).unwrap_or_default();
            add(
                format!("garbled {i}"),
                request("POST", path, &h, &body),
                None,
            );
        }
        for i in 0..40 {
            let body = random_bytes(rng, 300);
            add(
                format!("random bytes {i}"),
                request("POST", path, &h, &body),
                None,
            );
        }
    }
    probes
}

/// Replaces one value somewhere in `v` (depth first, at random) by a value of
/// another kind.
fn garble(rng: &mut Rng, v: &mut serde_json::Value) {
    let replacement = || -> Vec<serde_json::Value> {
        vec![
            serde_json::Value::Null,
            serde_json::json!(-1),
            serde_json::json!(1.5),
            serde_json::json!(u64::MAX),
            serde_json::json!("\u{0000}\u{202e}ж"),
            serde_json::json!([]),
            serde_json::json!({}),
            serde_json::json!(true),
        ]
    };
    match v {
        serde_json::Value::Object(map) if !map.is_empty() => {
            let keys: Vec<String> = map.keys().cloned().collect();
            let key = rng.pick(&keys).clone();
            if let Some(inner) = map.get_mut(&key) {
                if inner.is_object() && rng.percent(60) {
                    garble(rng, inner);
                } else {
                    *inner = rng.pick(&replacement()).clone();
                }
            }
        }
        _ => *v = rng.pick(&replacement()).clone(),
    }
}

pub fn kannel_probes(rng: &mut Rng) -> Vec<Probe> {
    let mut probes = Vec::new();
    let mut add = |label: String, query: String| {
        probes.push(Probe {
            service: "ingest",
            label,
            raw: request("GET", &format!("/v1/sms/kannel?{query}"), &[], &[]),
            api: true,
            cut_at: None,
        });
    };
    let ok =
        format!("token={TOKEN}&id=abc&from=79001234567&to=7377&ts=1795000000&text=1000001+45100");
    add("kannel valid".into(), ok.clone());
    add("kannel no query".into(), String::new());
    add(
        "kannel no token".into(),
        ok.replace(&format!("token={TOKEN}&"), ""),
    );
    add(
        "kannel wrong token".into(),
        ok.replace(TOKEN, "nope-nope-nope"),
    );
    for (label, q) in [
        (
            "ts not a number",
            ok.replace("ts=1795000000", "ts=yesterday"),
        ),
        (
            "ts huge",
            ok.replace("ts=1795000000", "ts=99999999999999999999999"),
        ),
        (
            "ts out of range",
            ok.replace("ts=1795000000", "ts=9223372036854775807"),
        ),
        ("ts negative", ok.replace("ts=1795000000", "ts=-1")),
        ("bad percent", ok.replace("text=1000001+45100", "text=%zz%")),
        (
            "invalid UTF-8",
            ok.replace("text=1000001+45100", "text=%ff%fe%c0%af"),
        ),
        ("no from", ok.replace("from=79001234567&", "")),
        (
            "garbage from",
            ok.replace("from=79001234567", "from=%00%01abc"),
        ),
        ("empty text", ok.replace("text=1000001+45100", "text=")),
        (
            "id 200 chars",
            ok.replace("id=abc", &format!("id={}", "i".repeat(200))),
        ),
        ("id control", ok.replace("id=abc", "id=%07%08")),
        ("duplicated params", format!("{ok}&from=1&token=x&text=2")),
        (
            "text 20 KiB",
            ok.replace(
                "text=1000001+45100",
                &format!("text={}", "1".repeat(20 * 1024)),
            ),
        ),
        ("semicolons", ok.replace('&', ";")),
    ] {
        add(format!("kannel {label}"), q);
    }
    for i in 0..300 {
        let mut q = format!("token={TOKEN}");
        for name in ["id", "from", "to", "ts", "text"] {
            if rng.percent(80) {
                q.push_str(&format!("&{name}={}", pct(&random_bytes(rng, 40))));
            }
        }
        add(format!("kannel random {i}"), q);
    }
    probes
}

pub fn export_probes(rng: &mut Rng) -> Vec<Probe> {
    let mut probes = Vec::new();
    // With the token, so that the paths reach the period's parsing.
    let bearer = [("Authorization", format!("Bearer {EXPORT_TOKEN}"))];
    let mut add = |label: String, path: String| {
        probes.push(Probe {
            service: "billing-export",
            label,
            raw: request("GET", &path, &bearer, &[]),
            api: true,
            cut_at: None,
        });
    };
    for p in [
        "2026-11.csv",
        "2026-13.csv",
        "2026-00.csv",
        "2026-1.csv",
        "0000-01.csv",
        "9999-12.csv",
        "2026-11",
        "2026-11.CSV",
        ".csv",
        "x.csv",
        "2026-11.csv.csv",
        "%ff.csv",
        "%00.csv",
        "..%2f..%2fetc%2fpasswd",
        "2026-11%2f..%2f.csv",
        "%D0%B8%D1%8E%D0%BD%D1%8C.csv",
        "-2026-11.csv",
        "+2026-11.csv",
        "%202026-11.csv",
        "2026%2011.csv",
    ] {
        add(format!("export {p}"), format!("/v1/exports/{p}"));
    }
    for p in [
        "2026-11",
        "2026-13",
        "2026-1",
        "%ff",
        "..",
        "2026-11.csv",
        "99999-01",
        "%00",
    ] {
        add(
            format!("missing {p}"),
            format!("/v1/exports/{p}/missing.csv"),
        );
    }
    add(
        "export long".into(),
        format!("/v1/exports/{}.csv", "9".repeat(8 * 1024)),
    );
    for i in 0..200 {
        let seg = pct(&random_bytes(rng, 30));
        let path = if i % 2 == 0 {
            format!("/v1/exports/{seg}.csv")
        } else {
            format!("/v1/exports/{seg}/missing.csv")
        };
        add(format!("export random {i}"), path);
    }
    probes
}

/// The ops endpoints of every service, with junk queries, bodies and methods.
pub fn ops_probes(rng: &mut Rng) -> Vec<Probe> {
    let mut probes = Vec::new();
    for service in e2e::system::SERVICES {
        for path in ["/healthz", "/readyz", "/metrics"] {
            for i in 0..5 {
                let q = pct(&random_bytes(rng, 30));
                probes.push(Probe {
                    service,
                    label: format!("{service} {path} junk query {i}"),
                    raw: request("GET", &format!("{path}?{q}"), &[], &random_bytes(rng, 100)),
                    api: false,
                    cut_at: None,
                });
            }
        }
    }
    probes
}

/// Malformed HTTP itself: answered by the HTTP server (hyper) before any route.
pub fn protocol_probes(rng: &mut Rng) -> Vec<Probe> {
    let mut raws: Vec<(String, Vec<u8>)> = vec![
        ("not HTTP".into(), b"hello there\r\n\r\n".to_vec()),
        ("binary".into(), random_bytes(rng, 200)),
        ("bad method".into(), b"P\x00ST /v1/sms HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
        ("HTTP/9".into(), b"GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n".to_vec()),
        ("header without colon".into(), b"GET /healthz HTTP/1.1\r\nHost x\r\n\r\n".to_vec()),
        ("64 KiB header".into(), format!("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Junk: {}\r\n\r\n", "a".repeat(64 * 1024)).into_bytes()),
        ("1000 headers".into(), format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{}\r\n", "X-A: b\r\n".repeat(1000)).into_bytes()),
        ("16 KiB URI".into(), format!("GET /healthz?{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(16 * 1024)).into_bytes()),
        ("bad content-length".into(), b"POST /v1/sms HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n".to_vec()),
        ("two content-lengths".into(), b"POST /v1/sms HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}".to_vec()),
        ("bad chunking".into(), b"POST /v1/sms HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n".to_vec()),
        ("bare LF".into(), b"GET /healthz HTTP/1.1\nHost: x\n\n".to_vec()),
    ];
    for i in 0..50 {
        // Never empty: a server rightly skips blank lines before a request line.
        let line = [vec![b'X'], random_bytes(rng, 60)].concat();
        raws.push((
            format!("random request line {i}"),
            [line, b"\r\n\r\n".to_vec()].concat(),
        ));
    }
    raws.into_iter()
        .map(|(label, raw)| Probe {
            service: if label.contains("v1/sms") {
                "ingest"
            } else {
                "validator"
            },
            label: format!("protocol {label}"),
            raw,
            api: false,
            cut_at: None,
        })
        .collect()
}
