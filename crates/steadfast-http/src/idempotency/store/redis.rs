use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisError, Script, Value};

use super::{
    millis, BeginOutcome, BeginRequest, IdempotencyStore, Lease, RecordId, StoreError,
    StoreErrorKind, StoreFuture, StoredResponse,
};
use crate::ConfigError;

/// Takes or reports a record. Time is the Redis server's (`TIME`), so every replica agrees.
/// Fields: `s` state (`i` in flight, `c` completed), `fp` fingerprint, `ow` owner, `ep` epoch,
/// `lu` lease end (ms since the epoch), `resp` the stored response. The key's TTL is the
/// record's expiry.
const BEGIN: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease_ms = tonumber(ARGV[3])
local r = redis.call('HMGET', KEYS[1], 's', 'fp', 'ep', 'lu', 'resp')
local state = r[1]
if not state then
  redis.call('HSET', KEYS[1], 's', 'i', 'fp', ARGV[1], 'ow', ARGV[2], 'ep', 1, 'lu', now + lease_ms)
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  return {'acquired', 1, 0}
end
if r[2] ~= ARGV[1] then
  return {'mismatch'}
end
if state == 'c' then
  return {'completed', r[5]}
end
if state == 'i' then
  local lu = tonumber(r[4])
  local ep = tonumber(r[3])
  if not lu or not ep then
    return {'corrupt', 'in-flight record without lease or epoch'}
  end
  if lu > now then
    return {'busy', lu - now}
  end
  ep = ep + 1
  redis.call('HSET', KEYS[1], 'ow', ARGV[2], 'ep', ep, 'lu', now + lease_ms)
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  return {'acquired', ep, 1}
end
return {'corrupt', 'unknown state'}
";

/// Stores the response if the caller still holds the lease.
const COMPLETE: &str = r"
local r = redis.call('HMGET', KEYS[1], 's', 'ow', 'ep')
if r[1] ~= 'i' or r[2] ~= ARGV[1] or tonumber(r[3]) ~= tonumber(ARGV[2]) then
  return 0
end
redis.call('HSET', KEYS[1], 's', 'c', 'resp', ARGV[3])
redis.call('HDEL', KEYS[1], 'lu')
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
";

/// Extends the lease if the caller still holds it.
const RENEW: &str = r"
local r = redis.call('HMGET', KEYS[1], 's', 'ow', 'ep')
if r[1] ~= 'i' or r[2] ~= ARGV[1] or tonumber(r[3]) ~= tonumber(ARGV[2]) then
  return 0
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], 'lu', now + tonumber(ARGV[3]))
return 1
";

/// Deletes the record if the caller still holds the lease.
const RELEASE: &str = r"
local r = redis.call('HMGET', KEYS[1], 's', 'ow', 'ep')
if r[1] ~= 'i' or r[2] ~= ARGV[1] or tonumber(r[3]) ~= tonumber(ARGV[2]) then
  return 0
end
redis.call('DEL', KEYS[1])
return 1
";

/// A store on Redis: one hash per record, changed only by Lua scripts, so `begin`, `complete`
/// and `release` are atomic across any number of replicas. Expiry is the key's TTL; lease time
/// is the Redis server's clock.
///
/// Keys are `{prefix}{record id}`: the prefix (default `steadfast:idem:`) and the 64 hex digits
/// of the record's [`RecordId`] (SHA-256 of the length-prefixed scope and key; see the
/// [store docs](super#how-records-are-addressed)), so key names are bounded whatever the key's
/// and principal's length. The hash holds only the record's state, not the scope or key.
///
/// Errors are classified (see [`StoreErrorKind`]): connection loss, I/O errors, timeouts, a
/// server loading, failing over or read-only become
/// [`Unavailable`](StoreErrorKind::Unavailable) (transient); `OOM` becomes
/// [`Capacity`](StoreErrorKind::Capacity) (transient); a key of another type or a record that
/// cannot be read back becomes [`Corrupt`](StoreErrorKind::Corrupt); any other error the
/// driver marks as not worth retrying (`NOPERM`, `NOAUTH`, a script error, an unexpected reply)
/// becomes [`Refused`](StoreErrorKind::Refused) (permanent).
///
/// Upgrading from a version that named keys `{prefix}{scope length}:{scope}:{key}`: records
/// written under the old names are not found and expire by their TTL; a retry of a request
/// completed before the upgrade, arriving after it, executes again.
///
/// ```no_run
/// use steadfast_http::idempotency::store::RedisStore;
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// let store = RedisStore::connect("redis://127.0.0.1:6379").await?;
/// // or, with a connection manager you already have:
/// let client = redis::Client::open("redis://127.0.0.1:6379")?;
/// let manager = redis::aio::ConnectionManager::new(client).await?;
/// let store = RedisStore::builder(manager).prefix("payments:idem:").build()?;
/// # let _ = store; Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    prefix: Arc<str>,
    scripts: Arc<Scripts>,
}

struct Scripts {
    begin: Script,
    complete: Script,
    release: Script,
    renew: Script,
}

/// Builds a [`RedisStore`] on a connection manager.
///
/// ```no_run
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// # let manager = redis::aio::ConnectionManager::new(redis::Client::open("redis://127.0.0.1")?).await?;
/// use steadfast_http::idempotency::store::RedisStore;
/// assert!(RedisStore::builder(manager).prefix("").build().is_err());
/// # Ok(()) }
/// ```
pub struct RedisStoreBuilder {
    conn: ConnectionManager,
    prefix: String,
}

impl fmt::Debug for RedisStoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStoreBuilder")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisStoreBuilder {
    /// The prefix of every key this store writes (default `steadfast:idem:`).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Validates and builds the store.
    pub fn build(self) -> Result<RedisStore, ConfigError> {
        if self.prefix.is_empty() {
            return Err(ConfigError::conflict(
                "prefix",
                "must not be empty: the store would share the key space",
            ));
        }
        Ok(RedisStore {
            conn: self.conn,
            prefix: Arc::from(self.prefix),
            scripts: Arc::new(Scripts {
                begin: Script::new(BEGIN),
                complete: Script::new(COMPLETE),
                release: Script::new(RELEASE),
                renew: Script::new(RENEW),
            }),
        })
    }
}

impl RedisStore {
    /// Connects to `url` with a [`ConnectionManager`] (reconnects on its own; connection and
    /// response timeouts of 2 s) and the default prefix.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let client = redis::Client::open(url).map_err(unavailable)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(2);
        let conn = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(unavailable)?;
        Self::builder(conn)
            .build()
            .map_err(|e| StoreError::unavailable(e.to_string()))
    }

    /// A builder on `conn`.
    pub fn builder(conn: ConnectionManager) -> RedisStoreBuilder {
        RedisStoreBuilder {
            conn,
            prefix: "steadfast:idem:".to_owned(),
        }
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The Redis key of `(scope, key)`: the prefix and the record's [`RecordId`] in hex.
    ///
    /// ```no_run
    /// # async fn f(store: steadfast_http::idempotency::store::RedisStore) {
    /// use steadfast_http::idempotency::store::RecordId;
    /// let key = store.record_key("acct", "k1");
    /// assert_eq!(key, format!("steadfast:idem:{}", RecordId::of("acct", "k1")));
    /// assert_eq!(store.record_key(&"p".repeat(10_000), "k1").len(), "steadfast:idem:".len() + 64);
    /// # }
    /// ```
    pub fn record_key(&self, scope: &str, key: &str) -> String {
        self.key_of(&RecordId::of(scope, key))
    }

    fn key_of(&self, id: &RecordId) -> String {
        format!("{}{id}", self.prefix)
    }

    /// Deletes every key under this store's prefix (for tests and the lab); returns how many.
    pub async fn clear(&self) -> Result<usize, StoreError> {
        let mut conn = self.conn.clone();
        let pattern = format!("{}*", escape_glob(&self.prefix));
        let mut cursor: u64 = 0;
        let mut deleted = 0;
        loop {
            let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await
                .map_err(unavailable)?;
            if !keys.is_empty() {
                let n: usize = redis::cmd("DEL")
                    .arg(&keys)
                    .query_async(&mut conn)
                    .await
                    .map_err(unavailable)?;
                deleted += n;
            }
            if next == 0 {
                return Ok(deleted);
            }
            cursor = next;
        }
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

fn escape_glob(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Classifies a driver error: transient unless the driver says retrying cannot help.
fn unavailable(e: RedisError) -> StoreError {
    match e.code() {
        Some("WRONGTYPE") => {
            return StoreError::corrupt("the record key holds another Redis type").with_source(e)
        }
        Some("OOM") => {
            return StoreError::new(StoreErrorKind::Capacity, e.to_string()).with_source(e)
        }
        _ => {}
    }
    // Connection loss, I/O, timeouts, LOADING, TRYAGAIN, MASTERDOWN, CLUSTERDOWN, READONLY
    // (a failover) and redirects may clear; what the driver will not retry does not.
    match e.retry_method() {
        redis::RetryMethod::NoRetry => StoreError::refused(e),
        _ => StoreError::unavailable(e),
    }
}

fn corrupt(what: &str) -> StoreError {
    StoreError::corrupt(format!("redis record: {what}"))
}

fn as_bytes(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

fn as_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Int(i) => u64::try_from(*i).ok(),
        other => as_bytes(other)
            .and_then(|b| std::str::from_utf8(b).ok())
            .and_then(|s| s.parse().ok()),
    }
}

fn parse_begin(request: &BeginRequest, reply: Value) -> Result<BeginOutcome, StoreError> {
    let Value::Array(items) = reply else {
        return Err(corrupt("begin: unexpected reply"));
    };
    let tag = items.first().and_then(as_bytes).unwrap_or_default();
    match tag {
        b"acquired" => {
            let epoch = items
                .get(1)
                .and_then(as_u64)
                .ok_or_else(|| corrupt("begin: bad epoch"))?;
            let takeover = items.get(2).and_then(as_u64) == Some(1);
            Ok(BeginOutcome::Acquired(request.lease_at(epoch, takeover)))
        }
        b"busy" => {
            let ms = items.get(1).and_then(as_u64).unwrap_or(0);
            Ok(BeginOutcome::InFlight {
                retry_after: Duration::from_millis(ms),
            })
        }
        b"mismatch" => Ok(BeginOutcome::Mismatch),
        b"completed" => {
            let bytes = items
                .get(1)
                .and_then(as_bytes)
                .ok_or_else(|| corrupt("completed record without a response"))?;
            StoredResponse::decode(bytes).map(BeginOutcome::Completed)
        }
        b"corrupt" => {
            let why = items
                .get(1)
                .and_then(as_bytes)
                .map(String::from_utf8_lossy)
                .unwrap_or_default();
            Err(corrupt(&why))
        }
        _ => Err(corrupt("begin: unknown reply")),
    }
}

impl IdempotencyStore for RedisStore {
    fn begin(&self, request: BeginRequest) -> StoreFuture<BeginOutcome> {
        let mut conn = self.conn.clone();
        let scripts = Arc::clone(&self.scripts);
        let key = self.key_of(request.id());
        Box::pin(async move {
            let reply: Value = scripts
                .begin
                .key(&key)
                .arg(request.fingerprint().as_bytes().as_slice())
                .arg(request.lease_owner().to_string())
                .arg(millis(request.lease_duration()))
                .arg(millis(request.expiry_duration()))
                .invoke_async(&mut conn)
                .await
                .map_err(unavailable)?;
            parse_begin(&request, reply)
        })
    }

    fn complete(
        &self,
        lease: &Lease,
        response: StoredResponse,
        expiry: Duration,
    ) -> StoreFuture<()> {
        let mut conn = self.conn.clone();
        let scripts = Arc::clone(&self.scripts);
        let key = self.key_of(lease.id());
        let lease = lease.clone();
        Box::pin(async move {
            let done: i64 = scripts
                .complete
                .key(&key)
                .arg(lease.owner().to_string())
                .arg(lease.epoch())
                .arg(response.encode())
                .arg(millis(expiry))
                .invoke_async(&mut conn)
                .await
                .map_err(unavailable)?;
            if done == 1 {
                Ok(())
            } else {
                Err(StoreError::lease_lost(&lease))
            }
        })
    }

    fn release(&self, lease: &Lease) -> StoreFuture<()> {
        let mut conn = self.conn.clone();
        let scripts = Arc::clone(&self.scripts);
        let key = self.key_of(lease.id());
        let lease = lease.clone();
        Box::pin(async move {
            let done: i64 = scripts
                .release
                .key(&key)
                .arg(lease.owner().to_string())
                .arg(lease.epoch())
                .invoke_async(&mut conn)
                .await
                .map_err(unavailable)?;
            if done == 1 {
                Ok(())
            } else {
                Err(StoreError::lease_lost(&lease))
            }
        })
    }

    fn renew(&self, lease: &Lease, duration: Duration) -> StoreFuture<()> {
        let mut conn = self.conn.clone();
        let scripts = Arc::clone(&self.scripts);
        let key = self.key_of(lease.id());
        let lease = lease.clone();
        Box::pin(async move {
            let done: i64 = scripts
                .renew
                .key(&key)
                .arg(lease.owner().to_string())
                .arg(lease.epoch())
                .arg(millis(duration))
                .invoke_async(&mut conn)
                .await
                .map_err(unavailable)?;
            if done == 1 {
                Ok(())
            } else {
                Err(StoreError::lease_lost(&lease))
            }
        })
    }

    fn kind(&self) -> &'static str {
        "redis"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis::{ErrorKind, ServerErrorKind};

    fn kind_of(e: RedisError) -> StoreErrorKind {
        unavailable(e).kind()
    }

    #[test]
    fn errors_are_classified_transient_or_permanent() {
        let io = |k| RedisError::from(std::io::Error::new(k, "x"));
        let server = |k| RedisError::from((ErrorKind::Server(k), "x"));
        for transient in [
            io(std::io::ErrorKind::ConnectionReset),
            io(std::io::ErrorKind::TimedOut),
            server(ServerErrorKind::BusyLoading),
            server(ServerErrorKind::TryAgain),
            server(ServerErrorKind::MasterDown),
            server(ServerErrorKind::ClusterDown),
            server(ServerErrorKind::ReadOnly),
            RedisError::from((ErrorKind::AuthenticationFailed, "x")),
        ] {
            assert_eq!(kind_of(transient), StoreErrorKind::Unavailable);
        }
        for permanent in [
            server(ServerErrorKind::NoPerm),
            server(ServerErrorKind::ResponseError),
            server(ServerErrorKind::CrossSlot),
            RedisError::from((ErrorKind::UnexpectedReturnType, "x")),
            RedisError::from((ErrorKind::InvalidClientConfig, "x")),
        ] {
            let e = unavailable(permanent);
            assert_eq!(e.kind(), StoreErrorKind::Refused, "{e}");
            assert!(!e.is_transient());
        }
    }
}
