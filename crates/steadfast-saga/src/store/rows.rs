//! Row decoding shared by the SQL stores: the same columns mean the same thing in SQLite and
//! PostgreSQL, so a saga's steps, history and listing entry are read by one piece of code.

use std::str::FromStr;

use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::Row;

use super::{column, decode_err, HistoryEntry, SagaSummary, StepRecord, StepState, SummaryParts};
use crate::error::Error;
use crate::keys::{Phase, SagaId};

/// The column types the saga tables use, read from either driver's rows.
pub(super) trait Columns {
    fn text(&self, col: &str) -> Result<String, sqlx::Error>;
    fn opt_text(&self, col: &str) -> Result<Option<String>, sqlx::Error>;
    fn int(&self, col: &str) -> Result<i64, sqlx::Error>;
}

macro_rules! columns {
    ($row:ty) => {
        impl Columns for $row {
            fn text(&self, col: &str) -> Result<String, sqlx::Error> {
                self.try_get(col)
            }
            fn opt_text(&self, col: &str) -> Result<Option<String>, sqlx::Error> {
                self.try_get(col)
            }
            fn int(&self, col: &str) -> Result<i64, sqlx::Error> {
                self.try_get(col)
            }
        }
    };
}
columns!(PgRow);
columns!(SqliteRow);

pub(super) fn parse_id(s: &str) -> Result<SagaId, Error> {
    SagaId::from_str(s).map_err(|e| decode_err(None, "a saga id", e))
}

pub(super) fn to_u32(id: SagaId, what: &str, v: i64) -> Result<u32, Error> {
    u32::try_from(v).map_err(|e| decode_err(Some(id), what, e))
}

/// One row of `steadfast_saga_steps`.
pub(super) fn step(id: SagaId, row: &impl Columns) -> Result<StepRecord, Error> {
    let state = column(id, "a step state", row.text("state"))?;
    let phase = column(id, "a step phase", row.text("phase"))?;
    Ok(StepRecord {
        step: column(id, "a step name", row.text("step"))?,
        phase: Phase::from_str(&phase).map_err(|e| decode_err(Some(id), "a step phase", e))?,
        state: StepState::from_str(&state).map_err(|e| decode_err(Some(id), "a step state", e))?,
        attempts: to_u32(
            id,
            "a step's attempts",
            column(id, "a step's attempts", row.int("attempts"))?,
        )?,
        output: column(id, "a step output", row.opt_text("output"))?,
        error: column(id, "a step error", row.opt_text("error"))?,
    })
}

/// One row of `steadfast_saga_history` (with `at_ms` selected as milliseconds).
pub(super) fn history(id: SagaId, r: &impl Columns) -> Result<HistoryEntry, Error> {
    let phase = column(id, "a history phase", r.opt_text("phase"))?;
    Ok(HistoryEntry {
        seq: column(id, "a history sequence number", r.int("seq"))?,
        at_ms: column(id, "a history time", r.int("at_ms"))?,
        epoch: column(id, "a history epoch", r.int("epoch"))?,
        kind: column(id, "a history kind", r.text("kind"))?,
        step: column(id, "a history step", r.opt_text("step"))?,
        phase: phase
            .map(|p| Phase::from_str(&p))
            .transpose()
            .map_err(|e| decode_err(Some(id), "a history phase", e))?,
        detail: column(id, "a history detail", r.opt_text("detail"))?,
    })
}

/// A listing entry; `None` (logged) only when the row's id cannot be read.
pub(super) fn summary(r: &impl Columns) -> Option<SagaSummary> {
    let id = match r.text("id").map_err(Error::from).and_then(|s| parse_id(&s)) {
        Ok(id) => id,
        Err(e) => {
            tracing::warn!(target: "steadfast::saga", error = %e,
                "listing skipped a saga row whose id cannot be read");
            return None;
        }
    };
    Some(
        SummaryParts {
            id,
            saga_type: column(id, "the saga type", r.text("saga_type")),
            business_key: column(id, "the business key", r.text("business_key")),
            status: column(id, "the saga status", r.text("status")),
            error: column(id, "the kept error", r.opt_text("error")),
            recoveries: column(id, "the recovery count", r.int("recoveries")),
        }
        .into_summary(),
    )
}
