//! The example policy file (`examples/policies.toml`) through the facade: it parses, builds, and
//! its policies share their budget.
#![cfg(all(feature = "serde", feature = "http"))]
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use steadfast::net::config::{PolicySet, PolicySetConfig, RouteConfig};

const POLICIES: &str = include_str!("../examples/policies.toml");

#[test]
fn the_example_policy_file_parses_and_builds() {
    let set = PolicySet::from_toml_str(POLICIES).unwrap();
    assert_eq!(set.names().collect::<Vec<_>>(), ["payments", "search"]);
    let payments = set.policy("payments").unwrap();
    assert_eq!(payments.max_attempts(), 3);
    assert_eq!(payments.timeout(), Duration::from_secs(2));
    assert_eq!(set.policy("search").unwrap().max_attempts(), 2);
    // Both policies name `backend`: one Arc, held by the set and by each retry layer.
    assert_eq!(Arc::strong_count(set.budget("backend").unwrap()), 3);
    assert_eq!(set.routes().len(), 3);
    assert_eq!(set.fallback(), Some("search"));
    assert_eq!(set.route_layer().unwrap().len(), 3);
    assert!(matches!(
        &set.routes()[2],
        RouteConfig::Grpc { service, method: None, policy } if service == "shop.Payments" && policy == "payments"
    ));
    // The same file in JSON and YAML reads the same.
    let config = PolicySetConfig::from_toml_str(POLICIES).unwrap();
    let json = serde_json::to_string(&config).unwrap();
    assert_eq!(PolicySetConfig::from_json_str(&json).unwrap(), config);
    // And for gRPC.
    let grpc = config.build_grpc().unwrap();
    assert!(!grpc.policy("payments").unwrap().adds_idempotency_keys());
}

#[test]
fn a_mistake_in_the_example_file_names_its_field() {
    let broken = POLICIES.replace("max_attempts = 3", "max_attempts = 0");
    let err = PolicySet::from_toml_str(&broken).unwrap_err();
    assert_eq!(err.path(), "policies.payments.retry.max_attempts");
    let broken = POLICIES.replace("policy = \"search\"", "policy = \"serch\"");
    let err = PolicySet::from_toml_str(&broken).unwrap_err();
    assert_eq!(err.path(), "routes[1].policy");
    let broken = POLICIES.replace("attempt_timeout", "attempt_timout");
    let err = PolicySet::from_toml_str(&broken).unwrap_err();
    assert_eq!(err.path(), "policies.payments.attempt_timout");
}
