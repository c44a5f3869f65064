//! Test helpers: a scripted service here; metrics and trace capture from `steadfast-testkit`.
#![allow(dead_code, unreachable_pub, missing_docs, unused_imports)]
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use steadfast_layers::BoxError;
use tokio::time::Instant;
use tower::service_fn;
use tower::util::BoxCloneService;

/// What one scripted attempt does.
#[derive(Clone, Debug)]
pub enum Step {
    Ok(u16),
    Err(&'static str),
    /// Sleep, then answer.
    Slow(Duration, u16),
}

/// A service that plays `steps` in order (the last one repeats) and records when each call
/// started.
#[derive(Clone, Default)]
pub struct Script {
    pub calls: Arc<Mutex<Vec<Instant>>>,
}

impl Script {
    pub fn service(&self, steps: Vec<Step>) -> BoxCloneService<u32, u16, BoxError> {
        let calls = self.calls.clone();
        let steps = Arc::new(steps);
        BoxCloneService::new(service_fn(move |_req: u32| {
            let n = {
                let mut c = calls.lock().unwrap();
                c.push(Instant::now());
                c.len() - 1
            };
            let step = steps[n.min(steps.len() - 1)].clone();
            async move {
                match step {
                    Step::Ok(s) => Ok(s),
                    Step::Err(e) => Err(BoxError::from(format!("{e} #{}", n + 1))),
                    Step::Slow(d, s) => {
                        tokio::time::sleep(d).await;
                        Ok(s)
                    }
                }
            }
        }))
    }

    pub fn count(&self) -> usize {
        self.calls.lock().unwrap().len()
    }

    /// Offsets of each call from `t0`.
    pub fn offsets(&self, t0: Instant) -> Vec<Duration> {
        self.calls.lock().unwrap().iter().map(|t| *t - t0).collect()
    }
}

pub use steadfast_testkit::{chain, Event, Metrics, Traces};
