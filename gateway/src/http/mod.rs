//! The HTTP front door: one submodule of routes per resource, all registered by [`configure`];
//! the extractors ([`extract`]: bodies, queries, `Authed`, `KeyedBody`), the middleware
//! ([`middleware`]: audit of refusals, metrics), the problem+json rendering ([`error`]) and the
//! OpenAPI document ([`openapi`]).
//!
//! Every `/v1` handler takes an [`Authed`](extract::Authed) caller first (401 before anything
//! else), then path, query and body, and the engine last; it decodes the request into the
//! protocol-neutral inputs of `orderd-service` and encodes the answer. Unknown paths are 404
//! `not_found`; a known path with a wrong method is 405 `method_not_allowed` (with `Allow`).

mod analytics;
mod audit;
mod backups;
mod bulk;
mod catalog;
mod changes;
mod console;
mod customers;
pub mod error;
pub mod events;
pub mod extract;
#[cfg(test)]
mod flow_tests;
mod health;
mod keys;
pub mod middleware;
pub mod openapi;
mod ops;
mod orders;
mod returns;
mod shipments;
mod stock;
#[cfg(test)]
mod tests;
mod webhooks;
mod whoami;

use actix_web::{web, HttpResponse};

use crate::http::error::HttpError;
use orderd_service::ApiError;

/// Every route served, as (method, path template): the OpenAPI document must list exactly
/// these (checked by a test), and the role matrix test walks them.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/livez"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/v1/openapi.json"),
    ("GET", "/v1/stock/{sku}"),
    ("POST", "/v1/stock/{sku}/adjustments"),
    ("POST", "/v1/stock/{sku}/transfers"),
    ("POST", "/v1/locations"),
    ("GET", "/v1/locations"),
    ("PUT", "/v1/catalog/{sku}"),
    ("GET", "/v1/catalog/{sku}"),
    ("GET", "/v1/catalog"),
    ("POST", "/v1/customers"),
    ("GET", "/v1/customers/{id}"),
    ("PATCH", "/v1/customers/{id}"),
    ("POST", "/v1/customers/{id}/erase"),
    ("POST", "/v1/orders"),
    ("POST", "/v1/orders/bulk"),
    ("GET", "/v1/orders"),
    ("GET", "/v1/orders/{id}"),
    ("POST", "/v1/orders/{id}/cancel"),
    ("POST", "/v1/orders/{id}/shipments"),
    ("POST", "/v1/shipments/{id}/events"),
    ("GET", "/v1/shipments/{id}"),
    ("POST", "/v1/orders/{id}/returns"),
    ("POST", "/v1/returns/{id}/receive"),
    ("GET", "/v1/returns/{id}"),
    ("POST", "/v1/orders/{id}/refunds"),
    ("GET", "/v1/events"),
    ("GET", "/v1/events/stream"),
    ("POST", "/v1/webhooks"),
    ("GET", "/v1/webhooks"),
    ("DELETE", "/v1/webhooks/{id}"),
    ("GET", "/v1/webhooks/{id}/deliveries"),
    ("GET", "/v1/analytics/summary"),
    ("GET", "/v1/analytics/orders.csv"),
    ("GET", "/v1/ops/shards"),
    ("POST", "/v1/ops/shards/{id}/restart"),
    ("GET", "/v1/ops/incidents"),
    ("GET", "/v1/ops/quarantine"),
    ("DELETE", "/v1/ops/quarantine/{fingerprint}"),
    ("GET", "/v1/ops/inspection"),
    ("POST", "/v1/ops/keys/rotate"),
    ("POST", "/v1/ops/backups"),
    ("GET", "/v1/ops/backups"),
    ("POST", "/v1/ops/backups/{id}/verify"),
    ("GET", "/v1/ops/config"),
    ("POST", "/v1/ops/changes"),
    ("GET", "/v1/ops/changes"),
    ("GET", "/v1/ops/changes/{id}"),
    ("POST", "/v1/ops/changes/{id}/approve"),
    ("POST", "/v1/ops/changes/{id}/apply"),
    ("POST", "/v1/ops/changes/{id}/rollback"),
    ("POST", "/v1/keys"),
    ("GET", "/v1/keys"),
    ("DELETE", "/v1/keys/{id}"),
    ("GET", "/v1/audit"),
    ("GET", "/v1/audit/verify"),
    ("GET", "/v1/whoami"),
    ("GET", "/console"),
    ("GET", "/console/console.js"),
    ("GET", "/console/console.css"),
];

/// The bounds of the HTTP front door that handlers apply (from `[http]`).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// `http.body_limit_bytes`.
    pub body_limit_bytes: usize,
    /// `http.max_page_bytes`: a list's page is shortened to fit it.
    pub max_page_bytes: usize,
    /// `orders.bulk_max`: most lines of one bulk import.
    pub bulk_max_lines: usize,
    /// `orders.bulk_max_bytes`: most bytes of one bulk import's body.
    pub bulk_max_bytes: usize,
    /// `stock.locations_max`: most stock locations, `default` included.
    pub locations_max: usize,
}

impl Limits {
    pub fn from_config(
        http: &orderd_config::HttpConfig,
        orders: &orderd_config::OrdersConfig,
        stock: &orderd_config::StockConfig,
    ) -> Limits {
        Limits {
            body_limit_bytes: http.body_limit_bytes,
            max_page_bytes: http.max_page_bytes,
            bulk_max_lines: orders.bulk_max,
            bulk_max_bytes: orders.bulk_max_bytes,
            locations_max: stock.locations_max,
        }
    }

    /// The default page bound with this body limit.
    #[cfg(test)]
    pub fn with_body_limit(body_limit_bytes: usize) -> Limits {
        Limits {
            body_limit_bytes,
            max_page_bytes: 1024 * 1024,
            bulk_max_lines: 10_000,
            bulk_max_bytes: 16 << 20,
            locations_max: 64,
        }
    }
}

/// Registers extractor configs, the limits, the pricing policy, every route and the 404
/// fallback.
pub fn configure(
    cfg: &mut web::ServiceConfig,
    limits: Limits,
    pricing: orderd_service::ops::Pricing,
) {
    extract::configure_extractors(cfg, limits.body_limit_bytes);
    cfg.app_data(web::Data::new(limits));
    cfg.app_data(web::Data::new(pricing));
    cfg.service(
        web::resource("/livez")
            .name("/livez")
            .route(web::get().to(health::livez)),
    )
    .service(
        web::resource("/readyz")
            .name("/readyz")
            .route(web::get().to(health::readyz)),
    )
    .service(
        web::resource("/metrics")
            .name("/metrics")
            .route(web::get().to(health::metrics)),
    )
    .service(
        web::resource("/v1/openapi.json")
            .name("/v1/openapi.json")
            .route(web::get().to(openapi::openapi_json)),
    )
    .service(
        web::resource("/v1/stock/{sku}")
            .name("/v1/stock/{sku}")
            .route(web::get().to(stock::get)),
    )
    .service(
        web::resource("/v1/stock/{sku}/adjustments")
            .name("/v1/stock/{sku}/adjustments")
            .route(web::post().to(stock::adjust)),
    )
    .service(
        web::resource("/v1/stock/{sku}/transfers")
            .name("/v1/stock/{sku}/transfers")
            .route(web::post().to(stock::transfer)),
    )
    .service(
        web::resource("/v1/locations")
            .name("/v1/locations")
            .route(web::post().to(stock::create_location))
            .route(web::get().to(stock::list_locations)),
    )
    .service(
        web::resource("/v1/catalog/{sku}")
            .name("/v1/catalog/{sku}")
            .route(web::put().to(catalog::put))
            .route(web::get().to(catalog::get)),
    )
    .service(
        web::resource("/v1/catalog")
            .name("/v1/catalog")
            .route(web::get().to(catalog::list)),
    )
    .service(
        web::resource("/v1/customers")
            .name("/v1/customers")
            .route(web::post().to(customers::create)),
    )
    .service(
        web::resource("/v1/customers/{id}")
            .name("/v1/customers/{id}")
            .route(web::get().to(customers::get))
            .route(web::patch().to(customers::update)),
    )
    .service(
        web::resource("/v1/customers/{id}/erase")
            .name("/v1/customers/{id}/erase")
            .route(web::post().to(customers::erase)),
    )
    .service(
        web::resource("/v1/orders")
            .name("/v1/orders")
            .route(web::post().to(orders::place))
            .route(web::get().to(orders::list)),
    )
    // Before `/v1/orders/{id}`: resources match in registration order.
    .service(
        web::resource("/v1/orders/bulk")
            .name("/v1/orders/bulk")
            .route(web::post().to(bulk::import)),
    )
    .service(
        web::resource("/v1/orders/{id}")
            .name("/v1/orders/{id}")
            .route(web::get().to(orders::get)),
    )
    .service(
        web::resource("/v1/orders/{id}/cancel")
            .name("/v1/orders/{id}/cancel")
            .route(web::post().to(orders::cancel)),
    )
    .service(
        web::resource("/v1/orders/{id}/shipments")
            .name("/v1/orders/{id}/shipments")
            .route(web::post().to(shipments::create)),
    )
    .service(
        web::resource("/v1/shipments/{id}/events")
            .name("/v1/shipments/{id}/events")
            .route(web::post().to(shipments::event)),
    )
    .service(
        web::resource("/v1/shipments/{id}")
            .name("/v1/shipments/{id}")
            .route(web::get().to(shipments::get)),
    )
    .service(
        web::resource("/v1/orders/{id}/returns")
            .name("/v1/orders/{id}/returns")
            .route(web::post().to(returns::create)),
    )
    .service(
        web::resource("/v1/returns/{id}/receive")
            .name("/v1/returns/{id}/receive")
            .route(web::post().to(returns::receive)),
    )
    .service(
        web::resource("/v1/returns/{id}")
            .name("/v1/returns/{id}")
            .route(web::get().to(returns::get)),
    )
    .service(
        web::resource("/v1/orders/{id}/refunds")
            .name("/v1/orders/{id}/refunds")
            .route(web::post().to(returns::refund)),
    )
    .service(
        web::resource("/v1/events")
            .name("/v1/events")
            .route(web::get().to(events::list)),
    )
    .service(
        web::resource("/v1/events/stream")
            .name("/v1/events/stream")
            .route(web::get().to(events::stream)),
    )
    .service(
        web::resource("/v1/webhooks")
            .name("/v1/webhooks")
            .route(web::post().to(webhooks::create))
            .route(web::get().to(webhooks::list)),
    )
    .service(
        web::resource("/v1/webhooks/{id}")
            .name("/v1/webhooks/{id}")
            .route(web::delete().to(webhooks::delete)),
    )
    .service(
        web::resource("/v1/webhooks/{id}/deliveries")
            .name("/v1/webhooks/{id}/deliveries")
            .route(web::get().to(webhooks::deliveries)),
    )
    .service(
        web::resource("/v1/analytics/summary")
            .name("/v1/analytics/summary")
            .route(web::get().to(analytics::summary)),
    )
    .service(
        web::resource("/v1/analytics/orders.csv")
            .name("/v1/analytics/orders.csv")
            .route(web::get().to(analytics::orders_csv)),
    )
    .service(
        web::resource("/v1/ops/shards")
            .name("/v1/ops/shards")
            .route(web::get().to(ops::shards)),
    )
    .service(
        web::resource("/v1/ops/shards/{id}/restart")
            .name("/v1/ops/shards/{id}/restart")
            .route(web::post().to(ops::restart_shard)),
    )
    .service(
        web::resource("/v1/ops/incidents")
            .name("/v1/ops/incidents")
            .route(web::get().to(ops::incidents)),
    )
    .service(
        web::resource("/v1/ops/quarantine")
            .name("/v1/ops/quarantine")
            .route(web::get().to(ops::quarantine)),
    )
    .service(
        web::resource("/v1/ops/quarantine/{fingerprint}")
            .name("/v1/ops/quarantine/{fingerprint}")
            .route(web::delete().to(ops::lift_quarantine)),
    )
    .service(
        web::resource("/v1/ops/inspection")
            .name("/v1/ops/inspection")
            .route(web::get().to(ops::inspection)),
    )
    .service(
        web::resource("/v1/ops/keys/rotate")
            .name("/v1/ops/keys/rotate")
            .route(web::post().to(ops::rotate_keys)),
    )
    .service(
        web::resource("/v1/ops/backups")
            .name("/v1/ops/backups")
            .route(web::post().to(backups::create))
            .route(web::get().to(backups::list)),
    )
    .service(
        web::resource("/v1/ops/backups/{id}/verify")
            .name("/v1/ops/backups/{id}/verify")
            .route(web::post().to(backups::verify)),
    )
    .service(
        web::resource("/v1/ops/config")
            .name("/v1/ops/config")
            .route(web::get().to(changes::config)),
    )
    .service(
        web::resource("/v1/ops/changes")
            .name("/v1/ops/changes")
            .route(web::post().to(changes::request))
            .route(web::get().to(changes::list)),
    )
    .service(
        web::resource("/v1/ops/changes/{id}")
            .name("/v1/ops/changes/{id}")
            .route(web::get().to(changes::get)),
    )
    .service(
        web::resource("/v1/ops/changes/{id}/approve")
            .name("/v1/ops/changes/{id}/approve")
            .route(web::post().to(changes::approve)),
    )
    .service(
        web::resource("/v1/ops/changes/{id}/apply")
            .name("/v1/ops/changes/{id}/apply")
            .route(web::post().to(changes::apply)),
    )
    .service(
        web::resource("/v1/ops/changes/{id}/rollback")
            .name("/v1/ops/changes/{id}/rollback")
            .route(web::post().to(changes::rollback)),
    )
    .service(
        web::resource("/v1/keys")
            .name("/v1/keys")
            .route(web::post().to(keys::create))
            .route(web::get().to(keys::list)),
    )
    .service(
        web::resource("/v1/keys/{id}")
            .name("/v1/keys/{id}")
            .route(web::delete().to(keys::revoke)),
    )
    .service(
        web::resource("/v1/audit")
            .name("/v1/audit")
            .route(web::get().to(audit::list)),
    )
    .service(
        web::resource("/v1/audit/verify")
            .name("/v1/audit/verify")
            .route(web::get().to(audit::verify)),
    )
    .service(
        web::resource("/v1/whoami")
            .name("/v1/whoami")
            .route(web::get().to(whoami::whoami)),
    )
    .service(
        web::resource("/console")
            .name("/console")
            .route(web::get().to(console::page)),
    )
    .service(
        web::resource("/console/console.js")
            .name("/console/console.js")
            .route(web::get().to(console::script)),
    )
    .service(
        web::resource("/console/console.css")
            .name("/console/console.css")
            .route(web::get().to(console::style)),
    )
    .default_service(web::to(not_found));
}

/// One page of `items` (already in list order): the `limit` after the one whose id is `after`
/// (from the start when `None`), and the cursor of the next page. An `after` that is no id of
/// the list is 400.
pub(crate) fn page_after<T>(
    items: Vec<T>,
    id: impl Fn(&T) -> String,
    after: Option<&str>,
    limit: usize,
) -> Result<(Vec<T>, Option<String>), ApiError> {
    let start = match after {
        None => 0,
        Some(cursor) => match items.iter().position(|item| id(item) == cursor) {
            Some(at) => at + 1,
            None => {
                return Err(ApiError::invalid(
                    "after",
                    "after must be the `next` cursor of a previous page",
                ))
            }
        },
    };
    let mut page: Vec<T> = items.into_iter().skip(start).take(limit + 1).collect();
    let next = if page.len() > limit {
        page.truncate(limit);
        page.last().map(&id)
    } else {
        None
    };
    Ok((page, next))
}

async fn not_found() -> Result<HttpResponse, HttpError> {
    Err(ApiError::NotFound("no such route".into()).into())
}
