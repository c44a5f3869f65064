//! Load generators and latency summaries.
//!
//! - [`closed_loop`]: a fixed number of requests sent by a fixed number of concurrent callers,
//!   each sending its next request when the previous one finished.
//! - [`open_loop`]: Poisson arrivals at a fixed rate for a fixed time, each request independent
//!   of how the others fare, so that retries add load rather than slow the arrivals down (the
//!   way real overload feeds back).
//!
//! Each logical request gets an id (`x-lab-request-id`, from 0) and its latency is measured on
//! [`tokio::time::Instant`] around the whole call, retries and backoffs included. A request that
//! fails is noted in the [`Ledger`] as given up by its caller at that instant. Each [`Record`]
//! keeps when its request ended and how (the HTML report's time series are binned from them
//! after the run, so nothing is added to the measured path).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::Uri;
use steadfast_layers::breaker::CircuitOpen;
use steadfast_layers::overload::Overloaded;
use steadfast_layers::rng::{RandomSource, SeededRng};
use steadfast_layers::BoxError;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower::{Service, ServiceExt};

use crate::client::{get, LabRequest, LabResponse};
use crate::ledger::Ledger;
use crate::progress::Counter;

/// How a logical request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// With a 2xx.
    Succeeded,
    /// With another status, or an error other than a refusal.
    Failed,
    /// With a client-side layer's refusal: an open breaker ([`CircuitOpen`]) or a backpressure
    /// layer ([`Overloaded`]) turned it away, found anywhere in the error's source chain (so a
    /// retry layer's give-up after a refused attempt counts).
    Refused,
}

impl Outcome {
    /// How `result` ended: a 2xx succeeded, a refusal was refused, anything else failed.
    ///
    /// ```
    /// use steadfast_lab::load::Outcome;
    /// use steadfast_layers::overload::{OverloadReason, Overloaded};
    /// let refused: Result<http::Response<()>, steadfast_layers::BoxError> =
    ///     Err(Box::new(Overloaded::new("shed", OverloadReason::NotReady)));
    /// assert_eq!(Outcome::of(&refused), Outcome::Refused);
    /// assert_eq!(Outcome::of(&Ok::<_, steadfast_layers::BoxError>(http::Response::new(()))), Outcome::Succeeded);
    /// ```
    pub fn of<B>(result: &Result<http::Response<B>, BoxError>) -> Outcome {
        match result {
            Ok(res) if res.status().is_success() => Outcome::Succeeded,
            Ok(_) => Outcome::Failed,
            Err(e) => {
                let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(&**e);
                while let Some(err) = cur {
                    if err.is::<CircuitOpen>() || err.is::<Overloaded>() {
                        return Outcome::Refused;
                    }
                    cur = err.source();
                }
                Outcome::Failed
            }
        }
    }
}

/// One logical request's fate, as its caller saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record {
    /// The request id.
    pub id: u64,
    /// From the first byte sent to the final answer or error, retries included.
    pub latency: Duration,
    /// When the caller had its answer (or error).
    pub ended: Instant,
    /// How it ended.
    pub outcome: Outcome,
}

impl Record {
    /// Whether it ended with a 2xx.
    pub fn ok(&self) -> bool {
        self.outcome == Outcome::Succeeded
    }
}

/// Sends logical request `id` through `svc` and records how it went.
pub async fn call_once<S>(
    svc: S,
    uri: &Uri,
    id: u64,
    ledger: Option<&Ledger>,
) -> Result<Record, BoxError>
where
    S: Service<LabRequest, Response = LabResponse, Error = BoxError>,
{
    let req = get(uri, id)?;
    let started = Instant::now();
    let result = svc.oneshot(req).await;
    let ended = Instant::now();
    let outcome = Outcome::of(&result);
    if outcome != Outcome::Succeeded {
        if let Some(ledger) = ledger {
            ledger.caller_gave_up(id, ended);
        }
    }
    Ok(Record {
        id,
        latency: ended.saturating_duration_since(started),
        ended,
        outcome,
    })
}

/// Sends `requests` requests from `concurrency` concurrent callers sharing `svc`.
pub async fn closed_loop<S>(
    svc: S,
    uri: Uri,
    requests: u64,
    concurrency: usize,
    ledger: Option<Arc<Ledger>>,
    done: Counter,
) -> Result<Vec<Record>, BoxError>
where
    S: Service<LabRequest, Response = LabResponse, Error = BoxError> + Clone + Send + 'static,
    S::Future: Send,
{
    let next = Arc::new(AtomicU64::new(0));
    let mut callers = JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (svc, uri, next, ledger, done) = (
            svc.clone(),
            uri.clone(),
            Arc::clone(&next),
            ledger.clone(),
            done.clone(),
        );
        callers.spawn(async move {
            let mut records = Vec::new();
            loop {
                let id = next.fetch_add(1, Ordering::Relaxed);
                if id >= requests {
                    return Ok::<_, BoxError>(records);
                }
                records.push(call_once(svc.clone(), &uri, id, ledger.as_deref()).await?);
                done.inc();
            }
        });
    }
    let mut records = Vec::with_capacity(usize::try_from(requests).unwrap_or(0));
    while let Some(joined) = callers.join_next().await {
        records.extend(joined??);
    }
    records.sort_by_key(|r| r.id);
    Ok(records)
}

/// Starts requests at Poisson arrivals of `rate` per second for `duration` (the arrival times are
/// drawn from `seed`), each in its own task, then waits for all of them to finish.
pub async fn open_loop<S>(
    svc: S,
    uri: Uri,
    rate: f64,
    duration: Duration,
    seed: u64,
    ledger: Option<Arc<Ledger>>,
    done: Counter,
) -> Result<Vec<Record>, BoxError>
where
    S: Service<LabRequest, Response = LabResponse, Error = BoxError> + Clone + Send + 'static,
    S::Future: Send,
{
    open_loop_from(0, svc, uri, rate, duration, seed, ledger, done).await
}

/// [`open_loop`] with request ids counted from `first_id`, so that two runs against one server
/// (a warm-up, then the measured run) do not share ids and so do not share injected faults.
#[allow(clippy::too_many_arguments)]
pub async fn open_loop_from<S>(
    first_id: u64,
    svc: S,
    uri: Uri,
    rate: f64,
    duration: Duration,
    seed: u64,
    ledger: Option<Arc<Ledger>>,
    done: Counter,
) -> Result<Vec<Record>, BoxError>
where
    S: Service<LabRequest, Response = LabResponse, Error = BoxError> + Clone + Send + 'static,
    S::Future: Send,
{
    if !(rate.is_finite() && rate > 0.0) {
        return Err(format!("arrival rate must be positive, got {rate}").into());
    }
    let rng = SeededRng::new(seed);
    let start = Instant::now();
    let end = start + duration;
    let mut at = start;
    let mut tasks = JoinSet::new();
    let mut id = first_id;
    loop {
        // Exponential gaps: a Poisson process.
        let gap = -(1.0 - rng.next_f64()).ln() / rate;
        at += Duration::try_from_secs_f64(gap).unwrap_or(Duration::ZERO);
        if at >= end {
            break;
        }
        // Absolute times: if the timer runs late, the next arrivals come at once and the rate
        // holds.
        tokio::time::sleep_until(at).await;
        let (svc, uri, ledger, done) = (svc.clone(), uri.clone(), ledger.clone(), done.clone());
        tasks.spawn(async move {
            let record = call_once(svc, &uri, id, ledger.as_deref()).await;
            done.inc();
            record
        });
        id += 1;
    }
    let mut records = Vec::with_capacity(tasks.len());
    while let Some(joined) = tasks.join_next().await {
        records.push(joined??);
    }
    records.sort_by_key(|r| r.id);
    Ok(records)
}

/// What a set of [`Record`]s adds up to.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Summary {
    /// Logical requests.
    pub requests: u64,
    /// Of which ended with a 2xx.
    pub succeeded: u64,
    /// Latency percentiles of all requests, failed ones included, in milliseconds.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
}

impl Summary {
    /// Summarises `records` (exact percentiles, nearest rank).
    pub fn of(records: &[Record]) -> Summary {
        let mut latencies: Vec<Duration> = records.iter().map(|r| r.latency).collect();
        latencies.sort_unstable();
        Summary {
            requests: records.len() as u64,
            succeeded: records.iter().filter(|r| r.ok()).count() as u64,
            p50_ms: percentile_ms(&latencies, 0.5),
            p99_ms: percentile_ms(&latencies, 0.99),
            p999_ms: percentile_ms(&latencies, 0.999),
        }
    }

    /// Share of requests that succeeded (0 when there were none).
    pub fn success_rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.succeeded as f64 / self.requests as f64
        }
    }
}

/// The `q`-quantile (nearest rank) of sorted latencies, in milliseconds; 0 when empty.
pub fn percentile_ms(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize;
    let index = rank.clamp(1, sorted.len()) - 1;
    sorted[index].as_secs_f64() * 1e3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<Duration> = (1..=1000).map(Duration::from_millis).collect();
        assert_eq!(percentile_ms(&v, 0.5), 500.0);
        assert_eq!(percentile_ms(&v, 0.99), 990.0);
        assert_eq!(percentile_ms(&v, 0.999), 999.0);
        assert_eq!(percentile_ms(&v[..1], 0.999), 1.0);
        assert_eq!(percentile_ms(&[], 0.5), 0.0);
    }

    #[test]
    fn refusals_are_found_behind_a_retry_give_up() {
        use steadfast_layers::breaker::BreakerState;
        use steadfast_layers::retry::{GaveUp, GiveUpReason};
        let open = CircuitOpen::new(BreakerState::Open, Some(Duration::from_millis(5)));
        let gave_up = GaveUp::new(GiveUpReason::Deadline, 2, Some(Box::new(open)));
        let result: Result<http::Response<()>, BoxError> = Err(Box::new(gave_up));
        assert_eq!(Outcome::of(&result), Outcome::Refused);
        let reset: Result<http::Response<()>, BoxError> = Err("connection reset".into());
        assert_eq!(Outcome::of(&reset), Outcome::Failed);
        let mut unavailable = http::Response::new(());
        *unavailable.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
        assert_eq!(Outcome::of(&Ok(unavailable)), Outcome::Failed);
    }

    #[test]
    fn summary_counts() {
        let t0 = Instant::now();
        let r = |id, ms, ok| Record {
            id,
            latency: Duration::from_millis(ms),
            ended: t0 + Duration::from_millis(ms),
            outcome: if ok {
                Outcome::Succeeded
            } else {
                Outcome::Failed
            },
        };
        let s = Summary::of(&[r(0, 10, true), r(1, 30, false), r(2, 20, true)]);
        assert_eq!((s.requests, s.succeeded), (3, 2));
        assert_eq!(s.p50_ms, 20.0);
        assert!((s.success_rate() - 2.0 / 3.0).abs() < 1e-12);
    }
}
