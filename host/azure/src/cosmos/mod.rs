//! Run contexts and run statuses on Azure Cosmos DB (SQL API), in
//! `@flowcraft/azure-adapter`'s document shapes so TypeScript and Rust workers
//! can share the containers.
//!
//! - [`CosmosConnection`] parses `COSMOS_DB_CONNECTION_STRING` (key auth) or
//!   `COSMOS_DB_ENDPOINT` (Entra ID auth with a token credential).
//! - [`CosmosStores::connect`] checks (or creates) the database and the two
//!   containers (partition key `/runId`) and hands out the two stores.
//! - [`CosmosContextStore`] implements [`flowcraft_core::store::ContextStore`]:
//!   one document per run, `{id: runId, runId, <flat context keys>}`; writes
//!   are server-side PATCH operations in chunks of at most 10.
//! - [`CosmosStatusStore`] implements [`flowcraft_core::store::StatusStore`]:
//!   `{id, runId, status, lastUpdated: <unix seconds>, finalStatus?}`, written
//!   with `If-Match` so that a terminal status is never overwritten; plus the
//!   worker's liveness `touch` and the
//!   reconciler's [`stalled_runs`](CosmosStatusStore::stalled_runs) query.
//!
//! The SDK is configured for both real accounts and the local stand-in:
//! binary encoding off (text JSON, as upstream writes), server-side PATCH
//! requested explicitly (the SDK's default runs `remove` patches client-side
//! and leaves a tracking field in the document), and for emulator hosts
//! HTTP/1.1 with relaxed certificate checks. ETags are treated as opaque.
//!
//! A request Cosmos refuses as such (413: the item would exceed the 2 MB item
//! limit; 400: a malformed request or id) fails with a permanent
//! [`StoreError`] saying what to change: sending it again cannot succeed.

mod connection;
mod context;
mod status;

use std::future::Future;
use std::time::Duration;

use azure_data_cosmos::clients::{ContainerClient, DatabaseClient};
use azure_data_cosmos::models::{ContainerProperties, PartitionKeyDefinition};
use azure_data_cosmos::options::{
    BinaryEncodingOptions, ConnectionPoolOptions, OperationOptions, PatchStrategy,
    ServerCertificateValidation,
};
use azure_data_cosmos::{
    AccountEndpoint, AccountReference, CosmosClient, CosmosError, CosmosRuntime, RoutingStrategy,
};
use flowcraft_core::store::StoreError;
use thiserror::Error;

use crate::retry::{RetryPolicy, Service, Transient, retrying};

pub use connection::{CONNECTION_STRING_VARIABLE, CosmosConnection, ENDPOINT_VARIABLE};
pub use context::CosmosContextStore;
pub(crate) use context::SYSTEM_PROPERTIES;
pub use status::CosmosStatusStore;

/// The partition key path both containers must have (upstream's).
pub const PARTITION_KEY_PATH: &str = "/runId";

/// How long [`CosmosStores::connect`] waits for the account before giving up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the Cosmos stores could not be set up. Each message is one line that
/// says what to fix.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CosmosSetupError {
    #[error("COSMOS_DB_CONNECTION_STRING: {0}")]
    ConnectionString(String),
    #[error("COSMOS_DB_ENDPOINT: {0}")]
    Endpoint(String),
    /// The account is given without a key and no credential was supplied.
    #[error(
        "COSMOS_DB_ENDPOINT gives no key; choose an Entra ID credential with --azure-credential (FLOWCRAFT_AZURE_CREDENTIAL)"
    )]
    NoCredential,
    #[error(
        "Cosmos DB endpoint {endpoint} is unreachable ({detail}); check {setting} and that the account or emulator is running"
    )]
    Unreachable {
        endpoint: String,
        detail: String,
        setting: &'static str,
    },
    #[error(
        "Cosmos DB endpoint {endpoint} refused the AccountKey ({detail}); check COSMOS_DB_CONNECTION_STRING"
    )]
    Unauthorized { endpoint: String, detail: String },
    #[error(
        "Cosmos DB endpoint {endpoint} refused the Entra ID token ({detail}); give the identity a Cosmos DB data-plane role on the account (e.g. Cosmos DB Built-in Data Contributor)"
    )]
    TokenRefused { endpoint: String, detail: String },
    #[error("Cosmos database '{database}' does not exist; create it or pass --create-resources")]
    MissingDatabase { database: String },
    #[error(
        "Cosmos container '{container}' does not exist in database '{database}'; create it (partition key /runId) or pass --create-resources"
    )]
    MissingContainer { database: String, container: String },
    #[error(
        "Cosmos container '{container}' in database '{database}' has partition key {found}; flowcraft needs /runId (create a new container)"
    )]
    WrongPartitionKey {
        database: String,
        container: String,
        found: String,
    },
    #[error("Cosmos DB {operation} failed: {detail}")]
    Service { operation: String, detail: String },
}

/// The context and status stores of one Cosmos DB database.
#[derive(Clone)]
pub struct CosmosStores {
    pub context: CosmosContextStore,
    pub status: CosmosStatusStore,
    client: CosmosClient,
}

impl CosmosStores {
    /// Connects to the account, checks that `database` and both containers
    /// exist with partition key `/runId` (creating what is missing when
    /// `create_resources`), and returns the stores.
    pub async fn connect(
        connection: &CosmosConnection,
        database: &str,
        context_container: &str,
        status_container: &str,
        create_resources: bool,
    ) -> Result<Self, CosmosSetupError> {
        let endpoint = connection.endpoint().to_string();
        if connection.needs_credential() && connection.credential().is_none() {
            return Err(CosmosSetupError::NoCredential);
        }
        let setup = async {
            let client = build_client(connection).await?;
            let db = client.database_client(database);
            if create_resources {
                create_database(&client, &db, database).await?;
            }
            let (context, status) = tokio::try_join!(
                open_container(&db, database, context_container, create_resources),
                open_container(&db, database, status_container, create_resources),
            )?;
            Ok::<_, SetupFailure>(Self {
                context: CosmosContextStore::new(context),
                status: CosmosStatusStore::new(status),
                client,
            })
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, setup).await {
            Ok(Ok(stores)) => Ok(stores),
            Ok(Err(SetupFailure::Setup(error))) => Err(error),
            Ok(Err(SetupFailure::Sdk { operation, error })) => Err(classify_setup_error(
                connection, &endpoint, &operation, &error,
            )),
            Err(_) => Err(CosmosSetupError::Unreachable {
                endpoint,
                detail: format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()),
                setting: connection.setting(),
            }),
        }
    }

    /// The underlying SDK client (for tools and tests).
    pub fn client(&self) -> &CosmosClient {
        &self.client
    }
}

/// A setup step's failure, before it is turned into a [`CosmosSetupError`].
enum SetupFailure {
    Setup(CosmosSetupError),
    Sdk {
        operation: String,
        error: CosmosError,
    },
}

impl From<CosmosSetupError> for SetupFailure {
    fn from(error: CosmosSetupError) -> Self {
        SetupFailure::Setup(error)
    }
}

fn sdk(operation: impl Into<String>) -> impl FnOnce(CosmosError) -> SetupFailure {
    let operation = operation.into();
    move |error| SetupFailure::Sdk { operation, error }
}

async fn build_client(connection: &CosmosConnection) -> Result<CosmosClient, SetupFailure> {
    // An emulator on HTTPS has a self-signed certificate; one on plain HTTP
    // has none, and asking for the lenient mode there would only make the SDK
    // build two more HTTP clients (each loads the system's root certificates).
    let validation = if connection.is_emulator() && connection.endpoint().scheme() == "https" {
        ServerCertificateValidation::RequiredUnlessEmulator
    } else {
        ServerCertificateValidation::Required
    };
    let mut pool = ConnectionPoolOptions::builder().with_server_certificate_validation(validation);
    if connection.is_emulator() {
        // The local stand-in speaks HTTP/1.1 only.
        pool = pool.with_is_http2_allowed(false);
    }
    let pool = pool.build().map_err(sdk("client setup"))?;
    let runtime = CosmosRuntime::builder()
        .with_connection_pool(pool)
        .build()
        .await
        .map_err(sdk("client setup"))?;
    let mut operation = OperationOptions::default();
    operation.patch_strategy = Some(PatchStrategy::ServerSide);
    let endpoint = AccountEndpoint::from(connection.endpoint().clone());
    let account = match (connection.key(), connection.credential()) {
        (Some(key), _) => AccountReference::with_authentication_key(endpoint, key.clone()),
        (None, Some(credential)) => {
            AccountReference::with_credential(endpoint, credential.token_credential())
        }
        (None, None) => return Err(CosmosSetupError::NoCredential.into()),
    };
    CosmosClient::builder()
        .with_runtime(runtime)
        .with_binary_encoding_options(BinaryEncodingOptions::new().with_enabled(false))
        .with_default_operation_options(operation)
        .build(account, RoutingStrategy::PreferredRegions(Vec::new()))
        .await
        .map_err(sdk("connect"))
}

/// Creates `database` unless it exists. Read first: an Entra ID identity
/// may read a database it has no right to create.
async fn create_database(
    client: &CosmosClient,
    db: &DatabaseClient,
    database: &str,
) -> Result<(), SetupFailure> {
    match retry_transient("read database", || db.read(None)).await {
        Ok(_) => Ok(()),
        Err(error) if status_code(&error) == 404 => {
            match client.create_database(database, None).await {
                Ok(_) => Ok(()),
                Err(error) if status_code(&error) == 409 => Ok(()),
                Err(error) => Err(sdk(format!("creating database '{database}'"))(error)),
            }
        }
        Err(error) => Err(sdk(format!("reading database '{database}'"))(error)),
    }
}

/// What is missing when a container is not found: the database is read
/// only then, so that a connect to existing resources skips that round trip.
async fn missing(db: &DatabaseClient, database: &str, container: &str) -> SetupFailure {
    let database = database.to_owned();
    match db.read(None).await {
        Err(error) if status_code(&error) == 404 => {
            CosmosSetupError::MissingDatabase { database }.into()
        }
        _ => CosmosSetupError::MissingContainer {
            database,
            container: container.to_owned(),
        }
        .into(),
    }
}

async fn open_container(
    db: &DatabaseClient,
    database: &str,
    container: &str,
    create: bool,
) -> Result<ContainerClient, SetupFailure> {
    let client =
        match retry_transient("open container", || db.container_client(container, None)).await {
            Ok(client) => client,
            Err(error) if status_code(&error) == 404 && create => {
                let properties = ContainerProperties::new(
                    container.to_owned(),
                    PartitionKeyDefinition::from(PARTITION_KEY_PATH),
                );
                match db.create_container(properties, None).await {
                    Ok(_) => {}
                    Err(error) if status_code(&error) == 409 => {}
                    Err(error) => {
                        return Err(sdk(format!("creating container '{container}'"))(error));
                    }
                }
                retry_transient("open container", || db.container_client(container, None))
                    .await
                    .map_err(sdk(format!("opening container '{container}'")))?
            }
            Err(error) if status_code(&error) == 404 => {
                return Err(missing(db, database, container).await);
            }
            Err(error) => return Err(sdk(format!("opening container '{container}'"))(error)),
        };
    let properties: ContainerProperties = retry_transient("read container", || client.read(None))
        .await
        .and_then(|response| response.into_model())
        .map_err(sdk(format!("reading container '{container}'")))?;
    let paths = properties.partition_key.paths();
    if paths.len() != 1 || paths[0] != PARTITION_KEY_PATH {
        return Err(CosmosSetupError::WrongPartitionKey {
            database: database.to_owned(),
            container: container.to_owned(),
            found: paths.join(","),
        }
        .into());
    }
    Ok(client)
}

fn classify_setup_error(
    connection: &CosmosConnection,
    endpoint: &str,
    operation: &str,
    error: &CosmosError,
) -> CosmosSetupError {
    let detail = one_line(error);
    match status_code(error) {
        401 | 403 if connection.needs_credential() => CosmosSetupError::TokenRefused {
            endpoint: endpoint.to_owned(),
            detail,
        },
        401 | 403 => CosmosSetupError::Unauthorized {
            endpoint: endpoint.to_owned(),
            detail,
        },
        _ if is_connection_failure(error) => CosmosSetupError::Unreachable {
            endpoint: endpoint.to_owned(),
            detail,
            setting: connection.setting(),
        },
        _ => CosmosSetupError::Service {
            operation: operation.to_owned(),
            detail,
        },
    }
}

/// The HTTP status of an SDK error (synthetic for transport failures).
pub(crate) fn status_code(error: &CosmosError) -> u16 {
    u16::from(error.status().status_code())
}

/// Whether no (usable) answer came back: connection refused or reset,
/// timeouts, transient service unavailability.
pub(crate) fn is_connection_failure(error: &CosmosError) -> bool {
    error.status().is_transient() && status_code(error) != 429
}

/// The SDK error as one line.
pub(crate) fn one_line(error: &CosmosError) -> String {
    error
        .to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// One server-side PATCH of the document of run `run_id` (repeated when
/// throttled or on a broken connection, see [`retry_transient`]).
/// Server-side is requested explicitly: the SDK would run patches with
/// `remove` client-side and leave tracking fields behind. The response
/// carries no document (`Prefer: return=minimal`): Cosmos would otherwise
/// send the whole item back, a final context twice over for a status patch.
/// `instructions` builds the request body for each attempt, so that a large
/// patch is not kept as a spare copy for retries.
pub(crate) async fn patch_document(
    container: &ContainerClient,
    run_id: &str,
    instructions: impl Fn() -> azure_data_cosmos::models::PatchInstructions,
) -> Result<(), CosmosError> {
    let mut operation = azure_data_cosmos::options::OperationOptions::default();
    operation.content_response_on_write =
        Some(azure_data_cosmos::options::ContentResponseOnWrite::Disabled);
    let options = azure_data_cosmos::options::PatchItemOptions::default()
        .with_strategy(azure_data_cosmos::options::PatchStrategy::ServerSide)
        .with_operation_options(operation);
    retry_transient("patch", || {
        container.patch_item(
            run_id.to_owned(),
            run_id,
            instructions(),
            Some(options.clone()),
        )
    })
    .await
    .map(|_| ())
}

/// Runs a request that may safely run again, repeating it in place while it
/// is throttled (429 after the SDK's own retries, with the advised
/// `x-ms-retry-after-ms`) or finds no usable connection (the service is
/// restarting or unreachable, or the local stand-in closed an idle keep-alive
/// connection just as it was reused), within [`RetryPolicy::DEFAULT`]
/// (see [`crate::retry`]). `operation` names it in log lines.
pub(crate) async fn retry_transient<T, F, Fut>(
    operation: &'static str,
    request: F,
) -> Result<T, CosmosError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, CosmosError>>,
{
    retrying(
        Service::Cosmos,
        operation,
        RetryPolicy::DEFAULT,
        transient,
        one_line,
        request,
    )
    .await
    .0
}

/// Whether a failed request may be repeated, and after what.
pub(crate) fn transient(error: &CosmosError) -> Option<Transient> {
    if status_code(error) == 429 {
        let advised = error
            .response()
            .and_then(|response| response.headers().retry_after_ms)
            .map(Duration::from_millis);
        Some(Transient::Throttled(advised))
    } else if is_connection_failure(error) {
        Some(Transient::Unreachable)
    } else {
        None
    }
}

/// Unix seconds now.
pub(crate) fn now_seconds() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Refuses a run id that cannot be a Cosmos document id; `service` names the
/// store in the error.
pub(crate) fn check_run_id(service: &str, run_id: &str) -> Result<(), StoreError> {
    if run_id.is_empty() {
        return Err(StoreError::refused(service, "run id is empty"));
    }
    if run_id.contains(['/', '\\', '?', '#']) {
        return Err(StoreError::refused(
            service,
            format!(
                "run id '{run_id}' cannot be a Cosmos document id (it contains '/', '\\', '?' or '#')"
            ),
        ));
    }
    Ok(())
}

/// A failed request on `document` ("context" or "status") of a run;
/// permanent for the answers a retry cannot change (413, 400).
pub(crate) fn failure(
    service: &str,
    document: &str,
    operation: &str,
    run_id: &str,
    error: &CosmosError,
) -> StoreError {
    let detail = one_line(error);
    let what = format!("{operation} of the {document} of run '{run_id}'");
    refusal(service, &what, document, status_code(error), &detail)
        .unwrap_or_else(|| StoreError::new(service, format!("{what} failed: {detail}")))
}

/// The permanent error for `what` (a request on a run's `document`)
/// refused with HTTP `status`, if that status is a refusal.
fn refusal(
    service: &str,
    what: &str,
    document: &str,
    status: u16,
    detail: &str,
) -> Option<StoreError> {
    let reason = match (status, document) {
        (413, "context") => "the run's context would exceed Cosmos DB's 2 MB item limit (HTTP 413 RequestEntityTooLarge); keep large data outside the context (store it elsewhere and pass a reference)".to_owned(),
        (413, _) => "the document would exceed Cosmos DB's 2 MB item limit (HTTP 413 RequestEntityTooLarge)".to_owned(),
        (400, _) => format!("Cosmos DB rejected the request as malformed; sending it again cannot succeed: {detail}"),
        _ => return None,
    };
    Some(StoreError::refused(
        service,
        format!("{what} was refused: {reason}"),
    ))
}

#[cfg(test)]
mod refusal_tests {
    use super::refusal;

    #[test]
    fn refused_requests_are_permanent_and_say_what_to_change() {
        let what = "patch of the context of run 'r1'";
        let too_large = refusal("cosmos context", what, "context", 413, "").unwrap();
        assert!(too_large.is_permanent());
        assert!(
            too_large
                .message
                .starts_with("patch of the context of run 'r1' was refused")
                && too_large.message.contains("2 MB item limit")
                && too_large
                    .message
                    .contains("keep large data outside the context"),
            "{}",
            too_large.message
        );
        let malformed = refusal("cosmos status", what, "status", 400, "bad path").unwrap();
        assert!(malformed.is_permanent() && malformed.message.ends_with("bad path"));
        for passing in [404, 409, 412, 429, 449, 500, 503] {
            assert!(refusal("cosmos context", what, "context", passing, "").is_none());
        }
    }
}
