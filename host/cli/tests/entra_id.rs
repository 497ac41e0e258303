//! Entra ID auth end to end: `flowcraft-host` with the queue and Cosmos DB
//! given as endpoints (no keys) and `--azure-credential managed-identity`.
//!
//! The managed identity is App Service's: the official credential reads
//! `IDENTITY_ENDPOINT` + `IDENTITY_HEADER` and fetches tokens over HTTP from
//! that endpoint, which this test serves (a JWT per requested resource, as
//! Entra ID issues them). The queue is a second Azurite started here with
//! HTTPS (a certificate of a throw-away CA, trusted through `SSL_CERT_FILE`)
//! and `--oauth basic`, so it checks each bearer token's audience, issuer and
//! lifetime (not its signature). Cosmos DB is the local stand-in, which
//! accepts any authorization; `host/azure/tests/entra_id.rs` checks the
//! header the SDK sends. Needs the local services
//! (`scripts/azure-local.sh start`, `eval "$(scripts/azure-local.sh env)"`),
//! `openssl`, and the example bundles (`scripts/build-plugins.sh`).

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde_json::{Value, json};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn variable(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: start the local services: scripts/azure-local.sh start; eval \"$(scripts/azure-local.sh env)\"")
    })
}

/// The Cosmos stand-in's endpoint, from the key-auth connection string.
fn cosmos_endpoint() -> String {
    variable("COSMOS_DB_CONNECTION_STRING")
        .split(';')
        .find_map(|part| part.trim().strip_prefix("AccountEndpoint="))
        .expect("COSMOS_DB_CONNECTION_STRING has an AccountEndpoint")
        .to_owned()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

// ---------------------------------------------------------------------------
// The managed-identity endpoint (App Service protocol, api-version 2019-08-01)

/// One token request as the endpoint saw it.
#[derive(Debug, Clone)]
struct TokenRequest {
    resource: String,
    identity_header: Option<String>,
}

struct IdentityEndpoint {
    url: String,
    secret: String,
    requests: Arc<Mutex<Vec<TokenRequest>>>,
    /// Issue storage tokens for the wrong audience (Azurite must refuse them).
    wrong_audience: Arc<AtomicBool>,
}

impl IdentityEndpoint {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/msi/token", listener.local_addr().unwrap());
        let secret = format!("header-{}", std::process::id());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let wrong_audience = Arc::new(AtomicBool::new(false));
        let (seen, wrong, expected) = (requests.clone(), wrong_audience.clone(), secret.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let (seen, wrong, expected) = (seen.clone(), wrong.clone(), expected.clone());
                std::thread::spawn(move || serve_tokens(stream, &seen, &wrong, &expected));
            }
        });
        Self {
            url,
            secret,
            requests,
            wrong_audience,
        }
    }

    fn requests(&self) -> Vec<TokenRequest> {
        self.requests.lock().unwrap().clone()
    }

    fn count(&self, resource: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.resource == resource)
            .count()
    }
}

/// Answers token requests on one keep-alive connection.
fn serve_tokens(
    stream: TcpStream,
    seen: &Mutex<Vec<TokenRequest>>,
    wrong_audience: &AtomicBool,
    secret: &str,
) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut stream = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut identity_header = None;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("x-identity-header")
            {
                identity_header = Some(value.trim().to_owned());
            }
        }
        let target = request_line.split_whitespace().nth(1).unwrap_or("");
        let resource = target
            .split_once('?')
            .map_or("", |(_, query)| query)
            .split('&')
            .find_map(|pair| pair.strip_prefix("resource="))
            .map(percent_decode)
            .unwrap_or_default();
        seen.lock().unwrap().push(TokenRequest {
            resource: resource.clone(),
            identity_header: identity_header.clone(),
        });
        let (status, body) = if identity_header.as_deref() != Some(secret) {
            (
                "401 Unauthorized",
                json!({"error": "invalid_request", "error_description": "the X-IDENTITY-HEADER is wrong"}),
            )
        } else {
            let audience = if wrong_audience.load(Ordering::SeqCst)
                && resource == "https://storage.azure.com"
            {
                "https://vault.azure.net".to_owned()
            } else {
                resource.clone()
            };
            let expires_on = unix_now() + 3_600;
            (
                "200 OK",
                json!({
                    "access_token": jwt(&audience, expires_on),
                    "expires_on": expires_on.to_string(),
                    "resource": resource,
                    "token_type": "Bearer",
                }),
            )
        };
        let body = body.to_string();
        let response = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        if stream.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

/// `%XX` and `+` decoding of a query value.
fn percent_decode(text: &str) -> String {
    let mut out = Vec::with_capacity(text.len());
    let mut rest = text.as_bytes();
    while let Some((&byte, tail)) = rest.split_first() {
        let escaped = (byte == b'%')
            .then(|| tail.get(..2))
            .flatten()
            .and_then(|hex| u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok());
        match escaped {
            Some(decoded) => {
                out.push(decoded);
                rest = &tail[2..];
            }
            None => {
                out.push(if byte == b'+' { b' ' } else { byte });
                rest = tail;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A JWT shaped as Entra ID's access tokens (Azurite's basic OAuth check
/// decodes it and checks `aud`, `iss`, `nbf`, `iat` and `exp`).
fn jwt(audience: &str, expires_on: u64) -> String {
    let encode =
        |value: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string());
    let now = unix_now();
    format!(
        "{}.{}.{}",
        encode(json!({"typ": "JWT", "alg": "RS256"})),
        encode(json!({
            "aud": audience,
            "iss": "https://sts.windows.net/00000000-0000-0000-0000-00000000000a/",
            "iat": now - 60, "nbf": now - 60, "exp": expires_on,
            "oid": "00000000-0000-0000-0000-000000000001",
        })),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b"not-checked")
    )
}

// ---------------------------------------------------------------------------
// Azurite over HTTPS with OAuth

/// A CA and a server certificate for 127.0.0.1 (made with `openssl`).
struct Certificates {
    dir: tempfile::TempDir,
}

impl Certificates {
    fn make() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let run = |args: &[&str]| {
            let output = Command::new("openssl")
                .args(args)
                .current_dir(dir.path())
                .output()
                .expect("openssl runs (apt-get install openssl)");
            assert!(
                output.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        };
        std::fs::write(
            dir.path().join("server.ext"),
            "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n\
             extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )
        .unwrap();
        run(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=flowcraft test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign",
        ]);
        run(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ]);
        run(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "server.pem",
        ]);
        Self { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_owned()
    }
}

/// Azurite's queue service on HTTPS with `--oauth basic`; killed on drop.
struct OAuthAzurite {
    child: Child,
    endpoint: String,
}

impl OAuthAzurite {
    fn start(certificates: &Certificates) -> Self {
        let bin = repo_root().join("scripts/azure-local/node_modules/.bin/azurite-queue");
        assert!(
            bin.exists(),
            "{} is missing: run scripts/azure-local.sh start",
            bin.display()
        );
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(bin)
            .args(["--queueHost", "127.0.0.1", "--queuePort", &port.to_string()])
            .args(["--inMemoryPersistence", "--disableTelemetry", "--silent"])
            .args(["--skipApiVersionCheck", "--oauth", "basic"])
            .args(["--cert", &certificates.path("server.pem")])
            .args(["--key", &certificates.path("server.key")])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("azurite-queue starts");
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "Azurite (HTTPS) did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        Self {
            child,
            endpoint: format!("https://127.0.0.1:{port}/devstoreaccount1"),
        }
    }
}

impl Drop for OAuthAzurite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------
// The binary with Entra ID settings

struct Setup {
    identity: IdentityEndpoint,
    certificates: Certificates,
    azurite: OAuthAzurite,
    blueprints: tempfile::TempDir,
    tag: String,
}

impl Setup {
    fn new(tag: &str) -> Self {
        let certificates = Certificates::make();
        let azurite = OAuthAzurite::start(&certificates);
        let blueprints = tempfile::tempdir().unwrap();
        std::fs::write(
            blueprints.path().join("entra.json"),
            json!({
                "id": "entra",
                "nodes": [{"id": "A", "uses": "const", "params": {"value": 41}},
                          {"id": "B", "uses": "echo"}],
                "edges": [{"source": "A", "target": "B"}]
            })
            .to_string(),
        )
        .unwrap();
        Self {
            identity: IdentityEndpoint::start(),
            certificates,
            azurite,
            blueprints,
            tag: format!("entra-{tag}-{}", std::process::id()),
        }
    }

    /// `flowcraft-host ARGS` with the queue and Cosmos DB as endpoints and
    /// the App Service managed identity; no key anywhere in its environment.
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_flowcraft-host"));
        command
            .args(args)
            .current_dir(repo_root())
            .env_remove("AZURE_STORAGE_CONNECTION_STRING")
            .env_remove("COSMOS_DB_CONNECTION_STRING")
            .env_remove("AZURE_CLIENT_ID")
            .env_remove("AZURE_CLIENT_SECRET")
            .env_remove("AZURE_FEDERATED_TOKEN_FILE")
            .env("AZURE_STORAGE_QUEUE_ENDPOINT", &self.azurite.endpoint)
            .env("COSMOS_DB_ENDPOINT", cosmos_endpoint())
            .env("REDIS_URL", variable("REDIS_URL"))
            .env("FLOWCRAFT_AZURE_CREDENTIAL", "managed-identity")
            .env("IDENTITY_ENDPOINT", &self.identity.url)
            .env("IDENTITY_HEADER", &self.identity.secret)
            .env("SSL_CERT_FILE", self.certificates.path("ca.pem"))
            .env("FLOWCRAFT_QUEUE", &self.tag)
            .env("FLOWCRAFT_DATABASE", &self.tag)
            .env("FLOWCRAFT_BLUEPRINTS", self.blueprints.path())
            .env("FLOWCRAFT_LOG", "warn");
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("the binary runs")
    }
}

fn text(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A worker process, killed on drop.
struct Worker(Child);

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_run_completes_with_managed_identity_tokens_and_no_keys() {
    let setup = Setup::new("run");
    let started = setup.run(&["start", "entra", "--create-resources"]);
    assert!(started.status.success(), "{}", text(&started));
    let run_id = String::from_utf8_lossy(&started.stdout).trim().to_owned();
    assert!(!run_id.is_empty(), "{}", text(&started));
    // One token per service for the whole process: the credential caches
    // them (the Cosmos SDK asks for one on every request).
    assert_eq!(setup.identity.count("https://storage.azure.com"), 1);
    assert_eq!(setup.identity.count("https://cosmos.azure.com"), 1);
    assert!(
        setup
            .identity
            .requests()
            .iter()
            .all(|r| r.identity_header.as_deref() == Some(setup.identity.secret.as_str())),
        "every token request carries IDENTITY_HEADER"
    );

    let dist = repo_root().join("plugins-example/dist");
    assert!(
        dist.join("conformance.wasm").exists(),
        "run scripts/build-plugins.sh first"
    );
    let _worker = Worker(
        setup
            .command(&["--plugins", dist.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the worker starts"),
    );
    let waited = setup.run(&["wait", &run_id, "--timeout", "60"]);
    assert!(waited.status.success(), "{}", text(&waited));
    let status: Value = serde_json::from_slice(&waited.stdout).expect("wait prints JSON");
    assert_eq!(status["status"], "completed", "{status}");

    let shown = setup.run(&["status", &run_id]);
    assert!(shown.status.success(), "{}", text(&shown));
    assert!(
        String::from_utf8_lossy(&shown.stdout).contains("completed"),
        "{}",
        text(&shown)
    );
}

#[test]
fn refused_and_unobtainable_tokens_fail_at_start_up_with_one_line() {
    let setup = Setup::new("refused");
    let one_line = |output: &Output| {
        assert_eq!(output.status.code(), Some(2), "{}", text(output));
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{}", text(output));
        lines[0].to_owned()
    };

    // Azurite checks the audience: a token for another resource is refused.
    setup.identity.wrong_audience.store(true, Ordering::SeqCst);
    let line = one_line(&setup.run(&["status", "no-such-run", "--create-resources"]));
    assert!(
        line.contains(&format!(
            "queue '{}' at {}",
            setup.tag, setup.azurite.endpoint
        )) && line.contains("403")
            && line.contains("the Entra ID token was refused"),
        "{line}"
    );
    setup.identity.wrong_audience.store(false, Ordering::SeqCst);

    // The identity endpoint refuses the header: no token at all.
    let output = setup
        .command(&["status", "no-such-run"])
        .env("IDENTITY_HEADER", "wrong")
        .output()
        .unwrap();
    let line = one_line(&output);
    assert!(
        line.starts_with(
            "flowcraft-host: FLOWCRAFT_AZURE_CREDENTIAL=managed-identity: no Entra ID token for the queue (https://storage.azure.com/.default): "
        ) && line.ends_with("user-assigned identity of this host)"),
        "{line}"
    );
    assert!(!line.contains(&setup.identity.secret), "{line}");

    // A key and an endpoint for one service; an endpoint without a credential.
    let output = setup
        .command(&["status", "no-such-run"])
        .env(
            "COSMOS_DB_CONNECTION_STRING",
            variable("COSMOS_DB_CONNECTION_STRING"),
        )
        .output()
        .unwrap();
    assert_eq!(
        one_line(&output),
        "flowcraft-host: COSMOS_DB_CONNECTION_STRING and COSMOS_DB_ENDPOINT are both set; set one: the connection string for a key, the endpoint for Entra ID"
    );
    let output = setup
        .command(&["status", "no-such-run"])
        .env_remove("FLOWCRAFT_AZURE_CREDENTIAL")
        .output()
        .unwrap();
    assert!(
        one_line(&output).starts_with(
            "flowcraft-host: AZURE_STORAGE_QUEUE_ENDPOINT and COSMOS_DB_ENDPOINT give no key; choose an Entra ID credential with --azure-credential"
        )
    );
}
