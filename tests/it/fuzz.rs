//! Property-based fuzzing (proptest) of the two parsers that take outside
//! input: API response bodies and configuration files. Each property runs a
//! bounded number of cases (`PROPTEST_CASES` overrides it), so CI stays fast.
//! Properties: no panic; errors never quote a secret; a valid document
//! survives arbitrary extra fields, nulls and number/string swaps.

use contabo_rotator::config;
use contabo_rotator::contabo::models::{ApiClient, Credential, Envelope, ObjectStorage, User};
use proptest::prelude::*;
use secrecy::ExposeSecret;
use std::path::Path;

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

/// Arbitrary JSON values, a few levels deep.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::Bool),
        any::<i64>().prop_map(|n| serde_json::json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| serde_json::json!(f)),
        "\\PC{0,20}".prop_map(serde_json::Value::String),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
            prop::collection::btree_map("[a-zA-Z_]{1,12}", inner, 0..6)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A credential object whose fields are each replaced, at random, by an
/// arbitrary value, and with arbitrary extra fields.
fn credential_like() -> impl Strategy<Value = serde_json::Value> {
    let fields = [
        "tenantId",
        "customerId",
        "accessKey",
        "secretKey",
        "objectStorageId",
        "displayName",
        "region",
        "credentialId",
    ];
    (prop::collection::vec(json_value(), fields.len()), prop::collection::vec(any::<bool>(), fields.len()), json_value())
        .prop_map(move |(values, replace, extra)| {
            let mut object = serde_json::json!({
                "tenantId": "DE", "customerId": "54321", "accessKey": "AK", "secretKey": "fuzz-secret-value",
                "objectStorageId": "os", "displayName": "n", "region": "European Union", "credentialId": 12345
            });
            for ((field, value), r) in fields.iter().zip(values).zip(replace) {
                if r {
                    object[*field] = value;
                }
            }
            object["somethingNew"] = extra;
            object
        })
}

fn parse_all(bytes: &[u8]) {
    let _ = serde_json::from_slice::<Envelope<User>>(bytes);
    let _ = serde_json::from_slice::<Envelope<Credential>>(bytes);
    let _ = serde_json::from_slice::<Envelope<ObjectStorage>>(bytes);
    let _ = serde_json::from_slice::<Envelope<ApiClient>>(bytes);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn response_parsing_never_panics_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        parse_all(&bytes);
    }

    #[test]
    fn response_parsing_never_panics_on_json(value in json_value()) {
        parse_all(value.to_string().as_bytes());
        parse_all(serde_json::json!({"data": [value.clone()], "_pagination": value}).to_string().as_bytes());
    }

    #[test]
    fn credentials_with_odd_fields_parse_or_fail_cleanly(object in credential_like()) {
        let body = serde_json::json!({"data": [object.clone()], "_pagination": {"totalPages": 1}}).to_string();
        // A shape the lenient parser refuses is a plain error, no panic.
        if let Ok(envelope) = serde_json::from_str::<Envelope<Credential>>(&body) {
            let c = &envelope.data.unwrap()[0];
            if object["secretKey"] == "fuzz-secret-value" {
                prop_assert_eq!(c.secret_key.expose_secret(), "fuzz-secret-value");
            }
            let debug = format!("{:?}", c);
            prop_assert!(!debug.contains("fuzz-secret-value"));
        }
    }

    #[test]
    fn config_parsing_never_panics_on_text(text in "\\PC{0,400}") {
        let _ = config::load_from_str(&text, Path::new("/nonexistent/fuzz.toml"));
    }

    #[test]
    fn config_errors_never_quote_a_secret(
        key in "[a-z_]{1,12}",
        value in prop_oneof![Just("1".to_string()), Just("\"x\"".to_string()), Just("[1, 2]".to_string()), Just("{ a = 1 }".to_string()), Just("true".to_string())],
        table in prop::sample::select(vec!["api", "schedule", "state", "client_secret", "object_storage", "metrics"]),
    ) {
        let text = format!(
            "[api]\nclient_id = \"INT-1\"\nclient_secret = \"fuzz-client-secret\"\nusername = \"u\"\npassword = \"fuzz-password\"\n\
             [{table}]\n{key} = {value}\n"
        );
        if let Err(err) = config::load_from_str(&text, Path::new("/nonexistent/fuzz.toml")) {
            let shown = format!("{err} {err:?}");
            prop_assert!(!shown.contains("fuzz-client-secret") && !shown.contains("fuzz-password"), "{}", shown);
            prop_assert!(shown.contains("fuzz.toml"), "{}", shown);
        }
    }
}
