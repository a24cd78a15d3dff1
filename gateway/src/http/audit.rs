//! `GET /v1/audit` and `GET /v1/audit/verify` (admin, auditor).

use actix_web::{web, HttpResponse};
use orderd_proto::{AuditQuery, AuditVerifyResponse, Page};

use crate::http::error::HttpError;
use crate::http::extract::Authed;
use crate::http::extract::{NoQuery, QueryParams};
use orderd_control::backups::Backups;
use orderd_service::audit::{AuditFilter, AuditLog};
use orderd_service::ApiError;
use orderd_service::{roles, validate};

#[utoipa::path(get, path = "/v1/audit", operation_id = "list_audit", tag = "audit",
    params(orderd_proto::AuditQuery),
    responses((status = 200, description = "A page of entries, oldest first", body = orderd_proto::Page<orderd_proto::AuditEntry>)),
    security(("bearer" = [])))]
pub async fn list(
    caller: Authed,
    query: QueryParams<AuditQuery>,
    audit: web::Data<AuditLog>,
) -> Result<HttpResponse, HttpError> {
    caller.require(roles::AUDIT_READ)?;
    let query = query.get()?;
    let since_us = validate::since(query.since.as_deref())?;
    let limit = validate::limit(query.limit.as_deref())?;
    let after = match query.after.as_deref() {
        Some(text) => Some(text.parse::<u64>().map_err(|_| {
            ApiError::invalid(
                "after",
                "after must be the `next` cursor of a previous page",
            )
        })?),
        None => None,
    };
    let page = audit
        .page(AuditFilter {
            since_us,
            actor: query.actor,
            limit,
            after,
        })
        .await?;
    debug_assert!(page.items.len() <= limit);
    Ok(HttpResponse::Ok().json(Page {
        items: page.items,
        next: page.next.map(|seq| seq.to_string()),
    }))
}

#[utoipa::path(get, path = "/v1/audit/verify", operation_id = "verify_audit", tag = "audit",
    responses((status = 200, description = "The chain recomputed over storage", body = orderd_proto::AuditVerifyResponse)),
    security(("bearer" = [])))]
pub async fn verify(
    caller: Authed,
    query: QueryParams<NoQuery>,
    audit: web::Data<AuditLog>,
    backups: Option<web::Data<Backups>>,
) -> Result<HttpResponse, HttpError> {
    caller.require(roles::AUDIT_READ)?;
    query.get()?;
    // The tip the newest backup anchored: a chain that ends before it was truncated.
    let anchor = match backups {
        Some(backups) => web::block(move || backups.audit_anchor())
            .await
            .ok()
            .flatten(),
        None => None,
    };
    let report = audit.verify(anchor).await?;
    if !report.ok {
        tracing::error!(
            message = "The audit chain does not verify.",
            first_bad_seq = report.first_bad_seq,
            detail = %report.detail
        );
    }
    Ok(HttpResponse::Ok().json(AuditVerifyResponse {
        ok: report.ok,
        entries: report.entries,
        first_bad_seq: report.first_bad_seq,
        detail: report.detail,
        last_hash: report.last_hash,
        chains: report
            .chains
            .into_iter()
            .map(|c| orderd_proto::AuditChainReport {
                chain: c.chain,
                ok: c.ok,
                entries: c.entries,
                first_bad_seq: c.first_bad_seq,
                last_hash: c.last_hash,
                retained_after_seq: c.floor.as_ref().map(|(seq, _)| *seq),
                retained_after_hash: c.floor.map(|(_, hash)| hash),
            })
            .collect(),
    }))
}
