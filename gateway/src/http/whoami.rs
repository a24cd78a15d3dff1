//! `GET /v1/whoami`: the calling key's id, role and owner, and the routes its role may call
//! (from the role table, `orderd_service::roles::ROUTE_PERMISSIONS`).

use actix_web::HttpResponse;
use orderd_proto::WhoamiResponse;

use crate::http::error::HttpError;
use crate::http::extract::{Authed, NoQuery, QueryParams};
use orderd_service::roles;

/// 200 for any valid key: who it is and what it may do (the operations console shows it).
#[utoipa::path(get, path = "/v1/whoami", tag = "keys",
    responses((status = 200, description = "The calling key, its role and every route the role may call", body = orderd_proto::WhoamiResponse)),
    security(("bearer" = [])))]
pub async fn whoami(
    caller: Authed,
    query: QueryParams<NoQuery>,
) -> Result<HttpResponse, HttpError> {
    caller.require(roles::WHOAMI)?;
    query.get()?;
    Ok(HttpResponse::Ok()
        .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
        .json(WhoamiResponse {
            key_id: caller.key_id.clone(),
            role: caller.role.as_str().to_string(),
            owner: caller.owner.clone(),
            customer_id: caller.customer_id.map(|id| id.to_string()),
            may: roles::permitted_routes(caller.role),
        }))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use orderd_service::roles::ROUTE_PERMISSIONS;

    /// The role table names exactly the served routes that need a key: every `/v1` route but
    /// the OpenAPI document (a new route without a permission would be missing from `may`).
    #[test]
    fn every_keyed_route_has_a_permission() {
        let keyed: BTreeSet<(&str, &str)> = super::super::ROUTES
            .iter()
            .copied()
            .filter(|(_, path)| path.starts_with("/v1/") && *path != "/v1/openapi.json")
            .collect();
        let tabled: BTreeSet<(&str, &str)> = ROUTE_PERMISSIONS
            .iter()
            .map(|(method, path, _)| (*method, *path))
            .collect();
        assert_eq!(ROUTE_PERMISSIONS.len(), tabled.len(), "a route twice");
        assert_eq!(keyed, tabled);
    }
}
