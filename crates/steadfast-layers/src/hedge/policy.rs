/// Decides which requests are safe to send more than once, concurrently.
///
/// A hedge runs *alongside* the original, so the request must be idempotent even when two copies
/// execute at the same time, not merely when retried after a failure. The default,
/// [`IdempotentOnly`], hedges only requests marked [`MarkedIdempotent`] (for `http::Request`, those
/// carrying the [`Idempotent`] extension); [`HedgeAny`] hedges everything; closures
/// `Fn(&Req) -> bool` implement it. A hedged request must also be copyable: the layer copies it
/// with its [`Replay`](crate::retry::Replay) (cloning by default) and does not hedge a request that
/// cannot be copied.
///
/// ```
/// use steadfast_layers::hedge::{HedgeAny, HedgePolicy, Idempotent, IdempotentOnly};
/// // Only reads.
/// let reads = |path: &&str| path.starts_with("GET ");
/// assert!(reads.can_hedge(&"GET /users/7"));
/// assert!(!reads.can_hedge(&"POST /payments"));
/// assert!(HedgeAny.can_hedge(&"POST /payments"));
///
/// let mut req = http::Request::new(());
/// assert!(!IdempotentOnly.can_hedge(&req));
/// Idempotent::mark(&mut req);
/// assert!(IdempotentOnly.can_hedge(&req));
/// ```
pub trait HedgePolicy<Req> {
    /// Whether `req` may be hedged.
    fn can_hedge(&self, req: &Req) -> bool;
}

impl<F, Req> HedgePolicy<Req> for F
where
    F: Fn(&Req) -> bool,
{
    #[inline]
    fn can_hedge(&self, req: &Req) -> bool {
        self(req)
    }
}

/// The default policy: hedge only requests that say they are idempotent
/// ([`MarkedIdempotent`]).
///
/// ```
/// use steadfast_layers::hedge::{HedgePolicy, Idempotent, IdempotentOnly};
/// let req = http::Request::get("/users/7").extension(Idempotent).body(()).unwrap();
/// assert!(IdempotentOnly.can_hedge(&req));
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct IdempotentOnly;

impl<Req: MarkedIdempotent> HedgePolicy<Req> for IdempotentOnly {
    #[inline]
    fn can_hedge(&self, req: &Req) -> bool {
        req.is_marked_idempotent()
    }
}

/// Hedges every request: for request types that are all safe to send twice at once (reads,
/// lookups).
///
/// ```
/// use steadfast_layers::hedge::{HedgeAny, HedgePolicy};
/// assert!(HedgeAny.can_hedge(&42_u32));
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct HedgeAny;

impl<Req> HedgePolicy<Req> for HedgeAny {
    #[inline]
    fn can_hedge(&self, _req: &Req) -> bool {
        true
    }
}

/// A request that can say whether it is safe to execute more than once, concurrently.
///
/// Implemented for `http::Request` (the [`Idempotent`] extension). The HTTP crate will mark
/// requests that carry an `Idempotency-Key` (whose server deduplicates concurrent copies) through
/// this extension; implement the trait for your own request types.
///
/// ```
/// use steadfast_layers::hedge::MarkedIdempotent;
/// struct Lookup { key: u64 }
/// impl MarkedIdempotent for Lookup {
///     fn is_marked_idempotent(&self) -> bool { true }
/// }
/// assert!(Lookup { key: 1 }.is_marked_idempotent());
/// ```
pub trait MarkedIdempotent {
    /// Whether this request may be executed more than once, concurrently.
    fn is_marked_idempotent(&self) -> bool;
}

impl<B> MarkedIdempotent for http::Request<B> {
    #[inline]
    fn is_marked_idempotent(&self) -> bool {
        self.extensions().get::<Idempotent>().is_some()
    }
}

/// The `http::Request` extension that marks a request as safe to hedge.
///
/// Deliberately explicit: not even `GET` is hedged unless marked, because "idempotent" in
/// RFC 9110 says nothing about two copies running at once against a server with side effects
/// (logging, quotas, caches). The HTTP crate will set it for requests that carry an idempotency
/// key.
///
/// ```
/// use steadfast_layers::hedge::{Idempotent, MarkedIdempotent};
/// let mut req = http::Request::new("body");
/// Idempotent::mark(&mut req);
/// assert!(req.is_marked_idempotent());
/// assert_eq!(req.extensions().get::<Idempotent>(), Some(&Idempotent));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Idempotent;

impl Idempotent {
    /// Marks `req` as safe to hedge.
    ///
    /// ```
    /// # use steadfast_layers::hedge::{Idempotent, MarkedIdempotent};
    /// let mut req = http::Request::new(());
    /// Idempotent::mark(&mut req);
    /// assert!(req.is_marked_idempotent());
    /// ```
    pub fn mark<B>(req: &mut http::Request<B>) {
        req.extensions_mut().insert(Idempotent);
    }
}
