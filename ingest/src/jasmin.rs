//! `POST /v1/sms/jasmin`: Jasmin's HTTP MO (SPEC §4.1). Jasmin's deliver_sm thrower
//! (`jasmin/routing/throwers.py`, 0.11.1) posts, form-encoded, to an HTTP client
//! connector's `baseurl`: `id`, `from`, `to`, `origin-connector`, `content` (the PDU's
//! `short_message` or `message_payload`, raw bytes), `binary` (the same bytes as hex),
//! and, when the PDU has them, `coding` (the `data_coding` byte — sent as that byte,
//! `coding=%08`, not as digits), `priority`,
//! `validity`. It counts the message delivered only when the body, trimmed, is
//! exactly `ACK/Jasmin`; anything else (another body, any status) is requeued and
//! thrown again, up to its `max_retries`, except a `404`, which it drops.
//!
//! So ingest answers `200 ACK/Jasmin` only after the broker's confirm, and `404`
//! never. The token is the gateways' `INGEST_TOKEN`, as `token=` in the connector's
//! URL (`http://ingest:8080/v1/sms/jasmin?token=…`) or a bearer header.
//!
//! The text is decoded from `binary` (the bytes exactly; `content`, form-encoded raw
//! bytes, is not UTF-8 for UCS-2): `coding` 8 is UCS-2 (UTF-16BE), everything else
//! is read as UTF-8 where it is valid, else as Latin-1 (`coding` 3; and the GSM
//! default alphabet of `coding` 0 agrees with ASCII on digits, Latin letters and the
//! separators a reading uses). A text that decodes badly is still published (lossily),
//! so the validator answers it like any other malformed SMS: never lost, never a
//! poison message.

use std::collections::HashMap;

use axum::Router;
use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Form, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use tracing::Instrument;

use crate::sms::{
    ApiError, AppState, authorized, presented_token, publish, received, request_span,
};

/// What Jasmin waits for.
pub const ACK: &str = "ACK/Jasmin";
/// `data_coding` 8: UCS-2.
const CODING_UCS2: u8 = 8;

pub fn router(state: AppState) -> Router {
    let limit = state.max_body();
    Router::new()
        .route("/v1/sms/jasmin", post(jasmin_sms))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

async fn jasmin_sms(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    form: Result<Form<HashMap<String, String>>, FormRejection>,
) -> Response {
    let span = request_span("POST /v1/sms/jasmin", &headers);
    let result = async {
        let Query(params) = query.map_err(|r| ApiError::BadRequest(r.body_text()))?;
        authorized(&state, presented_token(&params, &headers))?;
        let Form(fields) = form.map_err(|r| {
            if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::TooLarge(state.max_body())
            } else {
                ApiError::BadRequest(r.body_text())
            }
        })?;
        let field = |name: &str| fields.get(name).map(String::as_str).unwrap_or("");
        let text = text(&fields)?;
        let id = Some(field("id").trim())
            .filter(|id| !id.is_empty())
            .map(|id| format!("jasmin-{id}"));
        let event = received(&state, id, field("from"), field("to"), text, None)?;
        publish(&state, event).await
    }
    .instrument(span)
    .await;
    let response = match result {
        Ok(_) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            ACK,
        )
            .into_response(),
        Err(e) => {
            if !matches!(e, ApiError::Unavailable(_)) {
                tracing::info!(status = e.status().as_u16(), reason = %e, endpoint = "jasmin", "request refused");
            }
            e.into_response()
        }
    };
    state.count("jasmin", response.status());
    response
}

/// The message text, from `binary` by `coding` (module docs), or `content` when
/// Jasmin sent no `binary`.
fn text(fields: &HashMap<String, String>) -> Result<String, ApiError> {
    let coding = match fields.get("coding") {
        None => None,
        Some(c) => coding_byte(c)
            .ok_or_else(|| ApiError::BadRequest("coding is not a data_coding byte".into()))?,
    };
    let Some(binary) = fields.get("binary").map(|b| b.trim()) else {
        return Ok(fields.get("content").cloned().unwrap_or_default());
    };
    let bytes = shared::hex::decode(binary)
        .ok_or_else(|| ApiError::BadRequest("binary is not hex".into()))?;
    Ok(decode(&bytes, coding))
}

/// `coding` as Jasmin 0.11.1 sends it: the `data_coding` byte itself (`coding=%08`
/// for UCS-2, `%00` for the default alphabet — seen from a running Jasmin), or, as
/// its documentation shows it, the number in decimal. `Some(None)`: empty, none given.
fn coding_byte(c: &str) -> Option<Option<u8>> {
    let mut chars = c.chars();
    match (chars.next(), chars.next()) {
        (None, _) => Some(None),
        (Some(ch), None) if !ch.is_ascii_digit() => u8::try_from(u32::from(ch)).ok().map(Some),
        _ => c.trim().parse::<u8>().ok().map(Some),
    }
}

fn decode(bytes: &[u8], coding: Option<u8>) -> String {
    if coding == Some(CODING_UCS2) {
        let units: Vec<u16> = bytes
            .chunks(2)
            .map(|c| match c {
                [hi, lo] => u16::from_be_bytes([*hi, *lo]),
                // An odd byte out: not a character, shown as one replacement.
                _ => 0xFFFD,
            })
            .collect();
        return String::from_utf16_lossy(&units);
    }
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_owned(),
        Err(_) => bytes.iter().map(|&b| char::from(b)).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn ucs2_comes_from_binary() {
        // "Привет 1000001" as UTF-16BE, as Jasmin hexlifies the PDU's bytes.
        let hex: String = "Привет 1000001"
            .encode_utf16()
            .flat_map(u16::to_be_bytes)
            .map(|b| format!("{b:02x}"))
            .collect();
        let f = fields(&[("coding", "8"), ("binary", &hex), ("content", "\u{FFFD}")]);
        assert_eq!(text(&f).expect("text"), "Привет 1000001");
        // What a running Jasmin 0.11.1 sends: the byte itself (`coding=%08`).
        let f = fields(&[("coding", "\u{8}"), ("binary", &hex)]);
        assert_eq!(text(&f).expect("text"), "Привет 1000001");
        let f = fields(&[("coding", "\0"), ("binary", "31")]);
        assert_eq!(text(&f).expect("text"), "1");
        // An odd byte out is one replacement character, not a refusal.
        let odd = fields(&[("coding", "8"), ("binary", "0031003")]);
        assert!(text(&odd).is_err(), "odd hex is not hex");
        let odd = fields(&[("coding", "8"), ("binary", "00310030ff")]);
        assert_eq!(text(&odd).expect("text"), "10\u{FFFD}");
    }

    #[test]
    fn other_codings_read_utf8_else_latin1() {
        let f = fields(&[("coding", "0"), ("binary", "31303030303031203132333435")]);
        assert_eq!(text(&f).expect("text"), "1000001 12345");
        let latin1 = fields(&[("coding", "3"), ("binary", "636166e9")]);
        assert_eq!(text(&latin1).expect("text"), "café");
        let no_coding = fields(&[("binary", "d09f")]);
        assert_eq!(text(&no_coding).expect("text"), "П");
        let no_binary = fields(&[("content", "1000001 12345")]);
        assert_eq!(text(&no_binary).expect("text"), "1000001 12345");
        assert!(text(&fields(&[("coding", "xy"), ("binary", "31")])).is_err());
        assert!(text(&fields(&[("coding", "300"), ("binary", "31")])).is_err());
        assert!(text(&fields(&[("binary", "zz")])).is_err());
    }
}
