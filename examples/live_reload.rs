//! Live reload: a client stack whose retry, circuit breaker, hedge, rate limit and concurrency
//! limit take new settings from a policy file while calls run, through the layers' handles.
//!
//! The policy file is `key = value` lines (`#` starts a comment): every second the example looks
//! at the file's modification time, and when it changed it reads the file and applies each value
//! that changed through the handle of its layer, printing what changed. A value a layer refuses
//! (the builder's own check, with its path) is printed and left as it was; the rest apply. No
//! call in flight is dropped and the breaker keeps its state.
//!
//! ```text
//! cargo run --example live_reload                  # a demo: edits its own file twice, then stops
//! cargo run --example live_reload -- policy.conf   # watches policy.conf (written if missing) until Ctrl-C
//! ```
//!
//! The keys, with the values the demo starts from:
//!
//! ```text
//! retry.max_attempts = 3
//! retry.backoff.base_ms = 20
//! retry.backoff.cap_ms = 200
//! breaker.failure_rate = 0.5
//! breaker.minimum_calls = 20
//! breaker.break_ms = 2000
//! hedge.delay_ms = 80
//! rate.per_second = 400
//! rate.burst = 40
//! limit.max_in_flight = 16
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use steadfast::layers::breaker::{BreakDuration, BreakerHandle, CircuitBreakerLayer};
use steadfast::layers::hedge::{HedgeAny, HedgeDelay, HedgeHandle, HedgeLayer};
use steadfast::layers::limit::{ConcurrencyLimitHandle, ConcurrencyLimitLayer};
use steadfast::layers::rate::{RateLimitHandle, RateLimitLayer};
use steadfast::layers::retry::{Backoff, RetryHandle, RetryLayer};
use steadfast::layers::BoxError;
use steadfast::ConfigError;
use tower::{service_fn, ServiceBuilder, ServiceExt};

const DEFAULT_POLICY: &str = "\
# The client's resilience policy: edit and save, the example applies the changes.
retry.max_attempts = 3
retry.backoff.base_ms = 20
retry.backoff.cap_ms = 200
breaker.failure_rate = 0.5
breaker.minimum_calls = 20
breaker.break_ms = 2000
hedge.delay_ms = 80
rate.per_second = 400
rate.burst = 40
limit.max_in_flight = 16
";

/// The demo's first edit: more attempts, a stricter breaker, a later hedge, a rate below the
/// traffic (refusals show in the tally), fewer calls in flight.
const EDIT_1: &str = "\
retry.max_attempts = 5
retry.backoff.base_ms = 20
retry.backoff.cap_ms = 200
breaker.failure_rate = 0.3
breaker.minimum_calls = 20
breaker.break_ms = 1000
hedge.delay_ms = 150
rate.per_second = 100
rate.burst = 10
limit.max_in_flight = 4
";

/// The demo's second edit: one value the breaker refuses (a rate above 1), one typo; the other
/// change (the concurrency limit) still applies.
const EDIT_2: &str = "\
retry.max_attempts = 5
retry.backoff.base_ms = 20
retry.backoff.cap_ms = 200
breaker.failure_rate = 1.5
breaker.minimum_calls = twenty
breaker.break_ms = 1000
hedge.delay_ms = 150
rate.per_second = 100
rate.burst = 10
limit.max_in_flight = 8
";

/// The settings, as read from the file (every key optional: a missing key keeps its value).
type Policy = BTreeMap<String, String>;

/// One handle per layer of the stack.
struct Handles {
    retry: RetryHandle,
    breaker: BreakerHandle,
    hedge: HedgeHandle,
    rate: RateLimitHandle,
    limit: ConcurrencyLimitHandle,
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let arg = std::env::args().nth(1);
    let demo = arg.is_none();
    let path = match arg {
        Some(p) => PathBuf::from(p),
        None => {
            std::env::temp_dir().join(format!("steadfast-live-reload-{}.conf", std::process::id()))
        }
    };
    if demo || !path.exists() {
        std::fs::write(&path, DEFAULT_POLICY)?;
    }
    let mut applied =
        parse(&std::fs::read_to_string(&path)?).map_err(|e| format!("{}: {e}", path.display()))?;

    // The stack, built from the policy file as it is now.
    let retry = RetryLayer::builder()
        .max_attempts(whole(&applied, "retry.max_attempts")?)
        .backoff(backoff(&applied)?)
        .build()?;
    let breaker = CircuitBreakerLayer::builder()
        .failure_rate(number(&applied, "breaker.failure_rate")?)
        .minimum_calls(whole(&applied, "breaker.minimum_calls")?)
        .count_window(50)
        .break_duration(BreakDuration::constant(millis(
            &applied,
            "breaker.break_ms",
        )?))
        .build()?;
    let hedge = HedgeLayer::builder()
        .delay(HedgeDelay::fixed(millis(&applied, "hedge.delay_ms")?))
        .policy(HedgeAny)
        .build()?;
    let rate = RateLimitLayer::builder(whole(&applied, "rate.per_second")?, Duration::from_secs(1))
        .burst(whole(&applied, "rate.burst")?)
        .wait()
        .max_wait(Duration::from_millis(500))
        .build()?;
    let limit = ConcurrencyLimitLayer::builder(whole(&applied, "limit.max_in_flight")? as usize)
        .wait()
        .max_wait(Duration::from_millis(500))
        .build()?;
    let handles = Handles {
        retry: retry.handle(),
        breaker: breaker.handle(),
        hedge: hedge.handle(),
        rate: rate.handle(),
        limit: limit.handle(),
    };

    // A peer that is slow now and then (every 7th call takes 120 ms: hedged) and fails one
    // call in five (retried).
    let served = Arc::new(AtomicU64::new(0));
    let count = served.clone();
    let peer = service_fn(move |n: u64| {
        let k = count.fetch_add(1, Ordering::Relaxed);
        async move {
            let ms = if k.is_multiple_of(7) { 120 } else { 5 };
            tokio::time::sleep(Duration::from_millis(ms)).await;
            if k.is_multiple_of(5) {
                Err(std::io::Error::other("unavailable"))
            } else {
                Ok(n)
            }
        }
    });
    // Retry outermost, each attempt hedged, then the backpressure layers; the breaker innermost,
    // beside the peer, so that it judges the peer's answers (not the limits' refusals).
    let client = ServiceBuilder::new()
        .layer(retry)
        .layer(hedge)
        .layer(rate)
        .layer(limit)
        .layer(breaker)
        .service(peer);

    // Traffic: a call every 5 ms, each on its own task; a tally printed every second.
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    {
        let (ok, failed) = (ok.clone(), failed.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(5));
            for n in 0u64.. {
                tick.tick().await;
                let (client, ok, failed) = (client.clone(), ok.clone(), failed.clone());
                tokio::spawn(async move {
                    match client.oneshot(n).await {
                        Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                        Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                    };
                });
            }
        });
    }

    println!("watching {} (checked every second)", path.display());
    let mut last_modified = std::fs::metadata(&path)?.modified().ok();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    for second in 1u32.. {
        tick.tick().await;
        println!(
            "[{second:>2}s] ok {:>4}  failed {:>4}  peer calls {:>4}  breaker {}",
            ok.swap(0, Ordering::Relaxed),
            failed.swap(0, Ordering::Relaxed),
            served.swap(0, Ordering::Relaxed),
            handles.breaker.state(),
        );
        if demo {
            match second {
                3 => std::fs::write(&path, EDIT_1)?,
                6 => std::fs::write(&path, EDIT_2)?,
                9 => break,
                _ => {}
            }
        }
        // Poll the modification time; read the file only when it moved.
        let modified = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
        if modified == last_modified {
            continue;
        }
        last_modified = modified;
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                println!("  cannot read {}: {e}", path.display());
                continue;
            }
        };
        match parse(&text) {
            Ok(policy) => apply(&handles, &mut applied, &policy),
            Err(e) => println!("  {}: {e} (nothing applied)", path.display()),
        }
    }
    if demo {
        let _ = std::fs::remove_file(&path);
    }
    Ok(())
}

/// Applies every value of `policy` that differs from `applied`, printing each change, and
/// records what was applied (a refused value is not: it is tried again at the next change).
fn apply(h: &Handles, applied: &mut Policy, policy: &Policy) {
    let changed = |key: &str| policy.get(key) != applied.get(key) && policy.contains_key(key);
    let mut done: Vec<&str> = Vec::new();
    let mut report = |keys: &[&'static str], result: Result<(), String>| {
        let what = keys
            .iter()
            .map(|k| format!("{k}: {} -> {}", show(applied, k), show(policy, k)))
            .collect::<Vec<_>>()
            .join(", ");
        match result {
            Ok(()) => {
                println!("  applied {what}");
                done.extend_from_slice(keys);
            }
            Err(e) => println!("  refused {what}: {e}"),
        }
    };
    let cfg = |e: ConfigError| e.to_string();
    if changed("retry.max_attempts") {
        let r = whole(policy, "retry.max_attempts")
            .and_then(|n| h.retry.set_max_attempts(n).map_err(cfg));
        report(&["retry.max_attempts"], r);
    }
    if changed("retry.backoff.base_ms") || changed("retry.backoff.cap_ms") {
        let r = backoff(policy).and_then(|b| h.retry.set_backoff(b).map_err(cfg));
        report(&["retry.backoff.base_ms", "retry.backoff.cap_ms"], r);
    }
    if changed("breaker.failure_rate") {
        let r = number(policy, "breaker.failure_rate")
            .and_then(|x| h.breaker.set_failure_rate(x).map_err(cfg));
        report(&["breaker.failure_rate"], r);
    }
    if changed("breaker.minimum_calls") {
        let r = whole(policy, "breaker.minimum_calls")
            .and_then(|n| h.breaker.set_minimum_calls(n).map_err(cfg));
        report(&["breaker.minimum_calls"], r);
    }
    if changed("breaker.break_ms") {
        let r = millis(policy, "breaker.break_ms").and_then(|d| {
            h.breaker
                .set_break_duration(BreakDuration::constant(d))
                .map_err(cfg)
        });
        report(&["breaker.break_ms"], r);
    }
    if changed("hedge.delay_ms") {
        let r = millis(policy, "hedge.delay_ms")
            .and_then(|d| h.hedge.set_delay(HedgeDelay::fixed(d)).map_err(cfg));
        report(&["hedge.delay_ms"], r);
    }
    if changed("rate.per_second") || changed("rate.burst") {
        let r = whole(policy, "rate.per_second").and_then(|n| {
            let burst = whole(policy, "rate.burst")?;
            h.rate
                .set_rate(n, Duration::from_secs(1), Some(burst))
                .map_err(cfg)
        });
        report(&["rate.per_second", "rate.burst"], r);
    }
    if changed("limit.max_in_flight") {
        let r = whole(policy, "limit.max_in_flight")
            .and_then(|n| h.limit.set_max_in_flight(n as usize).map_err(cfg));
        report(&["limit.max_in_flight"], r);
    }
    for key in done {
        if let Some(v) = policy.get(key) {
            applied.insert(key.to_owned(), v.clone());
        }
    }
}

fn show<'a>(p: &'a Policy, key: &str) -> &'a str {
    p.get(key).map_or("(unset)", String::as_str)
}

/// `key = value` lines; blank lines and `#` comments skipped.
fn parse(text: &str) -> Result<Policy, String> {
    let mut policy = Policy::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| format!("line {}: expected `key = value`", i + 1))?;
        policy.insert(key.trim().to_owned(), value.trim().to_owned());
    }
    Ok(policy)
}

/// A finite, non-negative number at `key` (the handle judges its range).
fn number(p: &Policy, key: &str) -> Result<f64, String> {
    let v = p.get(key).ok_or_else(|| format!("`{key}` is missing"))?;
    let n: f64 = v
        .parse()
        .map_err(|_| format!("`{key}` = {v:?} is not a number"))?;
    if !n.is_finite() || n < 0.0 {
        return Err(format!("`{key}` = {v} must be a finite number, at least 0"));
    }
    Ok(n)
}

/// A whole number at `key`, at most `u32::MAX`.
fn whole(p: &Policy, key: &str) -> Result<u32, String> {
    let n = number(p, key)?;
    if n.fract() != 0.0 || n > f64::from(u32::MAX) {
        return Err(format!("`{key}` = {n} must be a whole number"));
    }
    Ok(n as u32)
}

fn millis(p: &Policy, key: &str) -> Result<Duration, String> {
    number(p, key).map(|ms| Duration::from_secs_f64(ms / 1000.0))
}

fn backoff(p: &Policy) -> Result<Backoff, String> {
    Ok(Backoff::exponential(
        millis(p, "retry.backoff.base_ms")?,
        millis(p, "retry.backoff.cap_ms")?,
    ))
}
