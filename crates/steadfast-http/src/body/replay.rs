use http::Request;
use steadfast_layers::retry::{NotReplayable, Replay};

use super::ReplayBody;
use crate::idempotency::may_resend;

/// Replays HTTP requests whose body is a [`ReplayBody`], for steadfast's retry (and hedge)
/// layers: `RetryLayer::builder().replay(HttpReplay::new())`.
///
/// Each copy gets the method, URI, version, headers and **all** extensions of the template
/// (`http` 1 extensions are `Clone`; this carries the request's
/// [`Deadline`](steadfast_layers::deadline::Deadline) and anything else set upstream), and a new
/// handle on the body's replay buffer. A body that has outgrown its buffer is not replayable:
/// `NotReplayable("body exceeds replay buffer")`, and the retry layer gives up with
/// [`GiveUpReason::NotReplayable`](steadfast_layers::retry::GiveUpReason::NotReplayable).
///
/// ```
/// use bytes::Bytes;
/// use http_body_util::{BodyExt, Full};
/// use steadfast_http::body::{HttpReplay, ReplayBody};
/// use steadfast_layers::retry::Replay;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let mut template = http::Request::builder()
///     .method("PUT")
///     .uri("http://example.invalid/items/7")
///     .header("x-trace", "abc")
///     .body(ReplayBody::new(Full::new(Bytes::from_static(b"{\"n\":7}"))))
///     .unwrap();
/// let copy = HttpReplay::new().replay(&mut template).unwrap();
/// assert_eq!(copy.method(), "PUT");
/// assert_eq!(copy.headers()["x-trace"], "abc");
/// assert_eq!(copy.into_body().collect().await.unwrap().to_bytes(), "{\"n\":7}");
/// # }
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct HttpReplay {
    idempotent_only: bool,
}

impl HttpReplay {
    /// Replays every request whose body is still replayable.
    ///
    /// ```
    /// # use steadfast_http::body::HttpReplay;
    /// assert!(!HttpReplay::new().is_idempotent_only());
    /// ```
    pub const fn new() -> Self {
        HttpReplay {
            idempotent_only: false,
        }
    }

    /// Replays only requests that may be sent more than once by steadfast's one eligibility
    /// rule, [`may_resend`]: an idempotent method (`GET`, `HEAD`, `PUT`, `DELETE`, `OPTIONS`,
    /// `TRACE`) or exactly one well-formed `Idempotency-Key`. Others give up with
    /// `NotReplayable("not idempotent and no Idempotency-Key")`. Note that gRPC calls are all
    /// `POST`.
    ///
    /// ```
    /// use http_body_util::Empty;
    /// use steadfast_http::body::{HttpReplay, ReplayBody};
    /// use steadfast_layers::retry::Replay;
    /// let mut post = http::Request::builder().method("POST")
    ///     .body(ReplayBody::new(Empty::<bytes::Bytes>::new())).unwrap();
    /// let err = HttpReplay::idempotent_only().replay(&mut post).unwrap_err();
    /// assert_eq!(err.reason(), "not idempotent and no Idempotency-Key");
    /// // A key that is not a Structured Field string does not count:
    /// post.headers_mut().insert("idempotency-key", "k-1".parse().unwrap());
    /// assert!(HttpReplay::idempotent_only().replay(&mut post).is_err());
    /// post.headers_mut().insert("idempotency-key", "\"k-1\"".parse().unwrap());
    /// assert!(HttpReplay::idempotent_only().replay(&mut post).is_ok());
    /// ```
    pub const fn idempotent_only() -> Self {
        HttpReplay {
            idempotent_only: true,
        }
    }

    /// Whether only idempotent requests are replayed.
    ///
    /// ```
    /// # use steadfast_http::body::HttpReplay;
    /// assert!(HttpReplay::idempotent_only().is_idempotent_only());
    /// ```
    pub const fn is_idempotent_only(&self) -> bool {
        self.idempotent_only
    }
}

impl<B> Replay<Request<ReplayBody<B>>> for HttpReplay {
    fn replay(
        &self,
        template: &mut Request<ReplayBody<B>>,
    ) -> Result<Request<ReplayBody<B>>, NotReplayable> {
        if self.idempotent_only && !may_resend(template) {
            return Err(NotReplayable::new("not idempotent and no Idempotency-Key"));
        }
        let body = template.body().try_clone().inspect_err(|e| {
            tracing::debug!(
                target: "steadfast::body",
                reason = e.reason(),
                limit = template.body().limit(),
                "request not replayed"
            );
        })?;
        let mut copy = Request::new(body);
        *copy.method_mut() = template.method().clone();
        *copy.uri_mut() = template.uri().clone();
        *copy.version_mut() = template.version();
        *copy.headers_mut() = template.headers().clone();
        *copy.extensions_mut() = template.extensions().clone();
        Ok(copy)
    }

    fn last(
        &self,
        template: Request<ReplayBody<B>>,
    ) -> Result<Request<ReplayBody<B>>, NotReplayable> {
        // The last attempt sends the kept request itself: refuse it if its body can no longer be
        // sent whole, rather than sending a truncated body.
        if !template.body().is_replayable() {
            tracing::debug!(
                target: "steadfast::body",
                reason = "body exceeds replay buffer",
                limit = template.body().limit(),
                "request not replayed"
            );
            return Err(NotReplayable::new("body exceeds replay buffer"));
        }
        Ok(template)
    }
}
