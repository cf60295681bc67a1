//! Secrets hygiene: remember every secret a test run handles, capture every log line, and find
//! any secret that reached a log.
//!
//! - [`remember`] appends each password plaintext a test sees (an issuer's answer, an `Auth` tag
//!   it sets) to a ledger under `.dev/secrets/`, one file per test process.
//! - [`capture_logs`] sends the in-process tests' own tracing output (the guard and issuer driven
//!   in-process, at DEBUG, AWS SDK included) to `.dev/logs/tests-<process>.log`. The functions
//!   under `cargo lambda watch` log to `.dev/logs/lambda.log`, also at DEBUG.
//! - [`Secrets`] and [`scan`] are what the `secrets-scan` binary runs after `make test`: every
//!   log line against every remembered password (as shown, canonical, and upper case), each
//!   password's full SHA-256 digest, and the signing secret.

use std::collections::{BTreeSet, HashMap};
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Once;

use ec2pass_shared::password::Password;

/// Where the ledger lives.
pub fn ledger_dir() -> PathBuf {
    crate::root().join(".dev/secrets")
}

/// Where captured logs live.
pub fn logs_dir() -> PathBuf {
    crate::root().join(".dev/logs")
}

/// Records a password plaintext this test run handled, in any form people write it.
pub fn remember(plaintext: &str) {
    let dir = ledger_dir();
    let written = std::fs::create_dir_all(&dir).and_then(|()| {
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(format!("{}.txt", std::process::id())))?;
        writeln!(file, "{}", plaintext.trim())
    });
    if let Err(e) = written {
        panic!("cannot record a secret in {}: {e}", dir.display());
    }
}

/// Sends this process's tracing output, at DEBUG, to `.dev/logs/tests-<process>.log`. Safe to
/// call from every test; the first call wins.
pub fn capture_logs() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let dir = logs_dir();
        let file = std::fs::create_dir_all(&dir).and_then(|()| {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join(format!("tests-{}.log", std::process::id())))
        });
        let file = match file {
            Ok(f) => f,
            Err(e) => panic!("cannot open a log file in {}: {e}", dir.display()),
        };
        let _ = tracing_subscriber::fmt()
            .json()
            .with_env_filter(tracing_subscriber::EnvFilter::new("debug"))
            .with_writer(std::sync::Mutex::new(file))
            .try_init();
    });
}

/// How many leading bytes of a needle index it (see [`Secrets::find_in`]).
const PREFIX: usize = 8;

/// Everything that must never appear in a log.
#[derive(Debug, Default)]
pub struct Secrets {
    needles: BTreeSet<String>,
    /// How many passwords the ledger held.
    pub passwords: usize,
}

impl Secrets {
    /// The ledger's passwords (each as shown, canonical, upper case, and its full digest in hex)
    /// and the signing secret.
    pub fn load(ledger: &Path, signing_secret: &str) -> std::io::Result<Self> {
        let mut secrets = Self::default();
        secrets.add_needle(signing_secret);
        if ledger.is_dir() {
            for entry in std::fs::read_dir(ledger)? {
                for line in std::fs::read_to_string(entry?.path())?.lines() {
                    secrets.add_password(line);
                }
            }
        }
        Ok(secrets)
    }

    /// Adds one password plaintext in every form worth looking for.
    pub fn add_password(&mut self, plaintext: &str) {
        let Some(p) = Password::from_tag(plaintext) else {
            return;
        };
        if self.needles.insert(p.canonical().to_owned()) {
            self.passwords += 1;
        }
        self.add_needle(&p.display());
        self.add_needle(&p.display().to_uppercase());
        self.add_needle(&p.canonical().to_uppercase());
        self.add_needle(&hex::encode(p.digest().as_bytes()));
        self.add_needle(plaintext.trim());
    }

    fn add_needle(&mut self, needle: &str) {
        if !needle.is_empty() {
            self.needles.insert(needle.to_owned());
        }
    }

    /// The first secret found in a line, if any (for one line; [`Secrets::finder`] for many).
    pub fn find_in(&self, line: &str) -> Option<&str> {
        self.finder().find_in(line)
    }

    /// An index of the needles by their first [`PREFIX`] bytes: a run's logs are hundreds of
    /// thousands of lines and the needles a thousand, too many to search for one by one.
    pub fn finder(&self) -> Finder<'_> {
        let mut finder = Finder::default();
        for n in &self.needles {
            match n.as_bytes().get(..PREFIX) {
                Some(prefix) => finder.by_prefix.entry(prefix).or_default().push(n),
                None => finder.short.push(n),
            }
        }
        finder
    }
}

/// The needles of [`Secrets`], indexed for searching many lines.
#[derive(Debug, Default)]
pub struct Finder<'a> {
    by_prefix: HashMap<&'a [u8], Vec<&'a str>>,
    short: Vec<&'a str>,
}

impl<'a> Finder<'a> {
    /// The first secret found in a line, if any: each needle is checked only where the line
    /// holds its first bytes (one hash look-up per position); needles shorter than that (none
    /// is: passwords have 20 characters) are searched for in full.
    pub fn find_in(&self, line: &str) -> Option<&'a str> {
        let bytes = line.as_bytes();
        let found = bytes.windows(PREFIX).enumerate().find_map(|(i, window)| {
            self.by_prefix.get(window).and_then(|candidates| {
                candidates
                    .iter()
                    .find(|n| bytes[i..].starts_with(n.as_bytes()))
                    .copied()
            })
        });
        found.or_else(|| self.short.iter().find(|n| line.contains(**n)).copied())
    }
}

/// A secret found in a log: where, and which kind (never the secret itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leak {
    /// The log file.
    pub file: PathBuf,
    /// 1-based line number.
    pub line: usize,
}

/// What a scan looked at and found.
#[derive(Debug, Default)]
pub struct Scan {
    /// Log files read.
    pub files: usize,
    /// Lines read.
    pub lines: usize,
    /// Where secrets were found.
    pub leaks: Vec<Leak>,
}

/// Reads every `*.log` file among `paths` (files or directories) and looks for the secrets.
pub fn scan(paths: &[PathBuf], secrets: &Secrets) -> std::io::Result<Scan> {
    let mut out = Scan::default();
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            for entry in std::fs::read_dir(path)? {
                let p = entry?.path();
                if p.extension().is_some_and(|e| e == "log") {
                    files.push(p);
                }
            }
        } else if path.is_file() {
            files.push(path.clone());
        }
    }
    files.sort();
    let finder = secrets.finder();
    for file in files {
        let bytes = std::fs::read(&file)?;
        let text = String::from_utf8_lossy(&bytes);
        out.files += 1;
        for (i, line) in text.lines().enumerate() {
            out.lines += 1;
            if finder.find_in(line).is_some() {
                out.leaks.push(Leak {
                    file: file.clone(),
                    line: i + 1,
                });
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn planted(line: &str) -> usize {
        let dir = std::env::temp_dir().join(format!("ec2pass-scan-{}", crate::unique("t")));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let log = dir.join("x.log");
        std::fs::write(&log, format!("{{\"msg\":\"fine\"}}\n{line}\n")).expect("write log");
        let mut secrets = Secrets::default();
        secrets.add_password("k7qm-2x9f-h4tr-8wzn-c3pd");
        secrets.add_needle("the-signing-secret");
        let found = scan(std::slice::from_ref(&dir), &secrets).expect("scan");
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(found.lines, 2);
        found.leaks.len()
    }

    #[test]
    fn a_password_in_any_form_its_digest_or_the_secret_in_a_log_is_found() {
        // Given a log with one planted secret per case, when scanned, then it is found.
        for line in [
            "tag value k7qm-2x9f-h4tr-8wzn-c3pd",
            "K7QM-2X9F-H4TR-8WZN-C3PD",
            "canonical k7qm2x9fh4tr8wznc3pd",
            "K7QM2X9FH4TR8WZNC3PD in upper case",
            &format!(
                "digest {}",
                hex::encode(
                    Password::from_tag("k7qm2x9fh4tr8wznc3pd")
                        .map(|p| p.digest().as_bytes().to_vec())
                        .unwrap_or_default()
                )
            ),
            "secret=the-signing-secret",
        ] {
            assert_eq!(planted(line), 1, "not found: {line}");
        }
    }

    #[test]
    fn a_clean_log_has_no_leaks() {
        assert_eq!(
            planted("instance i-0abc denied: unknown password (short id 7f3k9)"),
            0
        );
    }
}
