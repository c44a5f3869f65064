use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{request, response, Request, Response};
use http_body::Body;
use http_body_util::{Either, Full};
use pin_project::pin_project;
use steadfast_layers::telemetry::duration_ms;
use tokio::time::Sleep;
use tower_service::Service;
use tracing::Span;

use super::layer::Core;
use super::{Rejection, RequestBody, ResponseBody, IDEMPOTENCY_KEY_EXPIRES, IDEMPOTENT_REPLAYED};
use crate::codec::http_date_after;
use crate::codec::idempotency_key::IdempotencyKey;
use crate::idempotency::store::{
    BeginOutcome, BeginRequest, Fingerprint, IdempotencyStore, Lease, StoreError, StoreFuture,
    StoredResponse,
};
use crate::idempotency::telemetry::Metrics;

/// The response future of [`Idempotency`](super::Idempotency): reads a keyed request's body,
/// asks the store, then calls the inner service, reads and stores its response, or answers a
/// replay or a problem. One pinned state machine; store calls are the only boxed futures (see
/// [`StoreFuture`]), and the bodies are buffered (bounded) because they must be fingerprinted
/// and stored.
///
/// ```
/// use bytes::Bytes;
/// use http_body_util::Full;
/// use steadfast_http::idempotency::{ResponseFuture, RequestBody, store::MemoryStore};
/// use tower::util::BoxCloneService;
/// type Inner = BoxCloneService<http::Request<RequestBody<Full<Bytes>>>, http::Response<Full<Bytes>>, std::convert::Infallible>;
/// // The future's type, when it must be named.
/// type Fut = ResponseFuture<Inner, MemoryStore, Full<Bytes>, Full<Bytes>>;
/// # let _: Option<Fut> = None;
/// ```
#[pin_project]
pub struct ResponseFuture<S, St, ReqB, ResB>
where
    S: Service<Request<RequestBody<ReqB>>>,
    ResB: Body,
{
    #[pin]
    state: State<S::Future, ReqB>,
    ctx: Option<Ctx<S, St, ResB, S::Error>>,
    /// The answer, once there is one (state `Ready`).
    answer: Option<Answer<ResB, S::Error>>,
    span: Span,
}

/// What the layer answers: a response, or the inner service's error, unchanged.
type Answer<ResB, E> = Result<Response<ResponseBody<ResB>>, E>;

/// A state the future cannot be in unless it is polled after completion: answered with a `500`
/// problem ([`Rejection::Internal`]), never an error of the inner service's type.
#[derive(Debug)]
struct Broken;

/// What a keyed request carries from state to state.
struct Ctx<S, St, ResB: Body, E> {
    core: Arc<Core<St>>,
    service: Option<S>,
    parts: Option<request::Parts>,
    scope: Arc<str>,
    key: IdempotencyKey,
    buf: BytesMut,
    lease: Option<Lease>,
    res_parts: Option<response::Parts>,
    /// The response body being buffered (boxed so that it can be handed on unread).
    res_body: Option<Pin<Box<ResB>>>,
    /// The answer once there is one (state `Ready`), or while the store completes or releases.
    pending: Option<Answer<ResB, E>>,
    /// When to renew the lease next (armed the first time the handler is pending).
    renew_at: Option<Pin<Box<Sleep>>>,
    /// A renewal in flight.
    renewing: Option<StoreFuture<()>>,
    /// The lease was lost: stop renewing.
    renew_stopped: bool,
}

#[pin_project(project = StateProj)]
enum State<F, ReqB> {
    /// Not handled by the layer.
    Passthrough {
        #[pin]
        fut: F,
    },
    /// The answer is ready.
    Ready,
    /// Buffering the keyed request's body.
    ReadRequest {
        #[pin]
        body: ReqB,
    },
    /// Asking the store.
    Begin { fut: StoreFuture<BeginOutcome> },
    /// The inner service executes the request.
    Call {
        #[pin]
        fut: F,
    },
    /// Buffering the response body to store it.
    ReadResponse,
    /// Storing the response.
    Complete { fut: StoreFuture<()> },
    /// Releasing the key of a response that is not stored.
    Release { fut: StoreFuture<()> },
}

impl<S, St, ReqB, ResB> std::fmt::Debug for ResponseFuture<S, St, ReqB, ResB>
where
    S: Service<Request<RequestBody<ReqB>>>,
    ResB: Body,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("key", &self.ctx.as_ref().map(|c| c.key.as_str()))
            .finish_non_exhaustive()
    }
}

fn problem<B: Body>(rejection: &Rejection) -> Response<ResponseBody<B>> {
    rejection.to_response().map(ResponseBody::full)
}

fn polled_after_completion() -> Broken {
    Broken
}

/// Bounds a store call by the layer's store timeout.
fn timed<T: Send + 'static>(fut: StoreFuture<T>, after: Duration) -> StoreFuture<T> {
    Box::pin(async move {
        match tokio::time::timeout(after, fut).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::timeout(after)),
        }
    })
}

/// The span of a request the layer handles; called once per such request, so it also counts it.
fn new_span<St>(core: &Core<St>, key: Option<&str>) -> Span
where
    St: IdempotencyStore,
{
    core.metrics.request();
    tracing::debug_span!(
        target: "steadfast::idempotency",
        "steadfast.idempotency",
        instance = core.instance.as_deref(),
        store = core.store.kind(),
        key = key,
        outcome = tracing::field::Empty,
    )
}

impl<S, St, ReqB, ResB> ResponseFuture<S, St, ReqB, ResB>
where
    S: Service<Request<RequestBody<ReqB>>>,
    ResB: Body,
    St: IdempotencyStore,
{
    pub(super) fn passthrough(fut: S::Future) -> Self {
        Self {
            state: State::Passthrough { fut },
            ctx: None,
            answer: None,
            span: Span::none(),
        }
    }

    pub(super) fn rejected(core: Arc<Core<St>>, rejection: Rejection) -> Self {
        let span = new_span(&core, None);
        span.record("outcome", "rejected");
        core.metrics.rejection(rejection.label());
        span.in_scope(|| {
            tracing::debug!(
                target: "steadfast::idempotency",
                reason = rejection.label(),
                status = rejection.status().as_u16(),
                "request rejected: {rejection}",
            );
        });
        Self {
            state: State::Ready,
            ctx: None,
            answer: Some(Ok(problem(&rejection))),
            span,
        }
    }

    pub(super) fn keyed(
        core: Arc<Core<St>>,
        service: S,
        parts: request::Parts,
        body: ReqB,
        scope: Arc<str>,
        key: IdempotencyKey,
    ) -> Self {
        let span = new_span(&core, Some(key.as_str()));
        Self {
            state: State::ReadRequest { body },
            ctx: Some(Ctx {
                core,
                service: Some(service),
                parts: Some(parts),
                scope,
                key,
                buf: BytesMut::new(),
                lease: None,
                res_parts: None,
                res_body: None,
                pending: None,
                renew_at: None,
                renewing: None,
                renew_stopped: false,
            }),
            answer: None,
            span,
        }
    }
}

impl<S, St, ResB, E> Ctx<S, St, ResB, E>
where
    St: IdempotencyStore,
    ResB: Body,
{
    /// Answers `response` without going further.
    fn answer<F, ReqB>(&mut self, response: Response<ResponseBody<ResB>>) -> State<F, ReqB> {
        self.pending = Some(Ok(response));
        State::Ready
    }

    fn reject<F, ReqB>(&mut self, span: &Span, rejection: Rejection) -> State<F, ReqB> {
        span.record("outcome", "rejected");
        self.core.metrics.rejection(rejection.label());
        tracing::debug!(
            target: "steadfast::idempotency",
            reason = rejection.label(),
            status = rejection.status().as_u16(),
            "request rejected: {rejection}",
        );
        self.answer(problem(&rejection))
    }

    /// The request body is read: fingerprint it and ask the store.
    fn begin<F, ReqB>(&mut self) -> Result<State<F, ReqB>, Broken> {
        let parts = self.parts.as_ref().ok_or_else(polled_after_completion)?;
        let target = parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path(), |pq| pq.as_str());
        let fingerprint = Fingerprint::of(&parts.method, target, &self.buf);
        let request = BeginRequest::new(Arc::clone(&self.scope), self.key.clone(), fingerprint)
            .lease(self.core.lease)
            .expiry(self.core.expiry);
        let fut = timed(self.core.store.begin(request), self.core.store_timeout);
        Ok(State::Begin { fut })
    }

    /// The response will not be stored: release the key, then answer `result`.
    fn release<F, ReqB>(
        &mut self,
        span: &Span,
        result: Answer<ResB, E>,
        reason: &'static str,
    ) -> Result<State<F, ReqB>, Broken> {
        span.record("outcome", "not_stored");
        self.core.metrics.not_stored(reason);
        tracing::debug!(
            target: "steadfast::idempotency",
            reason,
            "response not stored: releasing the key so that a retry executes again",
        );
        self.pending = Some(result);
        let lease = self.lease.as_ref().ok_or_else(polled_after_completion)?;
        let fut = timed(self.core.store.release(lease), self.core.store_timeout);
        Ok(State::Release { fut })
    }

    /// A response body was cut short (too large, trailers, error): hand on what was read and
    /// the rest, and release the key.
    fn pass_on<F, ReqB>(
        &mut self,
        span: &Span,
        body: ResponseBody<ResB>,
        reason: &'static str,
    ) -> Result<State<F, ReqB>, Broken> {
        let parts = self.res_parts.take().ok_or_else(polled_after_completion)?;
        self.release(span, Ok(Response::from_parts(parts, body)), reason)
    }

    /// The whole response body is read: store it, then answer it.
    fn complete<F, ReqB>(&mut self, span: &Span) -> Result<State<F, ReqB>, Broken> {
        let mut parts = self.res_parts.take().ok_or_else(polled_after_completion)?;
        let lease = self.lease.as_ref().ok_or_else(polled_after_completion)?;
        let body = self.buf.split().freeze();
        if self.core.publish_expiry {
            // An HTTP-date: the one place a protocol needs wall-clock time (expiry itself is
            // enforced by the store: `tokio::time`, Redis TTL, PostgreSQL `now()`).
            let expires = http_date_after(self.core.wall_clock.now(), self.core.expiry);
            // A map at its size limit keeps the inner service's headers and goes without this one.
            let _ = parts.headers.try_insert(IDEMPOTENCY_KEY_EXPIRES, expires);
        }
        let stored = StoredResponse::new(parts.status, storable(&parts.headers), body.clone());
        span.record("outcome", "executed");
        let fut = timed(
            self.core.store.complete(lease, stored, self.core.expiry),
            self.core.store_timeout,
        );
        self.pending = Some(Ok(Response::from_parts(parts, ResponseBody::full(body))));
        Ok(State::Complete { fut })
    }

    /// While the handler runs (or its body streams in), renews the lease every third of it.
    /// Called only when the inner future is pending; registers the waker of the renewal timer
    /// or of the renewal in flight.
    fn poll_renewal(&mut self, cx: &mut Context<'_>, span: &Span) {
        if !self.core.renew_leases || self.renew_stopped {
            return;
        }
        let Some(lease) = self.lease.as_ref() else {
            return;
        };
        let every = (self.core.lease / 3).max(Duration::from_millis(1));
        loop {
            if let Some(fut) = self.renewing.as_mut() {
                let Poll::Ready(result) = fut.as_mut().poll(cx) else {
                    return;
                };
                self.renewing = None;
                match result {
                    Ok(()) => self.core.metrics.lease_renewal(),
                    Err(e) if e.is_lease_lost() => {
                        self.renew_stopped = true;
                        span.record("outcome", "lease_lost");
                        self.core.metrics.lease_lost("renew");
                        tracing::warn!(
                            target: "steadfast::idempotency",
                            op = "renew",
                            epoch = lease.epoch(),
                            error = %e,
                            "lease lost while the handler runs: another request may execute too; this result will not be stored",
                        );
                        return;
                    }
                    Err(e) => {
                        self.core.metrics.store_error("renew", e.kind().label());
                        tracing::warn!(
                            target: "steadfast::idempotency",
                            op = "renew",
                            epoch = lease.epoch(),
                            reason = e.kind().label(),
                            error = %e,
                            "lease renewal failed; retrying at the next tick",
                        );
                    }
                }
            }
            let timer = self
                .renew_at
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(every)));
            if timer.as_mut().poll(cx).is_pending() {
                return;
            }
            timer.as_mut().reset(tokio::time::Instant::now() + every);
            let fut = self.core.store.renew(lease, self.core.lease);
            // A renewal that takes longer than its period is no use: bound it by the period.
            self.renewing = Some(timed(fut, self.core.store_timeout.min(every)));
        }
    }

    /// Traces a failed `complete` or `release`; the response is answered anyway.
    fn after_write(&self, span: &Span, op: &'static str, result: Result<(), StoreError>) {
        let Err(e) = result else { return };
        let epoch = self.lease.as_ref().map(Lease::epoch);
        if e.is_lease_lost() {
            span.record("outcome", "lease_lost");
            self.core.metrics.lease_lost(op);
            tracing::warn!(
                target: "steadfast::idempotency",
                op,
                epoch,
                error = %e,
                "lease lost: a newer holder took the key over, this result was not stored",
            );
        } else {
            self.core.metrics.store_error(op, e.kind().label());
            tracing::warn!(
                target: "steadfast::idempotency",
                op,
                epoch,
                reason = e.kind().label(),
                error = %e,
                "idempotency store failed after execution: the response is returned unstored, the key stays in flight until its lease expires, then a retry executes again",
            );
        }
    }
}

/// Hop-by-hop headers and `content-length` are not stored (the replayed body sets its own).
fn storable(headers: &HeaderMap) -> HeaderMap {
    const DROPPED: [HeaderName; 7] = [
        header::CONNECTION,
        header::TRANSFER_ENCODING,
        header::TE,
        header::TRAILER,
        header::UPGRADE,
        header::CONTENT_LENGTH,
        header::PROXY_AUTHENTICATE,
    ];
    let mut out = headers.clone();
    for name in &DROPPED {
        out.remove(name);
    }
    out.remove("keep-alive");
    out
}

/// The stored response, marked as replayed; a store error when the mark does not fit (a stored
/// response with as many headers as a header map holds, which only a corrupt record has).
fn replay<B: Body>(stored: StoredResponse) -> Result<Response<ResponseBody<B>>, StoreError> {
    let (status, headers, body) = stored.into_parts();
    let mut res = Response::new(ResponseBody::full(body));
    *res.status_mut() = status;
    *res.headers_mut() = headers;
    res.headers_mut()
        .try_insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"))
        .map_err(|e| {
            StoreError::corrupt("stored response: more headers than a header map holds")
                .with_source(e)
        })?;
    Ok(res)
}

/// The answer to a request whose `begin` failed with `e`: 503 if transient, 500 if not; the
/// request is not executed.
fn begin_failed<B: Body>(
    span: &Span,
    metrics: &Metrics,
    e: &StoreError,
) -> Response<ResponseBody<B>> {
    span.record("outcome", "store_error");
    metrics.store_error("begin", e.kind().label());
    let rejection = Rejection::store(e);
    tracing::warn!(
        target: "steadfast::idempotency",
        op = "begin",
        reason = e.kind().label(),
        transient = e.is_transient(),
        status = rejection.status().as_u16(),
        error = %e,
        "idempotency store failed: answered without executing (503 if transient, 500 if not)",
    );
    problem(&rejection)
}

impl<S, St, ReqB, ResB> Future for ResponseFuture<S, St, ReqB, ResB>
where
    S: Service<Request<RequestBody<ReqB>>, Response = Response<ResB>>,
    ReqB: Body<Data = Bytes>,
    ResB: Body<Data = Bytes>,
    St: IdempotencyStore,
{
    /// The layer's own answers are responses; the inner service's error passes through.
    type Output = Answer<ResB, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let span: &Span = this.span;
        let _entered = span.enter();
        // The state machine; `Err(Broken)` only when polled after completion.
        let mut states = || -> Poll<Result<Answer<ResB, S::Error>, Broken>> {
            loop {
                let next = match this.state.as_mut().project() {
                    StateProj::Passthrough { fut } => {
                        let res = ready!(fut.poll(cx));
                        return Poll::Ready(Ok(res.map(|r| r.map(ResponseBody::new))));
                    }
                    StateProj::Ready => {
                        let answer = match this.answer.take() {
                            Some(answer) => Some(answer),
                            None => this.ctx.as_mut().and_then(|c| c.pending.take()),
                        };
                        return Poll::Ready(answer.ok_or(Broken));
                    }
                    StateProj::ReadRequest { mut body } => {
                        let ctx = this.ctx.as_mut().ok_or_else(polled_after_completion)?;
                        loop {
                            match ready!(body.as_mut().poll_frame(cx)) {
                                Some(Ok(frame)) => {
                                    // Data is kept; request trailers are not.
                                    if let Ok(data) = frame.into_data() {
                                        let limit = ctx.core.max_request_body;
                                        if ctx.buf.len() + data.len() > limit {
                                            break ctx
                                                .reject(span, Rejection::BodyTooLarge { limit });
                                        }
                                        ctx.buf.extend_from_slice(&data);
                                    }
                                }
                                Some(Err(_)) => break ctx.reject(span, Rejection::BodyUnreadable),
                                None => break ctx.begin()?,
                            }
                        }
                    }
                    StateProj::Begin { fut } => {
                        let ctx = this.ctx.as_mut().ok_or_else(polled_after_completion)?;
                        let metrics = &ctx.core.metrics;
                        match ready!(fut.as_mut().poll(cx)) {
                            Ok(BeginOutcome::Acquired(lease)) => {
                                metrics.execution();
                                if lease.taken_over() {
                                    metrics.lease_takeover();
                                    tracing::debug!(
                                        target: "steadfast::idempotency",
                                        epoch = lease.epoch(),
                                        "lease taken over: the previous holder's lease expired, executing again",
                                    );
                                }
                                let parts = ctx.parts.take().ok_or_else(polled_after_completion)?;
                                let body = ctx.buf.split().freeze();
                                let mut service =
                                    ctx.service.take().ok_or_else(polled_after_completion)?;
                                ctx.lease = Some(lease);
                                let req = Request::from_parts(parts, Either::Left(Full::new(body)));
                                State::Call {
                                    fut: service.call(req),
                                }
                            }
                            Ok(BeginOutcome::InFlight { retry_after }) => {
                                span.record("outcome", "conflict");
                                metrics.conflict();
                                let rejection = Rejection::InFlight { retry_after };
                                tracing::debug!(
                                    target: "steadfast::idempotency",
                                    retry_after_ms = duration_ms(retry_after),
                                    "key in flight: answered 409",
                                );
                                ctx.answer(problem(&rejection))
                            }
                            Ok(BeginOutcome::Completed(stored)) => {
                                let status = stored.status().as_u16();
                                match replay(stored) {
                                    Ok(res) => {
                                        span.record("outcome", "replayed");
                                        metrics.replay();
                                        tracing::debug!(
                                            target: "steadfast::idempotency",
                                            status,
                                            "replayed the stored response",
                                        );
                                        ctx.answer(res)
                                    }
                                    Err(e) => ctx.answer(begin_failed(span, metrics, &e)),
                                }
                            }
                            Ok(BeginOutcome::Mismatch) => {
                                span.record("outcome", "mismatch");
                                metrics.mismatch();
                                tracing::debug!(
                                    target: "steadfast::idempotency",
                                    "key reused with another request (method, path or body): answered 422",
                                );
                                ctx.answer(problem(&Rejection::Mismatch))
                            }
                            Err(e) => ctx.answer(begin_failed(span, metrics, &e)),
                        }
                    }
                    StateProj::Call { fut } => {
                        let ctx = this.ctx.as_mut().ok_or_else(polled_after_completion)?;
                        let Poll::Ready(result) = fut.poll(cx) else {
                            ctx.poll_renewal(cx, span);
                            return Poll::Pending;
                        };
                        match result {
                            Err(e) => ctx.release(span, Err(e), "inner_error")?,
                            Ok(res) if !ctx.core.store_responses.stores(res.status()) => {
                                ctx.release(span, Ok(res.map(ResponseBody::new)), "status")?
                            }
                            Ok(res)
                                if res.body().size_hint().lower()
                                    > ctx.core.max_response_body as u64 =>
                            {
                                ctx.release(span, Ok(res.map(ResponseBody::new)), "too_large")?
                            }
                            Ok(res) => {
                                let (parts, body) = res.into_parts();
                                ctx.res_parts = Some(parts);
                                ctx.res_body = Some(Box::pin(body));
                                State::ReadResponse
                            }
                        }
                    }
                    StateProj::ReadResponse => {
                        let ctx = this.ctx.as_mut().ok_or_else(polled_after_completion)?;
                        loop {
                            let polled = {
                                let b =
                                    ctx.res_body.as_mut().ok_or_else(polled_after_completion)?;
                                b.as_mut().poll_frame(cx)
                            };
                            let Poll::Ready(frame) = polled else {
                                ctx.poll_renewal(cx, span);
                                return Poll::Pending;
                            };
                            match frame {
                                Some(Ok(frame)) => match frame.into_data() {
                                    Ok(data) => {
                                        ctx.buf.extend_from_slice(&data);
                                        if ctx.buf.len() > ctx.core.max_response_body {
                                            let prefix = ctx.buf.split().freeze();
                                            let rest = ResponseBody::resumed(
                                                prefix,
                                                None,
                                                None,
                                                ctx.res_body.take(),
                                            );
                                            break ctx.pass_on(span, rest, "too_large")?;
                                        }
                                    }
                                    Err(frame) => {
                                        if let Ok(trailers) = frame.into_trailers() {
                                            let prefix = ctx.buf.split().freeze();
                                            let rest = ResponseBody::resumed(
                                                prefix,
                                                Some(trailers),
                                                None,
                                                ctx.res_body.take(),
                                            );
                                            break ctx.pass_on(span, rest, "trailers")?;
                                        }
                                    }
                                },
                                Some(Err(e)) => {
                                    let prefix = ctx.buf.split().freeze();
                                    let rest = ResponseBody::resumed(prefix, None, Some(e), None);
                                    break ctx.pass_on(span, rest, "body_error")?;
                                }
                                None => break ctx.complete(span)?,
                            }
                        }
                    }
                    StateProj::Complete { fut } => {
                        let result = ready!(fut.as_mut().poll(cx));
                        let ctx = this.ctx.as_mut().ok_or_else(polled_after_completion)?;
                        if result.is_err() {
                            // Not stored: the key's expiry is not this response's to publish.
                            if let Some(Ok(res)) = ctx.pending.as_mut() {
                                res.headers_mut().remove(IDEMPOTENCY_KEY_EXPIRES);
                            }
                        }
                        ctx.after_write(span, "complete", result);
                        State::Ready
                    }
                    StateProj::Release { fut } => {
                        let result = ready!(fut.as_mut().poll(cx));
                        let ctx = this.ctx.as_mut().ok_or_else(polled_after_completion)?;
                        ctx.after_write(span, "release", result);
                        State::Ready
                    }
                };
                this.state.set(next);
            }
        };
        match ready!(states()) {
            Ok(answer) => Poll::Ready(answer),
            Err(Broken) => {
                span.record("outcome", "internal");
                tracing::error!(
                    target: "steadfast::idempotency",
                    "idempotency response future polled after completion: answered 500",
                );
                Poll::Ready(Ok(problem(&Rejection::Internal)))
            }
        }
    }
}
