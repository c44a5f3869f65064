use http::StatusCode;

use crate::codec::GrpcCode;

/// A set of HTTP status codes (100 to 999), one bit each.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct StatusSet([u64; 16]);

impl StatusSet {
    pub(super) fn insert(&mut self, s: StatusCode) {
        let n = usize::from(s.as_u16());
        self.0[n / 64] |= 1 << (n % 64);
    }

    pub(super) fn remove(&mut self, s: StatusCode) {
        let n = usize::from(s.as_u16());
        self.0[n / 64] &= !(1 << (n % 64));
    }

    pub(super) fn contains(&self, s: StatusCode) -> bool {
        let n = usize::from(s.as_u16());
        self.0[n / 64] & (1 << (n % 64)) != 0
    }

    /// 5xx, 429 and 408.
    pub(super) fn default_retryable() -> Self {
        let mut set = Self::default();
        for n in 500..600 {
            if let Ok(s) = StatusCode::from_u16(n) {
                set.insert(s);
            }
        }
        set.insert(StatusCode::TOO_MANY_REQUESTS);
        set.insert(StatusCode::REQUEST_TIMEOUT);
        set
    }
}

/// A set of gRPC codes, one bit each.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct CodeSet(u32);

impl CodeSet {
    pub(super) const fn of(codes: &[GrpcCode]) -> Self {
        let mut bits = 0;
        let mut i = 0;
        while i < codes.len() {
            bits |= 1 << codes[i] as u32;
            i += 1;
        }
        CodeSet(bits)
    }

    pub(super) fn insert(&mut self, c: GrpcCode) {
        self.0 |= 1 << c as u32;
    }

    pub(super) fn remove(&mut self, c: GrpcCode) {
        self.0 &= !(1 << c as u32);
    }

    pub(super) const fn contains(&self, c: GrpcCode) -> bool {
        self.0 & (1 << c as u32) != 0
    }
}
