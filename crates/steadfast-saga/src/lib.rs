//! A saga orchestrator with a durable log, crash recovery, lease fencing and exactly-once step
//! effects.
//!
//! - **Define** a saga with a typed builder ([`Saga::builder`]): compensatable steps, an
//!   optional pivot, then retriable steps (Richardson's phases, checked at build time), parallel
//!   groups, per-step retry policies and attempt timeouts, a saga deadline, and a version.
//! - **Run** it with an [`Orchestrator`] over a [`SagaStore`](store::SagaStore): every
//!   transition is written before the next action starts; a failed step makes the completed
//!   ones compensate in reverse order; an unknown outcome is retried with the same
//!   [`StepKey`] and never assumed failed; a compensation that keeps failing
//!   stops the saga in [`SagaStatus::NeedsAttention`] with its error kept.
//! - **Recover**: leases with heartbeats and epochs; an orchestrator that dies leaves its
//!   sagas to be claimed by another within one lease; an orchestrator whose lease was taken
//!   over gets [`Fenced`] on its next write and stops. No stored row, whatever it holds, blocks
//!   the recovery of the others: an unreadable one goes to `NeedsAttention` with the reason.
//! - **Operate**: list, inspect, resume, retry a step, resolve it by hand, or
//!   [`cancel`](Orchestrator::cancel) a saga before its pivot (it compensates; after the pivot
//!   the cancel is refused with [`CancelRefused`]). The `steadfast` CLI (crate `steadfast-cli`)
//!   does the same from a shell.
//! - **Stores**: [`MemoryStore`](store::MemoryStore), and one SQL store,
//!   [`SqlStore`](store::SqlStore), on SQLite ([`SqliteStore`](store::SqliteStore), feature
//!   `sqlite`, on by default) or PostgreSQL ([`PostgresStore`](store::PostgresStore), feature
//!   `postgres`); one conformance suite ([`store::conformance`]). Without either feature, no SQL
//!   driver is built. (`test-hooks` is for this crate's own tests: never in production.)
//!
//! ```
//! use std::sync::Arc;
//! use serde::{Deserialize, Serialize};
//! use steadfast_saga::store::MemoryStore;
//! use steadfast_saga::{Orchestrator, Saga, SagaStatus, Step, StepContext, StepError};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Trip { traveller: String, nights: u32 }
//! type Ctx = StepContext<Trip>;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), steadfast_saga::Error> {
//! let mut b = Saga::builder::<Trip>("book-trip").version(1);
//! let flight = b.step(Step::compensatable(
//!     "reserve-flight",
//!     // Send ctx.key() to the airline as Idempotency-Key: retries and recoveries reuse it.
//!     |ctx: Ctx| async move { Ok::<_, StepError>(format!("PNR-{}", ctx.input().traveller)) },
//!     |_ctx: Ctx, pnr: String| async move { let _cancel = pnr; Ok::<_, StepError>(()) },
//! ));
//! b.step(Step::pivot("charge-card", move |ctx: Ctx| async move {
//!     let pnr: String = ctx.output(flight)?;
//!     if ctx.input().nights > 30 {
//!         return Err(StepError::permanent(format!("card declined for {pnr}")));
//!     }
//!     Ok(())
//! }));
//! b.step(Step::retriable("send-email", |_ctx: Ctx| async { Ok::<_, StepError>(()) }));
//! let def = b.build()?;
//!
//! let orch = Orchestrator::builder(Arc::new(MemoryStore::new())).register(&def).build()?;
//! let ok = orch.start(&def, "trip-1", &Trip { traveller: "ada".into(), nights: 3 }).await?;
//! assert_eq!(orch.wait(ok.id).await?, SagaStatus::Completed);
//! let declined = orch.start(&def, "trip-2", &Trip { traveller: "bob".into(), nights: 40 }).await?;
//! assert_eq!(orch.wait(declined.id).await?, SagaStatus::Compensated);
//! # Ok(()) }
//! ```

#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod definition;
pub mod error;
pub mod keys;
pub mod orchestrator;
pub mod store;
pub mod telemetry;

pub use definition::{
    default_compensation_retry, GroupBuilder, Payload, RetryPolicy, Saga, SagaBuilder,
    SagaDefinition, Step, StepContext, StepKind, StepRef, DEFAULT_ATTEMPT_TIMEOUT,
};
pub use error::{
    BoxError, CancelRefusal, CancelRefused, CancelRequested, ConfigError, Decode,
    DefinitionChanged, Error, Fenced, StepError, StepErrorKind,
};
pub use keys::{Phase, SagaId, StepKey};
#[cfg(feature = "test-hooks")]
#[doc(hidden)]
pub use orchestrator::{Boundary, BoundaryInfo, SagaHooks};
pub use orchestrator::{
    Orchestrator, OrchestratorBuilder, Resolution, Started, DEFAULT_LEASE, DEFAULT_MAX_RECOVERIES,
    DEFAULT_POLL_INTERVAL,
};
pub use store::SagaStatus;
