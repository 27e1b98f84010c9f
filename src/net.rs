//! Network helpers shared by the API client and the webhook sink: what
//! counts as this machine, and how a failed request is described.

use url::{Host, Url};

/// `localhost`, 127.0.0.0/8 or ::1.
pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Domain(domain)) => domain.eq_ignore_ascii_case("localhost"),
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// What went wrong with an HTTP request that got no answer, without its
/// URL (which may carry a token), its source chain flattened.
pub fn transport_detail(err: reqwest::Error) -> String {
    let err = err.without_url();
    let mut detail = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(s) = source {
        let text = s.to_string();
        if !detail.contains(&text) {
            detail.push_str(": ");
            detail.push_str(&text);
        }
        source = s.source();
    }
    detail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for (url, want) in [
            ("http://localhost:8080/hook", true),
            ("http://LOCALHOST/hook", true),
            ("http://127.0.0.1/hook", true),
            ("http://127.9.9.9/hook", true),
            ("http://[::1]:9000/hook", true),
            ("http://128.0.0.1/hook", false),
            ("http://localhost.example.com/hook", false),
            ("http://hooks.example.com/hook", false),
        ] {
            assert_eq!(is_loopback(&Url::parse(url).unwrap()), want, "{url}");
        }
    }
}
