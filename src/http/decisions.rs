//! `GET /admin/decisions` and `GET /admin/decisions/{id}`: the decision log for operators,
//! filtered and keyset-paginated, behind the admin guard.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::app::App;
use crate::audit::query::{self, DEFAULT_LIMIT, Filter, QueryError};

fn invalid(name: &'static str, reason: impl Into<String>) -> QueryError {
    QueryError::Invalid {
        name,
        reason: reason.into(),
    }
}

/// Builds a filter from query parameters; unknown parameters are refused.
fn filter(params: &HashMap<String, String>) -> Result<Filter, QueryError> {
    const KNOWN: &[&str] = &[
        "agent", "tool", "decision", "kind", "since", "until", "limit", "cursor",
    ];
    if let Some(unknown) = params.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(QueryError::Invalid {
            name: "query",
            reason: format!(
                "unknown parameter `{}`",
                unknown.chars().take(64).collect::<String>()
            ),
        });
    }
    let time = |name: &'static str| -> Result<Option<i64>, QueryError> {
        params
            .get(name)
            .map(|t| query::parse_time(t).map_err(|reason| invalid(name, reason)))
            .transpose()
    };
    let limit = match params.get("limit") {
        Some(l) => l
            .parse::<usize>()
            .map_err(|_| invalid("limit", "not a number"))?,
        None => DEFAULT_LIMIT,
    };
    let after_seq = params
        .get("cursor")
        .map(|c| {
            c.parse::<i64>()
                .map_err(|_| invalid("cursor", "not a cursor from a previous page"))
        })
        .transpose()?;
    let filter = Filter {
        agent: params.get("agent").cloned(),
        tool: params.get("tool").cloned(),
        decision: params.get("decision").cloned(),
        kind: params.get("kind").cloned(),
        since_ms: time("since")?,
        until_ms: time("until")?,
        after_seq,
        limit,
    };
    filter.validate()?;
    Ok(filter)
}

/// `GET /admin/decisions?agent=&tool=&decision=&kind=&since=&until=&limit=&cursor=`.
pub async fn list(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    if let Err(response) = super::admin_guard::guard(&app, &headers, "admin:decisions").await {
        return response;
    }
    let path = app.audit.path().to_owned();
    let result = match filter(&params) {
        Ok(filter) => tokio::task::spawn_blocking(move || {
            query::open_read_only(&path).and_then(|conn| query::query(&conn, &filter))
        })
        .await
        .unwrap_or_else(|e| Err(QueryError::Unavailable(e.to_string()))),
        Err(e) => Err(e),
    };
    match result {
        Ok(page) => axum::Json(page).into_response(),
        Err(e) => super::error::query_error_response(&e),
    }
}

/// `GET /admin/decisions/{id}`: the decision record and its dispatch outcome, if any.
pub async fn get_one(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(response) = super::admin_guard::guard(&app, &headers, "admin:decisions").await {
        return response;
    }
    let path = app.audit.path().to_owned();
    let lookup = id.clone();
    let result = tokio::task::spawn_blocking(move || {
        query::open_read_only(&path).and_then(|conn| query::by_decision_id(&conn, &lookup))
    })
    .await
    .unwrap_or_else(|e| Err(QueryError::Unavailable(e.to_string())));
    match result {
        Ok(records) => axum::Json(json!({ "decision_id": id, "records": records })).into_response(),
        Err(e) => super::error::query_error_response(&e),
    }
}
