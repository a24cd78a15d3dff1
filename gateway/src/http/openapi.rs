//! `GET /v1/openapi.json`: the OpenAPI 3 document of this API, generated at compile time from
//! the handlers' `#[utoipa::path]` attributes and the wire types' `ToSchema` derives.
//!
//! Errors every `/v1` route can answer (400, 401, 403, 404, 405, 413, 429, 503) are added to
//! each operation by [`CommonProblems`] rather than repeated on every handler.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use actix_web::HttpResponse;
use serde_json::{json, Value};
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
        super::stock::transfer,
        super::stock::create_location,
        super::stock::list_locations,
        super::catalog::put,
        super::catalog::get,
        super::catalog::list,
        super::customers::create,
        super::customers::get,
        super::customers::update,
        super::customers::erase,
        super::orders::place,
        super::bulk::import,
        super::orders::list,
        super::orders::get,
        super::orders::cancel,
        super::shipments::create,
        super::shipments::event,
        super::shipments::get,
        super::returns::create,
        super::returns::receive,
        super::returns::get,
        super::returns::refund,
        super::events::list,
        super::events::stream,
        super::webhooks::create,
        super::webhooks::list,
        super::webhooks::delete,
        super::webhooks::deliveries,
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
        super::whoami::whoami,
        super::console::page,
        super::console::script,
        super::console::style,
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

/// The document, rendered once: utoipa's, refined by [`refine`], with its keys in sorted order
/// (serde_json's map), so that the same code always renders the same bytes (`docs/openapi.json`
/// is this document, and a test holds them equal).
pub fn document() -> &'static str {
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        let mut doc =
            serde_json::to_value(ApiDoc::openapi()).expect("the OpenAPI document serializes");
        refine(&mut doc);
        let mut text = serde_json::to_string_pretty(&doc).expect("the OpenAPI document serializes");
        text.push('\n');
        text
    })
}

/// `Idempotency-Key`: what [`orderd_service::validate::idempotency_key`] and the header
/// parser accept. HTTP trims a header value's outer whitespace, so the value starts and ends
/// with a visible character.
const IDEMPOTENCY_KEY_PATTERN: &str = r"^[\x21-\x7e]([\t\x20-\x7e]*[\x21-\x7e])?$";

/// The links of the stateful contract test (schemathesis's `stateful` phase): from the answer
/// of `(source operation id, status)` to an operation, with its parameters or body taken from
/// that answer (`$response.body#/id`). Bodies are merged into the generated ones.
const LINKS: &[(&str, &str, &str, &str, &str)] = &[
    // (source, status, link name, target, parameters or body as JSON)
    (
        "create_customer",
        "201",
        "GetCustomer",
        "get_customer",
        r#"{"parameters": {"path.id": "$response.body#/id"}}"#,
    ),
    (
        "create_customer",
        "201",
        "UpdateCustomer",
        "update_customer",
        r#"{"parameters": {"path.id": "$response.body#/id"}}"#,
    ),
    (
        "create_customer",
        "201",
        "ListCustomerOrders",
        "list_orders",
        r#"{"parameters": {"query.customer_id": "$response.body#/id"}}"#,
    ),
    (
        "create_customer",
        "201",
        "PlaceOrder",
        "place",
        r#"{"requestBody": {"customer_id": "$response.body#/id"}}"#,
    ),
    (
        "place",
        "201",
        "GetOrder",
        "get_order",
        r#"{"parameters": {"path.id": "$response.body#/id"}}"#,
    ),
    (
        "place",
        "201",
        "CancelOrder",
        "cancel",
        r#"{"parameters": {"path.id": "$response.body#/id"}}"#,
    ),
    (
        "place",
        "201",
        "ShipOrder",
        "create_shipment",
        r#"{"parameters": {"path.id": "$response.body#/id"}}"#,
    ),
    (
        "place",
        "201",
        "ListCustomerOrders",
        "list_orders",
        r#"{"parameters": {"query.customer_id": "$response.body#/customer_id"}}"#,
    ),
    (
        "cancel",
        "200",
        "GetOrder",
        "get_order",
        r#"{"parameters": {"path.id": "$response.body#/id"}}"#,
    ),
    (
        "create_shipment",
        "201",
        "GetShipment",
        "get_shipment",
        r#"{"parameters": {"path.id": "$response.body#/id"}}"#,
    ),
    (
        "create_shipment",
        "201",
        "PostShipmentEvent",
        "event",
        r#"{"parameters": {"path.id": "$response.body#/id"}}"#,
    ),
    (
        "create_shipment",
        "201",
        "GetOrder",
        "get_order",
        r#"{"parameters": {"path.id": "$response.body#/order_id"}}"#,
    ),
    (
        "create_shipment",
        "201",
        "ReturnOrder",
        "create_return",
        r#"{"parameters": {"path.id": "$response.body#/order_id"}}"#,
    ),
    (
        "create_shipment",
        "201",
        "RefundOrder",
        "create_refund",
        r#"{"parameters": {"path.id": "$response.body#/order_id"}}"#,
    ),
    (
        "create_return",
        "201",
        "GetReturn",
        "get_return",
        r#"{"parameters": {"path.id": "$response.body#/id"}}"#,
    ),
    (
        "create_return",
        "201",
        "ReceiveReturn",
        "receive_return",
        r#"{"parameters": {"path.id": "$response.body#/id"}}"#,
    ),
    (
        "create_return",
        "201",
        "GetOrder",
        "get_order",
        r#"{"parameters": {"path.id": "$response.body#/order_id"}}"#,
    ),
    (
        "event",
        "200",
        "GetShipment",
        "get_shipment",
        r#"{"parameters": {"path.id": "$response.body#/id"}}"#,
    ),
    (
        "adjust",
        "200",
        "GetStock",
        "get_stock",
        r#"{"parameters": {"path.sku": "$response.body#/sku"}}"#,
    ),
    (
        "put_price",
        "200",
        "GetPrice",
        "get_price",
        r#"{"parameters": {"path.sku": "$response.body#/sku"}}"#,
    ),
    (
        "create_key",
        "201",
        "RevokeKey",
        "revoke_key",
        r#"{"parameters": {"path.id": "$response.body#/id"}}"#,
    ),
    (
        "request",
        "201",
        "GetChange",
        "get_change",
        r#"{"parameters": {"path.id": "$response.body#/id"}}"#,
    ),
    (
        "request",
        "201",
        "ApproveChange",
        "approve",
        r#"{"parameters": {"path.id": "$response.body#/id"}}"#,
    ),
    (
        "request",
        "201",
        "ApplyChange",
        "apply",
        r#"{"parameters": {"path.id": "$response.body#/id"}}"#,
    ),
    (
        "request",
        "201",
        "RollBackChange",
        "rollback",
        r#"{"parameters": {"path.id": "$response.body#/id"}}"#,
    ),
    (
        "create_backup",
        "201",
        "VerifyBackup",
        "verify_backup",
        r#"{"parameters": {"path.id": "$response.body#/id"}}"#,
    ),
];

/// What utoipa's attributes cannot say, added to the rendered document:
/// - the `Idempotency-Key` header's shape on every route that takes it;
/// - a stock adjustment's `delta` is never 0;
/// - a change request's `setting` is one of the registry's and its `value` of that setting's
///   type and bounds (`orderd_control::settings`);
/// - the cancel body is optional but never `null`; the bulk import's body holds a line that is
///   not blank;
/// - the response links of [`LINKS`].
pub fn refine(doc: &mut Value) {
    for item in doc["paths"].as_object_mut().expect("paths").values_mut() {
        for operation in item.as_object_mut().expect("path item").values_mut() {
            let Some(parameters) = operation
                .get_mut("parameters")
                .and_then(Value::as_array_mut)
            else {
                continue;
            };
            for parameter in parameters {
                if parameter["in"] == "header" && parameter["name"] == "Idempotency-Key" {
                    parameter["schema"] = json!({
                        "type": "string",
                        "minLength": 1,
                        "maxLength": 255,
                        "pattern": IDEMPOTENCY_KEY_PATTERN,
                    });
                }
            }
        }
    }
    let schemas = &mut doc["components"]["schemas"];
    schemas["StockAdjustmentRequest"]["properties"]["delta"]["not"] = json!({"const": 0});
    refine_change_request(&mut schemas["ChangeRequest"]);
    let cancel = &mut doc["paths"]["/v1/orders/{id}/cancel"]["post"]["requestBody"];
    cancel["content"]["application/json"]["schema"] =
        json!({"$ref": "#/components/schemas/CancelOrderRequest"});
    cancel["required"] = json!(false);
    let erase = &mut doc["paths"]["/v1/customers/{id}/erase"]["post"]["requestBody"];
    erase["content"]["application/json"]["schema"] =
        json!({"$ref": "#/components/schemas/EraseCustomerRequest"});
    erase["required"] = json!(false);
    let bulk = &mut doc["paths"]["/v1/orders/bulk"]["post"]["requestBody"]["content"]
        ["application/x-ndjson"]["schema"];
    // At least one line that is not blank (ASCII whitespace only), as `bulk::lines` counts.
    bulk["pattern"] = json!("[^\\t\\n\\f\\r ]");
    add_links(doc);
}

/// `setting` one of the registry's (test-only settings left out) and, for each, `value` of its
/// type and within its bounds.
fn refine_change_request(schema: &mut Value) {
    use orderd_control::settings::{self, Kind};
    let defs: Vec<_> = settings::all()
        .filter(|def| !def.name.starts_with("test."))
        .collect();
    schema["properties"]["setting"]["enum"] = defs.iter().map(|def| json!(def.name)).collect();
    schema["oneOf"] = defs
        .iter()
        .map(|def| {
            let value = match def.kind {
                Kind::Integer { min, max } => {
                    json!({"type": "integer", "minimum": min, "maximum": max})
                }
                Kind::LogFilter => {
                    json!({"type": "string", "minLength": 1, "maxLength": 1000, "pattern": "\\S"})
                }
            };
            json!({"properties": {"setting": {"const": def.name}, "value": value}})
        })
        .collect();
}

fn add_links(doc: &mut Value) {
    let mut by_id: BTreeMap<String, (String, String)> = BTreeMap::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("path item") {
            if let Some(id) = operation["operationId"].as_str() {
                let previous = by_id.insert(id.to_string(), (path.clone(), method.clone()));
                assert!(previous.is_none(), "operationId {id} is not unique");
            }
        }
    }
    for (source, status, name, target, definition) in LINKS {
        assert!(
            by_id.contains_key(*target),
            "link target {target} is no operation"
        );
        let (path, method) = by_id
            .get(*source)
            .expect("link source is an operation")
            .clone();
        let response = &mut doc["paths"][&path][&method]["responses"][*status];
        assert!(response.is_object(), "{source} answers no {status}");
        let mut link: Value = serde_json::from_str(definition).expect("link JSON");
        link["operationId"] = json!(target);
        response["links"][*name] = link;
    }
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

    /// `docs/openapi.json` is the served document. After a change to the API, regenerate it
    /// with `UPDATE_OPENAPI=1` (`make openapi`) and commit it with the change.
    #[test]
    fn committed_openapi_document_matches_the_generated_one() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.json");
        if std::env::var_os("UPDATE_OPENAPI").is_some() {
            std::fs::write(&path, document()).expect("write docs/openapi.json");
            return;
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == document(),
            "{} differs from the document the server serves (GET /v1/openapi.json); regenerate \
             it with `make openapi` (or UPDATE_OPENAPI=1 cargo nextest run --release --workspace \
             --features orderd-gateway/failpoints -E 'test(openapi)') and commit it",
            path.display()
        );
    }

    /// Every operation has its own id (the links name them), and every link's target exists.
    #[test]
    fn operation_ids_are_unique_and_links_resolve() {
        let doc: serde_json::Value = serde_json::from_str(document()).expect("json");
        let mut ids = std::collections::BTreeSet::new();
        for item in doc["paths"].as_object().unwrap().values() {
            for operation in item.as_object().unwrap().values() {
                let id = operation["operationId"].as_str().expect("operationId");
                assert!(ids.insert(id.to_string()), "operationId {id} twice");
            }
        }
        let mut links = 0;
        for item in doc["paths"].as_object().unwrap().values() {
            for operation in item.as_object().unwrap().values() {
                for response in operation["responses"].as_object().unwrap().values() {
                    for link in response["links"]
                        .as_object()
                        .into_iter()
                        .flat_map(|l| l.values())
                    {
                        assert!(
                            ids.contains(link["operationId"].as_str().unwrap()),
                            "{link}"
                        );
                        links += 1;
                    }
                }
            }
        }
        assert_eq!(links, LINKS.len());
    }
}
