//! What the read commands print: aligned tables for people, and one JSON object per command
//! (the shapes documented in the crate README; fields are only ever added).

use serde::Serialize;
use steadfast_saga::store::{HistoryEntry, SagaRecord, SagaSummary, StepRecord};

/// `saga list --json`.
#[derive(Serialize)]
pub(crate) struct ListJson<'a> {
    pub(crate) sagas: Vec<SummaryJson<'a>>,
}

#[derive(Serialize)]
pub(crate) struct SummaryJson<'a> {
    id: String,
    saga_type: &'a str,
    business_key: &'a str,
    status: &'static str,
    recoveries: u32,
    error: Option<&'a str>,
}

impl<'a> From<&'a SagaSummary> for SummaryJson<'a> {
    fn from(s: &'a SagaSummary) -> Self {
        SummaryJson {
            id: s.id.to_string(),
            saga_type: &s.saga_type,
            business_key: &s.business_key,
            status: s.status.as_str(),
            recoveries: s.recoveries,
            error: s.error.as_deref(),
        }
    }
}

/// `saga show --json`.
#[derive(Serialize)]
pub(crate) struct ShowJson<'a> {
    id: String,
    saga_type: &'a str,
    version: u32,
    business_key: &'a str,
    status: &'static str,
    compensating: bool,
    forward_only: bool,
    cancel_requested: Option<&'a str>,
    recoveries: u32,
    epoch: i64,
    owner: Option<&'a str>,
    deadline_remaining_ms: Option<u64>,
    error: Option<&'a str>,
    input: &'a str,
    steps: Vec<StepJson<'a>>,
    history: Vec<EventJson<'a>>,
}

impl<'a> ShowJson<'a> {
    pub(crate) fn new(r: &'a SagaRecord, history: &'a [HistoryEntry]) -> Self {
        ShowJson {
            id: r.id.to_string(),
            saga_type: &r.saga_type,
            version: r.version,
            business_key: &r.business_key,
            status: r.status.as_str(),
            compensating: r.compensating,
            forward_only: r.forward_only,
            cancel_requested: r.cancel_requested.as_deref(),
            recoveries: r.recoveries,
            epoch: r.epoch,
            owner: r.owner.as_deref(),
            deadline_remaining_ms: r
                .deadline_remaining
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            error: r.error.as_deref(),
            input: &r.input,
            steps: r.steps.iter().map(StepJson::from).collect(),
            history: history.iter().map(EventJson::from).collect(),
        }
    }
}

#[derive(Serialize)]
struct StepJson<'a> {
    step: &'a str,
    phase: &'static str,
    state: &'static str,
    attempts: u32,
    output: Option<&'a str>,
    error: Option<&'a str>,
}

impl<'a> From<&'a StepRecord> for StepJson<'a> {
    fn from(s: &'a StepRecord) -> Self {
        StepJson {
            step: &s.step,
            phase: s.phase.as_str(),
            state: s.state.as_str(),
            attempts: s.attempts,
            output: s.output.as_deref(),
            error: s.error.as_deref(),
        }
    }
}

/// `saga history --json`.
#[derive(Serialize)]
pub(crate) struct HistoryJson<'a> {
    id: String,
    history: Vec<EventJson<'a>>,
}

impl<'a> HistoryJson<'a> {
    pub(crate) fn new(id: steadfast_saga::SagaId, h: &'a [HistoryEntry]) -> Self {
        HistoryJson {
            id: id.to_string(),
            history: h.iter().map(EventJson::from).collect(),
        }
    }
}

#[derive(Serialize)]
struct EventJson<'a> {
    seq: i64,
    at: String,
    at_ms: i64,
    epoch: i64,
    kind: &'a str,
    step: Option<&'a str>,
    phase: Option<&'static str>,
    detail: Option<&'a str>,
}

impl<'a> From<&'a HistoryEntry> for EventJson<'a> {
    fn from(e: &'a HistoryEntry) -> Self {
        EventJson {
            seq: e.seq,
            at: rfc3339(e.at_ms),
            at_ms: e.at_ms,
            epoch: e.epoch,
            kind: &e.kind,
            step: e.step.as_deref(),
            phase: e.phase.map(|p| p.as_str()),
            detail: e.detail.as_deref(),
        }
    }
}

/// `saga resume|retry-step|resolve|cancel --json`.
#[derive(Serialize)]
pub(crate) struct ActionJson<'a> {
    pub(crate) id: String,
    pub(crate) action: &'a str,
    pub(crate) status: &'static str,
    pub(crate) message: &'a str,
}

/// Milliseconds since the Unix epoch as an RFC 3339 UTC time with milliseconds.
pub(crate) fn rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let milli = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    // Days to a civil date (Howard Hinnant's algorithm, proleptic Gregorian).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{milli:03}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

/// The widest a cell of a listing is shown (`show` and the JSON have it all).
const LIST_CELL: usize = 72;
/// The widest a cell of a step or timeline table is shown.
const DETAIL_CELL: usize = 160;

/// One line of a cell: newlines and tabs become spaces, text longer than `max` is cut with
/// `...`.
fn cell(s: &str, max: usize) -> String {
    let one: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    match one.char_indices().nth(max) {
        Some((cut, _)) => format!("{}...", &one[..cut]),
        None => one,
    }
}

/// An aligned table of cells cut at [`LIST_CELL`] characters.
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    table_cut(header, rows, LIST_CELL)
}

/// An aligned table: a header row, then the rows, cells cut at `max` characters; the last
/// column is not padded.
fn table_cut(header: &[&str], rows: &[Vec<String>], max: usize) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| cell(c, max)).collect())
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let n = cells.len();
        let mut l = String::new();
        for (i, (c, w)) in cells.into_iter().zip(&widths).enumerate() {
            l.push_str(c);
            if i + 1 < n {
                l.extend(std::iter::repeat_n(' ', w - c.chars().count() + 2));
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for r in &rows {
        line(r.iter().map(String::as_str).collect());
    }
    out
}

/// The list table.
pub(crate) fn list_table(sagas: &[SagaSummary]) -> String {
    let rows: Vec<Vec<String>> = sagas
        .iter()
        .map(|s| {
            vec![
                s.id.to_string(),
                s.saga_type.clone(),
                s.business_key.clone(),
                s.status.to_string(),
                s.recoveries.to_string(),
                s.error.clone().unwrap_or_default(),
            ]
        })
        .collect();
    table(
        &["ID", "TYPE", "KEY", "STATUS", "RECOVERIES", "ERROR"],
        &rows,
    )
}

/// The history (timeline) table.
pub(crate) fn history_table(h: &[HistoryEntry]) -> String {
    let rows: Vec<Vec<String>> = h
        .iter()
        .map(|e| {
            vec![
                rfc3339(e.at_ms),
                e.epoch.to_string(),
                e.kind.clone(),
                match (&e.step, e.phase) {
                    (Some(s), Some(p)) => format!("{s} ({p})"),
                    (Some(s), None) => s.clone(),
                    _ => String::new(),
                },
                e.detail.clone().unwrap_or_default(),
            ]
        })
        .collect();
    table_cut(
        &["TIME", "EPOCH", "EVENT", "STEP", "DETAIL"],
        &rows,
        DETAIL_CELL,
    )
}

/// `saga show` for people: the row, the steps, the timeline.
pub(crate) fn show_text(r: &SagaRecord, h: &[HistoryEntry]) -> String {
    let yes_no = |b: bool| if b { "yes" } else { "no" };
    let status = if r.compensating && r.status != steadfast_saga::SagaStatus::Compensated {
        format!("{} (compensating)", r.status)
    } else {
        r.status.to_string()
    };
    let deadline = match r.deadline_remaining {
        None => "none".to_string(),
        Some(d) if d.is_zero() => "passed".to_string(),
        Some(d) => format!("{:.1} s left", d.as_secs_f64()),
    };
    let fields: Vec<Vec<String>> = vec![
        vec!["saga".into(), r.id.to_string()],
        vec![
            "type".into(),
            format!("{} (version {})", r.saga_type, r.version),
        ],
        vec!["business key".into(), r.business_key.clone()],
        vec!["status".into(), status],
        vec![
            "error".into(),
            r.error.clone().unwrap_or_else(|| "-".into()),
        ],
        vec!["past its pivot".into(), yes_no(r.forward_only).into()],
        vec![
            "cancel requested".into(),
            r.cancel_requested.clone().unwrap_or_else(|| "no".into()),
        ],
        vec!["recoveries".into(), r.recoveries.to_string()],
        vec![
            "lease".into(),
            format!(
                "epoch {}, owner {}",
                r.epoch,
                r.owner.as_deref().unwrap_or("-")
            ),
        ],
        vec!["deadline".into(), deadline],
        vec!["input".into(), r.input.clone()],
    ];
    let mut out = String::new();
    // Two columns with no header: drop the table's header line.
    let t = table_cut(&["", ""], &fields, usize::MAX);
    out.push_str(t.split_once('\n').map_or("", |(_, rest)| rest));
    out.push_str("\nSTEPS\n");
    let steps: Vec<Vec<String>> = r
        .steps
        .iter()
        .map(|s| {
            vec![
                s.step.clone(),
                s.phase.to_string(),
                s.state.as_str().to_string(),
                s.attempts.to_string(),
                s.error.clone().unwrap_or_default(),
            ]
        })
        .collect();
    if steps.is_empty() {
        out.push_str("(none recorded)\n");
    } else {
        out.push_str(&table_cut(
            &["STEP", "PHASE", "STATE", "ATTEMPTS", "LAST ERROR"],
            &steps,
            DETAIL_CELL,
        ));
    }
    out.push_str("\nTIMELINE\n");
    out.push_str(&history_table(h));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339(1_798_761_599_999), "2026-12-31T23:59:59.999Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn tables_align_and_keep_cells_on_one_line() {
        let t = table(
            &["A", "BB"],
            &[
                vec!["long value".into(), "x\ny".into()],
                vec!["s".into(), "z".repeat(100)],
            ],
        );
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "A           BB");
        assert_eq!(lines[1], "long value  x y");
        assert!(lines[2].starts_with("s           zzz"));
        assert!(lines[2].ends_with("..."));
        assert_eq!(lines.len(), 3);
    }
}
