use std::task::{Context, Poll};

use http::Request;
use tower_layer::Layer;
use tower_service::Service;

use crate::idempotency::{AddIdempotencyKey, IdempotencyKeyLayer};

/// The outermost layer of the presets: [`AddIdempotencyKey`] when idempotency keys are on (the
/// default), the inner service untouched when they were turned off
/// ([`StandardClientBuilder::idempotency_keys(false)`](super::StandardClientBuilder::idempotency_keys)).
///
/// Either way its future is the inner service's: the slot costs one branch per call.
///
/// ```
/// use tower::{service_fn, Layer, ServiceExt};
/// use steadfast_http::preset::StandardClientLayer;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() -> Result<(), steadfast_layers::BoxError> {
/// let peer = service_fn(|req: http::Request<_>| async move {
///     Ok::<_, std::io::Error>(http::Response::new(req.headers().contains_key("idempotency-key")))
/// });
/// let post = || http::Request::post("/orders").body(http_body_util::Empty::<bytes::Bytes>::new()).unwrap();
/// let keyed = StandardClientLayer::builder().build()?.layer(peer.clone());
/// assert!(keyed.is_keyed());
/// assert!(*keyed.oneshot(post()).await?.body());
/// let bare = StandardClientLayer::builder().idempotency_keys(false).build()?.layer(peer);
/// assert!(!bare.is_keyed());
/// assert!(!*bare.oneshot(post()).await?.body());
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct MaybeKeyed<S> {
    inner: Slot<S>,
}

#[derive(Clone, Debug)]
enum Slot<S> {
    Keyed(AddIdempotencyKey<S>),
    Plain(S),
}

impl<S> MaybeKeyed<S> {
    /// Wraps `inner` in `keys`, or not.
    pub(super) fn new(keys: Option<&IdempotencyKeyLayer>, inner: S) -> Self {
        let inner = match keys {
            Some(layer) => Slot::Keyed(layer.layer(inner)),
            None => Slot::Plain(inner),
        };
        MaybeKeyed { inner }
    }

    /// Whether requests get an `Idempotency-Key` here.
    pub fn is_keyed(&self) -> bool {
        matches!(self.inner, Slot::Keyed(_))
    }

    /// The rest of the stack.
    pub fn get_ref(&self) -> &S {
        match &self.inner {
            Slot::Keyed(s) => s.get_ref(),
            Slot::Plain(s) => s,
        }
    }

    /// The rest of the stack, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        match &mut self.inner {
            Slot::Keyed(s) => s.get_mut(),
            Slot::Plain(s) => s,
        }
    }
}

impl<S, B> Service<Request<B>> for MaybeKeyed<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        match &mut self.inner {
            Slot::Keyed(s) => s.poll_ready(cx),
            Slot::Plain(s) => s.poll_ready(cx),
        }
    }

    #[inline]
    fn call(&mut self, req: Request<B>) -> Self::Future {
        match &mut self.inner {
            Slot::Keyed(s) => s.call(req),
            Slot::Plain(s) => s.call(req),
        }
    }
}
