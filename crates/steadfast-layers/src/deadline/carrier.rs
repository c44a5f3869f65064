use super::Deadline;

/// Where, besides the task-local scope, a request carries its deadline.
///
/// Layers read the inherited deadline as the earlier of the task-local one and the carrier's, and
/// write the effective one back. [`TaskLocal`] (the default) carries it in the scope only and
/// works for any request type; [`HttpExtensions`] also stores it in `http::Request` extensions so
/// that it survives a hop to another task.
///
/// ```
/// use std::time::Duration;
/// use steadfast_layers::deadline::{Carrier, Deadline, HttpExtensions};
/// let mut req = http::Request::new(());
/// let d = Deadline::after(Duration::from_secs(1)).unwrap();
/// HttpExtensions.set(&mut req, d);
/// assert_eq!(HttpExtensions.get(&req), Some(d));
/// ```
pub trait Carrier<Req>: Clone {
    /// The deadline the request carries, if any.
    fn get(&self, req: &Req) -> Option<Deadline>;
    /// Stores `deadline` on the request.
    fn set(&self, req: &mut Req, deadline: Deadline);

    /// Whether [`set`](Carrier::set) needs the deadline at call time. When it does not, a layer
    /// with its own timeout fixes the deadline only when something first needs it, saving a
    /// clock read on calls that complete at once. Defaults to `true`.
    ///
    /// ```
    /// use steadfast_layers::deadline::{Carrier, HttpExtensions, TaskLocal};
    /// assert!(!Carrier::<u32>::stores(&TaskLocal));
    /// assert!(Carrier::<http::Request<()>>::stores(&HttpExtensions));
    /// ```
    fn stores(&self) -> bool {
        true
    }
}

/// Carries the deadline in the task-local scope only: works for any request type.
///
/// ```
/// use steadfast_layers::deadline::{Carrier, Deadline, TaskLocal};
/// let mut req = 5_u32;
/// TaskLocal.set(&mut req, Deadline::at(tokio::time::Instant::now()));
/// assert_eq!(TaskLocal.get(&req), None);
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct TaskLocal;

impl<Req> Carrier<Req> for TaskLocal {
    #[inline]
    fn get(&self, _req: &Req) -> Option<Deadline> {
        None
    }

    #[inline]
    fn set(&self, _req: &mut Req, _deadline: Deadline) {}

    #[inline]
    fn stores(&self) -> bool {
        false
    }
}

/// Carries the deadline in `http::Request` extensions as well as in the task-local scope.
///
/// ```
/// use steadfast_layers::deadline::{Carrier, Deadline, HttpExtensions};
/// let req = http::Request::new(());
/// assert_eq!(HttpExtensions.get(&req), None);
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct HttpExtensions;

impl<B> Carrier<http::Request<B>> for HttpExtensions {
    #[inline]
    fn get(&self, req: &http::Request<B>) -> Option<Deadline> {
        req.extensions().get::<Deadline>().copied()
    }

    #[inline]
    fn set(&self, req: &mut http::Request<B>, deadline: Deadline) {
        req.extensions_mut().insert(deadline);
    }
}

/// The deadline a request inherits: the earlier of the task-local scope's and the carrier's.
#[inline]
pub(crate) fn inherited<Req, C: Carrier<Req>>(carrier: &C, req: &Req) -> Option<Deadline> {
    match (Deadline::current(), carrier.get(req)) {
        (Some(a), b) => Some(a.shrink(b)),
        (None, b) => b,
    }
}
