//! The documents name tests as evidence; each one they name must exist, in the file they say.

use std::collections::BTreeMap;

use ec2pass_tests::root;

/// `path: name, name` references in backticks, e.g. `` `guard/src/guard_tests.rs: no_tag_is_denied` ``,
/// and later bare `` `name` `` ones in the same cell that belong to the last path named.
fn cited_tests(doc: &str) -> BTreeMap<String, Vec<String>> {
    let mut cited: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in doc.lines().filter(|l| l.starts_with('|')) {
        let mut path: Option<String> = None;
        for span in line.split('`').skip(1).step_by(2) {
            let (file, names) = match span.split_once(": ") {
                Some((file, names)) if file.ends_with(".rs") => (Some(file), names),
                _ => (None, span),
            };
            if let Some(file) = file {
                path = Some(resolve(file));
            }
            let Some(path) = &path else { continue };
            for name in names.split(", ") {
                let name = name.trim();
                let snake = !name.is_empty()
                    && name.contains('_')
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
                if snake {
                    cited.entry(path.clone()).or_default().push(name.to_owned());
                }
            }
        }
    }
    cited
}

/// Short forms used after the first mention (`guard_tests.rs`) resolve to the full path.
fn resolve(file: &str) -> String {
    let full = [
        "guard/src/",
        "issuer/src/",
        "shared/src/",
        "tests/tests/",
        "guard/tests/",
        "issuer/tests/",
        "shared/tests/",
    ]
    .iter()
    .map(|dir| format!("{dir}{file}"))
    .find(|p| root().join(p).is_file());
    full.unwrap_or_else(|| file.to_owned())
}

#[test]
fn every_test_the_threat_model_cites_exists_where_it_says() {
    // Given the threat model
    let doc =
        std::fs::read_to_string(root().join("docs/threat-model.md")).expect("docs/threat-model.md");
    // When every cited test is looked up in its file
    let cited = cited_tests(&doc);
    let mut missing = Vec::new();
    let mut found = 0;
    for (path, names) in &cited {
        let source = std::fs::read_to_string(root().join(path)).unwrap_or_default();
        for name in names {
            if source.contains(&format!("fn {name}(")) {
                found += 1;
            } else {
                missing.push(format!("{path}: {name}"));
            }
        }
    }
    // Then each exists, and there are enough of them to mean something
    assert!(
        missing.is_empty(),
        "cited but not found:\n{}",
        missing.join("\n")
    );
    assert!(
        found >= 30,
        "only {found} tests cited: the parser no longer reads the document"
    );
    println!("threat-model: {found} cited tests, all present");
}

#[test]
fn a_misspelt_citation_is_caught() {
    let cited =
        cited_tests("| x | `guard/src/guard_tests.rs: no_such_test_anywhere`, `a_second_one` |");
    assert_eq!(
        cited.get("guard/src/guard_tests.rs").map(Vec::len),
        Some(2),
        "{cited:?}"
    );
}
