//! `GET /v1/analytics/summary` (from the shards' sales counters) and
//! `GET /v1/analytics/orders.csv` (streamed shard by shard, page by page, in constant memory).

use std::pin::Pin;
use std::task::{Context, Poll};

use actix_web::{web, HttpResponse};
use chrono::DateTime;
use orderd_engine::{Engine, OrderId};
use orderd_proto::AnalyticsQuery;
use tokio::sync::mpsc;

use crate::http::error::HttpError;
use crate::http::extract::Authed;
use crate::http::extract::QueryParams;
use orderd_service::ApiError;
use orderd_service::{roles, wire};

/// SKUs in `top_skus`.
pub const TOP_SKUS: usize = 10;
/// Orders fetched from a shard per page of the CSV export.
pub const CSV_PAGE_ORDERS: usize = 1000;
/// Encoded pages buffered between the export task and the socket: memory stays bounded by
/// this many pages whatever the number of orders.
pub const CSV_BUFFERED_PAGES: usize = 2;
/// The CSV header line.
pub const CSV_HEADER: &str = "order_id,created_at,status,customer_id,sku,qty,unit_price\n";

/// `[from, to)` in microseconds from the query; absent bounds are open.
fn range(query: &AnalyticsQuery) -> Result<(i64, i64), ApiError> {
    let parse = |param: &str, text: &Option<String>, default: i64| match text {
        None => Ok(default),
        Some(text) => DateTime::parse_from_rfc3339(text)
            .map(|t| t.timestamp_micros())
            .map_err(|_| ApiError::invalid(param, format!("{param} must be an RFC 3339 time"))),
    };
    let from = parse("from", &query.from, i64::MIN)?;
    let to = parse("to", &query.to, i64::MAX)?;
    if from > to {
        return Err(ApiError::invalid("to", "to must not be before from"));
    }
    Ok((from, to))
}

#[utoipa::path(get, path = "/v1/analytics/summary", tag = "analytics",
    params(orderd_proto::AnalyticsQuery),
    responses((status = 200, description = "Sales of the orders placed in [from, to)", body = orderd_proto::SalesSummaryResponse)),
    security(("bearer" = [])))]
pub async fn summary(
    caller: Authed,
    query: QueryParams<AnalyticsQuery>,
    engine: web::Data<Engine>,
) -> Result<HttpResponse, HttpError> {
    caller.require(roles::ANALYTICS_READ)?;
    let (from, to) = range(&query.get()?)?;
    let summary = engine.sales_summary(from, to).await?;
    Ok(HttpResponse::Ok().json(wire::sales_summary(&summary, TOP_SKUS)))
}

/// A body fed by the export task through a bounded channel.
struct ChannelBody(mpsc::Receiver<Result<web::Bytes, ApiError>>);

impl futures_core::Stream for ChannelBody {
    type Item = Result<web::Bytes, ApiError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}

#[utoipa::path(get, path = "/v1/analytics/orders.csv", tag = "analytics",
    params(orderd_proto::AnalyticsQuery),
    responses((status = 200, description = "One line per order line of every order placed in [from, to)", body = String, content_type = "text/csv")),
    security(("bearer" = [])))]
pub async fn orders_csv(
    caller: Authed,
    query: QueryParams<AnalyticsQuery>,
    engine: web::Data<Engine>,
) -> Result<HttpResponse, HttpError> {
    caller.require(roles::ANALYTICS_READ)?;
    let (from, to) = range(&query.get()?)?;
    // The first page is fetched before answering, so that an unavailable shard is a 503
    // rather than a cut-off 200.
    let engine = engine.into_inner();
    let first = engine
        .orders_placed_between(0, from, to, None, CSV_PAGE_ORDERS)
        .await?;
    let (tx, rx) = mpsc::channel(CSV_BUFFERED_PAGES);
    actix_web::rt::spawn(async move {
        let mut chunk = String::from(CSV_HEADER);
        let mut page = first;
        let mut shard = 0u16;
        loop {
            let last = page.last().map(|o| (o.created_at_us, o.id));
            for order in &page {
                let created = wire::time(order.created_at_us);
                for line in &order.lines {
                    use std::fmt::Write;
                    let _ = writeln!(
                        chunk,
                        "{},{},{},{},{},{},{}",
                        order.id,
                        created,
                        order.status.as_str(),
                        order.customer_id,
                        line.sku,
                        line.qty,
                        line.unit_price
                    );
                }
            }
            if !chunk.is_empty()
                && tx
                    .send(Ok(web::Bytes::from(std::mem::take(&mut chunk))))
                    .await
                    .is_err()
            {
                return; // The client went away.
            }
            let after: Option<(i64, OrderId)> = if page.len() == CSV_PAGE_ORDERS {
                last
            } else {
                shard += 1;
                if shard as usize >= engine.shard_count() {
                    return;
                }
                None
            };
            page = match engine
                .orders_placed_between(shard, from, to, after, CSV_PAGE_ORDERS)
                .await
            {
                Ok(page) => page,
                Err(error) => {
                    // Headers are gone; cutting the body off tells the client it is incomplete.
                    tracing::warn!(message = "CSV export stopped early.", %error);
                    let _ = tx.send(Err(ApiError::from(error))).await;
                    return;
                }
            };
        }
    });
    Ok(HttpResponse::Ok()
        .content_type("text/csv; charset=utf-8")
        .streaming(ChannelBody(rx)))
}
