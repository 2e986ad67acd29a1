//! The phone network, played over Kannel's fake SMSC socket (bearerbox listens, we
//! connect): a line `FROM TO ucs2 DATA` sends a resident's SMS; Kannel's SMS to
//! phones come back as `FROM TO ucs-2 DATA` or, when long, one `udh` line per part.
//! See docs/kannel.md for the observed protocol.

use std::collections::HashMap;
use std::time::Duration;

use percent_encoding::{NON_ALPHANUMERIC, percent_decode};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// An SMS that Kannel delivered to a phone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    pub from: String,
    pub to: String,
    pub text: String,
    /// `ucs-2` for a single part, `udh` for a reassembled long one.
    pub coding: String,
    pub parts: usize,
}

/// A long message's parts are keyed by sender, receiver and UDH reference.
type PartKey = (String, String, u8);

pub struct Phone {
    reader: tokio::io::Lines<BufReader<OwnedReadHalf>>,
    writer: OwnedWriteHalf,
    /// Parts of long messages, by (from, to, reference).
    partial: HashMap<PartKey, Vec<Option<Vec<u8>>>>,
}

fn url_decode(data: &str) -> Vec<u8> {
    percent_decode(data.replace('+', " ").as_bytes()).collect()
}

fn utf16be(bytes: &[u8]) -> String {
    let units: Vec<u16> = bytes
        .chunks(2)
        .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))
        .collect();
    String::from_utf16_lossy(&units)
}

impl Phone {
    pub async fn connect(port: u16) -> Phone {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("fake SMSC port");
        let (read, writer) = stream.into_split();
        Phone {
            reader: BufReader::new(read).lines(),
            writer,
            partial: HashMap::new(),
        }
    }

    /// A resident sends `text` from `from` to the service number `to`.
    pub async fn send(&mut self, from: &str, to: &str, text: &str) {
        let utf16: Vec<u8> = text.encode_utf16().flat_map(u16::to_be_bytes).collect();
        let data: String = percent_encoding::percent_encode(&utf16, NON_ALPHANUMERIC).to_string();
        let line = format!("{from} {to} ucs2 {data}\n");
        self.writer
            .write_all(line.as_bytes())
            .await
            .expect("write to SMSC");
    }

    /// The next SMS delivered to any phone, or `None` after `wait`.
    pub async fn receive(&mut self, wait: Duration) -> Option<Delivered> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let line = tokio::time::timeout_at(deadline, self.reader.next_line())
                .await
                .ok()?
                .ok()??;
            if let Some(sms) = self.parse(&line) {
                return Some(sms);
            }
        }
    }

    fn parse(&mut self, line: &str) -> Option<Delivered> {
        let mut fields = line.splitn(4, ' ');
        let from = fields.next()?.to_owned();
        let to = fields.next()?.to_owned();
        let kind = fields.next()?;
        let rest = fields.next().unwrap_or("");
        match kind {
            "ucs-2" => Some(Delivered {
                from,
                to,
                text: utf16be(&url_decode(rest)),
                coding: kind.into(),
                parts: 1,
            }),
            "text" => Some(Delivered {
                from,
                to,
                text: rest.to_owned(),
                coding: kind.into(),
                parts: 1,
            }),
            "udh" => {
                let (udh, data) = rest.split_once(" data ")?;
                let udh = url_decode(udh);
                // 05 00 03 REF TOTAL SEQ
                let (reference, total, seq) = (
                    *udh.get(3)?,
                    usize::from(*udh.get(4)?),
                    usize::from(*udh.get(5)?),
                );
                let parts = self
                    .partial
                    .entry((from.clone(), to.clone(), reference))
                    .or_insert_with(|| vec![None; total]);
                *parts.get_mut(seq.checked_sub(1)?)? = Some(url_decode(data));
                if parts.iter().all(Option::is_some) {
                    let bytes: Vec<u8> = parts.iter().flatten().flatten().copied().collect();
                    self.partial.remove(&(from.clone(), to.clone(), reference));
                    Some(Delivered {
                        from,
                        to,
                        text: utf16be(&bytes),
                        coding: "udh".into(),
                        parts: total,
                    })
                } else {
                    None
                }
            }
            _ => None,
        }
    }
}
