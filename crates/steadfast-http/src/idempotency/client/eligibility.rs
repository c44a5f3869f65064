use http::{Method, Request};
use steadfast_layers::hedge::HedgePolicy;
use steadfast_layers::retry::{NotReplayable, Replay};

use crate::codec::idempotency_key::{validate, IDEMPOTENCY_KEY, MAX_LEN_LIMIT};

/// Whether the request carries exactly one well-formed `Idempotency-Key` (checked without
/// allocating; any length up to 8192 characters).
///
/// ```
/// use steadfast_http::idempotency::is_keyed;
/// let keyed = http::Request::post("/").header("idempotency-key", "\"k\"").body(()).unwrap();
/// let bare = http::Request::post("/").header("idempotency-key", "k").body(()).unwrap();
/// assert!(is_keyed(&keyed));
/// assert!(!is_keyed(&bare));
/// ```
pub fn is_keyed<B>(req: &Request<B>) -> bool {
    let mut values = req.headers().get_all(IDEMPOTENCY_KEY).iter();
    match (values.next(), values.next()) {
        (Some(v), None) => validate(v.as_bytes(), MAX_LEN_LIMIT).is_ok(),
        _ => false,
    }
}

/// **The one eligibility rule**: may this request be sent more than once, by a retry or by a
/// hedge?
///
/// Yes when its method is idempotent (RFC 9110 §9.2.2: `GET`, `HEAD`, `OPTIONS`, `TRACE`,
/// `PUT`, `DELETE`), or when it carries exactly one well-formed `Idempotency-Key` (any method:
/// a server that honours keys executes every copy once). No otherwise: an invalid or repeated
/// key counts as no key, because the server would reject it or not deduplicate by it.
///
/// Every part of steadfast that asks the question asks it here:
/// [`HttpReplay::idempotent_only`](crate::body::HttpReplay::idempotent_only) (the retry layer's
/// replay in both presets), [`IdempotentOrKeyed`] as a hedge policy (the hedging preset) and as
/// a wrapper around any other [`Replay`].
///
/// ```
/// use steadfast_http::idempotency::may_resend;
/// let req = |m: &str, key: Option<&str>| {
///     let mut b = http::Request::builder().method(m);
///     if let Some(k) = key { b = b.header("idempotency-key", k); }
///     b.body(()).unwrap()
/// };
/// assert!(may_resend(&req("GET", None)));
/// assert!(may_resend(&req("PUT", None)));
/// assert!(may_resend(&req("DELETE", None)));
/// assert!(!may_resend(&req("POST", None)));
/// assert!(may_resend(&req("POST", Some("\"order-7\""))));
/// assert!(!may_resend(&req("POST", Some("order-7")))); // not a Structured Field string
/// assert!(!may_resend(&req("PATCH", None)));
/// ```
pub fn may_resend<B>(req: &Request<B>) -> bool {
    is_idempotent(req.method()) || is_keyed(req)
}

/// RFC 9110 §9.2.2's idempotent methods.
fn is_idempotent(m: &Method) -> bool {
    // `Method::is_idempotent` is exactly that list (safe methods plus PUT and DELETE).
    m.is_idempotent()
}

/// The eligibility rule ([`may_resend`]) as a value: a hedge policy, and a [`Replay`] wrapper
/// that copies only eligible requests (through `R`).
///
/// As a [`HedgePolicy`] (`IdempotentOrKeyed::new()`), it hedges exactly the requests that
/// [`may_resend`] allows. As a [`Replay`] (`IdempotentOrKeyed::wrap(inner)`), others are tried
/// once, and the retry layer gives up with
/// [`GiveUpReason::NotReplayable`](steadfast_layers::retry::GiveUpReason::NotReplayable)
/// (`"not idempotent and no Idempotency-Key"`).
///
/// ```
/// use steadfast_layers::hedge::HedgePolicy;
/// use steadfast_layers::retry::{CloneReplay, Replay};
/// use steadfast_http::idempotency::IdempotentOrKeyed;
///
/// let mut post = http::Request::post("/orders").body(()).unwrap();
/// let mut get = http::Request::get("/orders/7").body(()).unwrap();
/// assert!(!IdempotentOrKeyed::new().can_hedge(&post));
/// assert!(IdempotentOrKeyed::new().can_hedge(&get));
///
/// let replay = IdempotentOrKeyed::wrap(CloneReplay);
/// assert_eq!(replay.replay(&mut post).unwrap_err().reason(), "not idempotent and no Idempotency-Key");
/// assert!(replay.replay(&mut get).is_ok());
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct IdempotentOrKeyed<R = ()> {
    inner: R,
}

impl IdempotentOrKeyed {
    /// The rule on its own (a hedge policy).
    ///
    /// ```
    /// # use steadfast_http::idempotency::IdempotentOrKeyed;
    /// let policy = IdempotentOrKeyed::new();
    /// # let _ = policy;
    /// ```
    pub const fn new() -> Self {
        Self { inner: () }
    }
}

impl<R> IdempotentOrKeyed<R> {
    /// Copies, through `inner`, only the requests the rule allows.
    ///
    /// ```
    /// # use steadfast_layers::retry::CloneReplay;
    /// # use steadfast_http::idempotency::IdempotentOrKeyed;
    /// let replay = IdempotentOrKeyed::wrap(CloneReplay);
    /// # let _ = replay;
    /// ```
    pub const fn wrap(inner: R) -> Self {
        Self { inner }
    }
}

impl<R, B> HedgePolicy<Request<B>> for IdempotentOrKeyed<R> {
    #[inline]
    fn can_hedge(&self, req: &Request<B>) -> bool {
        may_resend(req)
    }
}

impl<R, B> Replay<Request<B>> for IdempotentOrKeyed<R>
where
    R: Replay<Request<B>>,
{
    fn replay(&self, template: &mut Request<B>) -> Result<Request<B>, NotReplayable> {
        if may_resend(template) {
            self.inner.replay(template)
        } else {
            Err(NotReplayable::new("not idempotent and no Idempotency-Key"))
        }
    }

    fn last(&self, template: Request<B>) -> Result<Request<B>, NotReplayable> {
        if may_resend(&template) {
            self.inner.last(template)
        } else {
            Err(NotReplayable::new("not idempotent and no Idempotency-Key"))
        }
    }
}
