//! The dashboard: a page and its script and style, embedded in the binary
//! (no CDN, no Node at run time) and served without a token, since the page
//! itself asks for one (kept in the tab's session storage, sent as a bearer
//! token, never in a URL). The page is a client of the API; every path it
//! shows (`/`, `/runs/{runId}`, `/blueprints`, `/bundles`, `/poison`) answers
//! the same page, which routes in the browser.
//!
//! Hand-written rather than a framework's build output: four pages of tables
//! and one SVG graph need no dependencies, and the source that ships is the
//! source that is reviewed. A strict content security policy keeps any
//! text that came from a run (node output is untrusted) from running as
//! script.

use axum::Router;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

const PAGE: &str = include_str!("../dashboard/index.html");
const SCRIPT: &str = include_str!("../dashboard/app.js");
const STYLE: &str = include_str!("../dashboard/style.css");

/// Scripts, styles and requests from this server only; no inline script,
/// no framing.
const POLICY: &str = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// The dashboard's routes.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(page))
        .route("/runs/{run_id}", get(page))
        .route("/blueprints", get(page))
        .route("/blueprints/{blueprint_id}", get(page))
        .route("/bundles", get(page))
        .route("/poison", get(page))
        .route("/assets/app.js", get(script))
        .route("/assets/style.css", get(style))
}

async fn page() -> Response {
    asset("text/html; charset=utf-8", PAGE)
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}
