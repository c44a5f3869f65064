use http::{Method, Request};
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

/// "Safe method or keyed": whether sending the request more than once (a retry, a hedge) is
/// harmless. True for the safe methods (`GET`, `HEAD`, `OPTIONS`, `TRACE`) and for requests
/// carrying a well-formed `Idempotency-Key` (the server deduplicates them).
///
/// ```
/// use steadfast_http::idempotency::is_safe_or_keyed;
/// assert!(is_safe_or_keyed(&http::Request::get("/").body(()).unwrap()));
/// assert!(!is_safe_or_keyed(&http::Request::post("/").body(()).unwrap()));
/// assert!(!is_safe_or_keyed(&http::Request::delete("/").body(()).unwrap()));
/// assert!(is_safe_or_keyed(&http::Request::post("/").header("idempotency-key", "\"k\"").body(()).unwrap()));
/// ```
pub fn is_safe_or_keyed<B>(req: &Request<B>) -> bool {
    is_safe(req.method()) || is_keyed(req)
}

/// Like [`is_safe_or_keyed`], but also true for the idempotent methods `PUT` and `DELETE`
/// (RFC 9110 §9.2.2), for services that implement them idempotently.
///
/// ```
/// use steadfast_http::idempotency::is_idempotent_or_keyed;
/// assert!(is_idempotent_or_keyed(&http::Request::delete("/").body(()).unwrap()));
/// assert!(!is_idempotent_or_keyed(&http::Request::patch("/").body(()).unwrap()));
/// ```
pub fn is_idempotent_or_keyed<B>(req: &Request<B>) -> bool {
    let m = req.method();
    is_safe(m) || *m == Method::PUT || *m == Method::DELETE || is_keyed(req)
}

fn is_safe(m: &Method) -> bool {
    *m == Method::GET || *m == Method::HEAD || *m == Method::OPTIONS || *m == Method::TRACE
}

/// A retry [`Replay`] that replays only requests for which [`is_safe_or_keyed`] holds; others
/// are tried once and the retry layer gives up with
/// [`GiveUpReason::NotReplayable`](steadfast_layers::retry::GiveUpReason::NotReplayable)
/// (`"not safe and no Idempotency-Key"`).
///
/// ```
/// use steadfast_http::idempotency::SafeOrKeyed;
/// use steadfast_layers::retry::{CloneReplay, Replay};
/// let replay = SafeOrKeyed::new(CloneReplay);
/// let mut post = http::Request::post("/").body(()).unwrap();
/// assert_eq!(replay.replay(&mut post).unwrap_err().reason(), "not safe and no Idempotency-Key");
/// let mut get = http::Request::get("/").body(()).unwrap();
/// assert!(replay.replay(&mut get).is_ok());
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct SafeOrKeyed<R> {
    inner: R,
}

impl<R> SafeOrKeyed<R> {
    /// Replays through `inner` the requests that are safe or keyed.
    pub fn new(inner: R) -> Self {
        Self { inner }
    }
}

impl<R, B> Replay<Request<B>> for SafeOrKeyed<R>
where
    R: Replay<Request<B>>,
{
    fn replay(&self, template: &mut Request<B>) -> Result<Request<B>, NotReplayable> {
        if is_safe_or_keyed(template) {
            self.inner.replay(template)
        } else {
            Err(NotReplayable::new("not safe and no Idempotency-Key"))
        }
    }
}
