//! Wire helpers shared by the handlers: JSON responses, the
//! `{"statusCode","message"}` error body, query-string access and the spec's
//! pagination envelope (`_pagination` and `_links`).

use axum::body::Body;
use axum::response::Response;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::StatusCode;
use serde_json::{json, Value};

/// A JSON response with `status`.
pub(super) fn json(status: StatusCode, body: &Value) -> Response {
    let bytes = serde_json::to_vec(body).expect("a JSON value serialises");
    let mut resp = Response::new(Body::from(bytes));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// An empty response (204 and the like).
pub(super) fn empty(status: StatusCode) -> Response {
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = status;
    resp
}

/// The API's error body: `{"statusCode": N, "message": "…"}`.
pub(super) fn api_error(status: StatusCode, message: &str) -> Response {
    json(
        status,
        &json!({ "statusCode": status.as_u16(), "message": message }),
    )
}

/// An API error not yet rendered, so handlers can `?` it cheaply; it
/// becomes the `{"statusCode","message"}` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    /// 400 with `message`.
    pub(super) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 404 `Not Found`.
    pub(super) fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "Not Found")
    }

    pub(super) fn into_response(self) -> Response {
        api_error(self.status, &self.message)
    }
}

/// The decoded query string, in order (repeated keys stay repeated).
#[derive(Debug, Default)]
pub(super) struct Query(Vec<(String, String)>);

impl Query {
    pub(super) fn parse(raw: Option<&str>) -> Self {
        let pairs = url::form_urlencoded::parse(raw.unwrap_or("").as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        Query(pairs)
    }

    /// Every value of `name`, in order (a repeated parameter).
    pub(super) fn get_all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The last value of `name`, if present.
    pub(super) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A boolean filter: `true`/`false`, anything else is a 400.
    pub(super) fn get_bool(&self, name: &str) -> Result<Option<bool>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some("true") => Ok(Some(true)),
            Some("false") => Ok(Some(false)),
            Some(_) => Err(ApiError::bad_request(format!(
                "{name} must be a boolean value"
            ))),
        }
    }

    /// A positive integer parameter, `default` when absent.
    fn get_positive(&self, name: &str, default: u64) -> Result<u64, ApiError> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => match v.parse::<u64>() {
                Ok(n) if n >= 1 => Ok(n),
                _ => Err(ApiError::bad_request(format!(
                    "{name} must be a positive integer number"
                ))),
            },
        }
    }
}

/// The page a list request asked for, after defaults and the size cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct PageRequest {
    /// 1-based page number.
    pub page: u64,
    /// Effective page size.
    pub size: u64,
}

/// Default page size when `size` is not given.
const DEFAULT_PAGE_SIZE: u64 = 10;

impl PageRequest {
    /// Reads `page` (default 1) and `size` (default 10, capped at `cap`).
    pub(super) fn from_query(query: &Query, cap: usize) -> Result<Self, ApiError> {
        let page = query.get_positive("page", 1)?;
        let cap = (cap as u64).max(1);
        let size = query.get_positive("size", DEFAULT_PAGE_SIZE)?.min(cap);
        Ok(PageRequest { page, size })
    }
}

/// Builds a list response for `items` (already filtered and ordered).
/// `base` is the path `_links` point to; the real API is inconsistent about
/// the leading slash, so the caller chooses.
/// Orders a list as `orderBy=field:asc|desc` asks (repeated: the first is
/// the primary key). A field outside `sortable`, or a direction other than
/// `asc`/`desc`, is a 400. Without `orderBy` the list keeps its order, or
/// (`shift`) starts at a different item on every request.
pub(super) fn order(
    mut items: Vec<Value>,
    q: &Query,
    sortable: &[&str],
    shift: Option<usize>,
) -> Result<Vec<Value>, ApiError> {
    let mut keys = Vec::new();
    for spec in q.get_all("orderBy") {
        let (field, dir) = spec.split_once(':').unwrap_or((spec, "asc"));
        if !sortable.contains(&field) {
            return Err(ApiError::bad_request(format!(
                "orderBy: {field} is not a sortable field"
            )));
        }
        let desc = match dir.to_ascii_lowercase().as_str() {
            "asc" => false,
            "desc" => true,
            _ => {
                return Err(ApiError::bad_request(
                    "orderBy: direction must be asc or desc",
                ))
            }
        };
        keys.push((field.to_owned(), desc));
    }
    if keys.is_empty() {
        if let Some(shift) = shift.filter(|_| !items.is_empty()) {
            let len = items.len();
            items.rotate_left(shift % len);
        }
        return Ok(items);
    }
    let cmp = |a: &Value, b: &Value| match (a, b) {
        (Value::Number(x), Value::Number(y)) => x
            .as_f64()
            .partial_cmp(&y.as_f64())
            .unwrap_or(std::cmp::Ordering::Equal),
        _ => a.to_string().cmp(&b.to_string()),
    };
    items.sort_by(|a, b| {
        keys.iter()
            .map(|(field, desc)| {
                let o = cmp(&a[field.as_str()], &b[field.as_str()]);
                if *desc {
                    o.reverse()
                } else {
                    o
                }
            })
            .find(|o| o.is_ne())
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    Ok(items)
}

pub(super) fn list_response(items: Vec<Value>, req: PageRequest, base: &str) -> Response {
    let total = items.len() as u64;
    let total_pages = total.div_ceil(req.size);
    let start = (req.page - 1).saturating_mul(req.size);
    let data: Vec<Value> = items
        .into_iter()
        .skip(usize::try_from(start).unwrap_or(usize::MAX))
        .take(usize::try_from(req.size).unwrap_or(usize::MAX))
        .collect();
    let link = |page: u64| format!("{base}?page={page}&size={}", req.size);
    let mut links = serde_json::Map::new();
    links.insert("self".into(), link(req.page).into());
    links.insert("first".into(), link(1).into());
    if req.page > 1 {
        links.insert("previous".into(), link(req.page - 1).into());
    }
    if req.page < total_pages {
        links.insert("next".into(), link(req.page + 1).into());
    }
    links.insert("last".into(), link(total_pages.max(1)).into());
    json(
        StatusCode::OK,
        &json!({
            "_pagination": {
                "size": req.size,
                "totalElements": total,
                "totalPages": total_pages,
                "page": req.page,
            },
            "data": data,
            "_links": links,
        }),
    )
}

/// A single-resource response: `{"data": [item], "_links": {"self": …}}`.
pub(super) fn find_response(status: StatusCode, item: Value, self_link: &str) -> Response {
    json(
        status,
        &json!({ "data": [item], "_links": { "self": self_link } }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_request_defaults_caps_and_rejects() {
        let q = |s: &str| Query::parse(Some(s));
        let req = |s: &str, cap| PageRequest::from_query(&q(s), cap).ok();
        assert_eq!(req("", 100), Some(PageRequest { page: 1, size: 10 }));
        assert_eq!(
            req("page=3&size=500", 100),
            Some(PageRequest { page: 3, size: 100 })
        );
        assert_eq!(req("size=2", 100), Some(PageRequest { page: 1, size: 2 }));
        assert_eq!(req("page=0", 100), None);
        assert_eq!(req("size=-1", 100), None);
        assert_eq!(req("size=abc", 100), None);
        assert_eq!(q("a=1&a=2").get("a"), Some("2"));
        assert_eq!(q("email=a%40b.c").get("email"), Some("a@b.c"));
        assert!(q("enabled=yes").get_bool("enabled").is_err());
    }
}
