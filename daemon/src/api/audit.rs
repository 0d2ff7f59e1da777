//! `GET /v1/audit`: the tenant's audit records, oldest first, for `auditor` and `admin` tokens.

use super::ca::page_limit;
use crate::app::{App, Caller};
use crate::auth::Perm;
use crate::error::ApiError;
use rocket::serde::json::Json;
use rocket::{get, routes, Route, State};
use scaivault_store::AuditRow;
use schemars::JsonSchema;
use serde::Serialize;

/// The body schemas of these routes (`GET /v1/openapi.json`).
pub(super) fn bodies(b: &mut super::schemas::Bodies) {
    b.answer::<AuditList>("GET", "/v1/audit");
}

pub fn routes() -> Vec<Route> {
    routes![list]
}

#[derive(Debug, Serialize, JsonSchema)]
struct AuditList {
    items: Vec<AuditRow>,
    next_cursor: Option<String>,
}

#[get("/v1/audit?<limit>&<cursor>")]
async fn list(
    app: &State<App>,
    caller: Caller,
    limit: Option<&str>,
    cursor: Option<String>,
) -> Result<Json<AuditList>, ApiError> {
    app.require(&caller, Perm::AuditRead, "audit.list", None)
        .await?;
    let limit = page_limit(app, limit)?;
    let tenant = caller.tenant_id.clone();
    let page = app
        .db(move |s| {
            s.read(|tx| tx.list_audit(Some(&tenant), cursor.as_deref(), limit))
                .map_err(|e| match e {
                    scaivault_store::Error::Conflict(_) => {
                        ApiError::bad_request("invalid_cursor", "cursor is not valid")
                    }
                    other => ApiError::from(other),
                })
        })
        .await?;
    Ok(Json(AuditList {
        items: page.items,
        next_cursor: page.next_cursor,
    }))
}
