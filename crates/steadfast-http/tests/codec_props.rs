//! Property tests: every codec round-trips, rounds the documented way, and no decoder (nor a
//! classifier) panics on any input; the deadline server layer, fed any header bytes on a
//! paused clock, rejects them or enforces a deadline no later than the sender's.
#![allow(clippy::disallowed_types)] // SystemTime is an input of the Retry-After codec
#![allow(clippy::unwrap_used)]

use std::cell::Cell;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderValue, Request, Response};
use proptest::prelude::*;
use steadfast_http::classify::{GrpcClassifier, HttpClassifier, WallClock};
use steadfast_http::codec::*;
use steadfast_http::propagate::{DeadlineServerLayer, MalformedDeadline};
use steadfast_layers::classify::Classifier;
use steadfast_layers::deadline::{Deadline, MAX_TIMEOUT};
use steadfast_layers::BoxError;
use tower::{service_fn, Layer, ServiceExt};

const MAX_DATE_SECS: u64 = 253_402_300_799;

fn any_duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        (0u64..100_000_000).prop_map(Duration::from_nanos),
        (0u64..1 << 40, 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
        (0u64..=u64::MAX, 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
    ]
}

/// Bytes biased towards what these headers look like, to reach deep branches.
fn headerish() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            4 => prop::sample::select(b"0123456789".to_vec()),
            2 => prop::sample::select(b"HMSmun-+ ,:\t".to_vec()),
            1 => prop::sample::select(b"GMTSunNovJanThu".to_vec()),
            1 => any::<u8>(),
        ],
        0..40,
    )
}

fn any_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![prop::collection::vec(any::<u8>(), 0..64), headerish()]
}

const UNIT_NANOS: [(u8, u128); 6] = [
    (b'n', 1),
    (b'u', 1_000),
    (b'm', 1_000_000),
    (b'S', 1_000_000_000),
    (b'M', 60_000_000_000),
    (b'H', 3_600_000_000_000),
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn grpc_timeout_round_trips_rounding_down(d in any_duration()) {
        let v = encode_grpc_timeout(d);
        let bytes = v.as_bytes();
        prop_assert!(bytes.len() >= 2 && bytes.len() <= 9, "{v:?}");
        let back = decode_grpc_timeout(&v).unwrap();
        let d = d.min(MAX_GRPC_TIMEOUT);
        prop_assert!(back <= d, "extended: {d:?} -> {v:?} -> {back:?}");
        let unit = UNIT_NANOS.iter().find(|(u, _)| *u == bytes[bytes.len() - 1]).unwrap().1;
        prop_assert!(d.as_nanos() - back.as_nanos() < unit);
        // The finest unit that fits: the loss is under 10 ppm.
        prop_assert!((d.as_nanos() - back.as_nanos()) * 100_000 <= d.as_nanos());
        if d < Duration::from_millis(100) {
            prop_assert_eq!(back, d);
        }
    }

    #[test]
    fn grpc_timeout_decoded_values_re_encode_exactly(n in 0u64..=99_999_999, unit in 0usize..6) {
        let (u, _) = UNIT_NANOS[unit];
        let text = format!("{n}{}", u as char);
        let d = decode_grpc_timeout(&text).unwrap();
        prop_assert_eq!(decode_grpc_timeout(encode_grpc_timeout(d)).unwrap(), d);
    }

    #[test]
    fn timeout_ms_round_trips(ms in any::<u64>(), extra in 0u32..1_000_000) {
        let d = Duration::from_millis(ms);
        prop_assert_eq!(decode_timeout_ms(encode_timeout_ms(d)).unwrap(), d);
        // Sub-millisecond parts are dropped, never rounded up.
        if let Some(longer) = d.checked_add(Duration::from_nanos(u64::from(extra))) {
            prop_assert_eq!(decode_timeout_ms(encode_timeout_ms(longer)).unwrap(), d);
        }
    }

    #[test]
    fn retry_after_delay_round_trips_rounding_up(d in any_duration()) {
        let v = encode_retry_after(d);
        let back = decode_retry_after(&v, UNIX_EPOCH).unwrap();
        prop_assert!(back >= d || d.as_secs() == u64::MAX);
        prop_assert!(back - d.min(back) < Duration::from_secs(1));
        prop_assert_eq!(RetryAfter::parse(&v).unwrap(), RetryAfter::Delay(back));
    }

    #[test]
    fn retry_after_date_round_trips(secs in 0u64..=MAX_DATE_SECS, now_secs in 0u64..=MAX_DATE_SECS) {
        let at = UNIX_EPOCH + Duration::from_secs(secs);
        let v = RetryAfter::Date(at).to_header_value();
        prop_assert_eq!(RetryAfter::parse(&v).unwrap(), RetryAfter::Date(at));
        let now = UNIX_EPOCH + Duration::from_secs(now_secs);
        prop_assert_eq!(
            decode_retry_after(&v, now).unwrap(),
            Duration::from_secs(secs.saturating_sub(now_secs))
        );
    }

    #[test]
    fn retry_after_dates_out_of_range_are_clamped(secs in any::<u64>()) {
        let at = UNIX_EPOCH.checked_add(Duration::from_secs(secs)).unwrap_or(UNIX_EPOCH);
        let v = RetryAfter::Date(at).to_header_value();
        prop_assert!(RetryAfter::parse(&v).is_ok());
    }

    #[test]
    fn pushback_round_trips_rounding_up(ms in any::<u64>(), d in any_duration()) {
        let exact = Duration::from_millis(ms);
        prop_assert_eq!(decode_grpc_retry_pushback(encode_grpc_retry_pushback(exact)).unwrap(), exact);
        let back = decode_grpc_retry_pushback(encode_grpc_retry_pushback(d)).unwrap();
        prop_assert!(back >= d || back == Duration::from_millis(u64::MAX));
        prop_assert!(back - d.min(back) < Duration::from_millis(1));
    }

    #[test]
    fn negative_pushback_means_do_not_retry(n in 1u64..=u64::MAX) {
        let err = decode_grpc_retry_pushback(format!("-{n}")).unwrap_err();
        prop_assert_eq!(err.problem(), HeaderProblem::Negative);
    }

    #[test]
    fn grpc_status_round_trips(n in 0u32..17) {
        let code = GrpcCode::from_u32(n);
        prop_assert_eq!(code.as_u32(), n);
        prop_assert_eq!(decode_grpc_status(code.to_header_value()).unwrap(), code);
    }

    /// No decoder panics on any bytes at all.
    #[test]
    fn decoders_never_panic(bytes in any_bytes(), now_secs in any::<u64>()) {
        let now = UNIX_EPOCH.checked_add(Duration::from_secs(now_secs)).unwrap_or(UNIX_EPOCH);
        let _ = decode_grpc_timeout(&bytes);
        let _ = decode_timeout_ms(&bytes);
        let _ = RetryAfter::parse(&bytes).map(|r| (r.delay_from(now), r.to_header_value()));
        let _ = decode_retry_after(&bytes, now);
        let _ = decode_grpc_retry_pushback(&bytes);
        let _ = decode_grpc_status(&bytes);
    }

    /// Classifiers never panic on malformed `Retry-After`, `grpc-status` or pushback headers.
    #[test]
    fn classifiers_never_panic(bytes in any_bytes(), status in 100u16..1000) {
        let Ok(value) = HeaderValue::from_bytes(&bytes) else { return Ok(()) };
        let http = HttpClassifier::builder().wall_clock(WallClock::new(now)).build().unwrap();
        let grpc = GrpcClassifier::new();
        for name in [RETRY_AFTER, GRPC_STATUS, GRPC_RETRY_PUSHBACK_MS] {
            let res: Result<Response<()>, BoxError> = Ok(Response::builder()
                .status(status)
                .header("content-type", "application/grpc")
                .header(name.clone(), value.clone())
                .body(())
                .unwrap());
            let _ = http.classify(&res);
            let _ = grpc.classify(&res);
            let mut trailers = http::HeaderMap::new();
            trailers.insert(name, value.clone());
            let _ = grpc.classify_trailers(&trailers);
        }
    }
}

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

/// Bytes shaped like a timeout, and its near misses: a sign, 0 to 10 digits (sometimes
/// non-ASCII ones), spaces, a unit that may be missing, lowercase or unknown.
fn timeoutish() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::sample::select(vec![&b""[..], b"", b"", b"+", b"-", b" "]),
        prop::collection::vec(prop::sample::select(b"0123456789".to_vec()), 0..=10),
        prop::sample::select(vec![
            &b"H"[..],
            b"M",
            b"S",
            b"m",
            b"u",
            b"n",
            b"",
            b"s",
            b"h",
            b"x",
            b" ",
            b"S ",
            b"\xd9\xa1",
        ]),
        prop::option::of((
            0usize..12,
            prop::sample::select(vec![&b" "[..], b"\t", b"\xc2\xa0"]),
        )),
    )
        .prop_map(|(sign, digits, unit, inject)| {
            let mut v = sign.to_vec();
            v.extend(digits);
            if let Some((at, junk)) = inject {
                let at = at.min(v.len());
                v.splice(at..at, junk.iter().copied());
            }
            v.extend_from_slice(unit);
            v
        })
}

/// Well-formed values: a `grpc-timeout` (1 to 8 digits and a unit) or whole milliseconds (1 to
/// 20 digits, which may overflow `u64`).
fn well_formed() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        (
            1u32..=8,
            any::<u64>(),
            prop::sample::select(b"HMSmun".to_vec())
        )
            .prop_map(|(digits, n, unit)| format!(
                "{}{}",
                n % 10u64.pow(digits),
                char::from(unit)
            )
            .into_bytes()),
        (1u32..=20, any::<u64>()).prop_map(|(digits, n)| {
            let n = if digits < 20 {
                n % 10u64.pow(digits)
            } else {
                n
            };
            n.to_string().into_bytes()
        }),
    ]
}

/// The gRPC spec's `grpc-timeout`, independently of the codec: 1 to 8 ASCII digits and one of
/// `H M S m u n`.
fn spec_grpc_timeout(v: &[u8]) -> Option<Duration> {
    let (&unit, digits) = v.split_last()?;
    let nanos: u64 = match unit {
        b'H' => 3_600_000_000_000,
        b'M' => 60_000_000_000,
        b'S' => 1_000_000_000,
        b'm' => 1_000_000,
        b'u' => 1_000,
        b'n' => 1,
        _ => return None,
    };
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    let total = u128::from(n) * u128::from(nanos);
    Some(Duration::new(
        (total / 1_000_000_000) as u64,
        (total % 1_000_000_000) as u32,
    ))
}

/// Whole milliseconds: ASCII digits that fit a `u64`, optional spaces or tabs around them.
fn spec_timeout_ms(v: &[u8]) -> Option<Duration> {
    let s = std::str::from_utf8(v).ok()?.trim_matches([' ', '\t']);
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<u64>().ok().map(Duration::from_millis)
}

/// The deadline property, over arbitrary header bytes, on a paused clock: for every value of
/// `grpc-timeout` (gRPC request) or `x-request-timeout-ms` (plain or gRPC request), the server
/// either rejects it (gRPC `INTERNAL`, plain `400`, handler never called) or runs the handler
/// under a deadline no later than the sender's and cuts it off by then; it never runs it
/// unbounded. With the lenient opt-in a malformed value is served without a deadline (the
/// documented trade-off), and a valid one exactly as by default.
#[test]
fn server_enforces_no_later_than_the_sender_or_rejects() {
    const ONE_YEAR: Duration = Duration::from_secs(365 * 86_400);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 2_000,
        ..ProptestConfig::default()
    });
    let cases = (
        prop_oneof![any_bytes(), timeoutish(), well_formed()],
        0usize..3,
        any::<bool>(),
    );
    let (rejected, enforced) = (Cell::new(0u32), Cell::new(0u32));
    runner
        .run(&cases, |(bytes, which, lenient)| {
            let Ok(value) = HeaderValue::from_bytes(&bytes) else {
                return Ok(());
            };
            // 0: grpc-timeout on gRPC; 1: the ms header on plain HTTP; 2: the ms header on gRPC.
            let grpc = which != 1;
            let sender = if which == 0 {
                spec_grpc_timeout(&bytes)
            } else {
                spec_timeout_ms(&bytes)
            };
            let seen: Arc<Mutex<Option<Option<Deadline>>>> = Arc::default();
            let s = seen.clone();
            let layer = DeadlineServerLayer::builder()
                .on_malformed(if lenient {
                    MalformedDeadline::Ignore
                } else {
                    MalformedDeadline::Reject
                })
                .build()
                .unwrap();
            let svc = layer.layer(service_fn(move |_req: Request<()>| {
                *s.lock().unwrap() = Some(Deadline::current());
                // A handler that never finishes on its own.
                std::future::pending::<Result<Response<()>, BoxError>>()
            }));
            let mut req = Request::builder();
            if grpc {
                req = req.header("content-type", "application/grpc");
            }
            let name = if which == 0 {
                GRPC_TIMEOUT
            } else {
                REQUEST_TIMEOUT_MS
            };
            let req = req.header(name, value).body(()).unwrap();

            let (answer, start, end) = rt.block_on(async {
                let start = tokio::time::Instant::now();
                let answer = tokio::time::timeout(ONE_YEAR, svc.oneshot(req)).await;
                (answer, start, tokio::time::Instant::now())
            });
            let seen = *seen.lock().unwrap();
            match sender {
                None if !lenient => {
                    rejected.set(rejected.get() + 1);
                    let res = answer.expect("a rejection is immediate").unwrap();
                    prop_assert!(seen.is_none(), "the handler ran for {bytes:?}");
                    prop_assert_eq!(end, start);
                    if grpc {
                        prop_assert_eq!(res.status(), 200);
                        prop_assert_eq!(&res.headers()[GRPC_STATUS], "13");
                    } else {
                        prop_assert_eq!(res.status(), 400);
                    }
                }
                None => {
                    // Lenient: served as if the header were absent.
                    prop_assert_eq!(seen, Some(None));
                    prop_assert!(answer.is_err());
                }
                Some(t) => {
                    enforced.set(enforced.get() + 1);
                    let bound = start + t.min(MAX_TIMEOUT);
                    if t.is_zero() {
                        // Expired on arrival: answered without calling the handler.
                        prop_assert!(seen.is_none());
                    } else {
                        let deadline = seen.flatten();
                        prop_assert!(deadline.is_some(), "no deadline for {bytes:?}");
                        prop_assert!(deadline.unwrap().instant() <= bound, "{bytes:?}");
                    }
                    if t <= ONE_YEAR {
                        // Cut off by the deadline (the timer has millisecond granularity).
                        let res = answer.expect("cut off by the deadline").unwrap();
                        prop_assert!(
                            end >= start + t && end <= start + t + Duration::from_millis(1)
                        );
                        if grpc {
                            prop_assert_eq!(&res.headers()[GRPC_STATUS], "4");
                        } else {
                            prop_assert_eq!(res.status(), 504);
                        }
                    }
                }
            }
            Ok(())
        })
        .unwrap();
    // Both branches were exercised substantially.
    let (rejected, enforced) = (rejected.get(), enforced.get());
    assert!(
        rejected > 300 && enforced > 300,
        "{rejected} rejected, {enforced} enforced"
    );
}
