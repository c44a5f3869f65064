use std::marker::PhantomData;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;
use tower_service::Service;

use super::carrier::inherited;
use super::layer::{CallRef, Shared};
use super::value::Current;
use super::DeadlineExceeded;
use super::{Carrier, Deadline, ResponseFuture, TaskLocal};
use crate::error_type::{Boxed, MakeError, MakeRefusal};
use crate::telemetry::{SharedRef, REASON_KEY};

/// The service made by [`DeadlineLayer`](super::DeadlineLayer): enforces the effective deadline
/// of each call and runs the call in its scope.
///
/// ```
/// use std::time::Duration;
/// use tower::{service_fn, Layer, ServiceExt};
/// use steadfast_layers::deadline::{Deadline, DeadlineLayer};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let svc = DeadlineLayer::new(Duration::from_secs(1)).unwrap().layer(service_fn(|()| async {
///     Ok::<_, std::convert::Infallible>(Deadline::current())
/// }));
/// let seen = svc.oneshot(()).await.unwrap();
/// assert!(seen.is_some());
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct DeadlineService<S, C = TaskLocal, K = Boxed> {
    pub(super) inner: S,
    pub(super) timeout: Option<Duration>,
    pub(super) carrier: C,
    pub(super) shared: SharedRef<Shared>,
    /// What each untraced call's future keeps of `shared`.
    pub(super) call_ref: CallRef,
    pub(super) _error: PhantomData<fn() -> K>,
}

impl<S, C, K> DeadlineService<S, C, K> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Consumes the layer's service, returning the inner one.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, C, K, Req> Service<Req> for DeadlineService<S, C, K>
where
    S: Service<Req>,
    C: Carrier<Req>,
    K: MakeRefusal<S::Error, DeadlineExceeded>,
{
    type Response = S::Response;
    type Error = <K as MakeError<S::Error>>::Error;
    type Future = ResponseFuture<S::Future, K>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(K::inner)
    }

    fn call(&mut self, mut req: Req) -> Self::Future {
        self.shared.calls.add(1, self.shared.attrs.base());
        let inherited = inherited(&self.carrier, &req);
        let inner = &mut self.inner;
        // Own timeout, nothing inherited, nothing to store on the request: the deadline is
        // fixed the first time something needs it (no clock read for a call that completes
        // at once and that nobody asks about).
        if let (Some(t), None, false) = (self.timeout, inherited, self.carrier.stores()) {
            let call_ref = self.call_ref.for_call(&self.shared, t);
            return ResponseFuture::enforced(Current::lazy(t), || inner.call(req), call_ref);
        }
        let (deadline, now) = match (self.timeout, inherited) {
            (None, None) => return ResponseFuture::passthrough(inner.call(req)),
            (Some(t), inherited) => {
                let now = Instant::now();
                match Deadline::from_timeout_at(now, t) {
                    Some(own) => (own.shrink(inherited), now),
                    None => match inherited {
                        Some(d) => (d, now),
                        None => return ResponseFuture::passthrough(inner.call(req)),
                    },
                }
            }
            (None, Some(d)) => (d, Instant::now()),
        };
        if deadline.is_expired_at(now) {
            self.shared.attrs.with(REASON_KEY, "arrival", |a| {
                self.shared.refused.add(1, a);
            });
            tracing::debug!(
                target: "steadfast::deadline",
                instance = self.shared.telemetry.span_name(),
                reason = "arrival",
                "deadline exceeded before the call: rejected without calling the inner service"
            );
            return ResponseFuture::expired();
        }
        let call_ref = self
            .call_ref
            .for_call(&self.shared, deadline.timeout_at(now));
        self.carrier.set(&mut req, deadline);
        ResponseFuture::enforced(Current::fixed(deadline), || inner.call(req), call_ref)
    }
}
