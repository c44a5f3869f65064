use std::fmt;

/// How a retry layer gets a fresh copy of a request for each attempt.
///
/// [`CloneReplay`] (the default) clones; request types that are not `Clone` (streaming HTTP
/// bodies, say) opt in with their own implementation, which may instrument the template on the
/// first call (e.g. tee the body into a bounded buffer). Returning [`NotReplayable`] stops
/// retries for that request, visibly: the retry layer gives up with
/// [`GiveUpReason::NotReplayable`](super::GiveUpReason::NotReplayable).
///
/// Closures `Fn(&mut Req) -> Result<Req, NotReplayable>` implement it.
///
/// ```
/// use steadfast_layers::retry::{NotReplayable, Replay};
/// // Requests bigger than 4 bytes are not kept for replay.
/// let small_only = |req: &mut Vec<u8>| {
///     if req.len() <= 4 { Ok(req.clone()) } else { Err(NotReplayable::new("request too large")) }
/// };
/// assert!(small_only.replay(&mut vec![1, 2]).is_ok());
/// assert_eq!(small_only.replay(&mut vec![0; 9]).unwrap_err().reason(), "request too large");
/// ```
pub trait Replay<Req> {
    /// A copy of `template` to send as the next attempt.
    fn replay(&self, template: &mut Req) -> Result<Req, NotReplayable>;

    /// The request to send as the last attempt. The retry layer hands over the kept template
    /// itself (no copy needed); the default sends it as it is. Override it to refuse a template
    /// that can no longer be sent whole (a body that outgrew its replay buffer, say).
    ///
    /// ```
    /// use steadfast_layers::retry::{NotReplayable, Replay};
    /// struct Checked;
    /// impl Replay<Vec<u8>> for Checked {
    ///     fn replay(&self, t: &mut Vec<u8>) -> Result<Vec<u8>, NotReplayable> { Ok(t.clone()) }
    ///     fn last(&self, t: Vec<u8>) -> Result<Vec<u8>, NotReplayable> {
    ///         if t.is_empty() { Err(NotReplayable::new("body lost")) } else { Ok(t) }
    ///     }
    /// }
    /// assert!(Checked.last(vec![]).is_err());
    /// ```
    fn last(&self, template: Req) -> Result<Req, NotReplayable> {
        Ok(template)
    }
}

/// Replays a request by cloning it.
///
/// ```
/// use steadfast_layers::retry::{CloneReplay, Replay};
/// assert_eq!(CloneReplay.replay(&mut String::from("hi")).unwrap(), "hi");
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct CloneReplay;

impl<Req: Clone> Replay<Req> for CloneReplay {
    #[inline]
    fn replay(&self, template: &mut Req) -> Result<Req, NotReplayable> {
        Ok(template.clone())
    }
}

impl<F, Req> Replay<Req> for F
where
    F: Fn(&mut Req) -> Result<Req, NotReplayable>,
{
    fn replay(&self, template: &mut Req) -> Result<Req, NotReplayable> {
        self(template)
    }
}

/// A request could not be copied for another attempt, and why.
///
/// ```
/// use steadfast_layers::retry::NotReplayable;
/// let e = NotReplayable::new("body over 64 KiB");
/// assert_eq!(e.to_string(), "request cannot be replayed: body over 64 KiB");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotReplayable {
    reason: &'static str,
}

impl NotReplayable {
    /// A request that cannot be replayed for `reason`.
    pub const fn new(reason: &'static str) -> Self {
        Self { reason }
    }

    /// Why it cannot be replayed.
    pub const fn reason(&self) -> &'static str {
        self.reason
    }
}

impl fmt::Display for NotReplayable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "request cannot be replayed: {}", self.reason)
    }
}

impl std::error::Error for NotReplayable {}
