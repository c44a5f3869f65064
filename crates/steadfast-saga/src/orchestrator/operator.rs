//! The operator API: list, inspect and read the history of sagas; resume, retry a step,
//! resolve a step by hand, or cancel a saga.

use std::sync::Arc;

use serde_json::Value;
use tokio::time::Instant;
use tracing::info;

use super::Orchestrator;
use crate::error::Error;
use crate::keys::{Phase, SagaId};
use crate::store::{
    Event, HistoryEntry, Lease, ListQuery, SagaRecord, SagaStatus, SagaSummary, StepRecord,
    StepState, Transition,
};

/// How an operator resolves a stuck step with [`Orchestrator::mark_resolved`].
///
/// ```
/// use steadfast_saga::Resolution;
/// let r = Resolution::Succeeded(serde_json::json!({"ticket": "T-1"}));
/// assert!(matches!(r, Resolution::Succeeded(_)));
/// ```
#[derive(Clone, Debug, PartialEq)]
pub enum Resolution {
    /// The step (action or compensation) is done; for an action, with this output.
    Succeeded(Value),
    /// The action definitively failed (forward steps only): the saga compensates.
    Failed(String),
}

impl Orchestrator {
    /// Lists sagas, optionally of one status and one type, oldest first (operator API).
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use steadfast_saga::{store::{ListQuery, MemoryStore}, Orchestrator, SagaStatus};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// # let orch = Orchestrator::builder(Arc::new(MemoryStore::new())).build().unwrap();
    /// let stuck = orch.list(ListQuery::new(100).status(SagaStatus::NeedsAttention)).await.unwrap();
    /// assert!(stuck.is_empty());
    /// # }
    /// ```
    pub async fn list(&self, query: ListQuery) -> Result<Vec<SagaSummary>, Error> {
        self.inner.store.list(query).await
    }

    /// A saga's row and step records (operator API).
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use steadfast_saga::{store::MemoryStore, Error, Orchestrator, SagaId};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// # let orch = Orchestrator::builder(Arc::new(MemoryStore::new())).build().unwrap();
    /// assert!(matches!(orch.get(SagaId::nil()).await, Err(Error::NotFound(_))));
    /// # }
    /// ```
    pub async fn get(&self, id: SagaId) -> Result<SagaRecord, Error> {
        self.inner.store.load(id).await
    }

    /// A saga's history (operator API).
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use steadfast_saga::{store::MemoryStore, Orchestrator, Saga, Step, StepContext, StepError};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// # let mut b = Saga::builder::<()>("s");
    /// # b.step(Step::retriable("r", |_c: StepContext<()>| async { Ok::<(), StepError>(()) }));
    /// # let def = b.build().unwrap();
    /// # let orch = Orchestrator::builder(Arc::new(MemoryStore::new())).register(&def).build().unwrap();
    /// let id = orch.start(&def, "k", &()).await.unwrap().id;
    /// orch.wait(id).await.unwrap();
    /// let kinds: Vec<String> = orch.history(id).await.unwrap().into_iter().map(|h| h.kind).collect();
    /// // One transaction each: the saga with its step started; the step succeeded with the saga.
    /// assert_eq!(kinds, ["created", "completed"]);
    /// # }
    /// ```
    pub async fn history(&self, id: SagaId) -> Result<Vec<HistoryEntry>, Error> {
        self.inner.store.history(id).await
    }

    async fn operator_takeover(
        &self,
        id: SagaId,
        reason: &'static str,
    ) -> Result<(SagaRecord, Lease, Instant), Error> {
        let rec = self.inner.store.load(id).await?;
        if rec.status != SagaStatus::NeedsAttention {
            return Err(Error::InvalidOperation(format!(
                "saga {id} is {}, not needs_attention",
                rec.status
            )));
        }
        let obtained = Instant::now();
        let lease = self
            .inner
            .store
            .take_over(id, &self.inner.owner, self.inner.lease)
            .await?;
        self.inner
            .metrics
            .takeover(&Arc::from(rec.saga_type.as_str()), reason);
        Ok((rec, lease, obtained))
    }

    fn resumed(rec: &SagaRecord, event: Event) -> Transition {
        let status = if rec.compensating {
            SagaStatus::Compensating
        } else {
            SagaStatus::Running
        };
        Transition::new(event)
            .status(status)
            .error(None)
            .reset_recoveries()
    }

    /// Resumes a saga in `NeedsAttention` where it stopped: a stuck step or compensation is
    /// attempted again (same key, a fresh attempt budget), the recovery count is reset, and the
    /// saga runs here — or, when this orchestrator does not register its type (an operator
    /// tool), at the next poll of one that does (the lease is released at once). For a decode
    /// error, an unknown type or a changed definition: deploy the fix first.
    ///
    /// `retry_step`, `mark_resolved` and `cancel` hand the saga on the same way.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use steadfast_saga::{store::MemoryStore, Error, Orchestrator, SagaId};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// # let orch = Orchestrator::builder(Arc::new(MemoryStore::new())).build().unwrap();
    /// assert!(orch.resume(SagaId::nil()).await.is_err());
    /// # }
    /// ```
    pub async fn resume(&self, id: SagaId) -> Result<(), Error> {
        let (rec, lease, obtained) = self.operator_takeover(id, "resume").await?;
        let t = Self::resumed(&rec, Event::new("operator_resume"));
        self.inner.store.record(&lease, t).await?;
        info!(target: "steadfast::saga", saga = %id, "operator resumed the saga");
        self.hand_over(lease, obtained, &rec.saga_type).await
    }

    /// After an operator's decision is written under `lease`: runs the saga here when its type
    /// is registered, or else gives the lease up at once, so that an orchestrator that runs the
    /// type claims the saga at its next poll (an operator tool, such as the `steadfast` CLI,
    /// registers no definitions). That claim counts as a recovery.
    async fn hand_over(
        &self,
        lease: Lease,
        obtained: Instant,
        saga_type: &str,
    ) -> Result<(), Error> {
        if self.inner.registry.contains_key(saga_type) {
            self.spawn_loaded(lease, obtained, false);
            Ok(())
        } else {
            self.inner.store.release(&lease).await
        }
    }

    /// Cancels a saga that has not reached its pivot: it is running, waiting (between two
    /// attempts, or abandoned by a dead orchestrator and not yet recovered) or stopped for an
    /// operator. The saga starts no new step; the step in flight, if any, runs to its end (its
    /// outcome must be known before it can be undone); then the saga compensates the steps it
    /// completed and ends `Compensated`, its error saying it was cancelled and why.
    ///
    /// The request is one conditional write, ordered against the owner's fenced writes by the
    /// store (see [`SagaStore::request_cancel`](crate::store::SagaStore::request_cancel)): the owner keeps its lease, and a cancel either
    /// lands before the pivot starts (the pivot's start is then refused) or is refused with
    /// [`Error::CancelRefused`] ([`CancelRefusal::PastPivot`](crate::CancelRefusal::PastPivot)):
    /// after the pivot a saga can only go forward. Cancelling twice keeps the first reason;
    /// cancelling a saga that is already compensating changes nothing. A saga stopped for an
    /// operator is resumed to carry the cancel out: the step it stopped on is attempted again
    /// (same key) until its outcome is known, then the saga compensates.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use steadfast_saga::{store::MemoryStore, CancelRefusal, Error, Orchestrator, Saga, SagaStatus, Step, StepContext, StepError};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// type Ctx = StepContext<()>;
    /// let mut b = Saga::builder::<()>("order");
    /// b.step(Step::compensatable(
    ///     "reserve",
    ///     |_c: Ctx| async { Ok::<(), StepError>(()) },
    ///     |_c: Ctx, _r: ()| async { Ok::<(), StepError>(()) },
    /// ));
    /// b.step(Step::pivot("charge", |_c: Ctx| async { Ok::<(), StepError>(()) }));
    /// let def = b.build()?;
    /// let orch = Orchestrator::builder(Arc::new(MemoryStore::new())).register(&def).build()?;
    ///
    /// // Before its pivot: the reservation is made, then undone; the card is never charged.
    /// let early = orch.start(&def, "order-1", &()).await?.id;
    /// orch.cancel(early, "customer changed plans").await?;
    /// assert_eq!(orch.wait(early).await?, SagaStatus::Compensated);
    ///
    /// // Once it has ended (or its pivot has started), a cancel is refused.
    /// let done = orch.start(&def, "order-2", &()).await?.id;
    /// assert_eq!(orch.wait(done).await?, SagaStatus::Completed);
    /// match orch.cancel(done, "too late").await {
    ///     Err(Error::CancelRefused(r)) => {
    ///         assert_eq!(r.refusal, CancelRefusal::Ended(SagaStatus::Completed))
    ///     }
    ///     other => panic!("{other:?}"),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn cancel(&self, id: SagaId, reason: &str) -> Result<(), Error> {
        let status = self.inner.store.request_cancel(id, reason).await?;
        info!(target: "steadfast::saga", saga = %id, %status, reason, "operator cancelled the saga");
        if status == SagaStatus::NeedsAttention {
            // Nobody runs a saga that waits for an operator: resume it to carry the cancel out.
            match self.operator_takeover(id, "cancel").await {
                Ok((rec, lease, obtained)) => {
                    let event =
                        Event::new("operator_resume").detail(format!("to cancel: {reason}"));
                    let t = Self::resumed(&rec, event);
                    self.inner.store.record(&lease, t).await?;
                    self.hand_over(lease, obtained, &rec.saga_type).await?;
                }
                // Resumed meanwhile by another operator: the cancel stands.
                Err(Error::InvalidOperation(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Resets one step phase of a saga in `NeedsAttention` to "pending" (even one recorded as
    /// failed) and resumes the saga: the step is run again with the same key.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use steadfast_saga::{store::MemoryStore, Orchestrator, Phase, SagaId};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// # let orch = Orchestrator::builder(Arc::new(MemoryStore::new())).build().unwrap();
    /// assert!(orch.retry_step(SagaId::nil(), "charge", Phase::Compensation).await.is_err());
    /// # }
    /// ```
    pub async fn retry_step(&self, id: SagaId, step: &str, phase: Phase) -> Result<(), Error> {
        let rec = self.inner.store.load(id).await?;
        let Some(existing) = rec
            .steps
            .iter()
            .find(|s| s.step == step && s.phase == phase)
            .cloned()
        else {
            return Err(Error::InvalidOperation(format!(
                "saga {id} has no record of step {step:?} ({phase})"
            )));
        };
        let (rec, lease, obtained) = self.operator_takeover(id, "retry_step").await?;
        let t = Self::resumed(
            &rec,
            Event::new("operator_retry")
                .step(step, phase)
                .detail("step reset to pending"),
        )
        .step(StepRecord {
            state: StepState::Pending,
            ..existing
        });
        self.inner.store.record(&lease, t).await?;
        self.hand_over(lease, obtained, &rec.saga_type).await
    }

    /// Records an operator's verdict on a stuck step phase of a saga in `NeedsAttention` (done
    /// by hand, or known to have failed) and resumes the saga from there. `note` (who, why, a
    /// ticket) is kept in the `operator_resolved` history entry.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use steadfast_saga::{store::MemoryStore, Orchestrator, Phase, Resolution, SagaId};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// # let orch = Orchestrator::builder(Arc::new(MemoryStore::new())).build().unwrap();
    /// let r = orch.mark_resolved(SagaId::nil(), "refund", Phase::Compensation,
    ///     Resolution::Succeeded(serde_json::Value::Null), "refunded by hand, OPS-12").await;
    /// assert!(r.is_err()); // no such saga
    /// # }
    /// ```
    pub async fn mark_resolved(
        &self,
        id: SagaId,
        step: &str,
        phase: Phase,
        resolution: Resolution,
        note: &str,
    ) -> Result<(), Error> {
        let rec = self.inner.store.load(id).await?;
        // The definition says which steps exist; without it (an operator tool), only a step
        // the saga has a record of can be resolved.
        let known = match self.inner.registry.get(&rec.saga_type) {
            Some(runner) => runner.step_names().iter().any(|n| &**n == step),
            None => rec.steps.iter().any(|s| s.step == step),
        };
        if !known {
            return Err(Error::InvalidOperation(format!(
                "saga type {:?} has no step {step:?}",
                rec.saga_type
            )));
        }
        let attempts = rec
            .steps
            .iter()
            .find(|s| s.step == step && s.phase == phase)
            .map_or(0, |s| s.attempts);
        let record = match (&resolution, phase) {
            (Resolution::Succeeded(v), _) => StepRecord {
                step: step.to_string(),
                phase,
                state: StepState::Succeeded,
                attempts,
                output: Some(if phase == Phase::Forward {
                    v.to_string()
                } else {
                    "null".to_string()
                }),
                error: None,
            },
            (Resolution::Failed(why), Phase::Forward) => StepRecord {
                step: step.to_string(),
                phase,
                state: StepState::Failed,
                attempts,
                output: None,
                error: Some(format!("resolved by an operator: {why}")),
            },
            (Resolution::Failed(_), Phase::Compensation) => {
                return Err(Error::InvalidOperation(
                    "a compensation cannot be resolved as failed: retry it or mark it done".into(),
                ))
            }
        };
        let verdict = match (&resolution, phase) {
            (Resolution::Succeeded(v), Phase::Forward) => format!("done by hand, output {v}"),
            (Resolution::Succeeded(_), Phase::Compensation) => "undone by hand".to_string(),
            (Resolution::Failed(why), _) => format!("failed: {why}"),
        };
        let detail = if note.is_empty() {
            verdict
        } else {
            format!("{verdict}; note: {note}")
        };
        let (rec, lease, obtained) = self.operator_takeover(id, "resolve").await?;
        let t = Self::resumed(
            &rec,
            Event::new("operator_resolved")
                .step(step, phase)
                .detail(detail),
        )
        .step(record);
        self.inner.store.record(&lease, t).await?;
        self.hand_over(lease, obtained, &rec.saga_type).await
    }
}
