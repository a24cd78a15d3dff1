//! `POST /v1/keys`, `GET /v1/keys` and `DELETE /v1/keys/{id}`: API key management (admin only).

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use orderd_control::backups::Backups;
use orderd_engine::{CommandError, CustomerId, Engine};
use orderd_proto::{CreateKeyRequest, CreatedKeyResponse, KeyResponse, ListKeysQuery, Page};

use crate::http::error::HttpError;
use crate::http::extract::Authed;
use crate::http::extract::{decode_json, NoQuery, QueryParams, RawBody};
use orderd_service::audit::AuditLog;
use orderd_service::auth::{Auth, KeyRecord, RevokeError, KEY_NAME_CHARS_MAX, KEY_OWNER_CHARS_MAX};
use orderd_service::roles::{self, Role};
use orderd_service::ApiError;
use orderd_service::{validate, wire};

fn key_response(record: KeyRecord) -> KeyResponse {
    KeyResponse {
        id: record.id,
        name: record.name,
        role: record.role.as_str().to_string(),
        owner: record.owner,
        created_by: record.created_by,
        customer_id: record.customer_id.map(|id| id.to_string()),
        created_at: wire::time(record.created_at_us),
    }
}

/// The list cursor of a key: its place in the (created_at, id) order, which stays valid when
/// the key itself is revoked in the meantime.
fn cursor(record: &KeyRecord) -> String {
    format!("{}.{}", record.created_at_us, record.id)
}

fn parse_cursor(text: &str) -> Option<(i64, String)> {
    let (at, id) = text.split_once('.')?;
    Some((at.parse().ok()?, id.to_string()))
}

fn unavailable(error: impl std::fmt::Display) -> ApiError {
    tracing::error!(message = "Cannot save the key table.", %error);
    ApiError::Unavailable {
        detail: "the key table could not be saved; retry shortly".into(),
        reasons: None,
    }
}

#[utoipa::path(post, path = "/v1/keys", operation_id = "create_key", tag = "keys",
    request_body = orderd_proto::CreateKeyRequest,
    responses(
        (status = 201, description = "The new key; its secret is shown only here", body = orderd_proto::CreatedKeyResponse),
        (status = 422, description = "`unknown_customer`", body = orderd_proto::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn create(
    caller: Authed,
    query: QueryParams<NoQuery>,
    body: RawBody,
    engine: web::Data<Engine>,
    auth: web::Data<Auth>,
    audit: web::Data<AuditLog>,
) -> Result<HttpResponse, HttpError> {
    caller.require(roles::KEYS_MANAGE)?;
    query.get()?;
    let request: CreateKeyRequest = decode_json(&body.0)?;
    let name_chars = request.name.chars().count();
    if name_chars == 0 || name_chars > KEY_NAME_CHARS_MAX || request.name.trim().is_empty() {
        return Err(ApiError::invalid(
            "name",
            format!("name must be 1 to {KEY_NAME_CHARS_MAX} characters, not blank"),
        )
        .into());
    }
    let role: Role = request.role.parse().map_err(|()| {
        let roles: Vec<&str> = Role::ALL.iter().map(|r| r.as_str()).collect();
        ApiError::invalid("role", format!("role is one of {}", roles.join(", ")))
    })?;
    let customer_id = match (role, request.customer_id.as_deref()) {
        (Role::Customer, None) => {
            return Err(ApiError::invalid(
                "customer_id",
                "a key with role customer needs a customer_id",
            )
            .into())
        }
        (Role::Customer, Some(text)) => {
            // An id that cannot parse names no customer, as in an order body.
            let id: CustomerId = text.parse().map_err(|()| ApiError::UnknownCustomer)?;
            engine.customer(id).await.map_err(|error| match error {
                CommandError::NotFound => ApiError::UnknownCustomer,
                other => other.into(),
            })?;
            Some(id)
        }
        (_, Some(_)) => {
            return Err(ApiError::invalid(
                "customer_id",
                "only a key with role customer has a customer_id",
            )
            .into())
        }
        (_, None) => None,
    };
    if let Some(owner) = &request.owner {
        validate::label("owner", owner, KEY_OWNER_CHARS_MAX)?;
    }
    let (record, secret) = auth
        .keys
        .create(request.name, role, customer_id, request.owner, &caller)
        .map_err(unavailable)?;
    let detail = match customer_id {
        Some(customer) => format!("role={role} owner={} customer={customer}", record.owner),
        None => format!("role={role} owner={}", record.owner),
    };
    if let Err(error) = audit
        .record(&caller, "key.create", record.id.as_str(), detail)
        .await
    {
        // Nobody has seen the secret yet: take the unaudited key back.
        if let Err(revoke) = auth.keys.revoke(&record.id) {
            tracing::error!(message = "Could not take back an unaudited key.", key_id = %record.id, error = %revoke);
        }
        return Err(error.into());
    }
    tracing::info!(message = "API key created.", key_id = %record.id, %role, actor = %caller.key_id);
    let response = CreatedKeyResponse {
        id: record.id,
        name: record.name,
        role: role.as_str().to_string(),
        owner: record.owner,
        created_by: record.created_by,
        customer_id: customer_id.map(|id| id.to_string()),
        secret,
        created_at: wire::time(record.created_at_us),
    };
    Ok(HttpResponse::Created()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(response))
}

#[utoipa::path(get, path = "/v1/keys", operation_id = "list_keys", tag = "keys",
    params(orderd_proto::ListKeysQuery),
    responses((status = 200, description = "A page of keys, without secrets", body = orderd_proto::Page<orderd_proto::KeyResponse>)),
    security(("bearer" = [])))]
pub async fn list(
    caller: Authed,
    query: QueryParams<ListKeysQuery>,
    auth: web::Data<Auth>,
) -> Result<HttpResponse, HttpError> {
    caller.require(roles::KEYS_MANAGE)?;
    let query = query.get()?;
    let limit = validate::limit(query.limit.as_deref())?;
    let after = match query.after.as_deref() {
        Some(text) => Some(parse_cursor(text).ok_or_else(|| {
            ApiError::invalid(
                "after",
                "after must be the `next` cursor of a previous page",
            )
        })?),
        None => None,
    };
    let mut keys: Vec<KeyRecord> = auth
        .keys
        .list()
        .into_iter()
        .filter(|record| {
            after
                .as_ref()
                .is_none_or(|(at, id)| (record.created_at_us, &record.id) > (*at, id))
        })
        .take(limit + 1)
        .collect();
    let next = if keys.len() > limit {
        keys.truncate(limit);
        keys.last().map(cursor)
    } else {
        None
    };
    Ok(HttpResponse::Ok().json(Page {
        items: keys.into_iter().map(key_response).collect(),
        next,
    }))
}

/// 204; the key fails from now on. The last admin key cannot be revoked (409).
#[utoipa::path(delete, path = "/v1/keys/{id}", operation_id = "revoke_key", tag = "keys",
    params(("id" = String, Path, description = "A key id (`key_…`)")),
    responses(
        (status = 204, description = "Revoked: the key fails from now on"),
        (status = 409, description = "`invalid_transition`: the last admin key", body = orderd_proto::Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])))]
pub async fn revoke(
    caller: Authed,
    query: QueryParams<NoQuery>,
    id: web::Path<String>,
    auth: web::Data<Auth>,
    audit: web::Data<AuditLog>,
    backups: Option<web::Data<Backups>>,
) -> Result<HttpResponse, HttpError> {
    caller.require(roles::KEYS_MANAGE)?;
    query.get()?;
    let record = auth.keys.revoke(&id).map_err(|error| match error {
        RevokeError::NotFound => ApiError::not_found(),
        RevokeError::LastAdmin => ApiError::InvalidTransition(error.to_string()),
        RevokeError::Store(error) => unavailable(error),
    })?;
    auth.limiter.forget(&record.id);
    // Beside the backups too, so that a restore re-applies it. The key is revoked already;
    // failing here would not undo that, so a failure is logged loudly instead.
    if let Some(backups) = backups {
        let key_id = record.id.clone();
        let recorded = web::block(move || backups.record_revocation(&key_id))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r);
        if let Err(error) = recorded {
            tracing::error!(message = "Cannot record the revocation beside the backups; a restore would bring the key back.", key_id = %record.id, %error);
        }
    }
    tracing::info!(message = "API key revoked.", key_id = %record.id, actor = %caller.key_id);
    audit
        .record(
            &caller,
            "key.revoke",
            record.id.as_str(),
            format!("role={}", record.role),
        )
        .await?;
    Ok(HttpResponse::NoContent().finish())
}
