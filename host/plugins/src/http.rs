//! Outbound HTTP (`wasi:http/outgoing-handler`), only to allow-listed hosts.
//!
//! Every bundle is linked against `wasi:http` (so that a bundle importing it
//! always instantiates), but a request leaves the host only when its URL
//! matches an entry of the bundle's [`Grants::http`](crate::Grants::http);
//! anything else gets `error-code::HTTP-request-denied` when the guest asks
//! for the response, and the host logs a warning naming the bundle and the
//! refused host. A bundle without an `http` grant has no outbound HTTP at all.
//!
//! Matching rules for an allow-list entry (`[scheme://]host[:port]`):
//!
//! - the host is compared with the host of the request URL, ASCII
//!   case-insensitively, ignoring one trailing dot; IP literals are compared
//!   as written (`127.0.0.1`, `[::1]`). No DNS lookup takes part: a granted
//!   name is contacted at whatever address it resolves to, and `localhost`
//!   does not match `127.0.0.1`;
//! - `*.example.org` matches every subdomain (`api.example.org`,
//!   `a.b.example.org`) but not `example.org` itself (list both to allow both);
//! - with a port (`127.0.0.1:8080`) only that port matches; without one only
//!   the default port of the request's scheme (80 for `http`, 443 for
//!   `https`) matches;
//! - without a scheme both `http` and `https` are allowed; `https://host`
//!   (or `http://host`) allows only that scheme. Other schemes never work;
//! - entries are validated when the [`PluginHost`](crate::PluginHost) loads:
//!   a path, query, user info, misplaced `*` or bad port is a configuration
//!   error.
//!
//! Requests that pass are sent by wasmtime-wasi-http's default client
//! (HTTP/1.1, rustls with the webpki roots for `https`). Redirects are not
//! followed (each hop is a new request, checked again). The call's time limit
//! covers the whole exchange: a hanging request ends with the call.

use std::fmt;
use std::sync::Arc;

use http::uri::{Authority, Scheme};
use http_body_util::BodyExt;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

/// A response future plus the I/O driver future, as `send_request` returns them.
type SendResult = Result<
    (
        http::Response<WasiBody>,
        Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ),
    HttpError,
>;

/// The parsed `http` grant of one bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HttpAllowList {
    rules: Vec<HostRule>,
}

/// One allow-list entry.
#[derive(Debug, Clone, PartialEq, Eq)]
struct HostRule {
    /// `None`: http and https.
    scheme: Option<RuleScheme>,
    host: HostPattern,
    /// `None`: the scheme's default port.
    port: Option<u16>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RuleScheme {
    Http,
    Https,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    /// A name or IP literal, lower-cased, without a trailing dot.
    Exact(String),
    /// `*.suffix`: stores `.suffix`.
    Subdomains(String),
}

/// Why an `http` grant entry is not usable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InvalidEntry {
    pub entry: String,
    pub reason: String,
}

impl fmt::Display for InvalidEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http entry {:?}: {}", self.entry, self.reason)
    }
}

impl HttpAllowList {
    /// Parses the entries of a bundle's `http` grant.
    pub fn parse(entries: &[String]) -> Result<Self, InvalidEntry> {
        let rules = entries
            .iter()
            .map(|entry| {
                HostRule::parse(entry).map_err(|reason| InvalidEntry {
                    entry: entry.clone(),
                    reason,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { rules })
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether a request to `uri` (scheme and authority set) is allowed.
    pub fn allows(&self, uri: &http::Uri) -> bool {
        let scheme = match uri.scheme() {
            Some(scheme) if *scheme == Scheme::HTTP => RuleScheme::Http,
            Some(scheme) if *scheme == Scheme::HTTPS => RuleScheme::Https,
            _ => return false,
        };
        let Some(authority) = uri.authority() else {
            return false;
        };
        // User info would make the connected address differ from the host
        // checked here; nothing legitimate needs it.
        if authority.as_str().contains('@') {
            return false;
        }
        let Ok(port) = explicit_port(authority) else {
            return false;
        };
        let host = normalize_host(authority.host());
        let port = port.unwrap_or(scheme.default_port());
        self.rules
            .iter()
            .any(|rule| rule.matches(scheme, &host, port))
    }
}

impl RuleScheme {
    fn default_port(self) -> u16 {
        match self {
            RuleScheme::Http => 80,
            RuleScheme::Https => 443,
        }
    }
}

impl HostRule {
    fn parse(entry: &str) -> Result<Self, String> {
        let text = entry.trim();
        if text.is_empty() {
            return Err("it is empty".into());
        }
        let (scheme, rest) = match text.split_once("://") {
            None => (None, text),
            Some((scheme, rest)) => match scheme.to_ascii_lowercase().as_str() {
                "http" => (Some(RuleScheme::Http), rest),
                "https" => (Some(RuleScheme::Https), rest),
                _ => return Err(format!("scheme '{scheme}' is not http or https")),
            },
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if let Some(bad) = rest.chars().find(|c| matches!(c, '/' | '?' | '#' | '@')) {
            return Err(format!(
                "'{bad}' is not allowed: give a host with an optional port (e.g. api.example.com or 127.0.0.1:8080), \
                 without path, query or user info"
            ));
        }
        let (wildcard, rest) = match rest.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, rest),
        };
        if rest.contains('*') {
            return Err("'*' is only allowed as a leading '*.' (e.g. *.example.org)".into());
        }
        let authority: Authority = rest
            .parse()
            .map_err(|e| format!("not a host with an optional port ({e})"))?;
        let host = normalize_host(authority.host());
        let valid_name = !host.is_empty()
            && host
                .split('.')
                .all(|label| !label.is_empty() && label.chars().all(is_host_char));
        let ip_literal = host.parse::<std::net::Ipv4Addr>().is_ok()
            || host
                .strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .is_some_and(|h| h.parse::<std::net::Ipv6Addr>().is_ok());
        if !valid_name && !ip_literal {
            return Err(format!("'{host}' is not a valid host name or IP address"));
        }
        if wildcard && ip_literal {
            return Err("'*.' cannot prefix an IP address".into());
        }
        let port = match explicit_port(&authority) {
            Ok(Some(0)) => return Err("port 0 is not a valid port".into()),
            Ok(port) => port,
            Err(text) => return Err(format!("port '{text}' is not a number from 1 to 65535")),
        };
        Ok(Self {
            scheme,
            host: if wildcard {
                HostPattern::Subdomains(format!(".{host}"))
            } else {
                HostPattern::Exact(host)
            },
            port,
        })
    }

    fn matches(&self, scheme: RuleScheme, host: &str, port: u16) -> bool {
        if self.scheme.is_some_and(|allowed| allowed != scheme) {
            return false;
        }
        if self.port.unwrap_or(scheme.default_port()) != port {
            return false;
        }
        match &self.host {
            HostPattern::Exact(allowed) => host == allowed,
            HostPattern::Subdomains(suffix) => {
                host.len() > suffix.len() && host.ends_with(suffix.as_str())
            }
        }
    }
}

/// The port written in `authority`, if any; `Err` with the text when it is
/// not a valid port (which `Authority::port` would silently ignore).
fn explicit_port(authority: &Authority) -> Result<Option<u16>, String> {
    let text = authority.as_str();
    let after_host = text.rfind(']').map_or(text, |end| &text[end..]);
    let Some((_, port)) = after_host.rsplit_once(':') else {
        return Ok(None);
    };
    port.parse::<u16>().map(Some).map_err(|_| port.to_owned())
}

fn is_host_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_'
}

fn normalize_host(host: &str) -> String {
    host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase()
}

/// The `wasi:http` hooks of one call: sends allow-listed requests, denies
/// everything else. Holds nothing but two pointers, so building one per call
/// costs nothing measurable.
pub(crate) struct HttpGate {
    /// `name@version` of the calling bundle, for the denial log record.
    bundle: Arc<str>,
    /// `None` when the bundle has no `http` grant.
    allowed: Option<Arc<HttpAllowList>>,
}

impl HttpGate {
    pub fn new(bundle: Arc<str>, allowed: Option<Arc<HttpAllowList>>) -> Self {
        Self { bundle, allowed }
    }

    fn allows(&self, uri: &http::Uri) -> bool {
        self.allowed.as_ref().is_some_and(|list| list.allows(uri))
    }
}

impl WasiHttpHooks for HttpGate {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _response_result: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> Box<dyn Future<Output = SendResult> + Send> {
        if !self.allows(request.uri()) {
            let target = request
                .uri()
                .authority()
                .map_or_else(String::new, |authority| authority.to_string());
            let name = self.bundle.split('@').next().unwrap_or_default();
            tracing::warn!(
                target: "flowcraft_plugins::guest",
                bundle = %self.bundle,
                scheme = request.uri().scheme_str().unwrap_or_default(),
                host = %target,
                "outbound HTTP request denied: '{target}' is not in the bundle's http grant \
                 (allow it with grants.{name}.http in the host configuration)"
            );
            return Box::new(async { Err(HttpError::HttpRequestDenied) });
        }
        Box::new(async move {
            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((
                response.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn Future<Output = _> + Send>,
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> HttpAllowList {
        HttpAllowList::parse(&entries.iter().map(|e| e.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn allows(list: &HttpAllowList, url: &str) -> bool {
        list.allows(&url.parse().unwrap())
    }

    #[test]
    fn exact_hosts_match_on_the_default_port_of_either_scheme() {
        let list = list(&["API.example.com"]);
        assert!(allows(&list, "https://api.example.com/v1?q=1"));
        assert!(allows(&list, "http://api.example.com"));
        assert!(allows(&list, "https://Api.Example.Com.:443/"));
        assert!(!allows(&list, "https://api.example.com:8443/"));
        assert!(!allows(&list, "https://example.com/"));
        assert!(!allows(&list, "https://x.api.example.com/"));
        assert!(!allows(&list, "https://api.example.com.evil.org/"));
        assert!(!allows(&list, "https://user@api.example.com/"));
    }

    #[test]
    fn ports_and_schemes_restrict_entries() {
        let list = list(&["127.0.0.1:8080", "https://secure.example.com", "[::1]:9000"]);
        assert!(allows(&list, "http://127.0.0.1:8080/x"));
        assert!(!allows(&list, "http://127.0.0.1/"));
        assert!(!allows(&list, "http://127.0.0.1:8081/"));
        assert!(!allows(&list, "http://localhost:8080/"));
        assert!(allows(&list, "https://secure.example.com/"));
        assert!(!allows(&list, "http://secure.example.com/"));
        assert!(allows(&list, "http://[::1]:9000/"));
    }

    #[test]
    fn wildcards_match_subdomains_only() {
        let list = list(&["*.example.org"]);
        assert!(allows(&list, "https://api.example.org/"));
        assert!(allows(&list, "https://a.b.example.org/"));
        assert!(!allows(&list, "https://example.org/"));
        assert!(!allows(&list, "https://badexample.org/"));
    }

    #[test]
    fn an_empty_list_allows_nothing() {
        assert!(!allows(&list(&[]), "http://127.0.0.1/"));
    }

    #[test]
    fn invalid_entries_are_rejected_with_a_reason() {
        for (entry, needle) in [
            ("", "empty"),
            ("https://api.example.com/v1", "'/'"),
            ("user@host", "'@'"),
            ("ftp://host", "scheme"),
            ("a.*.example.org", "'*'"),
            ("*", "'*'"),
            ("*.127.0.0.1", "IP"),
            ("host:99999", "port '99999'"),
            ("host:0", "port 0"),
            ("bad host", "not a"),
        ] {
            let error = HttpAllowList::parse(&[entry.to_string()]).unwrap_err();
            assert!(
                error.to_string().contains(needle),
                "{entry:?}: {error} (expected {needle:?})"
            );
        }
    }
}
