//! Property tests: every codec round-trips, rounds the documented way, and no decoder (nor a
//! classifier or server layer reading these headers) panics on any input.
#![allow(clippy::disallowed_types)] // SystemTime is an input of the Retry-After codec
#![allow(clippy::unwrap_used)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderValue, Request, Response};
use proptest::prelude::*;
use steadfast_http::classify::{GrpcClassifier, HttpClassifier, WallClock};
use steadfast_http::codec::*;
use steadfast_http::propagate::DeadlineServerLayer;
use steadfast_layers::classify::Classifier;
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

/// The server layer reads any `grpc-timeout` or `x-request-timeout-ms` without panicking, and
/// treats a malformed one as no deadline.
#[test]
fn server_layer_never_panics_on_deadline_headers() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 1_000,
        ..ProptestConfig::default()
    });
    runner
        .run(&(any_bytes(), any::<bool>()), |(bytes, grpc)| {
            let Ok(value) = HeaderValue::from_bytes(&bytes) else {
                return Ok(());
            };
            let svc = DeadlineServerLayer::new().layer(service_fn(|_req: Request<()>| async {
                Ok::<_, BoxError>(Response::new(()))
            }));
            let mut req = Request::builder();
            if grpc {
                req = req.header("content-type", "application/grpc");
            }
            let req = req
                .header(GRPC_TIMEOUT, value.clone())
                .header(REQUEST_TIMEOUT_MS, value)
                .body(())
                .unwrap();
            let res = rt.block_on(svc.oneshot(req)).unwrap();
            prop_assert!(res.status() == 200 || res.status() == 504);
            Ok(())
        })
        .unwrap();
}
