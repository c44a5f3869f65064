//! Test support: temporary SQLite files and per-run PostgreSQL schemas.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::path::PathBuf;

use steadfast_layers::rng::{RandomSource, SeededRng};

/// A temporary SQLite database path, removed (with its WAL files) on drop.
pub struct TempDb {
    pub path: PathBuf,
}

impl TempDb {
    pub fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join("steadfast-saga-tests");
        std::fs::create_dir_all(&dir).unwrap();
        let n = SeededRng::from_entropy().next_u64();
        TempDb {
            path: dir.join(format!("{tag}-{}-{n:016x}.db", std::process::id())),
        }
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut p = self.path.clone().into_os_string();
            p.push(suffix);
            let _ = std::fs::remove_file(p);
        }
    }
}

/// The PostgreSQL URL for tests, and whether missing services must fail them.
pub use steadfast_testkit::services::{database_url, required as services_required};

/// A fresh schema name for one test run.
pub fn schema_name(tag: &str) -> String {
    let tag: String = tag
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    format!(
        "steadfast_test_{tag}_{:012x}",
        SeededRng::from_entropy().next_u64() >> 16
    )
}

/// A PostgreSQL store in a fresh schema, or `None` (after a loud SKIPPED on stderr) when the
/// server is unreachable and services are not required.
pub async fn pg_store(tag: &str) -> Option<steadfast_saga::store::PostgresStore> {
    let url = database_url();
    let schema = schema_name(tag);
    match steadfast_saga::store::PostgresStore::connect(&url, Some(&schema)).await {
        Ok(s) => Some(s),
        Err(e @ steadfast_saga::Error::Store(_)) if !services_required() => {
            loud(&format!(
                "\n*** SKIPPED {tag}: PostgreSQL unreachable at {url}: {e} \
                 (set STEADFAST_REQUIRE_SERVICES=1 to fail instead) ***\n"
            ));
            None
        }
        Err(e) => panic!("PostgreSQL store for {tag} at {url} (schema {schema}): {e}"),
    }
}

/// Prints past libtest's output capture (to /dev/stderr when it can be opened).
pub fn loud(msg: &str) {
    use std::io::Write;
    match std::fs::OpenOptions::new().write(true).open("/dev/stderr") {
        Ok(mut f) => {
            let _ = f.write_all(msg.as_bytes());
        }
        Err(_) => eprintln!("{msg}"),
    }
}

/// One participant call: the saga, the orchestrator instance that made it, and its interval
/// (microseconds on one clock; a call that never answered ends when its caller died or stopped).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    pub saga: String,
    pub inst: String,
    pub start: i64,
    pub end: i64,
}

/// The overlap detector: pairs of calls on one saga, by different orchestrator instances, whose
/// intervals overlap — the saga was executed by two orchestrators at once.
pub fn overlapping_calls(calls: &[Call]) -> Vec<(Call, Call)> {
    let mut by_saga: std::collections::HashMap<&str, Vec<&Call>> = Default::default();
    for c in calls {
        by_saga.entry(c.saga.as_str()).or_default().push(c);
    }
    let mut overlaps = Vec::new();
    for v in by_saga.values() {
        for (i, a) in v.iter().enumerate() {
            for b in &v[i + 1..] {
                if a.inst != b.inst && a.start < b.end && b.start < a.end {
                    overlaps.push(((*a).clone(), (*b).clone()));
                }
            }
        }
    }
    overlaps
}

/// The fenced-write detector: `(saga, epoch)` history entries in log order; a write whose epoch
/// is older than one logged before it on the same saga is a fenced-out owner's write that landed.
/// Returns `(saga, epoch, newer epoch logged before it)`.
pub fn stale_writes(history: impl IntoIterator<Item = (String, i64)>) -> Vec<(String, i64, i64)> {
    let mut last: std::collections::HashMap<String, i64> = Default::default();
    let mut stale = Vec::new();
    for (saga, epoch) in history {
        let prev = last.get(&saga).copied().unwrap_or(0);
        if epoch < prev {
            stale.push((saga, epoch, prev));
        } else {
            last.insert(saga, epoch);
        }
    }
    stale
}
