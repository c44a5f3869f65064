use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tokio::time::{sleep_until, Instant, Sleep};
use tower_service::Service;

use super::core::{Pass, Readiness, DISABLED, FORCED_OPEN, METRICS_ONLY};
use super::keyed::{get_or_insert, Breakers, Registry};
use super::{BreakerHandle, BreakerState, CircuitOpen, Mode, ResponseFuture};
use crate::classify::{Classifier, RetryOnError};
use crate::error_type::{Boxed, MakeError, MakeRefusal};
use crate::keyed::{Global, KeyExtractor};
use crate::overload::Overloaded;
use crate::telemetry::ms;

/// The service made by [`CircuitBreakerLayer`](super::CircuitBreakerLayer).
///
/// ```
/// use tower::{service_fn, Layer, ServiceExt};
/// use steadfast_layers::breaker::{BreakerState, CircuitBreakerLayer, CircuitOpen};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let down = service_fn(|()| async { Err::<(), _>(std::io::Error::other("refused")) });
/// let layer = CircuitBreakerLayer::builder().count_window(5).minimum_calls(5).build().unwrap();
/// let svc = layer.layer(down);
/// for _ in 0..5 {
///     let _ = svc.clone().oneshot(()).await;
/// }
/// assert_eq!(svc.handle().state(), BreakerState::Open);
/// let err = svc.oneshot(()).await.unwrap_err();
/// assert!(err.is::<CircuitOpen>());
/// # }
/// ```
pub struct CircuitBreaker<S, C = RetryOnError, X = Global, K = Boxed> {
    inner: S,
    classifier: C,
    extract: X,
    registry: Arc<Registry>,
    /// Readiness mode: the probe permit won by `poll_ready`.
    ready: Option<Pass>,
    /// Readiness mode: the timer for the end of the break (allocated once, then reset).
    sleep: Option<Pin<Box<Sleep>>>,
    /// The error type its calls fail with (see [`CircuitBreakerLayer::with_error`]).
    ///
    /// [`CircuitBreakerLayer::with_error`]: super::CircuitBreakerLayer::with_error
    _error: PhantomData<fn() -> K>,
}

impl<S: Clone, C: Clone, X: Clone, K> Clone for CircuitBreaker<S, C, X, K> {
    /// A clone shares the breakers but not a probe permit won by `poll_ready`.
    fn clone(&self) -> Self {
        Self::new(
            self.inner.clone(),
            self.classifier.clone(),
            self.extract.clone(),
            Arc::clone(&self.registry),
        )
    }
}

impl<S: fmt::Debug, C, X, K> fmt::Debug for CircuitBreaker<S, C, X, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("inner", &self.inner)
            .field("registry", &self.registry)
            .field("ready", &self.ready)
            .finish_non_exhaustive()
    }
}

impl<S, C, X, K> CircuitBreaker<S, C, X, K> {
    pub(super) fn new(inner: S, classifier: C, extract: X, registry: Arc<Registry>) -> Self {
        Self {
            inner,
            classifier,
            extract,
            registry,
            ready: None,
            sleep: None,
            _error: PhantomData,
        }
    }

    /// The inner service.
    ///
    /// ```
    /// use tower::{service_fn, Layer};
    /// use steadfast_layers::breaker::CircuitBreakerLayer;
    /// let layer = CircuitBreakerLayer::builder().build()?;
    /// let svc = layer.layer(service_fn(|x: u32| async move { Ok::<_, std::io::Error>(x) }));
    /// let _inner = svc.get_ref();
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    ///
    /// ```
    /// use tower::{service_fn, Layer};
    /// use steadfast_layers::breaker::CircuitBreakerLayer;
    /// let layer = CircuitBreakerLayer::builder().build()?;
    /// let mut svc = layer.layer(service_fn(|x: u32| async move { Ok::<_, std::io::Error>(x) }));
    /// let _inner = svc.get_mut();
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Consumes the layer's service, returning the inner one.
    ///
    /// ```
    /// use tower::{service_fn, Layer};
    /// use steadfast_layers::breaker::CircuitBreakerLayer;
    /// let layer = CircuitBreakerLayer::builder().build()?;
    /// let svc = layer.layer(service_fn(|x: u32| async move { Ok::<_, std::io::Error>(x) }));
    /// let _inner = svc.into_inner();
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// A handle on the breakers this service shares with its layer.
    ///
    /// ```
    /// use tower::{service_fn, Layer};
    /// use steadfast_layers::breaker::CircuitBreakerLayer;
    /// let layer = CircuitBreakerLayer::builder().build()?;
    /// let svc = layer.layer(service_fn(|x: u32| async move { Ok::<_, std::io::Error>(x) }));
    /// assert_eq!(svc.handle().breakers(), layer.handle().breakers());
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn handle(&self) -> BreakerHandle {
        BreakerHandle {
            registry: Arc::clone(&self.registry),
        }
    }

    /// Readiness mode: ready when a call may be admitted (holding a probe permit when
    /// half-open), pending while open or while every probe is taken. Out of line: `poll_ready`
    /// in fail-fast mode (the default) then inlines into its caller.
    #[inline(never)]
    fn poll_breaker(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Breakers::Single(core) = &self.registry.breakers else {
            return Poll::Ready(());
        };
        let common = &self.registry.common;
        let mut registered = false;
        loop {
            match common.control() {
                DISABLED | METRICS_ONLY => return Poll::Ready(()),
                FORCED_OPEN => {
                    if registered {
                        return Poll::Pending;
                    }
                    common.register(cx.waker());
                    registered = true;
                    continue;
                }
                _ => {}
            }
            if self.ready.as_ref().is_some_and(Pass::is_current) {
                return Poll::Ready(());
            }
            self.ready = None;
            match core.readiness() {
                Readiness::Ready(None) => return Poll::Ready(()),
                Readiness::Ready(Some(ticket)) => {
                    self.ready = Some(Pass::new(Arc::clone(core), ticket));
                    return Poll::Ready(());
                }
                Readiness::Until(at) => {
                    if !registered {
                        common.register(cx.waker());
                        registered = true;
                    }
                    let sleep = match &mut self.sleep {
                        Some(s) => {
                            if s.deadline() != at {
                                s.as_mut().reset(at);
                            }
                            s
                        }
                        None => self.sleep.insert(Box::pin(sleep_until(at))),
                    };
                    ready!(sleep.as_mut().poll(cx));
                }
                Readiness::Wait => {
                    if registered {
                        return Poll::Pending;
                    }
                    common.register(cx.waker());
                    registered = true;
                }
            }
        }
    }
}

impl<S, C, X, K, Req> Service<Req> for CircuitBreaker<S, C, X, K>
where
    S: Service<Req>,
    K: MakeRefusal<S::Error, CircuitOpen> + MakeRefusal<S::Error, Overloaded>,
    C: Classifier<S::Response, S::Error> + Clone,
    X: KeyExtractor<Req>,
    X::Key: fmt::Debug,
{
    type Response = S::Response;
    type Error = <K as MakeError<S::Error>>::Error;
    type Future = ResponseFuture<S::Future, C, K>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.registry.common.cfg.mode == Mode::Readiness {
            ready!(self.poll_breaker(cx));
        }
        self.inner.poll_ready(cx).map_err(K::inner)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        let common = &self.registry.common;
        common.calls.add(1, common.attrs.base());
        let control = common.control();
        if control == DISABLED {
            return ResponseFuture::passthrough(self.inner.call(req));
        }
        if control == FORCED_OPEN {
            return reject_forced(common);
        }
        let (core, ready) = match &self.registry.breakers {
            Breakers::Single(core) => (core, self.ready.take()),
            Breakers::Keyed(map) => {
                return match get_or_insert(map, &self.extract.key(&req), common) {
                    Some(core) => self.admit(core, req, control),
                    None => reject_too_many_keys(common, map.len()),
                };
            }
        };
        match ready {
            Some(pass) if pass.is_current() => {
                let timed = common.cfg.slow_call.is_some();
                call_admitted(&mut self.inner, &self.classifier, pass, timed, req)
            }
            _ => admit_ref(&mut self.inner, &self.classifier, core, req, control),
        }
    }
}

impl<S, C: Clone, X, K> CircuitBreaker<S, C, X, K> {
    #[inline]
    fn admit<Req>(
        &mut self,
        core: Arc<super::core::Core>,
        req: Req,
        control: u8,
    ) -> ResponseFuture<S::Future, C, K>
    where
        S: Service<Req>,
    {
        match admission(&core, control) {
            Ok(ticket) => {
                let timed = core.common.cfg.slow_call.is_some();
                // The ticket is held by its pass before anything else runs.
                let pass = Pass::new(core, ticket);
                call_admitted(&mut self.inner, &self.classifier, pass, timed, req)
            }
            Err(refused) => reject(&core, core.refusal(refused)),
        }
    }
}

#[inline]
fn admit_ref<S, C: Clone, K, Req>(
    inner: &mut S,
    classifier: &C,
    core: &Arc<super::core::Core>,
    req: Req,
    control: u8,
) -> ResponseFuture<S::Future, C, K>
where
    S: Service<Req>,
{
    match admission(core, control) {
        Ok(ticket) => {
            let timed = core.common.cfg.slow_call.is_some();
            // The ticket is held by its pass before anything else runs.
            let pass = Pass::new(Arc::clone(core), ticket);
            call_admitted(inner, classifier, pass, timed, req)
        }
        Err(refused) => reject(core, core.refusal(refused)),
    }
}

/// Makes an admitted call, whichever path admitted it: the call's `pass` is made before
/// anything here runs, so that if the classifier's clone or the inner call panics, dropping
/// the pass during the unwind gives a half-open probe's slot back. `timed`: the call's start
/// is read for the slow-call rule. It is the caller's to say, from the configuration it already
/// holds: read here through the pass, it cost the standard order 26 instructions a call.
#[inline]
fn call_admitted<S, C: Clone, K, Req>(
    inner: &mut S,
    classifier: &C,
    pass: Pass,
    timed: bool,
    req: Req,
) -> ResponseFuture<S::Future, C, K>
where
    S: Service<Req>,
{
    let started = timed.then(Instant::now);
    let fut = inner.call(req);
    ResponseFuture::tracked(fut, classifier.clone(), pass, started)
}

/// Asks `core` to admit a call under the control mode `control`.
#[inline]
fn admission(
    core: &super::core::Core,
    control: u8,
) -> Result<super::core::Ticket, super::core::Refused> {
    if control == METRICS_ONLY {
        Ok(core.admit_unconditionally())
    } else {
        core.admit()
    }
}

/// Counts, traces and returns one call refused because the breaker is forced open: out of line,
/// so that `call`'s inlined paths (closed, open) stay small.
#[cold]
#[inline(never)]
fn reject_forced<F, C, K>(common: &super::core::Common) -> ResponseFuture<F, C, K> {
    common.count_rejection(BreakerState::ForcedOpen);
    tracing::debug!(
        target: "steadfast::breaker",
        instance = common.telemetry.span_name(),
        state = "forced_open",
        "call rejected"
    );
    ResponseFuture::rejected(CircuitOpen::new(BreakerState::ForcedOpen, None))
}

/// Traces and returns one call refused because its key is new and the key table is full of
/// busy breakers (see [`keyed`](crate::keyed)): out of line, like `reject_forced`.
#[cold]
#[inline(never)]
fn reject_too_many_keys<F, C, K>(
    common: &super::core::Common,
    keys: usize,
) -> ResponseFuture<F, C, K> {
    tracing::warn!(
        target: "steadfast::breaker",
        instance = common.telemetry.span_name(),
        max_keys = keys,
        "call rejected: every tracked key's breaker is busy (open, half-open or in use), no room for a new key"
    );
    ResponseFuture::too_many_keys()
}

/// Counts (in the metrics; `core` counted it already), traces and returns one call refused by
/// `core`. Inlined: an open breaker refuses every call, and the call saved is measurable
/// (ADR 0003).
#[inline(always)]
fn reject<F, C, K>(core: &super::core::Core, open: CircuitOpen) -> ResponseFuture<F, C, K> {
    let common = &core.common;
    common.count_rejection(open.state());
    tracing::debug!(
        target: "steadfast::breaker",
        instance = common.telemetry.span_name(),
        key = core.key.as_deref().unwrap_or(""),
        state = open.state().label(),
        remaining_ms = open.remaining().map(ms),
        "call rejected"
    );
    ResponseFuture::rejected(open)
}
