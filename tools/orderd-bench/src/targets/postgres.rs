//! The `postgres` target: PostgreSQL 15 (started by `ops/peers.sh`) with the usual order
//! schema (customers, stock, orders, order_lines, shipments) and one transaction per order:
//! for each line, in SKU order (so that two orders never wait for each other's rows in a
//! cycle), `UPDATE stock SET available = available - qty WHERE sku = $1 AND available >= qty`
//! (no row: rollback, refused), then the order and its lines are inserted and the transaction
//! commits. Durability as the server is configured (the report reads `fsync` and
//! `synchronous_commit` back; `ops/peers.sh` sets both on). One connection per client slot
//! (a transaction needs its connection to itself), through tokio-postgres without TLS.

use std::sync::Arc;

use anyhow::{bail, Context, Result};
use tokio_postgres::{Client, NoTls, Statement};

use super::{BoxFuture, Conn, Outcome, Plan, Settings, Target};
use crate::cpu::{self, CpuSource};
use crate::workload::{Op, Order, OrderRef};

const SCHEMA: &str = "
DROP TABLE IF EXISTS shipments, order_lines, orders, stock, customers CASCADE;
CREATE TABLE customers (
    id bigint PRIMARY KEY,
    name text NOT NULL,
    email text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE stock (
    sku text PRIMARY KEY,
    available bigint NOT NULL CHECK (available >= 0)
);
CREATE TABLE orders (
    id bigserial PRIMARY KEY,
    customer_id bigint NOT NULL REFERENCES customers (id),
    status text NOT NULL,
    total bigint NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX orders_customer ON orders (customer_id, created_at);
CREATE TABLE order_lines (
    order_id bigint NOT NULL REFERENCES orders (id),
    sku text NOT NULL REFERENCES stock (sku),
    qty integer NOT NULL CHECK (qty > 0),
    unit_price bigint NOT NULL,
    shipped_qty integer NOT NULL DEFAULT 0,
    PRIMARY KEY (order_id, sku)
);
CREATE TABLE shipments (
    id bigserial PRIMARY KEY,
    order_id bigint NOT NULL REFERENCES orders (id),
    carrier text NOT NULL,
    tracking_number text NOT NULL,
    status text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
";

/// Connects with the bench's timeout and runs the connection's I/O on its own task.
async fn connect_client(settings: &Settings) -> Result<Client> {
    let (client, connection) = tokio::time::timeout(
        settings.connect_timeout,
        tokio_postgres::connect(&settings.postgres_url, NoTls),
    )
    .await
    .with_context(|| {
        format!(
            "PostgreSQL at {} did not answer within {:.0} s (start it with `ops/peers.sh start`, or pass --postgres-url)",
            settings.postgres_url,
            settings.connect_timeout.as_secs_f64()
        )
    })?
    .with_context(|| {
        format!(
            "PostgreSQL at {} is not reachable (start it with `ops/peers.sh start`, or pass --postgres-url)",
            settings.postgres_url
        )
    })?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

pub async fn probe(settings: &Settings) -> Result<()> {
    let client = connect_client(settings).await?;
    client
        .simple_query("SELECT 1")
        .await
        .context("PostgreSQL answered the connection but not a query")?;
    Ok(())
}

pub struct Postgres {
    settings: Settings,
    customers: usize,
    skus: Arc<Vec<String>>,
    /// For set-up, reads of the stock, and `SHOW`.
    admin: Client,
    durability: String,
    cpu: CpuSource,
}

/// The postmaster, when PostgreSQL runs on this machine: the parent of this connection's
/// backend (`pg_backend_pid()`), if both are `postgres` processes here. Its process tree holds
/// every backend, the WAL writer, the checkpointer and the other helpers.
async fn server_cpu(admin: &Client) -> CpuSource {
    let backend = match admin.query_one("SELECT pg_backend_pid()", &[]).await {
        Ok(row) => row.get::<_, i32>(0),
        Err(_) => return CpuSource::Unknown,
    };
    let is_postgres =
        |pid: u32| cpu::process_name(pid).is_some_and(|name| name.starts_with("postgres"));
    let postmaster = u32::try_from(backend)
        .ok()
        .filter(|pid| is_postgres(*pid))
        .and_then(cpu::parent_pid)
        .filter(|pid| is_postgres(*pid));
    match postmaster {
        Some(pid) => CpuSource::Tree { pid },
        None => {
            eprintln!("orderd-bench: PostgreSQL does not run on this machine (or its processes are not visible): no server CPU for postgres");
            CpuSource::Unknown
        }
    }
}

pub async fn open(settings: &Settings, plan: &Plan) -> Result<Box<dyn Target>> {
    let admin = connect_client(settings).await?;
    admin
        .batch_execute(SCHEMA)
        .await
        .context("create the order schema")?;
    let customers = i64::try_from(plan.customers).context("customer count")?;
    admin
        .execute(
            "INSERT INTO customers (id, name, email)
             SELECT i, 'Bench Customer ' || i, 'bench' || i || '@example.com'
             FROM generate_series(0, $1::bigint - 1) AS i",
            &[&customers],
        )
        .await
        .context("insert the customers")?;
    let stock = i64::try_from(plan.stock_per_sku).context("stock per SKU exceeds bigint")?;
    let skus: Vec<&str> = plan.skus.iter().map(String::as_str).collect();
    admin
        .execute(
            "INSERT INTO stock (sku, available) SELECT unnest($1::text[]), $2",
            &[&skus, &stock],
        )
        .await
        .context("insert the stock")?;
    admin
        .batch_execute("ANALYZE")
        .await
        .context("analyze the new tables")?;
    let mut settings_read = Vec::new();
    for name in ["fsync", "synchronous_commit"] {
        let row = admin
            .query_one(&format!("SHOW {name}"), &[])
            .await
            .with_context(|| format!("SHOW {name}"))?;
        let value: String = row.get(0);
        if value != "on" {
            eprintln!(
                "orderd-bench: warning: PostgreSQL runs with {name}={value}: its commits are not durable, the comparison is not like for like"
            );
        }
        settings_read.push(format!("{name}={value}"));
    }
    let cpu = server_cpu(&admin).await;
    Ok(Box::new(Postgres {
        settings: settings.clone(),
        customers: plan.customers,
        skus: plan.skus.clone(),
        admin,
        durability: settings_read.join(", "),
        cpu,
    }))
}

impl Target for Postgres {
    fn durability(&self) -> String {
        self.durability.clone()
    }

    fn cpu_source(&self) -> CpuSource {
        self.cpu.clone()
    }

    fn connect(&self, _worker: usize) -> BoxFuture<'_, Result<Box<dyn Conn>>> {
        Box::pin(async move {
            let client = connect_client(&self.settings).await?;
            let statements = Statements::prepare(&client).await?;
            Ok(Box::new(PostgresConn {
                client,
                statements,
                customers: self.customers,
                skus: self.skus.clone(),
                lines: Vec::new(),
            }) as Box<dyn Conn>)
        })
    }

    fn stock_available<'a>(&'a self, sku: &'a str) -> BoxFuture<'a, Result<Option<u64>>> {
        Box::pin(async move {
            let row = self
                .admin
                .query_one("SELECT available FROM stock WHERE sku = $1", &[&sku])
                .await
                .with_context(|| format!("stock of {sku}"))?;
            let available: i64 = row.get(0);
            Ok(Some(u64::try_from(available).context("negative stock")?))
        })
    }

    fn stop(self: Box<Self>) -> BoxFuture<'static, Result<()>> {
        // The server is ops/peers.sh's; the tables stay until the next run drops them.
        Box::pin(async { Ok(()) })
    }
}

struct Statements {
    take_stock: Statement,
    insert_order: Statement,
    insert_lines: Statement,
    read: Statement,
    close_order: Statement,
    order_status: Statement,
    order_lines: Statement,
    return_stock: Statement,
    ship_lines: Statement,
    insert_shipment: Statement,
}

impl Statements {
    async fn prepare(client: &Client) -> Result<Statements> {
        let prepare = |sql: &'static str| async move {
            client
                .prepare(sql)
                .await
                .with_context(|| format!("prepare {sql}"))
        };
        Ok(Statements {
            take_stock: prepare(
                "UPDATE stock SET available = available - $2 WHERE sku = $1 AND available >= $2",
            )
            .await?,
            insert_order: prepare(
                "INSERT INTO orders (customer_id, status, total) VALUES ($1, 'confirmed', $2) RETURNING id",
            )
            .await?,
            insert_lines: prepare(
                "INSERT INTO order_lines (order_id, sku, qty, unit_price)
                 SELECT $1, * FROM unnest($2::text[], $3::integer[], $4::bigint[])",
            )
            .await?,
            read: prepare(
                "SELECT o.status, o.total, l.sku, l.qty, l.unit_price, l.shipped_qty
                 FROM orders o JOIN order_lines l ON l.order_id = o.id WHERE o.id = $1",
            )
            .await?,
            close_order: prepare(
                "UPDATE orders SET status = $2, updated_at = now()
                 WHERE id = $1 AND status = 'confirmed'",
            )
            .await?,
            order_status: prepare("SELECT status FROM orders WHERE id = $1").await?,
            order_lines: prepare(
                "SELECT sku, qty FROM order_lines WHERE order_id = $1 ORDER BY sku",
            )
            .await?,
            return_stock: prepare("UPDATE stock SET available = available + $2 WHERE sku = $1")
                .await?,
            ship_lines: prepare("UPDATE order_lines SET shipped_qty = qty WHERE order_id = $1")
                .await?,
            insert_shipment: prepare(
                "INSERT INTO shipments (order_id, carrier, tracking_number, status)
                 VALUES ($1::bigint, 'bench', 'BENCH-' || ($1::bigint)::text, 'shipped')",
            )
            .await?,
        })
    }
}

struct PostgresConn {
    client: Client,
    statements: Statements,
    customers: usize,
    skus: Arc<Vec<String>>,
    /// Reused buffer: the lines of the order being placed, sorted by SKU.
    lines: Vec<(u32, i32, i64)>,
}

fn order_id(order: &OrderRef) -> Result<i64> {
    match order {
        OrderRef::Number(id) => i64::try_from(*id).context("order id"),
        OrderRef::Text(text) => bail!("not a PostgreSQL order id: {text}"),
    }
}

impl PostgresConn {
    async fn place(&mut self, order: &Order) -> Result<Outcome> {
        debug_assert!(order.customer < self.customers);
        self.lines.clear();
        self.lines.extend(
            order
                .lines
                .iter()
                .map(|l| (l.sku, l.qty as i32, l.unit_price as i64)),
        );
        let skus = &self.skus;
        self.lines
            .sort_unstable_by(|a, b| skus[a.0 as usize].cmp(&skus[b.0 as usize]));
        let st = &self.statements;
        let transaction = self.client.transaction().await?;
        for (sku, qty, _) in &self.lines {
            let sku = skus[*sku as usize].as_str();
            let qty = i64::from(*qty);
            if transaction.execute(&st.take_stock, &[&sku, &qty]).await? == 0 {
                transaction.rollback().await?;
                return Ok(Outcome::Refused);
            }
        }
        let total: i64 = self.lines.iter().map(|(_, q, p)| i64::from(*q) * p).sum();
        let customer = order.customer as i64;
        let id: i64 = transaction
            .query_one(&st.insert_order, &[&customer, &total])
            .await?
            .get(0);
        let line_skus: Vec<&str> = self
            .lines
            .iter()
            .map(|(s, _, _)| skus[*s as usize].as_str())
            .collect();
        let qtys: Vec<i32> = self.lines.iter().map(|(_, q, _)| *q).collect();
        let prices: Vec<i64> = self.lines.iter().map(|(_, _, p)| *p).collect();
        transaction
            .execute(&st.insert_lines, &[&id, &line_skus, &qtys, &prices])
            .await?;
        transaction.commit().await?;
        Ok(Outcome::Ok(
            order.want_ref.then_some(OrderRef::Number(id as u64)),
        ))
    }

    async fn read(&mut self, order: &OrderRef) -> Result<Outcome> {
        let id = order_id(order)?;
        let rows = self.client.query(&self.statements.read, &[&id]).await?;
        if rows.is_empty() {
            return Ok(Outcome::Error(format!("order {id} not found")));
        }
        Ok(Outcome::Ok(None))
    }

    /// Cancel: the order leaves `confirmed` and its units go back to stock, in SKU order.
    /// Cancelling a cancelled order succeeds again (as orderd's API does).
    async fn cancel(&mut self, order: &OrderRef) -> Result<Outcome> {
        let id = order_id(order)?;
        let st = &self.statements;
        let transaction = self.client.transaction().await?;
        let cancelled = "cancelled";
        if transaction
            .execute(&st.close_order, &[&id, &cancelled])
            .await?
            == 0
        {
            let status = transaction.query_opt(&st.order_status, &[&id]).await?;
            transaction.rollback().await?;
            return Ok(match status.map(|row| row.get::<_, String>(0)) {
                Some(status) if status == "cancelled" => Outcome::Ok(None),
                Some(_) => Outcome::Refused,
                None => Outcome::Error(format!("order {id} not found")),
            });
        }
        let lines = transaction.query(&st.order_lines, &[&id]).await?;
        for line in lines {
            let sku: &str = line.get(0);
            let qty = i64::from(line.get::<_, i32>(1));
            transaction.execute(&st.return_stock, &[&sku, &qty]).await?;
        }
        transaction.commit().await?;
        Ok(Outcome::Ok(None))
    }

    /// Ship everything of a confirmed order in one shipment.
    async fn ship(&mut self, order: &OrderRef) -> Result<Outcome> {
        let id = order_id(order)?;
        let st = &self.statements;
        let transaction = self.client.transaction().await?;
        let shipped = "shipped";
        if transaction
            .execute(&st.close_order, &[&id, &shipped])
            .await?
            == 0
        {
            transaction.rollback().await?;
            return Ok(Outcome::Refused);
        }
        transaction.execute(&st.ship_lines, &[&id]).await?;
        transaction.execute(&st.insert_shipment, &[&id]).await?;
        transaction.commit().await?;
        Ok(Outcome::Ok(None))
    }
}

impl Conn for PostgresConn {
    fn execute<'a>(&'a mut self, op: &'a Op) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let result = match op {
                Op::Place(order) => self.place(order).await,
                Op::Read(order) => self.read(order).await,
                Op::Cancel(order) => self.cancel(order).await,
                Op::Ship(order) => self.ship(order).await,
            };
            result.unwrap_or_else(|error| Outcome::Error(format!("{error:#}")))
        })
    }
}
