//! Tests that need PostgreSQL or Redis: skipped loudly when the server is unreachable, unless
//! `STEADFAST_REQUIRE_SERVICES=1` (set by `.ci/run`), which makes the skip a failure.

use std::io::Write;

/// Whether `STEADFAST_REQUIRE_SERVICES=1`: an unreachable service fails the test.
pub fn required() -> bool {
    std::env::var("STEADFAST_REQUIRE_SERVICES").as_deref() == Ok("1")
}

/// Skips loudly, or panics when services are required.
///
/// The notice goes straight to the process's stderr: libtest captures `eprintln!` of passing
/// tests.
pub fn skip(what: &str, why: &dyn std::fmt::Display) {
    assert!(
        !required(),
        "{what} is unreachable ({why}) and STEADFAST_REQUIRE_SERVICES=1"
    );
    let _ = writeln!(
        std::io::stderr(),
        "\n**********\n*** SKIPPED: {what} is unreachable ({why}).\n*** Set STEADFAST_REQUIRE_SERVICES=1 to make this a failure.\n**********"
    );
}

/// `REDIS_URL`, default `redis://127.0.0.1:6379`.
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// `DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/test`.
pub fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}
