//! The one parser of the Prometheus / OpenMetrics text format that tests use: a
//! scrape becomes a list of samples (name, labels, value), looked up by name and
//! labels. Comment lines (`# TYPE`, `# EOF`), timestamps and exemplars are skipped;
//! quoted label values may hold `,`, `}`, `=` and the escapes `\"`, `\\`, `\n`.

use std::collections::BTreeMap;

/// One sample line: `name{label="value",…} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A parsed `/metrics` body, with the raw text kept for assertion messages.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    pub text: String,
    pub samples: Vec<Sample>,
}

impl Metrics {
    pub fn parse(text: &str) -> Metrics {
        Metrics {
            text: text.to_owned(),
            samples: text.lines().filter_map(parse_line).collect(),
        }
    }

    /// The sum of the samples called `name` whose labels include every pair of
    /// `labels` (`&[]`: all series of the name); `0` while none was ever counted.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|s| s.name == name && has_labels(s, labels))
            .map(|s| s.value)
            .sum()
    }

    /// The sample called `name` whose label set is exactly `labels`, if scraped.
    pub fn exact(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| s.name == name && s.labels.len() == labels.len() && has_labels(s, labels))
            .map(|s| s.value)
    }
}

fn has_labels(sample: &Sample, labels: &[(&str, &str)]) -> bool {
    labels
        .iter()
        .all(|(k, v)| sample.labels.get(*k).is_some_and(|got| got == v))
}

fn parse_line(line: &str) -> Option<Sample> {
    let line = line.trim_start();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line.find(['{', ' ', '\t']).unwrap_or(line.len());
    let name = &line[..name_end];
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(after) = rest.strip_prefix('{') {
        rest = parse_labels(after, &mut labels)?;
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// Parses `k="v",k2="v2"}` and returns what follows the closing brace.
fn parse_labels<'a>(mut s: &'a str, out: &mut BTreeMap<String, String>) -> Option<&'a str> {
    loop {
        s = s.trim_start_matches([' ', ',']);
        if let Some(rest) = s.strip_prefix('}') {
            return Some(rest);
        }
        let (key, after) = s.split_once('=')?;
        let mut chars = after.strip_prefix('"')?.char_indices();
        let mut value = String::new();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (_, c) => value.push(c),
            }
        };
        out.insert(key.trim().to_owned(), value);
        s = &after[end + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP notifier_consumer_messages Messages settled.
# TYPE notifier_consumer_messages counter
notifier_consumer_messages_total{queue="notifier",outcome="acked"} 3
notifier_consumer_messages_total{queue="notifier",outcome="retried"} 1
notifier_consumer_messages_total{queue="notifier",outcome="acked_created"} 9
ingest_requests_total{endpoint="sms",status="202"} 6 # {trace_id="abc"} 1.0 1700000000
odd_total{text="a,b\"},c=d\\",k="x"} 2.5
plain_gauge 7
latency_bucket{le="+Inf"} 4
# EOF
"#;

    #[test]
    fn sums_the_series_that_carry_the_labels() {
        let m = Metrics::parse(TEXT);
        let name = "notifier_consumer_messages_total";
        assert_eq!(m.sum(name, &[("outcome", "acked")]), 3.0);
        assert_eq!(m.sum(name, &[("queue", "notifier")]), 13.0);
        assert_eq!(m.sum(name, &[]), 13.0);
        assert_eq!(m.sum(name, &[("outcome", "dead_lettered")]), 0.0);
        assert_eq!(m.sum("plain_gauge", &[]), 7.0);
        assert_eq!(m.sum("notifier_consumer_messages", &[]), 0.0, "whole names");
    }

    #[test]
    fn exact_wants_the_whole_label_set() {
        let m = Metrics::parse(TEXT);
        let labels = [("endpoint", "sms"), ("status", "202")];
        assert_eq!(m.exact("ingest_requests_total", &labels), Some(6.0));
        assert_eq!(
            m.exact("ingest_requests_total", &[("endpoint", "sms")]),
            None
        );
        assert_eq!(m.exact("plain_gauge", &[]), Some(7.0));
        assert_eq!(m.exact("latency_bucket", &[("le", "+Inf")]), Some(4.0));
    }

    #[test]
    fn quoted_values_may_hold_separators_and_escapes() {
        let m = Metrics::parse(TEXT);
        assert_eq!(
            m.exact("odd_total", &[("text", "a,b\"},c=d\\"), ("k", "x")]),
            Some(2.5)
        );
    }
}
