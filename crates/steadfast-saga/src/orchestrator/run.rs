//! One run of one saga: the saga kept in memory — its definition, lease, input and step
//! records — from the moment it is created or claimed until it ends. Every transition is written
//! to the store (fenced by the lease) and then applied to the copy; nothing is read back.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use futures::future::try_join_all;
use serde_json::Value;
use tokio::time::Instant;
use tracing::{info, warn};

use super::step::{Ends, StepEnd, StepRun};
use super::Inner;
use crate::definition::{DefinitionInner, Payload, StepDef, StepKind};
use crate::error::{Decode, Error};
use crate::keys::{Phase, SagaId};
use crate::store::{Event, Lease, SagaRecord, SagaStatus, StepRecord, StepState, Transition};
use crate::telemetry::SagaCounter;

/// What every part of one run shares: the orchestrator, the lease, the saga's type.
#[derive(Clone)]
pub(super) struct RunCx {
    pub(super) inner: Arc<Inner>,
    pub(super) lease: Lease,
    pub(super) saga_type: Arc<str>,
    /// When the saga was created, on this process's clock (from its age on the store's).
    pub(super) created: Option<Instant>,
}

impl RunCx {
    pub(super) fn new(
        inner: &Arc<Inner>,
        lease: Lease,
        saga_type: Arc<str>,
        created: Option<Instant>,
    ) -> Self {
        RunCx {
            inner: Arc::clone(inner),
            lease,
            saga_type,
            created,
        }
    }

    /// Writes `t` under the lease ([`Error::Fenced`] once another orchestrator claimed the
    /// saga).
    pub(super) async fn write(&self, t: Transition) -> Result<(), Error> {
        self.inner.store.record(&self.lease, t).await
    }

    #[cfg(feature = "test-hooks")]
    pub(super) async fn hook(
        &self,
        step: &str,
        phase: Phase,
        attempt: u32,
        boundary: super::hooks::Boundary,
    ) {
        if let Some(h) = &self.inner.hooks {
            let info = super::hooks::BoundaryInfo {
                saga: self.lease.saga,
                saga_type: &self.saga_type,
                step,
                phase,
                attempt,
                boundary,
            };
            h.at_boundary(&info).await;
        }
    }

    /// Stops the saga for an operator with `why`, and gives the lease up.
    pub(super) async fn attention(&self, why: String) -> Result<SagaStatus, Error> {
        warn!(target: "steadfast::saga", saga = %self.lease.saga, saga_type = %self.saga_type,
            error = %why, "saga needs attention");
        self.write(
            Transition::new(Event::new("needs_attention").detail(why.clone()))
                .status(SagaStatus::NeedsAttention)
                .error(Some(why)),
        )
        .await?;
        self.inner
            .metrics
            .count(SagaCounter::NeedsAttention, &self.saga_type);
        self.ended(SagaStatus::NeedsAttention);
        let _ = self.inner.store.release(&self.lease).await;
        Ok(SagaStatus::NeedsAttention)
    }

    /// A step phase ended with `outcome`.
    pub(super) fn step_ended(&self, step: &Arc<str>, phase: Phase, outcome: &'static str) {
        self.inner
            .metrics
            .step_ended(&self.saga_type, step, phase.as_str(), outcome);
    }

    /// This run ended the saga with `status`: records its duration since creation.
    pub(super) fn ended(&self, status: SagaStatus) {
        if let Some(created) = self.created {
            self.inner.metrics.saga_duration(
                &self.saga_type,
                status.as_str(),
                created.elapsed().as_secs_f64(),
            );
        }
    }
}

/// What the run knows of one step phase's record: its state, attempts and last error (its
/// output is kept in [`Run`]'s outputs), without a copy of the step's name or output text.
pub(super) struct Known {
    pub(super) state: StepState,
    pub(super) attempts: u32,
    pub(super) error: Option<String>,
}

impl From<StepRecord> for Known {
    fn from(r: StepRecord) -> Self {
        Known {
            state: r.state,
            attempts: r.attempts,
            error: r.error,
        }
    }
}

/// What is written of one step: its action's record and its compensation's.
#[derive(Default)]
struct Slot {
    forward: Option<Known>,
    compensation: Option<Known>,
}

impl Slot {
    fn get(&self, phase: Phase) -> Option<&Known> {
        match phase {
            Phase::Forward => self.forward.as_ref(),
            Phase::Compensation => self.compensation.as_ref(),
        }
    }
}

/// One saga being run: everything the run needs, in memory.
pub(super) struct Run<I> {
    def: Arc<DefinitionInner<I>>,
    cx: RunCx,
    input: Arc<I>,
    /// Per step, by index: the records written before this run and by it.
    steps: Vec<Slot>,
    /// The outputs of the actions that succeeded, by step index (shared with the steps'
    /// contexts; copied only when a context still holds it as it changes).
    outputs: Arc<HashMap<usize, Value>>,
    status: SagaStatus,
    /// The saga's deadline on this process's clock.
    deadline: Option<Instant>,
    /// The first step's first attempt was written as started with the saga, under this run's
    /// lease, and has not been called.
    prestarted: bool,
}

fn decode(id: SagaId, what: String, e: impl fmt::Display) -> String {
    Decode {
        saga: Some(id),
        what,
        detail: e.to_string(),
    }
    .to_string()
}

impl<I: Payload> Run<I> {
    /// A saga this orchestrator has just created under `cx`'s lease (`obtained`: before the
    /// creating write was sent), with `first_step` written as started in the same transaction.
    pub(super) fn fresh(
        def: Arc<DefinitionInner<I>>,
        cx: RunCx,
        input: Arc<I>,
        first_step: Option<Known>,
        obtained: Instant,
    ) -> Self {
        let mut steps: Vec<Slot> = def.names.iter().map(|_| Slot::default()).collect();
        let prestarted = first_step.is_some();
        if let (Some(first), Some(slot)) = (first_step, steps.first_mut()) {
            slot.forward = Some(first);
        }
        Run {
            // Measured from before the create was sent: never later than the store's.
            deadline: def.deadline.map(|d| obtained + d),
            def,
            cx,
            input,
            steps,
            outputs: Arc::new(HashMap::new()),
            status: SagaStatus::Running,
            prestarted,
        }
    }

    /// A saga claimed or taken over, from its record (read once, by the caller); the error is
    /// why it cannot run (a row that does not decode for this definition).
    pub(super) fn from_record(
        def: Arc<DefinitionInner<I>>,
        cx: RunCx,
        record: SagaRecord,
    ) -> Result<Self, String> {
        let id = record.id;
        let input: I = serde_json::from_str(&record.input)
            .map_err(|e| decode(id, "the saga input".into(), e))?;
        let mut steps: Vec<Slot> = def.names.iter().map(|_| Slot::default()).collect();
        let mut outputs = HashMap::new();
        for r in record.steps {
            let Some(index) = def.names.iter().position(|n| **n == *r.step) else {
                return Err(decode(
                    id,
                    format!("step record {:?}", r.step),
                    format!("no such step in version {} of {:?}", def.version, def.name),
                ));
            };
            if r.phase == Phase::Forward && r.state == StepState::Succeeded {
                let text = r.output.as_deref().unwrap_or("null");
                let v = serde_json::from_str::<Value>(text).map_err(|e| {
                    decode(id, format!("the output of step {:?}", def.names[index]), e)
                })?;
                outputs.insert(index, v);
            }
            match r.phase {
                Phase::Forward => steps[index].forward = Some(r.into()),
                Phase::Compensation => steps[index].compensation = Some(r.into()),
            }
        }
        Ok(Run {
            deadline: record.deadline_remaining.map(|r| Instant::now() + r),
            def,
            cx,
            input: Arc::new(input),
            steps,
            outputs: Arc::new(outputs),
            status: record.status,
            prestarted: false,
        })
    }

    /// Writes a saga-level transition and applies it.
    async fn write(&mut self, t: Transition) -> Result<(), Error> {
        let status = t.status;
        self.cx.write(t).await?;
        if let Some(s) = status {
            self.status = s;
        }
        Ok(())
    }

    fn succeeded(&self, index: usize) -> bool {
        self.steps[index]
            .forward
            .as_ref()
            .is_some_and(|r| r.state == StepState::Succeeded)
    }

    /// Runs the saga until it ends, needs attention, or the lease is lost.
    pub(super) async fn drive(mut self) -> Result<SagaStatus, Error> {
        let id = self.cx.lease.saga;
        if self.status == SagaStatus::Running {
            let why = match self.forward().await? {
                Forward::Completed { recorded } => {
                    if !recorded {
                        let last = self.def.stages.len() as i64;
                        self.write(
                            Transition::new(Event::new("completed"))
                                .status(SagaStatus::Completed)
                                .cursor(last),
                        )
                        .await?;
                    }
                    return Ok(SagaStatus::Completed);
                }
                Forward::Attention(why) => return self.cx.attention(why).await,
                Forward::Cancelled(reason) => {
                    self.cx
                        .inner
                        .metrics
                        .count(SagaCounter::Cancelled, &self.cx.saga_type);
                    format!("cancelled by an operator: {reason}")
                }
                Forward::Compensate(why) => why,
            };
            info!(target: "steadfast::saga", saga = %id, reason = %why, "compensating");
            self.write(
                Transition::new(Event::new("compensation_started").detail(why.clone()))
                    .status(SagaStatus::Compensating)
                    .compensating(true)
                    .error(Some(why)),
            )
            .await?;
        }
        debug_assert_eq!(self.status, SagaStatus::Compensating);
        self.compensate().await
    }

    /// The forward pass: every stage not yet complete, in order.
    async fn forward(&mut self) -> Result<Forward, Error> {
        let def = Arc::clone(&self.def);
        let mut recorded = false;
        for (si, stage) in def.stages.iter().enumerate() {
            if stage.iter().all(|s| self.succeeded(s.index)) {
                continue;
            }
            // Past the deadline no new step starts before the pivot (a retriable step, after
            // it, must still run). A step that was started, though, may have had its effect:
            // it is settled first, as on any recovery (attempted again with the same key until
            // its outcome is known, a transient failure now failing it), so that the
            // compensation undoes it if it happened.
            let late = stage[0].kind != StepKind::Retriable
                && self.deadline.is_some_and(|d| Instant::now() >= d);
            let advance = (stage.len() == 1).then_some(si as i64 + 1);
            // A last stage of one step completes the saga in the write of its success.
            let finish =
                (advance.is_some() && si + 1 == def.stages.len()).then_some(SagaStatus::Completed);
            let shared = Arc::clone(&self.outputs);
            // The first attempt's start was written with the saga (see `Orchestrator::start`).
            let prestarted = std::mem::take(&mut self.prestarted) && si == 0 && advance.is_some();
            let first = stage[0].index;
            let (cx, input, names, deadline) = (&self.cx, &self.input, &def.names, self.deadline);
            let slots = &mut self.steps[first..first + stage.len()];
            let runs = stage.iter().zip(slots).map(|(s, slot)| {
                let shared = Arc::clone(&shared);
                async move {
                    let prior = slot.forward.as_ref().map(|p| (p.state, p.attempts));
                    match prior {
                        Some((StepState::Succeeded, _)) => {
                            let v = shared.get(&s.index).cloned().unwrap_or(Value::Null);
                            return Ok((s.index, StepEnd::Succeeded(v)));
                        }
                        Some((StepState::Failed, _)) if s.kind != StepKind::Retriable => {
                            let e = slot
                                .forward
                                .as_ref()
                                .and_then(|p| p.error.clone())
                                .unwrap_or_default();
                            return Ok((s.index, StepEnd::Failed(e)));
                        }
                        _ => {}
                    }
                    // Only this run's prestarted first attempt is known not to have called.
                    let prestarted = prestarted
                        && prior.is_some_and(|(st, n)| st == StepState::Started && n == 1);
                    let may_have_happened = !prestarted && prior.is_some_and(|(_, n)| n > 0);
                    if late && !may_have_happened {
                        return Ok((s.index, StepEnd::Late));
                    }
                    let end = StepRun {
                        cx,
                        step: s,
                        names,
                        phase: Phase::Forward,
                        input,
                        outputs: shared,
                        prestarted,
                        action_output: Value::Null,
                        ends: Ends { advance, finish },
                        deadline,
                    }
                    .run(&mut slot.forward)
                    .await?;
                    Ok::<_, Error>((s.index, end))
                }
            });
            let ends = try_join_all(runs).await?;
            drop(shared);
            let mut failed = None;
            let mut stuck = None;
            let mut cancelled = None;
            let mut late_step = None;
            for (index, end) in ends {
                match end {
                    StepEnd::Succeeded(v) => {
                        Arc::make_mut(&mut self.outputs).insert(index, v);
                    }
                    StepEnd::Failed(e) => failed = failed.or(Some(e)),
                    StepEnd::Stuck(e) => stuck = stuck.or(Some(e)),
                    StepEnd::Cancelled(r) => cancelled = cancelled.or(Some(r)),
                    StepEnd::Late => late_step = late_step.or(Some(index)),
                }
            }
            if let Some(e) = stuck {
                return Ok(Forward::Attention(e));
            }
            if let Some(e) = failed {
                return Ok(Forward::Compensate(e));
            }
            if let Some(reason) = cancelled {
                // The store refuses a cancel once the pivot has started; a saga stored before it
                // recorded that (no `forward_only`) is caught here, from its step records.
                let past_pivot = def.stages.iter().flatten().any(|s| {
                    s.kind != StepKind::Compensatable && self.steps[s.index].forward.is_some()
                });
                if past_pivot {
                    return Ok(Forward::Attention(format!(
                        "cancelled ({reason}) after its pivot started: it can only go forward; \
                         resolve it by hand"
                    )));
                }
                return Ok(Forward::Cancelled(reason));
            }
            if let Some(index) = late_step {
                return Ok(Forward::Compensate(format!(
                    "the saga deadline passed before step {:?}",
                    def.names[index]
                )));
            }
            recorded = finish.is_some();
            if advance.is_none() {
                self.cx
                    .write(
                        Transition::new(
                            Event::new("stage_completed").detail(format!("stage {si}")),
                        )
                        .cursor(si as i64 + 1),
                    )
                    .await?;
            }
        }
        Ok(Forward::Completed { recorded })
    }

    /// Compensates, in reverse order, every compensatable step whose action succeeded and whose
    /// compensation has not.
    async fn compensate(&mut self) -> Result<SagaStatus, Error> {
        let def = Arc::clone(&self.def);
        // Stages in reverse; with parallel compensation, one single batch.
        let mut batches: Vec<Vec<&StepDef<I>>> = Vec::new();
        for stage in def.stages.iter().rev() {
            let todo: Vec<&StepDef<I>> = stage
                .iter()
                .filter(|s| s.kind == StepKind::Compensatable)
                .filter(|s| self.succeeded(s.index))
                .filter(|s| {
                    self.steps[s.index]
                        .get(Phase::Compensation)
                        .is_none_or(|r| r.state != StepState::Succeeded)
                })
                .collect();
            if todo.is_empty() {
                continue;
            }
            match (def.parallel_compensation, batches.last_mut()) {
                (true, Some(b)) => b.extend(todo),
                _ => batches.push(todo),
            }
        }
        let shared = Arc::clone(&self.outputs);
        let last = batches.len();
        let mut recorded = false;
        for (bi, batch) in batches.into_iter().enumerate() {
            // A last batch of one compensation ends the saga in the write of its success.
            let finish = (bi + 1 == last && batch.len() == 1).then_some(SagaStatus::Compensated);
            let (cx, input, outputs) = (&self.cx, &self.input, &self.outputs);
            let mut slots: Vec<Option<&mut Slot>> = self.steps.iter_mut().map(Some).collect();
            let runs = batch.into_iter().map(|s| {
                let slot = slots[s.index]
                    .take()
                    .expect("a step is compensated once per batch");
                StepRun {
                    cx,
                    step: s,
                    names: &def.names,
                    phase: Phase::Compensation,
                    input,
                    outputs: Arc::clone(&shared),
                    prestarted: false,
                    action_output: outputs.get(&s.index).cloned().unwrap_or(Value::Null),
                    ends: Ends {
                        advance: None,
                        finish,
                    },
                    deadline: None,
                }
                .run(&mut slot.compensation)
            });
            let ends = try_join_all(runs).await?;
            if let Some(why) = ends.into_iter().find_map(|e| match e {
                StepEnd::Stuck(e) | StepEnd::Failed(e) => Some(e),
                StepEnd::Succeeded(_) | StepEnd::Cancelled(_) | StepEnd::Late => None,
            }) {
                return self.cx.attention(why).await;
            }
            recorded = finish.is_some();
        }
        if !recorded {
            self.write(Transition::new(Event::new("compensated")).status(SagaStatus::Compensated))
                .await?;
        }
        Ok(SagaStatus::Compensated)
    }
}

enum Forward {
    /// `recorded`: the last step's outcome already wrote the status.
    Completed {
        recorded: bool,
    },
    Compensate(String),
    /// An operator's cancel (its reason) stopped the saga before its next step.
    Cancelled(String),
    Attention(String),
}
