//! docs/openapi.yaml: a valid OpenAPI document (PyPI `openapi-spec-validator`, which
//! scripts/test.sh installs), describing exactly the routes the services serve, each
//! under its service's tag.
//!
//! The routes are read from the source: every `.route("<path>", get(…).post(…))` of
//! the five services' `src/` and of `shared/src/` (the operational endpoints every
//! service serves, tag `ops`). A new endpoint therefore fails this test until
//! openapi.yaml describes it.

use std::collections::BTreeSet;
use std::path::Path;

use super::markdown;
use super::settings::BINARIES;

/// One route: the service that serves it (`all` for `shared`'s), method, path.
pub type Route = (String, String, String);

/// The HTTP methods axum's routing functions are named after.
const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

/// The routes declared in one file's code (its `mod tests` left out).
pub fn routes_in(service: &str, source: &str) -> Vec<Route> {
    let code = markdown::without_tests(source);
    let mut out = Vec::new();
    for (at, _) in code.match_indices(".route(") {
        let rest = &code[at + ".route(".len()..];
        let Some(path) = rest
            .trim_start()
            .strip_prefix('"')
            .and_then(|r| r.split_once('"'))
            .map(|(p, _)| p)
        else {
            continue;
        };
        // The call's arguments: up to the parenthesis that closes `.route(`.
        let mut depth = 1;
        let args: String = rest
            .chars()
            .take_while(|c| {
                match c {
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    _ => {}
                }
                depth > 0
            })
            .collect();
        for method in METHODS {
            let call = format!("{method}(");
            let named = args.match_indices(&call).any(|(i, _)| {
                args[..i]
                    .chars()
                    .next_back()
                    .is_none_or(|c| !(c.is_alphanumeric() || c == '_'))
            });
            if named {
                out.push((service.to_owned(), method.to_uppercase(), path.to_owned()));
            }
        }
    }
    out
}

/// Every route the services serve.
pub fn routes_in_code() -> BTreeSet<Route> {
    let root = markdown::root();
    let crates = BINARIES
        .iter()
        .map(|b| (*b, format!("{b}/src")))
        .chain([("all", "shared/src".to_owned())]);
    let mut out = BTreeSet::new();
    for (service, dir) in crates {
        for file in markdown::files(&root.join(dir), &[".rs"]) {
            let path = file.display().to_string();
            if path.contains("/testing") || path.ends_with("/tests.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&file).expect("source");
            out.extend(routes_in(service, &text));
        }
    }
    out
}

/// docs/openapi.yaml as JSON (PyYAML reads it: no YAML parser among our crates).
pub fn load(path: &Path) -> serde_json::Value {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; json.dump(yaml.safe_load(open(sys.argv[1], encoding='utf-8')), sys.stdout)",
        ])
        .arg(path)
        .output()
        .expect("python3 (scripts/test.sh installs it)");
    assert!(
        out.status.success(),
        "{} does not load as YAML (pip install pyyaml): {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON from python3")
}

/// The validator's complaint about the document at `path`, if any.
pub fn invalid(path: &Path) -> Option<String> {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys\n\
             from openapi_spec_validator import validate\n\
             from openapi_spec_validator.readers import read_from_filename\n\
             validate(read_from_filename(sys.argv[1])[0])",
        ])
        .arg(path)
        .output()
        .expect("python3 (scripts/test.sh installs it)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("No module named 'openapi_spec_validator'"),
        "pip install openapi-spec-validator (scripts/test.sh installs it)"
    );
    (!out.status.success()).then(|| stderr.into_owned())
}

/// The tags that may describe a route of `service`.
fn tags_of(service: &str) -> &'static [&'static str] {
    match service {
        "all" => &["ops"],
        "console" => &["console", "console-pages"],
        "ingest" => &["ingest"],
        "validator" => &["validator"],
        "notifier" => &["notifier"],
        "billing-export" => &["billing-export"],
        _ => &[],
    }
}

/// Each operation of the document: method, path and its tags.
fn operations(doc: &serde_json::Value) -> Vec<(String, String, Vec<String>)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("a path item") {
            if !METHODS.contains(&method.as_str()) {
                continue;
            }
            let tags = op["tags"]
                .as_array()
                .map(|t| {
                    t.iter()
                        .filter_map(|t| t.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            out.push((method.to_uppercase(), path.clone(), tags));
        }
    }
    out
}

#[test]
fn openapi_is_a_valid_document() {
    let spec = markdown::root().join("docs/openapi.yaml");
    if let Some(why) = invalid(&spec) {
        panic!("docs/openapi.yaml is not a valid OpenAPI document:\n{why}");
    }
    // The validator does refuse a broken document (so the check above can fail).
    let dir = tempfile::tempdir().expect("scratch");
    let broken = dir.path().join("broken.yaml");
    std::fs::write(
        &broken,
        "openapi: 3.0.3\npaths:\n  /x:\n    get:\n      responses: {}\n",
    )
    .expect("write");
    assert!(
        invalid(&broken).is_some(),
        "openapi-spec-validator took a document without `info`"
    );
}

#[test]
fn openapi_describes_every_route_and_nothing_else() {
    let doc = load(&markdown::root().join("docs/openapi.yaml"));
    let code = routes_in_code();
    assert!(
        code.len() >= 20,
        "too few routes found in the code: {code:?}"
    );
    let documented = operations(&doc);
    let mut found = Vec::new();
    for (service, method, path) in &code {
        match documented.iter().find(|(m, p, _)| m == method && p == path) {
            None => found.push(format!(
                "{method} {path} ({service}) is not in docs/openapi.yaml"
            )),
            Some((_, _, tags)) if !tags.iter().any(|t| tags_of(service).contains(&t.as_str())) => {
                found.push(format!(
                    "{method} {path}: tagged {tags:?}, but {service} serves it (tag one of {:?})",
                    tags_of(service)
                ))
            }
            Some(_) => {}
        }
    }
    for (method, path, _) in &documented {
        if !code.iter().any(|(_, m, p)| m == method && p == path) {
            found.push(format!(
                "{method} {path} is in docs/openapi.yaml, but no service serves it"
            ));
        }
    }
    assert!(
        found.is_empty(),
        "docs/openapi.yaml and the routes disagree:\n{}",
        found.join("\n")
    );
}

/// The route scan finds each method of a route, and only routing calls.
#[test]
fn the_route_scan_reads_axum_routers() {
    let source = r#"
        Router::new()
            .route("/form", get(show_form).post(post_form))
            .route("/v1/dlr/{id}", axum::routing::delete(remove))
            .route_layer(x)
            .route("/x", get(|| async { forget(1) }))
        #[cfg(test)]
        mod tests { fn t() { Router::new().route("/test-only", get(h)); } }
    "#;
    let routes = routes_in("ingest", source);
    let want: Vec<Route> = [
        ("GET", "/form"),
        ("POST", "/form"),
        ("DELETE", "/v1/dlr/{id}"),
        ("GET", "/x"),
    ]
    .into_iter()
    .map(|(m, p)| ("ingest".to_owned(), m.to_owned(), p.to_owned()))
    .collect();
    assert_eq!(routes, want);
}
