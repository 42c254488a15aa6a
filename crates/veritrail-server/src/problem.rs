//! RFC 7807 problem details: every error the API returns has this shape.

use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use veritrail_store::StoreError;

/// An error answer: status, a short title, a specific detail, optional extra members.
#[derive(Debug)]
pub struct Problem {
    pub status: StatusCode,
    pub title: &'static str,
    pub detail: String,
    pub extra: Option<(&'static str, Value)>,
    pub retry_after_s: Option<u32>,
    /// Further header fields of the answer, such as the `Accept-Encoding` of a 415 (boxed: most
    /// problems have none, and a `Result` carrying a problem stays small).
    pub headers: Option<Box<HeaderMap>>,
}

impl Problem {
    /// A problem with no extra members.
    pub fn new(status: StatusCode, title: &'static str, detail: impl Into<String>) -> Problem {
        Problem {
            status,
            title,
            detail: detail.into(),
            extra: None,
            retry_after_s: None,
            headers: None,
        }
    }

    /// 400 Bad Request.
    pub fn bad_request(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::BAD_REQUEST, "Bad request", detail)
    }

    /// 404 Not Found.
    pub fn not_found(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::NOT_FOUND, "Not found", detail)
    }

    /// Adds a member such as `errors`.
    pub fn with(mut self, name: &'static str, value: Value) -> Problem {
        self.extra = Some((name, value));
        self
    }

    /// Adds a header field to the answer.
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Problem {
        self.headers
            .get_or_insert_with(Default::default)
            .insert(name, value);
        self
    }

    /// The label used for the rejects metric.
    pub fn reason(&self) -> &'static str {
        match self.status.as_u16() {
            400 => "invalid",
            409 => "conflict",
            413 => "too_large",
            415 => "media_type",
            429 => "overloaded",
            503 => "unavailable",
            _ => "other",
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut body = json!({
            "type": "about:blank",
            "title": self.title,
            "status": self.status.as_u16(),
            "detail": self.detail,
        });
        if let Some((k, v)) = self.extra {
            body[k] = v;
        }
        let mut resp = (self.status, body.to_string()).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, crate::access::challenge());
        }
        if let Some(s) = self.retry_after_s {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        if let Some(headers) = self.headers {
            resp.headers_mut().extend(*headers);
        }
        resp
    }
}

impl From<StoreError> for Problem {
    fn from(e: StoreError) -> Problem {
        let detail = e.to_string();
        let (status, title, retry) = match &e {
            StoreError::Conflict { .. } => (
                StatusCode::CONFLICT,
                "Event id reused with different content",
                None,
            ),
            StoreError::Overloaded { .. } => (StatusCode::TOO_MANY_REQUESTS, "Overloaded", Some(1)),
            StoreError::OutOfRange(_) => (StatusCode::BAD_REQUEST, "Out of range", None),
            StoreError::Closed => (StatusCode::SERVICE_UNAVAILABLE, "Shutting down", Some(5)),
            StoreError::Failed(_) => (StatusCode::SERVICE_UNAVAILABLE, "Storage failure", Some(30)),
            StoreError::Unwritable(_) => {
                tracing::error!(error = %e, "append failed");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Storage unavailable",
                    Some(5),
                )
            }
            StoreError::Damaged(_) => {
                tracing::error!(error = %e, "integrity failure");
                metrics::counter!("veritrail_integrity_failures_total").increment(1);
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Stored data failed an integrity check",
                    None,
                )
            }
            _ => {
                tracing::error!(error = %e, "storage error");
                (StatusCode::INTERNAL_SERVER_ERROR, "Storage error", None)
            }
        };
        Problem {
            status,
            title,
            detail,
            extra: None,
            retry_after_s: retry,
            headers: None,
        }
    }
}

/// Longest request target (path and query) the API reads.
pub const MAX_URI_BYTES: usize = 8 << 10;
/// Most bytes of request headers, names and values together.
pub const MAX_HEADER_BYTES: usize = 64 << 10;
/// Most request header fields.
pub const MAX_HEADERS: usize = 100;

/// Refuses oversized request targets (414) and headers (431) with a problem document before any
/// routing. The HTTP parser's own limits sit above these (`crate::connections`), so it answers
/// only requests far beyond them (a target over 64 KiB, headers over 1 MiB or 256 fields),
/// with a bare status.
pub async fn request_limits(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let uri = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if uri > MAX_URI_BYTES {
        return Problem::new(
            StatusCode::URI_TOO_LONG,
            "Request target too long",
            format!("the path and query are {uri} bytes; at most {MAX_URI_BYTES} are read"),
        )
        .into_response();
    }
    let headers = req.headers();
    let size: usize = headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    if headers.len() > MAX_HEADERS || size > MAX_HEADER_BYTES {
        return Problem::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "Request headers too large",
            format!(
                "{} header fields of {size} bytes; at most {MAX_HEADERS} fields and {MAX_HEADER_BYTES} bytes are read",
                headers.len()
            ),
        )
        .into_response();
    }
    next.run(req).await
}

/// A path parameter, with a problem document when it is not valid percent-encoded UTF-8.
pub struct PathText(pub String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for PathText {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<PathText, Problem> {
        axum::extract::Path::<String>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(s)| PathText(s))
            .map_err(|e| Problem::bad_request(format!("the path is not valid: {e}")))
    }
}

/// Query parameters as name/value pairs, with a problem document when they cannot be decoded.
pub struct QueryPairs(pub Vec<(String, String)>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for QueryPairs {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<QueryPairs, Problem> {
        axum::extract::Query::<Vec<(String, String)>>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(q)| QueryPairs(q))
            .map_err(|e| Problem::bad_request(format!("the query string is not valid: {e}")))
    }
}
