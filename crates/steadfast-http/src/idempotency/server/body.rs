use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{Either, Full};
use pin_project::pin_project;

/// The request body the inner service of [`Idempotency`](super::Idempotency) receives: the
/// buffered body of a keyed request ([`Either::Left`]; its trailers are not kept), or the
/// untouched body of a request the layer does not handle ([`Either::Right`]).
///
/// ```
/// use bytes::Bytes;
/// use http_body_util::{Either, Empty, Full};
/// use steadfast_http::idempotency::RequestBody;
/// let keyed: RequestBody<Empty<Bytes>> = Either::Left(Full::new(Bytes::from("{}")));
/// # let _ = keyed;
/// ```
pub type RequestBody<B> = Either<Full<Bytes>, B>;

/// The response body of [`Idempotency`](super::Idempotency): a buffered body (stored, replayed
/// or a problem-details document), the inner service's untouched body (a response that is not
/// stored), or what was buffered followed by the rest of the inner body (a response found too
/// large to store while it was being read).
///
/// ```
/// use http_body_util::BodyExt;
/// use steadfast_http::idempotency::ResponseBody;
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let body: ResponseBody<http_body_util::Empty<bytes::Bytes>> = ResponseBody::full("hello".into());
/// assert_eq!(body.collect().await.unwrap().to_bytes(), "hello");
/// # }
/// ```
#[pin_project]
pub struct ResponseBody<B: Body> {
    #[pin]
    kind: Kind<B>,
}

#[pin_project(project = KindProj)]
enum Kind<B: Body> {
    Full {
        data: Option<Bytes>,
    },
    Inner {
        #[pin]
        body: B,
    },
    Resumed {
        prefix: Option<Bytes>,
        trailers: Option<HeaderMap>,
        error: Option<B::Error>,
        rest: Option<Pin<Box<B>>>,
    },
}

impl<B: Body> ResponseBody<B> {
    /// A body of `data`.
    ///
    /// ```
    /// use http_body_util::{BodyExt, Full};
    /// use steadfast_http::idempotency::ResponseBody;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let body = ResponseBody::<Full<bytes::Bytes>>::full(bytes::Bytes::from("order #1"));
    /// assert_eq!(body.collect().await.unwrap().to_bytes(), "order #1");
    /// # }
    /// ```
    pub fn full(data: Bytes) -> Self {
        let data = (!data.is_empty()).then_some(data);
        Self {
            kind: Kind::Full { data },
        }
    }

    /// The inner service's body, untouched.
    ///
    /// ```
    /// use http_body::Body;
    /// use steadfast_http::idempotency::ResponseBody;
    /// let body = ResponseBody::new(http_body_util::Empty::<bytes::Bytes>::new());
    /// assert!(body.is_end_stream());
    /// ```
    pub fn new(body: B) -> Self {
        Self {
            kind: Kind::Inner { body },
        }
    }

    /// What was read of a body, then the rest of it.
    pub(crate) fn resumed(
        prefix: Bytes,
        trailers: Option<HeaderMap>,
        error: Option<B::Error>,
        rest: Option<Pin<Box<B>>>,
    ) -> Self {
        Self {
            kind: Kind::Resumed {
                prefix: (!prefix.is_empty()).then_some(prefix),
                trailers,
                error,
                rest,
            },
        }
    }
}

/// An empty body, so that layers which answer on their own with a default body can sit outside
/// the idempotency layer, such as
/// [`DeadlineServerLayer`](crate::propagate::DeadlineServerLayer) rejecting a request that
/// arrives after its deadline.
///
/// ```
/// use http_body::Body;
/// use http_body_util::Full;
/// use steadfast_http::idempotency::ResponseBody;
/// let body = ResponseBody::<Full<bytes::Bytes>>::default();
/// assert!(body.is_end_stream());
/// ```
impl<B: Body> Default for ResponseBody<B> {
    fn default() -> Self {
        Self::full(Bytes::new())
    }
}

impl<B: Body> fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Full { .. } => "full",
            Kind::Inner { .. } => "inner",
            Kind::Resumed { .. } => "resumed",
        };
        f.debug_struct("ResponseBody").field("kind", &kind).finish()
    }
}

impl<B> Body for ResponseBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project().kind.project() {
            KindProj::Full { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            KindProj::Inner { body } => body.poll_frame(cx),
            KindProj::Resumed {
                prefix,
                trailers,
                error,
                rest,
            } => {
                if let Some(p) = prefix.take() {
                    return Poll::Ready(Some(Ok(Frame::data(p))));
                }
                if let Some(t) = trailers.take() {
                    return Poll::Ready(Some(Ok(Frame::trailers(t))));
                }
                if let Some(e) = error.take() {
                    return Poll::Ready(Some(Err(e)));
                }
                match rest {
                    Some(body) => body.as_mut().poll_frame(cx),
                    None => Poll::Ready(None),
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full { data } => data.is_none(),
            Kind::Inner { body } => body.is_end_stream(),
            Kind::Resumed {
                prefix,
                trailers,
                error,
                rest,
            } => {
                prefix.is_none()
                    && trailers.is_none()
                    && error.is_none()
                    && rest.as_ref().is_none_or(|b| b.is_end_stream())
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            Kind::Inner { body } => body.size_hint(),
            Kind::Resumed { prefix, rest, .. } => {
                let p = prefix.as_ref().map_or(0, |d| d.len() as u64);
                let r = rest
                    .as_ref()
                    .map_or(SizeHint::with_exact(0), |b| b.size_hint());
                let mut hint = SizeHint::new();
                hint.set_lower(p + r.lower());
                if let Some(u) = r.upper() {
                    hint.set_upper(p + u);
                }
                hint
            }
        }
    }
}
