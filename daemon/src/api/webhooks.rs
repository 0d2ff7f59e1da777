//! `/v1/webhooks`: create, list, get, delete, and a webhook's recent deliveries.
//!
//! Policy: `admin` only ([`Perm::WebhookAdmin`]): a webhook sends the tenant's events to a URL of
//! the caller's choice. The secret is accepted on create and never shown again.

use super::ca::page_limit;
use super::problem::Body;
use crate::api::schemas::{OneOf, DELIVERY_STATES};
use crate::app::{App, Caller};
use crate::auth::Perm;
use crate::error::ApiError;
use crate::webhooks;
use rocket::http::Status;
use rocket::serde::json::Json;
use rocket::{delete, get, post, routes, Route, State};
use scaivault_store::{WebhookDeliveryRow, WebhookRow};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// The body schemas of these routes (`GET /v1/openapi.json`).
pub(super) fn bodies(b: &mut super::schemas::Bodies) {
    b.request::<CreateRequest>("POST", "/v1/webhooks");
    b.answer::<WebhookResponse>("POST", "/v1/webhooks");
    b.answer::<WebhookList>("GET", "/v1/webhooks");
    b.answer::<WebhookResponse>("GET", "/v1/webhooks/{id}");
    b.answer::<DeliveryList>("GET", "/v1/webhooks/{id}/deliveries");
}

pub fn routes() -> Vec<Route> {
    routes![create, list, get_one, remove, deliveries]
}

#[derive(Deserialize, JsonSchema)]
#[schemars(rename = "CreateWebhookRequest")]
#[serde(deny_unknown_fields)]
struct CreateRequest {
    url: String,
    events: Vec<String>,
    /// The HMAC-SHA256 key of the `ScaiVault-Signature` header (docs/WEBHOOKS.md); never shown.
    // Moved into a `Zeroizing` as soon as it is decoded.
    secret: String,
}

impl std::fmt::Debug for CreateRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreateRequest")
            .field("events", &self.events)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Serialize, JsonSchema)]
#[schemars(rename = "Webhook")]
struct WebhookResponse {
    id: String,
    url: String,
    events: Vec<String>,
    created_at: String,
}

fn view(r: WebhookRow) -> Result<WebhookResponse, ApiError> {
    Ok(WebhookResponse {
        events: webhooks::patterns(&r)?,
        id: r.id,
        url: r.url,
        created_at: r.created_at,
    })
}

#[derive(Debug, Serialize, JsonSchema)]
struct WebhookList {
    items: Vec<WebhookResponse>,
    next_cursor: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
#[schemars(rename = "WebhookDelivery")]
struct DeliveryResponse {
    id: String,
    event_id: String,
    #[schemars(transform = OneOf(crate::webhooks::EVENT_TYPES))]
    event_type: String,
    #[schemars(transform = OneOf(DELIVERY_STATES))]
    status: String,
    attempts: i64,
    http_status: Option<i64>,
    next_attempt_at: Option<String>,
    last_error: Option<String>,
    created_at: String,
    updated_at: String,
}

fn delivery_view(d: WebhookDeliveryRow) -> DeliveryResponse {
    // 0 is "due now, in turn" (a new delivery, perhaps queued behind an earlier one of the same
    // webhook): it has been due since it was made, not since 1970.
    let next = d.next_attempt_ms.and_then(|ms| match ms {
        0 => Some(d.created_at.clone()),
        ms => time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
            .ok()
            .map(scaivault_core::time_util::rfc3339),
    });
    DeliveryResponse {
        id: d.id,
        event_id: format!("evt_{}", d.event_seq),
        event_type: d.event_type,
        status: d.status,
        attempts: d.attempts,
        http_status: d.last_http_status,
        next_attempt_at: next,
        last_error: d.last_error,
        created_at: d.created_at,
        updated_at: d.updated_at,
    }
}

#[derive(Debug, Serialize, JsonSchema)]
#[schemars(rename = "WebhookDeliveryList")]
struct DeliveryList {
    items: Vec<DeliveryResponse>,
    next_cursor: Option<String>,
}

#[post("/v1/webhooks", data = "<body>")]
async fn create(
    app: &State<App>,
    caller: Caller,
    body: Body<CreateRequest>,
) -> Result<(Status, Json<WebhookResponse>), ApiError> {
    app.require(&caller, Perm::WebhookAdmin, "webhook.create", None)
        .await?;
    let b = body.0;
    let res = async {
        view(webhooks::create(app, &caller, b.url, b.events, Zeroizing::new(b.secret)).await?)
    }
    .await;
    let out = app.finish(&caller, "webhook.create", None, res).await?;
    Ok((Status::Created, Json(out)))
}

#[get("/v1/webhooks?<limit>&<cursor>")]
async fn list(
    app: &State<App>,
    caller: Caller,
    limit: Option<&str>,
    cursor: Option<String>,
) -> Result<Json<WebhookList>, ApiError> {
    app.require(&caller, Perm::WebhookAdmin, "webhook.list", None)
        .await?;
    let limit = page_limit(app, limit)?;
    let page = webhooks::list(app, &caller.tenant_id, cursor, limit).await?;
    Ok(Json(WebhookList {
        items: page.items.into_iter().map(view).collect::<Result<_, _>>()?,
        next_cursor: page.next_cursor,
    }))
}

#[get("/v1/webhooks/<id>")]
async fn get_one(
    app: &State<App>,
    caller: Caller,
    id: &str,
) -> Result<Json<WebhookResponse>, ApiError> {
    app.require(&caller, Perm::WebhookAdmin, "webhook.read", Some(id))
        .await?;
    Ok(Json(view(
        webhooks::get(app, &caller.tenant_id, id).await?,
    )?))
}

#[delete("/v1/webhooks/<id>")]
async fn remove(app: &State<App>, caller: Caller, id: &str) -> Result<Status, ApiError> {
    app.require(&caller, Perm::WebhookAdmin, "webhook.delete", Some(id))
        .await?;
    let res = webhooks::delete(app, &caller, id).await;
    app.finish(&caller, "webhook.delete", Some(id), res).await?;
    Ok(Status::NoContent)
}

#[get("/v1/webhooks/<id>/deliveries?<limit>&<cursor>")]
async fn deliveries(
    app: &State<App>,
    caller: Caller,
    id: &str,
    limit: Option<&str>,
    cursor: Option<String>,
) -> Result<Json<DeliveryList>, ApiError> {
    app.require(&caller, Perm::WebhookAdmin, "webhook.read", Some(id))
        .await?;
    let limit = page_limit(app, limit)?;
    let page = webhooks::deliveries(app, &caller.tenant_id, id, cursor, limit).await?;
    Ok(Json(DeliveryList {
        items: page.items.into_iter().map(delivery_view).collect(),
        next_cursor: page.next_cursor,
    }))
}
