use std::fmt;
use std::marker::PhantomData;

use http::request::Parts;
use http::HeaderName;

/// Finds who a request is from (tenant, account or authenticated subject): the scope of its
/// idempotency key. Records of one principal are never visible to another, so one tenant can
/// never replay another's stored response even with the same key.
///
/// Returning `None` rejects the request with `403` problem details
/// ([`Rejection::PrincipalMissing`](super::Rejection::PrincipalMissing)): fail closed. Run the
/// layer after authentication and read what it established (an extension, a verified header).
///
/// Implemented for closures `Fn(&Parts) -> Option<String>`, and by [`SingleTenant`],
/// [`HeaderPrincipal`] and [`ExtensionPrincipal`].
///
/// ```
/// use steadfast_http::idempotency::PrincipalExtractor;
/// let by_tenant = |parts: &http::request::Parts| {
///     parts.headers.get("x-tenant-id")?.to_str().ok().map(str::to_owned)
/// };
/// let (parts, ()) = http::Request::builder().header("x-tenant-id", "acme").body(()).unwrap().into_parts();
/// assert_eq!(by_tenant.principal(&parts).as_deref(), Some("acme"));
/// ```
pub trait PrincipalExtractor: Send + Sync + 'static {
    /// The request's principal, or `None` when it has none.
    fn principal(&self, request: &Parts) -> Option<String>;
}

impl<F> PrincipalExtractor for F
where
    F: Fn(&Parts) -> Option<String> + Send + Sync + 'static,
{
    fn principal(&self, request: &Parts) -> Option<String> {
        self(request)
    }
}

/// One scope for every request: only for services with a single tenant.
///
/// ```
/// use steadfast_http::idempotency::{PrincipalExtractor, SingleTenant};
/// let (parts, ()) = http::Request::new(()).into_parts();
/// assert_eq!(SingleTenant.principal(&parts).as_deref(), Some(""));
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct SingleTenant;

impl PrincipalExtractor for SingleTenant {
    fn principal(&self, _: &Parts) -> Option<String> {
        Some(String::new())
    }
}

/// The principal is the value of a header that an outer layer (a gateway, an authentication
/// middleware) has verified. Empty or non-visible-ASCII values count as missing.
///
/// ```
/// use steadfast_http::idempotency::{HeaderPrincipal, PrincipalExtractor};
/// let p = HeaderPrincipal::new(http::HeaderName::from_static("x-account-id"));
/// let (parts, ()) = http::Request::builder().header("x-account-id", "acct_1").body(()).unwrap().into_parts();
/// assert_eq!(p.principal(&parts).as_deref(), Some("acct_1"));
/// ```
#[derive(Clone, Debug)]
pub struct HeaderPrincipal {
    name: HeaderName,
}

impl HeaderPrincipal {
    /// Reads header `name`.
    pub fn new(name: HeaderName) -> Self {
        Self { name }
    }
}

impl PrincipalExtractor for HeaderPrincipal {
    fn principal(&self, request: &Parts) -> Option<String> {
        let mut values = request.headers.get_all(&self.name).iter();
        let value = values.next()?;
        if values.next().is_some() {
            return None;
        }
        let s = value.to_str().ok()?;
        (!s.is_empty()).then(|| s.to_owned())
    }
}

/// The principal is an extension of type `T` that an authentication layer inserted.
///
/// ```
/// use steadfast_http::idempotency::{ExtensionPrincipal, PrincipalExtractor};
/// #[derive(Clone)]
/// struct Subject(String);
/// impl AsRef<str> for Subject { fn as_ref(&self) -> &str { &self.0 } }
///
/// let p = ExtensionPrincipal::<Subject>::new();
/// let mut req = http::Request::new(());
/// req.extensions_mut().insert(Subject("user-7".into()));
/// let (parts, ()) = req.into_parts();
/// assert_eq!(p.principal(&parts).as_deref(), Some("user-7"));
/// ```
pub struct ExtensionPrincipal<T> {
    _t: PhantomData<fn() -> T>,
}

impl<T> ExtensionPrincipal<T> {
    /// Reads the extension of type `T`.
    pub fn new() -> Self {
        Self { _t: PhantomData }
    }
}

impl<T> Default for ExtensionPrincipal<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Clone for ExtensionPrincipal<T> {
    fn clone(&self) -> Self {
        Self::new()
    }
}

impl<T> fmt::Debug for ExtensionPrincipal<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExtensionPrincipal")
            .field("type", &std::any::type_name::<T>())
            .finish()
    }
}

impl<T> PrincipalExtractor for ExtensionPrincipal<T>
where
    T: AsRef<str> + Clone + Send + Sync + 'static,
{
    fn principal(&self, request: &Parts) -> Option<String> {
        request.extensions.get::<T>().map(|t| t.as_ref().to_owned())
    }
}
