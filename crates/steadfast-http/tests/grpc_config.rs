//! gRPC service config (gRFC A6): the examples of A6 and of grpc's service-config doc as
//! fixtures, each validation rule, and the stacks over a real tonic `Channel` against a real
//! tonic server on 127.0.0.1. Real sockets need the real clock: every scenario is bounded
//! (10 s), and the assertions are on codes and counts, which hold at any speed, and on lower
//! bounds of elapsed time (a hedge is never sent before its delay).
#![cfg(feature = "tonic")]
#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::uri::PathAndQuery;
use steadfast_http::codec::GrpcCode;
use steadfast_http::grpc_config::{
    HedgingPolicy, MethodName, MethodPolicy, RetryPolicy, ServiceConfig, ServiceConfigLayer,
};
use steadfast_http::Problem;
use steadfast_layers::retry::{Backoff, Jitter};
use steadfast_layers::rng::SeededRng;
use support::grpc::{channel, serve, Hop, StringCodec, PATH};

use tonic::{Code, Status};
use tower::Layer;

// ---- Fixtures: gRFC A6 and doc/service_config.md ----

/// A6's retry policy example ("Retry Policy Capabilities"), in a service config.
const A6_RETRY: &str = r#"{
  "loadBalancingPolicy": "round_robin",
  "methodConfig": [{
    "name": [{"service": "EchoService", "method": "EchoMethod"}],
    "retryPolicy": {
      "maxAttempts": 4,
      "initialBackoff": ".1s",
      "maxBackoff": "1s",
      "backoffMultiplier": 2,
      "retryableStatusCodes": [
        "UNAVAILABLE"
      ]
    }
  }],
  "retryThrottling": {
    "maxTokens": 10,
    "tokenRatio": 0.1
  }
}"#;

/// A6's hedging policy examples ("Hedging Policy": every 500 ms, and all at once).
const A6_HEDGING: &str = r#"{
  "methodConfig": [{
    "name": [{"service": "EchoService"}],
    "hedgingPolicy": {
      "maxAttempts": 4,
      "hedgingDelay": ".5s",
      "nonFatalStatusCodes": [
        "UNAVAILABLE",
        "INTERNAL",
        "ABORTED"
      ]
    }
  }, {
    "name": [{"service": "EchoService2"}],
    "hedgingPolicy": {
      "maxAttempts": 4,
      "hedgingDelay": "0s",
      "nonFatalStatusCodes": [
        "UNAVAILABLE",
        "INTERNAL",
        "ABORTED"
      ]
    }
  }]
}"#;

/// doc/service_config.md's example, and its `MyService` name-matching example.
const DOC_EXAMPLE: &str = r#"{
  "loadBalancingConfig": [ { "round_robin": {} } ],
  "methodConfig": [
    {
      "name": [
        { "service": "foo", "method": "bar" },
        { "service": "baz" }
      ],
      "timeout": "1.000000001s"
    },
    { "name": [ { "service": "MyService" } ], "timeout": "2s" },
    { "name": [ { "service": "MyService", "method": "Foo" } ], "timeout": "3s" }
  ]
}"#;

#[test]
fn a6_retry_example_parses_into_its_policy_and_throttling() {
    let c = ServiceConfig::from_json(A6_RETRY).unwrap();
    assert_eq!(c.method_config.len(), 1);
    assert_eq!(
        c.method_config[0].name,
        [MethodName::method("EchoService", "EchoMethod")]
    );
    assert_eq!(c.method_config[0].timeout, None);
    let Some(MethodPolicy::Retry(r)) = &c.method_config[0].policy else {
        panic!("a retry policy")
    };
    assert_eq!(
        *r,
        retry(4, 100, 1000, 2.0, &[GrpcCode::Unavailable]),
        "maxAttempts 4, .1s to 1s, x2, UNAVAILABLE"
    );
    let t = c.retry_throttling.unwrap();
    assert_eq!((t.max_tokens, t.token_ratio), (10.0, 0.1));
    let layer = ServiceConfigLayer::new(&c).unwrap();
    assert_eq!(layer.routes(), 1);
    assert_eq!(layer.throttle().unwrap().tokens(), 10.0);
}

fn retry(n: u32, initial_ms: u64, max_ms: u64, mult: f64, codes: &[GrpcCode]) -> RetryPolicy {
    let c = ServiceConfig::from_json(&format!(
        r#"{{"methodConfig": [{{"name": [{{"service": "x.Y"}}], "retryPolicy": {{
        "maxAttempts": {n}, "initialBackoff": "{}s", "maxBackoff": "{}s",
        "backoffMultiplier": {mult}, "retryableStatusCodes": [{}]}}}}]}}"#,
        initial_ms as f64 / 1000.0,
        max_ms as f64 / 1000.0,
        codes
            .iter()
            .map(|c| format!("\"{}\"", c.label().to_uppercase()))
            .collect::<Vec<_>>()
            .join(",")
    ))
    .unwrap();
    match c.method_config[0].policy.clone() {
        Some(MethodPolicy::Retry(r)) => r,
        _ => unreachable!(),
    }
}

#[test]
fn a6_hedging_examples_parse_into_their_policies() {
    let c = ServiceConfig::from_json(A6_HEDGING).unwrap();
    let hedging = |i: usize| -> HedgingPolicy {
        match c.method_config[i].policy.clone() {
            Some(MethodPolicy::Hedging(h)) => h,
            other => panic!("a hedging policy, not {other:?}"),
        }
    };
    let codes = [GrpcCode::Unavailable, GrpcCode::Internal, GrpcCode::Aborted];
    let h = hedging(0);
    assert_eq!(h.max_attempts, 4);
    assert_eq!(h.hedging_delay, Duration::from_millis(500));
    assert_eq!(h.non_fatal_status_codes, codes);
    let h = hedging(1);
    assert_eq!(h.hedging_delay, Duration::ZERO, "all four at once");
    assert_eq!(h.non_fatal_status_codes, codes);
    assert!(c.retry_throttling.is_none());
    assert_eq!(ServiceConfigLayer::new(&c).unwrap().routes(), 2);
}

#[test]
fn the_service_config_docs_example_maps_names_by_a6s_rule() {
    let c = ServiceConfig::from_json(DOC_EXAMPLE).unwrap();
    let timeout = |s: &str, m: &str| c.method_config(s, m).map(|mc| mc.timeout.unwrap());
    let t = Some(Duration::new(1, 1));
    assert_eq!(timeout("foo", "bar"), t, "exact service and method");
    assert_eq!(timeout("baz", "anything"), t, "the whole service");
    assert_eq!(timeout("foo", "other"), None, "only foo/bar is named");
    // "For a request for MyService/Foo, we will use the second entry ... for MyService/Bar,
    // the first".
    assert_eq!(timeout("MyService", "Foo"), Some(Duration::from_secs(3)));
    assert_eq!(timeout("MyService", "Bar"), Some(Duration::from_secs(2)));
    // 4 routes: foo/bar, MyService/Foo, then baz and MyService.
    assert_eq!(ServiceConfigLayer::new(&c).unwrap().routes(), 4);
}

#[test]
fn the_default_entry_applies_to_every_method_no_other_entry_names() {
    for default in [
        r#"{}"#,
        r#"{"service": ""}"#,
        r#"{"service": "", "method": ""}"#,
    ] {
        let c = ServiceConfig::from_json(&format!(
            r#"{{"methodConfig": [{{"name": [{default}], "timeout": "5s"}},
                {{"name": [{{"service": "a.B"}}], "timeout": "1s"}}]}}"#
        ))
        .unwrap();
        let t = |s: &str, m: &str| c.method_config(s, m).unwrap().timeout.unwrap();
        assert_eq!(t("a.B", "C"), Duration::from_secs(1));
        assert_eq!(t("x.Y", "Z"), Duration::from_secs(5), "{default}");
        assert!(c.method_config[0].name[0].is_default());
    }
}

// ---- Validation: each rule, with the path of the field ----

/// A one-entry config whose retry policy has `field` set to `value` (raw JSON), or removed
/// when `value` is `None`.
fn with_retry_field(field: &str, value: Option<&str>) -> String {
    let mut fields = vec![
        ("maxAttempts", "3"),
        ("initialBackoff", "\"0.1s\""),
        ("maxBackoff", "\"1s\""),
        ("backoffMultiplier", "2"),
        ("retryableStatusCodes", "[\"UNAVAILABLE\"]"),
    ];
    fields.retain(|(f, _)| *f != field);
    if let Some(v) = value {
        fields.push((field, v));
    }
    let body = fields
        .iter()
        .map(|(f, v)| format!("\"{f}\": {v}"))
        .collect::<Vec<_>>()
        .join(", ");
    // Entry 0 is valid; the policy under test is entry 1, as the paths say.
    format!(
        r#"{{"methodConfig": [{{"name": [{{"service": "ok.Svc"}}]}},
            {{"name": [{{"service": "a.B"}}], "retryPolicy": {{{body}}}}}]}}"#
    )
}

fn retry_error(field: &str, value: Option<&str>) -> steadfast_http::ConfigError {
    ServiceConfig::from_json(&with_retry_field(field, value))
        .expect_err(&format!("{field} = {value:?} is invalid"))
}

#[test]
fn max_attempts_must_be_greater_than_one_and_is_capped_at_five() {
    for bad in ["1", "0", "-2", "2.5", "\"3\""] {
        let err = retry_error("maxAttempts", Some(bad));
        assert_eq!(
            err.path(),
            "methodConfig[1].retryPolicy.maxAttempts",
            "{bad}"
        );
    }
    assert_eq!(
        retry_error("maxAttempts", None).path(),
        "methodConfig[1].retryPolicy.maxAttempts"
    );
    for (given, kept) in [("2", 2), ("5", 5), ("6", 5), ("1000", 5)] {
        let c = ServiceConfig::from_json(&with_retry_field("maxAttempts", Some(given))).unwrap();
        let Some(MethodPolicy::Retry(r)) = &c.method_config[1].policy else {
            panic!()
        };
        assert_eq!(r.max_attempts, kept, "maxAttempts {given}");
    }
    // Hedging too.
    let hedge = |n: &str| {
        ServiceConfig::from_json(&format!(
            r#"{{"methodConfig": [{{"name": [{{"service": "a.B"}}], "hedgingPolicy": {{"maxAttempts": {n}}}}}]}}"#
        ))
    };
    assert_eq!(
        hedge("1").unwrap_err().path(),
        "methodConfig[0].hedgingPolicy.maxAttempts"
    );
    let Some(MethodPolicy::Hedging(h)) = hedge("9").unwrap().method_config[0].policy.clone() else {
        panic!()
    };
    assert_eq!(h.max_attempts, 5);
}

#[test]
fn backoffs_must_be_positive_proto_durations() {
    for field in ["initialBackoff", "maxBackoff"] {
        let path = format!("methodConfig[1].retryPolicy.{field}");
        let err = retry_error(field, Some("\"0s\""));
        assert_eq!((err.path(), err.problem()), (path.as_str(), &Problem::Zero));
        for bad in [
            "\"-1s\"",
            "\"1\"",
            "\"1ms\"",
            "1",
            "\"1.s\"",
            "\"s\"",
            "\"1.0000000001s\"",
        ] {
            assert_eq!(
                retry_error(field, Some(bad)).path(),
                path,
                "{field} = {bad}"
            );
        }
        assert_eq!(retry_error(field, None).path(), path, "{field} is required");
    }
    // ".1s", "0.1s", "1.000000001s" are all proto JSON durations.
    for (s, d) in [
        ("\".1s\"", Duration::from_millis(100)),
        ("\"0.25s\"", Duration::from_millis(250)),
        ("\"1.000000001s\"", Duration::new(1, 1)),
    ] {
        let c = ServiceConfig::from_json(&with_retry_field("initialBackoff", Some(s))).unwrap();
        let Some(MethodPolicy::Retry(r)) = &c.method_config[1].policy else {
            panic!()
        };
        assert_eq!(r.initial_backoff, d);
    }
}

#[test]
fn the_backoff_multiplier_must_be_positive() {
    for bad in ["0", "-1", "\"2\""] {
        assert_eq!(
            retry_error("backoffMultiplier", Some(bad)).path(),
            "methodConfig[1].retryPolicy.backoffMultiplier"
        );
    }
    assert!(ServiceConfig::from_json(&with_retry_field("backoffMultiplier", Some("0.5"))).is_ok());
}

#[test]
fn retryable_status_codes_must_be_a_non_empty_list_of_codes() {
    let path = "methodConfig[1].retryPolicy.retryableStatusCodes";
    assert_eq!(retry_error("retryableStatusCodes", Some("[]")).path(), path);
    assert_eq!(retry_error("retryableStatusCodes", None).path(), path);
    assert_eq!(
        retry_error("retryableStatusCodes", Some("[\"UNAVAILABLE\", \"NOPE\"]")).path(),
        format!("{path}[1]")
    );
    assert_eq!(
        retry_error("retryableStatusCodes", Some("[17]")).path(),
        format!("{path}[0]")
    );
    // Names in any case, and numbers.
    let c = ServiceConfig::from_json(&with_retry_field(
        "retryableStatusCodes",
        Some("[\"unavailable\", 10, \"Deadline_Exceeded\", 14]"),
    ))
    .unwrap();
    let Some(MethodPolicy::Retry(r)) = &c.method_config[1].policy else {
        panic!()
    };
    assert_eq!(
        r.retryable_status_codes,
        [
            GrpcCode::Unavailable,
            GrpcCode::Aborted,
            GrpcCode::DeadlineExceeded
        ]
    );
}

#[test]
fn retry_and_hedging_policies_are_mutually_exclusive() {
    let err = ServiceConfig::from_json(
        r#"{"methodConfig": [{"name": [{"service": "a.B"}],
        "retryPolicy": {"maxAttempts": 2, "initialBackoff": "1s", "maxBackoff": "1s",
                        "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]},
        "hedgingPolicy": {"maxAttempts": 2}}]}"#,
    )
    .unwrap_err();
    assert_eq!(err.path(), "methodConfig[0].hedgingPolicy");
    assert!(matches!(err.problem(), Problem::Conflict(_)));
}

#[test]
fn retry_throttling_bounds() {
    let throttling = |tokens: &str, ratio: &str| {
        ServiceConfig::from_json(&format!(
            r#"{{"retryThrottling": {{"maxTokens": {tokens}, "tokenRatio": {ratio}}}}}"#
        ))
    };
    for bad in ["0", "-1", "1000.5", "1001"] {
        assert_eq!(
            throttling(bad, "0.1").unwrap_err().path(),
            "retryThrottling.maxTokens",
            "{bad}"
        );
    }
    assert!(throttling("1000", "0.1").is_ok());
    for bad in ["0", "-0.1", "0.0009"] {
        assert_eq!(
            throttling("10", bad).unwrap_err().path(),
            "retryThrottling.tokenRatio",
            "{bad}"
        );
    }
    // Three decimal places are kept, the rest truncated.
    let t = throttling("10", "0.1239")
        .unwrap()
        .retry_throttling
        .unwrap();
    assert_eq!(t.token_ratio, 0.123);
    let missing = ServiceConfig::from_json(r#"{"retryThrottling": {"maxTokens": 10}}"#);
    assert_eq!(missing.unwrap_err().path(), "retryThrottling.tokenRatio");
}

#[test]
fn names_are_unique_and_a_method_needs_its_service() {
    let err = ServiceConfig::from_json(
        r#"{"methodConfig": [{"name": [{"service": "a.B", "method": "C"}]},
                             {"name": [{"service": "x.Y"}, {"service": "a.B", "method": "C"}]}]}"#,
    )
    .unwrap_err();
    assert_eq!(err.path(), "methodConfig[1].name[1]");
    let err = ServiceConfig::from_json(
        r#"{"methodConfig": [{"name": [{"service": "a.B"}, {"service": "a.B"}]}]}"#,
    )
    .unwrap_err();
    assert_eq!(err.path(), "methodConfig[0].name[1]");
    let err = ServiceConfig::from_json(
        r#"{"methodConfig": [{"name": [{}]}, {"name": [{"service": ""}]}]}"#,
    )
    .unwrap_err();
    assert_eq!(err.path(), "methodConfig[1].name[0]", "one default entry");
    let err =
        ServiceConfig::from_json(r#"{"methodConfig": [{"name": [{"method": "C"}]}]}"#).unwrap_err();
    assert_eq!(err.path(), "methodConfig[0].name[0].method");
    let err = ServiceConfig::from_json(r#"{"methodConfig": [{"name": []}]}"#).unwrap_err();
    assert_eq!(err.path(), "methodConfig[0].name");
    // Same service, different methods: fine.
    assert!(ServiceConfig::from_json(
        r#"{"methodConfig": [{"name": [{"service": "a.B", "method": "C"}, {"service": "a.B", "method": "D"}, {"service": "a.B"}]}]}"#
    )
    .is_ok());
}

#[test]
fn malformed_json_and_wrong_types_are_config_errors() {
    assert_eq!(ServiceConfig::from_json("{").unwrap_err().path(), "json");
    assert_eq!(
        ServiceConfig::from_json(r#"{"methodConfig": {}}"#)
            .unwrap_err()
            .path(),
        "methodConfig"
    );
    assert_eq!(
        ServiceConfig::from_json(
            r#"{"methodConfig": [{"name": [{"service": "a.B"}], "timeout": 2}]}"#
        )
        .unwrap_err()
        .path(),
        "methodConfig[0].timeout"
    );
    // Unknown fields are ignored, as gRPC does.
    assert!(ServiceConfig::from_json(r#"{"waitForReady": true, "methodConfig": [{"name": [{"service": "a.B"}], "waitForReady": true}]}"#).is_ok());
}

#[test]
fn what_steadfast_cannot_build_is_a_config_error_at_the_field() {
    let c = ServiceConfig::from_json(&with_retry_field("backoffMultiplier", Some("0.5"))).unwrap();
    assert_eq!(
        ServiceConfigLayer::new(&c).unwrap_err().path(),
        "methodConfig[1].retryPolicy.backoffMultiplier"
    );
    let c = ServiceConfig::from_json(&with_retry_field("maxBackoff", Some("\"100000s\""))).unwrap();
    assert_eq!(
        ServiceConfigLayer::new(&c).unwrap_err().path(),
        "methodConfig[1].retryPolicy.maxBackoff"
    );
    let c = ServiceConfig::from_json(
        r#"{"methodConfig": [{"name": [{"service": "a.B"}], "hedgingPolicy": {"maxAttempts": 2, "hedgingDelay": "7200s"}}]}"#,
    )
    .unwrap();
    assert_eq!(
        ServiceConfigLayer::new(&c).unwrap_err().path(),
        "methodConfig[0].hedgingPolicy.hedgingDelay"
    );
    let c = ServiceConfig::from_json(
        r#"{"methodConfig": [{"name": [{"service": "a.B"}], "timeout": "0s"}]}"#,
    )
    .unwrap();
    assert_eq!(
        ServiceConfigLayer::new(&c).unwrap_err().path(),
        "methodConfig[0].timeout"
    );
}

/// A6: retry `n` waits `random(0, min(initialBackoff * backoffMultiplier^(n-1), maxBackoff))`.
/// steadfast's exponential backoff with full jitter, as the stacks configure it, draws from
/// exactly that range (never above the bound, and across the range).
#[test]
fn steadfasts_backoff_is_a6s_full_jitter() {
    let (initial, max, mult) = (Duration::from_millis(100), Duration::from_secs(1), 2.0);
    let b = Backoff::exponential(initial, max)
        .multiplier(mult)
        .jitter(Jitter::Full);
    for n in 1..=6u32 {
        let bound = (initial.as_secs_f64() * mult.powi(n as i32 - 1)).min(max.as_secs_f64());
        let rng = SeededRng::new(u64::from(n));
        let draws: Vec<f64> = (0..2000)
            .map(|_| b.delay(n, Duration::ZERO, &rng).as_secs_f64())
            .collect();
        let hi = draws.iter().cloned().fold(0.0, f64::max);
        let lo = draws.iter().cloned().fold(f64::MAX, f64::min);
        assert!(hi <= bound, "retry {n}: {hi} > {bound}");
        assert!(
            hi > bound * 0.99 && lo < bound * 0.01,
            "retry {n}: [{lo}, {hi}] covers [0, {bound})"
        );
    }
}

// ---- End to end: a real tonic server on 127.0.0.1 ----

async fn call<S>(grpc: &mut tonic::client::Grpc<S>, path: &'static str) -> Result<String, Status>
where
    S: tonic::client::GrpcService<tonic::body::Body>,
    S::Error: Into<tonic::codegen::StdError>,
    S::ResponseBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    <S::ResponseBody as http_body::Body>::Error: Into<tonic::codegen::StdError>,
{
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(e.into().to_string()))?;
    let res = grpc
        .unary(
            tonic::Request::new("hi".to_owned()),
            PathAndQuery::from_static(path),
            StringCodec,
        )
        .await?;
    Ok(res.into_inner())
}

async fn bounded<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), f)
        .await
        .expect("the scenario is bounded")
}

/// A server that answers each call with `answer(n)`, `n` counting calls from 0.
async fn counting_server(answer: fn(u32) -> Result<(), Code>) -> (SocketAddr, Arc<AtomicU32>) {
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let addr = serve(move |_req: tonic::Request<String>| {
        let n = c.fetch_add(1, Ordering::SeqCst);
        async move {
            match answer(n) {
                Ok(()) => Ok(tonic::Response::new(format!("answer {n}"))),
                Err(code) => Err(Status::new(code, format!("attempt {n}"))),
            }
        }
    })
    .await;
    (addr, calls)
}

fn config(json: &str) -> ServiceConfigLayer {
    ServiceConfigLayer::builder(&ServiceConfig::from_json(json).unwrap())
        .seed(7)
        .build()
        .unwrap()
}

const RETRY_UNAVAILABLE: &str = r#"{"methodConfig": [{
    "name": [{"service": "demo.Hop", "method": "Call"}], "timeout": "5s",
    "retryPolicy": {"maxAttempts": 3, "initialBackoff": "0.001s", "maxBackoff": "0.01s",
                    "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]}}]}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retryable_code_is_retried_up_to_max_attempts() {
    bounded(async {
        let (addr, calls) = counting_server(|_| Err(Code::Unavailable)).await;
        let mut grpc =
            tonic::client::Grpc::new(config(RETRY_UNAVAILABLE).layer(channel(addr).await));
        let status = call(&mut grpc, PATH).await.unwrap_err();
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(calls.load(Ordering::SeqCst), 3, "maxAttempts 3");

        // Succeeds on the third attempt.
        let (addr, calls) = counting_server(|n| {
            if n < 2 {
                Err(Code::Unavailable)
            } else {
                Ok(())
            }
        })
        .await;
        let mut grpc =
            tonic::client::Grpc::new(config(RETRY_UNAVAILABLE).layer(channel(addr).await));
        assert_eq!(call(&mut grpc, PATH).await.unwrap(), "answer 2");
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_not_listed_is_not_retried() {
    bounded(async {
        for code in [Code::Internal, Code::ResourceExhausted, Code::NotFound] {
            let (addr, calls) = counting_server(match code {
                Code::Internal => |_| Err(Code::Internal),
                Code::ResourceExhausted => |_| Err(Code::ResourceExhausted),
                _ => |_| Err(Code::NotFound),
            })
            .await;
            let mut grpc =
                tonic::client::Grpc::new(config(RETRY_UNAVAILABLE).layer(channel(addr).await));
            assert_eq!(call(&mut grpc, PATH).await.unwrap_err().code(), code);
            assert_eq!(
                calls.load(Ordering::SeqCst),
                1,
                "{code:?} is not in retryableStatusCodes"
            );
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn methods_without_an_entry_take_the_default_and_are_not_retried() {
    bounded(async {
        let (addr, calls) = counting_server(|_| Err(Code::Unavailable)).await;
        // The entry names another method of the service: demo.Hop/Call has no policy.
        let layer = config(
            r#"{"methodConfig": [{"name": [{"service": "demo.Hop", "method": "Other"}],
                "retryPolicy": {"maxAttempts": 5, "initialBackoff": "0.001s", "maxBackoff": "0.01s",
                "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]}}]}"#,
        );
        let mut grpc = tonic::client::Grpc::new(layer.layer(channel(addr).await));
        assert_eq!(
            call(&mut grpc, PATH).await.unwrap_err().code(),
            Code::Unavailable
        );
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hedge_is_sent_after_the_hedging_delay_and_the_first_answer_wins() {
    bounded(async {
        let calls = Arc::new(AtomicU32::new(0));
        let c = calls.clone();
        // The first attempt hangs; the hedge answers at once.
        let addr = serve(move |_req: tonic::Request<String>| {
            let n = c.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                }
                Ok(tonic::Response::new(format!("answer {n}")))
            }
        })
        .await;
        let layer = config(
            r#"{"methodConfig": [{"name": [{"service": "demo.Hop"}], "timeout": "8s",
                "hedgingPolicy": {"maxAttempts": 2, "hedgingDelay": "0.2s",
                                  "nonFatalStatusCodes": ["UNAVAILABLE"]}}]}"#,
        );
        let mut grpc = tonic::client::Grpc::new(layer.layer(channel(addr).await));
        let start = tokio::time::Instant::now();
        assert_eq!(
            call(&mut grpc, PATH).await.unwrap(),
            "answer 1",
            "the hedge won"
        );
        assert!(
            start.elapsed() >= Duration::from_millis(200),
            "no hedge before hedgingDelay: {:?}",
            start.elapsed()
        );
        assert_eq!(calls.load(Ordering::SeqCst), 2, "maxAttempts 2: one hedge");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_throttling_stops_retries_after_enough_failures() {
    bounded(async {
        let (addr, calls) = counting_server(|_| Err(Code::Unavailable)).await;
        // 4 tokens, retries allowed only while more than 2 remain.
        let layer = config(
            r#"{"methodConfig": [{"name": [{"service": "demo.Hop"}],
                "retryPolicy": {"maxAttempts": 5, "initialBackoff": "0.001s", "maxBackoff": "0.01s",
                "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]}}],
                "retryThrottling": {"maxTokens": 4, "tokenRatio": 0.5}}"#,
        );
        let bucket = layer.throttle().unwrap().clone();
        let mut grpc = tonic::client::Grpc::new(layer.layer(channel(addr).await));
        // Call 1: a failure (3 tokens left: retry), a failure (2 left: no more retries).
        assert_eq!(
            call(&mut grpc, PATH).await.unwrap_err().code(),
            Code::Unavailable
        );
        assert_eq!(
            calls.load(Ordering::SeqCst),
            2,
            "throttled after 2 of 5 attempts"
        );
        assert_eq!(bucket.tokens(), 2.0);
        // Call 2: one attempt, not retried (1 token left).
        assert_eq!(
            call(&mut grpc, PATH).await.unwrap_err().code(),
            Code::Unavailable
        );
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert_eq!(bucket.tokens(), 1.0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hedges_draw_on_and_feed_the_channels_throttling_bucket() {
    bounded(async {
        let (addr, calls) = counting_server(|_| Err(Code::Unavailable)).await;
        let layer = config(
            r#"{"methodConfig": [{"name": [{"service": "demo.Hop"}], "timeout": "8s",
                "hedgingPolicy": {"maxAttempts": 5, "hedgingDelay": "0.01s",
                                  "nonFatalStatusCodes": ["UNAVAILABLE"]}}],
                "retryThrottling": {"maxTokens": 2, "tokenRatio": 0.1}}"#,
        );
        let bucket = layer.throttle().unwrap().clone();
        let mut grpc = tonic::client::Grpc::new(layer.layer(channel(addr).await));
        // Each attempt fails with a non-fatal code and takes a token; hedges stop once one
        // token (half of 2) is left: at most two attempts, whatever the timing.
        assert_eq!(
            call(&mut grpc, PATH).await.unwrap_err().code(),
            Code::Unavailable
        );
        let sent = calls.load(Ordering::SeqCst);
        assert!((1..=2).contains(&sent), "{sent} attempts");
        assert!(
            bucket.tokens() <= 1.0,
            "every failure took a token: {}",
            bucket.tokens()
        );
        // Now throttled: the next call is sent once.
        assert_eq!(
            call(&mut grpc, PATH).await.unwrap_err().code(),
            Code::Unavailable
        );
        assert_eq!(calls.load(Ordering::SeqCst), sent + 1);
    })
    .await;
}

// ---- On a paused clock: a stand-in channel answering as a tonic server would ----

/// When each attempt arrived.
type Arrivals = Arc<std::sync::Mutex<Vec<tokio::time::Instant>>>;

/// A stand-in channel that notes when each attempt arrives, waits `delay`, then answers
/// Trailers-Only with `grpc-status: code`.
fn stand_in(
    delay: Duration,
    code: Code,
) -> (
    impl tower::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
            Error = std::convert::Infallible,
            Future = impl Send,
        > + Clone
        + Send,
    Arrivals,
) {
    let sent = Arc::new(std::sync::Mutex::new(Vec::new()));
    let s = sent.clone();
    let svc = tower::service_fn(move |_req: http::Request<tonic::body::Body>| {
        s.lock().unwrap().push(tokio::time::Instant::now());
        async move {
            tokio::time::sleep(delay).await;
            let res = http::Response::builder()
                .header("content-type", "application/grpc")
                .header("grpc-status", (code as i32).to_string())
                .body(tonic::body::Body::empty())
                .unwrap();
            Ok::<_, std::convert::Infallible>(res)
        }
    });
    (svc, sent)
}

/// A6's hedging example: "after 1ms there would be one outstanding RPC (the original), after
/// 501ms there would be two ..., after 1001ms three, and after 1501ms four".
#[tokio::test(start_paused = true)]
async fn hedges_leave_every_hedging_delay_as_a6s_example_says() {
    let (svc, sent) = stand_in(Duration::from_secs(60), Code::Ok);
    let c = ServiceConfig::from_json(A6_HEDGING).unwrap();
    let layer = ServiceConfigLayer::builder(&c)
        .default_timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(layer.layer(svc));
    let start = tokio::time::Instant::now();
    let status = call(&mut grpc, "/EchoService/Echo").await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    let offsets: Vec<Duration> = sent.lock().unwrap().iter().map(|t| *t - start).collect();
    assert_eq!(
        offsets,
        [0, 500, 1000, 1500].map(Duration::from_millis),
        "the original, then a hedge every 500 ms up to maxAttempts 4"
    );
}

/// A6: "the n-th attempt will occur at random(0, min(initialBackoff*backoffMultiplier**(n-1),
/// maxBackoff))" after the previous failure.
#[tokio::test(start_paused = true)]
async fn retries_wait_within_a6s_backoff_bounds() {
    let (svc, sent) = stand_in(Duration::ZERO, Code::Unavailable);
    let c = ServiceConfig::from_json(
        r#"{"methodConfig": [{"name": [{"service": "demo.Hop"}], "timeout": "30s",
            "retryPolicy": {"maxAttempts": 5, "initialBackoff": "0.1s", "maxBackoff": "0.3s",
            "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]}}]}"#,
    )
    .unwrap();
    for seed in 0..20 {
        sent.lock().unwrap().clear();
        let layer = ServiceConfigLayer::builder(&c).seed(seed).build().unwrap();
        let mut grpc = tonic::client::Grpc::new(layer.layer(svc.clone()));
        let status = call(&mut grpc, PATH).await.unwrap_err();
        assert_eq!(status.code(), Code::Unavailable);
        let sent = sent.lock().unwrap().clone();
        assert_eq!(sent.len(), 5, "maxAttempts 5");
        for (n, pair) in sent.windows(2).enumerate() {
            let bound = Duration::from_millis([100, 200, 300, 300][n]);
            let gap = pair[1] - pair[0];
            assert!(
                gap <= bound,
                "seed {seed}, retry {}: waited {gap:?} > {bound:?}",
                n + 1
            );
        }
    }
}

/// A broken connection is what a gRPC client reports as `UNAVAILABLE`: retried only when
/// `UNAVAILABLE` is a retryable code.
#[tokio::test(start_paused = true)]
async fn a_broken_connection_is_retried_only_when_unavailable_is_listed() {
    for (codes, attempts) in [("\"UNAVAILABLE\"", 3), ("\"ABORTED\"", 1)] {
        let sent = Arc::new(AtomicU32::new(0));
        let s = sent.clone();
        let broken = tower::service_fn(move |_req: http::Request<tonic::body::Body>| {
            s.fetch_add(1, Ordering::SeqCst);
            async {
                Err::<http::Response<tonic::body::Body>, _>(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "connection reset",
                ))
            }
        });
        let layer = config(&format!(
            r#"{{"methodConfig": [{{"name": [{{"service": "demo.Hop"}}],
                "retryPolicy": {{"maxAttempts": 3, "initialBackoff": "0.01s", "maxBackoff": "0.1s",
                "backoffMultiplier": 2, "retryableStatusCodes": [{codes}]}}}}]}}"#
        ));
        let mut grpc = tonic::client::Grpc::new(layer.layer(broken));
        assert!(call(&mut grpc, PATH).await.is_err());
        assert_eq!(
            sent.load(Ordering::SeqCst),
            attempts,
            "retryable codes {codes}"
        );
    }
}

// ---- gRPC A6's hedging rules, on a paused clock: the `demo.Hop` service in process ----

/// How an attempt ended, as the stand-in server saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    Running,
    Answered,
    /// Dropped before answering: cancelled.
    Dropped,
}

/// When each attempt arrived, and how it ended.
type Attempts = Arc<std::sync::Mutex<Vec<(tokio::time::Instant, Arc<std::sync::Mutex<End>>)>>>;

/// The `n`-th attempt's answer: after `ms` milliseconds, `"answer n"`, or a status with an
/// optional `grpc-retry-pushback-ms`.
type Script = fn(usize) -> (u64, Result<(), (Code, Option<&'static str>)>);

/// Marks the attempt dropped unless it answered.
struct EndGuard(Arc<std::sync::Mutex<End>>);

impl Drop for EndGuard {
    fn drop(&mut self) {
        let mut end = self.0.lock().unwrap();
        if *end == End::Running {
            *end = End::Dropped;
        }
    }
}

/// A stand-in channel: the real `demo.Hop` tonic service, in process, answering `script`.
fn scripted(
    script: Script,
) -> (
    impl tower::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
            Error = std::convert::Infallible,
            Future = impl Send,
        > + Clone
        + Send,
    Attempts,
) {
    let attempts: Attempts = Arc::default();
    let a = attempts.clone();
    let handler = move |_req: tonic::Request<String>| {
        let end = Arc::new(std::sync::Mutex::new(End::Running));
        let n = {
            let mut a = a.lock().unwrap();
            a.push((tokio::time::Instant::now(), end.clone()));
            a.len() - 1
        };
        let (ms, answer) = script(n);
        async move {
            let guard = EndGuard(end);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            *guard.0.lock().unwrap() = End::Answered;
            match answer {
                Ok(()) => Ok(tonic::Response::new(format!("answer {n}"))),
                Err((code, pushback)) => {
                    let mut md = tonic::metadata::MetadataMap::new();
                    if let Some(p) = pushback {
                        md.insert("grpc-retry-pushback-ms", p.parse().unwrap());
                    }
                    Err(Status::with_metadata(code, format!("attempt {n}"), md))
                }
            }
        }
    };
    (Hop { handler }, attempts)
}

/// A hedging config for `demo.Hop`: `maxAttempts` 3, `hedgingDelay` `delay`, `UNAVAILABLE`
/// non-fatal.
fn hedging(delay: &str) -> ServiceConfigLayer {
    config(&format!(
        r#"{{"methodConfig": [{{"name": [{{"service": "demo.Hop"}}], "timeout": "30s",
            "hedgingPolicy": {{"maxAttempts": 3, "hedgingDelay": "{delay}",
                               "nonFatalStatusCodes": ["UNAVAILABLE"]}}}}]}}"#
    ))
}

/// Arrival offsets from `start`, and ends, of the attempts so far.
fn seen(attempts: &Attempts, start: tokio::time::Instant) -> (Vec<Duration>, Vec<End>) {
    let a = attempts.lock().unwrap();
    (
        a.iter().map(|(t, _)| *t - start).collect(),
        a.iter().map(|(_, e)| *e.lock().unwrap()).collect(),
    )
}

fn millis<const N: usize>(ms: [u64; N]) -> Vec<Duration> {
    ms.map(Duration::from_millis).to_vec()
}

/// A6: "If a fatal status code is received from a hedged request, ... the RPC is committed":
/// returned at once, the other attempts cancelled, no further hedge.
#[tokio::test(start_paused = true)]
async fn a6_a_fatal_status_ends_a_hedged_call_at_once_and_cancels_the_others() {
    // The original would answer at 10 s; the first hedge (100 ms) fails INTERNAL at 150 ms.
    let (svc, attempts) = scripted(|n| match n {
        0 => (10_000, Ok(())),
        1 => (50, Err((Code::Internal, None))),
        _ => (10, Ok(())),
    });
    let mut grpc = tonic::client::Grpc::new(hedging("0.1s").layer(svc));
    let start = tokio::time::Instant::now();
    let status = call(&mut grpc, PATH).await.unwrap_err();
    assert_eq!(status.code(), Code::Internal, "{status:?}");
    assert_eq!(start.elapsed(), Duration::from_millis(150));
    assert_eq!(
        seen(&attempts, start),
        (millis([0, 100]), vec![End::Dropped, End::Answered]),
        "the original cancelled"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        attempts.lock().unwrap().len(),
        2,
        "no hedge after a fatal status"
    );
}

/// A6: "If a non-fatal status code is received from a hedged request, then the next hedged
/// request in line is sent immediately, shortcutting its hedging delay."
#[tokio::test(start_paused = true)]
async fn a6_a_non_fatal_status_sends_the_next_hedge_at_once() {
    let (svc, attempts) = scripted(|n| match n {
        0 => (10, Err((Code::Unavailable, None))),
        1 => (10_000, Ok(())),
        _ => (20, Ok(())),
    });
    let mut grpc = tonic::client::Grpc::new(hedging("1s").layer(svc));
    let start = tokio::time::Instant::now();
    assert_eq!(call(&mut grpc, PATH).await.unwrap(), "answer 2");
    assert_eq!(start.elapsed(), Duration::from_millis(1030));
    assert_eq!(
        seen(&attempts, start),
        (
            millis([0, 10, 1010]),
            vec![End::Answered, End::Dropped, End::Answered]
        ),
        "the first hedge at 10 ms, not 1 s; the second one hedgingDelay after it"
    );
}

/// A6 pushback: a non-negative `grpc-retry-pushback-ms` sends the next hedge that many
/// milliseconds later; a negative or malformed one stops hedging (the attempts in flight go on).
#[tokio::test(start_paused = true)]
async fn a6_server_pushback_delays_or_stops_the_next_hedge() {
    let (svc, attempts) = scripted(|n| match n {
        0 => (10_000, Ok(())),
        1 => (10, Err((Code::Unavailable, Some("250")))),
        _ => (10, Ok(())),
    });
    let mut grpc = tonic::client::Grpc::new(hedging("0.1s").layer(svc));
    let start = tokio::time::Instant::now();
    assert_eq!(call(&mut grpc, PATH).await.unwrap(), "answer 2");
    assert_eq!(
        seen(&attempts, start).0,
        millis([0, 100, 360]),
        "the second hedge 250 ms after the pushback (110 ms), not at 200 ms"
    );

    for pushback in ["-1", "soon"] {
        let script: Script = match pushback {
            "-1" => |n| match n {
                0 => (10_000, Ok(())),
                _ => (10, Err((Code::Unavailable, Some("-1")))),
            },
            _ => |n| match n {
                0 => (10_000, Ok(())),
                _ => (10, Err((Code::Unavailable, Some("soon")))),
            },
        };
        let (svc, attempts) = scripted(script);
        let mut grpc = tonic::client::Grpc::new(hedging("0.1s").layer(svc));
        let start = tokio::time::Instant::now();
        assert_eq!(call(&mut grpc, PATH).await.unwrap(), "answer 0");
        assert_eq!(start.elapsed(), Duration::from_secs(10));
        assert_eq!(
            seen(&attempts, start).0,
            millis([0, 100]),
            "pushback {pushback}: no hedge after it, the original answers"
        );
    }
}

/// A6 commits on a fatal status whatever pushback comes with it (the throttling bucket still
/// counts the pushback).
#[tokio::test(start_paused = true)]
async fn a6_a_fatal_status_with_pushback_still_ends_the_call() {
    let (svc, attempts) = scripted(|n| match n {
        0 => (10_000, Ok(())),
        _ => (50, Err((Code::Internal, Some("-1")))),
    });
    let mut grpc = tonic::client::Grpc::new(hedging("0.1s").layer(svc));
    let start = tokio::time::Instant::now();
    let status = call(&mut grpc, PATH).await.unwrap_err();
    assert_eq!(status.code(), Code::Internal, "{status:?}");
    assert_eq!(start.elapsed(), Duration::from_millis(150));
    assert_eq!(
        seen(&attempts, start).1,
        [End::Dropped, End::Answered],
        "the original cancelled"
    );
}

/// A pushback longer than the retry layer's 30 s cap still only delays the next hedge (the
/// deadline bounds it).
#[tokio::test(start_paused = true)]
async fn a6_a_long_pushback_delays_the_next_hedge() {
    let (svc, attempts) = scripted(|n| match n {
        0 => (90_000, Ok(())),
        1 => (10, Err((Code::Unavailable, Some("40000")))),
        _ => (10, Ok(())),
    });
    let layer = config(
        r#"{"methodConfig": [{"name": [{"service": "demo.Hop"}], "timeout": "100s",
            "hedgingPolicy": {"maxAttempts": 3, "hedgingDelay": "0.1s",
                              "nonFatalStatusCodes": ["UNAVAILABLE"]}}]}"#,
    );
    let mut grpc = tonic::client::Grpc::new(layer.layer(svc));
    let start = tokio::time::Instant::now();
    assert_eq!(call(&mut grpc, PATH).await.unwrap(), "answer 2");
    assert_eq!(seen(&attempts, start).0, millis([0, 100, 40_110]));
}
