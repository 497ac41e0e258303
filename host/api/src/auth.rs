//! Bearer tokens: with tokens configured, a request needs
//! `Authorization: Bearer <one of them>`; without, every request passes (the
//! server then listens on loopback only, which `serve` enforces).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::{Api, ApiError};

/// The accepted tokens, kept as digests: comparing digests takes the same
/// time however much of a guess matches.
#[derive(Clone, Default)]
pub struct Tokens(Vec<[u8; 32]>);

impl Tokens {
    /// `tokens` (empty strings are ignored).
    pub fn new<'a>(tokens: impl IntoIterator<Item = &'a str>) -> Self {
        Self(
            tokens
                .into_iter()
                .filter(|token| !token.is_empty())
                .map(digest)
                .collect(),
        )
    }

    /// Whether any token is required.
    pub fn required(&self) -> bool {
        !self.0.is_empty()
    }

    fn accepts(&self, token: &str) -> bool {
        let presented = digest(token);
        self.0.contains(&presented)
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Refuses a request without an accepted bearer token (when tokens are set).
pub async fn require_token<B: Send + Sync + 'static>(
    State(api): State<Arc<Api<B>>>,
    request: Request,
    next: Next,
) -> Response {
    if !api.tokens.required() {
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    match presented {
        Some(token) if api.tokens.accepts(token.trim()) => next.run(request).await,
        Some(_) => unauthorized("the bearer token is not accepted"),
        None => unauthorized("this server requires `Authorization: Bearer <token>`"),
    }
}

fn unauthorized(message: &str) -> Response {
    let mut response =
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    response
}
