use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use pin_project::pin_project;
use steadfast_layers::BoxError;
use tower_service::Service;

use super::NoRoute;

/// The response future of [`Router`](super::Router): waits for the chosen route's stack to be
/// ready, calls it, and waits for its answer (or fails at once with [`NoRoute`]).
#[pin_project]
pub struct ResponseFuture<S: Service<Req>, Req> {
    #[pin]
    state: State<S, Req>,
}

#[pin_project(project = StateProj)]
enum State<S: Service<Req>, Req> {
    NotReady { svc: S, req: Option<Req> },
    Called(#[pin] S::Future),
    NoRoute(Option<NoRoute>),
}

impl<S: Service<Req>, Req> ResponseFuture<S, Req> {
    pub(super) fn new(svc: S, req: Req) -> Self {
        ResponseFuture {
            state: State::NotReady {
                svc,
                req: Some(req),
            },
        }
    }

    pub(super) fn no_route(err: NoRoute) -> Self {
        ResponseFuture {
            state: State::NoRoute(Some(err)),
        }
    }
}

impl<S: Service<Req>, Req> fmt::Debug for ResponseFuture<S, Req> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::NotReady { .. } => "not_ready",
            State::Called(_) => "called",
            State::NoRoute(_) => "no_route",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

impl<S, Req> Future for ResponseFuture<S, Req>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::NotReady { svc, req } => {
                    ready!(svc.poll_ready(cx)).map_err(Into::into)?;
                    let req = req
                        .take()
                        .expect("the request is taken once: the state moves on");
                    let fut = svc.call(req);
                    this.state.set(State::Called(fut));
                }
                StateProj::Called(fut) => return fut.poll(cx).map_err(Into::into),
                StateProj::NoRoute(err) => {
                    let err = err.take().expect("ResponseFuture polled after completion");
                    return Poll::Ready(Err(err.into()));
                }
            }
        }
    }
}
