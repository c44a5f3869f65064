//! Recovery and leases: claims of abandoned sagas, the run of a claimed (or taken-over) saga
//! from its one read of the store, and the lease keeping — heartbeats and self-fencing — of
//! every run.

use std::future::Future;
use std::sync::Arc;

use tokio::time::Instant;
use tracing::{debug, info, warn, Instrument};

use super::run::RunCx;
use super::{Inner, Orchestrator};
use crate::error::{DefinitionChanged, Error};
use crate::store::{Lease, SagaStatus};
use crate::telemetry::SagaCounter;

impl Orchestrator {
    /// Claims sagas whose lease expired (once) and runs them here; returns how many were
    /// claimed. [`Orchestrator::spawn_recovery`] calls it every poll interval.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use steadfast_saga::{store::MemoryStore, Orchestrator};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let orch = Orchestrator::builder(Arc::new(MemoryStore::new())).build().unwrap();
    /// assert_eq!(orch.recover_once().await.unwrap(), 0);
    /// # }
    /// ```
    pub async fn recover_once(&self) -> Result<usize, Error> {
        let obtained = Instant::now();
        let leases = self
            .inner
            .store
            .claim_expired(&self.inner.owner, self.inner.lease, self.inner.claim_batch)
            .await?;
        let n = leases.len();
        for lease in leases {
            self.spawn_loaded(lease, obtained, true);
        }
        Ok(n)
    }

    /// Spawns the recovery loop: [`Orchestrator::recover_once`] every poll interval (plus up to
    /// 10 % jitter), for as long as the returned handle is not aborted.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use steadfast_saga::{store::MemoryStore, Orchestrator};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let orch = Orchestrator::builder(Arc::new(MemoryStore::new())).build().unwrap();
    /// let recovery = orch.spawn_recovery();
    /// recovery.abort();
    /// # }
    /// ```
    pub fn spawn_recovery(&self) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                match this.recover_once().await {
                    Ok(n) if n > 0 => {
                        debug!(target: "steadfast::saga", claimed = n, "claimed abandoned sagas")
                    }
                    Ok(_) => {}
                    Err(e) => {
                        warn!(target: "steadfast::saga", error = %e, "claiming abandoned sagas failed")
                    }
                }
                let jitter = this
                    .inner
                    .poll_interval
                    .mul_f64(0.1 * this.inner.rng.next_f64());
                tokio::time::sleep(this.inner.poll_interval + jitter).await;
            }
        })
    }

    /// Runs the saga of `lease`, claimed (`recovered`) or taken over by an operator action, on
    /// a spawned task: its record is read once, then the run keeps it in memory.
    pub(super) fn spawn_loaded(&self, lease: Lease, obtained: Instant, recovered: bool) {
        let id = lease.saga;
        let span = run_span(&self.inner, &lease);
        let run = run_loaded(Arc::clone(&self.inner), lease, obtained, recovered);
        self.spawn_run(id, Box::pin(run.instrument(span)));
    }
}

/// The span of one run of one saga (its type recorded once known).
pub(super) fn run_span(inner: &Inner, lease: &Lease) -> tracing::Span {
    tracing::info_span!(target: "steadfast::saga", "steadfast.saga",
        saga = %lease.saga, saga_type = tracing::field::Empty, epoch = lease.epoch,
        owner = %inner.owner)
}

/// Runs a claimed or taken-over saga: loads it (the run's one read), checks it can run here,
/// and drives it under [`supervise`].
async fn run_loaded(
    inner: Arc<Inner>,
    lease: Lease,
    obtained: Instant,
    recovered: bool,
) -> Result<SagaStatus, Error> {
    let id = lease.saga;
    let record = match inner.store.load(id).await {
        Ok(r) => r,
        Err(Error::Decode(d)) => {
            let cx = RunCx::new(&inner, lease, Arc::from("?"), None);
            return cx.attention(d.to_string()).await;
        }
        Err(e) => {
            warn!(target: "steadfast::saga", saga = %id, error = %e, "cannot load the saga");
            return Err(e);
        }
    };
    tracing::Span::current().record("saga_type", record.saga_type.as_str());
    let cx = RunCx::new(
        &inner,
        lease,
        Arc::from(record.saga_type.as_str()),
        Instant::now().checked_sub(record.age),
    );
    if recovered {
        info!(target: "steadfast::saga", saga = %id, saga_type = %record.saga_type,
            recoveries = record.recoveries, epoch = cx.lease.epoch, "recovering an abandoned saga");
        inner.metrics.count(SagaCounter::Recovered, &cx.saga_type);
    }
    if !record.status.is_active() {
        let _ = inner.store.release(&cx.lease).await;
        return Ok(record.status);
    }
    if recovered && record.recoveries >= inner.max_recoveries {
        return cx
            .attention(format!(
                "recovered {} times (limit {}): the saga keeps crashing its orchestrator",
                record.recoveries, inner.max_recoveries
            ))
            .await;
    }
    let Some(runner) = inner.registry.get(&record.saga_type).cloned() else {
        return cx
            .attention(Error::UnknownSagaType(record.saga_type.clone()).to_string())
            .await;
    };
    if runner.version() != record.version {
        let e = DefinitionChanged {
            saga_type: record.saga_type.clone(),
            stored: record.version,
            registered: runner.version(),
        };
        return cx.attention(e.to_string()).await;
    }
    supervise(cx.clone(), obtained, runner.run_loaded(cx, record)).await
}

/// Drives `run` while keeping its lease (obtained at `obtained`): the run stops as soon as the
/// lease is lost. Counts the run in flight and its end.
pub(super) async fn supervise(
    cx: RunCx,
    obtained: Instant,
    run: impl Future<Output = Result<SagaStatus, Error>>,
) -> Result<SagaStatus, Error> {
    let id = cx.lease.saga;
    let _in_flight = InFlight::new(&cx.inner, &cx.saga_type);
    let result = tokio::select! {
        biased;
        lost = keep_lease(Arc::clone(&cx.inner), cx.lease.clone(), obtained) => Err(lost),
        r = run => r,
    };
    match &result {
        Err(Error::Fenced(f)) => {
            warn!(target: "steadfast::saga", saga = %id, epoch = f.epoch,
                "lease taken over by another orchestrator: stopped working on the saga");
            cx.inner.metrics.count(SagaCounter::Fenced, &cx.saga_type);
        }
        Err(e) => {
            warn!(target: "steadfast::saga", saga = %id, error = %e,
                "saga run stopped; it will be recovered when its lease expires");
        }
        Ok(s) => match s {
            SagaStatus::Completed => {
                cx.inner
                    .metrics
                    .count(SagaCounter::Completed, &cx.saga_type);
                cx.ended(*s);
            }
            SagaStatus::Compensated => {
                cx.inner
                    .metrics
                    .count(SagaCounter::Compensated, &cx.saga_type);
                cx.ended(*s);
            }
            // Needs attention: counted and timed where it is written.
            _ => {}
        },
    }
    result
}

/// Counts a saga run in `steadfast.saga.in_flight` for as long as it lives.
struct InFlight {
    inner: Arc<Inner>,
    saga_type: Arc<str>,
}

impl InFlight {
    fn new(inner: &Arc<Inner>, saga_type: &Arc<str>) -> Self {
        inner.metrics.in_flight(saga_type, 1);
        InFlight {
            inner: Arc::clone(inner),
            saga_type: Arc::clone(saga_type),
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.inner.metrics.in_flight(&self.saga_type, -1);
    }
}

/// Renews the lease every third of its length; returns (and so stops the run) when the lease
/// is taken over or could not be renewed before it would expire locally. The local expiry is
/// measured from *before* each renewal was sent, minus a tenth, so this orchestrator stops
/// before the store can consider the lease expired.
async fn keep_lease(inner: Arc<Inner>, lease: Lease, obtained: Instant) -> Error {
    let len = inner.lease;
    let margin = len / 10;
    let mut expires = obtained + len - margin;
    let mut next = obtained + len / 3;
    loop {
        tokio::time::sleep_until(next.min(expires)).await;
        if Instant::now() >= expires {
            return lease_lost(&lease, "the lease could not be renewed in time");
        }
        let sent = Instant::now();
        match tokio::time::timeout_at(expires, inner.store.heartbeat(&lease, len)).await {
            Ok(Ok(())) => {
                expires = sent + len - margin;
                next = sent + len / 3;
            }
            Ok(Err(Error::Fenced(f))) => return Error::Fenced(f),
            Ok(Err(e)) => {
                warn!(target: "steadfast::saga", saga = %lease.saga, error = %e, "lease renewal failed; retrying");
                next = Instant::now() + len / 10;
            }
            Err(_) => return lease_lost(&lease, "the lease renewal did not answer in time"),
        }
    }
}

fn lease_lost(lease: &Lease, why: &str) -> Error {
    warn!(target: "steadfast::saga", saga = %lease.saga, epoch = lease.epoch, reason = why,
        "lease lost: stopping work on the saga");
    Error::Fenced(crate::error::Fenced {
        saga: lease.saga,
        epoch: lease.epoch,
    })
}
