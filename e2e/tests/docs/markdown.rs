//! Just enough Markdown for the docs tests: the repository's files, tables, code
//! spans, headings and their anchors, links — read the way GitHub renders them.

use std::path::{Path, PathBuf};

/// The repository root.
pub fn root() -> PathBuf {
    e2e::repo_root()
        .canonicalize()
        .expect("the repository root exists")
}

/// A file of the repository, as text.
pub fn read(relative: &str) -> String {
    let path = root().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every file under `dir` whose name ends with one of `suffixes`, skipping hidden
/// directories (`.git`, a local run's `.local`) and build output (`target`).
pub fn files(dir: &Path, suffixes: &[&str]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if path.is_dir() {
                if !name.starts_with('.') && name != "target" {
                    stack.push(path);
                }
            } else if suffixes.iter().any(|s| name.ends_with(s)) {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// Rust source without its unit tests (`#[cfg(test)] mod tests`, by convention last).
pub fn without_tests(source: &str) -> &str {
    source
        .match_indices("#[cfg(test)]")
        .find(|(at, m)| source[at + m.len()..].trim_start().starts_with("mod tests"))
        .map_or(source, |(at, _)| &source[..at])
}

/// The lines of `doc` outside fenced code blocks, with their 1-based numbers.
pub fn prose_lines(doc: &str) -> Vec<(usize, &str)> {
    let mut fenced = false;
    let mut out = Vec::new();
    for (i, line) in doc.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if !fenced {
            out.push((i + 1, line));
        }
    }
    out
}

/// The cells of a table row (`| a | b |`), split on the `|`s outside code spans.
pub fn cells(row: &str) -> Vec<String> {
    let row = row.trim();
    let row = row.strip_prefix('|').unwrap_or(row);
    let row = row.strip_suffix('|').unwrap_or(row);
    let mut out = vec![String::new()];
    let mut in_code = false;
    for c in row.chars() {
        match c {
            '`' => {
                in_code = !in_code;
                out.last_mut().expect("a cell").push(c);
            }
            '|' if !in_code => out.push(String::new()),
            _ => out.last_mut().expect("a cell").push(c),
        }
    }
    out.into_iter().map(|c| c.trim().to_owned()).collect()
}

/// The body rows of the first table after the line `marker` (its header and the
/// `|---|` line left out), each as its cells.
pub fn table_after(doc: &str, marker: &str) -> Vec<Vec<String>> {
    let mut lines = doc.lines().skip_while(|l| l.trim() != marker);
    assert!(
        lines.next().is_some(),
        "no line `{marker}` (the marker of a checked table)"
    );
    lines
        .skip_while(|l| !l.trim_start().starts_with('|'))
        .take_while(|l| l.trim_start().starts_with('|'))
        .skip(2)
        .map(cells)
        .collect()
}

/// The contents of the code spans of `text`, in order.
pub fn code_spans(text: &str) -> Vec<String> {
    text.split('`')
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, s)| s.to_owned())
        .collect()
}

/// The anchors GitHub gives the headings of `doc`: lower case, punctuation dropped
/// (letters and digits of any script, `-` and `_` kept), spaces as `-`, and `-1`,
/// `-2`, … for a heading repeated.
pub fn anchors(doc: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut seen: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for (_, line) in prose_lines(doc) {
        let Some(title) = line
            .strip_prefix('#')
            .map(|t| t.trim_start_matches('#'))
            .filter(|t| t.starts_with(' '))
        else {
            continue;
        };
        let slug: String = title
            .trim()
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        let n = seen.entry(slug.clone()).or_insert(0);
        out.push(if *n == 0 { slug } else { format!("{slug}-{n}") });
        *n += 1;
    }
    out
}

/// The link targets of one line: inline links `[text](target)` and images, and a
/// reference definition `[name]: target`.
pub fn link_targets(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = line;
    while let Some(at) = rest.find("](") {
        let after = &rest[at + 2..];
        let Some(end) = after.find(')') else { break };
        let target = after[..end].split_whitespace().next().unwrap_or("");
        // Not a link: `](` inside a code span (an odd count of backticks before it).
        let before = &line[..line.len() - rest.len() + at];
        if before.matches('`').count().is_multiple_of(2) && !target.is_empty() {
            out.push(target.trim_matches(['<', '>']).to_owned());
        }
        rest = &after[end..];
    }
    let trimmed = line.trim_start();
    if let Some(def) = trimmed.strip_prefix('[')
        && let Some((_, target)) = def.split_once("]:")
        && !def.starts_with('^')
        && let Some(t) = target.split_whitespace().next()
    {
        out.push(t.to_owned());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anchors_follow_github() {
        let doc = "# Design notes\n## The resident web form (SPEC §4.9)\n```\n# not a heading\n```\n## `HTTP_ADDR` and more\n## Runs\n## Runs\n";
        assert_eq!(
            anchors(doc),
            [
                "design-notes",
                "the-resident-web-form-spec-49",
                "http_addr-and-more",
                "runs",
                "runs-1"
            ]
        );
    }

    #[test]
    fn links_and_cells() {
        assert_eq!(
            link_targets("see [a](docs/a.md#x) and `[b](not/a/link)` and ![c](<p.png> \"t\")"),
            ["docs/a.md#x", "p.png"]
        );
        assert_eq!(link_targets("[ref]: ../out.md"), ["../out.md"]);
        assert_eq!(cells("| `a|b` | c |"), ["`a|b`", "c"]);
        assert_eq!(code_spans("x `A`, `B` y"), ["A", "B"]);
    }
}
