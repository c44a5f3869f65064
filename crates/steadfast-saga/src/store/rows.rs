//! Row decoding shared by the SQL stores: the same columns mean the same thing in SQLite and
//! PostgreSQL, so a saga's steps, history and listing entry are read by one piece of code.

use std::str::FromStr;

use super::{
    column, decode_err, HistoryEntry, SagaStatus, SagaSummary, StepRecord, StepState, SummaryParts,
};
use crate::error::Error;
use crate::keys::{Phase, SagaId};

/// What identifies a saga row whatever its id column holds: SQLite's `rowid` (its `TEXT PRIMARY
/// KEY` may hold NULL or a blob), PostgreSQL's id text (always readable in a UTF-8 database).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RowKey {
    /// A SQLite `rowid`.
    Rowid(i64),
    /// A PostgreSQL id, as stored.
    Id(String),
}

/// The column types the saga tables use, read from either driver's rows.
pub trait Columns {
    /// A `TEXT NOT NULL` column.
    fn text(&self, col: &str) -> Result<String, sqlx::Error>;
    /// A nullable `TEXT` column.
    fn opt_text(&self, col: &str) -> Result<Option<String>, sqlx::Error>;
    /// An integer column.
    fn int(&self, col: &str) -> Result<i64, sqlx::Error>;
    /// A nullable integer column.
    fn opt_int(&self, col: &str) -> Result<Option<i64>, sqlx::Error>;
    /// A flag: PostgreSQL `BOOLEAN`, SQLite an integer (anything but 0 is true).
    fn flag(&self, col: &str) -> Result<bool, sqlx::Error>;
    /// The `row_key` column (see [`RowKey`]).
    fn row_key(&self) -> Result<RowKey, sqlx::Error>;
}

macro_rules! columns {
    ($row:ty, flag: $flag:ty, key: $key:ident) => {
        impl Columns for $row {
            fn text(&self, col: &str) -> Result<String, sqlx::Error> {
                sqlx::Row::try_get(self, col)
            }
            fn opt_text(&self, col: &str) -> Result<Option<String>, sqlx::Error> {
                sqlx::Row::try_get(self, col)
            }
            fn int(&self, col: &str) -> Result<i64, sqlx::Error> {
                sqlx::Row::try_get(self, col)
            }
            fn opt_int(&self, col: &str) -> Result<Option<i64>, sqlx::Error> {
                sqlx::Row::try_get(self, col)
            }
            fn flag(&self, col: &str) -> Result<bool, sqlx::Error> {
                let v: $flag = sqlx::Row::try_get(self, col)?;
                Ok(Flag::truth(&v))
            }
            fn row_key(&self) -> Result<RowKey, sqlx::Error> {
                sqlx::Row::try_get(self, "row_key").map(RowKey::$key)
            }
        }
    };
}
#[cfg(feature = "postgres")]
columns!(sqlx::postgres::PgRow, flag: bool, key: Id);
#[cfg(feature = "sqlite")]
columns!(sqlx::sqlite::SqliteRow, flag: i64, key: Rowid);

/// A stored flag's truth: a boolean, or an integer that is not 0.
trait Flag {
    fn truth(&self) -> bool;
}

impl Flag for bool {
    fn truth(&self) -> bool {
        *self
    }
}

impl Flag for i64 {
    fn truth(&self) -> bool {
        *self != 0
    }
}

/// A stored saga id: the canonical text of a UUID (lower-case, hyphenated), as the stores write
/// it. Anything else — not a UUID, or a UUID spelt another way, which `WHERE id = ?` with the
/// parsed id would never find again — cannot be read.
pub(super) fn parse_id(s: &str) -> Result<SagaId, Error> {
    match SagaId::from_str(s) {
        Ok(id) if id.to_string() == s => Ok(id),
        Ok(_) => Err(decode_err(
            None,
            "a saga id",
            format!(
                "{} is not in canonical form (lower-case, hyphenated)",
                quoted(s)
            ),
        )),
        Err(e) => Err(decode_err(None, "a saga id", format!("{}: {e}", quoted(s)))),
    }
}

/// A stored value for an error message: quoted, at most 64 characters.
pub(super) fn quoted(s: &str) -> String {
    const MAX: usize = 64;
    match s.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{:?}...", &s[..cut]),
        None => format!("{s:?}"),
    }
}

/// A saga id read from a row, or the decode error that says why it cannot be.
pub(super) fn read_id(r: &impl Columns) -> Result<SagaId, Error> {
    match r.text("id") {
        Ok(s) => parse_id(&s),
        Err(e) => Err(decode_err(None, "a saga id", e)),
    }
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

/// A listing entry. A row whose id cannot be read is listed too, under the nil id, as needing
/// attention, with the decode error (which quotes the stored id): it is never skipped.
pub(super) fn summary(r: &impl Columns) -> SagaSummary {
    let (id, id_problem) = match read_id(r) {
        Ok(id) => (id, None),
        Err(e) => (SagaId::nil(), Some(e)),
    };
    let mut s = SummaryParts {
        id,
        saga_type: column(id, "the saga type", r.text("saga_type")),
        business_key: column(id, "the business key", r.text("business_key")),
        status: column(id, "the saga status", r.text("status")),
        error: column(id, "the kept error", r.opt_text("error")),
        recoveries: column(id, "the recovery count", r.int("recoveries")),
    }
    .into_summary();
    if let Some(e) = id_problem {
        s.status = SagaStatus::NeedsAttention;
        let e = e.to_string();
        s.error = Some(match s.error.take() {
            // Set aside by a claim, which kept this same error.
            Some(rest) if rest.contains(&e) => rest,
            Some(rest) => format!("{e}; {rest}"),
            None => e,
        });
    }
    s
}
