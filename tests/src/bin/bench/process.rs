//! Running a function binary as Lambda does: a fresh process, its settings in the environment,
//! and the Runtime API stand-in at `AWS_LAMBDA_RUNTIME_API`.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::standin::{PostKind, Posted, StandIn};

/// How long a process may take to reach its first `next`.
const INIT_WAIT: Duration = Duration::from_secs(30);

/// A function binary and its settings.
pub struct Function {
    /// `issuer` or `guard`.
    pub name: &'static str,
    /// The binary.
    pub binary: PathBuf,
    /// Its environment (nothing else is inherited).
    pub settings: BTreeMap<String, String>,
    /// Where its output goes (one file per start, overwritten).
    pub log: PathBuf,
}

/// A running function process.
pub struct Running {
    child: Child,
    standin: StandIn,
    exec_at: Instant,
    log: PathBuf,
}

impl Function {
    /// Execs the binary with `events` already queued (a cold start that has work waiting).
    pub fn start(&self, events: Vec<Vec<u8>>) -> Result<Running, String> {
        let standin = StandIn::start(self.name).map_err(|e| format!("stand-in: {e}"))?;
        for event in events {
            standin.push(event);
        }
        let out = File::create(&self.log).map_err(|e| format!("{}: {e}", self.log.display()))?;
        let err = out
            .try_clone()
            .map_err(|e| format!("{}: {e}", self.log.display()))?;
        let mut cmd = Command::new(&self.binary);
        cmd.env_clear()
            .envs(&self.settings)
            .env("AWS_LAMBDA_RUNTIME_API", standin.runtime_api())
            .env("AWS_LAMBDA_FUNCTION_NAME", format!("ec2pass-{}", self.name))
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env(
                "AWS_LAMBDA_LOG_GROUP_NAME",
                format!("/aws/lambda/ec2pass-{}", self.name),
            )
            .env("AWS_LAMBDA_LOG_STREAM_NAME", "bench")
            .env("TZ", ":UTC")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let exec_at = Instant::now();
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot exec {}: {e}", self.binary.display()))?;
        Ok(Running {
            child,
            standin,
            exec_at,
            log: self.log.clone(),
        })
    }
}

impl Running {
    /// Milliseconds from exec to the first `GET …/invocation/next`.
    pub fn init_ms(&mut self) -> Result<f64, String> {
        let deadline = Instant::now() + INIT_WAIT;
        loop {
            if let Some(at) = self.standin.first_next(Duration::from_millis(20)) {
                return Ok(ms(at - self.exec_at));
            }
            self.check_alive(deadline, "its first next")?;
        }
    }

    /// Waits for `n` posts (responses or errors) and returns them, each checked to be a
    /// response.
    pub fn responses(&mut self, n: usize, wait: Duration) -> Result<Vec<Posted>, String> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(posted) = self.standin.posted(n, Duration::from_millis(20)) {
                if let Some(bad) = posted.iter().find(|p| p.kind != PostKind::Response) {
                    return Err(format!(
                        "{:?} instead of a response: {}\n{}",
                        bad.kind,
                        bad.text(),
                        self.log_tail()
                    ));
                }
                return Ok(posted);
            }
            let what = format!("{n} answers ({} so far)", self.standin.posted_count());
            self.check_alive(deadline, &what)?;
        }
    }

    /// Queues one more event; its request id.
    pub fn push(&self, event: Vec<u8>) -> String {
        self.standin.push(event)
    }

    /// Waits until at least `n` posts have arrived; how many have.
    pub fn wait_count(&mut self, n: usize, wait: Duration) -> Result<usize, String> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(count) = self.standin.count_at_least(n, Duration::from_millis(20)) {
                return Ok(count);
            }
            let what = format!("{n} answers ({} so far)", self.standin.posted_count());
            self.check_alive(deadline, &what)?;
        }
    }

    /// Milliseconds from exec to a post.
    pub fn since_exec_ms(&self, p: &Posted) -> f64 {
        ms(p.at - self.exec_at)
    }

    /// Peak resident set size so far (`VmHWM`), in KiB.
    pub fn peak_rss_kib(&self) -> Result<u64, String> {
        let path = format!("/proc/{}/status", self.child.id());
        let status = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| format!("{path} has no VmHWM"))
    }

    /// Ends the process (as Lambda does when it retires an execution environment).
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn check_alive(&mut self, deadline: Instant, waiting_for: &str) -> Result<(), String> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Err(format!(
                "the process exited ({status}) before {waiting_for}\n{}",
                self.log_tail()
            ));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "no {waiting_for} within the time allowed\n{}",
                self.log_tail()
            ));
        }
        Ok(())
    }

    fn log_tail(&self) -> String {
        tail(&self.log, 20)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The last `n` lines of a log, for error messages.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(n);
    format!(
        "--- last lines of {} ---\n{}",
        path.display(),
        lines[start..].join("\n")
    )
}

/// A duration in milliseconds.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
