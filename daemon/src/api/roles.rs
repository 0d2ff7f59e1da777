//! `/v1/pki/roles`: create, list, get, replace, delete.

use super::ca::page_limit;
use super::problem::Body;
use crate::app::{App, Caller};
use crate::auth::Perm;
use crate::error::ApiError;
use crate::roles::{self, RoleSpec};
use rocket::http::Status;
use rocket::serde::json::Json;
use rocket::{delete, get, post, put, routes, Route, State};
use schemars::JsonSchema;
use serde::Serialize;

/// The body schemas of these routes (`GET /v1/openapi.json`).
pub(super) fn bodies(b: &mut super::schemas::Bodies) {
    b.request_requiring::<RoleSpec>("POST", "/v1/pki/roles", &["name"]);
    b.answer::<RoleSpec>("POST", "/v1/pki/roles");
    b.answer::<RoleList>("GET", "/v1/pki/roles");
    b.answer::<RoleSpec>("GET", "/v1/pki/roles/{name}");
    b.request::<RoleSpec>("PUT", "/v1/pki/roles/{name}");
    b.answer::<RoleSpec>("PUT", "/v1/pki/roles/{name}");
}

pub fn routes() -> Vec<Route> {
    routes![create, list, get_one, replace, remove]
}

#[post("/v1/pki/roles", data = "<body>")]
async fn create(
    app: &State<App>,
    caller: Caller,
    body: Body<RoleSpec>,
) -> Result<(Status, Json<RoleSpec>), ApiError> {
    // A body without a name does not decode as a creation: refused as any such body is, before
    // the policy check and unaudited.
    if body.0.name == roles::UNNAMED {
        return Err(ApiError::bad_request(
            "missing_field",
            "missing field `name`",
        ));
    }
    app.require(&caller, Perm::RoleWrite, "role.create", None)
        .await?;
    let res = roles::save(app, &caller, body.0, false).await;
    let out = app.finish(&caller, "role.create", None, res).await?;
    Ok((Status::Created, Json(out)))
}

#[derive(Debug, Serialize, JsonSchema)]
struct RoleList {
    items: Vec<RoleSpec>,
    next_cursor: Option<String>,
}

#[get("/v1/pki/roles?<limit>&<cursor>")]
async fn list(
    app: &State<App>,
    caller: Caller,
    limit: Option<&str>,
    cursor: Option<String>,
) -> Result<Json<RoleList>, ApiError> {
    app.require(&caller, Perm::InventoryRead, "role.list", None)
        .await?;
    let limit = page_limit(app, limit)?;
    let tenant = caller.tenant_id.clone();
    let page = app
        .db(move |s| {
            s.read(|tx| tx.list_roles(&tenant, cursor.as_deref(), limit))
                .map_err(|e| match e {
                    scaivault_store::Error::Conflict(_) => {
                        ApiError::bad_request("invalid_cursor", "cursor is not valid")
                    }
                    other => ApiError::from(other),
                })
        })
        .await?;
    Ok(Json(RoleList {
        items: page
            .items
            .iter()
            .map(roles::decode)
            .collect::<Result<_, _>>()?,
        next_cursor: page.next_cursor,
    }))
}

#[get("/v1/pki/roles/<name>")]
async fn get_one(app: &State<App>, caller: Caller, name: &str) -> Result<Json<RoleSpec>, ApiError> {
    app.require(&caller, Perm::InventoryRead, "role.read", Some(name))
        .await?;
    Ok(Json(roles::get(app, &caller.tenant_id, name).await?.1))
}

#[put("/v1/pki/roles/<name>", data = "<body>")]
async fn replace(
    app: &State<App>,
    caller: Caller,
    name: &str,
    body: Body<RoleSpec>,
) -> Result<Json<RoleSpec>, ApiError> {
    app.require(&caller, Perm::RoleWrite, "role.update", Some(name))
        .await?;
    let res = async {
        let mut spec = body.0;
        if spec.name != roles::UNNAMED && !spec.name.is_empty() && spec.name != name {
            return Err(ApiError::bad_request(
                "invalid_name",
                "the body's name differs from the path; roles cannot be renamed",
            ));
        }
        spec.name = name.to_owned();
        roles::get(app, &caller.tenant_id, name).await?;
        roles::save(app, &caller, spec, true).await
    }
    .await;
    Ok(Json(
        app.finish(&caller, "role.update", Some(name), res).await?,
    ))
}

#[delete("/v1/pki/roles/<name>")]
async fn remove(app: &State<App>, caller: Caller, name: &str) -> Result<Status, ApiError> {
    app.require(&caller, Perm::RoleWrite, "role.delete", Some(name))
        .await?;
    let res = roles::delete(app, &caller, name).await;
    app.finish(&caller, "role.delete", Some(name), res).await?;
    Ok(Status::NoContent)
}
