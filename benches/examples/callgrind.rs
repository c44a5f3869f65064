//! A driver for load-independent cost counts: makes `N` calls of one shape of the `stacks`
//! bench (after 1,000 warm-up calls), so that `valgrind --tool=callgrind` counts its
//! instructions and clock reads. The cost of one call is the difference between two runs
//! divided by the difference in calls (ADR 0008):
//!
//! ```text
//! cargo build --release -p steadfast-benches --example callgrind
//! valgrind --tool=callgrind target/release/examples/callgrind five 10000
//! valgrind --tool=callgrind target/release/examples/callgrind five 30000
//! target/release/examples/callgrind sizes        # future and service sizes
//! ```
//!
//! Shapes (`_p`: the inner call is pending once): `bare`, `bare_p`, `two`, `two_p`, `four`,
//! `four_p`, `five`, `five_p` (the standard order), their tower counterparts `t2`, `t2_p`, `t4`,
//! `t4_p`, `t5`, `t5_p`, `deadline`, `deadline_p`, `timeout_p` (tower's `Timeout`), `retry`
//! (no budget), `retry_b`, `breaker`, `tw` (time window), `fs_tw` (failsafe's default),
//! `limit`, `at` (attempt timeout), `open` (an open breaker refusing, no timer), `open_inline`
//! (the same with an inline error, no allocation), `fs_open`
//! (failsafe's open breaker refusing), `sb_retry` (seatbelt's retry, as in the `stacks` bench)
//! and `shed` / `t_shed` (load shed, ours and tower's).

use std::time::Duration;

use steadfast_benches::{
    run_calls, run_rejected_calls, runtime, Echo, PendingOnce, Refuse, TpsBudgetPolicy,
    MAX_ATTEMPTS, TIMEOUT,
};
use steadfast_layers::breaker::{BreakDuration, CircuitBreakerLayer};
use steadfast_layers::deadline::DeadlineLayer;
use steadfast_layers::limit::ConcurrencyLimitLayer;
use steadfast_layers::retry::RetryLayer;
use steadfast_layers::shed::LoadShedLayer;
use steadfast_layers::timeout::AttemptTimeoutLayer;
use tower::{Layer, Service, ServiceBuilder};

#[path = "../harness.rs"]
#[allow(dead_code)]
mod harness;

fn deadline() -> DeadlineLayer {
    DeadlineLayer::new(TIMEOUT).expect("valid deadline")
}

fn retry(budget: bool) -> RetryLayer {
    let builder = RetryLayer::builder().max_attempts(MAX_ATTEMPTS);
    let builder = if budget { builder } else { builder.no_budget() };
    builder.build().expect("valid retry")
}

fn breaker() -> CircuitBreakerLayer {
    CircuitBreakerLayer::builder()
        .build()
        .expect("valid breaker")
}

fn attempt_timeout() -> AttemptTimeoutLayer {
    AttemptTimeoutLayer::new(TIMEOUT).expect("valid attempt timeout")
}

fn limit() -> ConcurrencyLimitLayer {
    ConcurrencyLimitLayer::new(25).expect("valid limit")
}

macro_rules! two {
    ($inner:expr) => {
        ServiceBuilder::new()
            .layer(deadline())
            .layer(retry(true))
            .service($inner)
    };
}
macro_rules! four {
    ($inner:expr) => {
        ServiceBuilder::new()
            .layer(deadline())
            .layer(retry(true))
            .layer(LoadShedLayer::new())
            .layer(limit())
            .service($inner)
    };
}
macro_rules! five {
    ($inner:expr) => {
        ServiceBuilder::new()
            .layer(deadline())
            .layer(retry(true))
            .layer(breaker())
            .layer(attempt_timeout())
            .layer(limit())
            .service($inner)
    };
}
macro_rules! tower_two {
    ($inner:expr) => {
        ServiceBuilder::new()
            .timeout(TIMEOUT)
            .retry(TpsBudgetPolicy::finagle())
            .service($inner)
    };
}
macro_rules! tower_four {
    ($inner:expr) => {
        ServiceBuilder::new()
            .timeout(TIMEOUT)
            .retry(TpsBudgetPolicy::finagle())
            .load_shed()
            .concurrency_limit(25)
            .service($inner)
    };
}
macro_rules! tower_five {
    ($inner:expr) => {
        ServiceBuilder::new()
            .timeout(TIMEOUT)
            .retry(TpsBudgetPolicy::finagle())
            .load_shed()
            .timeout(TIMEOUT)
            .concurrency_limit(25)
            .service($inner)
    };
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let shape = args.get(1).map_or("five", String::as_str);
    let n: u64 = args
        .get(2)
        .map_or(Ok(10_000), |a| a.parse())
        .expect("a number of calls");
    let rt = runtime().expect("tokio runtime");
    let _context = rt.enter();

    macro_rules! size {
        ($name:expr, $svc:expr) => {{
            let mut svc = $svc;
            let fut = svc.call(1);
            println!(
                "{:<10} future {:>4} B  service {:>4} B",
                $name,
                std::mem::size_of_val(&fut),
                std::mem::size_of_val(&svc)
            );
        }};
    }
    macro_rules! calls {
        ($svc:expr) => {{
            let mut svc = $svc;
            rt.block_on(run_calls(&mut svc, 1_000));
            rt.block_on(run_calls(&mut svc, n));
        }};
    }
    macro_rules! refusals {
        ($svc:expr) => {{
            let mut svc = $svc;
            rt.block_on(run_rejected_calls(&mut svc, 1_000));
            rt.block_on(run_rejected_calls(&mut svc, n));
        }};
    }
    match shape {
        "sizes" => {
            size!("two", two!(Echo));
            size!("four", four!(Echo));
            size!("five", five!(Echo));
            size!("t2", tower_two!(Echo));
            size!("t4", tower_four!(Echo));
            size!("t5", tower_five!(Echo));
            size!("deadline", deadline().layer(Echo));
            size!("retry_b", retry(true).layer(Echo));
            size!("breaker", breaker().layer(Echo));
            size!("at", attempt_timeout().layer(Echo));
            size!("limit", limit().layer(Echo));
            size!("timeout", tower::timeout::Timeout::new(Echo, TIMEOUT));
        }
        "bare" => calls!(Echo),
        "bare_p" => calls!(PendingOnce),
        "two" => calls!(two!(Echo)),
        "two_p" => calls!(two!(PendingOnce)),
        "four" => calls!(four!(Echo)),
        "four_p" => calls!(four!(PendingOnce)),
        "five" => calls!(five!(Echo)),
        "five_p" => calls!(five!(PendingOnce)),
        "t2" => calls!(tower_two!(Echo)),
        "t2_p" => calls!(tower_two!(PendingOnce)),
        "t4" => calls!(tower_four!(Echo)),
        "t4_p" => calls!(tower_four!(PendingOnce)),
        "t5" => calls!(tower_five!(Echo)),
        "t5_p" => calls!(tower_five!(PendingOnce)),
        "deadline" => calls!(deadline().layer(Echo)),
        "deadline_p" => calls!(deadline().layer(PendingOnce)),
        "timeout_p" => calls!(tower::timeout::Timeout::new(PendingOnce, TIMEOUT)),
        "retry" => calls!(retry(false).layer(Echo)),
        "retry_b" => calls!(retry(true).layer(Echo)),
        "breaker" => calls!(breaker().layer(Echo)),
        "tw" => calls!(CircuitBreakerLayer::builder()
            .time_window(Duration::from_secs(30))
            .build()
            .expect("valid breaker")
            .layer(Echo)),
        "fs_tw" => calls!(harness::failsafe_default(Echo)),
        "limit" => calls!(limit().layer(Echo)),
        "at" => calls!(attempt_timeout().layer(Echo)),
        "open" => refusals!(CircuitBreakerLayer::builder()
            .break_duration(BreakDuration::constant(harness::LONG_BREAK))
            .build()
            .expect("valid breaker")
            .layer(Refuse)),
        "open_inline" => refusals!(CircuitBreakerLayer::builder()
            .break_duration(BreakDuration::constant(harness::LONG_BREAK))
            .build()
            .expect("valid breaker")
            .with_error::<harness::InlineError>()
            .layer(Refuse)),
        "fs_open" => {
            let mut svc = harness::tripped_failsafe(&rt);
            rt.block_on(run_rejected_calls(&mut svc, 1_000));
            rt.block_on(run_rejected_calls(&mut svc, n));
        }
        "sb_retry" => {
            let context =
                seatbelt::ResilienceContext::<u32, Result<u32, std::convert::Infallible>>::new(
                    tick::Clock::new_tokio(),
                )
                .name("bench");
            calls!(seatbelt::retry::Retry::layer("retry", &context)
                .clone_input()
                .recovery_with(|out: &Result<u32, std::convert::Infallible>, _| match out {
                    Ok(_) => seatbelt::RecoveryInfo::never(),
                    Err(_) => seatbelt::RecoveryInfo::retry(),
                })
                .max_retry_attempts(MAX_ATTEMPTS - 1)
                .layer(Echo))
        }
        "shed" => calls!(LoadShedLayer::new().layer(Echo)),
        "t_shed" => calls!(tower::load_shed::LoadShed::new(Echo)),
        other => panic!("unknown shape {other}: see the list at the top of callgrind.rs"),
    }
}
