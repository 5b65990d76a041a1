//! The import rules of ARCHITECTURE.md, checked on `src/` as text: each top-level module
//! imports only the modules its row of [`ALLOWED`] names, only the HTTP layer imports the HTTP
//! framework, and no two modules (top-level, or files of one folder) import each other in a
//! cycle.
//!
//! Imports are `crate::…`, `super::…` and `self::…` paths (in `use` trees and in code), with
//! comments and string literals skipped. A path is resolved to the deepest file module it
//! names; a file using its own folder's `mod.rs` (or the folder's root file), or the other
//! way round, is the module system itself and is not an edge.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::support::repo;

/// The floors: each top-level module of `src/` and the top-level modules it may import.
/// Stated in ARCHITECTURE.md ("Import rules"); a new module gets a row here.
const ALLOWED: &[(&str, &[&str])] = &[
    // Ground: leaf helpers, importing nothing of ours but each other.
    ("time", &[]),
    ("private_files", &[]),
    ("config", &[]),
    ("signing", &["private_files"]),
    // The stages of the pipeline.
    ("auth", &["config", "signing", "private_files"]),
    ("tools", &["auth", "config", "signing"]),
    ("policy", &["auth", "tools", "time"]),
    (
        "audit",
        &[
            "auth",
            "policy",
            "config",
            "signing",
            "private_files",
            "time",
        ],
    ),
    // The pipeline over the stages, and what swaps its parts while it runs.
    ("app", &["audit", "auth", "config", "policy", "tools"]),
    ("reload", &["app", "policy"]),
    // The HTTP layer: the pipeline, and the stages' error types for the one error map.
    (
        "http",
        &[
            "app", "audit", "auth", "config", "policy", "reload", "tools",
        ],
    ),
    // On top: re-evaluation of the log, the dev-mode demo, start-up, the command line.
    ("replay", &["audit", "config", "policy", "tools"]),
    ("dev", &["auth", "config", "signing", "tools"]),
    (
        "server",
        &[
            "app", "audit", "auth", "config", "http", "policy", "reload", "tools",
        ],
    ),
    (
        "cli",
        &[
            "audit", "auth", "config", "dev", "policy", "replay", "server", "signing", "tools",
        ],
    ),
    ("fuzz_api", &["app", "http"]),
];

/// Crates of the HTTP framework, which only the HTTP layer may use.
const HTTP_FRAMEWORK: &[&str] = &["axum", "hyper", "tower", "tower_http", "http_body"];

/// The top-level modules that may use the HTTP framework: the HTTP layer, start-up (which
/// serves it) and the dev-mode demo backends.
const HTTP_FRAMEWORK_USERS: &[&str] = &["http", "server", "dev"];

/// A file of `src/`: its module path and what its text imports.
struct File {
    path: String,
    module: Vec<String>,
    /// Module paths named by `crate::`, `super::` and `self::` paths, already absolute.
    imports: Vec<Vec<String>>,
    /// HTTP framework crates named in its code.
    framework: BTreeSet<String>,
}

#[test]
fn imports_follow_the_floors_without_cycles() {
    let files = read_src(&repo().join("src"));
    let problems = check(&files);
    assert!(
        problems.is_empty(),
        "the import rules of ARCHITECTURE.md are broken:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_allowed_edges_have_no_cycle_and_name_only_modules_of_src() {
    let modules: BTreeSet<&str> = ALLOWED.iter().map(|(m, _)| *m).collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, allowed) in ALLOWED {
        assert!(
            repo().join("src").join(format!("{module}.rs")).exists()
                || repo().join("src").join(module).join("mod.rs").exists(),
            "`{module}` is not a module of src/"
        );
        for target in *allowed {
            assert!(
                modules.contains(target),
                "`{module}` may import unknown `{target}`"
            );
        }
        graph.insert(
            (*module).to_owned(),
            allowed.iter().map(|t| (*t).to_owned()).collect(),
        );
    }
    assert_eq!(find_cycle(&graph), None);
}

/// Every broken rule, one line each.
fn check(files: &[File]) -> Vec<String> {
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let known: BTreeMap<&[String], &str> = files
        .iter()
        .map(|f| (f.module.as_slice(), f.path.as_str()))
        .collect();
    let mut problems = Vec::new();
    // Per folder (the crate root is the folder `[]`): child → children it imports.
    let mut folders: BTreeMap<Vec<String>, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for file in files {
        let Some(top) = file.module.first() else {
            continue;
        };
        match allowed.get(top.as_str()) {
            None => problems.push(format!(
                "{}: top-level module `{top}` has no row in ALLOWED",
                file.path
            )),
            Some(_) if HTTP_FRAMEWORK_USERS.contains(&top.as_str()) => {}
            Some(_) => {
                for krate in &file.framework {
                    problems.push(format!(
                        "{}: `{top}` uses the HTTP framework (`{krate}`)",
                        file.path
                    ));
                }
            }
        }
        for import in &file.imports {
            let target = resolve(&known, import);
            let shared = file
                .module
                .iter()
                .zip(target)
                .take_while(|(a, b)| a == b)
                .count();
            if shared == file.module.len() || shared == target.len() {
                continue;
            }
            let (from, to) = (&file.module[shared], &target[shared]);
            if shared == 0
                && !allowed
                    .get(from.as_str())
                    .is_some_and(|ok| ok.contains(&to.as_str()))
            {
                problems.push(format!(
                    "{}: `{from}` imports `{to}` (`{}`), which its row in ALLOWED does not name",
                    file.path,
                    import.join("::")
                ));
            }
            folders
                .entry(file.module[..shared].to_vec())
                .or_default()
                .entry(from.clone())
                .or_default()
                .insert(to.clone());
        }
    }
    for (folder, graph) in &folders {
        if let Some(cycle) = find_cycle(graph) {
            let place = if folder.is_empty() {
                "top-level modules".to_owned()
            } else {
                format!("files of `{}`", folder.join("/"))
            };
            problems.push(format!("import cycle among {place}: {}", cycle.join(" → ")));
        }
    }
    problems
}

/// The deepest file module that `path` names (the crate root if none).
fn resolve<'a>(known: &BTreeMap<&'a [String], &str>, path: &'a [String]) -> &'a [String] {
    (0..=path.len())
        .rev()
        .map(|n| &path[..n])
        .find(|prefix| known.contains_key(prefix))
        .unwrap_or(&[])
}

/// A cycle in `graph`, as the modules along it (the first repeated at the end).
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        done: &mut BTreeSet<String>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = stack.iter().position(|n| n == node) {
            let mut cycle = stack[at..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, done, stack) {
                return Some(cycle);
            }
        }
        stack.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut done, &mut Vec::new()))
}

/// Every file of the library under `dir` (not the binary's `main.rs`).
fn read_src(dir: &Path) -> Vec<File> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(next) = stack.pop() {
        for entry in std::fs::read_dir(next).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let relative = path.strip_prefix(dir).unwrap().to_str().unwrap().to_owned();
            let Some(stem) = relative.strip_suffix(".rs") else {
                continue;
            };
            if stem == "main" {
                continue;
            }
            let mut module: Vec<String> = stem.split('/').map(str::to_owned).collect();
            if module.last().is_some_and(|m| m == "mod") || stem == "lib" {
                module.pop();
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let tokens = tokens(&text);
            files.push(File {
                path: format!("src/{relative}"),
                imports: imports(&module, &tokens),
                framework: tokens
                    .iter()
                    .filter(|t| HTTP_FRAMEWORK.contains(&t.as_str()))
                    .cloned()
                    .collect(),
                module,
            });
        }
    }
    files
}

/// The absolute module paths named by `crate::`, `super::` and `self::` paths in `tokens`,
/// with `use` groups expanded and inline `mod name { … }` blocks followed.
fn imports(module: &[String], tokens: &[String]) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    // Inline modules entered, with the brace depth at which each closes.
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0;
    let mut i = 0;
    while i < tokens.len() {
        let token = tokens[i].as_str();
        match token {
            "{" => depth += 1,
            "}" => {
                depth -= 1;
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
            }
            "mod" if tokens.get(i + 2).is_some_and(|t| t == "{") => {
                inline.push((tokens[i + 1].clone(), depth));
                depth += 1;
                i += 3;
                continue;
            }
            "crate" | "super" | "self"
                if tokens.get(i + 1).is_some_and(|t| t == "::")
                    && (i == 0 || tokens[i - 1] != "::") =>
            {
                let mut here: Vec<String> = module.to_vec();
                here.extend(inline.iter().map(|(name, _)| name.clone()));
                let mut start = match token {
                    "crate" => Vec::new(),
                    "super" => here[..here.len().saturating_sub(1)].to_vec(),
                    _ => here.clone(),
                };
                i += 1;
                while tokens.get(i).is_some_and(|t| t == "::")
                    && tokens.get(i + 1).is_some_and(|t| t == "super")
                {
                    start.pop();
                    i += 2;
                }
                i = path_tail(tokens, i, start, &mut found);
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    found
}

/// Reads `:: segment…` (or `:: { tree, … }`) from `tokens[i]` after `prefix`, pushing each
/// full path to `found`; returns the index after it.
fn path_tail(
    tokens: &[String],
    mut i: usize,
    mut prefix: Vec<String>,
    found: &mut Vec<Vec<String>>,
) -> usize {
    while tokens.get(i).is_some_and(|t| t == "::") {
        match tokens.get(i + 1).map(String::as_str) {
            Some("{") => {
                i += 2;
                while i < tokens.len() && tokens[i] != "}" {
                    if tokens[i] == "," {
                        i += 1;
                        continue;
                    }
                    if is_ident(&tokens[i]) && tokens[i] != "self" {
                        let mut sub = prefix.clone();
                        sub.push(tokens[i].clone());
                        i = path_tail(tokens, i + 1, sub, found);
                    } else {
                        // `self` or `*`: the prefix itself.
                        found.push(prefix.clone());
                        i += 1;
                    }
                    // Skip `as name` and anything else up to the next item of the group.
                    while i < tokens.len() && tokens[i] != "," && tokens[i] != "}" {
                        i += 1;
                    }
                }
                return i + 1;
            }
            Some(segment) if is_ident(segment) => {
                prefix.push(segment.to_owned());
                i += 2;
            }
            _ => break,
        }
    }
    found.push(prefix);
    i
}

fn is_ident(token: &str) -> bool {
    token.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The identifiers and the `::`, `{`, `}`, `,` punctuation of Rust source, without comments,
/// string, byte-string, raw-string and character literals.
fn tokens(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut nesting = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    nesting += 1;
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    nesting -= 1;
                    i += 2;
                    if nesting == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
        } else if c == '\'' {
            // A character literal (`'x'`, `'\n'`, `'\u{..}'`), or else a lifetime.
            if next == Some('\\') {
                i += 3;
                while i < chars.len() && chars[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if chars.get(i + 2) == Some(&'\'') {
                i += 3;
            } else {
                i += 1;
            }
        } else if ident(c) {
            let start = i;
            while i < chars.len() && ident(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            // A raw string: `r"…"`, `r#"…"#`, `br#"…"#`.
            let hashes = chars[i..].iter().take_while(|c| **c == '#').count();
            if (word == "r" || word == "br") && chars.get(i + hashes) == Some(&'"') {
                let close: String = std::iter::once('"')
                    .chain("#".repeat(hashes).chars())
                    .collect();
                let rest: String = chars[i + hashes + 1..].iter().collect();
                let end = rest.find(&close).map_or(rest.len(), |e| e + close.len());
                i += hashes + 1 + rest[..end].chars().count();
            } else {
                out.push(word);
            }
        } else if c == ':' && next == Some(':') {
            out.push("::".to_owned());
            i += 2;
        } else {
            if matches!(c, '{' | '}' | ',' | ';' | '(' | ')' | '<' | '*') {
                out.push(c.to_string());
            }
            i += 1;
        }
    }
    out
}
