pub mod idempotency_key;
