//! The HTTP routes of this version: one submodule per resource, all registered by [`configure`].
//!
//! Every `/v1` handler takes a [`Caller`](crate::auth::Caller) first (401 before anything else),
//! then path, query and body, and the engine last; it checks the role table, validates the
//! request, calls the engine and maps the answer onto the wire types. Unknown paths are 404 `not_found`; a known path with a wrong method is 405
//! `method_not_allowed` (with `Allow`).

mod customers;
#[cfg(test)]
mod flow_tests;
mod health;
mod ops;
mod orders;
mod stock;
#[cfg(test)]
mod tests;

use actix_web::{web, HttpResponse};

use crate::body;
use crate::error::ApiError;

/// Registers extractor configs, every route and the 404 fallback.
pub fn configure(cfg: &mut web::ServiceConfig, body_limit_bytes: usize) {
    body::configure_extractors(cfg, body_limit_bytes);
    cfg.service(web::resource("/livez").route(web::get().to(health::livez)))
        .service(web::resource("/readyz").route(web::get().to(health::readyz)))
        .service(web::resource("/v1/stock/{sku}").route(web::get().to(stock::get)))
        .service(web::resource("/v1/stock/{sku}/adjustments").route(web::post().to(stock::adjust)))
        .service(web::resource("/v1/customers").route(web::post().to(customers::create)))
        .service(web::resource("/v1/customers/{id}").route(web::get().to(customers::get)))
        .service(
            web::resource("/v1/orders")
                .route(web::post().to(orders::place))
                .route(web::get().to(orders::list)),
        )
        .service(web::resource("/v1/orders/{id}").route(web::get().to(orders::get)))
        .service(web::resource("/v1/orders/{id}/cancel").route(web::post().to(orders::cancel)))
        .service(web::resource("/v1/ops/shards").route(web::get().to(ops::shards)))
        .service(
            web::resource("/v1/ops/shards/{id}/restart").route(web::post().to(ops::restart_shard)),
        )
        .service(web::resource("/v1/ops/keys/rotate").route(web::post().to(ops::rotate_keys)))
        .default_service(web::to(not_found));
}

async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound("no such route".into()))
}
