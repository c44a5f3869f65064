use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use std::marker::PhantomData;

use pin_project::pin_project;
use tokio::time::Instant;

use super::core::Pass;
use super::CircuitOpen;
use crate::classify::Classifier;
use crate::error_type::{Boxed, MakeError, MakeRefusal};
use crate::overload::{OverloadReason, Overloaded};

/// The response future of [`CircuitBreaker`](super::CircuitBreaker): either the refusal, ready at
/// once, or the inner call, whose outcome is classified and recorded when it finishes. A probe
/// dropped before it finishes gives its half-open permit back. No allocation, save the one
/// the error type `K` makes of a refusal ([`Boxed`], the default, boxes it; see
/// [`CircuitBreakerLayer::with_error`](super::CircuitBreakerLayer::with_error)).
#[pin_project]
pub struct ResponseFuture<F, C, K = Boxed> {
    #[pin]
    kind: Kind<F>,
    track: Option<Track<C>>,
    _error: PhantomData<fn() -> K>,
}

#[pin_project(project = KindProj)]
enum Kind<F> {
    Call {
        #[pin]
        fut: F,
    },
    /// Kept as it is (both are `Copy`) and made into the service's error when polled: no
    /// allocation unless that error type makes one (ADR 0008).
    Rejected { err: Refusal },
}

/// Why a call was refused. Every key busy is one constant refusal, made into its
/// [`Overloaded`] when polled: a variant holding the 40-byte `Overloaded` made every refused
/// future's move copy the two variants' fields piece by piece (ADR 0008, seventh pass).
#[derive(Clone, Copy)]
enum Refusal {
    Open(CircuitOpen),
    TooManyKeys,
}

struct Track<C> {
    classifier: C,
    pass: Pass,
    started: Option<Instant>,
}

impl<F, C, K> fmt::Debug for ResponseFuture<F, C, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Call { .. } => "call",
            Kind::Rejected { .. } => "rejected",
        };
        f.debug_struct("ResponseFuture")
            .field("kind", &kind)
            .field("tracked", &self.track.is_some())
            .finish()
    }
}

impl<F, C, K> ResponseFuture<F, C, K> {
    pub(super) fn passthrough(fut: F) -> Self {
        Self {
            kind: Kind::Call { fut },
            track: None,
            _error: PhantomData,
        }
    }

    #[inline]
    pub(super) fn rejected(err: CircuitOpen) -> Self {
        Self {
            kind: Kind::Rejected {
                err: Refusal::Open(err),
            },
            track: None,
            _error: PhantomData,
        }
    }

    /// Refused because every tracked key's breaker is busy.
    pub(super) fn too_many_keys() -> Self {
        Self {
            kind: Kind::Rejected {
                err: Refusal::TooManyKeys,
            },
            track: None,
            _error: PhantomData,
        }
    }

    pub(super) fn tracked(fut: F, classifier: C, pass: Pass, started: Option<Instant>) -> Self {
        Self {
            kind: Kind::Call { fut },
            track: Some(Track {
                classifier,
                pass,
                started,
            }),
            _error: PhantomData,
        }
    }
}

impl<F, C, T, E, K> Future for ResponseFuture<F, C, K>
where
    F: Future<Output = Result<T, E>>,
    K: MakeRefusal<E, CircuitOpen> + MakeRefusal<E, Overloaded>,
    C: Classifier<T, E>,
{
    type Output = Result<T, <K as MakeError<E>>::Error>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let fut = match this.kind.project() {
            KindProj::Call { fut } => fut,
            // Polled again after completion, it gives the same refusal again.
            KindProj::Rejected { err } => {
                return Poll::Ready(Err(match *err {
                    Refusal::Open(e) => <K as MakeRefusal<E, CircuitOpen>>::refusal(e),
                    Refusal::TooManyKeys => <K as MakeRefusal<E, Overloaded>>::refusal(
                        Overloaded::new("breaker", OverloadReason::TooManyKeys),
                    ),
                }));
            }
        };
        let result = ready!(fut.poll(cx));
        if let Some(track) = this.track.take() {
            let failure = track.classifier.classify(&result).is_failure();
            let common = &track.pass.core.common;
            let cfg = &common.cfg;
            let (slow, now) = if cfg.needs_end_time() {
                let now = Instant::now();
                let slow = match (cfg.slow_call.get(), track.started) {
                    (Some(threshold), Some(t0)) => now.saturating_duration_since(t0) >= threshold,
                    _ => false,
                };
                (slow, common.nanos_since_origin(now))
            } else {
                (false, 0)
            };
            track.pass.finish(failure, slow, now);
        }
        Poll::Ready(result.map_err(K::inner))
    }
}
