//! Bursts: every scenario of the throttle-faithful model (`ec2pass_tests::model`), today's
//! design beside the batched one, in virtual time. Needs nothing running; the figures are
//! virtual seconds and request counts, the same in a debug or a release build (only `wall_s`
//! differs). See docs/performance.md, *Bursts*.

use ec2pass_tests::model::scenario::{
    ACTIVATION, ATTACK, DELIVERY_MAX, DELIVERY_MIN, EPOCH, HORIZON, PENDING_MAX, PENDING_MIN,
};
use ec2pass_tests::model::{Design, Scenario, bucket, run};
use serde_json::{Value, json};

use crate::world::Fallible;

/// The seed of every scenario (the fleet's pending times, delivery delays, the SDK's jitter):
/// the same as `tests/tests/burst.rs`.
pub const SEED: u64 = 11;

/// Runs every scenario in both designs (smoke: one burst of 100, both designs); the figures,
/// and whether the batched design meets the acceptance on the 1,000-instance burst.
pub async fn measure(smoke: bool) -> Fallible<Value> {
    let scenarios: Vec<(String, Scenario)> = if smoke {
        vec![("burst of 100 (smoke)".into(), Scenario::burst(100))]
    } else {
        Scenario::all()
            .into_iter()
            .map(|(n, s)| (n.to_owned(), s))
            .collect()
    };
    let mut rows = Vec::new();
    for (name, scenario) in scenarios {
        eprintln!("[bench] bursts: {name}");
        // The two designs at once, each on a thread of its own (a hub's run is batched only).
        let designs: &[Design] = match scenario {
            Scenario::Accounts { .. } => &[Design::Batched],
            _ => &Design::BOTH,
        };
        let runs: Vec<_> = designs
            .iter()
            .map(|&design| {
                let (name, scenario) = (name.clone(), scenario.clone());
                tokio::task::spawn_blocking(move || run(&name, &scenario, design, SEED))
            })
            .collect();
        let mut figures = Vec::new();
        for r in runs {
            figures.push(r.await.map_err(|e| format!("burst model {name}: {e}"))?);
        }
        rows.push((name, scenario, figures));
    }
    let acceptance = rows
        .iter()
        .find(|(name, _, _)| name == "burst")
        .and_then(|(_, _, f)| f.iter().find(|f| f.design == "batched"))
        .map(|f| {
            let misses = f.misses();
            json!({"scenario": "burst", "design": "batched", "pass": misses.is_empty(), "misses": misses})
        });
    Ok(json!({
        "seed": SEED,
        "model": model(),
        "scenarios": rows.iter().map(|(name, scenario, figures)| {
            let mut v = json!({"name": name, "scenario": scenario});
            for f in figures {
                v[f.design] = serde_json::to_value(f).unwrap_or(Value::Null);
                for (account, one) in &f.by_account {
                    v[f.design]["by_account"][account]["misses"] = json!(one.misses());
                }
            }
            v
        }).collect::<Vec<_>>(),
        "acceptance": acceptance,
    }))
}

/// The model's rates and assumptions, for the JSON.
fn model() -> Value {
    let buckets: serde_json::Map<String, Value> = bucket::Key::ALL
        .iter()
        .map(|k| {
            let r = k.rate();
            (
                format!("{k:?}"),
                json!({"capacity": r.capacity, "refill_per_s": r.refill}),
            )
        })
        .collect();
    let latency = ec2pass_tests::model::ec2::Latency::default();
    json!({
        "source": "Request throttling for the Amazon EC2 API, Amazon EC2 Developer Guide",
        "buckets": buckets,
        "ec2_latency_ms": {
            "DescribeInstances": latency.describe.as_millis(),
            "DescribeInstances_per_instance_listed": latency.describe_per_instance.as_millis(),
            "StopInstances_TerminateInstances": latency.stop.as_millis(),
            "DeleteTags_ModifyInstanceAttribute": latency.mutate.as_millis(),
        },
        "dynamodb_latency_ms": ec2pass_tests::model::aws::DYNAMODB_LATENCY.as_millis(),
        "sns_latency_ms": ec2pass_tests::model::aws::SNS_LATENCY.as_millis(),
        "pending_s": [PENDING_MIN.as_secs_f64(), PENDING_MAX.as_secs_f64()],
        "eventbridge_delivery_s": [DELIVERY_MIN.as_secs_f64(), DELIVERY_MAX.as_secs_f64()],
        "attacker_per_s": ATTACK.iter().map(|(api, key, rate)| json!({"api": api, "bucket": format!("{key:?}"), "per_s": rate})).collect::<Vec<_>>(),
        "horizon_s": HORIZON.as_secs(),
        "epoch": EPOCH.rfc3339(),
        "activation": ACTIVATION.rfc3339(),
    })
}

fn s(v: &Value) -> String {
    v.as_f64().map_or_else(|| "-".into(), |x| format!("{x:.1}"))
}

fn n(v: &Value) -> String {
    v.as_u64().map_or_else(|| "-".into(), |x| x.to_string())
}

/// One figure of both designs, `baseline / batched`.
fn pair(row: &Value, f: impl Fn(&Value) -> String) -> String {
    format!("{} / {}", f(&row["baseline"]), f(&row["batched"]))
}

/// The Bursts table: one row per figure, one column per scenario, each cell `today / batched`.
pub fn table(v: &Value) -> String {
    let rows = v["scenarios"].as_array().cloned().unwrap_or_default();
    let mut t = String::from(
        "\nbursts, in the throttle-faithful EC2 model (virtual time): today's design (one \
         invocation per event) / the batched one (SQS)\n",
    );
    let width = 25;
    t += &format!("{:<44}", "figure");
    for r in &rows {
        t += &format!(" {:>width$}", r["name"].as_str().unwrap_or_default());
    }
    t.push('\n');
    let line = |t: &mut String, label: &str, f: &dyn Fn(&Value) -> String| {
        *t += &format!("{label:<44}");
        for r in &rows {
            *t += &format!(" {:>width$}", pair(r, f));
        }
        t.push('\n');
    };
    line(&mut t, "EC2 requests", &|f| n(&f["ec2_requests"]));
    line(&mut t, "  of which throttled", &|f| n(&f["ec2_throttled"]));
    for api in ["DescribeInstances", "StopInstances", "DeleteTags"] {
        line(&mut t, &format!("  {api} (throttled)"), &|f| {
            let c = &f["ec2_by_api"][api];
            if c.is_null() {
                "0".into()
            } else {
                format!("{}({})", n(&c["requests"]), n(&c["throttled"]))
            }
        });
    }
    line(&mut t, "attacker's requests (throttled)", &|f| {
        let (mut req, mut thr) = (0, 0);
        if let Some(m) = f["attacker"].as_object() {
            for c in m.values() {
                req += c["requests"].as_u64().unwrap_or(0);
                thr += c["throttled"].as_u64().unwrap_or(0);
            }
        }
        if req == 0 {
            "-".into()
        } else {
            format!("{req}({thr})")
        }
    });
    line(&mut t, "guard invocations", &|f| n(&f["invocations"]));
    line(&mut t, "  of which failed (error or timeout)", &|f| {
        n(&json!(
            f["invocation_errors"].as_u64().unwrap_or(0)
                + f["invocation_timeouts"].as_u64().unwrap_or(0)
        ))
    });
    line(&mut t, "failure queue / DLQ", &|f| n(&f["failure_queue"]));
    line(&mut t, "guard-error alerts", &|f| {
        n(&f["guard_error_alerts"])
    });
    line(&mut t, "deny alerts / deny verdicts", &|f| {
        format!("{}:{}", n(&f["deny_alerts"]), n(&f["deny_verdicts"]))
    });
    line(&mut t, "verdicts per cycle, most", &|f| {
        n(&f["verdicts_per_cycle_max"])
    });
    line(&mut t, "allowed / authorized stopped", &|f| {
        format!(
            "{}:{}",
            n(&f["allow_verdicts"]),
            n(&f["authorized_stopped"])
        )
    });
    line(&mut t, "unauthorized: running→stopped median (s)", &|f| {
        s(&f["stop_after_running_median_s"])
    });
    line(&mut t, "unauthorized: running→stopped max (s)", &|f| {
        s(&f["stop_after_running_max_s"])
    });
    line(&mut t, "last stop, from the start (s)", &|f| {
        s(&f["last_stop_s"])
    });
    line(&mut t, "unauthorized still running at the end", &|f| {
        n(&f["still_running"])
    });
    line(&mut t, "sweep runs (longest, s)", &|f| {
        let runs = f["sweep_runs_s"].as_array().cloned().unwrap_or_default();
        if runs.is_empty() {
            "-".into()
        } else {
            let longest = runs.iter().filter_map(Value::as_f64).fold(0.0, f64::max);
            format!("{}({longest:.1})", runs.len())
        }
    });
    line(&mut t, "last verdict, from the start (s)", &|f| {
        s(&f["last_verdict_s"])
    });
    line(&mut t, "ended at (s; * = at the horizon)", &|f| {
        format!(
            "{}{}",
            s(&f["ended_s"]),
            if f["quiet"] == false { "*" } else { "" }
        )
    });
    // A hub's runs: the key figures of each member account.
    for r in &rows {
        let Some(accounts) = r["batched"]["by_account"].as_object() else {
            continue;
        };
        t += &format!(
            "{} (batched), per account:\n",
            r["name"].as_str().unwrap_or_default()
        );
        for (account, f) in accounts {
            t += &format!(
                "  {account}: {} EC2 requests ({} throttled), running→stopped median {} s, max \
                 {} s, last stop {} s, {} still running, misses: {}\n",
                n(&f["ec2_requests"]),
                n(&f["ec2_throttled"]),
                s(&f["stop_after_running_median_s"]),
                s(&f["stop_after_running_max_s"]),
                s(&f["last_stop_s"]),
                n(&f["still_running"]),
                misses(f),
            );
        }
    }
    let a = &v["acceptance"];
    if !a.is_null() {
        let verdict = match a["pass"].as_bool() {
            Some(true) => "pass".to_owned(),
            Some(false) => format!(
                "MISS: {}",
                a["misses"]
                    .as_array()
                    .map(|m| m
                        .iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join("; "))
                    .unwrap_or_default()
            ),
            None => "not judged".into(),
        };
        t += &format!(
            "acceptance (1,000-instance burst, batched: each stop within 5 s of running, the \
             last within 30 s, at most 300 EC2 requests, nothing in the DLQ, none authorized \
             stopped, one verdict per cycle and one alert per deny): {verdict}\n"
        );
    }
    t
}

/// What one account's figures miss of issue 11's acceptance (`misses`, added by [`measure`]),
/// or `none`.
fn misses(f: &Value) -> String {
    let misses: Vec<&str> = f["misses"]
        .as_array()
        .map(|m| m.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if misses.is_empty() {
        "none".into()
    } else {
        misses.join("; ")
    }
}

/// The figures smoke mode must have produced.
pub fn missing(v: &Value) -> Vec<String> {
    let mut missing = Vec::new();
    let rows = v["scenarios"].as_array().cloned().unwrap_or_default();
    if rows.is_empty() {
        missing.push("bursts: no scenario ran".into());
    }
    for r in &rows {
        for design in ["baseline", "batched"] {
            let f = &r[design];
            if f.is_null() && design == "baseline" && r["scenario"]["kind"] == "accounts" {
                continue; // a hub's run is batched only
            }
            let requests = f["ec2_requests"].as_u64().is_some_and(|x| x > 0);
            let stopped = f["stop_after_running_max_s"]
                .as_f64()
                .is_some_and(f64::is_finite);
            if !(requests && stopped) {
                missing.push(format!("bursts.{}.{design}", r["name"]));
            }
        }
    }
    missing
}

#[cfg(test)]
mod tests {
    use super::*;
    use ec2pass_tests::model::Figures;

    #[tokio::test]
    async fn the_smoke_burst_produces_every_figure_it_checks() {
        let v = measure(true).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(missing(&v), Vec::<String>::new(), "{v:#}");
        assert!(table(&v).contains("burst of 100 (smoke)"));
        assert!(v["acceptance"].is_null(), "smoke judges nothing");
    }

    #[test]
    fn the_table_shows_both_designs_of_each_scenario() {
        let f = |design: &'static str, requests: u64| Figures {
            scenario: "burst".into(),
            design,
            ec2_requests: requests,
            stop_after_running_max_s: Some(2.0),
            quiet: true,
            ..Figures::default()
        };
        let v = json!({
            "scenarios": [{"name": "burst", "baseline": serde_json::to_value(f("baseline", 9000)).unwrap_or_default(),
                           "batched": serde_json::to_value(f("batched", 95)).unwrap_or_default()}],
            "acceptance": {"pass": true},
        });
        let t = table(&v);
        assert!(t.contains("9000 / 95"), "{t}");
        assert!(t.contains("acceptance") && t.contains("pass"), "{t}");
        assert!(missing(&v).is_empty());
        assert!(!missing(&json!({})).is_empty());
    }
}
