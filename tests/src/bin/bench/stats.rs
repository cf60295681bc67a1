//! Small numbers helpers: summaries of samples, the machine, binary and zip sizes.

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

/// Median, 95th percentile, min and max of some samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// How many samples.
    pub n: usize,
    /// Median (mean of the two middle samples when `n` is even).
    pub median: f64,
    /// 95th percentile, nearest rank.
    pub p95: f64,
    /// Smallest.
    pub min: f64,
    /// Largest.
    pub max: f64,
}

impl Summary {
    /// Summarises samples; `None` when there are none (or one is not a number).
    pub fn of(samples: &[f64]) -> Option<Self> {
        if samples.is_empty() || samples.iter().any(|s| !s.is_finite()) {
            return None;
        }
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = if n % 2 == 1 {
            sorted[n / 2]
        } else {
            f64::midpoint(sorted[n / 2 - 1], sorted[n / 2])
        };
        // Nearest rank: the smallest sample with at least 95 % of the samples at or below it.
        let rank = (n * 95).div_ceil(100).max(1);
        Some(Self {
            n,
            median,
            p95: sorted[rank - 1],
            min: sorted[0],
            max: sorted[n - 1],
        })
    }

    /// As JSON, with a unit suffix on each key (`median_ms`, …).
    pub fn json(&self, unit: &str) -> Value {
        let mut m = serde_json::Map::new();
        m.insert("n".into(), json!(self.n));
        for (name, v) in [
            ("median", self.median),
            ("p95", self.p95),
            ("min", self.min),
            ("max", self.max),
        ] {
            m.insert(format!("{name}_{unit}"), json!(round3(v)));
        }
        Value::Object(m)
    }
}

/// Rounds to three decimals, for JSON people read.
pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// What the figures were measured on.
pub fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .and_then(|rest| rest.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|_| "unknown".into(), |s| s.trim().to_owned());
    let memory_kib = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok());
    json!({
        "nproc": std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
        "cpu": cpu,
        "kernel": kernel,
        "memory_kib": memory_kib,
        "arch": std::env::consts::ARCH,
        "rustc": command_line("rustc", &["--version"]),
    })
}

/// The first line a command prints, or `unknown`.
pub fn command_line(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "unknown".into())
}

/// Now, as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn date() -> String {
    ec2pass_shared::time::UnixTime(ec2pass_tests::now()).rfc3339()
}

/// The size of a file, if it exists.
pub fn file_size(path: &Path) -> Option<u64> {
    std::fs::metadata(path).ok().map(|m| m.len())
}

/// Zips `binary` as `bootstrap` (deflate, as Lambda packages are) into `dir`; the zip's size.
/// Uses `zip`, or Python's `zipfile` where `zip` is not installed.
pub fn zipped_size(binary: &Path, dir: &Path, name: &str) -> Result<u64, String> {
    let work = dir.join(name);
    std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    let bootstrap = work.join("bootstrap");
    std::fs::copy(binary, &bootstrap).map_err(|e| format!("{}: {e}", binary.display()))?;
    let zip = work.join("bootstrap.zip");
    let _ = std::fs::remove_file(&zip);
    let with_zip = Command::new("zip")
        .current_dir(&work)
        .args(["-q", "-X", "bootstrap.zip", "bootstrap"])
        .status()
        .is_ok_and(|s| s.success());
    if !with_zip {
        let script = "import sys, zipfile\n\
                      with zipfile.ZipFile(sys.argv[1], 'w', zipfile.ZIP_DEFLATED) as z:\n    \
                      z.write(sys.argv[2], 'bootstrap')\n";
        let status = Command::new("python3")
            .args(["-c", script])
            .arg(&zip)
            .arg(&bootstrap)
            .status()
            .map_err(|e| {
                format!(
                    "neither zip nor python3 could zip {}: {e}",
                    binary.display()
                )
            })?;
        if !status.success() {
            return Err(format!("python3 zipfile failed on {}", binary.display()));
        }
    }
    let size = file_size(&zip).ok_or_else(|| format!("{} was not written", zip.display()))?;
    let _ = std::fs::remove_file(&bootstrap);
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_nearest_rank_p95() {
        let s = Summary::of(&(1..=20).map(f64::from).collect::<Vec<_>>()).expect("samples");
        assert_eq!(
            (s.n, s.median, s.p95, s.min, s.max),
            (20, 10.5, 19.0, 1.0, 20.0)
        );
        let one = Summary::of(&[7.0]).expect("one sample");
        assert_eq!((one.median, one.p95), (7.0, 7.0));
        let odd = Summary::of(&[3.0, 1.0, 2.0]).expect("three");
        assert_eq!((odd.median, odd.p95), (2.0, 3.0));
    }

    #[test]
    fn no_samples_or_a_nan_is_no_summary() {
        assert_eq!(Summary::of(&[]), None);
        assert_eq!(Summary::of(&[1.0, f64::NAN]), None);
    }
}
