//! Opening the saga log named by a store URL: `sqlite://PATH` or
//! `postgres://...[?schema=NAME]`. A URL that names no existing saga log is refused rather than
//! opened (opening creates the tables): a typo must not look like an empty log.

use std::path::Path;
use std::sync::Arc;

use sqlx::Connection;
use steadfast_saga::store::{PostgresStore, SagaStore, SqliteStore};

use crate::CliError;

/// Where the saga log is.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Location {
    /// A SQLite database file.
    Sqlite(String),
    /// A PostgreSQL database (the URL without our `schema` parameter) and schema.
    Postgres { url: String, schema: Option<String> },
}

/// Parses a store URL.
pub(crate) fn parse(url: &str) -> Result<Location, CliError> {
    if let Some(rest) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    {
        if rest.is_empty() {
            return Err(CliError::usage("--store sqlite://PATH: the path is empty"));
        }
        return Ok(Location::Sqlite(rest.to_string()));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let (base, query) = match url.split_once('?') {
            Some((b, q)) => (b, q),
            None => (url, ""),
        };
        let mut schema = None;
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.strip_prefix("schema=") {
                Some(s) if !s.is_empty() => schema = Some(s.to_string()),
                Some(_) => return Err(CliError::usage("--store: schema= is empty")),
                None => kept.push(pair),
            }
        }
        let url = if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        return Ok(Location::Postgres { url, schema });
    }
    Err(CliError::usage(format!(
        "unsupported store URL {:?}: use sqlite://PATH or postgres://USER@HOST/DB[?schema=NAME]",
        redact(url)
    )))
}

/// The URL with its password, if any, replaced by `***` (for messages).
pub(crate) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (auth, tail) = match rest.find('@') {
        Some(at) if !rest[..at].contains('/') => (&rest[..at], &rest[at..]),
        _ => return url.to_string(),
    };
    match auth.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***{tail}"),
        None => url.to_string(),
    }
}

/// Opens the saga log at `url`.
pub(crate) async fn open(url: &str) -> Result<Arc<dyn SagaStore>, CliError> {
    match parse(url)? {
        Location::Sqlite(path) => {
            if !Path::new(&path).is_file() {
                return Err(CliError::usage(format!(
                    "no saga log at {path:?}: no such file"
                )));
            }
            let store = SqliteStore::open(&path)
                .await
                .map_err(|e| CliError::failure(format!("cannot open {path:?}: {e}")))?;
            Ok(Arc::new(store))
        }
        Location::Postgres { url, schema } => {
            let shown = redact(&url);
            let unreachable =
                |e: &dyn std::fmt::Display| CliError::failure(format!("cannot reach {shown}: {e}"));
            // Is there a saga log there? (Opening the store would create one.)
            let mut conn = sqlx::PgConnection::connect(&url)
                .await
                .map_err(|e| unreachable(&e))?;
            let table = match &schema {
                Some(s) => format!("\"{}\".steadfast_sagas", s.replace('"', "\"\"")),
                None => "steadfast_sagas".to_string(),
            };
            let found: Option<String> = sqlx::query_scalar("SELECT to_regclass($1)::text")
                .bind(&table)
                .fetch_one(&mut conn)
                .await
                .map_err(|e| unreachable(&e))?;
            let _ = conn.close().await;
            if found.is_none() {
                let place = match &schema {
                    Some(s) => format!("schema {s:?}"),
                    None => "the default schema".to_string(),
                };
                return Err(CliError::usage(format!(
                    "no saga log in {place} of {shown}"
                )));
            }
            let store = PostgresStore::connect_with(&url, schema.as_deref(), 2)
                .await
                .map_err(|e| match e {
                    steadfast_saga::Error::InvalidOperation(m) => CliError::usage(m),
                    e => unreachable(&e),
                })?;
            Ok(Arc::new(store))
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn store_urls() {
        assert_eq!(
            parse("sqlite:///var/lib/app/sagas.db").unwrap(),
            Location::Sqlite("/var/lib/app/sagas.db".into())
        );
        assert_eq!(
            parse("sqlite://sagas.db").unwrap(),
            Location::Sqlite("sagas.db".into())
        );
        assert_eq!(
            parse("sqlite:sagas.db").unwrap(),
            Location::Sqlite("sagas.db".into())
        );
        assert_eq!(
            parse("postgres://u@h/db?schema=orders&sslmode=disable").unwrap(),
            Location::Postgres {
                url: "postgres://u@h/db?sslmode=disable".into(),
                schema: Some("orders".into())
            }
        );
        assert_eq!(
            parse("postgresql://u@h/db").unwrap(),
            Location::Postgres {
                url: "postgresql://u@h/db".into(),
                schema: None
            }
        );
        for bad in [
            "sqlite://",
            "mysql://h/db",
            "sagas.db",
            "postgres://h/db?schema=",
        ] {
            let e = parse(bad).unwrap_err();
            assert_eq!(e.code, crate::USAGE, "{bad}");
        }
        let e = parse("redis://u:hunter2@h/0").unwrap_err();
        assert!(!e.message.contains("hunter2"), "{}", e.message);
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://app:s3cret@db:5432/x?schema=a"),
            "postgres://app:***@db:5432/x?schema=a"
        );
        assert_eq!(redact("postgres://app@db/x"), "postgres://app@db/x");
        assert_eq!(redact("postgres://db/x@y"), "postgres://db/x@y");
    }
}
