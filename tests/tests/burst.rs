//! A burst in the throttle-faithful model (issue 11's acceptance, SPEC §8): the bounded run in
//! `make test` (two bursts of 1,000 in the batched design, one in today's, about 10 s);
//! `make bench` runs every scenario (docs/performance.md, *Bursts*).
//!
//! The batched design must stop every unauthorized instance of a 1,000-instance burst within
//! 5 s of it reaching `running` and the last within 30 s of the burst's start, with at most 300
//! EC2 requests, nothing in the dead-letter queue, no authorized instance stopped, one verdict
//! per cycle and one alert per deny; 50 legitimate starts inside a burst of 1,000 are allowed and
//! never stopped. Today's design in the same harness must do measurably worse: throttled
//! requests where the batched design has none or fewer.
//!
//! Needs nothing running: the model is in-process, in virtual time.

use ec2pass_tests::model::{Design, Figures, Scenario, run};

/// The fleet's seed (pending times, delivery delays, the SDK's retry jitter).
const SEED: u64 = 11;

fn both<A: Send, B: Send>(a: impl FnOnce() -> A + Send, b: impl FnOnce() -> B + Send) -> (A, B) {
    std::thread::scope(|s| {
        let a = s.spawn(a);
        let b = b();
        (a.join().unwrap_or_else(|e| std::panic::resume_unwind(e)), b)
    })
}

fn assert_met(f: &Figures) {
    let misses = f.misses();
    assert!(
        misses.is_empty(),
        "{}: the acceptance is missed: {}\n{f:#?}",
        f.scenario,
        misses.join("; ")
    );
}

#[test]
fn a_burst_is_stopped_seconds_after_running_in_few_calls_and_today_is_measurably_worse() {
    let started = std::time::Instant::now();
    let ((batched, legit), baseline) = both(
        || {
            let batched = run("burst", &Scenario::burst(1000), Design::Batched, SEED);
            let legit = run(
                "burst+50 legitimate",
                &Scenario::Burst {
                    instances: 1000,
                    legitimate: 50,
                    attacker: false,
                },
                Design::Batched,
                SEED,
            );
            (batched, legit)
        },
        || run("burst", &Scenario::burst(1000), Design::Baseline, SEED),
    );
    for f in [&batched, &legit, &baseline] {
        assert!(
            f.unsupported.is_empty(),
            "the model met calls it cannot answer: {:?}",
            f.unsupported
        );
    }

    // 1,000 unauthorized launches, batched.
    assert_met(&batched);
    assert_eq!(batched.deny_verdicts, 1000);

    // 50 legitimate among them.
    assert_met(&legit);
    assert_eq!(legit.authorized, 50);
    assert_eq!(legit.allow_verdicts, 50, "every legitimate start allowed");
    assert_eq!(legit.authorized_stopped, 0);
    assert_eq!(legit.deny_verdicts, 950);

    // Today's design in the same harness: throttled, and no better on any count.
    assert!(
        baseline.ec2_throttled > 0 && baseline.ec2_throttled > batched.ec2_throttled,
        "today's design is throttled where the batched one is not: {} vs {}",
        baseline.ec2_throttled,
        batched.ec2_throttled
    );
    assert!(baseline.ec2_requests > batched.ec2_requests);
    assert!(baseline.invocations > batched.invocations);

    let s = |v: Option<f64>| v.map_or_else(|| "-".into(), |x| format!("{x:.1}"));
    println!(
        "burst: batched, 1,000 launches: {} EC2 requests ({} throttled), {} invocations, last \
         stop {} s after the burst began, each within {} s of running (median {} s), {} in the \
         DLQ, {} deny alerts for {} denies; 50 legitimate of 1,000: {} allowed, {} stopped; \
         today's design: {} EC2 requests ({} throttled), {} in the failure \
         queue, {} guard-error alerts, median {} s / max {} s from running to stopped, {} \
         still running; {:.1}s",
        batched.ec2_requests,
        batched.ec2_throttled,
        batched.invocations,
        s(batched.last_stop_s),
        s(batched.stop_after_running_max_s),
        s(batched.stop_after_running_median_s),
        batched.failure_queue,
        batched.deny_alerts,
        batched.deny_verdicts,
        legit.allow_verdicts,
        legit.authorized_stopped,
        baseline.ec2_requests,
        baseline.ec2_throttled,
        baseline.failure_queue,
        baseline.guard_error_alerts,
        s(baseline.stop_after_running_median_s),
        s(baseline.stop_after_running_max_s),
        baseline.still_running,
        started.elapsed().as_secs_f64(),
    );
}
