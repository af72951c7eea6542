//! The documentation reads end to end, and the repository stands alone:
//! - every relative link and `#anchor` in README.md and docs/ resolves (GitHub's anchor rule);
//! - no file of the repository names a relative path that leaves it or does not exist;
//! - every `gram-bench …` command line the documents show parses with the CLI, so a renamed flag
//!   fails here rather than in a user's shell.

use std::collections::{BTreeMap, HashSet};
use std::path::{Component, Path, PathBuf};

use clap::error::ErrorKind;
use clap::Parser;
use comrak::nodes::{AstNode, NodeValue};
use comrak::{parse_document, Anchorizer, Arena, Options};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every file under `root`, leaving out the folders of `root` itself named in `skip`.
fn walk(root: &Path, skip: &[&str]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if !p.is_dir() {
                out.push(p);
            } else if !(dir == root && skip.iter().any(|s| p.file_name().is_some_and(|n| n == *s))) {
                stack.push(p);
            }
        }
    }
    out
}

/// README.md and every markdown page under docs/.
fn documents() -> Vec<PathBuf> {
    let mut out = vec![repo().join("README.md")];
    out.extend(
        walk(&repo().join("docs"), &[])
            .into_iter()
            .filter(|p| p.extension().is_some_and(|x| x == "md")),
    );
    out.sort();
    out
}

/// What a markdown document holds that can rot: its links, its headings' anchors, its code.
#[derive(Default)]
struct Doc {
    /// (target, line)
    links: Vec<(String, usize)>,
    anchors: HashSet<String>,
    /// (code block text, first line)
    code: Vec<(String, usize)>,
}

fn text_of<'a>(node: &'a AstNode<'a>) -> String {
    let mut s = String::new();
    for d in node.descendants() {
        match &d.data.borrow().value {
            NodeValue::Text(t) => s.push_str(t),
            NodeValue::Code(c) => s.push_str(&c.literal),
            _ => {}
        }
    }
    s
}

fn parse(path: &Path) -> Doc {
    let text = std::fs::read_to_string(path).unwrap();
    let arena = Arena::new();
    let mut options = Options::default();
    options.extension.table = true;
    options.extension.strikethrough = true;
    options.extension.footnotes = true;
    let root = parse_document(&arena, &text, &options);
    let mut doc = Doc::default();
    let mut anchorizer = Anchorizer::new();
    for node in root.descendants() {
        let data = node.data.borrow();
        let line = data.sourcepos.start.line;
        match &data.value {
            NodeValue::Link(l) | NodeValue::Image(l) => doc.links.push((l.url.clone(), line)),
            NodeValue::Heading(_) => {
                doc.anchors.insert(anchorizer.anchorize(text_of(node)));
            }
            NodeValue::CodeBlock(c) => doc.code.push((c.literal.clone(), line)),
            _ => {}
        }
    }
    // Raw HTML anchors (`<a id="…">`) count as well.
    for part in text.split("id=\"").skip(1) {
        if let Some(end) = part.find('"') {
            doc.anchors.insert(part[..end].to_string());
        }
    }
    doc
}

/// `path` with `.` and `..` folded away, without touching the file system.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

fn inside_repo(path: &Path) -> bool {
    normalize(path).starts_with(repo())
}

fn rel(path: &Path) -> String {
    path.strip_prefix(repo()).unwrap_or(path).display().to_string()
}

#[test]
fn every_relative_link_and_anchor_in_the_documents_resolves() {
    let docs: BTreeMap<PathBuf, Doc> = documents().into_iter().map(|p| (p.clone(), parse(&p))).collect();
    let mut bad = Vec::new();
    let mut checked = 0;
    for (path, doc) in &docs {
        for (url, line) in &doc.links {
            if url.contains("://") || url.starts_with("mailto:") {
                continue;
            }
            checked += 1;
            let (file, anchor) = match url.split_once('#') {
                Some((f, a)) => (f, Some(a)),
                None => (url.as_str(), None),
            };
            let target = if file.is_empty() {
                path.clone()
            } else {
                normalize(&path.parent().unwrap().join(file))
            };
            let at = format!("{}:{line}: `{url}`", rel(path));
            if !inside_repo(&target) {
                bad.push(format!("{at} leaves the repository"));
            } else if !target.exists() {
                bad.push(format!("{at}: {} does not exist", rel(&target)));
            } else if let Some(a) = anchor {
                let anchors = match docs.get(&target) {
                    Some(d) => &d.anchors,
                    None if target.extension().is_some_and(|x| x == "md") => &parse(&target).anchors,
                    // A line anchor into code (`#L10`) is GitHub's to resolve.
                    None => continue,
                };
                if !anchors.contains(a) {
                    bad.push(format!("{at}: no heading with anchor `#{a}` in {}", rel(&target)));
                }
            }
        }
    }
    assert!(
        checked > 50,
        "only {checked} relative links found: is the parser reading the documents?"
    );
    assert!(bad.is_empty(), "{} dead links:\n{}", bad.len(), bad.join("\n"));
}

/// The files of the repository a reader may follow a path from: git's list (untracked build output
/// and caches are not the repository's), else a walk that leaves out the usual such folders. The
/// vendored crate is upstream's.
fn repository_files() -> Vec<PathBuf> {
    let listed = std::process::Command::new("git")
        .args(["ls-files", "-z"])
        .current_dir(repo())
        .output()
        .ok()
        .filter(|o| o.status.success() && !o.stdout.is_empty());
    if let Some(o) = listed {
        return o
            .stdout
            .split(|&b| b == 0)
            .filter(|p| !p.is_empty())
            .map(|p| repo().join(String::from_utf8_lossy(p).as_ref()))
            .filter(|p| !p.starts_with(repo().join("vendor")) && p.is_file())
            .collect();
    }
    let skip = [
        "target",
        ".git",
        "vendor",
        "results",
        "node_modules",
        "book",
        "nightly-out",
    ];
    walk(&repo(), &skip)
}

/// Relative paths a text names that start with `../` and name a file (an extension) or a chain of
/// folders; `../x` alone reads as a value (a hostile input in a test), not a citation.
fn parent_relative_paths(text: &str) -> Vec<(String, usize)> {
    let is_path_char = |c: char| c.is_ascii_alphanumeric() || "._/-@+".contains(c);
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let mut rest = line;
        let mut offset = 0;
        while let Some(i) = rest.find("../") {
            let start = offset + i;
            let before = line[..start].chars().last();
            let token: String = line[start..].chars().take_while(|&c| is_path_char(c)).collect();
            offset = start + token.len().max(3);
            rest = &line[offset..];
            // Part of a longer path (`$dir/../..`) or a word: not a path on its own.
            if before.is_some_and(|c| is_path_char(c) || c == '$' || c == ')') {
                continue;
            }
            let tail = token.trim_start_matches("../").trim_end_matches(['.', ')']);
            if tail.contains('/') || tail.contains('.') {
                out.push((token.trim_end_matches(['.', ')']).to_string(), n + 1));
            }
        }
    }
    out
}

#[test]
fn nothing_in_the_repository_names_a_path_outside_it() {
    let mut bad = Vec::new();
    let mut seen = 0;
    for file in repository_files() {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue; // binary
        };
        for (path, line) in parent_relative_paths(&text) {
            seen += 1;
            let target = normalize(&file.parent().unwrap().join(&path));
            if !inside_repo(&target) {
                bad.push(format!("{}:{line}: `{path}` leaves the repository", rel(&file)));
            } else if !target.exists() {
                bad.push(format!("{}:{line}: `{path}` does not exist", rel(&file)));
            }
        }
    }
    assert!(seen > 0, "no `../` path found anywhere: the scanner reads nothing");
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn the_path_scanner_finds_citations_and_leaves_values_alone() {
    // Spelled through `up` so that this file itself names no such path.
    let up = "../";
    let text = format!("see {up}notes/outside/gram.md §1\n`\"{up}x\"` and $(dirname $0)/{up}.. and ({up}docs/a.md)");
    let got: Vec<String> = parent_relative_paths(&text).into_iter().map(|(p, _)| p).collect();
    assert_eq!(got, [format!("{up}notes/outside/gram.md"), format!("{up}docs/a.md")]);
}

/// The command lines a code block shows: `gram-bench …` and `cargo run … -- …` (as `gram-bench`),
/// continuation lines joined, `# comments` dropped. Lines with placeholders (`[…]`, `<…>`, `|`,
/// `…`) are synopses, not commands.
fn command_lines(code: &str) -> Vec<String> {
    let joined = code.replace("\\\n", " ");
    let mut out = Vec::new();
    for line in joined.lines() {
        let line = line.trim().trim_start_matches("$ ");
        let line = match line.find(" #") {
            Some(i) => line[..i].trim_end(),
            None => line,
        };
        // A redirection or a second command ends the command's own arguments.
        let line = [" > ", " >> ", " 2>", " && ", " ; "]
            .iter()
            .filter_map(|op| line.find(op))
            .min()
            .map_or(line, |i| line[..i].trim_end());
        let line = line.strip_prefix("./").unwrap_or(line);
        let args = if let Some(rest) = line.strip_prefix("gram-bench ") {
            rest.to_string()
        } else if line.starts_with("cargo run") {
            match line.split_once(" -- ") {
                Some((_, rest)) => rest.to_string(),
                None => continue,
            }
        } else {
            continue;
        };
        if args.contains(['[', '<', '|', '…', '{']) || args.contains("...") {
            continue;
        }
        out.push(args);
    }
    out
}

#[test]
fn every_command_line_in_the_documents_parses() {
    let mut bad = Vec::new();
    let mut parsed = 0;
    for path in documents() {
        for (code, line) in parse(&path).code {
            for args in command_lines(&code) {
                let Some(words) = shlex::split(&args) else {
                    bad.push(format!("{}:{line}: `gram-bench {args}`: unbalanced quotes", rel(&path)));
                    continue;
                };
                let argv = std::iter::once("gram-bench".to_string()).chain(words);
                match gram_bench::cli::Cli::try_parse_from(argv) {
                    Ok(_) => parsed += 1,
                    Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => parsed += 1,
                    Err(e) => bad.push(format!(
                        "{}:{line}: `gram-bench {args}`: {}",
                        rel(&path),
                        e.render().to_string().lines().next().unwrap_or_default()
                    )),
                }
            }
        }
    }
    assert!(
        parsed > 10,
        "only {parsed} command lines parsed: is the extractor reading the documents?"
    );
    assert!(
        bad.is_empty(),
        "{} command lines do not parse:\n{}",
        bad.len(),
        bad.join("\n")
    );
}

#[test]
fn command_lines_come_from_code_with_synopses_and_comments_left_out() {
    let code = "gram-bench run suites/smoke.toml   # the main command\n\
                cargo run --release -- check suites/smoke.toml \\\n  --baseline smoke\n\
                gram-bench plan SUITE [--only F=V]\nls results\n\
                gram-bench completions bash > ~/.bash_completion && echo done\n";
    assert_eq!(
        command_lines(code),
        [
            "run suites/smoke.toml",
            "check suites/smoke.toml    --baseline smoke",
            "completions bash"
        ]
    );
}

#[test]
fn anchors_follow_githubs_rule() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.md");
    std::fs::write(&p, "# The `check` command: exit codes\n## ψ_φ and θ₀\n## Dup\n## Dup\n").unwrap();
    let a = parse(&p).anchors;
    for want in ["the-check-command-exit-codes", "ψ_φ-and-θ₀", "dup", "dup-1"] {
        assert!(a.contains(want), "{want} not in {a:?}");
    }
}
