#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use steadfast_layers::BoxError;
use tower::{service_fn, Layer, ServiceExt};

use super::*;
use crate::body::ReplayBody;

const FILE: &str = r#"
fallback = "search"

[budgets.backend]
ratio = 0.1
min_retries_per_sec = 5
ttl = "10s"

[policies.payments]
timeout = "2s"
attempt_timeout = "500ms"
retry = { max_attempts = 3, budget = "backend", backoff = { base = "50ms", cap = "1s" } }
breaker = { count_window = 20, minimum_calls = 10, break_duration = "5s" }
rate_limit = { requests = 100, per = "1s" }

[policies.search]
timeout = "800ms"
retry = { max_attempts = 2, budget = "backend" }
limit = { max_in_flight = 32 }
bulkhead = { max_concurrent = 8, max_queue = 8 }

[[routes]]
method = "POST"
path = "/payments/{id}"
policy = "payments"

[[routes]]
grpc = "shop.Search"
policy = "search"
"#;

#[test]
fn reads_toml_json_and_yaml_alike_and_round_trips() {
    let from_toml = PolicySetConfig::from_toml_str(FILE).unwrap();
    let json = serde_json::to_string(&from_toml).unwrap();
    assert_eq!(PolicySetConfig::from_json_str(&json).unwrap(), from_toml);
    let yaml = serde_norway::to_string(&from_toml).unwrap();
    assert_eq!(PolicySetConfig::from_yaml_str(&yaml).unwrap(), from_toml);
    let toml_again = toml::to_string(&from_toml).unwrap();
    assert_eq!(
        PolicySetConfig::from_toml_str(&toml_again).unwrap(),
        from_toml
    );

    let set = from_toml.build().unwrap();
    assert_eq!(set.names().collect::<Vec<_>>(), ["payments", "search"]);
    let payments = set.policy("payments").unwrap();
    assert_eq!(payments.max_attempts(), 3);
    assert_eq!(payments.timeout(), Duration::from_secs(2));
    assert_eq!(set.policy("search").unwrap().max_attempts(), 2);
    assert_eq!(
        set.routes(),
        [
            RouteConfig::Http {
                method: Some(http::Method::POST),
                path: "/payments/{id}".into(),
                policy: "payments".into()
            },
            RouteConfig::Grpc {
                service: "shop.Search".into(),
                method: None,
                policy: "search".into()
            }
        ]
    );
    let grpc = from_toml.build_grpc().unwrap();
    assert!(!grpc.policy("payments").unwrap().adds_idempotency_keys());
    // Pushback settings: HTTP's `Retry-After` is an HTTP setting only.
    let pushback = PolicySetConfig::from_toml_str(
        "[policies.p]\nhonor_retry_after = false\nmax_server_delay = \"5s\"",
    )
    .unwrap();
    pushback.build().unwrap();
    assert_eq!(
        pushback.build_grpc().unwrap_err().path(),
        "policies.p.honor_retry_after"
    );
}

#[test]
fn a_shared_budget_is_one_arc_for_every_policy_that_names_it() {
    let set = PolicySet::from_toml_str(FILE).unwrap();
    let budget = set.budget("backend").unwrap();
    // The set's own reference and one per retry layer that names it: the same allocation.
    assert_eq!(Arc::strong_count(budget), 3);
    assert_eq!(budget.ratio(), 0.1);
}

#[tokio::test(start_paused = true)]
async fn policies_sharing_a_budget_draw_from_it_together() {
    // A budget of exactly one retry (no deposits, a reserve of one per second over 1 s).
    let set = PolicySet::from_toml_str(
        r#"
        [budgets.one]
        ratio = 0.0
        min_retries_per_sec = 1
        ttl = "1s"
        [policies.a]
        retry = { max_attempts = 5, budget = "one", backoff = { constant = "1ms" } }
        [policies.b]
        retry = { max_attempts = 5, budget = "one", backoff = { constant = "1ms" } }
        "#,
    )
    .unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let peer = |calls: Arc<AtomicU32>| {
        service_fn(move |_req: Request<ReplayBody<Full<Bytes>>>| {
            calls.fetch_add(1, Ordering::SeqCst);
            async {
                Ok::<_, BoxError>(
                    Response::builder()
                        .status(503)
                        .body(Full::new(Bytes::new()))
                        .unwrap(),
                )
            }
        })
    };
    let get = || {
        Request::get("http://peer/")
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    let a = set.policy("a").unwrap().layer(peer(calls.clone()));
    let res = a.oneshot(get()).await.unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "one retry, then the budget is spent"
    );
    let b = set.policy("b").unwrap().layer(peer(calls.clone()));
    b.oneshot(get()).await.unwrap();
    assert_eq!(
        calls.load(Ordering::SeqCst),
        3,
        "policy b finds the shared budget spent: no retry"
    );
}

#[tokio::test(start_paused = true)]
async fn a_policy_with_every_layer_serves_a_call() {
    let set = PolicySet::from_toml_str(FILE).unwrap();
    let ok = service_fn(|_req: Request<ReplayBody<Full<Bytes>>>| async {
        Ok::<_, BoxError>(Response::new(Full::new(Bytes::from_static(b"ok"))))
    });
    for name in ["payments", "search"] {
        let svc = set.policy(name).unwrap().layer(ok);
        let res = svc
            .oneshot(
                Request::get("http://peer/")
                    .body(Full::new(Bytes::new()))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }
}

#[test]
fn defaults_are_the_presets() {
    let set = PolicySet::from_toml_str("[policies.plain]").unwrap();
    let plain = set.policy("plain").unwrap();
    let preset = crate::preset::StandardClientLayer::builder()
        .build()
        .unwrap();
    assert_eq!(plain.max_attempts(), preset.max_attempts());
    assert_eq!(plain.timeout(), preset.timeout());
    assert_eq!(
        plain.adds_idempotency_keys(),
        preset.adds_idempotency_keys()
    );
    assert_eq!(
        plain.retries_idempotent_only(),
        preset.retries_idempotent_only()
    );
    assert!(set.routes().is_empty());
}

#[test]
fn an_unknown_field_is_refused_with_its_path() {
    for (text, path) in [
        (
            "[policies.payments]\ntimeot = \"1s\"",
            "policies.payments.timeot",
        ),
        (
            "[policies.payments.retry]\nmax_atempts = 1",
            "policies.payments.retry.max_atempts",
        ),
        (
            "[policies.payments.retry.backoff]\nmax = \"1s\"",
            "policies.payments.retry.backoff.max",
        ),
        ("[policy.payments]", "policy"),
        (
            "[[routes]]\npath = \"/\"\npolicy = \"a\"\nverb = \"GET\"",
            "routes[0].verb",
        ),
    ] {
        let err = PolicySet::from_toml_str(text).unwrap_err();
        assert!(matches!(err, LoadError::Parse { .. }), "{text}: {err}");
        assert_eq!(err.path(), path, "{text}: {err}");
    }
    let err =
        PolicySet::from_json_str(r#"{"policies": {"a": {"breaker": {"windw": 1}}}}"#).unwrap_err();
    assert_eq!(err.path(), "policies.a.breaker.windw");
    let err = PolicySet::from_yaml_str("policies:\n  a:\n    limit:\n      max: 1\n").unwrap_err();
    assert_eq!(err.path(), "policies.a.limit.max");
    let err = PolicySet::from_toml_str("[policies.a]\ntimeout = \"soon\"").unwrap_err();
    assert_eq!(err.path(), "policies.a.timeout");
    assert!(err.to_string().contains("soon"), "{err}");
}

#[test]
fn an_invalid_value_is_refused_with_its_full_path() {
    for (text, path) in [
        (
            "[policies.payments.retry]\nmax_attempts = 0",
            "policies.payments.retry.max_attempts",
        ),
        (
            "[policies.payments]\nretry = { backoff = { base = \"2s\", cap = \"1s\" } }",
            "policies.payments.retry.backoff.base",
        ),
        (
            "[policies.payments]\nretry = { budget = \"nope\" }",
            "policies.payments.retry.budget",
        ),
        (
            "[policies.payments]\ntimeout = \"0s\"",
            "policies.payments.timeout",
        ),
        (
            "[policies.payments]\nattempt_timeout = \"0s\"",
            "policies.payments.attempt_timeout",
        ),
        (
            "[policies.p]\nbreaker = { break_duration = { base = \"2s\", cap = \"1s\" } }",
            "policies.p.breaker.break_duration.cap",
        ),
        ("[policies.p]\nlimit = { max_in_flight = 0 }", "policies.p.limit.max_in_flight"),
        (
            "[policies.p]\nbulkhead = { max_concurrent = 1, max_wait = \"0s\" }",
            "policies.p.bulkhead.max_wait",
        ),
        (
            "[policies.p]\nrate_limit = { requests = 0, per = \"1s\" }",
            "policies.p.rate_limit.requests",
        ),
        ("[budgets.b]\nttl = \"2m\"", "budgets.b.ttl"),
        (
            "[policies.p]\nmax_server_delay = \"2d\"",
            "policies.p.max_server_delay",
        ),
        (
            "[policies.p]\n[[routes]]\npath = \"/\"\npolicy = \"q\"",
            "routes[0].policy",
        ),
        (
            "[policies.p]\n[[routes]]\npath = \"/\"\npolicy = \"p\"\n[[routes]]\npath = \"x\"\npolicy = \"p\"",
            "routes[1].path",
        ),
        (
            "[policies.p]\n[[routes]]\ngrpc = \"pkg.Svc/A/B\"\npolicy = \"p\"",
            "routes[0].grpc",
        ),
        (
            "[policies.p]\n[[routes]]\ngrpc = \"pkg.Svc\"\nmethod = \"GET\"\npolicy = \"p\"",
            "routes[0].method",
        ),
        (
            "[policies.p]\n[[routes]]\npath = \"/\"\nmethod = \"G ET\"\npolicy = \"p\"",
            "routes[0].method",
        ),
        ("[policies.p]\n[[routes]]\npolicy = \"p\"", "routes[0].path"),
    ] {
        let err = PolicySet::from_toml_str(text).unwrap_err();
        assert!(matches!(err, LoadError::Invalid(_)), "{text}: {err}");
        assert_eq!(err.path(), path, "{text}: {err}");
    }
    let err = PolicySet::from_toml_str("[policies.payments.retry]\nmax_attempts = 0").unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid configuration: `policies.payments.retry.max_attempts` must not be zero"
    );
}

#[test]
fn malformed_text_is_a_parse_error_at_the_top() {
    let err = PolicySet::from_toml_str("[policies.a").unwrap_err();
    assert!(
        matches!(
            err,
            LoadError::Parse {
                format: Format::Toml,
                ..
            }
        ),
        "{err}"
    );
    let err = PolicySet::from_json_str("{\"policies\": {}} trailing").unwrap_err();
    assert!(
        matches!(
            err,
            LoadError::Parse {
                format: Format::Json,
                ..
            }
        ),
        "{err}"
    );
    let err = PolicySet::from_yaml_str("policies: [").unwrap_err();
    assert!(
        matches!(
            err,
            LoadError::Parse {
                format: Format::Yaml,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn routes_and_fallback_are_checked_with_the_routers_parser() {
    let file = |route: &str, fallback: &str| {
        PolicySet::from_toml_str(&format!(
            "{fallback}\n[policies.a]\n[[routes]]\n{route}\npolicy = \"a\""
        ))
    };
    let path_of = |r: Result<PolicySet, LoadError>| r.unwrap_err().path().to_owned();
    assert_eq!(path_of(file("path = \"/files/*/x\"", "")), "routes[0].path");
    assert_eq!(path_of(file("path = \"/a/{}\"", "")), "routes[0].path");
    assert_eq!(path_of(file("grpc = \"pkg..Svc\"", "")), "routes[0].grpc");
    assert_eq!(
        path_of(file("grpc = \"pkg.Svc/a.b\"", "")),
        "routes[0].grpc"
    );
    assert_eq!(
        path_of(file("path = \"/\"", "fallback = \"nope\"")),
        "fallback"
    );
    let set = file("path = \"/users/{id}/*\"", "fallback = \"a\"").unwrap();
    assert_eq!(set.fallback(), Some("a"));
    let m = set.routes()[0].to_match().unwrap();
    assert!(m.matches(&http::Method::GET, "/users/7/posts/1"));
    assert!(!m.matches(&http::Method::GET, "/users"));
}

#[tokio::test(start_paused = true)]
async fn two_routes_naming_one_policy_get_two_breakers() {
    let set = PolicySet::from_toml_str(
        r#"
        [policies.guarded]
        retry = { max_attempts = 1 }
        breaker = { consecutive_failures = 1, break_duration = "1m" }
        [[routes]]
        path = "/a"
        policy = "guarded"
        [[routes]]
        path = "/b"
        policy = "guarded"
        "#,
    )
    .unwrap();
    let sent = Arc::new(AtomicU32::new(0));
    let s = sent.clone();
    let transport = service_fn(move |_req: Request<ReplayBody<Full<Bytes>>>| {
        s.fetch_add(1, Ordering::SeqCst);
        async move {
            let mut res = Response::new(Full::new(Bytes::new()));
            *res.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
            Ok::<_, BoxError>(res)
        }
    });
    let router = set.route_layer().unwrap().layer(transport);
    let call = |path: &str| {
        router.clone().oneshot(
            Request::get(format!("http://peer{path}"))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
    };
    assert_eq!(call("/a").await.unwrap().status(), 500);
    assert!(call("/a").await.is_err(), "the breaker of /a is open");
    assert_eq!(sent.load(Ordering::SeqCst), 1);
    assert_eq!(call("/b").await.unwrap().status(), 500, "/b has its own");
    assert_eq!(sent.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn attempt_timeout_off_lets_an_attempt_use_the_whole_deadline() {
    let set = PolicySet::from_toml_str(
        r#"
        [policies.patient]
        timeout = "10s"
        attempt_timeout = "off"
        retry = { max_attempts = 1 }
        [policies.default]
        timeout = "10s"
        retry = { max_attempts = 1 }
        "#,
    )
    .unwrap();
    let slow = service_fn(|_req: Request<ReplayBody<Full<Bytes>>>| async {
        tokio::time::sleep(Duration::from_secs(5)).await;
        Ok::<_, BoxError>(Response::new(Full::new(Bytes::new())))
    });
    let get = || {
        Request::get("http://peer/")
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    let patient = set.policy("patient").unwrap().layer(slow);
    assert_eq!(patient.oneshot(get()).await.unwrap().status(), 200);
    // The preset's 3 s per attempt cuts the same call short.
    let default = set.policy("default").unwrap().layer(slow);
    assert!(default.oneshot(get()).await.is_err());
    // Written back as it was read.
    let config = PolicySetConfig::from_toml_str("[policies.p]\nattempt_timeout = \"off\"").unwrap();
    let json = serde_json::to_string(&config).unwrap();
    assert_eq!(json, r#"{"policies":{"p":{"attempt_timeout":"off"}}}"#);
    let err = PolicySet::from_toml_str("[policies.p]\nattempt_timeout = \"never\"").unwrap_err();
    assert_eq!(err.path(), "policies.p.attempt_timeout");
}

#[test]
fn from_path_reads_the_format_its_extension_names() {
    let dir = std::env::temp_dir().join(format!("steadfast-from-path-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = PolicySetConfig::from_toml_str(FILE).unwrap();
    let files = [
        ("p.toml", FILE.to_owned()),
        ("p.json", serde_json::to_string(&config).unwrap()),
        ("p.YML", serde_norway::to_string(&config).unwrap()),
    ];
    for (name, text) in &files {
        let file = dir.join(name);
        std::fs::write(&file, text).unwrap();
        assert_eq!(PolicySetConfig::from_path(&file).unwrap(), config, "{name}");
        assert!(PolicySet::from_path(&file)
            .unwrap()
            .policy("payments")
            .is_some());
    }
    // A mistake in the file: the field's path, as from a string.
    let broken = dir.join("broken.toml");
    std::fs::write(&broken, "[policies.a]\nretry = { max_attempts = 0 }").unwrap();
    assert_eq!(
        PolicySet::from_path(&broken).unwrap_err().path(),
        "policies.a.retry.max_attempts"
    );
    std::fs::remove_dir_all(&dir).unwrap();
    // A missing file: the path in the error.
    let missing = dir.join("p.toml");
    let err = PolicySet::from_path(&missing).unwrap_err();
    match &err {
        LoadError::Io { file, kind, .. } => {
            assert_eq!(file, &missing);
            assert_eq!(*kind, std::io::ErrorKind::NotFound);
        }
        other => panic!("{other:?}"),
    }
    assert!(
        err.to_string().contains(&*missing.to_string_lossy()),
        "{err}"
    );
    let err = PolicySet::from_path(dir.join("p.ini")).unwrap_err();
    assert!(matches!(err, LoadError::UnknownFormat { .. }), "{err}");
    let err = PolicySet::from_path(dir.join("noext")).unwrap_err();
    assert!(matches!(err, LoadError::UnknownFormat { .. }), "{err}");
}
