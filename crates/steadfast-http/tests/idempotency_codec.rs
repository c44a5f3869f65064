//! The `Idempotency-Key` codec: round trips and no panic on arbitrary bytes.
#![allow(clippy::unwrap_used, missing_docs)]

use http::{HeaderMap, HeaderValue};
use proptest::prelude::*;
use steadfast_http::codec::idempotency_key::{
    validate, IdempotencyKey, InvalidIdempotencyKey, DEFAULT_MAX_LEN, IDEMPOTENCY_KEY,
};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Any non-empty printable-ASCII key within the limit survives encode then decode.
    #[test]
    fn round_trip(s in "[ -~]{1,255}") {
        let key = IdempotencyKey::new(s.clone()).unwrap();
        let encoded = key.encode();
        let back = IdempotencyKey::decode(encoded.as_bytes()).unwrap();
        prop_assert_eq!(back.as_str(), s.as_str());
        prop_assert_eq!(&back, &key);
        // Through a real header value too.
        let hv = key.to_header_value();
        prop_assert_eq!(IdempotencyKey::try_from(&hv).unwrap(), key);
        prop_assert_eq!(validate(encoded.as_bytes(), DEFAULT_MAX_LEN), Ok(s.len()));
    }

    /// Arbitrary bytes never panic; success implies a valid, re-encodable key; `validate`
    /// agrees with `decode`.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400), max in 1usize..300) {
        let decoded = IdempotencyKey::decode_with_max_len(&bytes, max);
        let validated = validate(&bytes, max);
        match &decoded {
            Ok(key) => {
                prop_assert!(!key.as_str().is_empty() && key.as_str().len() <= max);
                prop_assert!(key.as_str().bytes().all(|b| (0x20..=0x7e).contains(&b)));
                prop_assert_eq!(validated, Ok(key.as_str().len()));
                prop_assert_eq!(IdempotencyKey::decode_with_max_len(key.encode().as_bytes(), max).unwrap(), key.clone());
            }
            Err(e) => {
                prop_assert_eq!(validated, Err(*e));
                prop_assert!(!e.to_string().is_empty());
                prop_assert!(!e.label().is_empty());
            }
        }
    }

    /// Quoted strings made of the grammar's own pieces (escapes included) always parse.
    #[test]
    fn grammar_strings_parse(parts in proptest::collection::vec(prop_oneof![
        "[ !#-\\[\\]-~]".prop_map(|s: String| (s.clone(), s)),
        Just(("\\\"".to_owned(), "\"".to_owned())),
        Just(("\\\\".to_owned(), "\\".to_owned())),
    ], 1..60), lead in 0usize..3, trail in 0usize..3) {
        let wire: String = parts.iter().map(|(w, _)| w.as_str()).collect();
        let plain: String = parts.iter().map(|(_, p)| p.as_str()).collect();
        let field = format!("{}\"{wire}\"{}", " ".repeat(lead), " ".repeat(trail));
        let key = IdempotencyKey::decode(field.as_bytes()).unwrap();
        prop_assert_eq!(key.as_str(), plain.as_str());
    }

    /// Header maps with arbitrary header values: never a panic.
    #[test]
    fn header_maps_never_panic(values in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..80), 0..3)) {
        let mut headers = HeaderMap::new();
        for v in &values {
            if let Ok(v) = HeaderValue::from_bytes(v) {
                headers.append(IDEMPOTENCY_KEY, v);
            }
        }
        let n = headers.get_all(IDEMPOTENCY_KEY).iter().count();
        match IdempotencyKey::from_headers(&headers, DEFAULT_MAX_LEN) {
            Ok(None) => prop_assert_eq!(n, 0),
            Ok(Some(_)) => prop_assert_eq!(n, 1),
            Err(InvalidIdempotencyKey::Multiple) => prop_assert!(n > 1),
            Err(_) => prop_assert_eq!(n, 1),
        }
    }
}

#[test]
fn generated_keys_are_uuid_v7_strings() {
    let key = IdempotencyKey::generate();
    let uuid = uuid::Uuid::parse_str(key.as_str()).unwrap();
    assert_eq!(uuid.get_version_num(), 7);
    assert_eq!(
        IdempotencyKey::decode(key.encode().as_bytes()).unwrap(),
        key
    );
}

#[test]
fn length_limit_is_configurable() {
    let long = format!("\"{}\"", "k".repeat(300));
    assert_eq!(
        IdempotencyKey::decode(long.as_bytes()),
        Err(InvalidIdempotencyKey::TooLong {
            max_len: DEFAULT_MAX_LEN
        })
    );
    assert!(IdempotencyKey::decode_with_max_len(long.as_bytes(), 300).is_ok());
}
