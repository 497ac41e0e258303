//! The Cosmos DB connection string (`COSMOS_DB_CONNECTION_STRING`), in the
//! format the Azure portal shows and `@flowcraft/azure-adapter` documents:
//! `AccountEndpoint=https://<account>.documents.azure.com:443/;AccountKey=<key>;`.
//!
//! Parsing is forgiving about order, case of the names, whitespace and the
//! trailing `;`, and strict about what the SDK needs: an `http(s)` endpoint
//! (plain `http://` only for the local emulator) and a base64 key. Errors are
//! one line and never contain the key.

use std::fmt;
use std::str::FromStr;

use azure_core::credentials::Secret;
use base64::Engine as _;
use url::Url;

use super::CosmosSetupError;

/// The environment variable the worker reads the connection string from.
pub const CONNECTION_STRING_VARIABLE: &str = "COSMOS_DB_CONNECTION_STRING";

const FORMAT_HINT: &str =
    "expected AccountEndpoint=https://<account>.documents.azure.com:443/;AccountKey=<key>;";

/// Where the Cosmos DB account is and how to sign requests to it.
#[derive(Clone)]
pub struct CosmosConnection {
    endpoint: Url,
    key: Secret,
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
        let key = key.ok_or_else(|| invalid("missing AccountKey".into()))?;
        let endpoint = parse_endpoint(&endpoint)?;
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
            key: Secret::new(key),
        })
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

    pub(crate) fn key(&self) -> &Secret {
        &self.key
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
        f.debug_struct("CosmosConnection")
            .field("endpoint", &self.endpoint.as_str())
            .field("key", &"<redacted>")
            .finish()
    }
}

fn invalid(message: String) -> CosmosSetupError {
    CosmosSetupError::ConnectionString(message)
}

fn parse_endpoint(text: &str) -> Result<Url, CosmosSetupError> {
    let url = Url::parse(text).map_err(|error| {
        invalid(format!(
            "AccountEndpoint '{text}' is not a URL ({error}); {FORMAT_HINT}"
        ))
    })?;
    match url.scheme() {
        "https" => {}
        "http" if is_emulator_host(&url) => {}
        "http" => {
            return Err(invalid(format!(
                "AccountEndpoint '{text}' uses http://, which is allowed only for the local emulator \
                 (localhost, 127.0.0.1, [::1] or AZURE_COSMOS_EMULATOR_HOST); use https://"
            )));
        }
        other => {
            return Err(invalid(format!(
                "AccountEndpoint '{text}' has scheme '{other}'; use https://"
            )));
        }
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid(format!("AccountEndpoint '{text}' has no host")));
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
        assert_eq!(connection.key().secret(), KEY);
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
    fn debug_output_redacts_the_key() {
        let connection =
            CosmosConnection::parse(&format!("AccountEndpoint=https://a.b/;AccountKey={KEY}"))
                .unwrap();
        let debug = format!("{connection:?}");
        assert!(!debug.contains(KEY) && debug.contains("redacted"));
    }
}
