//! `make bench`: how fast the two functions start and answer, how many AWS round trips each path
//! makes, how much memory they use and how big they are. Prints a table and writes every figure
//! to `target/bench/results.json`. See docs/performance.md for what each figure means.
//!
//! ```text
//! bench [--smoke] [--out FILE] [--bin-dir DIR] [--starts N] [--invocations N] [--iterations N]
//!       [--endpoint URL]
//! bench --bursts [--out FILE]
//! ```
//!
//! `--endpoint` points it at another emulator than `dev/local.env`'s (one with the local table
//! created, e.g. by `dev/aws_local.py create-table`).
//!
//! It needs the local emulator (moto), like the tests: `make bench` runs it inside the stack.
//! `--smoke` runs every measurement once, with the dev binaries in `target/debug`, and fails if
//! any of them produced no figure: it checks that the harness works, never how fast anything is.
//! `--bursts` runs only the burst scenarios of the throttle-faithful model (needs nothing running,
//! writes `target/bench/bursts.json`).

mod burst;
mod process;
mod rounds;
mod standin;
mod stats;
mod warm;
mod world;

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use ec2pass_tests::root;
use serde_json::{Value, json};

use crate::process::{Function, ms};
use crate::stats::{Summary, round3};
use crate::world::{
    Fallible, World, check_minted, check_verdict, guard_event, issuer_event, mint_command,
};

/// Cold init target, per function (ms).
const INIT_TARGET_MS: f64 = 25.0;
/// Issuer cold first answer target, against the emulator (ms).
const ISSUER_ANSWER_TARGET_MS: f64 = 150.0;
/// Peak RSS target (KiB).
const RSS_TARGET_KIB: u64 = 32 * 1024;
/// Zip size target (bytes).
const ZIP_TARGET_BYTES: u64 = 5 * 1024 * 1024;

#[derive(Debug, Clone)]
struct Options {
    smoke: bool,
    bursts: bool,
    out: PathBuf,
    bin_dir: PathBuf,
    starts: usize,
    invocations: usize,
    iterations: usize,
    endpoint: Option<String>,
}

impl Options {
    fn parse(args: impl Iterator<Item = String>) -> Result<Self, String> {
        let args: Vec<String> = args.collect();
        let smoke = args.iter().any(|a| a == "--smoke");
        let bursts = args.iter().any(|a| a == "--bursts");
        let value = |flag: &str| -> Result<Option<String>, String> {
            match args.iter().position(|a| a == flag) {
                None => Ok(None),
                Some(i) => args
                    .get(i + 1)
                    .cloned()
                    .map(Some)
                    .ok_or_else(|| format!("{flag} needs a value")),
            }
        };
        let count = |flag: &str, full: usize, smoke_n: usize| -> Result<usize, String> {
            match value(flag)? {
                None => Ok(if smoke { smoke_n } else { full }),
                Some(v) => v
                    .parse::<usize>()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or_else(|| format!("{flag} {v}: not a positive number")),
            }
        };
        let known = [
            "--smoke",
            "--out",
            "--bin-dir",
            "--starts",
            "--invocations",
            "--iterations",
            "--endpoint",
            "--bursts",
        ];
        let mut expect_value = false;
        for a in &args {
            if expect_value {
                expect_value = false;
            } else if !known.contains(&a.as_str()) {
                return Err(format!("unknown argument {a:?}"));
            } else {
                expect_value = a != "--smoke" && a != "--bursts";
            }
        }
        let in_root = |p: String| {
            let p = PathBuf::from(p);
            if p.is_absolute() { p } else { root().join(p) }
        };
        Ok(Self {
            smoke,
            bursts,
            out: in_root(value("--out")?.unwrap_or_else(|| {
                if bursts {
                    "target/bench/bursts.json"
                } else if smoke {
                    "target/bench/smoke.json"
                } else {
                    "target/bench/results.json"
                }
                .into()
            })),
            bin_dir: in_root(value("--bin-dir")?.unwrap_or_else(|| {
                if smoke {
                    "target/debug"
                } else {
                    "target/release"
                }
                .into()
            })),
            starts: count("--starts", 20, 1)?,
            invocations: count("--invocations", 1000, 2)?,
            iterations: count("--iterations", 2000, 1)?,
            endpoint: value("--endpoint")?,
        })
    }
}

const USAGE: &str = "usage: bench [--smoke] [--out FILE] [--bin-dir DIR] [--starts N] \
                     [--invocations N] [--iterations N] [--endpoint URL] | bench --bursts [--out FILE]";

fn main() -> ExitCode {
    let opts = match Options::parse(std::env::args().skip(1)) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start tokio: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(bench(&opts)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if opts.smoke => {
            // One line for `make test`'s summary, which collects `bench-smoke:` lines.
            println!("\nbench-smoke: FAILED: {e}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("\nbench FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn bench(opts: &Options) -> Fallible<()> {
    let out_dir = opts
        .out
        .parent()
        .map_or_else(|| root().join("target/bench"), Path::to_path_buf);
    let logs = out_dir.join("logs");
    std::fs::create_dir_all(&logs).map_err(|e| format!("{}: {e}", logs.display()))?;
    if opts.bursts {
        let results = json!({"date": stats::date(), "machine": stats::machine(), "bursts": burst::measure(false).await?});
        let text = serde_json::to_string_pretty(&results).map_err(|e| e.to_string())?;
        std::fs::write(&opts.out, text + "\n")
            .map_err(|e| format!("{}: {e}", opts.out.display()))?;
        println!("{}", burst::table(&results["bursts"]));
        println!("figures: {}", opts.out.display());
        return Ok(());
    }
    log_in_process(&logs.join("in-process.log"))?;
    for name in ["issuer", "guard"] {
        let bin = opts.bin_dir.join(name);
        if !bin.is_file() {
            return Err(format!(
                "{} is missing: build it first ({})",
                bin.display(),
                if opts.smoke {
                    "cargo build --workspace --all-targets"
                } else {
                    "cargo build --release -p issuer -p guard"
                }
            ));
        }
    }
    let world = World::create(opts.endpoint.clone()).await?;
    let measured = measure(opts, &world, &out_dir, &logs).await;
    for problem in world.clean_up().await {
        eprintln!("clean-up: {problem}");
    }
    let mut results = measured?;
    if opts.smoke {
        // Debug binaries, one sample each: the figures prove the harness works, nothing more.
        unjudge(&mut results);
    }
    let text = serde_json::to_string_pretty(&results).map_err(|e| e.to_string())?;
    std::fs::write(&opts.out, text + "\n").map_err(|e| format!("{}: {e}", opts.out.display()))?;
    println!("{}", table(&results));
    println!("figures: {}", opts.out.display());
    if opts.smoke {
        let count = smoke_check(&results)?;
        println!(
            "bench-smoke: harness works: {count} figures from every measurement (cold init, first \
             answer, warm paths, round trips, memory, size, bursts), speed not judged ({})",
            opts.out.display()
        );
    }
    Ok(())
}

/// In-process code (warm paths, round trips) logs as deployed: INFO, JSON; here to a file.
fn log_in_process(path: &Path) -> Fallible<()> {
    let file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_writer(std::sync::Mutex::new(file))
        .try_init();
    Ok(())
}

async fn measure(opts: &Options, world: &World, out_dir: &Path, logs: &Path) -> Fallible<Value> {
    let function = |name: &'static str, log: &str| Function {
        name,
        binary: opts.bin_dir.join(name),
        settings: world.settings(),
        log: logs.join(format!("{name}-{log}.log")),
    };
    let started = Instant::now();

    eprintln!("[bench] sizes");
    let size = sizes(opts, out_dir)?;

    eprintln!("[bench] cold init: {} starts per function", opts.starts);
    let mut cold_init = serde_json::Map::new();
    for name in ["issuer", "guard"] {
        cold_init.insert(name.into(), cold_init_of(&function(name, "init"), opts)?);
    }

    eprintln!(
        "[bench] cold first answer: {} starts per function",
        opts.starts
    );
    let first_answer = json!({
        "issuer": issuer_first_answer(&function("issuer", "first-answer"), world, opts).await?,
        "guard": guard_first_answer(&function("guard", "first-answer"), world, opts).await?,
    });

    eprintln!(
        "[bench] warm handler cost: {} iterations per path",
        opts.iterations
    );
    let warmup = if opts.smoke { 0 } else { 100 };
    let mut warm = vec![warm::issuer_mint(opts.iterations, warmup).await?];
    for case in warm::GUARD_CASES {
        warm.push(warm::guard_path(case, opts.iterations, warmup).await?);
    }

    eprintln!("[bench] round trips");
    let rounds = rounds::measure(world).await?;

    eprintln!("[bench] bursts, in the throttle-faithful EC2 model");
    let bursts = burst::measure(opts.smoke).await?;

    eprintln!(
        "[bench] memory: {} invocations per function",
        opts.invocations
    );
    let memory = json!({
        "issuer": issuer_memory(&function("issuer", "memory"), world, opts).await?,
        "guard": guard_memory(&function("guard", "memory"), world, opts).await?,
    });

    Ok(json!({
        "date": stats::date(),
        "mode": if opts.smoke { "smoke" } else { "full" },
        "harness_profile": if cfg!(debug_assertions) { "dev (unoptimised: warm figures are not representative)" } else { "release" },
        "binaries": opts.bin_dir.display().to_string(),
        "machine": stats::machine(),
        "emulator": world.endpoint,
        "duration_s": round3(started.elapsed().as_secs_f64()),
        "targets": {
            "cold_init_ms": INIT_TARGET_MS,
            "issuer_cold_first_answer_ms": ISSUER_ANSWER_TARGET_MS,
            "peak_rss_kib": RSS_TARGET_KIB,
            "zip_bytes": ZIP_TARGET_BYTES,
        },
        "cold_init": Value::Object(cold_init),
        "cold_first_answer": first_answer,
        "warm_handler_us": warm.iter().map(|w| (w.name.to_owned(), w.summary.json("us"))).collect::<serde_json::Map<_, _>>(),
        "round_trips": rounds.iter().map(|r| (r.name.to_owned(), r.json())).collect::<serde_json::Map<_, _>>(),
        "memory": memory,
        "size": size,
        "bursts": bursts,
    }))
}

fn sizes(opts: &Options, out_dir: &Path) -> Fallible<Value> {
    let mut out = serde_json::Map::new();
    for name in ["issuer", "guard"] {
        let bin = opts.bin_dir.join(name);
        let binary =
            stats::file_size(&bin).ok_or_else(|| format!("{} is missing", bin.display()))?;
        let host_zip = stats::zipped_size(&bin, &out_dir.join("zip"), name)?;
        let package = root().join(format!("target/lambda/{name}/bootstrap.zip"));
        let arm64_zip = stats::file_size(&package);
        let worst = arm64_zip.unwrap_or(0).max(host_zip);
        out.insert(
            name.into(),
            json!({
                "binary_bytes": binary,
                "host_zip_bytes": host_zip,
                "host_zip_of": bin.display().to_string(),
                "arm64_package_zip_bytes": arm64_zip,
                "arm64_package_zip_modified": package_age(&package),
                "pass": worst < ZIP_TARGET_BYTES,
            }),
        );
    }
    Ok(Value::Object(out))
}

/// When the package zip was written (`make package`), so a stale one is recognisable.
fn package_age(path: &Path) -> Option<String> {
    let modified = std::fs::metadata(path).ok()?.modified().ok()?;
    let secs = modified
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs();
    Some(ec2pass_shared::time::UnixTime(i64::try_from(secs).ok()?).rfc3339())
}

fn cold_init_of(f: &Function, opts: &Options) -> Fallible<Value> {
    if !opts.smoke {
        // One start first, not counted, so the binary is in the page cache like Lambda's own.
        let mut warm = f.start(Vec::new())?;
        warm.init_ms()?;
        warm.kill();
    }
    let mut samples = Vec::new();
    let mut rss = Vec::new();
    for _ in 0..opts.starts {
        let mut run = f.start(Vec::new())?;
        samples.push(run.init_ms()?);
        #[allow(clippy::cast_precision_loss)]
        rss.push(run.peak_rss_kib()? as f64);
        run.kill();
    }
    let s = summary(&samples, f.name)?;
    let r = summary(&rss, f.name)?;
    Ok(json!({
        "samples_ms": samples.iter().map(|&x| round3(x)).collect::<Vec<_>>(),
        "summary": s.json("ms"),
        "rss_at_init_kib": r.json("kib"),
        "target_ms": INIT_TARGET_MS,
        "pass": s.median < INIT_TARGET_MS && s.p95 < INIT_TARGET_MS,
    }))
}

fn summary(samples: &[f64], what: &str) -> Fallible<Summary> {
    Summary::of(samples).ok_or_else(|| format!("{what}: no samples"))
}

/// Exec → the answer posted, for one event already waiting, `opts.starts` times.
fn first_answers(
    f: &Function,
    opts: &Options,
    mut event: impl FnMut(usize) -> Vec<u8>,
    check: impl Fn(&[u8]) -> Fallible<()>,
) -> Fallible<Vec<f64>> {
    let mut samples = Vec::new();
    for i in 0..opts.starts {
        let mut run = f.start(vec![event(i)])?;
        let posted = run.responses(1, Duration::from_secs(60))?;
        check(&posted[0].body).map_err(|e| format!("{}: {e}", f.name))?;
        samples.push(run.since_exec_ms(&posted[0]));
        run.kill();
    }
    Ok(samples)
}

async fn issuer_first_answer(f: &Function, world: &World, opts: &Options) -> Fallible<Value> {
    let scope = world
        .launch(1, &[("Name", "bench-issuer")])
        .await?
        .remove(0);
    let secret = world.signing_secret();
    let samples = first_answers(
        f,
        opts,
        |_| issuer_event(&secret, &mint_command(&scope)),
        check_minted,
    )?;
    let s = summary(&samples, "issuer first answer")?;
    Ok(json!({
        "event": "scoped mint: DescribeInstances + TransactWriteItems against the emulator",
        "samples_ms": samples.iter().map(|&x| round3(x)).collect::<Vec<_>>(),
        "summary": s.json("ms"),
        "target_ms": ISSUER_ANSWER_TARGET_MS,
        "pass": s.median < ISSUER_ANSWER_TARGET_MS && s.p95 < ISSUER_ANSWER_TARGET_MS,
    }))
}

async fn guard_first_answer(f: &Function, world: &World, opts: &Options) -> Fallible<Value> {
    let ids = world
        .launch(opts.starts, &[("Name", "bench-first-answer")])
        .await?;
    let samples = first_answers(
        f,
        opts,
        |i| guard_event(&ids[i], "pending"),
        |body| check_verdict(body, "deny"),
    )?;
    let s = summary(&samples, "guard first answer")?;
    Ok(json!({
        "event": "pending, no Auth tag: DescribeInstances (with DescribeTable for the activation time, once per cold start), PutItem, StopInstances, Publish, UpdateItem (alert sent) against the emulator",
        "samples_ms": samples.iter().map(|&x| round3(x)).collect::<Vec<_>>(),
        "summary": s.json("ms"),
        "target_ms": null,
        "pass": null,
    }))
}

/// Runs `total` invocations through one process, a few queued at a time; checks every answer and
/// reads the process's peak RSS before it ends.
fn through_one_process(
    f: &Function,
    total: usize,
    mut event: impl FnMut(usize) -> Fallible<Vec<u8>>,
    check: impl Fn(usize, &[u8]) -> Fallible<()>,
) -> Fallible<Value> {
    const AHEAD: usize = 16;
    let mut run = f.start(Vec::new())?;
    let t0 = Instant::now();
    let mut pushed = Vec::with_capacity(total);
    let mut done = 0;
    while done < total {
        while pushed.len() < total && pushed.len() < done + AHEAD {
            pushed.push(run.push(event(pushed.len())?));
        }
        done = run.wait_count(done + 1, Duration::from_secs(120))?;
    }
    let wall = t0.elapsed();
    let peak = run.peak_rss_kib()?;
    let posted = run.responses(total, Duration::from_secs(1))?;
    run.kill();
    for (i, (p, id)) in posted.iter().zip(&pushed).enumerate() {
        if &p.request_id != id {
            return Err(format!(
                "{} invocation {i}: answer for {}, expected {id}",
                f.name, p.request_id
            ));
        }
        check(i, &p.body).map_err(|e| format!("{} invocation {i}: {e}", f.name))?;
    }
    #[allow(clippy::cast_precision_loss)]
    let per_invocation = ms(wall) / total as f64;
    Ok(json!({
        "invocations": total,
        "peak_rss_kib": peak,
        "target_kib": RSS_TARGET_KIB,
        "pass": peak < RSS_TARGET_KIB,
        "wall_s": round3(wall.as_secs_f64()),
        "mean_ms_per_invocation": round3(per_invocation),
    }))
}

async fn issuer_memory(f: &Function, world: &World, opts: &Options) -> Fallible<Value> {
    let scope = world
        .launch(1, &[("Name", "bench-memory")])
        .await?
        .remove(0);
    let secret = world.signing_secret();
    // Each request comes from its own user, so the rate limit never answers instead of a mint.
    let mut result = through_one_process(
        f,
        opts.invocations,
        |_| Ok(issuer_event(&secret, &mint_command(&scope))),
        |_, body| check_minted(body),
    )?;
    result["mix"] = json!("scoped mints, each from a new user");
    Ok(result)
}

async fn guard_memory(f: &Function, world: &World, opts: &Options) -> Fallible<Value> {
    // Every start is delivered twice, pending then running, as EventBridge does; half the
    // instances carry their own valid password, half no Auth tag.
    let starts = opts.invocations.div_ceil(2);
    let ids = world.launch(starts, &[("Name", "bench-memory")]).await?;
    let allowed = starts / 2;
    for id in &ids[..allowed] {
        let password = world.mint(id).await?;
        world.tag_auth(id, &password.display()).await?;
    }
    let events: Vec<Vec<u8>> = ids
        .iter()
        .flat_map(|id| [guard_event(id, "pending"), guard_event(id, "running")])
        .take(opts.invocations)
        .collect();
    let mut result = through_one_process(
        f,
        events.len(),
        |i| Ok(events[i].clone()),
        // A denied start is over (stopped) by its running event, which then changes nothing
        // and reports verdict `none` (SPEC §4.2); an allowed one's running event enforces the
        // allow again.
        |i, body| {
            let verdict = match (i / 2 < allowed, i % 2) {
                (true, _) => "allow",
                (false, 0) => "deny",
                (false, _) => "none",
            };
            check_verdict(body, verdict)
        },
    )?;
    result["mix"] = json!(format!(
        "{starts} starts, each delivered pending then running; {allowed} allowed, {} denied (no Auth tag)",
        starts - allowed
    ));
    Ok(result)
}

/// Clears every `pass`: smoke figures are not judged against the targets.
fn unjudge(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (k, child) in map.iter_mut() {
                if k == "pass" {
                    *child = Value::Null;
                } else {
                    unjudge(child);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(unjudge),
        _ => {}
    }
}

/// Fails unless every measurement produced its figures (never on how large they are); how many
/// figures were checked.
fn smoke_check(r: &Value) -> Fallible<usize> {
    let mut missing = Vec::new();
    let mut checked = 0;
    let mut need = |missing: &mut Vec<String>, path: &str, v: &Value| {
        checked += 1;
        if !v.as_f64().is_some_and(|x| x.is_finite() && x > 0.0) {
            missing.push(format!("{path} = {v}"));
        }
    };
    for f in ["issuer", "guard"] {
        let figures = [
            ("cold_init", &r["cold_init"][f]["summary"]["median_ms"]),
            (
                "cold_first_answer",
                &r["cold_first_answer"][f]["summary"]["median_ms"],
            ),
            ("memory", &r["memory"][f]["peak_rss_kib"]),
            ("size.binary", &r["size"][f]["binary_bytes"]),
            ("size.zip", &r["size"][f]["host_zip_bytes"]),
        ];
        for (what, v) in figures {
            need(&mut missing, &format!("{what}.{f}"), v);
        }
    }
    let warm = r["warm_handler_us"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    if warm.len() != 1 + warm::GUARD_CASES.len() {
        missing.push(format!("warm_handler_us has {} paths", warm.len()));
    }
    for (name, w) in &warm {
        need(&mut missing, &format!("warm.{name}"), &w["median_us"]);
    }
    let rounds = r["round_trips"].as_object().cloned().unwrap_or_default();
    if rounds.len() < 7 {
        missing.push(format!("round_trips has {} paths", rounds.len()));
    }
    for (name, p) in &rounds {
        need(
            &mut missing,
            &format!("round_trips.{name}"),
            &p["sequential_calls"],
        );
        missing.extend(round_trip_regression(name, p));
    }
    missing.extend(burst::missing(&r["bursts"]));
    if missing.is_empty() {
        Ok(checked)
    } else {
        Err(format!("figures missing or wrong: {}", missing.join(", ")))
    }
}

/// Round trips are not speed: a path that makes one more call before its decision than its
/// target, or starts an untag or publish before the stop, is a regression even in smoke mode.
fn round_trip_regression(name: &str, p: &Value) -> Option<String> {
    let target = p["target"].as_u64()?;
    let early = p["other_calls_before_decision"]
        .as_array()
        .map_or(0, Vec::len);
    (p["sequential_calls"].as_u64() != Some(target) || early > 0).then(|| {
        format!(
            "round_trips.{name}: {} sequential calls (target {target}), {early} before the decision",
            p["sequential_calls"]
        )
    })
}

fn verdict(pass: &Value) -> &'static str {
    match pass.as_bool() {
        Some(true) => "pass",
        Some(false) => "MISS",
        None => "",
    }
}

fn table(r: &Value) -> String {
    let mut t = String::new();
    let m = &r["machine"];
    t += &format!(
        "\nec2pass bench ({}, {}) {}\nmachine: {} x {}, {} MiB, Linux {}, {}\n\n",
        r["mode"].as_str().unwrap_or_default(),
        r["binaries"].as_str().unwrap_or_default(),
        r["date"].as_str().unwrap_or_default(),
        m["nproc"],
        m["cpu"].as_str().unwrap_or_default(),
        m["memory_kib"].as_u64().unwrap_or_default() / 1024,
        m["kernel"].as_str().unwrap_or_default(),
        m["rustc"].as_str().unwrap_or_default(),
    );
    let row = |t: &mut String, a: &str, b: String, c: String, d: &str, e: &str| {
        *t += &format!("{a:<44} {b:>16} {c:>16}  {d:<13} {e}\n");
    };
    let med_p95 = |v: &Value, unit: &str| {
        format!(
            "{} / {}",
            fmt(&v[format!("median_{unit}")]),
            fmt(&v[format!("p95_{unit}")])
        )
    };
    let both = |v: &Value| {
        let (i, g) = (verdict(&v["issuer"]["pass"]), verdict(&v["guard"]["pass"]));
        match (i, g) {
            ("", "") => String::new(),
            ("", g) => format!("guard {g}"),
            (i, "") => format!("issuer {i}"),
            (i, g) if i == g => i.to_owned(),
            (i, g) => format!("issuer {i}, guard {g}"),
        }
    };
    row(
        &mut t,
        "figure",
        "issuer".into(),
        "guard".into(),
        "target",
        "result",
    );
    let ci = &r["cold_init"];
    row(
        &mut t,
        &format!(
            "cold init, median / p95 (ms, n={})",
            ci["issuer"]["summary"]["n"]
        ),
        med_p95(&ci["issuer"]["summary"], "ms"),
        med_p95(&ci["guard"]["summary"], "ms"),
        "< 25 ms",
        &both(ci),
    );
    row(
        &mut t,
        "  RSS at first next, median (MiB)",
        mib(&ci["issuer"]["rss_at_init_kib"]["median_kib"]),
        mib(&ci["guard"]["rss_at_init_kib"]["median_kib"]),
        "",
        "",
    );
    let fa = &r["cold_first_answer"];
    row(
        &mut t,
        &format!(
            "cold first answer, median / p95 (ms, n={})",
            fa["issuer"]["summary"]["n"]
        ),
        med_p95(&fa["issuer"]["summary"], "ms"),
        med_p95(&fa["guard"]["summary"], "ms"),
        "issuer < 150",
        &both(fa),
    );
    let mem = &r["memory"];
    row(
        &mut t,
        &format!(
            "peak RSS over {} invocations (MiB)",
            mem["issuer"]["invocations"]
        ),
        mib(&mem["issuer"]["peak_rss_kib"]),
        mib(&mem["guard"]["peak_rss_kib"]),
        "< 32 MiB",
        &both(mem),
    );
    row(
        &mut t,
        "  mean time per invocation, emulator (ms)",
        fmt(&mem["issuer"]["mean_ms_per_invocation"]),
        fmt(&mem["guard"]["mean_ms_per_invocation"]),
        "",
        "",
    );
    let size = &r["size"];
    row(
        &mut t,
        "binary (MiB)",
        bytes_mib(&size["issuer"]["binary_bytes"]),
        bytes_mib(&size["guard"]["binary_bytes"]),
        "",
        "",
    );
    row(
        &mut t,
        &format!("zip of that binary, {} (MiB)", std::env::consts::ARCH),
        bytes_mib(&size["issuer"]["host_zip_bytes"]),
        bytes_mib(&size["guard"]["host_zip_bytes"]),
        "< 5 MiB",
        &both(size),
    );
    row(
        &mut t,
        "zip from make package, arm64 (MiB)",
        bytes_mib(&size["issuer"]["arm64_package_zip_bytes"]),
        bytes_mib(&size["guard"]["arm64_package_zip_bytes"]),
        "< 5 MiB",
        "",
    );

    t += &format!(
        "\nwarm handler cost, in-process with in-memory fakes (µs per invocation; harness {})\n",
        r["harness_profile"].as_str().unwrap_or_default()
    );
    t += &format!("{:<44} {:>12} {:>12} {:>8}\n", "path", "median", "p95", "n");
    if let Some(w) = r["warm_handler_us"].as_object() {
        for (name, v) in w {
            t += &format!(
                "{name:<44} {:>12} {:>12} {:>8}\n",
                fmt(&v["median_us"]),
                fmt(&v["p95_us"]),
                v["n"]
            );
        }
    }

    t += "\nsequential AWS calls before the decision (stop issued / verdict decided), counted by an SDK interceptor\n";
    t += &format!(
        "{:<44} {:>6} {:>7} {:>7} {:>10}  calls in sequence; [then, with or after the decision]\n",
        "path", "calls", "target", "result", "decided ms"
    );
    if let Some(p) = r["round_trips"].as_object() {
        for (name, v) in p {
            let list = |k: &str| {
                v[k].as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(Value::as_str)
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                    .unwrap_or_default()
            };
            let early = list("other_calls_before_decision");
            t += &format!(
                "{name:<44} {:>6} {:>7} {:>7} {:>10}  {} [{}]{}\n",
                v["sequential_calls"],
                v["target"].as_u64().map_or("-".into(), |x| x.to_string()),
                verdict(&v["pass"]),
                fmt(&v["decision_ms"]),
                list("chain").replace(", ", " > "),
                list("other_calls_with_or_after_decision"),
                if early.is_empty() {
                    String::new()
                } else {
                    format!(" BEFORE the decision: {early}")
                }
            );
        }
    }
    t += &burst::table(&r["bursts"]);
    if r["mode"] == "smoke" {
        t += "\nsmoke run: one sample of each, dev binaries; targets are not judged; bursts: one \
              burst of 100 (the bounded 1,000-instance run is tests/tests/burst.rs)\n";
    }
    t
}

fn fmt(v: &Value) -> String {
    v.as_f64().map_or_else(|| "-".into(), |x| format!("{x:.1}"))
}

fn mib(kib: &Value) -> String {
    kib.as_f64()
        .map_or_else(|| "-".into(), |k| format!("{:.1}", k / 1024.0))
}

fn bytes_mib(b: &Value) -> String {
    b.as_f64()
        .map_or_else(|| "-".into(), |x| format!("{:.2}", x / 1024.0 / 1024.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Options, String> {
        Options::parse(args.iter().map(|s| (*s).to_owned()))
    }

    #[test]
    fn smoke_defaults_to_one_of_everything_and_the_dev_binaries() {
        let o = parse(&["--smoke"]).expect("valid");
        assert!(o.smoke);
        assert_eq!((o.starts, o.invocations, o.iterations), (1, 2, 1));
        assert!(o.bin_dir.ends_with("target/debug"));
        assert!(
            o.out.ends_with("target/bench/smoke.json"),
            "never the full run's figures"
        );
        let full = parse(&[]).expect("valid");
        assert_eq!(
            (full.starts, full.invocations, full.iterations),
            (20, 1000, 2000)
        );
        assert!(full.bin_dir.ends_with("target/release"));
        assert!(full.out.ends_with("target/bench/results.json"));
    }

    #[test]
    fn bursts_alone_write_their_own_figures() {
        let o = parse(&["--bursts"]).expect("valid");
        assert!(o.bursts && !o.smoke);
        assert!(o.out.ends_with("target/bench/bursts.json"));
    }

    #[test]
    fn bad_arguments_are_refused() {
        assert!(parse(&["--starts"]).is_err());
        assert!(parse(&["--starts", "0"]).is_err());
        assert!(parse(&["--fast"]).is_err());
        assert_eq!(parse(&["--starts", "3"]).map(|o| o.starts), Ok(3));
    }

    #[test]
    fn a_round_trip_count_off_target_or_an_early_call_is_a_regression() {
        let ok = json!({"target": 3, "sequential_calls": 3, "other_calls_before_decision": []});
        let more = json!({"target": 3, "sequential_calls": 4, "other_calls_before_decision": []});
        let early = json!({"target": 2, "sequential_calls": 2, "other_calls_before_decision": ["DeleteTags"]});
        let untargeted = json!({"target": null, "sequential_calls": 2});
        assert_eq!(round_trip_regression("deny", &ok), None);
        assert!(round_trip_regression("deny", &more).is_some());
        assert!(round_trip_regression("allow", &early).is_some());
        assert_eq!(round_trip_regression("mint", &untargeted), None);
    }

    #[test]
    fn the_smoke_check_fails_on_a_missing_figure() {
        assert!(smoke_check(&json!({})).is_err());
    }
}
