//! A hand-written progress line on stderr for long runs.
//!
//! On a terminal it redraws one line (`label  [#####.....]  812/2000 requests  2.1 s`) five times
//! a second and clears it when done; elsewhere (CI logs) it prints one line when a run starts.
//! Disabled, it only counts.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

/// What a run is measured against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Total {
    /// A fixed number of requests.
    Requests(u64),
    /// A fixed time.
    Time(Duration),
}

/// A progress line; [`Progress::counter`] hands out cheap counters to the load generators.
#[derive(Debug)]
pub struct Progress {
    done: Arc<AtomicU64>,
    ticker: Option<JoinHandle<()>>,
}

/// Counts finished requests for a [`Progress`].
#[derive(Clone, Debug)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    /// One more request finished.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

impl Progress {
    /// Starts showing progress of `label` towards `total` (shows nothing unless `enabled`).
    /// Must be called inside a tokio runtime when enabled on a terminal.
    pub fn start(label: impl Into<String>, total: Total, enabled: bool) -> Progress {
        let done = Arc::new(AtomicU64::new(0));
        let label = label.into();
        let ticker = if !enabled {
            None
        } else if std::io::stderr().is_terminal() {
            let done = Arc::clone(&done);
            Some(tokio::spawn(async move {
                let started = Instant::now();
                let mut tick = tokio::time::interval(Duration::from_millis(200));
                loop {
                    tick.tick().await;
                    let line = render(
                        &label,
                        total,
                        done.load(Ordering::Relaxed),
                        started.elapsed(),
                    );
                    let mut err = std::io::stderr().lock();
                    let _ = write!(err, "\r\x1b[2K{line}");
                    let _ = err.flush();
                }
            }))
        } else {
            let what = match total {
                Total::Requests(n) => format!("{n} requests"),
                Total::Time(d) => format!("{:.0} s", d.as_secs_f64()),
            };
            eprintln!("running {label} ({what})");
            None
        };
        Progress { done, ticker }
    }

    /// A counter to bump once per finished request.
    pub fn counter(&self) -> Counter {
        Counter(Arc::clone(&self.done))
    }

    /// Requests counted so far.
    pub fn count(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    /// Stops and clears the line.
    pub fn finish(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(t) = self.ticker.take() {
            t.abort();
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop();
    }
}

fn render(label: &str, total: Total, done: u64, elapsed: Duration) -> String {
    const WIDTH: usize = 24;
    let fraction = match total {
        Total::Requests(n) if n > 0 => done as f64 / n as f64,
        Total::Requests(_) => 1.0,
        Total::Time(d) if !d.is_zero() => elapsed.as_secs_f64() / d.as_secs_f64(),
        Total::Time(_) => 1.0,
    }
    .clamp(0.0, 1.0);
    let filled = (fraction * WIDTH as f64).round() as usize;
    let bar: String = "#".repeat(filled) + &".".repeat(WIDTH - filled);
    let count = match total {
        Total::Requests(n) => format!("{done}/{n} requests"),
        Total::Time(d) => format!("{done} requests, {:.0} s run", d.as_secs_f64()),
    };
    format!("{label}  [{bar}]  {count}  {:.1} s", elapsed.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_a_bar() {
        let line = render(
            "flaky/none",
            Total::Requests(100),
            50,
            Duration::from_millis(1500),
        );
        assert!(line.contains("[############............]"), "{line}");
        assert!(line.contains("50/100 requests"), "{line}");
        let line = render(
            "x",
            Total::Time(Duration::from_secs(2)),
            9,
            Duration::from_secs(5),
        );
        assert!(line.contains(&"#".repeat(24)), "{line}");
    }
}
