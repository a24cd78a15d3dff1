//! The `redis` target: Redis 7 (started by `ops/peers.sh` with `appendonly yes`, `appendfsync
//! always`: every write is in the append-only file and fsynced before its reply) with one Lua
//! script per operation, called by EVALSHA: the placement script checks every line's stock,
//! then decrements them all, allocates an order id and stores the order and its lines, so an
//! order is all-or-nothing as in orderd. Cancel, ship and read are scripts too. Each worker has
//! one multiplexed connection that its client slots share (Redis pipelines their requests).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Script, Value};

use super::{BoxFuture, Conn, Outcome, Plan, Settings, Target};
use crate::cpu::{self, CpuSource};
use crate::workload::{Op, Order, OrderRef};

/// ARGV: customer index, then (sku, qty, unit_price) per line. Returns the new order's id, -1
/// when a line is short (nothing is taken), -2 for an unknown customer.
const PLACE: &str = r#"
local customer = ARGV[1]
if redis.call('EXISTS', 'customer:' .. customer) == 0 then return -2 end
local n = (#ARGV - 1) / 3
for i = 0, n - 1 do
  local available = tonumber(redis.call('GET', 'stock:' .. ARGV[2 + i * 3]) or '0')
  if available < tonumber(ARGV[3 + i * 3]) then return -1 end
end
local id = redis.call('INCR', 'orders:next')
local key = 'order:' .. id
local total = 0
for i = 0, n - 1 do
  local sku, qty, price = ARGV[2 + i * 3], ARGV[3 + i * 3], ARGV[4 + i * 3]
  redis.call('DECRBY', 'stock:' .. sku, qty)
  redis.call('RPUSH', key .. ':lines', sku, qty, price, 0)
  total = total + tonumber(qty) * tonumber(price)
end
redis.call('HSET', key, 'customer', customer, 'status', 'confirmed', 'total', total)
return id
"#;

/// ARGV: order id. Returns 1 when cancelled (also when it already was), -1 when the order can
/// no longer be cancelled, -3 when there is no such order.
const CANCEL: &str = r#"
local key = 'order:' .. ARGV[1]
local status = redis.call('HGET', key, 'status')
if not status then return -3 end
if status == 'cancelled' then return 1 end
if status ~= 'confirmed' then return -1 end
local lines = redis.call('LRANGE', key .. ':lines', 0, -1)
for i = 1, #lines, 4 do
  redis.call('INCRBY', 'stock:' .. lines[i], lines[i + 1])
end
redis.call('HSET', key, 'status', 'cancelled')
return 1
"#;

/// ARGV: order id, carrier. Ships everything of a confirmed order in one shipment; returns the
/// shipment id, -1 when the order cannot be shipped, -3 when there is no such order.
const SHIP: &str = r#"
local key = 'order:' .. ARGV[1]
local status = redis.call('HGET', key, 'status')
if not status then return -3 end
if status ~= 'confirmed' then return -1 end
local lines = redis.call('LRANGE', key .. ':lines', 0, -1)
for i = 1, #lines, 4 do
  redis.call('LSET', key .. ':lines', i + 2, lines[i + 1])
end
local id = redis.call('INCR', 'shipments:next')
redis.call('HSET', 'shipment:' .. id, 'order', ARGV[1], 'carrier', ARGV[2], 'status', 'shipped')
redis.call('HSET', key, 'status', 'shipped', 'shipment', id)
return id
"#;

/// ARGV: order id. Returns the order's fields and its lines, or -3.
const READ: &str = r#"
local key = 'order:' .. ARGV[1]
local order = redis.call('HGETALL', key)
if #order == 0 then return -3 end
return {order, redis.call('LRANGE', key .. ':lines', 0, -1)}
"#;

/// SKUs per pipelined set-up batch.
const SETUP_BATCH: usize = 1000;

async fn connect_client(settings: &Settings) -> Result<MultiplexedConnection> {
    let client = redis::Client::open(settings.redis_url.as_str())
        .with_context(|| format!("Redis URL {}", settings.redis_url))?;
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(settings.connect_timeout)
        // Generous: with appendfsync always a busy disk makes replies slow, not lost.
        .set_response_timeout(settings.connect_timeout * 6);
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .with_context(|| {
            format!(
                "Redis at {} is not reachable (start it with `ops/peers.sh start`, or pass --redis-url)",
                settings.redis_url
            )
        })
}

pub async fn probe(settings: &Settings) -> Result<()> {
    let mut conn = connect_client(settings).await?;
    let pong: String = redis::cmd("PING")
        .query_async(&mut conn)
        .await
        .context("Redis answered the connection but not PING")?;
    if pong != "PONG" {
        bail!("Redis answered PING with {pong:?}");
    }
    Ok(())
}

struct Scripts {
    place: Script,
    cancel: Script,
    ship: Script,
    read: Script,
}

pub struct Redis {
    settings: Settings,
    scripts: Arc<Scripts>,
    skus: Arc<Vec<String>>,
    admin: Mutex<MultiplexedConnection>,
    /// One multiplexed connection per worker, shared by its slots.
    workers: tokio::sync::Mutex<HashMap<usize, MultiplexedConnection>>,
    durability: String,
    cpu: CpuSource,
}

/// The redis-server process, when it runs on this machine: the `process_id` of `INFO server`,
/// if that pid here is a redis-server.
async fn server_cpu(conn: &mut MultiplexedConnection) -> CpuSource {
    let info: String = match redis::cmd("INFO").arg("server").query_async(conn).await {
        Ok(info) => info,
        Err(_) => return CpuSource::Unknown,
    };
    let pid = info
        .lines()
        .find_map(|line| line.strip_prefix("process_id:"))
        .and_then(|pid| pid.trim().parse::<u32>().ok());
    match pid {
        Some(pid)
            if cpu::process_name(pid).is_some_and(|name| name.starts_with("redis-server")) =>
        {
            CpuSource::Tree { pid }
        }
        _ => {
            eprintln!("orderd-bench: Redis does not run on this machine (or its process is not visible): no server CPU for redis");
            CpuSource::Unknown
        }
    }
}

async fn config_value(conn: &mut MultiplexedConnection, name: &str) -> Result<String> {
    let pair: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg(name)
        .query_async(conn)
        .await
        .with_context(|| format!("CONFIG GET {name}"))?;
    pair.get(1)
        .cloned()
        .with_context(|| format!("Redis has no setting {name}"))
}

pub async fn open(settings: &Settings, plan: &Plan) -> Result<Box<dyn Target>> {
    let mut admin = connect_client(settings).await?;
    let appendonly = config_value(&mut admin, "appendonly").await?;
    let appendfsync = config_value(&mut admin, "appendfsync").await?;
    if appendonly != "yes" || appendfsync != "always" {
        eprintln!(
            "orderd-bench: warning: Redis runs with appendonly={appendonly}, appendfsync={appendfsync}: its replies do not wait for an fsync, the comparison is not like for like"
        );
    }
    redis::cmd("FLUSHDB")
        .query_async::<()>(&mut admin)
        .await
        .context("FLUSHDB")?;
    let mut pipe = redis::pipe();
    for i in 0..plan.customers {
        pipe.hset_multiple(
            format!("customer:{i}"),
            &[
                ("name", format!("Bench Customer {i}")),
                ("email", format!("bench{i}@example.com")),
            ],
        )
        .ignore();
    }
    pipe.query_async::<()>(&mut admin)
        .await
        .context("create the customers")?;
    for chunk in plan.skus.chunks(SETUP_BATCH) {
        let mut pipe = redis::pipe();
        for sku in chunk {
            pipe.set(format!("stock:{sku}"), plan.stock_per_sku)
                .ignore();
        }
        pipe.query_async::<()>(&mut admin)
            .await
            .context("set the stock")?;
    }
    let scripts = Scripts {
        place: Script::new(PLACE),
        cancel: Script::new(CANCEL),
        ship: Script::new(SHIP),
        read: Script::new(READ),
    };
    for script in [
        &scripts.place,
        &scripts.cancel,
        &scripts.ship,
        &scripts.read,
    ] {
        script
            .prepare_invoke()
            .load_async(&mut admin)
            .await
            .context("SCRIPT LOAD")?;
    }
    let cpu = server_cpu(&mut admin).await;
    Ok(Box::new(Redis {
        settings: settings.clone(),
        scripts: Arc::new(scripts),
        skus: plan.skus.clone(),
        admin: Mutex::new(admin),
        workers: tokio::sync::Mutex::new(HashMap::new()),
        durability: format!("appendonly {appendonly}, appendfsync {appendfsync}"),
        cpu,
    }))
}

impl Target for Redis {
    fn durability(&self) -> String {
        self.durability.clone()
    }

    fn cpu_source(&self) -> CpuSource {
        self.cpu.clone()
    }

    fn connect(&self, worker: usize) -> BoxFuture<'_, Result<Box<dyn Conn>>> {
        Box::pin(async move {
            let mut workers = self.workers.lock().await;
            let conn = match workers.get(&worker) {
                Some(conn) => conn.clone(),
                None => {
                    let conn = connect_client(&self.settings).await?;
                    workers.insert(worker, conn.clone());
                    conn
                }
            };
            Ok(Box::new(RedisConn {
                conn,
                scripts: self.scripts.clone(),
                skus: self.skus.clone(),
            }) as Box<dyn Conn>)
        })
    }

    fn stock_available<'a>(&'a self, sku: &'a str) -> BoxFuture<'a, Result<Option<u64>>> {
        Box::pin(async move {
            let mut admin = self.admin.lock().expect("admin connection").clone();
            let available: u64 = redis::cmd("GET")
                .arg(format!("stock:{sku}"))
                .query_async(&mut admin)
                .await
                .with_context(|| format!("stock of {sku}"))?;
            Ok(Some(available))
        })
    }

    fn stop(self: Box<Self>) -> BoxFuture<'static, Result<()>> {
        // The server is ops/peers.sh's; the keys stay until the next run flushes them.
        Box::pin(async { Ok(()) })
    }
}

struct RedisConn {
    conn: MultiplexedConnection,
    scripts: Arc<Scripts>,
    skus: Arc<Vec<String>>,
}

fn order_id(order: &OrderRef) -> Result<u64> {
    match order {
        OrderRef::Number(id) => Ok(*id),
        OrderRef::Text(text) => bail!("not a Redis order id: {text}"),
    }
}

/// Maps a script's status code: a positive id or 1 is success.
fn status(kind: &str, code: i64) -> Outcome {
    match code {
        1.. => Outcome::Ok(None),
        -1 => Outcome::Refused,
        -2 => Outcome::Error(format!("{kind}: unknown customer")),
        -3 => Outcome::Error(format!("{kind}: no such order")),
        other => Outcome::Error(format!("{kind}: unexpected script result {other}")),
    }
}

impl RedisConn {
    async fn place(&mut self, order: &Order) -> Result<Outcome> {
        let mut invocation = self.scripts.place.prepare_invoke();
        invocation.arg(order.customer);
        for line in &order.lines {
            invocation
                .arg(self.skus[line.sku as usize].as_str())
                .arg(line.qty)
                .arg(line.unit_price);
        }
        let id: i64 = invocation.invoke_async(&mut self.conn).await?;
        Ok(match status("place", id) {
            Outcome::Ok(_) => Outcome::Ok(order.want_ref.then_some(OrderRef::Number(id as u64))),
            other => other,
        })
    }

    async fn run(&mut self, op: &Op) -> Result<Outcome> {
        match op {
            Op::Place(order) => self.place(order).await,
            Op::Read(order) => {
                let value: Value = self
                    .scripts
                    .read
                    .arg(order_id(order)?)
                    .invoke_async(&mut self.conn)
                    .await?;
                Ok(match value {
                    Value::Int(code) => status("read", code),
                    _ => Outcome::Ok(None),
                })
            }
            Op::Cancel(order) => {
                let code: i64 = self
                    .scripts
                    .cancel
                    .arg(order_id(order)?)
                    .invoke_async(&mut self.conn)
                    .await?;
                Ok(status("cancel", code))
            }
            Op::Ship(order) => {
                let code: i64 = self
                    .scripts
                    .ship
                    .arg(order_id(order)?)
                    .arg("bench")
                    .invoke_async(&mut self.conn)
                    .await?;
                Ok(status("ship", code))
            }
        }
    }
}

impl Conn for RedisConn {
    fn execute<'a>(&'a mut self, op: &'a Op) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            self.run(op)
                .await
                .unwrap_or_else(|error| Outcome::Error(format!("{error:#}")))
        })
    }
}
