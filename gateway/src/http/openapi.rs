//! `GET /v1/openapi.json`: the OpenAPI 3 document of this API, generated at compile time from
//! the handlers' `#[utoipa::path]` attributes and the wire types' `ToSchema` derives.
//!
//! Errors every `/v1` route can answer (400, 401, 403, 404, 405, 413, 429, 503) are added to
//! each operation by [`CommonProblems`] rather than repeated on every handler.

use std::sync::OnceLock;

use actix_web::HttpResponse;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "orderd",
        description = "Order processing engine: stock reservations, customers with encrypted personal data, shipments, analytics and operations.",
        license(name = "Apache-2.0")
    ),
    paths(
        super::health::livez,
        super::health::readyz,
        super::health::metrics,
        openapi_json,
        super::stock::get,
        super::stock::adjust,
        super::catalog::put,
        super::catalog::get,
        super::catalog::list,
        super::customers::create,
        super::customers::get,
        super::orders::place,
        super::bulk::import,
        super::orders::list,
        super::orders::get,
        super::orders::cancel,
        super::shipments::create,
        super::shipments::event,
        super::shipments::get,
        super::analytics::summary,
        super::analytics::orders_csv,
        super::ops::shards,
        super::ops::restart_shard,
        super::ops::incidents,
        super::ops::quarantine,
        super::ops::lift_quarantine,
        super::ops::inspection,
        super::ops::rotate_keys,
        super::backups::create,
        super::backups::list,
        super::backups::verify,
        super::changes::config,
        super::changes::request,
        super::changes::list,
        super::changes::get,
        super::changes::approve,
        super::changes::apply,
        super::changes::rollback,
        super::keys::create,
        super::keys::list,
        super::keys::revoke,
        super::audit::list,
        super::audit::verify,
    ),
    components(schemas(orderd_proto::Problem)),
    modifiers(&CommonProblems),
)]
pub struct ApiDoc;

/// Adds the bearer security scheme and the errors every authenticated route may answer.
pub struct CommonProblems;

const COMMON: [(&str, &str); 8] = [
    (
        "400",
        "`invalid_request`: malformed JSON, a wrong or unknown field; `param` names it",
    ),
    ("401", "`unauthorized`: no key, an unknown or a revoked key"),
    ("403", "`forbidden`: the key's role may not do this"),
    (
        "404",
        "`not_found`: no such object, or one the key may not see",
    ),
    ("405", "`method_not_allowed`"),
    ("413", "`payload_too_large`: a body over 64 KiB"),
    (
        "429",
        "`rate_limited`: over the key's rate; see `Retry-After`",
    ),
    (
        "503",
        "`unavailable`: a shard is restarting or storage is failing; retry",
    ),
];

fn add_common(operation: &mut Operation) {
    for (status, description) in COMMON {
        if operation.responses.responses.contains_key(status) {
            continue;
        }
        let response = ResponseBuilder::new()
            .description(description)
            .content(
                "application/problem+json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("Problem")))
                    .build(),
            )
            .build();
        operation
            .responses
            .responses
            .insert(status.to_string(), response.into());
    }
}

impl Modify for CommonProblems {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An API key secret (`odk_…`)"))
                    .build(),
            ),
        );
        for (path, item) in openapi.paths.paths.iter_mut() {
            if !path.starts_with("/v1/") || path == "/v1/openapi.json" {
                continue;
            }
            for operation in [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.delete,
                &mut item.patch,
            ]
            .into_iter()
            .flatten()
            {
                add_common(operation);
            }
        }
    }
}

/// The document, rendered once.
pub fn document() -> &'static str {
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        ApiDoc::openapi()
            .to_pretty_json()
            .expect("the OpenAPI document serializes")
    })
}

#[utoipa::path(get, path = "/v1/openapi.json", tag = "health",
    responses((status = 200, description = "This document", content_type = "application/json")))]
pub async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(document())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every route the server registers is in the document, and every `/v1` operation
    /// documents the common problems.
    #[test]
    fn document_lists_every_route_with_its_problems() {
        let doc: serde_json::Value = serde_json::from_str(document()).expect("json");
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
        let paths = doc["paths"].as_object().expect("paths");
        for route in super::super::ROUTES {
            let (method, path) = route;
            let op = &paths
                .get(*path)
                .unwrap_or_else(|| panic!("{path} missing from the OpenAPI document"))
                [method.to_lowercase()];
            assert!(op.is_object(), "{method} {path} missing");
            if path.starts_with("/v1/") && *path != "/v1/openapi.json" {
                for (status, _) in COMMON {
                    assert!(
                        op["responses"][status].is_object(),
                        "{method} {path} {status}"
                    );
                }
                assert!(op["security"].is_array(), "{method} {path} security");
            }
        }
        assert_eq!(
            paths
                .values()
                .map(|p| p.as_object().unwrap().len())
                .sum::<usize>(),
            super::super::ROUTES.len(),
            "the document lists a route the server does not serve"
        );
    }

    /// The bounds the document states (literals in `orderd-proto`, which does not depend on
    /// the engine) are the engine's own.
    #[test]
    fn document_states_the_engine_bounds() {
        use orderd_engine::{LINE_QTY_MAX, STOCK_DELTA_MAX, UNIT_PRICE_MAX};
        let doc: serde_json::Value = serde_json::from_str(document()).expect("json");
        let schemas = &doc["components"]["schemas"];
        let field = |schema: &str, field: &str| schemas[schema]["properties"][field].clone();
        let delta = i64::try_from(STOCK_DELTA_MAX).expect("fits");
        for (schema, name, minimum, maximum) in [
            ("OrderLineRequest", "qty", Some(1), i64::from(LINE_QTY_MAX)),
            (
                "ShipmentLineRequest",
                "qty",
                Some(1),
                i64::from(LINE_QTY_MAX),
            ),
            (
                "OrderLineRequest",
                "unit_price",
                None,
                i64::try_from(UNIT_PRICE_MAX).expect("fits"),
            ),
            ("StockAdjustmentRequest", "delta", Some(-delta), delta),
            (
                "CatalogPriceRequest",
                "price",
                Some(0),
                i64::try_from(UNIT_PRICE_MAX).expect("fits"),
            ),
        ] {
            let property = field(schema, name);
            assert_eq!(
                property["maximum"].as_i64(),
                Some(maximum),
                "{schema}.{name}: {property}"
            );
            if let Some(minimum) = minimum {
                assert_eq!(
                    property["minimum"].as_i64(),
                    Some(minimum),
                    "{schema}.{name}: {property}"
                );
            }
        }
    }

    /// The catalog's routes state their constraints: the SKU's pattern, the body's closed
    /// shape, the page's parameters.
    #[test]
    fn catalog_routes_state_their_constraints() {
        let doc: serde_json::Value = serde_json::from_str(document()).expect("json");
        let request = &doc["components"]["schemas"]["CatalogPriceRequest"];
        assert_eq!(request["additionalProperties"], false, "{request}");
        assert_eq!(
            request["required"],
            serde_json::json!(["price"]),
            "{request}"
        );
        let put = &doc["paths"]["/v1/catalog/{sku}"]["put"];
        let sku = put["parameters"]
            .as_array()
            .expect("parameters")
            .iter()
            .find(|p| p["name"] == "sku")
            .expect("sku parameter");
        assert_eq!(sku["schema"]["pattern"], "^[A-Za-z0-9._-]+$", "{sku}");
        assert_eq!(sku["schema"]["maxLength"], 64, "{sku}");
        let list = &doc["paths"]["/v1/catalog"]["get"];
        let names: Vec<&str> = list["parameters"]
            .as_array()
            .expect("parameters")
            .iter()
            .filter_map(|p| p["name"].as_str())
            .collect();
        assert_eq!(names, ["limit", "after"]);
        assert!(doc["paths"]["/v1/catalog/{sku}"]["get"].is_object());
    }
}
