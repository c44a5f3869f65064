//! Property test: random outcome sequences, time advances and resets, checked step by step
//! against a plain reference model of the breaker.
#![allow(missing_docs, clippy::unwrap_used)]

// Nested so that `cargo test breaker` selects every test of this file.
mod breaker_model {
    use std::time::Duration;

    use proptest::prelude::*;
    use steadfast_layers::breaker::{
        BreakDuration, BreakerHandle, BreakerState, CircuitBreakerLayer, CircuitOpen, SlidingWindow,
    };
    use steadfast_layers::rng::{RandomSource, SeededRng};
    use steadfast_layers::BoxError;
    use tower::{service_fn, Layer, Service, ServiceExt};

    /// A slow call lasts exactly this long; with slow-call detection on, it is the threshold.
    const SLOW: Duration = Duration::from_secs(1);

    #[derive(Clone, Copy, Debug)]
    enum Win {
        Count(u32),
        Time { span_ms: u64, buckets: u32 },
    }

    #[derive(Clone, Debug)]
    struct Cfg {
        window: Win,
        minimum_calls: u32,
        failure_rate: f64,
        /// The slow-call rate threshold, when slow-call detection is on.
        slow_rate: Option<f64>,
        consecutive: Option<u32>,
        probes: u32,
        progressive: bool,
        base_ms: u64,
        cap_ms: u64,
        jitter: f64,
        seed: u64,
    }

    #[derive(Clone, Copy, Debug)]
    enum Op {
        Call { fail: bool, slow: bool },
        Advance(u64),
        Reset,
    }

    // ---------------------------------------------------------------------------------------------
    // The reference model: a straightforward reading of the rules, with plain vectors.

    #[derive(Clone, Copy, Debug, PartialEq)]
    enum State {
        Closed,
        Open { until_ms: u64 },
        HalfOpen { done: u32, failed: u32, slow: u32 },
    }

    struct Model {
        cfg: Cfg,
        now_ns: u64,
        state: State,
        /// Every outcome recorded while closed since the window was last cleared: (finish time,
        /// failed, slow).
        log: Vec<(u64, bool, bool)>,
        consecutive: u32,
        opens: u32,
        rng: SeededRng,
    }

    impl Model {
        fn new(cfg: Cfg) -> Self {
            let rng = SeededRng::new(cfg.seed);
            Model {
                cfg,
                now_ns: 0,
                state: State::Closed,
                log: Vec::new(),
                consecutive: 0,
                opens: 0,
                rng,
            }
        }

        /// (calls, failures, slow) in the window now.
        fn counts(&self) -> (u64, u64, u64) {
            let in_window: Vec<&(u64, bool, bool)> = match self.cfg.window {
                Win::Count(n) => self.log.iter().rev().take(n as usize).collect(),
                Win::Time { span_ms, buckets } => {
                    let bucket_ns = span_ms * 1_000_000 / u64::from(buckets);
                    let now = self.now_ns / bucket_ns;
                    self.log
                        .iter()
                        .filter(|(t, _, _)| now - t / bucket_ns < u64::from(buckets))
                        .collect()
                }
            };
            let calls = in_window.len() as u64;
            let failures = in_window.iter().filter(|e| e.1).count() as u64;
            let slow = in_window.iter().filter(|e| e.2).count() as u64;
            (calls, failures, slow)
        }

        fn minimum(&self) -> u64 {
            match self.cfg.window {
                Win::Count(n) => u64::from(self.cfg.minimum_calls.min(n)),
                Win::Time { .. } => u64::from(self.cfg.minimum_calls),
            }
        }

        /// A call: `Err(remaining)` if refused.
        fn call(&mut self, fail: bool, slow_call: bool) -> Result<(), Duration> {
            if let State::Open { until_ms } = self.state {
                let until_ns = until_ms * 1_000_000;
                if self.now_ns < until_ns {
                    return Err(Duration::from_nanos(until_ns - self.now_ns));
                }
                self.state = State::HalfOpen {
                    done: 0,
                    failed: 0,
                    slow: 0,
                };
            }
            if slow_call {
                self.now_ns += SLOW.as_nanos() as u64;
            }
            let slow = slow_call && self.cfg.slow_rate.is_some();
            match self.state {
                State::Closed => {
                    self.log.push((self.now_ns, fail, slow));
                    self.consecutive = if fail { self.consecutive + 1 } else { 0 };
                    let (calls, failures, slows) = self.counts();
                    let by_rate = calls >= self.minimum()
                        && ((failures > 0
                            && failures as f64 / calls as f64 >= self.cfg.failure_rate)
                            || self
                                .cfg
                                .slow_rate
                                .is_some_and(|r| slows > 0 && slows as f64 / calls as f64 >= r));
                    let by_run = self.cfg.consecutive.is_some_and(|k| self.consecutive >= k);
                    if by_rate || by_run {
                        self.open();
                    }
                }
                State::HalfOpen {
                    done,
                    failed,
                    slow: slows,
                } => {
                    let (done, failed, slows) =
                        (done + 1, failed + u32::from(fail), slows + u32::from(slow));
                    let n = f64::from(self.cfg.probes);
                    let bad = (failed > 0 && f64::from(failed) / n >= self.cfg.failure_rate)
                        || self
                            .cfg
                            .slow_rate
                            .is_some_and(|r| slows > 0 && f64::from(slows) / n >= r);
                    if bad {
                        self.open();
                    } else if done == self.cfg.probes {
                        self.clear();
                    } else {
                        self.state = State::HalfOpen {
                            done,
                            failed,
                            slow: slows,
                        };
                    }
                }
                State::Open { .. } => unreachable!(),
            }
            Ok(())
        }

        fn open(&mut self) {
            self.opens += 1;
            let exp = self.opens as i32 - 1;
            let raw = (self.cfg.base_ms as f64 / 1000.0 * 2f64.powi(exp))
                .min(self.cfg.cap_ms as f64 / 1000.0);
            let secs = if self.cfg.jitter > 0.0 {
                raw * (1.0 - self.cfg.jitter * self.rng.next_f64())
            } else {
                raw
            };
            let d_ns = Duration::from_secs_f64(secs).as_nanos() as u64;
            self.state = State::Open {
                until_ms: (self.now_ns + d_ns).div_ceil(1_000_000),
            };
        }

        fn clear(&mut self) {
            self.state = State::Closed;
            self.log.clear();
            self.consecutive = 0;
            self.opens = 0;
        }

        fn public_state(&self) -> BreakerState {
            match self.state {
                State::Closed => BreakerState::Closed,
                State::Open { .. } => BreakerState::Open,
                State::HalfOpen { .. } => BreakerState::HalfOpen,
            }
        }
    }

    // ---------------------------------------------------------------------------------------------
    // Generators

    fn cfg() -> impl Strategy<Value = Cfg> {
        let window = prop_oneof![
            (1u32..8).prop_map(Win::Count),
            (1u64..=5, 1u32..=5).prop_map(|(s, b)| Win::Time {
                span_ms: s * 1000,
                buckets: b
            }),
        ];
        let rate = || prop::sample::select(vec![0.0, 0.25, 0.5, 0.75, 1.0]);
        (
            window,
            1u32..6,
            rate(),
            prop::option::of(rate()),
            prop::option::of(1u32..4),
            1u32..4,
            any::<bool>(),
            prop::sample::select(vec![100u64, 1000, 1500]),
            1u64..8,
            prop::sample::select(vec![0.0, 0.5]),
            any::<u64>(),
        )
            .prop_map(
                |(
                    window,
                    minimum_calls,
                    failure_rate,
                    slow_rate,
                    consecutive,
                    probes,
                    progressive,
                    base_ms,
                    k,
                    jitter,
                    seed,
                )| Cfg {
                    window,
                    minimum_calls,
                    failure_rate,
                    slow_rate,
                    consecutive,
                    probes,
                    progressive,
                    base_ms,
                    cap_ms: base_ms * k,
                    jitter,
                    seed,
                },
            )
    }

    fn ops() -> impl Strategy<Value = Vec<Op>> {
        prop::collection::vec(
            prop_oneof![
                8 => (any::<bool>(), any::<bool>()).prop_map(|(fail, slow)| Op::Call { fail, slow }),
                3 => (0u64..3000).prop_map(Op::Advance),
                1 => Just(Op::Reset),
            ],
            1..80,
        )
    }

    // ---------------------------------------------------------------------------------------------
    // The check

    fn check(cfg: Cfg, ops: Vec<Op>) -> Result<(), TestCaseError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async move {
            let window = match cfg.window {
                Win::Count(n) => SlidingWindow::count(n),
                Win::Time { span_ms, buckets } => {
                    SlidingWindow::time_with_buckets(Duration::from_millis(span_ms), buckets)
                }
            };
            let mut b = CircuitBreakerLayer::builder()
                .window(window)
                .minimum_calls(cfg.minimum_calls)
                .failure_rate(cfg.failure_rate)
                .half_open_probes(cfg.probes)
                .progressive_half_open(cfg.progressive)
                .break_duration(
                    BreakDuration::exponential(
                        Duration::from_millis(cfg.base_ms),
                        Duration::from_millis(cfg.cap_ms),
                    )
                    .jitter(cfg.jitter),
                )
                .seed(cfg.seed);
            if let Some(r) = cfg.slow_rate {
                b = b.slow_call_duration(SLOW).slow_call_rate(r);
            }
            if let Some(k) = cfg.consecutive {
                b = b.consecutive_failures(k);
            }
            let layer = b.build().unwrap();
            let handle: BreakerHandle = layer.handle();
            let mut svc = layer.layer(service_fn(|(fail, slow): (bool, bool)| async move {
                if slow {
                    tokio::time::sleep(SLOW).await;
                }
                if fail {
                    Err(BoxError::from("failed"))
                } else {
                    Ok(())
                }
            }));
            let mut model = Model::new(cfg);

            for (step, op) in ops.into_iter().enumerate() {
                match op {
                    Op::Call { fail, slow } => {
                        let expected = model.call(fail, slow);
                        let got = svc.ready().await.unwrap().call((fail, slow)).await;
                        match (expected, got) {
                            (Ok(()), Ok(())) => {}
                            (Ok(()), Err(e)) => {
                                prop_assert!(
                                    e.downcast_ref::<CircuitOpen>().is_none(),
                                    "step {step}: refused: {e}"
                                );
                                prop_assert!(fail, "step {step}: unexpected error {e}");
                            }
                            (Err(remaining), Err(e)) => {
                                let open = e.downcast_ref::<CircuitOpen>();
                                prop_assert!(
                                    open.is_some(),
                                    "step {step}: expected a refusal, got {e}"
                                );
                                prop_assert_eq!(
                                    open.unwrap().remaining(),
                                    Some(remaining),
                                    "step {}",
                                    step
                                );
                            }
                            (Err(_), Ok(())) => {
                                prop_assert!(false, "step {step}: expected a refusal")
                            }
                        }
                    }
                    Op::Advance(ms) => {
                        tokio::time::advance(Duration::from_millis(ms)).await;
                        model.now_ns += ms * 1_000_000;
                    }
                    Op::Reset => {
                        handle.close();
                        model.clear();
                    }
                }
                let m = handle.metrics();
                prop_assert_eq!(m.state, model.public_state(), "step {}", step);
                let (calls, failures, slow) = model.counts();
                prop_assert_eq!(
                    (m.calls, m.failures, m.slow_calls),
                    (calls, failures, slow),
                    "step {}",
                    step
                );
                prop_assert_eq!(m.consecutive_failures, model.consecutive, "step {}", step);
                prop_assert_eq!(m.consecutive_opens, model.opens, "step {}", step);
                if let State::HalfOpen { done, .. } = model.state {
                    prop_assert_eq!(m.probes_completed, done, "step {}", step);
                    prop_assert_eq!(m.probes_in_flight, 0, "step {}", step);
                }
            }
            Ok(())
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

        #[test]
        fn breaker_matches_the_reference_model(cfg in cfg(), ops in ops()) {
            check(cfg, ops)?;
        }
    }
}
