//! The Cosmos DB connection string (`COSMOS_DB_CONNECTION_STRING`), in the
//! format the Azure portal shows and `@flowcraft/azure-adapter` documents:
//! `AccountEndpoint=https://<account>.documents.azure.com:443/;AccountKey=<key>;`.
//!
//! Parsing is forgiving about order, case of the names, whitespace and the
//! trailing `;`, and strict about what the SDK needs: an `http(s)` endpoint
//! (plain `http://` only for the local emulator) and a base64 key. Errors are
//! one line and never contain the key.
//!
//! For Entra ID auth the account is given as an endpoint alone
//! (`COSMOS_DB_ENDPOINT`, [`CosmosConnection::from_endpoint`]) plus a token
//! credential ([`CosmosConnection::with_credential`]).

use std::fmt;
use std::str::FromStr;

use azure_core::credentials::Secret;
use base64::Engine as _;
use url::Url;

use super::CosmosSetupError;
use crate::credential::AzureCredential;

/// The environment variable the worker reads the connection string from.
pub const CONNECTION_STRING_VARIABLE: &str = "COSMOS_DB_CONNECTION_STRING";
/// The environment variable giving the account endpoint for Entra ID auth.
pub const ENDPOINT_VARIABLE: &str = "COSMOS_DB_ENDPOINT";

const FORMAT_HINT: &str =
    "expected AccountEndpoint=https://<account>.documents.azure.com:443/;AccountKey=<key>;";

/// Where the Cosmos DB account is and how to sign requests to it.
#[derive(Clone)]
pub struct CosmosConnection {
    endpoint: Url,
    /// `None`: Entra ID, with `credential`.
    key: Option<Secret>,
    credential: Option<AzureCredential>,
}

impl CosmosConnection {
    /// Parses a connection string (see the module docs).
    pub fn parse(text: &str) -> Result<Self, CosmosSetupError> {
        if text.trim().is_empty() {
            return Err(invalid(format!("is empty; {FORMAT_HINT}")));
        }
        let mut endpoint = None;
        let mut key = None;
        let segments = text
            .split(';')
            .map(str::trim)
            .filter(|segment| !segment.is_empty());
        for (index, segment) in segments.enumerate() {
            // Never echo a segment: it may be a key pasted without its name.
            let Some((name, value)) = segment.split_once('=') else {
                return Err(invalid(format!(
                    "part {} is not of the form Name=value; {FORMAT_HINT}",
                    index + 1
                )));
            };
            let value = value.trim();
            match name.trim().to_ascii_lowercase().as_str() {
                "accountendpoint" => endpoint = Some(value.to_owned()),
                "accountkey" => key = Some(value.to_owned()),
                _ => {} // e.g. `Database=`: not ours to interpret
            }
        }
        let endpoint = endpoint.ok_or_else(|| invalid("missing AccountEndpoint".into()))?;
        let key = key.ok_or_else(|| {
            invalid(format!(
                "missing AccountKey (for Entra ID auth set {ENDPOINT_VARIABLE} instead)"
            ))
        })?;
        let endpoint = parse_endpoint(&endpoint, "AccountEndpoint", invalid)?;
        if key.is_empty() {
            return Err(invalid("AccountKey is empty".into()));
        }
        if base64::engine::general_purpose::STANDARD
            .decode(&key)
            .is_err()
        {
            return Err(invalid(
                "AccountKey is not valid base64 (copy the primary or secondary key from the account's Keys page)".into(),
            ));
        }
        Ok(Self {
            endpoint,
            key: Some(Secret::new(key)),
            credential: None,
        })
    }

    /// The account endpoint alone (`COSMOS_DB_ENDPOINT`), for Entra ID auth:
    /// e.g. `https://myaccount.documents.azure.com:443/`.
    pub fn from_endpoint(text: &str) -> Result<Self, CosmosSetupError> {
        let invalid = |message: String| CosmosSetupError::Endpoint(message);
        let text = text.trim();
        if text.is_empty() {
            return Err(invalid(
                "is empty; expected https://<account>.documents.azure.com:443/".into(),
            ));
        }
        Ok(Self {
            endpoint: parse_endpoint(text, "the endpoint", invalid)?,
            key: None,
            credential: None,
        })
    }

    /// Uses `credential` for Entra ID auth (ignored when there is a key).
    pub fn with_credential(mut self, credential: AzureCredential) -> Self {
        self.credential = Some(credential);
        self
    }

    /// Whether requests need an Entra ID credential (no key).
    pub fn needs_credential(&self) -> bool {
        self.key.is_none()
    }

    /// The setting the connection came from, for messages.
    pub fn setting(&self) -> &'static str {
        if self.needs_credential() {
            ENDPOINT_VARIABLE
        } else {
            CONNECTION_STRING_VARIABLE
        }
    }

    /// Reads and parses `COSMOS_DB_CONNECTION_STRING`.
    pub fn from_env() -> Result<Self, CosmosSetupError> {
        match std::env::var(CONNECTION_STRING_VARIABLE) {
            Ok(text) => Self::parse(&text),
            Err(_) => Err(invalid(format!("is not set; {FORMAT_HINT}"))),
        }
    }

    /// The account endpoint, e.g. `https://myaccount.documents.azure.com:443/`.
    pub fn endpoint(&self) -> &Url {
        &self.endpoint
    }

    /// Whether the endpoint is a local emulator host (`localhost`,
    /// `127.0.0.1`, `[::1]` or `AZURE_COSMOS_EMULATOR_HOST`), where plain HTTP
    /// and self-signed certificates are accepted.
    pub fn is_emulator(&self) -> bool {
        is_emulator_host(&self.endpoint)
    }

    pub(crate) fn key(&self) -> Option<&Secret> {
        self.key.as_ref()
    }

    pub(crate) fn credential(&self) -> Option<&AzureCredential> {
        self.credential.as_ref()
    }
}

impl FromStr for CosmosConnection {
    type Err = CosmosSetupError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

impl fmt::Debug for CosmosConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = if self.key.is_some() {
            "<redacted>"
        } else {
            "none"
        };
        f.debug_struct("CosmosConnection")
            .field("endpoint", &self.endpoint.as_str())
            .field("key", &key)
            .field("credential", &self.credential)
            .finish()
    }
}

fn invalid(message: String) -> CosmosSetupError {
    CosmosSetupError::ConnectionString(message)
}

/// `label` names the value in messages; `invalid` makes the error of the
/// setting it came from.
fn parse_endpoint(
    text: &str,
    label: &str,
    invalid: impl Fn(String) -> CosmosSetupError,
) -> Result<Url, CosmosSetupError> {
    let url = Url::parse(text).map_err(|error| {
        invalid(format!(
            "{label} '{text}' is not a URL ({error}); {FORMAT_HINT}"
        ))
    })?;
    match url.scheme() {
        "https" => {}
        "http" if is_emulator_host(&url) => {}
        "http" => {
            return Err(invalid(format!(
                "{label} '{text}' uses http://, which is allowed only for the local emulator \
                 (localhost, 127.0.0.1, [::1] or AZURE_COSMOS_EMULATOR_HOST); use https://"
            )));
        }
        other => {
            return Err(invalid(format!(
                "{label} '{text}' has scheme '{other}'; use https://"
            )));
        }
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid(format!("{label} '{text}' has no host")));
    }
    if url.query().is_some() {
        return Err(invalid(format!("{label} must not carry a query")));
    }
    Ok(url)
}

fn is_emulator_host(url: &Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    if let Ok(custom) = std::env::var("AZURE_COSMOS_EMULATOR_HOST")
        && !custom.is_empty()
        && host.eq_ignore_ascii_case(&custom)
    {
        return true;
    }
    ["localhost", "127.0.0.1", "[::1]", "[0:0:0:0:0:0:0:1]"]
        .iter()
        .any(|known| host.eq_ignore_ascii_case(known))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str =
        "C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67XIw/Jw==";

    fn error(text: &str) -> String {
        CosmosConnection::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn parses_the_portal_format_in_any_order() {
        let portal =
            format!("AccountEndpoint=https://acct.documents.azure.com:443/;AccountKey={KEY};");
        let connection = CosmosConnection::parse(&portal).unwrap();
        assert_eq!(
            connection.endpoint().as_str(),
            "https://acct.documents.azure.com/"
        );
        assert_eq!(connection.key().unwrap().secret(), KEY);
        assert!(!connection.needs_credential());
        assert!(!connection.is_emulator());

        let relaxed = format!(" accountkey = {KEY} ;\n AccountEndpoint=http://127.0.0.1:8081/ ");
        let connection = CosmosConnection::parse(&relaxed).unwrap();
        assert_eq!(connection.endpoint().as_str(), "http://127.0.0.1:8081/");
        assert!(connection.is_emulator());
    }

    #[test]
    fn errors_are_one_line_and_never_show_the_key() {
        let cases = [
            (
                format!("AccountKey={KEY}"),
                "COSMOS_DB_CONNECTION_STRING: missing AccountEndpoint",
            ),
            (
                "AccountEndpoint=https://a.documents.azure.com:443/".to_owned(),
                "COSMOS_DB_CONNECTION_STRING: missing AccountKey",
            ),
            (
                format!("AccountEndpoint=https://a.documents.azure.com:443/;AccountKey={KEY};oops"),
                "COSMOS_DB_CONNECTION_STRING: part 3 is not of the form Name=value",
            ),
            (
                "AccountEndpoint=https://a.documents.azure.com:443/;AccountKey=not base64!"
                    .to_owned(),
                "COSMOS_DB_CONNECTION_STRING: AccountKey is not valid base64",
            ),
            (
                format!("AccountEndpoint=http://a.documents.azure.com/;AccountKey={KEY}"),
                "uses http://, which is allowed only for the local emulator",
            ),
            (
                format!("AccountEndpoint=a.documents.azure.com;AccountKey={KEY}"),
                "is not a URL",
            ),
            ("  ".to_owned(), "COSMOS_DB_CONNECTION_STRING: is empty"),
        ];
        for (text, expected) in cases {
            let message = error(&text);
            assert!(message.contains(expected), "{message:?} lacks {expected:?}");
            assert!(!message.contains('\n'), "{message:?} spans lines");
            assert!(!message.contains(KEY), "{message:?} shows the key");
        }
    }

    #[test]
    fn an_endpoint_alone_is_for_entra_id() {
        let connection =
            CosmosConnection::from_endpoint(" https://acct.documents.azure.com:443/ ").unwrap();
        assert!(connection.needs_credential());
        assert!(connection.key().is_none() && connection.credential().is_none());
        assert_eq!(connection.setting(), "COSMOS_DB_ENDPOINT");
        assert_eq!(
            connection.endpoint().as_str(),
            "https://acct.documents.azure.com/"
        );
        assert!(CosmosConnection::from_endpoint("http://127.0.0.1:8081/").is_ok());
        for (text, expected) in [
            ("", "COSMOS_DB_ENDPOINT: is empty"),
            (
                "http://acct.documents.azure.com/",
                "COSMOS_DB_ENDPOINT: the endpoint 'http://acct.documents.azure.com/' uses http://",
            ),
            (
                "acct.documents.azure.com",
                "COSMOS_DB_ENDPOINT: the endpoint 'acct.documents.azure.com' is not a URL",
            ),
            (
                "https://a.documents.azure.com/?key=1",
                "COSMOS_DB_ENDPOINT: the endpoint must not carry a query",
            ),
        ] {
            let message = CosmosConnection::from_endpoint(text)
                .unwrap_err()
                .to_string();
            assert!(
                message.starts_with(expected),
                "{message:?} lacks {expected:?}"
            );
        }
        // The connection string still needs its key, and says where Entra ID goes.
        let message = error("AccountEndpoint=https://a.documents.azure.com:443/");
        assert!(
            message
                .ends_with("missing AccountKey (for Entra ID auth set COSMOS_DB_ENDPOINT instead)"),
            "{message}"
        );
    }

    #[test]
    fn debug_output_redacts_the_key() {
        let connection =
            CosmosConnection::parse(&format!("AccountEndpoint=https://a.b/;AccountKey={KEY}"))
                .unwrap();
        let debug = format!("{connection:?}");
        assert!(!debug.contains(KEY) && debug.contains("redacted"));
    }
}
