//! The README is the map and `docs/` holds the guides it points to: every
//! relative link in them must lead to a file that exists and, with a
//! `#fragment`, to a heading of that file (GitHub's anchors). Needs no
//! broker or database.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The repository's root (this crate lives in `tests/`).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The Markdown files checked: the README, every guide, and the
/// Kubernetes README.
fn documents() -> Vec<PathBuf> {
    let root = root();
    let mut files = vec![root.join("README.md"), root.join("infra/k8s/README.md")];
    let docs = std::fs::read_dir(root.join("docs")).expect("docs/ exists");
    for entry in docs {
        let path = entry.expect("a docs/ entry").path();
        if path.extension().is_some_and(|e| e == "md") {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// The targets of the inline links and images in `text`, outside code
/// blocks and code spans.
fn links(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        // Code spans may hold `](` that is no link.
        let prose: String = line.split('`').step_by(2).collect::<Vec<_>>().join(" ");
        let mut rest = prose.as_str();
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let end = after.find(')').unwrap_or(after.len());
            found.push(after[..end].trim().to_owned());
            rest = &after[end..];
        }
    }
    found
}

/// GitHub's anchor for a heading: lowercase, spaces to `-`, punctuation
/// other than `-` and `_` dropped.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The anchors of the headings of a Markdown text.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut fenced = false;
    let mut anchors = BTreeSet::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if !fenced && line.starts_with('#') {
            anchors.insert(slug(line.trim_start_matches('#')));
        }
    }
    anchors
}

/// What is wrong with `link` in `file`, if anything.
fn broken(file: &Path, link: &str) -> Option<String> {
    if link.contains("://") || link.starts_with("mailto:") {
        return None;
    }
    let (path, fragment) = match link.split_once('#') {
        Some((path, fragment)) => (path, Some(fragment)),
        None => (link, None),
    };
    let target = if path.is_empty() {
        file.to_path_buf()
    } else {
        file.parent().expect("a file's folder").join(path)
    };
    if !target.exists() {
        return Some(format!("{link}: no such file {}", target.display()));
    }
    let fragment = fragment?;
    let text = std::fs::read_to_string(&target).ok()?;
    (!anchors(&text).contains(fragment)).then(|| format!("{link}: no heading #{fragment}"))
}

#[test]
fn every_relative_link_in_the_readme_and_the_guides_resolves() {
    let mut problems = Vec::new();
    let mut checked = 0;
    for file in documents() {
        let text = std::fs::read_to_string(&file).expect("a readable document");
        for link in links(&text) {
            checked += 1;
            if let Some(problem) = broken(&file, &link) {
                problems.push(format!("{}: {problem}", file.display()));
            }
        }
    }
    assert!(
        checked > 50,
        "only {checked} links found: is the parser broken?"
    );
    assert!(
        problems.is_empty(),
        "broken links:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_checker_sees_a_broken_file_and_a_broken_anchor() {
    let readme = root().join("README.md");
    assert!(broken(&readme, "docs/no-such-guide.md").is_some());
    assert!(broken(&readme, "#no-such-heading").is_some());
    assert!(broken(&readme, "docs/ordering.md#no-such-heading").is_some());
    assert_eq!(broken(&readme, "docs/ordering.md"), None);
    assert_eq!(broken(&readme, "#security"), None);
    assert_eq!(
        slug(" Running on a RabbitMQ cluster"),
        "running-on-a-rabbitmq-cluster"
    );
    assert_eq!(
        slug(" The AMQP wire contract (publishing events without HTTP)"),
        "the-amqp-wire-contract-publishing-events-without-http"
    );
}
