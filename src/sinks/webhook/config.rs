//! The settings of a `webhook` sink, and the checks the configuration
//! runs on them.

use std::fmt;
use std::time::Duration;

use secrecy::SecretString;
use url::Url;

/// `type = "webhook"`: signed events POSTed to a URL.
#[derive(Clone)]
pub struct WebhookSink {
    /// http or https; https or loopback when `include_secrets` is set.
    pub url: Url,
    /// Standard Webhooks keys (`whsec_<base64>`), never empty. Every key
    /// signs each event, so a receiver can move from one key to the next.
    pub signing_secrets: Vec<SecretString>,
    pub include_secrets: bool,
    /// 1 s to 10 min.
    pub timeout: Duration,
    /// Extra headers, sorted by name. Their values are secrets (tokens,
    /// API keys): exposed only where a request is built, and `Debug` shows
    /// the names only.
    pub headers: Vec<(String, SecretString)>,
    /// `ca_file`: trusted besides the system's roots.
    pub ca: Option<crate::tls::ExtraRoots>,
}

impl WebhookSink {
    /// Whether secret values may be sent to `url`: https, or a loopback
    /// host. The configuration refuses `include_secrets` otherwise; the
    /// sender checks again before every send.
    pub fn may_carry_secrets(&self) -> bool {
        self.url.scheme() == "https" || crate::net::is_loopback(&self.url)
    }

    /// `webhook <origin>/…`, as [`super::super::SinkSettings::describe`].
    pub fn describe(&self) -> String {
        format!("webhook {}", redacted_url(&self.url))
    }
}

impl fmt::Debug for WebhookSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let header_names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("WebhookSink")
            .field("url", &redacted_url(&self.url))
            .field("signing_secrets", &self.signing_secrets)
            .field("include_secrets", &self.include_secrets)
            .field("timeout", &self.timeout)
            .field("header_names", &header_names)
            .field("ca", &self.ca)
            .finish()
    }
}

/// The configuration's check of a webhook sink (its validation hook):
/// secrets may only go to https or to loopback.
pub fn check(url: &Url, include_secrets: bool) -> Result<(), crate::sinks::ConfigProblem> {
    if include_secrets && url.scheme() != "https" && !crate::net::is_loopback(url) {
        return Err(crate::sinks::ConfigProblem {
            key: "include_secrets",
            problem: "secrets may only be sent to an https URL or to loopback \
                      (localhost, 127.0.0.0/8, ::1)"
                .into(),
        });
    }
    Ok(())
}

/// `scheme://host[:port]`, plus `/…` when the URL has more than that.
pub(crate) fn redacted_url(url: &Url) -> String {
    let origin = url.origin().ascii_serialization();
    if url.path() == "/" && url.query().is_none() && url.fragment().is_none() {
        origin
    } else {
        format!("{origin}/…")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::SinkSettings;

    #[test]
    fn webhook_description_hides_path_and_query() {
        let sink = SinkSettings::Webhook(WebhookSink {
            url: Url::parse("https://hooks.example.com/services/T0/B0/tok3n?k=v").unwrap(),
            signing_secrets: vec![],
            include_secrets: false,
            timeout: Duration::from_secs(10),
            headers: vec![("Authorization".into(), SecretString::from("Bearer s3cr3t"))],
            ca: None,
        });
        assert_eq!(sink.describe(), "webhook https://hooks.example.com/…");
        let debug = format!("{sink:?}");
        assert!(
            !debug.contains("tok3n") && !debug.contains("s3cr3t"),
            "{debug}"
        );
        assert!(debug.contains("Authorization"), "{debug}");
    }
}
