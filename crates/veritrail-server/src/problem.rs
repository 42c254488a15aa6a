//! RFC 7807 problem details: every error the API returns has this shape.

use axum::http::{header, HeaderValue, StatusCode};
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
        }
    }
}
