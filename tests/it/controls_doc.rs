//! docs/controls.md stays true: every test it cites exists, and every control says whether it
//! is done, partial or not yet.

use std::path::Path;

use crate::support::repo;

/// The files a cited `module::…::name` can live in: `tests/it/module.rs`, or for a unit test
/// (`module::tests::name`) any file under `src/`.
fn defines(root: &Path, cited: &str) -> bool {
    let parts: Vec<&str> = cited.split("::").collect();
    let (Some(first), Some(last)) = (parts.first(), parts.last()) else {
        return false;
    };
    let integration = root.join("tests/it").join(format!("{first}.rs"));
    if *last == "*" {
        let unit = parts.len() > 2 && {
            let module = root.join("src").join(parts[..parts.len() - 2].join("/"));
            module.join("tests.rs").exists() || module.with_extension("rs").exists()
        };
        return unit || integration.exists();
    }
    let needle = format!("fn {last}(");
    if parts.len() == 2 && integration.exists() {
        return std::fs::read_to_string(&integration)
            .unwrap()
            .contains(&needle);
    }
    let mut stack = vec![root.join("src")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if std::fs::read_to_string(&path).is_ok_and(|t| t.contains(&needle)) {
                return true;
            }
        }
    }
    false
}

#[test]
fn controls_cite_only_tests_that_exist_and_state_their_status() {
    let root = repo();
    let text = std::fs::read_to_string(root.join("docs/controls.md")).unwrap();
    let mut missing = Vec::new();
    let mut cited = 0;
    for row in text.lines().filter(|l| {
        l.starts_with("| ")
            && !l.starts_with("| control")
            && !l.starts_with("| risk")
            && !l.starts_with("| tenet")
    }) {
        let cells: Vec<&str> = row.split(" | ").collect();
        let status = cells.get(1).copied().unwrap_or_default();
        assert!(
            status.starts_with("done")
                || status.starts_with("partial: ")
                || status.starts_with("not yet ("),
            "a control without its status: {row}"
        );
        let tests = cells.last().copied().unwrap_or_default();
        for name in tests.split('`').skip(1).step_by(2) {
            if name.contains("::") {
                cited += 1;
                if !defines(&root, name) {
                    missing.push(name.to_owned());
                }
            }
        }
    }
    assert!(
        cited > 40,
        "only {cited} tests cited: is the table still parsed?"
    );
    assert!(
        missing.is_empty(),
        "docs/controls.md cites tests that do not exist: {missing:?}"
    );
}
