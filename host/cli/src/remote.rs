//! The client commands through the HTTP API of a `flowcraft-host serve`
//! (`--server URL`) instead of the Azure services: `start`, `status`,
//! `wait`, `resume`, `cancel`, `retry` and `poison` ask the server, which
//! answers from whichever backend it runs on. Each prints the API's answer
//! as one line of JSON; an API error is the command's error, with the
//! server's message.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use reqwest::{Method, StatusCode, Url};
use serde_json::{Value, json};
use tokio::time::Instant;

/// Where the client commands go instead of Azure.
#[derive(Args, Clone, Default)]
pub struct ServerArgs {
    /// Send the command to the HTTP API of a `flowcraft-host serve` at URL (such as
    /// http://127.0.0.1:8080) instead of the Azure services.
    #[arg(long, value_name = "URL", env = "FLOWCRAFT_SERVER")]
    pub server: Option<String>,
    /// The bearer token for --server (the first of a comma-separated list).
    #[arg(
        long,
        value_name = "TOKEN",
        env = "FLOWCRAFT_API_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
}

impl ServerArgs {
    /// The server to ask, when one is named.
    pub fn remote(&self) -> Option<Remote> {
        let base = self.server.as_deref()?.trim_end_matches('/').to_owned();
        let token = self
            .token
            .as_deref()
            .and_then(|tokens| tokens.split(',').next())
            .map(str::to_owned);
        Some(Remote {
            base,
            token,
            client: reqwest::Client::new(),
        })
    }
}

/// The longest long poll the API takes (`?wait=`).
const LONGEST_POLL: Duration = Duration::from_secs(60);

/// A `serve` API.
pub struct Remote {
    base: String,
    token: Option<String>,
    client: reqwest::Client,
}

impl Remote {
    /// `<server>/api/v1/<segments>?<query>`.
    fn url(&self, segments: &[&str], query: Option<&str>) -> Result<Url> {
        let not_a_base =
            || anyhow::anyhow!("--server {} is not an http:// or https:// URL", self.base);
        let mut url = Url::parse(&self.base).map_err(|_| not_a_base())?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(not_a_base());
        }
        url.path_segments_mut()
            .map_err(|()| not_a_base())?
            .pop_if_empty()
            .extend(["api", "v1"])
            .extend(segments);
        url.set_query(query);
        Ok(url)
    }

    /// `method` on the route of path `segments` (each escaped) and `query`,
    /// with `body`; the answer's JSON, or the API's error as the command's.
    async fn call(
        &self,
        method: Method,
        segments: &[&str],
        query: Option<&str>,
        body: Option<Value>,
    ) -> Result<Value> {
        let url = self.url(segments, query)?;
        let mut request = self.client.request(method, url.clone());
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.with_context(|| {
            format!(
                "cannot reach the server at {}: is `flowcraft-host serve` running there?",
                self.base
            )
        })?;
        let status = response.status();
        let text = response
            .text()
            .await
            .with_context(|| format!("reading the answer of {url}"))?;
        let answer: Value = serde_json::from_str(&text).with_context(|| {
            format!("{url} answered {status} with something other than JSON; is --server the address of `flowcraft-host serve`?")
        })?;
        if status.is_success() {
            return Ok(answer);
        }
        let message = answer["error"]["message"].as_str().unwrap_or(&text);
        match status {
            StatusCode::UNAUTHORIZED => {
                bail!(
                    "the server refused the request: {message} (pass --token or set FLOWCRAFT_API_TOKEN)"
                )
            }
            _ => bail!("the server answered {status}: {message}"),
        }
    }

    /// Starts a run; answers its id.
    pub async fn start(
        &self,
        blueprint_id: &str,
        run_id: Option<&str>,
        context: Value,
    ) -> Result<String> {
        let mut body = json!({"blueprintId": blueprint_id, "context": context});
        if let Some(run_id) = run_id {
            body["runId"] = json!(run_id);
        }
        let answer = self.call(Method::POST, &["runs"], None, Some(body)).await?;
        answer["runId"]
            .as_str()
            .map(str::to_owned)
            .context("the server's answer to a start has no runId")
    }

    /// The run as the API shows it.
    pub async fn status(&self, run_id: &str) -> Result<Value> {
        self.call(Method::GET, &["runs", run_id], None, None).await
    }

    /// Waits (long polls) until the run ends or awaits input, prints it and
    /// answers the exit status as `wait` does.
    pub async fn wait(&self, run_id: &str, timeout_secs: u64) -> Result<ExitCode> {
        let deadline = Instant::now() + Duration::from_secs(timeout_secs);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let poll = left.min(LONGEST_POLL).as_secs();
            let query = format!("wait={poll}");
            let run = self
                .call(Method::GET, &["runs", run_id], Some(&query), None)
                .await?;
            match run["status"].as_str() {
                Some("completed" | "awaiting") => return print_and_exit(&run, 0),
                Some("failed" | "cancelled") => return print_and_exit(&run, 1),
                _ if poll == 0 => {
                    eprintln!(
                        "flowcraft-host: run '{run_id}' is still running after {timeout_secs} s"
                    );
                    return Ok(ExitCode::from(1));
                }
                _ => {}
            }
        }
    }

    pub async fn resume(
        &self,
        run_id: &str,
        node_id: Option<&str>,
        action: Option<&str>,
        output: Option<Value>,
    ) -> Result<Value> {
        // The API reads a null field as an absent one.
        let body = json!({"nodeId": node_id, "action": action, "output": output});
        self.call(Method::POST, &["runs", run_id, "resume"], None, Some(body))
            .await
    }

    pub async fn cancel(&self, run_id: &str) -> Result<Value> {
        self.call(
            Method::POST,
            &["runs", run_id, "cancel"],
            None,
            Some(json!({})),
        )
        .await
    }

    pub async fn retry(&self, run_id: &str, context: Value) -> Result<Value> {
        let body = json!({"context": context});
        self.call(Method::POST, &["runs", run_id, "retry"], None, Some(body))
            .await
    }

    /// The dead letters, one JSON line each.
    pub async fn dead_letters(&self) -> Result<Vec<Value>> {
        let answer = self.call(Method::GET, &["poison"], None, None).await?;
        Ok(answer["messages"].as_array().cloned().unwrap_or_default())
    }

    /// Replays the dead letters with `ids` (all when empty).
    pub async fn replay(&self, ids: &[String]) -> Result<Value> {
        let body = if ids.is_empty() {
            json!({})
        } else {
            json!({"ids": ids})
        };
        self.call(Method::POST, &["poison", "replay"], None, Some(body))
            .await
    }
}

fn print_and_exit(run: &Value, code: u8) -> Result<ExitCode> {
    println!("{}", serde_json::to_string(run)?);
    Ok(ExitCode::from(code))
}
