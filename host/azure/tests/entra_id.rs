//! What the Cosmos DB client sends with an Entra ID credential, seen by a
//! local HTTP server that records each request's `Authorization` header and
//! refuses it as Cosmos DB refuses a token without a data-plane role. (The
//! Cosmos stand-in accepts any authorization, so it cannot show this; the
//! queue's bearer tokens are checked by a real Azurite in
//! `host/cli/tests/entra_id.rs`.)

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use azure_core::credentials::{AccessToken, TokenCredential, TokenRequestOptions};
use azure_core::time::OffsetDateTime;
use flowcraft_azure::cosmos::{CosmosConnection, CosmosSetupError, CosmosStores};
use flowcraft_azure::credential::{AzureCredential, COSMOS_SCOPE, CredentialKind};

const TOKEN: &str = "eyJ0eXAiOiJKV1QifQ.eyJhdWQiOiJodHRwczovL2Nvc21vcy5henVyZS5jb20ifQ.c2ln";

/// Hands out [`TOKEN`] and records the scopes asked for.
#[derive(Debug, Default)]
struct FixedToken {
    scopes: Mutex<Vec<String>>,
}

#[async_trait::async_trait]
impl TokenCredential for FixedToken {
    async fn get_token(
        &self,
        scopes: &[&str],
        _: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        self.scopes.lock().unwrap().push(scopes.join(" "));
        Ok(AccessToken::new(
            TOKEN,
            OffsetDateTime::now_utc() + time::Duration::hours(1),
        ))
    }
}

/// Answers every request with `401 Unauthorized` and records the
/// `Authorization` headers. Returns the endpoint.
fn refusing_server() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}/", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let recorded = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let recorded = recorded.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                loop {
                    let mut request_line = String::new();
                    if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
                        return;
                    }
                    let mut content_length = 0usize;
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let line = line.trim_end();
                        if line.is_empty() {
                            break;
                        }
                        if let Some((name, value)) = line.split_once(':') {
                            if name.eq_ignore_ascii_case("authorization") {
                                recorded.lock().unwrap().push(value.trim().to_owned());
                            } else if name.eq_ignore_ascii_case("content-length") {
                                content_length = value.trim().parse().unwrap_or(0);
                            }
                        }
                    }
                    let mut body = vec![0u8; content_length];
                    if std::io::Read::read_exact(&mut reader, &mut body).is_err() {
                        return;
                    }
                    let body = r#"{"code":"Unauthorized","message":"Request blocked by Auth: the principal has no role on this account."}"#;
                    let response = format!(
                        "HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if stream.write_all(response.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (endpoint, seen)
}

/// The header value with `%XX` escapes decoded (the SDK may URL-encode it).
fn decoded(value: &str) -> String {
    let mut out = Vec::new();
    let bytes = value.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

#[tokio::test]
async fn cosmos_requests_carry_the_token_as_an_aad_signature() {
    let (endpoint, seen) = refusing_server();
    let source = Arc::new(FixedToken::default());
    let credential =
        AzureCredential::from_token_credential(CredentialKind::ManagedIdentity, source.clone());
    let connection = CosmosConnection::from_endpoint(&endpoint)
        .unwrap()
        .with_credential(credential);
    let error = CosmosStores::connect(&connection, "db", "contexts", "statuses", false)
        .await
        .err()
        .expect("the server refuses every request");

    let headers = seen.lock().unwrap().clone();
    assert!(!headers.is_empty(), "no request reached the server");
    for header in &headers {
        assert_eq!(decoded(header), format!("type=aad&ver=1.0&sig={TOKEN}"));
    }
    assert!(
        source
            .scopes
            .lock()
            .unwrap()
            .iter()
            .all(|s| s == COSMOS_SCOPE),
        "{:?}",
        source.scopes
    );
    // The cache in front of the credential: one token for all requests.
    assert_eq!(source.scopes.lock().unwrap().len(), 1);

    assert!(
        matches!(error, CosmosSetupError::TokenRefused { .. }),
        "{error}"
    );
    let message = error.to_string();
    assert!(
        message.starts_with(&format!(
            "Cosmos DB endpoint {endpoint} refused the Entra ID token ("
        )) && message.ends_with(
            "give the identity a Cosmos DB data-plane role on the account (e.g. Cosmos DB Built-in Data Contributor)"
        ),
        "{message}"
    );
    assert!(
        !message.contains('\n') && !message.contains(TOKEN),
        "{message}"
    );
}

#[tokio::test]
async fn an_endpoint_without_a_credential_is_refused_before_any_request() {
    let (endpoint, seen) = refusing_server();
    let connection = CosmosConnection::from_endpoint(&endpoint).unwrap();
    let error = CosmosStores::connect(&connection, "db", "c", "s", false)
        .await
        .err()
        .unwrap();
    assert_eq!(
        error.to_string(),
        "COSMOS_DB_ENDPOINT gives no key; choose an Entra ID credential with --azure-credential (FLOWCRAFT_AZURE_CREDENTIAL)"
    );
    assert!(seen.lock().unwrap().is_empty());
}
