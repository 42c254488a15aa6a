//! The few HTTP calls the benchmark makes to a Veritrail server: ingest, reads, and creating and
//! revoking the run's keys.

use anyhow::{bail, Context};
use bytes::Bytes;
use reqwest::blocking::{Body, RequestBuilder, Response};
use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use reqwest::Method;
use serde_json::Value;

/// An HTTP client of one server that sends the API key as a bearer token when there is one.
pub struct Client {
    http: reqwest::blocking::Client,
    base: String,
    /// `Bearer <key>`, built once.
    auth: Option<HeaderValue>,
}

impl Client {
    /// A client of the server at `url`, with `key`.
    pub fn new(url: &str, key: Option<&str>) -> anyhow::Result<Client> {
        let http = reqwest::blocking::Client::builder()
            .timeout(None)
            .build()
            .context("building the HTTP client")?;
        let auth = key
            .filter(|k| !k.is_empty())
            .map(|k| {
                let mut v = HeaderValue::from_str(&format!("Bearer {k}"))
                    .context("the key is not a valid header value")?;
                v.set_sensitive(true);
                anyhow::Ok(v)
            })
            .transpose()?;
        Ok(Client {
            http,
            base: url.trim_end_matches('/').to_string(),
            auth,
        })
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let r = self.http.request(method, format!("{}{path}", self.base));
        match &self.auth {
            Some(a) => r.header(AUTHORIZATION, a.clone()),
            None => r,
        }
    }

    /// POST a JSON body; the response must be a success.
    pub fn post_json(&self, path: &str, body: impl Into<Body>) -> anyhow::Result<Response> {
        self.send(
            self.request(Method::POST, path)
                .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
                .body(body),
        )
    }

    /// POST a JSON body the way a producer does: a 429 or 503 (overload) is sent again after a
    /// pause, any other failure is an error.
    pub fn post_json_retrying(&self, path: &str, body: &Bytes) -> anyhow::Result<Response> {
        loop {
            let resp = self
                .request(Method::POST, path)
                .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
                .body(body.clone())
                .send()
                .with_context(|| format!("cannot reach the Veritrail server at {}", self.base))?;
            let status = resp.status().as_u16();
            if status != 429 && status != 503 {
                return check(resp);
            }
            // Shorter than the server's Retry-After (seconds): the load stays at the limit.
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// GET with query parameters; the response must be a success.
    pub fn get(&self, path: &str, params: &[(String, String)]) -> anyhow::Result<Response> {
        self.send(self.request(Method::GET, path).query(params))
    }

    /// DELETE; the response must be a success.
    pub fn delete(&self, path: &str) -> anyhow::Result<Response> {
        self.send(self.request(Method::DELETE, path))
    }

    fn send(&self, request: RequestBuilder) -> anyhow::Result<Response> {
        let resp = request
            .send()
            .with_context(|| format!("cannot reach the Veritrail server at {}", self.base))?;
        check(resp)
    }
}

/// Turns an error response (problem+json or not) into a readable error.
fn check(resp: Response) -> anyhow::Result<Response> {
    if resp.status().is_success() {
        return Ok(resp);
    }
    let status = resp.status();
    let body = resp.text().unwrap_or_default();
    let detail = serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|p| {
            p["detail"]
                .as_str()
                .or(p["title"].as_str())
                .map(str::to_string)
        })
        .unwrap_or_else(|| body.trim().to_string());
    bail!("server answered {status}: {detail}")
}
