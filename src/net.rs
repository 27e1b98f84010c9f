//! Network helpers shared by every HTTP client (API and token, webhooks,
//! storage proofs): the builder they all start from, what counts as this
//! machine, which proxy a request goes through, and how a failed request
//! is described.

use hyper_util::client::proxy::matcher::Matcher;
use url::{Host, Url};

/// The builder every HTTP client of the rotator starts from: its user
/// agent, and proxies per [`ProxyRules`] (read from the environment now)
/// instead of reqwest's own, which would send loopback traffic through a
/// proxy too. The callers add their timeouts, redirect policy and TLS.
pub fn client_builder() -> reqwest::ClientBuilder {
    builder_with(ProxyRules::from_env())
}

fn builder_with(rules: ProxyRules) -> reqwest::ClientBuilder {
    // `no_proxy` drops reqwest's system proxy; the custom one is asked
    // for every connection, and `None` means "connect directly".
    #[allow(clippy::disallowed_methods)] // the one place that may call it
    let builder = reqwest::Client::builder();
    builder
        .user_agent(concat!("contabo-rotator/", env!("CARGO_PKG_VERSION")))
        .no_proxy()
        .proxy(reqwest::Proxy::custom(move |url| {
            rules.proxy_for(url).map(str::to_owned)
        }))
}

/// Which proxy a request goes through (docs/design.md §1.8): none for a
/// loopback host, whatever the environment says, so a client secret, an
/// API password or a webhook with `include_secrets` sent to this machine
/// never passes through a proxy. Other hosts follow the usual variables,
/// upper case first as reqwest and curl read them: `HTTP_PROXY` for
/// `http://`, `HTTPS_PROXY` for `https://`, `ALL_PROXY` for either when
/// its own is not set, and `NO_PROXY` (hosts, domains with their
/// subdomains, IP addresses and networks, `*`) for no proxy at all.
pub struct ProxyRules {
    /// The proxy for `http://` URLs, as written in the environment.
    http: Option<String>,
    /// The proxy for `https://` URLs, as written in the environment.
    https: Option<String>,
    /// hyper-util's matcher (the one reqwest uses) on the same values: it
    /// applies `NO_PROXY` and knows which values are usable proxies.
    matcher: Matcher,
}

impl ProxyRules {
    /// The rules of this process's environment.
    pub fn from_env() -> ProxyRules {
        ProxyRules::from_vars(|name| std::env::var(name).ok())
    }

    /// The rules for the variables `var` looks up (tests pass their own).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> ProxyRules {
        let first = |names: [&str; 2]| {
            names
                .into_iter()
                .find_map(|name| var(name).filter(|value| !value.trim().is_empty()))
        };
        let all = first(["ALL_PROXY", "all_proxy"]);
        let http = first(["HTTP_PROXY", "http_proxy"]).or_else(|| all.clone());
        let https = first(["HTTPS_PROXY", "https_proxy"]).or(all);
        let no_proxy = first(["NO_PROXY", "no_proxy"]).unwrap_or_default();
        let matcher = Matcher::builder()
            .http(http.clone().unwrap_or_default())
            .https(https.clone().unwrap_or_default())
            .no(no_proxy)
            .build();
        ProxyRules {
            http,
            https,
            matcher,
        }
    }

    /// The proxy to reach `url` through, `None` to connect directly.
    pub fn proxy_for(&self, url: &Url) -> Option<&str> {
        if is_loopback(url) {
            return None;
        }
        let uri: http::Uri = url.as_str().parse().ok()?;
        // `None` when NO_PROXY names the host, or no proxy is set for the
        // scheme.
        self.matcher.intercept(&uri)?;
        match url.scheme() {
            "http" => self.http.as_deref(),
            "https" => self.https.as_deref(),
            _ => None,
        }
    }
}

impl std::fmt::Debug for ProxyRules {
    /// Without the values: a proxy URL may hold a password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyRules")
            .field("http", &self.http.is_some())
            .field("https", &self.https.is_some())
            .finish_non_exhaustive()
    }
}

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

    fn rules(vars: &[(&str, &str)]) -> ProxyRules {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        ProxyRules::from_vars(move |name| {
            vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
        })
    }

    fn proxy_for<'a>(rules: &'a ProxyRules, url: &str) -> Option<&'a str> {
        rules.proxy_for(&Url::parse(url).unwrap())
    }

    const LOOPBACK: &[&str] = &[
        "http://127.0.0.1:8080/v1/users",
        "https://127.0.0.1/token",
        "http://127.9.9.9/hook",
        "http://[::1]:9000/hook",
        "https://localhost/token",
        "http://LOCALHOST:1/hook",
    ];

    #[test]
    fn loopback_is_never_proxied() {
        // Every variable set, in both cases, NO_PROXY naming nothing local.
        let every = rules(&[
            ("HTTP_PROXY", "http://proxy.example.com:3128"),
            ("HTTPS_PROXY", "http://proxy.example.com:3128"),
            ("ALL_PROXY", "http://proxy.example.com:3128"),
            ("http_proxy", "http://proxy.example.com:3128"),
            ("https_proxy", "http://proxy.example.com:3128"),
            ("all_proxy", "socks5://proxy.example.com:1080"),
            ("NO_PROXY", "intranet.example.com"),
        ]);
        for url in LOOPBACK {
            assert_eq!(proxy_for(&every, url), None, "{url}");
        }
        // The control: a remote host under the same rules is proxied.
        assert_eq!(
            proxy_for(&every, "https://api.contabo.com/v1/users"),
            Some("http://proxy.example.com:3128")
        );
    }

    #[test]
    fn remote_hosts_follow_the_environment() {
        let api = "https://api.contabo.com/v1/users";
        let hook = "http://hooks.example.com/contabo";
        // The variables, then the proxy for `api` and for `hook`.
        type Case<'a> = (&'a [(&'a str, &'a str)], Option<&'a str>, Option<&'a str>);
        let cases: &[Case] = &[
            (&[], None, None),
            (
                &[("HTTPS_PROXY", "http://tls-proxy:3128")],
                Some("http://tls-proxy:3128"),
                None,
            ),
            (
                &[("http_proxy", "http://plain-proxy:3128")],
                None,
                Some("http://plain-proxy:3128"),
            ),
            // ALL_PROXY for a scheme without its own; upper case first.
            (
                &[
                    ("all_proxy", "socks5h://all:1080"),
                    ("HTTP_PROXY", "http://upper:1"),
                    ("http_proxy", "http://lower:1"),
                ],
                Some("socks5h://all:1080"),
                Some("http://upper:1"),
            ),
            // An empty variable counts as unset.
            (
                &[("HTTPS_PROXY", ""), ("https_proxy", "http://lower:2")],
                Some("http://lower:2"),
                None,
            ),
            // Credentials are kept, to be sent to the proxy.
            (
                &[("ALL_PROXY", "http://user:pa%40ss@proxy:3128")],
                Some("http://user:pa%40ss@proxy:3128"),
                Some("http://user:pa%40ss@proxy:3128"),
            ),
        ];
        for (vars, want_api, want_hook) in cases {
            let rules = rules(vars);
            assert_eq!(proxy_for(&rules, api), *want_api, "{vars:?}");
            assert_eq!(proxy_for(&rules, hook), *want_hook, "{vars:?}");
        }
    }

    #[test]
    fn no_proxy_excludes_remote_hosts() {
        let proxy = "http://proxy.example.com:3128";
        let with_no_proxy = |no_proxy: &str| rules(&[("ALL_PROXY", proxy), ("no_proxy", no_proxy)]);
        for (no_proxy, url, proxied) in [
            ("api.contabo.com", "https://api.contabo.com/v1", false),
            (".contabo.com", "https://api.contabo.com/v1", false),
            ("contabo.com", "https://auth.contabo.com/token", false),
            ("contabo.com", "https://notcontabo.com/token", true),
            ("10.0.0.0/8, hooks.internal", "http://10.1.2.3/hook", false),
            (
                "10.0.0.0/8, hooks.internal",
                "http://hooks.internal/hook",
                false,
            ),
            ("10.0.0.0/8, hooks.internal", "http://11.1.2.3/hook", true),
            ("*", "https://eu2.contabostorage.com/", false),
            ("", "https://eu2.contabostorage.com/", true),
        ] {
            let rules = with_no_proxy(no_proxy);
            let want = proxied.then_some(proxy);
            assert_eq!(proxy_for(&rules, url), want, "NO_PROXY={no_proxy:?} {url}");
        }
        // NO_PROXY wins over no_proxy, as for the proxies.
        let both = rules(&[
            ("ALL_PROXY", proxy),
            ("NO_PROXY", "a.example.com"),
            ("no_proxy", "b.example.com"),
        ]);
        assert_eq!(proxy_for(&both, "https://a.example.com/"), None);
        assert_eq!(proxy_for(&both, "https://b.example.com/"), Some(proxy));
    }

    /// The rules as reqwest applies them: a remote host through the proxy,
    /// with the proxy's credentials; loopback directly.
    #[tokio::test]
    async fn clients_use_the_rules() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let proxy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let direct = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy_url = format!("http://proxy-user:proxy-pw@{}", proxy.local_addr().unwrap());
        let client = builder_with(rules(&[("ALL_PROXY", &proxy_url)]))
            .build()
            .unwrap();
        // Answers one request on `listener`, and returns its head.
        async fn answer(listener: &tokio::net::TcpListener) -> String {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.ends_with(b"\r\n\r\n") {
                let n = stream.read(&mut buf).await.unwrap();
                assert!(n > 0, "the client hung up");
                head.extend_from_slice(&buf[..n]);
            }
            stream
                .write_all(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n")
                .await
                .unwrap();
            String::from_utf8(head).unwrap().to_ascii_lowercase()
        }

        let remote = tokio::spawn(client.get("http://hooks.example.com/in").send());
        let head = answer(&proxy).await;
        assert!(
            head.starts_with("get http://hooks.example.com/in http/1.1\r\n"),
            "{head}"
        );
        // base64("proxy-user:proxy-pw")
        assert!(
            head.contains("proxy-authorization: basic chjvehktdxnlcjpwcm94es1wdw==\r\n"),
            "{head}"
        );
        assert_eq!(remote.await.unwrap().unwrap().status(), 204);

        let url = format!("http://{}/in", direct.local_addr().unwrap());
        let local = tokio::spawn(client.get(url).send());
        let head = tokio::select! {
            head = answer(&direct) => head,
            _ = proxy.accept() => panic!("a loopback request went to the proxy"),
        };
        assert!(head.starts_with("get /in http/1.1\r\n"), "{head}");
        assert_eq!(local.await.unwrap().unwrap().status(), 204);
    }

    #[test]
    fn debug_hides_proxy_credentials() {
        let rules = rules(&[("HTTPS_PROXY", "http://user:s3cret@proxy:3128")]);
        let shown = format!("{rules:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
    }
}
