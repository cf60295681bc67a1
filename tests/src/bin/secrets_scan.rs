//! After `make test`: reads every log line the run produced and fails if any holds a password,
//! a password's full digest or the signing secret. See `ec2pass_tests::secrets`.
//!
//! Reads `.dev/logs/*.log` (the functions under `cargo lambda watch`, moto, and the in-process
//! tests' own tracing output), `.dev/test.log` (what `cargo test` printed) and
//! `target/bench/logs/*.log` (the bench's functions and its in-process run), against the ledger
//! of every password the tests handled. An empty ledger or no logs fails too: a scan of nothing
//! proves nothing.

use std::process::ExitCode;

use ec2pass_tests::Local;
use ec2pass_tests::secrets::{Secrets, ledger_dir, logs_dir, scan};

fn main() -> ExitCode {
    let local = Local::load();
    let secrets = match Secrets::load(&ledger_dir(), local.get("EC2PASS_DEV_SIGNING_SECRET")) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("secrets-scan: cannot read the ledger: {e}");
            return ExitCode::FAILURE;
        }
    };
    let paths = [
        logs_dir(),
        ec2pass_tests::root().join(".dev/test.log"),
        ec2pass_tests::root().join("target/bench/logs"),
    ];
    let found = match scan(&paths, &secrets) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("secrets-scan: cannot read the logs: {e}");
            return ExitCode::FAILURE;
        }
    };
    for leak in &found.leaks {
        println!("  LEAK {}:{}", leak.file.display(), leak.line);
    }
    println!(
        "secrets-scan: {} log lines in {} files, {} passwords and the signing secret looked for, {} found",
        found.lines,
        found.files,
        secrets.passwords,
        found.leaks.len()
    );
    if secrets.passwords == 0 || found.lines == 0 {
        println!(
            "secrets-scan: nothing to compare (no passwords recorded or no log lines): run the tests first"
        );
        return ExitCode::FAILURE;
    }
    if found.leaks.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
