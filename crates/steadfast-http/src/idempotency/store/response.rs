use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

use super::StoreError;

const MAGIC: &[u8; 4] = b"SFI1";

/// A response kept for replay: status, headers and the whole body.
///
/// Stores that keep bytes use [`encode`](StoredResponse::encode) and
/// [`decode`](StoredResponse::decode) (a small versioned binary format); decoding checks
/// everything and fails with a [`Corrupt`](super::StoreErrorKind::Corrupt) error rather than
/// panicking.
///
/// ```
/// use http::{HeaderMap, StatusCode};
/// use steadfast_http::idempotency::store::StoredResponse;
/// let mut headers = HeaderMap::new();
/// headers.insert("content-type", "application/json".parse().unwrap());
/// let r = StoredResponse::new(StatusCode::CREATED, headers, "{\"id\":1}".into());
/// let back = StoredResponse::decode(&r.encode()).unwrap();
/// assert_eq!(back, r);
/// assert!(StoredResponse::decode(b"garbage").is_err());
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct StoredResponse {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl StoredResponse {
    /// A stored response.
    pub fn new(status: StatusCode, headers: HeaderMap, body: Bytes) -> Self {
        Self {
            status,
            headers,
            body,
        }
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The body.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// Takes it apart.
    pub fn into_parts(self) -> (StatusCode, HeaderMap, Bytes) {
        (self.status, self.headers, self.body)
    }

    /// The binary form stores keep.
    pub fn encode(&self) -> Vec<u8> {
        let headers_len: usize = self
            .headers
            .iter()
            .map(|(n, v)| 6 + n.as_str().len() + v.len())
            .sum();
        let mut out = BytesMut::with_capacity(4 + 2 + 4 + headers_len + 8 + self.body.len());
        out.put_slice(MAGIC);
        out.put_u16(self.status.as_u16());
        out.put_u32(u32::try_from(self.headers.len()).unwrap_or(u32::MAX));
        for (name, value) in &self.headers {
            // Header names are at most 64 KiB in `http`; values fit in u32.
            out.put_u16(u16::try_from(name.as_str().len()).unwrap_or(u16::MAX));
            out.put_slice(name.as_str().as_bytes());
            out.put_u32(u32::try_from(value.len()).unwrap_or(u32::MAX));
            out.put_slice(value.as_bytes());
        }
        out.put_u64(self.body.len() as u64);
        out.put_slice(&self.body);
        out.to_vec()
    }

    /// Reads the binary form back.
    pub fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        let mut r = Reader { bytes, at: 0 };
        if r.take(4)? != MAGIC {
            return Err(StoreError::corrupt("stored response: unknown format"));
        }
        let status = StatusCode::from_u16(r.u16()?)
            .map_err(|e| StoreError::corrupt("stored response: bad status").with_source(e))?;
        let count = r.u32()? as usize;
        let mut headers = HeaderMap::with_capacity(count.min(256));
        for _ in 0..count {
            let n = r.u16()? as usize;
            let name = HeaderName::from_bytes(r.take(n)?).map_err(|e| {
                StoreError::corrupt("stored response: bad header name").with_source(e)
            })?;
            let n = r.u32()? as usize;
            let value = HeaderValue::from_bytes(r.take(n)?).map_err(|e| {
                StoreError::corrupt("stored response: bad header value").with_source(e)
            })?;
            headers.try_append(name, value).map_err(|e| {
                StoreError::corrupt("stored response: more headers than a header map holds")
                    .with_source(e)
            })?;
        }
        let n = usize::try_from(r.u64()?)
            .map_err(|_| StoreError::corrupt("stored response: body too large"))?;
        let body = Bytes::copy_from_slice(r.take(n)?);
        if r.at != bytes.len() {
            return Err(StoreError::corrupt("stored response: trailing bytes"));
        }
        Ok(Self {
            status,
            headers,
            body,
        })
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], StoreError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|end| *end <= self.bytes.len())
            .ok_or_else(|| StoreError::corrupt("stored response: truncated"))?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn u16(&mut self) -> Result<u16, StoreError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, StoreError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, StoreError> {
        let b = self.take(8)?;
        let mut a = [0; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }
}
