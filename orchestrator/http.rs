//! One HTTP client for the whole process (service, platform, Slack, every target): the
//! system's root certificates are read once rather than twice per target (a thousand
//! targets read every file in /etc/ssl/certs two thousand times at start, seconds of
//! CPU), and connections are pooled across targets. Timeouts are set per request.

use std::sync::OnceLock;

/// The shared client: no redirects are ever followed (a redirect to another origin
/// would carry an API key or token there), one user agent.
pub fn shared() -> Result<reqwest::Client, String> {
    static CLIENT: OnceLock<Result<reqwest::Client, String>> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            crate::wiring::install_crypto();
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(concat!("orchestrator/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(|e| {
                    let mut s = e.to_string();
                    let mut src = std::error::Error::source(&e);
                    while let Some(c) = src {
                        s.push_str(&format!(": {c}"));
                        src = c.source();
                    }
                    s
                })
        })
        .clone()
}
