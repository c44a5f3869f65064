//! HTTP and gRPC glue for steadfast's layers: header codecs (`grpc-timeout`, `Retry-After`,
//! `grpc-retry-pushback-ms`, `Idempotency-Key`), deadline propagation across hops, status
//! classifiers, replayable bodies, and idempotency keys on the client and the server.

/// Header codecs.
pub mod codec;
pub mod idempotency;
