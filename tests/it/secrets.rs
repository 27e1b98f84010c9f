//! Formats every secret-bearing type with `{:?}`, `{:#?}` and (where it has
//! one) `{}`, and checks that no secret value appears.

use contabo_rotator::config;
use contabo_rotator::contabo::models::{ApiClient, Credential, GeneratedClientSecret};
use contabo_rotator::contabo::{ClientConfig, ContaboClient, LoginCredentials};
use contabo_rotator::inventory::CredentialEntry;
use contabo_rotator::sinks::webhook;
use contabo_simulator::{Simulator, SimulatorOptions};
use secrecy::SecretString;
use std::path::Path;

const SECRETS: &[&str] = &[
    "CS-9f2c-client-secret",
    "PW-77aa-api-password",
    "S3-1b2c-secret-key",
    "whsec_c2VjcmV0LXNpZ25pbmcta2V5LTEyMzQ1",
    "TOKEN-abc-access",
];

fn assert_clean(what: &str, text: &str) {
    for s in SECRETS {
        assert!(!text.contains(s), "{what} leaks a secret: {text}");
    }
}

#[tokio::test]
async fn no_secret_in_any_formatted_type() {
    let text = format!(
        r#"[api]
client_id = "INT-1"
client_secret = "{}"
username = "u@example.com"
password = "{}"
[[sinks]]
type = "webhook"
url = "https://hooks.example.com/x"
signing_secret = "{}"
"#,
        SECRETS[0], SECRETS[1], SECRETS[3]
    );
    let settings = config::load_from_str(&text, Path::new("/nonexistent/config.toml")).unwrap();
    assert_clean("Settings", &format!("{settings:?} {settings:#?}"));
    for sink in &settings.sinks {
        assert_clean("SinkSettings::describe", &sink.describe());
    }

    let creds = LoginCredentials {
        client_id: "INT-1".into(),
        client_secret: SecretString::from(SECRETS[0]),
        username: "u".into(),
        password: SecretString::from(SECRETS[1]),
    };
    let config = ClientConfig::new(
        "http://127.0.0.1:9".parse().unwrap(),
        "http://127.0.0.1:9/token".parse().unwrap(),
        creds.clone(),
    );
    assert_clean("LoginCredentials", &format!("{creds:?} {creds:#?}"));
    assert_clean("ClientConfig", &format!("{config:?} {config:#?}"));
    let _client = ContaboClient::new(config).unwrap();

    let cred: Credential = serde_json::from_str(&format!(
        r#"{{"accessKey":"AK","secretKey":"{}","credentialId":1}}"#,
        SECRETS[2]
    ))
    .unwrap();
    let api_client: ApiClient = serde_json::from_str(&format!(
        r#"{{"clientId":"INT-1","secret":"{}"}}"#,
        SECRETS[0]
    ))
    .unwrap();
    let generated: GeneratedClientSecret =
        serde_json::from_str(&format!(r#"{{"secret":"{}"}}"#, SECRETS[0])).unwrap();
    assert_clean("Credential", &format!("{cred:?} {cred:#?}"));
    assert_clean("ApiClient", &format!("{api_client:?} {api_client:#?}"));
    assert_clean("GeneratedClientSecret", &format!("{generated:?}"));

    let entry = CredentialEntry {
        user_id: "u".into(),
        user_email: "e".into(),
        object_storage_id: "o".into(),
        object_storage_name: "n".into(),
        region: "r".into(),
        s3_url: "https://s3".into(),
        credential_id: 1,
        access_key: "AK".into(),
        secret_key: SecretString::from(SECRETS[2]),
    };
    assert_clean("CredentialEntry", &format!("{entry:?} {entry:#?}"));

    let signer = webhook::Signer::new(&[SecretString::from(SECRETS[3])]).unwrap();
    assert_clean("webhook::Signer", &format!("{signer:?} {signer:#?}"));
    // The decoded key must not show either.
    assert!(!format!("{signer:?}").contains("secret-signing-key"));

    let sim = Simulator::start(SimulatorOptions {
        client_secret: SecretString::from(SECRETS[0]),
        password: SecretString::from(SECRETS[1]),
        ..SimulatorOptions::default()
    })
    .await
    .unwrap();
    let snapshot = sim.snapshot();
    assert_clean(
        "SimSnapshot",
        &format!("{snapshot:?} {snapshot:#?} {sim:?}"),
    );
    for issued in sim.issued_secrets() {
        assert_clean("issued secret Debug", &format!("{issued:?}"));
    }
}

#[test]
fn config_errors_do_not_quote_secret_lines() {
    let text = format!(
        "[api]\nclient_id = \"INT-1\"\nclient_secrett = \"{}\"\nusername = \"u\"\npassword = \"{}\"\n",
        SECRETS[0], SECRETS[1]
    );
    let err = config::load_from_str(&text, Path::new("config.toml")).unwrap_err();
    let shown = format!("{err} {err:?} {err:#}");
    assert!(shown.contains("client_secrett"), "{shown}");
    assert_clean("ConfigError", &shown);
}
