//! How a preset meets its transport: what it wraps directly around the transport, and what it
//! wraps around the whole stack.

/// How a client preset meets its transport: [`Plain`] for any
/// `Service<http::Request<ReplayBody<B>>>` (a hyper-util client built for replay bodies, see
/// [`hyper_client`](super::hyper_client)), or `Tonic` (feature `tonic`) for a tonic `Channel`
/// as it is.
///
/// `inner` wraps the transport (below deadline propagation, next to the wire); `outer` wraps the
/// whole stack (outside the idempotency key slot). Sealed: the presets know every transport
/// they meet.
///
/// ```
/// use steadfast_http::preset::{Plain, Transport};
/// let svc = Plain.inner(tower::service_fn(|_: ()| async { Ok::<_, std::io::Error>(()) }));
/// let _same = Plain.outer(svc);
/// ```
pub trait Transport: sealed::Sealed + Clone {
    /// The transport as the stack calls it.
    type Inner<S>;
    /// The stack as the caller calls it.
    type Outer<S>;
    /// Wraps the transport.
    fn inner<S>(&self, transport: S) -> Self::Inner<S>;
    /// Wraps the stack.
    fn outer<S>(&self, stack: S) -> Self::Outer<S>;
}

/// The plain transport: the stack sends `http::Request<ReplayBody<B>>` to it and returns its
/// `BoxError`s as they are (steadfast's nouns: `GaveUp`, `DeadlineExceeded`, ...).
///
/// ```
/// use steadfast_http::preset::{Plain, StandardClientLayer};
/// let layer = StandardClientLayer::builder().build()?;
/// let _: &StandardClientLayer<_, _, Plain> = &layer;
/// # Ok::<(), steadfast_http::ConfigError>(())
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct Plain;

impl Transport for Plain {
    type Inner<S> = S;
    type Outer<S> = S;

    #[inline]
    fn inner<S>(&self, transport: S) -> S {
        transport
    }

    #[inline]
    fn outer<S>(&self, stack: S) -> S {
        stack
    }
}

pub(crate) mod sealed {
    /// Only this crate's transports.
    #[allow(unreachable_pub)]
    pub trait Sealed {}
    impl Sealed for super::Plain {}
}
