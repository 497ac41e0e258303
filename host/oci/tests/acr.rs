//! The Azure Container Registry token exchange against a stand-in of its two
//! endpoints (`/oauth2/exchange` and `/oauth2/token`) that the test serves:
//! the forms we send, the tokens we take, and the refusals we explain.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Form, Json, Router};
use flowcraft_oci::{AcrTokens, EntraTokens, OciError};
use serde_json::{Value, json};

type Forms = Arc<Mutex<Vec<(String, HashMap<String, String>)>>>;

/// Gives the same Entra token every time.
struct Fixed(&'static str);

impl EntraTokens for Fixed {
    fn token(&self) -> Pin<Box<dyn Future<Output = Result<String, String>> + Send + '_>> {
        Box::pin(async move { Ok(self.0.to_owned()) })
    }
}

/// The stand-in: exchanges `entra-token` for `refresh-1`, and gives
/// `pull-token` for a pull scope of `refresh-1`; refuses anything else (a
/// push scope with 403, as for an identity with AcrPull only).
async fn stand_in() -> (SocketAddr, Forms) {
    let forms = Forms::default();
    let app = Router::new()
        .route("/oauth2/exchange", post(exchange))
        .route("/oauth2/token", post(token))
        .with_state(forms.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (address, forms)
}

async fn exchange(
    State(forms): State<Forms>,
    Form(form): Form<HashMap<String, String>>,
) -> Result<Json<Value>, StatusCode> {
    forms
        .lock()
        .unwrap()
        .push(("exchange".into(), form.clone()));
    let valid = form.get("grant_type").map(String::as_str) == Some("access_token")
        && form.get("access_token").map(String::as_str) == Some("entra-token");
    valid
        .then(|| Json(json!({"refresh_token": "refresh-1"})))
        .ok_or(StatusCode::UNAUTHORIZED)
}

async fn token(
    State(forms): State<Forms>,
    Form(form): Form<HashMap<String, String>>,
) -> Result<Json<Value>, StatusCode> {
    forms.lock().unwrap().push(("token".into(), form.clone()));
    if form.get("grant_type").map(String::as_str) != Some("refresh_token")
        || form.get("refresh_token").map(String::as_str) != Some("refresh-1")
    {
        return Err(StatusCode::UNAUTHORIZED);
    }
    match form.get("scope").map(String::as_str) {
        Some(scope) if scope.ends_with(":pull") => Ok(Json(json!({"access_token": "pull-token"}))),
        _ => Err(StatusCode::FORBIDDEN),
    }
}

#[tokio::test]
async fn an_entra_token_becomes_a_repository_token_through_the_two_endpoints() {
    let (address, forms) = stand_in().await;
    let registry = address.to_string();
    let tokens = AcrTokens::new(&registry, Arc::new(Fixed("entra-token")));
    let token = tokens.access_token("nodes/orders", "pull").await.unwrap();
    assert_eq!(token, "pull-token");
    let forms = forms.lock().unwrap();
    let (endpoint, exchange) = &forms[0];
    assert_eq!(endpoint, "exchange");
    assert_eq!(exchange["service"], registry);
    let (endpoint, token) = &forms[1];
    assert_eq!(endpoint, "token");
    assert_eq!(token["scope"], "repository:nodes/orders:pull");
    assert_eq!(token["service"], registry);
}

#[tokio::test]
async fn refusals_name_the_registry_the_step_and_the_role_to_grant() {
    let (address, _) = stand_in().await;
    let registry = address.to_string();
    let stranger = AcrTokens::new(&registry, Arc::new(Fixed("someone-else")));
    let error = stranger
        .access_token("nodes/orders", "pull")
        .await
        .unwrap_err();
    assert!(matches!(error, OciError::Acr { .. }), "{error}");
    let message = error.to_string();
    assert!(
        message.contains(&registry) && message.contains("exchang") && message.contains("AcrPull"),
        "{message}"
    );

    let puller = AcrTokens::new(&registry, Arc::new(Fixed("entra-token")));
    let message = puller
        .access_token("nodes/orders", "pull,push")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("AcrPush") && message.contains("403"),
        "{message}"
    );
}

#[tokio::test]
async fn a_registry_that_does_not_answer_is_named() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let registry = closed.local_addr().unwrap().to_string();
    drop(closed);
    let tokens = AcrTokens::new(&registry, Arc::new(Fixed("entra-token")));
    let message = tokens
        .access_token("nodes/orders", "pull")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        message.contains(&registry) && message.contains("no answer"),
        "{message}"
    );
}
