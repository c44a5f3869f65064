use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use bytes::{Buf, Bytes};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use steadfast_layers::retry::NotReplayable;
use steadfast_layers::BoxError;

use super::ReplayBufferExceeded;

/// The default replay buffer: 64 KiB, as linkerd2-proxy.
pub const DEFAULT_REPLAY_LIMIT: usize = 64 * 1024;

/// A request body that can be sent more than once, without being `Clone`.
///
/// Every copy made by [`ReplayBody::try_clone`] is a handle on one shared state: the original
/// body, and a buffer of the data frames (and trailers) read from it so far, up to a limit
/// (default [`DEFAULT_REPLAY_LIMIT`], 64 KiB). Whichever copy is sent reads the buffered frames
/// first, then reads on from the original body, buffering as it goes; so a retry re-sends the
/// same bytes, even when the first attempt was cut off half-way (a server that answered `503`
/// before reading the whole body) and even while the original body is still streaming.
/// Concurrent copies (hedged requests) are woken as frames arrive. Frames are `Bytes`: buffering
/// a chunk is a reference count, not a copy.
///
/// When the body grows beyond the limit, the buffer is dropped and the body can no longer be
/// replayed: [`try_clone`](ReplayBody::try_clone) (hence [`HttpReplay`](super::HttpReplay))
/// returns `NotReplayable("body exceeds replay buffer")`, the reason is traced, and a copy that
/// would need the dropped bytes fails with [`ReplayBufferExceeded`] rather than send a truncated
/// body. A body whose size hint already exceeds the limit is never buffered at all.
///
/// ```
/// use bytes::Bytes;
/// use http_body_util::{BodyExt, Full};
/// use steadfast_http::body::ReplayBody;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let body = ReplayBody::new(Full::new(Bytes::from_static(b"hello")));
/// let second = body.try_clone().unwrap();
/// assert_eq!(body.collect().await.unwrap().to_bytes(), "hello");
/// assert_eq!(second.collect().await.unwrap().to_bytes(), "hello"); // replayed from the buffer
/// # }
/// ```
#[derive(Debug)]
pub struct ReplayBody<B> {
    shared: Arc<Mutex<Shared<B>>>,
    /// The next buffered chunk this copy yields (chunks are numbered from 0 across the body).
    next_chunk: usize,
    /// Bytes this copy has yielded, for its size hint.
    yielded: u64,
    trailers_sent: bool,
    /// This copy has failed or finished.
    done: bool,
}

#[derive(Debug)]
struct Shared<B> {
    inner: Pin<Box<B>>,
    /// The original body has ended.
    inner_done: bool,
    /// The original body failed: nothing more can be read from it.
    inner_failed: bool,
    /// Data chunks read so far, in order; emptied once the limit is exceeded.
    chunks: Vec<Bytes>,
    /// Chunks read from the original body so far (buffered or not).
    read: usize,
    /// Bytes read from the original body so far.
    buffered_bytes: usize,
    trailers: Option<HeaderMap>,
    limit: usize,
    /// The buffer was dropped: the limit was exceeded.
    overflowed: bool,
    /// The original body's size hint, before anything was read.
    size_hint: SizeHint,
    /// Copies waiting for the original body to make progress.
    waiters: Vec<Waker>,
}

impl<B> Shared<B> {
    fn wake_waiters(&mut self, except: Option<&Waker>) {
        for w in self.waiters.drain(..) {
            if !except.is_some_and(|e| w.will_wake(e)) {
                w.wake();
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<B: Body> ReplayBody<B> {
    /// Wraps `body` with the default 64 KiB replay buffer.
    ///
    /// ```
    /// # use steadfast_http::body::ReplayBody;
    /// let body = ReplayBody::new(http_body_util::Empty::<bytes::Bytes>::new());
    /// assert!(body.is_replayable());
    /// ```
    pub fn new(body: B) -> Self {
        Self::with_limit(body, DEFAULT_REPLAY_LIMIT)
    }

    /// Wraps `body` with a replay buffer of `limit` bytes.
    ///
    /// ```
    /// # use steadfast_http::body::ReplayBody;
    /// let body = ReplayBody::with_limit(http_body_util::Full::new(bytes::Bytes::from_static(b"too long")), 4);
    /// assert!(!body.is_replayable()); // its size is known to exceed the limit
    /// ```
    pub fn with_limit(body: B, limit: usize) -> Self {
        let size_hint = body.size_hint();
        let overflowed = usize::try_from(size_hint.lower()).map_or(true, |n| n > limit);
        if overflowed {
            trace_overflow(limit, "size hint");
        }
        ReplayBody {
            shared: Arc::new(Mutex::new(Shared {
                inner: Box::pin(body),
                inner_done: false,
                inner_failed: false,
                chunks: Vec::new(),
                read: 0,
                buffered_bytes: 0,
                trailers: None,
                limit,
                overflowed,
                size_hint,
                waiters: Vec::new(),
            })),
            next_chunk: 0,
            yielded: 0,
            trailers_sent: false,
            done: false,
        }
    }
}

fn trace_overflow(limit: usize, why: &'static str) {
    tracing::debug!(
        target: "steadfast::body",
        limit,
        why,
        "request body exceeds the replay buffer: the request will not be retried"
    );
}

impl<B> ReplayBody<B> {
    /// A new copy of the body, to send again from its first byte; `NotReplayable("body exceeds
    /// replay buffer")` once the body has outgrown the buffer (or `"body failed"` once the
    /// original body has failed).
    ///
    /// ```
    /// # use steadfast_http::body::ReplayBody;
    /// let body = ReplayBody::new(http_body_util::Full::new(bytes::Bytes::from_static(b"x")));
    /// assert!(body.try_clone().is_ok());
    /// ```
    pub fn try_clone(&self) -> Result<Self, NotReplayable> {
        let state = lock(&self.shared);
        if state.overflowed {
            return Err(NotReplayable::new("body exceeds replay buffer"));
        }
        if state.inner_failed {
            return Err(NotReplayable::new("body failed"));
        }
        drop(state);
        Ok(ReplayBody {
            shared: Arc::clone(&self.shared),
            next_chunk: 0,
            yielded: 0,
            trailers_sent: false,
            done: false,
        })
    }

    /// Whether another copy can still be made.
    ///
    /// ```
    /// # use steadfast_http::body::ReplayBody;
    /// assert!(ReplayBody::new(http_body_util::Empty::<bytes::Bytes>::new()).is_replayable());
    /// ```
    pub fn is_replayable(&self) -> bool {
        let state = lock(&self.shared);
        !state.overflowed && !state.inner_failed
    }

    /// The replay buffer's limit in bytes.
    ///
    /// ```
    /// # use steadfast_http::body::{ReplayBody, DEFAULT_REPLAY_LIMIT};
    /// assert_eq!(ReplayBody::new(http_body_util::Empty::<bytes::Bytes>::new()).limit(), DEFAULT_REPLAY_LIMIT);
    /// ```
    pub fn limit(&self) -> usize {
        lock(&self.shared).limit
    }
}

impl<B> Body for ReplayBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        let mut state = lock(&this.shared);
        // Behind the head: replay from the buffer.
        if this.next_chunk < state.read {
            let Some(chunk) = state
                .chunks
                .get(this.next_chunk)
                .filter(|_| !state.overflowed)
                .cloned()
            else {
                this.done = true;
                return Poll::Ready(Some(Err(ReplayBufferExceeded::new(state.limit).into())));
            };
            this.next_chunk += 1;
            this.yielded += chunk.len() as u64;
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        // At the head: trailers another copy already read, or the end.
        if let Some(trailers) = &state.trailers {
            this.done = this.trailers_sent;
            if this.done {
                return Poll::Ready(None);
            }
            this.trailers_sent = true;
            return Poll::Ready(Some(Ok(Frame::trailers(trailers.clone()))));
        }
        if state.inner_done {
            this.done = true;
            return Poll::Ready(None);
        }
        if state.inner_failed {
            this.done = true;
            return Poll::Ready(Some(Err(
                "the original request body failed: it cannot be sent again".into(),
            )));
        }
        // Read on from the original body.
        loop {
            let frame = match state.inner.as_mut().poll_frame(cx) {
                Poll::Pending => {
                    if !state.waiters.iter().any(|w| w.will_wake(cx.waker())) {
                        state.waiters.push(cx.waker().clone());
                    }
                    return Poll::Pending;
                }
                Poll::Ready(None) => {
                    state.inner_done = true;
                    state.wake_waiters(Some(cx.waker()));
                    this.done = true;
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(Err(e))) => {
                    state.inner_failed = true;
                    state.wake_waiters(Some(cx.waker()));
                    this.done = true;
                    return Poll::Ready(Some(Err(e.into())));
                }
                Poll::Ready(Some(Ok(frame))) => frame,
            };
            let frame = match frame.into_data() {
                Ok(mut data) => {
                    let bytes = data.copy_to_bytes(data.remaining());
                    state.read += 1;
                    state.buffered_bytes = state.buffered_bytes.saturating_add(bytes.len());
                    if !state.overflowed {
                        if state.buffered_bytes > state.limit {
                            state.overflowed = true;
                            state.chunks = Vec::new();
                            trace_overflow(state.limit, "streamed past the limit");
                        } else {
                            state.chunks.push(bytes.clone());
                        }
                    }
                    this.next_chunk = state.read;
                    this.yielded += bytes.len() as u64;
                    Frame::data(bytes)
                }
                Err(frame) => match frame.into_trailers() {
                    Ok(trailers) => {
                        state.trailers = Some(trailers.clone());
                        this.trailers_sent = true;
                        Frame::trailers(trailers)
                    }
                    // http-body 1 frames are data or trailers; skip anything else.
                    Err(_) => continue,
                },
            };
            state.wake_waiters(Some(cx.waker()));
            return Poll::Ready(Some(Ok(frame)));
        }
    }

    fn is_end_stream(&self) -> bool {
        if self.done {
            return true;
        }
        let state = lock(&self.shared);
        if self.next_chunk < state.read {
            return false;
        }
        match &state.trailers {
            Some(_) => self.trailers_sent,
            None => state.inner_done || (!state.inner_failed && state.inner.is_end_stream()),
        }
    }

    fn size_hint(&self) -> SizeHint {
        let original = lock(&self.shared).size_hint;
        let mut hint = SizeHint::new();
        if let Some(upper) = original.upper() {
            hint.set_upper(upper.saturating_sub(self.yielded));
        }
        hint.set_lower(original.lower().saturating_sub(self.yielded));
        hint
    }
}

impl<B> Drop for ReplayBody<B> {
    fn drop(&mut self) {
        // This copy may have been the one the original body would wake: let the others poll it.
        let mut state = lock(&self.shared);
        if !state.waiters.is_empty() {
            state.wake_waiters(None);
        }
    }
}
