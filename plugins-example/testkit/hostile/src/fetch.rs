//! Outbound HTTP through `wasi:http`: the host sends a request only to hosts
//! granted to the bundle, so `fetch` reports what happened instead of failing.

use flowcraft_sdk::{Context, Ignore, NodeError, Output};
use serde::{Deserialize, Serialize};

/// At most this much of a response body is kept.
#[cfg(target_arch = "wasm32")]
const MAX_BODY_BYTES: usize = 256 << 10;

#[derive(Deserialize)]
pub struct FetchParams {
    url: String,
}

/// `{status, body}` when a response arrived, `{error}` otherwise.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Fetched {
    Response { status: u16, body: String },
    Failed { error: String },
}

pub fn fetch(
    _: &mut Context,
    _: Ignore,
    params: FetchParams,
) -> Result<Output<Fetched>, NodeError> {
    Ok(Output::new(match get(&params.url) {
        Ok((status, body)) => Fetched::Response { status, body },
        Err(error) => Fetched::Failed { error },
    }))
}

/// `http://host[:port]/path` or `https://…` → (scheme, authority, path with query).
fn split_url(url: &str) -> Result<(bool, &str, &str), String> {
    let (https, rest) = if let Some(rest) = url.strip_prefix("https://") {
        (true, rest)
    } else if let Some(rest) = url.strip_prefix("http://") {
        (false, rest)
    } else {
        return Err(format!("'{url}' is not an http:// or https:// URL"));
    };
    let (authority, path) = match rest.find('/') {
        Some(at) => rest.split_at(at),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(format!("'{url}' has no host"));
    }
    Ok((https, authority, path))
}

#[cfg(target_arch = "wasm32")]
fn get(url: &str) -> Result<(u16, String), String> {
    use wasi::http::outgoing_handler;
    use wasi::http::types::{Fields, IncomingBody, Method, OutgoingRequest, Scheme};
    use wasi::io::streams::StreamError;

    let (https, authority, path) = split_url(url)?;
    let request = OutgoingRequest::new(Fields::new());
    let invalid = |part: &str| format!("the request {part} was refused: {url}");
    request
        .set_method(&Method::Get)
        .map_err(|()| invalid("method"))?;
    let scheme = if https { Scheme::Https } else { Scheme::Http };
    request
        .set_scheme(Some(&scheme))
        .map_err(|()| invalid("scheme"))?;
    request
        .set_authority(Some(authority))
        .map_err(|()| invalid("authority"))?;
    request
        .set_path_with_query(Some(path))
        .map_err(|()| invalid("path"))?;

    let pending = outgoing_handler::handle(request, None).map_err(|e| e.to_string())?;
    pending.subscribe().block();
    let response = match pending.get() {
        Some(Ok(result)) => result.map_err(|e| e.to_string())?,
        Some(Err(())) => return Err("the response was already taken".into()),
        None => return Err("the response is not ready after waiting for it".into()),
    };
    let status = response.status();
    let body = response
        .consume()
        .map_err(|()| "the body was already taken".to_owned())?;
    let stream = body
        .stream()
        .map_err(|()| "the body stream was already taken".to_owned())?;
    let mut bytes = Vec::new();
    loop {
        match stream.blocking_read(64 << 10) {
            Ok(chunk) => {
                bytes.extend_from_slice(&chunk);
                if bytes.len() >= MAX_BODY_BYTES {
                    bytes.truncate(MAX_BODY_BYTES);
                    break;
                }
            }
            Err(StreamError::Closed) => break,
            Err(StreamError::LastOperationFailed(e)) => {
                return Err(format!("reading the body failed: {}", e.to_debug_string()));
            }
        }
    }
    drop(stream);
    drop(IncomingBody::finish(body));
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}

/// Native builds (unit tests) have no `wasi:http`.
#[cfg(not(target_arch = "wasm32"))]
fn get(url: &str) -> Result<(u16, String), String> {
    split_url(url)?;
    Err("outbound HTTP needs the wasm32-wasip2 component build".into())
}

#[cfg(test)]
mod tests {
    use flowcraft_sdk::testing::{Call, TestHost};
    use serde_json::json;

    use super::split_url;
    use crate::BUNDLE;

    #[test]
    fn urls_split_into_scheme_authority_and_path() {
        assert_eq!(
            split_url("http://127.0.0.1:8080/a?b=1"),
            Ok((false, "127.0.0.1:8080", "/a?b=1"))
        );
        assert_eq!(
            split_url("https://api.example.com"),
            Ok((true, "api.example.com", "/"))
        );
        assert!(split_url("ftp://x/").is_err());
        assert!(split_url("http:///x").is_err());
    }

    #[test]
    fn fetch_reports_errors_as_data() {
        let call = Call::new("fetch").params(json!({"url": "gopher://x"}));
        let output = TestHost::new()
            .execute(&BUNDLE, call)
            .unwrap()
            .output
            .unwrap();
        assert!(
            output["error"].as_str().unwrap().contains("not an http"),
            "{output}"
        );
    }
}
