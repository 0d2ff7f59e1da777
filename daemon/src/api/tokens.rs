//! `/v1/auth/tokens`: admins mint, list and revoke their tenant's tokens.

use super::ca::page_limit;
use super::problem::Body;
use crate::app::{App, Caller};
use crate::auth::{self, Perm};
use crate::error::ApiError;
use rocket::http::Status;
use rocket::serde::json::Json;
use rocket::{delete, get, post, routes, Route, State};
use scaivault_core::time_util;
use scaivault_store::TokenRow;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The body schemas of these routes (`GET /v1/openapi.json`).
pub(super) fn bodies(b: &mut super::schemas::Bodies) {
    b.request::<CreateTokenRequest>("POST", "/v1/auth/tokens");
    b.answer::<CreatedToken>("POST", "/v1/auth/tokens");
    b.answer::<TokenList>("GET", "/v1/auth/tokens");
    b.answer::<Revoked>("DELETE", "/v1/auth/tokens/{id}");
}

pub fn routes() -> Vec<Route> {
    routes![create, list, revoke]
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct CreateTokenRequest {
    policies: Vec<String>,
    #[serde(default)]
    ttl: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
struct CreatedToken {
    id: String,
    token: String,
    policies: Vec<String>,
    expires_at: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
#[schemars(rename = "Token")]
struct TokenView {
    id: String,
    name: Option<String>,
    policies: Vec<String>,
    created_at: String,
    expires_at: Option<String>,
    revoked_at: Option<String>,
}

impl From<TokenRow> for TokenView {
    fn from(t: TokenRow) -> Self {
        TokenView {
            id: t.id,
            name: t.name,
            policies: t.policies,
            created_at: t.created_at,
            expires_at: t.expires_at,
            revoked_at: t.revoked_at,
        }
    }
}

/// Mints a token row for `tenant_id` (used by the API and the CLI). Returns the row and the
/// secret token.
///
/// # Errors
/// `400` for unknown policies or a bad ttl.
pub fn new_token(
    tenant_id: &str,
    mut policies: Vec<String>,
    ttl: Option<&str>,
    name: Option<String>,
) -> Result<(TokenRow, auth::NewToken), ApiError> {
    auth::check_policies(&policies)?;
    // A policy given twice is one grant: stored (and shown) once, in the order first given.
    let mut seen = std::collections::HashSet::new();
    policies.retain(|p| seen.insert(p.clone()));
    if let Some(n) = &name {
        if n.is_empty() || n.len() > 128 || n.chars().any(scaivault_core::name::is_hidden) {
            return Err(ApiError::bad_request(
                "invalid_name",
                "a token name is 1 to 128 bytes without control or invisible characters",
            ));
        }
    }
    let now = time_util::now();
    let expires_at = match ttl {
        None => None,
        Some(t) => {
            let secs = scaivault_core::duration::parse_seconds(t)?;
            if secs == 0 {
                return Err(ApiError::bad_request(
                    "invalid_duration",
                    "ttl must be positive",
                ));
            }
            let secs = i64::try_from(secs)
                .map_err(|_| ApiError::bad_request("invalid_duration", "ttl too large"))?;
            let end = now
                .checked_add(time::Duration::seconds(secs))
                .filter(|t| t.year() <= 9999)
                .ok_or_else(|| ApiError::bad_request("invalid_duration", "ttl is too large"))?;
            Some(time_util::rfc3339(end))
        }
    };
    let minted = auth::mint();
    let row = TokenRow {
        id: minted.id.clone(),
        tenant_id: tenant_id.to_owned(),
        name,
        policies,
        created_at: time_util::rfc3339(now),
        expires_at,
        revoked_at: None,
    };
    Ok((row, minted))
}

#[post("/v1/auth/tokens", data = "<body>")]
async fn create(
    app: &State<App>,
    caller: Caller,
    body: Body<CreateTokenRequest>,
) -> Result<(Status, Json<CreatedToken>), ApiError> {
    app.require(&caller, Perm::TokenAdmin, "token.create", None)
        .await?;
    let res = async {
        let b = body.0;
        let (row, minted) = new_token(&caller.tenant_id, b.policies, b.ttl.as_deref(), b.name)?;
        let rec = caller.record("token.create", Some(&row.id), "success");
        let (r2, hash) = (row.clone(), minted.hash.clone());
        app.db(move |s| {
            s.write(|tx| {
                tx.insert_token(&r2, &hash)?;
                tx.append_audit(&rec)
            })
            .map_err(|e| match e {
                scaivault_store::Error::Conflict(what) => {
                    ApiError::conflict("token_name_taken", what)
                }
                other => ApiError::from(other),
            })
        })
        .await?;
        Ok(CreatedToken {
            id: row.id,
            token: minted.token.to_string(),
            policies: row.policies,
            expires_at: row.expires_at,
        })
    }
    .await;
    let out = app.finish(&caller, "token.create", None, res).await?;
    Ok((Status::Created, Json(out)))
}

#[derive(Debug, Serialize, JsonSchema)]
struct TokenList {
    items: Vec<TokenView>,
    next_cursor: Option<String>,
}

#[get("/v1/auth/tokens?<limit>&<cursor>")]
async fn list(
    app: &State<App>,
    caller: Caller,
    limit: Option<&str>,
    cursor: Option<String>,
) -> Result<Json<TokenList>, ApiError> {
    app.require(&caller, Perm::TokenAdmin, "token.list", None)
        .await?;
    let limit = page_limit(app, limit)?;
    let tenant = caller.tenant_id.clone();
    let page = app
        .db(move |s| {
            s.read(|tx| tx.list_tokens(Some(&tenant), cursor.as_deref(), limit))
                .map_err(|e| match e {
                    scaivault_store::Error::Conflict(_) => {
                        ApiError::bad_request("invalid_cursor", "cursor is not valid")
                    }
                    other => ApiError::from(other),
                })
        })
        .await?;
    Ok(Json(TokenList {
        items: page.items.into_iter().map(TokenView::from).collect(),
        next_cursor: page.next_cursor,
    }))
}

#[derive(Debug, Serialize, JsonSchema)]
#[schemars(rename = "RevokedToken")]
struct Revoked {
    id: String,
    revoked_at: String,
}

#[delete("/v1/auth/tokens/<id>")]
async fn revoke(app: &State<App>, caller: Caller, id: &str) -> Result<Json<Revoked>, ApiError> {
    app.require(&caller, Perm::TokenAdmin, "token.revoke", Some(id))
        .await?;
    let res = async {
        if crate::auth::token_id(id).is_some() {
            // The token itself where its id belongs (the id is part of it): refused, and
            // neither logged nor audited with its secret (`auth::redact_tokens`).
            return Err(ApiError::bad_request(
                "token_given_as_id",
                "the path holds a bearer token, not a token id: revoke it by its id (tok_…), as GET /v1/auth/tokens lists it",
            ));
        }
        let at = time_util::rfc3339(time_util::now());
        let rec = caller.record("token.revoke", Some(id), "success");
        let (i, t, a) = (id.to_owned(), caller.tenant_id.clone(), at.clone());
        app.db(move |s| {
            s.write(|tx| {
                tx.revoke_token(&i, Some(&t), &a)?;
                tx.append_audit(&rec)
            })
            .map_err(|e| match e {
                scaivault_store::Error::NotFound => ApiError::not_found("token_not_found", "token"),
                other => ApiError::from(other),
            })
        })
        .await?;
        app.issue_cache.clear();
        Ok(Revoked {
            id: id.to_owned(),
            revoked_at: at,
        })
    }
    .await;
    Ok(Json(
        app.finish(&caller, "token.revoke", Some(id), res).await?,
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_policy_given_twice_is_kept_once_in_order() {
        let p = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let (row, _) =
            super::new_token("tn_1", p(&["admin", "auditor", "admin"]), None, None).unwrap();
        assert_eq!(row.policies, p(&["admin", "auditor"]));
    }
}
