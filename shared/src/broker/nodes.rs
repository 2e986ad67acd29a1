//! The broker nodes `AMQP_URL` names: one URL, or several nodes of one RabbitMQ
//! cluster, comma-separated (SPEC §4). A service connects to the first node that
//! answers, starting at a random node so that replicas spread over the cluster, and
//! its reconnect loop fails over to the others when its node dies.
//!
//! Two forms, mixable:
//!
//! - full URLs: `amqp://u:p@h1:5672/%2f,amqp://u:p@h2:5672/%2f`;
//! - after the first URL, bare `host[:port]` entries, which take the first URL's
//!   scheme, credentials, vhost and query: `amqp://u:p@h1:5672/%2f,h2:5672,h3`
//!   (without a port, the scheme's: 5672, or 5671 for `amqps`).
//!
//! Every node must name the same vhost (one cluster, one vhost). Errors name the bad
//! entry by its position and a redacted form (`user:***@host`): a password is never
//! echoed.

use std::hash::{BuildHasher, RandomState};
use std::str::FromStr;

use lapin::uri::AMQPUri;

/// The nodes of one broker (cluster), as full URLs, in the order given.
#[derive(Clone, PartialEq, Eq)]
pub struct Nodes {
    urls: Vec<String>,
}

/// Why `AMQP_URL` cannot be used; the message never holds a password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodesError {
    #[error("AMQP_URL is empty")]
    Empty,
    #[error("AMQP_URL entry {position} is empty (a stray comma?)")]
    EmptyEntry { position: usize },
    #[error("AMQP_URL entry {position} (`{shown}`): {reason}")]
    Invalid {
        position: usize,
        shown: String,
        reason: String,
    },
    #[error(
        "AMQP_URL entry {position} (`{shown}`) names vhost `{vhost}`, the first names `{first}`: the nodes of one cluster share one vhost"
    )]
    OtherVhost {
        position: usize,
        shown: String,
        vhost: String,
        first: String,
    },
}

impl Nodes {
    /// Parses a comma-separated list (white space around entries is ignored).
    pub fn parse(list: &str) -> Result<Nodes, NodesError> {
        if list.trim().is_empty() {
            return Err(NodesError::Empty);
        }
        let mut urls: Vec<String> = Vec::new();
        let mut first: Option<AMQPUri> = None;
        for (i, entry) in list.split(',').enumerate() {
            let position = i + 1;
            let entry = entry.trim();
            if entry.is_empty() {
                return Err(NodesError::EmptyEntry { position });
            }
            let url = match (&first, entry.contains("://")) {
                (_, true) => entry.to_owned(),
                (Some(_), false) => short_form(&urls[0], entry, position)?,
                (None, false) => {
                    return Err(NodesError::Invalid {
                        position,
                        shown: redact(entry),
                        reason: "the first entry must be a full URL (amqp://user:password@host:port/vhost)".into(),
                    });
                }
            };
            let parsed = AMQPUri::from_str(&url).map_err(|reason| NodesError::Invalid {
                position,
                shown: redact(&url),
                // The parser may quote its input; never show a password.
                reason: if reason.contains(&url) {
                    "not a valid URL".into()
                } else {
                    reason
                },
            })?;
            match &first {
                Some(f) if f.vhost != parsed.vhost => {
                    return Err(NodesError::OtherVhost {
                        position,
                        shown: redact(&url),
                        vhost: parsed.vhost,
                        first: f.vhost.clone(),
                    });
                }
                Some(_) => {}
                None => first = Some(parsed),
            }
            urls.push(url);
        }
        Ok(Nodes { urls })
    }

    pub fn len(&self) -> usize {
        self.urls.len()
    }

    pub fn is_empty(&self) -> bool {
        self.urls.is_empty()
    }

    /// Every node once, beginning with the node at `start` (modulo the count) and
    /// going round.
    pub fn from_offset(&self, start: usize) -> impl Iterator<Item = &str> {
        let n = self.urls.len().max(1);
        (0..self.urls.len()).map(move |i| self.urls[(start + i) % n].as_str())
    }

    /// Every node once, from a random one: replicas started together spread over
    /// the cluster, and a reconnect after a node's loss does not always try the dead
    /// node first.
    pub fn in_turn(&self) -> impl Iterator<Item = &str> {
        let start = RandomState::new().hash_one(std::time::Instant::now()) as usize;
        self.from_offset(start)
    }
}

/// Shows the nodes without their passwords.
impl std::fmt::Debug for Nodes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.urls.iter().map(|u| redact(u)))
            .finish()
    }
}

/// A bare `host[:port]` after the first URL: the first URL with its host and port
/// replaced.
fn short_form(first: &str, entry: &str, position: usize) -> Result<String, NodesError> {
    let invalid = |reason: &str| NodesError::Invalid {
        position,
        shown: redact(entry),
        reason: reason.into(),
    };
    if entry.contains(['@', '/', '?', '#']) {
        return Err(invalid(
            "a short entry is only `host` or `host:port`; write a full URL for anything else",
        ));
    }
    if let Some((host, port)) = entry.rsplit_once(':') {
        if host.is_empty() {
            return Err(invalid("no host before the port"));
        }
        if port.parse::<u16>().is_err() {
            return Err(invalid("the port is not a number from 0 to 65535"));
        }
    }
    let (scheme, after) = first
        .split_once("://")
        .ok_or_else(|| invalid("no URL to extend"))?;
    let end = after.find(['/', '?', '#']).unwrap_or(after.len());
    let (authority, rest) = after.split_at(end);
    let userinfo = authority
        .rfind('@')
        .map(|at| &authority[..=at])
        .unwrap_or("");
    Ok(format!("{scheme}://{userinfo}{entry}{rest}"))
}

/// A URL with its password replaced by `***` (everything between `://` and the last
/// `@` is taken for credentials, so an unencoded `/` or `@` in a password is hidden
/// too).
pub fn redact(url: &str) -> String {
    let Some((scheme, after)) = url.split_once("://") else {
        // Not a URL: show only what cannot be a password.
        return match url.rfind('@') {
            Some(at) => format!("***@{}", &url[at + 1..]),
            None => url.to_owned(),
        };
    };
    match after.rfind('@') {
        Some(at) => {
            let user = after[..at].split(':').next().unwrap_or("");
            let hidden = if after[..at].contains(':') {
                format!("{user}:***")
            } else {
                user.to_owned()
            };
            format!("{scheme}://{hidden}@{}", &after[at + 1..])
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_url_is_one_node() {
        let nodes = Nodes::parse("amqp://guest:guest@127.0.0.1:5672/%2f").expect("valid");
        assert_eq!(nodes.len(), 1);
        assert_eq!(
            nodes.in_turn().collect::<Vec<_>>(),
            ["amqp://guest:guest@127.0.0.1:5672/%2f"]
        );
    }

    #[test]
    fn full_urls_are_kept_as_given() {
        let nodes =
            Nodes::parse("amqp://u:p@h1:5672/%2f, amqp://u:p@h2:5673/%2f ,amqp://u:p@h3:5674/%2f")
                .expect("valid");
        assert_eq!(
            nodes.from_offset(0).collect::<Vec<_>>(),
            [
                "amqp://u:p@h1:5672/%2f",
                "amqp://u:p@h2:5673/%2f",
                "amqp://u:p@h3:5674/%2f"
            ]
        );
    }

    #[test]
    fn short_entries_take_the_first_urls_scheme_credentials_and_vhost() {
        let nodes =
            Nodes::parse("amqps://u:p%40ss@h1:5671/meter?heartbeat=10,h2:6000,h3").expect("valid");
        assert_eq!(
            nodes.from_offset(0).collect::<Vec<_>>(),
            [
                "amqps://u:p%40ss@h1:5671/meter?heartbeat=10",
                "amqps://u:p%40ss@h2:6000/meter?heartbeat=10",
                "amqps://u:p%40ss@h3/meter?heartbeat=10",
            ]
        );
        let bare = Nodes::parse("amqp://h1,h2:5673").expect("valid");
        assert_eq!(
            bare.from_offset(0).collect::<Vec<_>>(),
            ["amqp://h1", "amqp://h2:5673"]
        );
    }

    #[test]
    fn every_start_visits_every_node_once_going_round() {
        let nodes = Nodes::parse("amqp://a,b,c").expect("valid");
        assert_eq!(
            nodes.from_offset(1).collect::<Vec<_>>(),
            ["amqp://b", "amqp://c", "amqp://a"]
        );
        assert_eq!(
            nodes.from_offset(5).collect::<Vec<_>>(),
            ["amqp://c", "amqp://a", "amqp://b"]
        );
        // The random start: always each node once, and over many draws every node
        // comes first (replicas spread).
        let mut firsts = std::collections::HashSet::new();
        for _ in 0..200 {
            let mut order: Vec<&str> = nodes.in_turn().collect();
            firsts.insert(order[0].to_owned());
            order.sort_unstable();
            assert_eq!(order, ["amqp://a", "amqp://b", "amqp://c"]);
        }
        assert_eq!(firsts.len(), 3, "{firsts:?}");
    }

    #[test]
    fn bad_entries_are_named_by_position_without_the_password() {
        let cases = [
            ("", "AMQP_URL is empty"),
            (
                "amqp://u:hunter2@h1/%2f,",
                "AMQP_URL entry 2 is empty (a stray comma?)",
            ),
            (
                "amqp://u:hunter2@h1/%2f,,h2",
                "AMQP_URL entry 2 is empty (a stray comma?)",
            ),
            ("amqp://u:hunter2@h1/%2f,http://u:hunter2@h2/%2f", "entry 2"),
            (
                "amqp://u:hunter2@h1/%2f,amqp://u:hunter2@h2:99999/%2f",
                "entry 2",
            ),
            ("amqp://u:hunter2@h1/%2f,h2:port", "entry 2"),
            ("amqp://u:hunter2@h1/%2f,u:hunter2@h2", "entry 2"),
            ("h1:5672,amqp://u:hunter2@h2/%2f", "entry 1"),
            ("amqp:u:hunter2@h1", "entry 1"),
            (
                "amqp://u:hunter2@h1/a,amqp://u:hunter2@h2/b",
                "names vhost `b`, the first names `a`",
            ),
        ];
        for (list, expected) in cases {
            let err = Nodes::parse(list).expect_err(list).to_string();
            assert!(err.contains(expected), "{list:?}: {err}");
            assert!(
                !err.contains("hunter2"),
                "{list:?} shows the password: {err}"
            );
        }
    }

    #[test]
    fn debug_and_redact_hide_passwords() {
        let nodes = Nodes::parse("amqp://u:hunter2@h1/%2f,h2").expect("valid");
        let shown = format!("{nodes:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("u:***@h2/%2f"), "{shown}");
        assert_eq!(redact("amqp://u:p/w@rd@h:1/v"), "amqp://u:***@h:1/v");
        assert_eq!(redact("amqp://u@h/v"), "amqp://u@h/v");
        assert_eq!(redact("u:secret@h"), "***@h");
    }
}
