//! No link or path in the repository's docs leaves the repository.
//!
//! The docs are every Markdown file of the repository (README.md, docs/, deploy/, …)
//! and docs/openapi.yaml. What counts as leaving:
//! - a link (`[text](target)`, `[name]: target`) to a file or folder that is not in
//!   the repository — a relative path that climbs out of it (`../shared/SPEC.md`) or
//!   names nothing there — or to a heading (`#anchor`) the linked file does not have;
//! - a link to a loopback address or a `file:` URL: a page of somebody's machine;
//! - anywhere in the text, code blocks included, a path of the machine the docs were
//!   written on: `/work/…`, `/var/tmp/…`, `/home/…`, `/root/…`, `/Users/…`, or the
//!   sibling folder `../shared/`.
//!
//! Allowed: links to public pages (`https://…`, `http://…` on a public host), `mailto:`,
//! and paths every Debian machine or container has (`/etc/ssl/certs`, `/proc/…`,
//! `/usr/lib/kannel/…`, scratch paths under `/tmp`) — those describe the system, not
//! a machine.

use std::path::{Component, Path, PathBuf};

use super::markdown::{self, anchors, link_targets, prose_lines};

/// Path fragments that name one machine's folders, never the repository's.
const MACHINE_PATHS: [&str; 6] = [
    "/work/",
    "/var/tmp/",
    "/home/",
    "/root/",
    "/Users/",
    "../shared/",
];

/// Whether `text` holds `fragment` as the start of a path (not inside a longer word:
/// `network/work/` is not `/work/`).
fn holds_path(text: &str, fragment: &str) -> bool {
    text.match_indices(fragment).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        fragment.starts_with('.')
            || before.is_none_or(|c| !(c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | '/')))
    })
}

/// What is wrong with one document's links and paths; `file` relative to `root`.
pub fn problems(root: &Path, file: &Path, text: &str) -> Vec<String> {
    let name = file
        .strip_prefix(root)
        .unwrap_or(file)
        .display()
        .to_string();
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        for fragment in MACHINE_PATHS {
            if holds_path(line, fragment) {
                out.push(format!(
                    "{name}:{}: a path of a machine ({fragment}): {line}",
                    n + 1
                ));
            }
        }
    }
    if !name.ends_with(".md") {
        return out;
    }
    for (n, line) in prose_lines(text) {
        for target in link_targets(line) {
            if let Some(why) = leaves(root, file, text, &target) {
                out.push(format!("{name}:{n}: link `{target}`: {why}"));
            }
        }
    }
    out
}

/// Why a link target leaves the repository, if it does.
fn leaves(root: &Path, file: &Path, text: &str, target: &str) -> Option<String> {
    let lower = target.to_lowercase();
    if let Some(rest) = lower
        .strip_prefix("https://")
        .or_else(|| lower.strip_prefix("http://"))
    {
        let host = rest.split(['/', ':', '?', '#']).next().unwrap_or("");
        let local =
            host == "localhost" || host.starts_with("127.") || host == "0.0.0.0" || host == "[::1]";
        return local.then(|| "a loopback address is somebody's machine, not a page".to_owned());
    }
    if lower.starts_with("mailto:") {
        return None;
    }
    if lower.contains(':') && !lower.starts_with('#') {
        return Some("not a link into the repository nor to a public page".to_owned());
    }
    let (path, anchor) = match target.split_once('#') {
        Some((p, a)) => (p, Some(a)),
        None => (target, None),
    };
    let (resolved, linked_text) = if path.is_empty() {
        (file.to_path_buf(), Some(text.to_owned()))
    } else {
        if path.starts_with('/') {
            return Some("an absolute path".to_owned());
        }
        let Some(resolved) = inside(root, file.parent().unwrap_or(root), path) else {
            return Some("climbs out of the repository".to_owned());
        };
        if !resolved.exists() {
            return Some("no such file in the repository".to_owned());
        }
        let linked_text = (resolved.extension().is_some_and(|e| e == "md"))
            .then(|| std::fs::read_to_string(&resolved).unwrap_or_default());
        (resolved, linked_text)
    };
    match (anchor, linked_text) {
        (Some(a), Some(doc)) if !a.is_empty() && !anchors(&doc).iter().any(|h| h == a) => {
            Some(format!(
                "{} has no heading #{a}",
                resolved.strip_prefix(root).unwrap_or(&resolved).display()
            ))
        }
        _ => None,
    }
}

/// `relative` resolved from `dir`, if it stays inside `root`.
fn inside(root: &Path, dir: &Path, relative: &str) -> Option<PathBuf> {
    let mut path = dir.to_path_buf();
    for part in Path::new(relative).components() {
        match part {
            Component::ParentDir => {
                if !path.pop() {
                    return None;
                }
            }
            Component::Normal(p) => path.push(p),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    path.starts_with(root).then_some(path)
}

#[test]
fn no_link_or_path_in_the_docs_leaves_the_repository() {
    let root = markdown::root();
    let mut docs = markdown::files(&root, &[".md"]);
    docs.push(root.join("docs/openapi.yaml"));
    assert!(docs.len() > 10, "the docs were not found: {docs:?}");
    let mut found = Vec::new();
    for file in &docs {
        let text = std::fs::read_to_string(file).expect("a doc");
        found.extend(problems(&root, file, &text));
    }
    assert!(
        found.is_empty(),
        "links or paths that leave the repository (see e2e/tests/docs/links.rs for what counts):\n{}",
        found.join("\n")
    );
}

/// The check itself fails on each kind of link that leaves, and passes the ones
/// that stay or go to public pages.
#[test]
fn the_link_check_catches_each_way_out() {
    let dir = tempfile::tempdir().expect("a scratch repository");
    let root = dir.path().canonicalize().expect("its path");
    std::fs::create_dir_all(root.join("docs")).expect("docs/");
    std::fs::write(root.join("docs/other.md"), "# Other page\n## Its part\n").expect("write");
    let file = root.join("docs/page.md");
    let bad = [
        "[spec](../../elsewhere/SPEC.md)",
        "[spec](../missing.md)",
        "[part](other.md#no-such-part)",
        "[here](#nowhere)",
        "[local](http://127.0.0.1:8080/form)",
        "[file](file:///etc/passwd)",
        "[abs](/etc/hosts)",
        "the config in `/work/shared/FACTS.md`",
        "```\ncp /var/tmp/target/x .\n```",
        "as `../shared/SPEC.md` says",
    ];
    for line in bad {
        let text = format!("# Page\n{line}\n");
        assert_eq!(
            problems(&root, &file, &text).len(),
            1,
            "not caught, or caught twice: {line}"
        );
    }
    let good = "# Page\n[other](other.md), [part](other.md#its-part), [up](#page), \
                [docs](https://docs.rs/axum), [mail](mailto:ops@example.ru), `/etc/ssl/certs`, \
                `/proc/<pid>/status`, a network/work/ folder\n";
    assert_eq!(problems(&root, &file, good), Vec::<String>::new());
}
