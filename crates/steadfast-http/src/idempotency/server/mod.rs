//! The server layer, [`IdempotencyLayer`]: executes each keyed request once per principal and
//! key, and answers every duplicate with the stored response or a problem.
//!
//! For a request whose method it handles (`POST`, `PATCH` by default):
//!
//! 1. no `Idempotency-Key` → `400` (unless keys are optional); a malformed, too long or repeated
//!    one → `400`; no principal → `403`; a body over the limit → `413`;
//! 2. the body is buffered and the request fingerprinted (method, path and query, body digest);
//! 3. the store's `begin` decides, atomically: first time (or the holder's lease expired) →
//!    execute; in flight → `409` with `Retry-After`; reused with another fingerprint → `422`;
//!    completed → replay the stored status, headers and body with `Idempotent-Replayed: true`;
//!    store failure → not executed: `503` with `Retry-After: 1` if the error is transient,
//!    `500` without `Retry-After` if it is permanent (see [`Rejection::store`]);
//! 4. after execution, a storable response (see [`StoreResponses`]) whose body fits is stored
//!    under the lease (fenced: a holder that lost its lease cannot overwrite) and carries
//!    `Idempotency-Key-Expires`; any other response is passed through and the key released.
//!    If storing fails, the client still gets the executed response (without
//!    `Idempotency-Key-Expires`); see the [idempotency docs](crate::idempotency) for what a
//!    retry then gets.
//!
//! Every answer the layer makes itself is RFC 9457 problem details ([`Rejection`]).
//!
//! ```
//! use std::convert::Infallible;
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use tower::{service_fn, Layer, ServiceExt};
//! use steadfast_http::idempotency::{IdempotencyLayer, RequestBody, store::MemoryStore};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let layer = IdempotencyLayer::builder(MemoryStore::new()).single_tenant().build().unwrap();
//! let svc = layer.layer(service_fn(|_req: http::Request<RequestBody<Full<Bytes>>>| async {
//!     Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from("ok"))))
//! }));
//! let res = svc.oneshot(http::Request::post("/pay").body(Full::new(Bytes::new())).unwrap()).await.unwrap();
//! assert_eq!(res.status(), 400); // a POST without a key
//! assert_eq!(res.headers()["content-type"], "application/problem+json");
//! # }
//! ```

mod body;
mod future;
mod layer;
mod policy;
mod principal;
mod rejection;
mod service;

use http::HeaderName;

pub use body::{RequestBody, ResponseBody};
pub use future::ResponseFuture;
pub use layer::{
    IdempotencyLayer, IdempotencyLayerBuilder, NoPrincipal, DEFAULT_EXPIRY, DEFAULT_LEASE,
    DEFAULT_MAX_REQUEST_BODY, DEFAULT_MAX_RESPONSE_BODY, DEFAULT_STORE_TIMEOUT,
};
pub use policy::StoreResponses;
pub use principal::{ExtensionPrincipal, HeaderPrincipal, PrincipalExtractor, SingleTenant};
pub use rejection::{Rejection, PROBLEM_JSON};
pub use service::Idempotency;

/// `Idempotent-Replayed: true` marks a replayed response (as Stripe does).
///
/// ```
/// assert_eq!(steadfast_http::idempotency::IDEMPOTENT_REPLAYED, "idempotent-replayed");
/// ```
pub const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// `Idempotency-Key-Expires: <HTTP-date>` on stored (and so replayed) responses: when the key
/// may be forgotten and a request with it executed again.
///
/// ```
/// assert_eq!(steadfast_http::idempotency::IDEMPOTENCY_KEY_EXPIRES, "idempotency-key-expires");
/// ```
pub const IDEMPOTENCY_KEY_EXPIRES: HeaderName = HeaderName::from_static("idempotency-key-expires");
