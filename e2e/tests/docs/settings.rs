//! The README's configuration table against what each binary's `--help` lists: every
//! setting in both, the services column right, the same defaults. The few settings
//! read from the environment outside the command line (logging, tracing, the CA
//! bundle) are listed here with the module that reads them, and a source scan finds
//! any new `std::env::var("…")` the table does not have.

use std::collections::{BTreeMap, BTreeSet};

use super::markdown::{self, cells, code_spans};

/// The binaries, one per service.
pub const BINARIES: [&str; 5] = [
    "ingest",
    "validator",
    "notifier",
    "billing-export",
    "console",
];

/// Settings every binary reads from the environment itself, not through its command
/// line, and the file that reads each (as `"NAME"`, or for `RUST_LOG` tracing's own
/// `EnvFilter::try_from_default_env`).
const ENVIRONMENT_ONLY: [(&str, &str, &str); 7] = [
    (
        "RUST_LOG",
        "shared/src/telemetry.rs",
        "EnvFilter::try_from_default_env",
    ),
    (
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "shared/src/telemetry.rs",
        "\"OTEL_EXPORTER_OTLP_ENDPOINT\"",
    ),
    (
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "shared/src/telemetry.rs",
        "\"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT\"",
    ),
    (
        "OTEL_SERVICE_NAME",
        "shared/src/telemetry.rs",
        "\"OTEL_SERVICE_NAME\"",
    ),
    (
        "OTEL_SDK_DISABLED",
        "shared/src/telemetry.rs",
        "\"OTEL_SDK_DISABLED\"",
    ),
    ("SSL_CERT_FILE", "shared/src/tls.rs", "\"SSL_CERT_FILE\""),
    ("SSL_CERT_DIR", "shared/src/tls.rs", "\"SSL_CERT_DIR\""),
];

/// Test hooks read from the environment only in builds with the `crash-hooks`
/// feature, which release builds leave out: not settings.
const TEST_HOOKS: [&str; 2] = ["VALIDATOR_CRASH_AFTER_COMMIT", "BILLING_EXPORT_CRASH_AT"];

/// One setting of one binary: its default, if it has one.
type Settings = BTreeMap<String, Option<String>>;

/// The README's table, per binary.
pub fn readme_settings(readme: &str) -> Result<BTreeMap<&'static str, Settings>, String> {
    let table: Vec<&str> = readme
        .lines()
        .skip_while(|l| l.trim() != "## Configuration")
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2)
        .collect();
    if table.is_empty() {
        return Err("README.md: no table under `## Configuration`".into());
    }
    let mut out: BTreeMap<&'static str, Settings> =
        BINARIES.iter().map(|b| (*b, Settings::new())).collect();
    for row in table {
        let [names, services, default, ..] = &cells(row)[..] else {
            return Err(format!("README.md: a row without four cells: {row}"));
        };
        let names: Vec<String> = code_spans(names);
        let services: Vec<&'static str> = if services == "all" {
            BINARIES.to_vec()
        } else {
            services
                .split(',')
                .map(|s| {
                    BINARIES
                        .iter()
                        .find(|b| **b == s.trim())
                        .copied()
                        .ok_or_else(|| format!("README.md: `{}` is no service ({row})", s.trim()))
                })
                .collect::<Result<_, _>>()?
        };
        for binary in services {
            for (i, name) in names.iter().enumerate() {
                let value = default_of(default, binary, i, names.len());
                if out
                    .get_mut(binary)
                    .expect("a binary")
                    .insert(name.clone(), value)
                    .is_some()
                {
                    return Err(format!("README.md: `{name}` is listed twice for {binary}"));
                }
            }
        }
    }
    Ok(out)
}

/// The README's default of a row's `i`-th of `count` settings for `binary`: per
/// service (`ingest \`…\`, validator \`…\``), one value per setting in order, or none
/// (`unset`, `required`).
fn default_of(cell: &str, binary: &str, i: usize, count: usize) -> Option<String> {
    let per_service: Vec<(String, String)> = cell
        .split(',')
        .filter_map(|part| {
            let (service, value) = part.trim().split_once(' ')?;
            let value = value.trim().strip_prefix('`')?.strip_suffix('`')?;
            BINARIES
                .contains(&service)
                .then(|| (service.to_owned(), value.to_owned()))
        })
        .collect();
    if !per_service.is_empty() {
        return per_service
            .into_iter()
            .find(|(s, _)| s == binary)
            .map(|(_, v)| v);
    }
    let values = code_spans(cell);
    (values.len() == count).then(|| values[i].clone())
}

/// What `binary --help` lists: each `[env: NAME…]` with the `[default: …]` of its
/// option, if any.
pub fn help_settings(help: &str) -> Settings {
    let mut out = Settings::new();
    let mut current: Option<String> = None;
    for line in help.lines() {
        let line = line.trim();
        if line.starts_with('-') {
            current = None;
        } else if let Some(rest) = line.strip_prefix("[env: ") {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            out.insert(name.clone(), None);
            current = Some(name);
        } else if let Some(rest) = line.strip_prefix("[default: ")
            && let Some(name) = &current
        {
            let value = rest.strip_suffix(']').unwrap_or(rest);
            let value = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(value);
            out.insert(name.clone(), Some(value.to_owned()));
        }
    }
    out
}

fn help_of(binary: &str) -> String {
    let out = std::process::Command::new(e2e::system::bin(binary))
        .arg("--help")
        // A variable set here would show as the option's value, not change the list.
        .env_clear()
        .output()
        .unwrap_or_else(|e| panic!("{binary} --help (cargo build --workspace --bins): {e}"));
    assert!(
        out.status.success(),
        "{binary} --help failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("help is UTF-8")
}

/// Differences between the README's table and the binaries' help texts.
pub fn differences(
    readme: &BTreeMap<&'static str, Settings>,
    helps: &BTreeMap<&'static str, Settings>,
) -> Vec<String> {
    let env_only: BTreeSet<&str> = ENVIRONMENT_ONLY.iter().map(|(n, _, _)| *n).collect();
    let mut out = Vec::new();
    for (binary, help) in helps {
        let documented = &readme[binary];
        for (name, default) in help {
            match documented.get(name) {
                None => out.push(format!(
                    "`{name}`: `{binary} --help` lists it, the README's table does not for {binary}"
                )),
                Some(d) if d != default => out.push(format!(
                    "`{name}` of {binary}: the README's default is {}, `--help` says {}",
                    shown(d),
                    shown(default)
                )),
                Some(_) => {}
            }
        }
        for name in documented.keys() {
            if !help.contains_key(name) && !env_only.contains(name.as_str()) {
                out.push(format!("`{name}`: the README's table gives it to {binary}, whose `--help` does not list it"));
            }
        }
        for name in &env_only {
            if !documented.contains_key(*name) {
                out.push(format!(
                    "`{name}`: read by every binary, not in the README's table for {binary}"
                ));
            }
        }
    }
    out
}

fn shown(default: &Option<String>) -> String {
    default.as_ref().map_or("none".into(), |d| format!("`{d}`"))
}

/// Names passed to `std::env::var`/`var_os` in the services' and `shared`'s code
/// (tests and the test harness left out).
fn variables_read_in_code() -> BTreeSet<String> {
    let root = markdown::root();
    let mut out = BTreeSet::new();
    let dirs = BINARIES
        .iter()
        .map(|b| format!("{b}/src"))
        .chain(["shared/src".to_owned()]);
    for dir in dirs {
        for file in markdown::files(&root.join(dir), &[".rs"]) {
            let path = file.display().to_string();
            if path.contains("/testing") || path.ends_with("/tests.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&file).expect("source");
            let code = markdown::without_tests(&text);
            for call in ["env::var(\"", "env::var_os(\""] {
                for (at, _) in code.match_indices(call) {
                    let name: String = code[at + call.len()..]
                        .chars()
                        .take_while(|c| *c != '"')
                        .collect();
                    out.insert(name);
                }
            }
        }
    }
    out
}

#[test]
fn readme_configuration_table_matches_every_binary_help() {
    let readme = readme_settings(&markdown::read("README.md")).unwrap_or_else(|e| panic!("{e}"));
    let helps: BTreeMap<&'static str, Settings> = BINARIES
        .iter()
        .map(|b| (*b, help_settings(&help_of(b))))
        .collect();
    for (binary, help) in &helps {
        assert!(
            help.len() >= 8,
            "{binary} --help lists only {help:?}: not clap's help format?"
        );
    }
    let mut found = differences(&readme, &helps);

    for (name, file, evidence) in ENVIRONMENT_ONLY {
        if !markdown::read(file).contains(evidence) {
            found.push(format!("`{name}` is no longer read in {file} (no `{evidence}`): update ENVIRONMENT_ONLY and the README"));
        }
    }
    let known: BTreeSet<String> = helps.values().flat_map(|h| h.keys().cloned()).collect();
    for name in variables_read_in_code() {
        let documented =
            known.contains(&name) || ENVIRONMENT_ONLY.iter().any(|(n, _, _)| *n == name);
        if !documented && !TEST_HOOKS.contains(&name.as_str()) {
            found.push(format!("`{name}` is read with std::env::var but is neither an option nor in the README's table"));
        }
    }
    assert!(
        found.is_empty(),
        "README.md's configuration table is out of date:\n{}",
        found.join("\n")
    );
}

/// The comparison fails on each kind of drift.
#[test]
fn the_settings_check_catches_each_drift() {
    let readme = "## Configuration\n\n| variable | service | default | meaning |\n|---|---|---|---|\n\
        | `HTTP_ADDR` | all | ingest `0.0.0.0:8080`, validator `:8081` | |\n\
        | `A_B`, `C_D` | ingest, console | `1`, `2` | |\n\
        | `ONLY_DOCS` | validator | unset | |\n";
    let readme = readme_settings(readme).expect("parses");
    assert_eq!(
        readme["ingest"]["HTTP_ADDR"].as_deref(),
        Some("0.0.0.0:8080")
    );
    assert_eq!(readme["console"]["C_D"].as_deref(), Some("2"));
    let help = |pairs: &[(&str, Option<&str>)]| -> Settings {
        pairs
            .iter()
            .map(|(n, d)| (n.to_string(), d.map(str::to_owned)))
            .collect()
    };
    let helps: BTreeMap<&'static str, Settings> = [
        (
            "ingest",
            help(&[
                ("HTTP_ADDR", Some("0.0.0.0:8080")),
                ("A_B", Some("1")),
                ("C_D", Some("3")),
            ]),
        ),
        (
            "validator",
            help(&[
                ("HTTP_ADDR", Some("0.0.0.0:8081")),
                ("NOT_DOCUMENTED", None),
            ]),
        ),
    ]
    .into_iter()
    .collect();
    let found = differences(&readme, &helps).join("\n");
    for expected in [
        "`C_D` of ingest: the README's default is `2`, `--help` says `3`",
        "`HTTP_ADDR` of validator: the README's default is `:8081`",
        "`NOT_DOCUMENTED`: `validator --help` lists it",
        "`ONLY_DOCS`: the README's table gives it to validator",
        "`RUST_LOG`: read by every binary, not in the README's table for ingest",
    ] {
        assert!(
            found.contains(expected),
            "not caught: {expected}\nin:\n{found}"
        );
    }

    let parsed = help_settings(
        "Options:\n      --email-from <EMAIL_FROM>\n          The sender\n          \n          [env: EMAIL_FROM=]\n          [default: \"A <b@c>\"]\n\n      --token <T>\n          [env: SOME_TOKEN]\n\n  -h, --help\n",
    );
    assert_eq!(parsed["EMAIL_FROM"].as_deref(), Some("A <b@c>"));
    assert_eq!(parsed["SOME_TOKEN"], None);
}
