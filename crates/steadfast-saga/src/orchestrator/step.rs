//! One step phase of a run: its attempts, each one's start written before the participant is
//! called and its outcome after, with the same step key every time.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;
use tracing::{debug, Instrument};

use super::run::{Known, RunCx};
use crate::definition::{Payload, StepContext, StepDef, StepKind};
use crate::error::{Error, StepError, StepErrorKind};
use crate::keys::{Phase, SagaId, StepKey};
use crate::store::{Event, SagaStatus, StepRecord, StepState, Transition};

/// Calls the test hooks (feature `test-hooks`) at a step boundary; nothing without the feature.
macro_rules! hook {
    ($cx:expr, $step:expr, $phase:expr, $attempt:expr, $boundary:ident) => {
        #[cfg(feature = "test-hooks")]
        $cx.hook($step, $phase, $attempt, super::hooks::Boundary::$boundary)
            .await;
    };
}

/// A step's key for its span, derived (one SHA-1) only when a subscriber records it.
struct KeyOf<'a>(SagaId, &'a str, Phase);

impl fmt::Display for KeyOf<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        StepKey::new(self.0, self.1, self.2).fmt(f)
    }
}

/// `v` as JSON text (a step that returns nothing, `null`, without a formatter).
fn json_text(v: &Value) -> String {
    match v {
        Value::Null => "null".to_owned(),
        v => v.to_string(),
    }
}

/// How one step phase ended.
pub(super) enum StepEnd {
    Succeeded(Value),
    Failed(String),
    Stuck(String),
    /// Not started: the saga was cancelled (the operator's reason).
    Cancelled(String),
    /// Not started: the saga's deadline passed before it was.
    Late,
}

/// What a step's success also writes, in the same transaction.
#[derive(Clone, Copy, Default)]
pub(super) struct Ends {
    /// Advance the cursor to this stage.
    pub(super) advance: Option<i64>,
    /// End the saga with this status (the last step): the history entry is then the status's
    /// (`completed`, `compensated`), naming the step.
    pub(super) finish: Option<SagaStatus>,
}

/// One step phase to run to its end, and what it needs.
pub(super) struct StepRun<'a, I> {
    pub(super) cx: &'a RunCx,
    pub(super) step: &'a StepDef<I>,
    /// Every step's name, by index (for [`StepContext`]).
    pub(super) names: &'a Arc<Vec<Arc<str>>>,
    pub(super) phase: Phase,
    pub(super) input: &'a Arc<I>,
    /// The outputs of the steps that succeeded, by index.
    pub(super) outputs: Arc<HashMap<usize, Value>>,
    /// The first attempt's `Started` record is durable (written with the saga, under this run's
    /// lease) and the participant was not called yet: the first attempt goes straight to the
    /// call.
    pub(super) prestarted: bool,
    /// For a compensation: the action's output, which it undoes.
    pub(super) action_output: Value,
    pub(super) ends: Ends,
    /// The saga's deadline: past it, a transient failure of a forward step fails it.
    pub(super) deadline: Option<Instant>,
}

impl<I: Payload> StepRun<'_, I> {
    /// Attempts the step phase until it ends. `record` is the run's copy of its step record
    /// (what was written before this run, or by it): every record written is applied to it.
    pub(super) async fn run(self, record: &mut Option<Known>) -> Result<StepEnd, Error> {
        let StepRun {
            cx,
            step: s,
            names,
            phase,
            input,
            outputs,
            prestarted,
            action_output,
            ends,
            deadline,
        } = self;
        let saga = cx.lease.saga;
        let policy = match phase {
            Phase::Forward => s.retry,
            Phase::Compensation => s.compensation_retry,
        };
        let (mut attempt, mut start_written) = if prestarted {
            (0, true)
        } else {
            (record.as_ref().map_or(0, |r| r.attempts), false)
        };
        let mut used = 0u32;
        let mut prev_delay = Duration::ZERO;
        let rec = |state, attempts, output: Option<String>, error: Option<String>| StepRecord {
            step: s.name.to_string(),
            phase,
            state,
            attempts,
            output,
            error,
        };
        // Writes `t` with `r` as its step record, then applies `r` to the run's copy.
        macro_rules! write {
            ($t:expr, $r:expr) => {{
                let t: Transition = $t;
                let r: StepRecord = $r;
                let known = Known {
                    state: r.state,
                    attempts: r.attempts,
                    error: r.error.clone(),
                };
                cx.write(t.step(r)).await.map(|()| *record = Some(known))
            }};
        }
        loop {
            // A stored count at its maximum (a corrupt or hand-edited row): stop for an
            // operator rather than wrap to attempt 0, which would read as "never attempted".
            let Some(next) = attempt.checked_add(1) else {
                cx.step_ended(&s.name, phase, "stuck");
                return Ok(StepEnd::Stuck(format!(
                    "step {:?} ({}): its attempt count is at its maximum ({attempt})",
                    s.name,
                    phase.as_str()
                )));
            };
            attempt = next;
            used = used.saturating_add(1);
            if !std::mem::take(&mut start_written) {
                let mut t = Transition::new(Event::new("step_started").step(&*s.name, phase));
                if phase == Phase::Forward {
                    if s.kind != StepKind::Compensatable {
                        // The pivot or a step after it: past the point of no return.
                        t = t.forward_only();
                    }
                    if attempt == 1 {
                        // A step never attempted: a cancelled saga does not start it.
                        t = t.unless_cancelled();
                    }
                }
                match write!(t, rec(StepState::Started, attempt, None, None)) {
                    Ok(()) => {}
                    Err(Error::CancelRequested(c)) => {
                        cx.step_ended(&s.name, phase, "cancelled");
                        return Ok(StepEnd::Cancelled(c.reason));
                    }
                    Err(e) => return Err(e),
                }
            }
            hook!(cx, &s.name, phase, attempt, BeforeCall);
            let ctx = StepContext {
                saga,
                step: Arc::clone(&s.name),
                phase,
                attempt,
                epoch: cx.lease.epoch,
                input: Arc::clone(input),
                outputs: Arc::clone(&outputs),
                names: Arc::clone(names),
            };
            let span = tracing::debug_span!(target: "steadfast::saga", "steadfast.saga.step",
                step = %s.name, phase = phase.as_str(), attempt, key = %KeyOf(saga, &s.name, phase));
            let started = Instant::now();
            let call = async {
                match phase {
                    Phase::Forward => (s.action)(ctx).await,
                    Phase::Compensation => match &s.compensation {
                        Some(c) => c(ctx, action_output.clone()).await.map(|()| Value::Null),
                        None => Ok(Value::Null),
                    },
                }
            }
            .instrument(span);
            let result = match tokio::time::timeout(policy.attempt_timeout_config(), call).await {
                Ok(r) => r,
                Err(_) => Err(StepError::unknown(format!(
                    "attempt timed out after {:?}",
                    policy.attempt_timeout_config()
                ))),
            };
            let outcome = match &result {
                Ok(_) => "succeeded",
                Err(e) => e.kind().as_str(),
            };
            cx.inner.metrics.step_duration(
                &cx.saga_type,
                &s.name,
                phase.as_str(),
                outcome,
                started.elapsed().as_secs_f64(),
            );
            hook!(cx, &s.name, phase, attempt, AfterCall);
            let err = match result {
                Ok(v) => {
                    let kind = ends.finish.map_or("step_succeeded", SagaStatus::as_str);
                    let mut t = Transition::new(Event::new(kind).step(&*s.name, phase));
                    if let Some(c) = ends.advance {
                        t = t.cursor(c);
                    }
                    if let Some(status) = ends.finish {
                        t = t.status(status);
                    }
                    write!(
                        t,
                        rec(StepState::Succeeded, attempt, Some(json_text(&v)), None)
                    )?;
                    cx.step_ended(&s.name, phase, "succeeded");
                    hook!(cx, &s.name, phase, attempt, AfterWrite);
                    return Ok(StepEnd::Succeeded(v));
                }
                Err(e) => e,
            };
            let msg = format!("step {:?} ({phase}) attempt {attempt}: {err}", s.name);
            let exhausted = policy.max_attempts().is_some_and(|m| used >= m);
            let past_deadline = deadline.is_some_and(|d| Instant::now() >= d);
            let permanent = err.kind() == StepErrorKind::Permanent;
            let transient = err.kind() == StepErrorKind::Transient;
            // A definitive "no" from the participant ends a forward step as failed, except after
            // the pivot, where steps must succeed (and so need an operator instead).
            let fails = phase == Phase::Forward
                && s.kind != StepKind::Retriable
                && (permanent || (transient && (exhausted || past_deadline)));
            if fails {
                write!(
                    Transition::new(
                        Event::new("step_failed")
                            .step(&*s.name, phase)
                            .detail(msg.clone()),
                    ),
                    rec(StepState::Failed, attempt, None, Some(msg.clone()))
                )?;
                cx.step_ended(&s.name, phase, "failed");
                hook!(cx, &s.name, phase, attempt, AfterWrite);
                return Ok(StepEnd::Failed(msg));
            }
            let state = if err.kind() == StepErrorKind::Unknown {
                StepState::Unknown
            } else {
                StepState::Pending
            };
            if permanent || exhausted {
                let why = match (phase, err.kind()) {
                    (_, StepErrorKind::Unknown) => {
                        format!("outcome still unknown after {used} attempts: {msg}")
                    }
                    (Phase::Compensation, _) => {
                        format!("compensation keeps failing ({used} attempts): {msg}")
                    }
                    _ => format!("step after the pivot failed permanently: {msg}"),
                };
                write!(
                    Transition::new(
                        Event::new("step_stuck")
                            .step(&*s.name, phase)
                            .detail(why.clone()),
                    ),
                    rec(state, attempt, None, Some(msg))
                )?;
                cx.step_ended(&s.name, phase, "stuck");
                hook!(cx, &s.name, phase, attempt, AfterWrite);
                return Ok(StepEnd::Stuck(why));
            }
            let delay = policy
                .backoff_config()
                .delay(used, prev_delay, &*cx.inner.rng);
            prev_delay = delay;
            debug!(target: "steadfast::saga", saga = %saga, step = %s.name, phase = phase.as_str(),
                attempt, error = %err, delay_ms = steadfast_layers::telemetry::duration_ms(delay), "step attempt failed; retrying with the same key");
            write!(
                Transition::new(
                    Event::new("attempt_failed")
                        .step(&*s.name, phase)
                        .detail(msg.clone()),
                ),
                rec(state, attempt, None, Some(msg))
            )?;
            hook!(cx, &s.name, phase, attempt, AfterWrite);
            tokio::time::sleep(delay).await;
        }
    }
}
