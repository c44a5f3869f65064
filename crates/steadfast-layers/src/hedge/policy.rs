use std::time::Duration;

use crate::classify::Outcome;

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
///
/// The policy also judges each finished attempt of a hedged call ([`judge`](Self::judge)), from
/// the [`Outcome`] the classifier gave it: whether it ends the call, and when the next hedge
/// leaves. The default keeps the first success and lets a failure wait for the attempts in
/// flight; [`ByOutcome`] follows gRPC A6 instead.
pub trait HedgePolicy<Req> {
    /// Whether `req` may be hedged.
    fn can_hedge(&self, req: &Req) -> bool;

    /// What a finished attempt of a hedged call, classified `outcome`, means for the call.
    ///
    /// The default: a success is [`AttemptVerdict::Accept`]ed; a failure is
    /// [`AttemptVerdict::NonFatal`] and leaves the next hedge on its schedule
    /// ([`NextHedge::OnSchedule`]), so the call waits for the attempts in flight and, when every
    /// attempt sent has failed, returns the most informative failure.
    ///
    /// ```
    /// use steadfast_layers::classify::Outcome;
    /// use steadfast_layers::hedge::{AttemptVerdict, HedgeAny, HedgePolicy, NextHedge};
    /// let judge = |o: Outcome| HedgePolicy::<u32>::judge(&HedgeAny, &o);
    /// assert_eq!(judge(Outcome::Success), AttemptVerdict::Accept);
    /// assert_eq!(
    ///     judge(Outcome::fatal("bad_request")),
    ///     AttemptVerdict::NonFatal { next: NextHedge::OnSchedule }
    /// );
    /// ```
    #[inline]
    fn judge(&self, outcome: &Outcome) -> AttemptVerdict {
        if outcome.is_failure() {
            AttemptVerdict::NonFatal {
                next: NextHedge::OnSchedule,
            }
        } else {
            AttemptVerdict::Accept
        }
    }
}

/// What a finished attempt of a hedged call means for the call, as its [`HedgePolicy`] judges
/// it ([`HedgePolicy::judge`]).
///
/// ```
/// use std::time::Duration;
/// use steadfast_layers::hedge::{AttemptVerdict, NextHedge};
/// let pushed_back = AttemptVerdict::NonFatal { next: NextHedge::After(Duration::from_millis(250)) };
/// assert!(!pushed_back.ends_call());
/// assert!(AttemptVerdict::Fatal.ends_call());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AttemptVerdict {
    /// The call returns this result at once, and the attempts still in flight are cancelled
    /// (dropped): a success.
    Accept,
    /// A failure that ends the call: returned at once, unchanged, and the attempts still in
    /// flight are cancelled (dropped); no further hedge is sent. gRPC A6: a status not in
    /// `nonFatalStatusCodes`.
    Fatal,
    /// A failure that leaves the call to the attempts in flight and the hedges to come; `next`
    /// says when the next hedge leaves. When no attempt is in flight and no hedge is to come,
    /// the call returns the most informative failure (a failed response over an error, else
    /// the latest).
    NonFatal {
        /// When the next hedge leaves.
        next: NextHedge,
    },
}

impl AttemptVerdict {
    /// Whether the call ends with this attempt ([`Accept`](Self::Accept) or
    /// [`Fatal`](Self::Fatal)).
    ///
    /// ```
    /// # use steadfast_layers::hedge::{AttemptVerdict, NextHedge};
    /// assert!(AttemptVerdict::Accept.ends_call());
    /// assert!(!AttemptVerdict::NonFatal { next: NextHedge::Now }.ends_call());
    /// ```
    pub const fn ends_call(&self) -> bool {
        matches!(self, AttemptVerdict::Accept | AttemptVerdict::Fatal)
    }
}

/// When the next hedge leaves after a non-fatal failure ([`AttemptVerdict::NonFatal`]).
///
/// A hedge that is due is still subject to the deadline, the copy of the request and the
/// budgets; a call whose hedges are all sent, or whose hedging has ended, sends no more.
///
/// ```
/// use std::time::Duration;
/// use steadfast_layers::hedge::NextHedge;
/// // gRPC A6's `grpc-retry-pushback-ms: 250`.
/// assert_eq!(NextHedge::After(Duration::from_millis(250)), NextHedge::After(Duration::from_millis(250)));
/// assert_ne!(NextHedge::Now, NextHedge::Stop);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum NextHedge {
    /// On its schedule, one hedge delay after the previous attempt; when no attempt is in
    /// flight the call ends (hedging is not retrying). The default.
    OnSchedule,
    /// At once, shortcutting its delay, even when no attempt is in flight (gRPC A6: after a
    /// non-fatal status). The hedges after it follow one delay apart.
    Now,
    /// This long from now, instead of its schedule (gRPC A6: a non-negative
    /// `grpc-retry-pushback-ms`). The hedges after it follow one delay apart.
    After(Duration),
    /// Never: the call sends no further hedge; the attempts in flight continue (gRPC A6: a
    /// negative or malformed `grpc-retry-pushback-ms`).
    Stop,
}

/// Judges finished attempts by their [`Outcome`] as gRPC A6 judges hedged attempts by their
/// status, and hedges the requests that `P` allows.
///
/// | Outcome | Verdict | A6 |
/// |---|---|---|
/// | [`Success`](Outcome::Success) | [`Accept`](AttemptVerdict::Accept) | the first response commits |
/// | [`Fatal`](Outcome::Fatal) | [`Fatal`](AttemptVerdict::Fatal): returned, the others cancelled | a status not in `nonFatalStatusCodes` |
/// | [`Retryable`](Outcome::Retryable) without a server delay, [`NotSent`](Outcome::NotSent) | [`NonFatal`](AttemptVerdict::NonFatal), next hedge [`Now`](NextHedge::Now) | a non-fatal status sends the next hedge at once |
/// | [`Retryable`](Outcome::Retryable) with a server delay | next hedge [`After`](NextHedge::After) it | a non-negative `grpc-retry-pushback-ms` |
/// | [`Pushback`](Outcome::Pushback) | next hedge [`Stop`](NextHedge::Stop) | a negative or malformed `grpc-retry-pushback-ms` |
///
/// The classifier decides which failures are fatal: with a gRPC classifier, the codes it
/// retries are A6's `nonFatalStatusCodes`.
///
/// ```
/// use std::time::Duration;
/// use steadfast_layers::classify::Outcome;
/// use steadfast_layers::hedge::{AttemptVerdict, ByOutcome, HedgeAny, HedgePolicy, NextHedge};
/// let policy = ByOutcome(HedgeAny);
/// let judge = |o: Outcome| HedgePolicy::<u32>::judge(&policy, &o);
/// assert!(policy.can_hedge(&7_u32));
/// assert_eq!(judge(Outcome::fatal("internal")), AttemptVerdict::Fatal);
/// assert_eq!(judge(Outcome::retryable("unavailable")), AttemptVerdict::NonFatal { next: NextHedge::Now });
/// assert_eq!(
///     judge(Outcome::retry_after("unavailable", Duration::from_millis(250))),
///     AttemptVerdict::NonFatal { next: NextHedge::After(Duration::from_millis(250)) }
/// );
/// assert_eq!(judge(Outcome::Pushback { reason: "pushback" }), AttemptVerdict::NonFatal { next: NextHedge::Stop });
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ByOutcome<P = HedgeAny>(pub P);

impl<Req, P: HedgePolicy<Req>> HedgePolicy<Req> for ByOutcome<P> {
    #[inline]
    fn can_hedge(&self, req: &Req) -> bool {
        self.0.can_hedge(req)
    }

    #[inline]
    fn judge(&self, outcome: &Outcome) -> AttemptVerdict {
        let next = match *outcome {
            Outcome::Success => return AttemptVerdict::Accept,
            Outcome::Fatal { .. } => return AttemptVerdict::Fatal,
            Outcome::Retryable {
                after: Some(after), ..
            } => NextHedge::After(after),
            Outcome::Pushback { .. } => NextHedge::Stop,
            // Retryable without a server delay, NotSent, and any outcome added later.
            _ => NextHedge::Now,
        };
        AttemptVerdict::NonFatal { next }
    }
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
