//! The property runner shared by `shared`, `issuer` and `guard`'s `tests/properties.rs`, which
//! include this file with `#[path]` (a test-support crate would need a cycle of
//! dev-dependencies). It sets the case count (`EC2PASS_FUZZ_CASES`, for `make fuzz`), keeps
//! failing seeds beside the property file that ran them, counts each case's outcome, and prints
//! one summary line per property.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::fmt::Debug;

use proptest::prelude::*;
use proptest::test_runner::{FileFailurePersistence, TestCaseResult, TestRunner};

/// Cases per property when `EC2PASS_FUZZ_CASES` is not set.
const DEFAULT_CASES: u32 = 512;

/// Cases per property: `EC2PASS_FUZZ_CASES` when set, else [`DEFAULT_CASES`].
pub fn cases() -> u32 {
    match std::env::var("EC2PASS_FUZZ_CASES") {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("EC2PASS_FUZZ_CASES={v:?} is not a whole number")),
        Err(_) => DEFAULT_CASES,
    }
}

thread_local! {
    /// How often each outcome came up in the property running on this thread.
    static OUTCOMES: RefCell<BTreeMap<String, u64>> = const { RefCell::new(BTreeMap::new()) };
}

/// Counts an outcome of the current case, for the property's summary line: it shows that the
/// inputs reach every documented outcome, not just one.
pub fn outcome(label: impl Into<String>) {
    OUTCOMES.with(|o| *o.borrow_mut().entry(label.into()).or_default() += 1);
}

/// Runs one property, prints how many cases it ran and what they came to, and fails with the
/// minimal failing input.
pub fn check<S>(
    source: &'static str,
    name: &str,
    strategy: S,
    test: impl Fn(S::Value) -> TestCaseResult,
) where
    S: Strategy,
    S::Value: Debug,
{
    OUTCOMES.with(|o| o.borrow_mut().clear());
    let mut config = ProptestConfig::with_cases(cases());
    config.source_file = Some(source);
    config.failure_persistence = Some(Box::new(FileFailurePersistence::WithSource(
        "proptest-regressions",
    )));
    let ran = Cell::new(0u64);
    let result = TestRunner::new(config).run(&strategy, |value| {
        ran.set(ran.get() + 1);
        test(value)
    });
    match result {
        Ok(()) => {
            let seen = OUTCOMES.with(|o| o.take());
            let seen: Vec<String> = seen.iter().map(|(k, n)| format!("{k} {n}")).collect();
            println!(
                "property {name}: {} cases passed [{}]",
                ran.get(),
                seen.join(", ")
            );
        }
        Err(e) => panic!(
            "property {name} failed ({} cases run, shrinking included): {e}",
            ran.get()
        ),
    }
}
