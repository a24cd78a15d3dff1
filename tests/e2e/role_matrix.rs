//! Role × route matrix: every route of `orderd_gateway::http::ROUTES` called by each of the
//! eight roles, with no key and with a revoked key, checked against the role table of API.md
//! written out below (not derived from the server's own table); a `customer` key on its own
//! objects and on another customer's; refused calls change nothing; auditors read customers
//! masked. The lift of a quarantine needs a quarantined command: the fixtures make one through
//! the failpoints of the test build (a `FAILPOINT-PANIC…` SKU adjusted until it is refused).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::thread;
use std::time::{Duration, Instant};

use orderd_gateway::http::ROUTES;
use serde_json::{json, Value};

use crate::support::{code, serial, unique, Client, Reply, Server};

/// Roles allowed to read stock.
const STOCK_READERS: &[&str] = &[
    "admin",
    "frontend",
    "logistics",
    "analyst",
    "operator",
    "merchandiser",
];
/// Roles allowed to set catalog prices.
const CATALOG_WRITERS: &[&str] = &["admin", "merchandiser"];
/// Roles allowed to read catalog prices (operators read elsewhere).
const CATALOG_READERS: &[&str] = &["admin", "merchandiser", "operator"];
/// Roles allowed to read and list orders (a `customer` key only its own).
const ORDER_READERS: &[&str] = &[
    "admin",
    "frontend",
    "customer",
    "logistics",
    "analyst",
    "operator",
];
/// Roles allowed to place and cancel orders (a `customer` key only its own).
const ORDER_WRITERS: &[&str] = &["admin", "frontend", "customer"];
/// Roles allowed to create shipments and report their events.
const SHIPPERS: &[&str] = &["admin", "logistics"];
/// Roles allowed to open returns (a `customer` key only of its own orders).
const RETURNERS: &[&str] = &["admin", "frontend", "logistics", "customer"];
/// Roles allowed to receive returns: the warehouse.
const RECEIVERS: &[&str] = &["admin", "logistics"];
/// Roles allowed to read a return: who may open or receive one, and the order readers.
const RETURN_READERS: &[&str] = &[
    "admin",
    "frontend",
    "customer",
    "logistics",
    "analyst",
    "operator",
];
/// Roles allowed to refund.
const REFUNDERS: &[&str] = &["admin", "frontend"];
/// The stock location the matrix's transfers move units to (from `default`).
const MATRIX_LOCATION: &str = "mtx-wh";
/// Where the matrix's webhooks point: the discard port on loopback, where nothing listens.
const MATRIX_HOOK_URL: &str = "http://127.0.0.1:9/matrix";
/// Roles allowed to read events (pages and the stream).
const EVENT_READERS: &[&str] = &["admin", "frontend", "analyst", "operator"];
/// Roles allowed to read analytics.
const ANALYSTS: &[&str] = &["admin", "analyst", "operator"];
/// Roles allowed under `/v1/ops`.
const OPERATORS: &[&str] = &["admin", "operator"];
/// Roles allowed to read the audit log.
const AUDITORS: &[&str] = &["admin", "auditor"];
/// Roles allowed to read the change history.
const CHANGE_READERS: &[&str] = &["admin", "operator", "auditor"];
/// Roles allowed to read incidents (and the quarantine).
const INCIDENT_READERS: &[&str] = &["admin", "operator", "auditor"];
/// Roles allowed to manage keys.
const ADMINS: &[&str] = &["admin"];

/// API.md "Authentication and roles", route by route: (method, path template, the roles that
/// may call it — `None` when no key is needed —, the status of a successful call). `customer`
/// in a list means: on its own customer record and orders only.
const TABLE: &[(&str, &str, Option<&[&str]>, u16)] = &[
    ("GET", "/livez", None, 200),
    ("GET", "/readyz", None, 200),
    ("GET", "/metrics", None, 200),
    ("GET", "/v1/openapi.json", None, 200),
    ("GET", "/v1/stock/{sku}", Some(STOCK_READERS), 200),
    (
        "POST",
        "/v1/stock/{sku}/adjustments",
        Some(&["admin", "logistics"]),
        200,
    ),
    (
        "POST",
        "/v1/stock/{sku}/transfers",
        Some(&["admin", "logistics"]),
        200,
    ),
    ("POST", "/v1/locations", Some(&["admin", "logistics"]), 201),
    ("GET", "/v1/locations", Some(STOCK_READERS), 200),
    ("PUT", "/v1/catalog/{sku}", Some(CATALOG_WRITERS), 200),
    ("GET", "/v1/catalog/{sku}", Some(CATALOG_READERS), 200),
    ("GET", "/v1/catalog", Some(CATALOG_READERS), 200),
    ("POST", "/v1/customers", Some(&["admin", "frontend"]), 201),
    (
        "GET",
        "/v1/customers/{id}",
        Some(&["admin", "frontend", "customer", "operator", "auditor"]),
        200,
    ),
    (
        "PATCH",
        "/v1/customers/{id}",
        Some(&["admin", "frontend", "customer"]),
        200,
    ),
    ("POST", "/v1/customers/{id}/erase", Some(ADMINS), 200),
    ("POST", "/v1/orders", Some(ORDER_WRITERS), 201),
    ("POST", "/v1/orders/bulk", Some(&["admin", "frontend"]), 200),
    ("GET", "/v1/orders", Some(ORDER_READERS), 200),
    ("GET", "/v1/orders/{id}", Some(ORDER_READERS), 200),
    ("POST", "/v1/orders/{id}/cancel", Some(ORDER_WRITERS), 200),
    ("POST", "/v1/orders/{id}/shipments", Some(SHIPPERS), 201),
    ("POST", "/v1/shipments/{id}/events", Some(SHIPPERS), 200),
    (
        "GET",
        "/v1/shipments/{id}",
        Some(&["admin", "logistics", "operator"]),
        200,
    ),
    ("POST", "/v1/orders/{id}/returns", Some(RETURNERS), 201),
    ("POST", "/v1/returns/{id}/receive", Some(RECEIVERS), 200),
    ("GET", "/v1/returns/{id}", Some(RETURN_READERS), 200),
    ("POST", "/v1/orders/{id}/refunds", Some(REFUNDERS), 201),
    ("GET", "/v1/events", Some(EVENT_READERS), 200),
    ("GET", "/v1/events/stream", Some(EVENT_READERS), 200),
    ("POST", "/v1/webhooks", Some(ADMINS), 201),
    ("GET", "/v1/webhooks", Some(ADMINS), 200),
    ("DELETE", "/v1/webhooks/{id}", Some(ADMINS), 204),
    ("GET", "/v1/webhooks/{id}/deliveries", Some(ADMINS), 200),
    ("GET", "/v1/analytics/summary", Some(ANALYSTS), 200),
    ("GET", "/v1/analytics/orders.csv", Some(ANALYSTS), 200),
    ("GET", "/v1/ops/shards", Some(OPERATORS), 200),
    ("POST", "/v1/ops/shards/{id}/restart", Some(OPERATORS), 202),
    ("GET", "/v1/ops/incidents", Some(INCIDENT_READERS), 200),
    ("GET", "/v1/ops/quarantine", Some(INCIDENT_READERS), 200),
    (
        "DELETE",
        "/v1/ops/quarantine/{fingerprint}",
        Some(OPERATORS),
        200,
    ),
    ("GET", "/v1/ops/inspection", Some(OPERATORS), 200),
    ("POST", "/v1/ops/keys/rotate", Some(OPERATORS), 200),
    ("POST", "/v1/ops/backups", Some(OPERATORS), 201),
    ("GET", "/v1/ops/backups", Some(OPERATORS), 200),
    ("POST", "/v1/ops/backups/{id}/verify", Some(OPERATORS), 200),
    ("GET", "/v1/ops/config", Some(OPERATORS), 200),
    ("POST", "/v1/ops/changes", Some(OPERATORS), 201),
    ("GET", "/v1/ops/changes", Some(CHANGE_READERS), 200),
    ("GET", "/v1/ops/changes/{id}", Some(CHANGE_READERS), 200),
    // An admin other than the requester: the fixtures' changes are requested with the
    // server's admin key, the matrix's `admin` is a key of its own (see `Setup::new`).
    (
        "POST",
        "/v1/ops/changes/{id}/approve",
        Some(&["admin"]),
        200,
    ),
    ("POST", "/v1/ops/changes/{id}/apply", Some(OPERATORS), 200),
    (
        "POST",
        "/v1/ops/changes/{id}/rollback",
        Some(OPERATORS),
        200,
    ),
    ("POST", "/v1/keys", Some(ADMINS), 201),
    ("GET", "/v1/keys", Some(ADMINS), 200),
    ("DELETE", "/v1/keys/{id}", Some(ADMINS), 204),
    ("GET", "/v1/audit", Some(AUDITORS), 200),
    ("GET", "/v1/audit/verify", Some(AUDITORS), 200),
    ("GET", "/v1/whoami", Some(&ROLES), 200),
    // The operations console's page and files: no key needed to load them.
    ("GET", "/console", None, 200),
    ("GET", "/console/console.js", None, 200),
    ("GET", "/console/console.css", None, 200),
];

const ROLES: [&str; 8] = [
    "admin",
    "frontend",
    "customer",
    "logistics",
    "analyst",
    "operator",
    "auditor",
    "merchandiser",
];

/// Who calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Who {
    /// No `Authorization` header.
    NoKey,
    /// A key of this role; `customer` acts on its own customer (A) and its orders.
    Role(&'static str),
    /// The `customer` key of A acting on B's customer record and orders.
    CustomerOnOther,
    /// An `admin` key that has been revoked.
    Revoked,
}

impl Who {
    fn label(self) -> &'static str {
        match self {
            Who::NoKey => "no key",
            Who::Role(role) => role,
            Who::CustomerOnOther => "cust→B",
            Who::Revoked => "revoked",
        }
    }
}

/// Every caller of the matrix, in column order.
fn callers() -> Vec<Who> {
    let mut out = vec![Who::NoKey];
    for role in ROLES {
        out.push(Who::Role(role));
        if role == "customer" {
            out.push(Who::CustomerOnOther);
        }
    }
    out.push(Who::Revoked);
    out
}

/// Routes whose objects belong to a customer: a `customer` key is tried on its own and on B's.
fn customer_scoped(path: &str) -> bool {
    [
        "/v1/customers/",
        "/v1/orders",
        "/v1/shipments/",
        "/v1/returns/",
    ]
    .iter()
    .any(|prefix| path.starts_with(prefix))
}

/// What the contract says `who` gets from a route: (status, problem code if an error).
fn expected(allowed: Option<&[&str]>, ok: u16, who: Who) -> (u16, Option<&'static str>) {
    let Some(roles) = allowed else {
        return (ok, None);
    };
    match who {
        Who::NoKey | Who::Revoked => (401, Some("unauthorized")),
        Who::CustomerOnOther => (404, Some("not_found")),
        Who::Role(role) if roles.contains(&role) => (ok, None),
        // "anything else is 404": a customer key never learns what exists.
        Who::Role("customer") => (404, Some("not_found")),
        Who::Role(_) => (403, Some("forbidden")),
    }
}

/// What a mutation must have done (if allowed) or not done (if refused), checked right after
/// the call through the admin key.
enum Effect {
    None,
    /// `on_hand` of the SKU at the location was `before`; an allowed transfer adds 1.
    StockAt {
        sku: String,
        location: &'static str,
        before: u64,
    },
    /// An allowed call defines the location `id`; a refused one does not.
    Location {
        id: String,
    },
    /// `on_hand` of the SKU was `before`; an allowed adjustment adds 1.
    Stock {
        sku: String,
        before: i64,
    },
    /// The SKU's catalog price was `before`; an allowed call sets `before + 1`.
    Price {
        sku: String,
        before: u64,
    },
    /// The customer had `before` orders; an allowed placement adds one.
    OrderCount {
        customer: String,
        before: usize,
    },
    /// The order's status: `allowed` after an allowed call, `refused` otherwise.
    OrderStatus {
        id: String,
        allowed: &'static str,
        refused: &'static str,
    },
    /// The order had `before` returns (`returns` of the order); an allowed call opens one.
    ReturnCount {
        order: String,
        before: usize,
    },
    /// The order had `before` refunds; an allowed call adds one.
    RefundCount {
        order: String,
        before: usize,
    },
    /// The return's status: `received` after an allowed receipt, `requested` otherwise.
    ReturnReceived {
        id: String,
    },
    /// The shipment's status, likewise.
    ShipmentStatus {
        id: String,
        allowed: &'static str,
        refused: &'static str,
    },
    /// There were `before` keys; an allowed creation adds one.
    KeyCount {
        before: usize,
    },
    /// A spare key: revoked (401) after an allowed call, still working otherwise.
    KeyRevoked {
        id: String,
        spare: Client,
    },
    /// The master key had been rotated `before` times (audited `keys.rotate` entries); an
    /// allowed call rotates it once more.
    KeyRotation {
        before: usize,
    },
    /// `before` audit entries had `action`; an allowed call adds one.
    Audited {
        action: &'static str,
        before: usize,
    },
    /// The command with this fingerprint is no longer quarantined after an allowed call, and
    /// still is after a refused one.
    QuarantineLifted {
        fingerprint: String,
    },
    /// The customer's phone: `after` after an allowed `PATCH`, `before` otherwise.
    CustomerPhone {
        id: String,
        before: Value,
        after: String,
    },
    /// The customer reads as erased after an allowed erasure, and in full otherwise.
    CustomerErased {
        id: String,
    },
    /// Shard `id` had restarted `before` times; an allowed call restarts it once more.
    ShardRestart {
        id: u64,
        before: u64,
    },
    /// The change's status: one of `allowed` after an allowed call, one of `refused` otherwise
    /// (an applied change closes by itself when its 1 s watch window ends); with `value`, the
    /// setting's value in effect likewise: (setting, value if allowed, value if refused).
    ChangeStatus {
        id: String,
        allowed: &'static [&'static str],
        refused: &'static [&'static str],
        value: Option<(String, i64, i64)>,
    },
}

/// One request of the matrix.
struct Call {
    path: String,
    body: Option<Value>,
    effect: Effect,
}

impl Call {
    fn read(path: impl Into<String>) -> Call {
        Call {
            path: path.into(),
            body: None,
            effect: Effect::None,
        }
    }
}

/// Integer settings whose larger values are always valid: the matrix's changes raise one of
/// them by 1.
const CHANGE_SETTINGS: &[&str] = &[
    "inspection.latency_p99_fail_ms",
    "inspection.backup_age_fail_s",
    "inspection.pending_compaction_warn_bytes",
    "inspection.interval_s",
    "supervisor.window_s",
];

/// The watch window of the matrix's changes, in seconds: one setting may have only one
/// change in its watch window, so windows are short (and the server checks them often).
const WATCH_WINDOW_S: u64 = 1;

/// The objects the calls refer to; fresh ones are made per call for mutations so that each
/// allowed call succeeds on its own.
struct Fixtures {
    admin: Client,
    /// The customer of the `customer` key.
    a: String,
    /// Another customer.
    b: String,
    /// Stocked SKU that orders reserve.
    sku: String,
    /// SKU that the adjustment route moves.
    adjusted_sku: String,
    /// SKU whose catalog price the price route sets.
    priced_sku: String,
    /// An order of A and one of B.
    order_a: String,
    order_b: String,
    /// A shipment of A's order and one of B's.
    shipment_a: String,
    shipment_b: String,
    /// A return of one unit of A's and of B's shipped orders (read by the matrix).
    return_a: String,
    return_b: String,
    /// A second admin key, which approves the changes the server's admin key requests (a
    /// change is approved by an admin of another owner, whose key the requester's owner did
    /// not make).
    approver: Client,
    /// An admin key of an owner of its own that requests the fixture changes, so that any
    /// other admin (the table's `admin` column included) may approve them.
    requester: Client,
    /// A pending change, requested with the requester's key.
    change: String,
}

impl Fixtures {
    fn new(admin: &Client) -> Fixtures {
        let sku = "MTX-1".to_string();
        let adjusted_sku = "MTX-ADJ".to_string();
        let priced_sku = "MTX-PRICE".to_string();
        admin.adjust_stock(&sku, 100_000);
        admin.adjust_stock(&adjusted_sku, 10);
        let reply = admin.post(
            "/v1/locations",
            &json!({"id": MATRIX_LOCATION, "name": "Matrix warehouse", "priority": 9}),
            None,
        );
        assert_eq!(reply.status, 201, "fixture location: {}", reply.body);
        // A customer key's orders take the catalog price: the 100 its orders below send.
        for (priced, price) in [(&sku, 100), (&priced_sku, 1)] {
            let reply = admin.call(
                "PUT",
                &format!("/v1/catalog/{priced}"),
                Some(&json!({ "price": price })),
                None,
            );
            assert_eq!(reply.status, 200, "fixture price: {}", reply.body);
        }
        let a = admin.create_customer();
        let b = admin.create_customer();
        let mut fx = Fixtures {
            admin: admin.clone(),
            a,
            b,
            sku,
            adjusted_sku,
            priced_sku,
            order_a: String::new(),
            order_b: String::new(),
            shipment_a: String::new(),
            shipment_b: String::new(),
            return_a: String::new(),
            return_b: String::new(),
            // Another owner, with a key a third person made (four eyes).
            approver: key_of(&key_of(admin, "admin", None).1, "admin", None).1,
            requester: key_of(admin, "admin", None).1,
            change: String::new(),
        };
        fx.change = fx.fresh_change(&[])["id"]
            .as_str()
            .expect("change id")
            .to_string();
        fx.order_a = fx.fresh_order(&fx.a.clone());
        fx.order_b = fx.fresh_order(&fx.b.clone());
        fx.shipment_a = fx.ship_one(&fx.order_a.clone());
        fx.shipment_b = fx.ship_one(&fx.order_b.clone());
        fx.return_a = fx.return_one(&fx.order_a.clone());
        fx.return_b = fx.return_one(&fx.order_b.clone());
        fx
    }

    /// A confirmed order of `customer`: two units of the SKU.
    fn fresh_order(&self, customer: &str) -> String {
        let body = json!({"customer_id": customer, "lines": [{"sku": self.sku, "qty": 2, "unit_price": 250}]});
        let (status, order) = self.admin.post_json("/v1/orders", &body, None);
        assert_eq!(status, 201, "fixture order: {order}");
        order["id"].as_str().expect("order id").to_string()
    }

    /// Ships one unit of `order`; returns the shipment id.
    fn ship_one(&self, order: &str) -> String {
        let (status, shipment) = self.admin.post_json(
            &format!("/v1/orders/{order}/shipments"),
            &json!({"carrier": "dhl", "lines": [{"sku": self.sku, "qty": 1}]}),
            None,
        );
        assert_eq!(status, 201, "fixture shipment: {shipment}");
        shipment["id"].as_str().expect("shipment id").to_string()
    }

    /// Opens a return of one unit of `order` (one unit shipped); returns the return id.
    fn return_one(&self, order: &str) -> String {
        let (status, ret) = self.admin.post_json(
            &format!("/v1/orders/{order}/returns"),
            &json!({"lines": [{"sku": self.sku, "qty": 1}], "reason": "matrix"}),
            None,
        );
        assert_eq!(status, 201, "fixture return: {ret}");
        ret["id"].as_str().expect("return id").to_string()
    }

    /// How many returns and refunds `order` has.
    fn after_sales(&self, order: &str) -> (usize, usize) {
        let (status, view) = self.admin.get_json(&format!("/v1/orders/{order}"));
        assert_eq!(status, 200, "GET order {order}: {view}");
        let len = |field: &str| view[field].as_array().expect(field).len();
        (len("returns"), len("refunds"))
    }

    /// The fingerprints of the quarantined commands, oldest first.
    fn quarantined(&self) -> Vec<String> {
        let (status, page) = self.admin.get_json("/v1/ops/quarantine?limit=1000");
        assert_eq!(status, 200, "GET /v1/ops/quarantine: {page}");
        page["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|e| e["fingerprint"].as_str().expect("fingerprint").to_string())
            .collect()
    }

    /// The fingerprint of a quarantined command: one already quarantined, else a new one (a
    /// `FAILPOINT-PANIC…` adjustment repeated until the shard's supervisor quarantines it after
    /// its second panic; the server runs with a restart intensity that allows it).
    fn quarantined_fingerprint(&self) -> String {
        if let Some(fingerprint) = self.quarantined().into_iter().next() {
            return fingerprint;
        }
        let poison = unique("FAILPOINT-PANIC-MTX");
        let path = format!("/v1/stock/{poison}/adjustments");
        let body = json!({"delta": 1, "reason": "matrix"});
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (status, answer) = self.admin.post_json(&path, &body, None);
            match status {
                422 => break,
                // It panicked (or met its shard restarting): wait until every shard runs.
                503 => self.every_shard_running(deadline),
                _ => panic!("fixture quarantine {path}: {status} {answer}"),
            }
            assert!(
                Instant::now() < deadline,
                "{poison} not quarantined within 30 s"
            );
        }
        let fingerprints = self.quarantined();
        assert_eq!(fingerprints.len(), 1, "{fingerprints:?}");
        fingerprints[0].clone()
    }

    fn every_shard_running(&self, deadline: Instant) {
        loop {
            let (status, shards) = self.admin.get_json("/v1/ops/shards");
            assert_eq!(status, 200, "GET /v1/ops/shards: {shards}");
            let shards = shards.as_array().expect("shards");
            if shards.iter().all(|s| s["state"] == "running") {
                return;
            }
            assert!(Instant::now() < deadline, "a shard stays down: {shards:?}");
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// A fresh `analyst` key: its id and a client using it.
    /// A webhook endpoint made by the server's admin key; its deliveries go nowhere (a
    /// closed port on loopback).
    fn fresh_webhook(&self) -> String {
        let (status, hook) = self.admin.post_json(
            "/v1/webhooks",
            &json!({"url": MATRIX_HOOK_URL, "types": ["stock.low"]}),
            None,
        );
        assert_eq!(status, 201, "POST /v1/webhooks: {hook}");
        hook["id"].as_str().expect("webhook id").to_string()
    }

    fn spare_key(&self) -> (String, Client) {
        let (id, spare) = key_of(&self.admin, "analyst", None);
        assert_eq!(spare.get_json("/v1/orders").0, 200, "spare key works");
        (id, spare)
    }

    /// The catalog price of `sku` (read as admin).
    fn price(&self, sku: &str) -> u64 {
        let (status, entry) = self.admin.get_json(&format!("/v1/catalog/{sku}"));
        assert_eq!(status, 200, "GET /v1/catalog/{sku}: {entry}");
        entry["price"].as_u64().expect("price")
    }

    fn order_count(&self, customer: &str) -> usize {
        self.admin
            .list_orders(&format!("customer_id={customer}"))
            .len()
    }

    /// Master key rotations so far, as the audit trail records them.
    fn rotations(&self) -> usize {
        self.audited("keys.rotate")
    }

    /// The id of a backup (the first call takes one, as admin).
    fn backup_id(&self) -> String {
        let (status, page) = self.admin.get_json("/v1/ops/backups");
        assert_eq!(status, 200, "GET /v1/ops/backups: {page}");
        if let Some(id) = page["items"][0]["id"].as_str() {
            return id.to_string();
        }
        let (status, backup) = self.admin.post_json("/v1/ops/backups", &json!({}), None);
        assert_eq!(status, 201, "POST /v1/ops/backups: {backup}");
        backup["id"].as_str().expect("backup id").to_string()
    }

    /// Audit entries with `action` so far.
    fn audited(&self, action: &str) -> usize {
        let mut count = 0;
        let mut path = "/v1/audit?limit=1000".to_string();
        loop {
            let (status, page) = self.admin.get_json(&path);
            assert_eq!(status, 200, "GET {path}: {page}");
            count += page["items"]
                .as_array()
                .expect("items")
                .iter()
                .filter(|e| e["action"] == action)
                .count();
            match page["next"].as_u64() {
                Some(next) => path = format!("/v1/audit?limit=1000&after={next}"),
                None => match page["next"].as_str() {
                    Some(next) => path = format!("/v1/audit?limit=1000&after={next}"),
                    None => return count,
                },
            }
        }
    }

    fn key_count(&self) -> usize {
        let (status, page) = self.admin.get_json("/v1/keys?limit=1000");
        assert_eq!(status, 200, "GET /v1/keys: {page}");
        assert!(page["next"].is_null(), "fewer than 1000 keys: {page}");
        page["items"].as_array().expect("items").len()
    }

    fn shard(&self, id: u64) -> Value {
        let (status, shards) = self.admin.get_json("/v1/ops/shards");
        assert_eq!(status, 200, "GET /v1/ops/shards: {shards}");
        shards
            .as_array()
            .expect("shards")
            .iter()
            .find(|s| s["id"] == id)
            .unwrap_or_else(|| panic!("no shard {id}: {shards}"))
            .clone()
    }

    /// The value in effect of an integer `setting`, from `GET /v1/ops/config`.
    fn setting_value(&self, setting: &str) -> i64 {
        let (status, config) = self.admin.get_json("/v1/ops/config");
        assert_eq!(status, 200, "GET /v1/ops/config: {config}");
        config["items"]
            .as_array()
            .expect("items")
            .iter()
            .find(|item| item["setting"] == setting)
            .and_then(|item| item["value"].as_i64())
            .unwrap_or_else(|| panic!("no integer setting {setting}: {config}"))
    }

    /// Every change, newest first.
    fn changes(&self) -> Vec<Value> {
        let mut changes = Vec::new();
        let mut path = "/v1/ops/changes?limit=1000".to_string();
        loop {
            let (status, page) = self.admin.get_json(&path);
            assert_eq!(status, 200, "GET {path}: {page}");
            changes.extend(page["items"].as_array().expect("items").iter().cloned());
            match page["next"].as_str() {
                Some(next) => path = format!("/v1/ops/changes?limit=1000&after={next}"),
                None => return changes,
            }
        }
    }

    /// A setting of [`CHANGE_SETTINGS`] with no change in its watch window (status
    /// `applied`), so that a change of it can be applied; waits for a window to end when
    /// every one is busy.
    fn free_setting(&self) -> &'static str {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let busy: BTreeSet<String> = self
                .changes()
                .iter()
                .filter(|c| c["status"] == "applied")
                .filter_map(|c| c["setting"].as_str().map(str::to_string))
                .collect();
            if let Some(setting) = CHANGE_SETTINGS.iter().find(|s| !busy.contains(**s)) {
                return setting;
            }
            assert!(
                Instant::now() < deadline,
                "the matrix's settings stay in their watch windows: {busy:?}"
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// A well-formed change request: `setting` one above its current value, watched
    /// [`WATCH_WINDOW_S`].
    fn change_body(&self, setting: &str) -> Value {
        json!({
            "setting": setting,
            "value": self.setting_value(setting) + 1,
            "reason": "role matrix",
            "watch_window_s": WATCH_WINDOW_S,
        })
    }

    /// A fresh change of a free setting, requested with the requester's key, then taken
    /// through `steps` (`approve`: by the second admin key, `apply`: by the server's admin
    /// key); the change as the last step answered.
    fn fresh_change(&self, steps: &[&str]) -> Value {
        let body = self.change_body(self.free_setting());
        let (status, mut change) = self.requester.post_json("/v1/ops/changes", &body, None);
        assert_eq!(status, 201, "fixture change request {body}: {change}");
        let id = change["id"].as_str().expect("change id").to_string();
        for step in steps {
            let client = match *step {
                "approve" => &self.approver,
                "apply" => &self.admin,
                other => panic!("no change step {other}"),
            };
            let path = format!("/v1/ops/changes/{id}/{step}");
            let reply = client.call("POST", &path, None, None);
            assert_eq!(reply.status, 200, "fixture POST {path}: {}", reply.body);
            change = reply.body;
        }
        change
    }

    /// `on_hand` of a SKU at a location (0 where it never was).
    fn on_hand_at(&self, sku: &str, location: &str) -> u64 {
        let (status, stock) = self.admin.get_json(&format!("/v1/stock/{sku}"));
        assert_eq!(status, 200, "GET stock {sku}: {stock}");
        stock["locations"]
            .as_array()
            .and_then(|rows| rows.iter().find(|l| l["location"] == location))
            .map_or(0, |l| l["on_hand"].as_u64().expect("on_hand"))
    }

    fn status_of(&self, path: &str) -> String {
        let (status, body) = self.admin.get_json(path);
        assert_eq!(status, 200, "GET {path}: {body}");
        body["status"].as_str().expect("status").to_string()
    }

    /// A well-formed request for `method template` on the objects of `owner`, with fresh
    /// objects for mutations.
    fn call(&self, method: &str, template: &str, owner: &str) -> Call {
        match (method, template) {
            (
                "GET",
                "/livez"
                | "/readyz"
                | "/metrics"
                | "/v1/openapi.json"
                | "/v1/whoami"
                | "/console"
                | "/console/console.js"
                | "/console/console.css",
            ) => Call::read(template),
            ("GET", "/v1/stock/{sku}") => Call::read(format!("/v1/stock/{}", self.sku)),
            ("POST", "/v1/stock/{sku}/adjustments") => Call {
                path: format!("/v1/stock/{}/adjustments", self.adjusted_sku),
                body: Some(json!({"delta": 1, "reason": "matrix"})),
                effect: Effect::Stock {
                    sku: self.adjusted_sku.clone(),
                    before: self.admin.stock(&self.adjusted_sku).on_hand,
                },
            },
            ("POST", "/v1/stock/{sku}/transfers") => Call {
                path: format!("/v1/stock/{}/transfers", self.sku),
                body: Some(
                    json!({"from": "default", "to": MATRIX_LOCATION, "qty": 1, "reason": "matrix"}),
                ),
                effect: Effect::StockAt {
                    sku: self.sku.clone(),
                    location: MATRIX_LOCATION,
                    before: self.on_hand_at(&self.sku, MATRIX_LOCATION),
                },
            },
            ("POST", "/v1/locations") => {
                let id = unique("mtx-loc");
                Call {
                    path: template.into(),
                    body: Some(json!({"id": id, "name": "Matrix", "priority": 7})),
                    effect: Effect::Location { id },
                }
            }
            ("GET", "/v1/locations") => Call::read(template),
            ("PUT", "/v1/catalog/{sku}") => {
                let before = self.price(&self.priced_sku);
                Call {
                    path: format!("/v1/catalog/{}", self.priced_sku),
                    body: Some(json!({"price": before + 1, "active": true})),
                    effect: Effect::Price {
                        sku: self.priced_sku.clone(),
                        before,
                    },
                }
            }
            ("GET", "/v1/catalog/{sku}") => Call::read(format!("/v1/catalog/{}", self.sku)),
            ("GET", "/v1/catalog") => Call::read(template),
            ("POST", "/v1/customers") => {
                let n = unique("m");
                Call {
                    path: template.into(),
                    body: Some(
                        json!({"name": format!("Matrix {n}"), "email": format!("{n}@example.com")}),
                    ),
                    effect: Effect::None,
                }
            }
            ("GET", "/v1/customers/{id}") => Call::read(format!("/v1/customers/{owner}")),
            ("PATCH", "/v1/customers/{id}") => {
                let (status, record) = self.admin.get_json(&format!("/v1/customers/{owner}"));
                assert_eq!(status, 200, "fixture customer {owner}: {record}");
                let after = format!("+41 {}", rand::random::<u32>());
                Call {
                    path: format!("/v1/customers/{owner}"),
                    body: Some(json!({"phone": after})),
                    effect: Effect::CustomerPhone {
                        id: owner.to_string(),
                        before: record["phone"].clone(),
                        after,
                    },
                }
            }
            ("POST", "/v1/customers/{id}/erase") => {
                // A's record is the `customer` key's own (its erasure is refused, 404); every
                // other caller gets a fresh customer, so that an allowed erasure leaves the
                // fixtures' customers as they are.
                let id = if owner == self.a {
                    owner.to_string()
                } else {
                    self.admin.create_customer()
                };
                Call {
                    path: format!("/v1/customers/{id}/erase"),
                    body: None,
                    effect: Effect::CustomerErased { id },
                }
            }
            // A one-line JSON body is one NDJSON line: the bulk import places the same order.
            ("POST", "/v1/orders") | ("POST", "/v1/orders/bulk") => Call {
                path: template.into(),
                body: Some(
                    json!({"customer_id": owner, "lines": [{"sku": self.sku, "qty": 1, "unit_price": 100}]}),
                ),
                effect: Effect::OrderCount {
                    customer: owner.to_string(),
                    before: self.order_count(owner),
                },
            },
            ("GET", "/v1/orders") => Call::read(format!("/v1/orders?customer_id={owner}")),
            ("GET", "/v1/orders/{id}") => {
                let order = if owner == self.a {
                    &self.order_a
                } else {
                    &self.order_b
                };
                Call::read(format!("/v1/orders/{order}"))
            }
            ("POST", "/v1/orders/{id}/cancel") => {
                let id = self.fresh_order(owner);
                Call {
                    path: format!("/v1/orders/{id}/cancel"),
                    body: Some(json!({"reason": "matrix"})),
                    effect: Effect::OrderStatus {
                        id,
                        allowed: "cancelled",
                        refused: "confirmed",
                    },
                }
            }
            ("POST", "/v1/orders/{id}/shipments") => {
                let id = self.fresh_order(owner);
                Call {
                    path: format!("/v1/orders/{id}/shipments"),
                    body: Some(json!({"carrier": "dhl", "lines": [{"sku": self.sku, "qty": 1}]})),
                    effect: Effect::OrderStatus {
                        id,
                        allowed: "partially_shipped",
                        refused: "confirmed",
                    },
                }
            }
            ("POST", "/v1/shipments/{id}/events") => {
                let id = self.ship_one(&self.fresh_order(owner));
                Call {
                    path: format!("/v1/shipments/{id}/events"),
                    body: Some(json!({"status": "in_transit", "note": "matrix"})),
                    effect: Effect::ShipmentStatus {
                        id,
                        allowed: "in_transit",
                        refused: "shipped",
                    },
                }
            }
            ("GET", "/v1/shipments/{id}") => {
                let shipment = if owner == self.a {
                    &self.shipment_a
                } else {
                    &self.shipment_b
                };
                Call::read(format!("/v1/shipments/{shipment}"))
            }
            ("POST", "/v1/orders/{id}/returns") => {
                let id = self.fresh_order(owner);
                self.ship_one(&id);
                Call {
                    path: format!("/v1/orders/{id}/returns"),
                    body: Some(json!({"lines": [{"sku": self.sku, "qty": 1}], "reason": "matrix"})),
                    effect: Effect::ReturnCount {
                        before: self.after_sales(&id).0,
                        order: id,
                    },
                }
            }
            ("POST", "/v1/returns/{id}/receive") => {
                let order = self.fresh_order(owner);
                self.ship_one(&order);
                let id = self.return_one(&order);
                Call {
                    path: format!("/v1/returns/{id}/receive"),
                    body: Some(json!({"lines": [{"sku": self.sku, "qty": 1, "restock": true}]})),
                    effect: Effect::ReturnReceived { id },
                }
            }
            ("GET", "/v1/returns/{id}") => {
                let ret = if owner == self.a {
                    &self.return_a
                } else {
                    &self.return_b
                };
                Call::read(format!("/v1/returns/{ret}"))
            }
            ("POST", "/v1/orders/{id}/refunds") => {
                let id = self.fresh_order(owner);
                Call {
                    path: format!("/v1/orders/{id}/refunds"),
                    body: Some(json!({"amount": 1, "reason": "matrix"})),
                    effect: Effect::RefundCount {
                        before: self.after_sales(&id).1,
                        order: id,
                    },
                }
            }
            ("GET", "/v1/analytics/summary" | "/v1/analytics/orders.csv") => Call::read(template),
            ("GET", "/v1/events" | "/v1/events/stream" | "/v1/webhooks") => Call::read(template),
            ("POST", "/v1/webhooks") => Call {
                path: template.into(),
                body: Some(json!({"url": MATRIX_HOOK_URL, "types": ["stock.low"]})),
                effect: Effect::Audited {
                    action: "webhook.create",
                    before: self.audited("webhook.create"),
                },
            },
            ("DELETE", "/v1/webhooks/{id}") => Call {
                path: format!("/v1/webhooks/{}", self.fresh_webhook()),
                body: None,
                effect: Effect::Audited {
                    action: "webhook.delete",
                    before: self.audited("webhook.delete"),
                },
            },
            ("GET", "/v1/webhooks/{id}/deliveries") => {
                Call::read(format!("/v1/webhooks/{}/deliveries", self.fresh_webhook()))
            }
            (
                "GET",
                "/v1/ops/shards" | "/v1/ops/incidents" | "/v1/ops/quarantine"
                | "/v1/ops/inspection",
            ) => Call::read(template),
            ("DELETE", "/v1/ops/quarantine/{fingerprint}") => {
                let fingerprint = self.quarantined_fingerprint();
                Call {
                    path: format!("/v1/ops/quarantine/{fingerprint}"),
                    body: None,
                    effect: Effect::QuarantineLifted { fingerprint },
                }
            }
            ("POST", "/v1/ops/shards/{id}/restart") => Call {
                path: "/v1/ops/shards/0/restart".into(),
                body: None,
                effect: Effect::ShardRestart {
                    id: 0,
                    before: self.shard(0)["restarts"].as_u64().expect("restarts"),
                },
            },
            ("POST", "/v1/ops/keys/rotate") => Call {
                path: template.into(),
                body: None,
                effect: Effect::KeyRotation {
                    before: self.rotations(),
                },
            },
            ("GET", "/v1/ops/backups") => Call::read(template),
            ("POST", "/v1/ops/backups") => Call {
                path: template.into(),
                body: None,
                effect: Effect::Audited {
                    action: "backup.create",
                    before: self.audited("backup.create"),
                },
            },
            ("POST", "/v1/ops/backups/{id}/verify") => Call {
                path: format!("/v1/ops/backups/{}/verify", self.backup_id()),
                body: None,
                effect: Effect::Audited {
                    action: "backup.verify",
                    before: self.audited("backup.verify"),
                },
            },
            ("POST", "/v1/keys") => Call {
                path: template.into(),
                body: Some(json!({"name": unique("matrix"), "role": "analyst"})),
                effect: Effect::KeyCount {
                    before: self.key_count(),
                },
            },
            ("GET", "/v1/keys") => Call::read(template),
            ("DELETE", "/v1/keys/{id}") => {
                let (id, spare) = self.spare_key();
                Call {
                    path: format!("/v1/keys/{id}"),
                    body: None,
                    effect: Effect::KeyRevoked { id, spare },
                }
            }
            ("GET", "/v1/ops/config" | "/v1/ops/changes") => Call::read(template),
            ("POST", "/v1/ops/changes") => Call {
                path: template.into(),
                body: Some(self.change_body(CHANGE_SETTINGS[0])),
                effect: Effect::Audited {
                    action: "change.request",
                    before: self.audited("change.request"),
                },
            },
            ("GET", "/v1/ops/changes/{id}") => {
                Call::read(format!("/v1/ops/changes/{}", self.change))
            }
            ("POST", "/v1/ops/changes/{id}/approve") => {
                let change = self.fresh_change(&[]);
                let id = change["id"].as_str().expect("change id").to_string();
                Call {
                    path: format!("/v1/ops/changes/{id}/approve"),
                    body: None,
                    effect: Effect::ChangeStatus {
                        id,
                        allowed: &["approved"],
                        refused: &["pending"],
                        value: None,
                    },
                }
            }
            ("POST", "/v1/ops/changes/{id}/apply") => {
                let change = self.fresh_change(&["approve"]);
                let id = change["id"].as_str().expect("change id").to_string();
                let old = change["old_value"].as_i64().expect("old_value");
                let new = change["value"].as_i64().expect("value");
                Call {
                    path: format!("/v1/ops/changes/{id}/apply"),
                    body: None,
                    effect: Effect::ChangeStatus {
                        id,
                        allowed: &["applied", "closed"],
                        refused: &["approved"],
                        value: Some((
                            change["setting"].as_str().expect("setting").into(),
                            new,
                            old,
                        )),
                    },
                }
            }
            ("POST", "/v1/ops/changes/{id}/rollback") => {
                let change = self.fresh_change(&["approve", "apply"]);
                let id = change["id"].as_str().expect("change id").to_string();
                let old = change["old_value"].as_i64().expect("old_value");
                let new = change["value"].as_i64().expect("value");
                Call {
                    path: format!("/v1/ops/changes/{id}/rollback"),
                    body: None,
                    effect: Effect::ChangeStatus {
                        id,
                        allowed: &["rolled_back"],
                        refused: &["applied", "closed"],
                        value: Some((
                            change["setting"].as_str().expect("setting").into(),
                            old,
                            new,
                        )),
                    },
                }
            }
            ("GET", "/v1/audit" | "/v1/audit/verify") => Call::read(template),
            _ => panic!("route {method} {template} has no request in this test: add one"),
        }
    }

    /// Checks the effect of a call that should have been `allowed` (or refused); `Err` says
    /// what differs.
    fn check(&self, effect: &Effect, allowed: bool) -> Result<(), String> {
        match effect {
            Effect::None => Ok(()),
            Effect::StockAt {
                sku,
                location,
                before,
            } => {
                let now = self.on_hand_at(sku, location);
                let want = before + u64::from(allowed);
                (now == want).then_some(()).ok_or(format!(
                    "{sku} at {location}: on_hand {now}, expected {want}"
                ))
            }
            Effect::Location { id } => {
                let (status, page) = self.admin.get_json("/v1/locations?limit=1000");
                let defined = page["items"]
                    .as_array()
                    .is_some_and(|items| items.iter().any(|l| l["id"] == id.as_str()));
                (status == 200 && defined == allowed)
                    .then_some(())
                    .ok_or(format!(
                        "location {id} defined: {defined}, expected {allowed}"
                    ))
            }
            Effect::Stock { sku, before } => {
                let now = self.admin.stock(sku).on_hand;
                let want = before + i64::from(allowed);
                (now == want)
                    .then_some(())
                    .ok_or(format!("{sku} on_hand {now}, expected {want}"))
            }
            Effect::Price { sku, before } => {
                let now = self.price(sku);
                let want = before + u64::from(allowed);
                (now == want)
                    .then_some(())
                    .ok_or(format!("{sku} costs {now}, expected {want}"))
            }
            Effect::CustomerPhone { id, before, after } => {
                let (status, record) = self.admin.get_json(&format!("/v1/customers/{id}"));
                let now = &record["phone"];
                let want = if allowed {
                    json!(after)
                } else {
                    before.clone()
                };
                (status == 200 && *now == want)
                    .then_some(())
                    .ok_or(format!("customer {id}'s phone is {now}, expected {want}"))
            }
            Effect::CustomerErased { id } => {
                let (status, record) = self.admin.get_json(&format!("/v1/customers/{id}"));
                let erased = record["erased"] == json!(true) && record.get("email").is_none();
                (status == 200 && erased == allowed)
                    .then_some(())
                    .ok_or(format!(
                        "customer {id} reads {record}, erased expected: {allowed}"
                    ))
            }
            Effect::OrderCount { customer, before } => {
                let now = self.order_count(customer);
                let want = before + usize::from(allowed);
                (now == want)
                    .then_some(())
                    .ok_or(format!("{customer} has {now} orders, expected {want}"))
            }
            Effect::OrderStatus {
                id,
                allowed: yes,
                refused: no,
            } => {
                let now = self.status_of(&format!("/v1/orders/{id}"));
                let want = if allowed { yes } else { no };
                (now == *want)
                    .then_some(())
                    .ok_or(format!("order {id} is {now}, expected {want}"))
            }
            Effect::ReturnCount { order, before } => {
                let now = self.after_sales(order).0;
                let want = before + usize::from(allowed);
                (now == want)
                    .then_some(())
                    .ok_or(format!("order {order} has {now} returns, expected {want}"))
            }
            Effect::RefundCount { order, before } => {
                let now = self.after_sales(order).1;
                let want = before + usize::from(allowed);
                (now == want)
                    .then_some(())
                    .ok_or(format!("order {order} has {now} refunds, expected {want}"))
            }
            Effect::ReturnReceived { id } => {
                let now = self.status_of(&format!("/v1/returns/{id}"));
                let want = if allowed { "received" } else { "requested" };
                (now == want)
                    .then_some(())
                    .ok_or(format!("return {id} is {now}, expected {want}"))
            }
            Effect::ShipmentStatus {
                id,
                allowed: yes,
                refused: no,
            } => {
                let now = self.status_of(&format!("/v1/shipments/{id}"));
                let want = if allowed { yes } else { no };
                (now == *want)
                    .then_some(())
                    .ok_or(format!("shipment {id} is {now}, expected {want}"))
            }
            Effect::KeyCount { before } => {
                let now = self.key_count();
                let want = before + usize::from(allowed);
                (now == want)
                    .then_some(())
                    .ok_or(format!("{now} keys, expected {want}"))
            }
            Effect::KeyRevoked { id, spare } => {
                let status = spare.get_json("/v1/orders").0;
                let want = if allowed { 401 } else { 200 };
                (status == want)
                    .then_some(())
                    .ok_or(format!("spare key {id} answers {status}, expected {want}"))
            }
            Effect::KeyRotation { before } => {
                let now = self.rotations();
                let want = before + usize::from(allowed);
                (now == want)
                    .then_some(())
                    .ok_or(format!("{now} key rotations, expected {want}"))
            }
            Effect::Audited { action, before } => {
                let now = self.audited(action);
                let want = before + usize::from(allowed);
                (now == want)
                    .then_some(())
                    .ok_or(format!("{now} `{action}` audit entries, expected {want}"))
            }
            Effect::QuarantineLifted { fingerprint } => {
                let still = self.quarantined().contains(fingerprint);
                (still != allowed).then_some(()).ok_or(format!(
                    "{fingerprint} is {}quarantined",
                    if still { "still " } else { "no longer " }
                ))
            }
            Effect::ShardRestart { id, before } => {
                let want = before + u64::from(allowed);
                // An allowed restart runs in the background: wait for it to finish, so that
                // later calls do not meet a restarting shard.
                let deadline = Instant::now() + Duration::from_secs(30);
                loop {
                    let shard = self.shard(*id);
                    let restarts = shard["restarts"].as_u64().expect("restarts");
                    if shard["state"] == "running" && restarts == want {
                        return Ok(());
                    }
                    if restarts > want || Instant::now() >= deadline {
                        return Err(format!("shard {id}: {shard}, expected {want} restarts"));
                    }
                    thread::sleep(Duration::from_millis(50));
                }
            }
            Effect::ChangeStatus {
                id,
                allowed: yes,
                refused: no,
                value,
            } => {
                let now = self.status_of(&format!("/v1/ops/changes/{id}"));
                let want = if allowed { yes } else { no };
                if !want.contains(&now.as_str()) {
                    return Err(format!(
                        "change {id} is {now}, expected {}",
                        want.join(" or ")
                    ));
                }
                if let Some((setting, yes, no)) = value {
                    let now = self.setting_value(setting);
                    let want = if allowed { yes } else { no };
                    if now != *want {
                        return Err(format!("{setting} is {now} after {id}, expected {want}"));
                    }
                }
                Ok(())
            }
        }
    }
}

/// One cell of the matrix.
struct Cell {
    status: u16,
    wrong: Option<String>,
}

fn render(rows: &[(String, Vec<Option<Cell>>)], columns: &[Who]) -> String {
    let width = rows.iter().map(|(label, _)| label.len()).max().unwrap_or(0);
    let mut out = format!("{:width$}", "");
    for who in columns {
        let _ = write!(out, " {:>8}", who.label());
    }
    out.push('\n');
    for (label, cells) in rows {
        let _ = write!(out, "{label:width$}");
        for cell in cells {
            let text = match cell {
                None => "-".to_string(),
                Some(Cell {
                    status,
                    wrong: None,
                }) => status.to_string(),
                Some(Cell {
                    status,
                    wrong: Some(_),
                }) => format!("!{status}"),
            };
            let _ = write!(out, " {text:>8}");
        }
        out.push('\n');
    }
    out.push_str("(!: not what the table says; the reasons follow)\n");
    out
}

/// The answer a call must get.
#[derive(Clone, Copy, Debug)]
struct Want {
    status: u16,
    /// The problem `code` of an error.
    problem: Option<&'static str>,
    /// The problem's `param`, where one is named.
    param: Option<&'static str>,
}

/// Compares one answer with what is wanted; `Err` says what differs.
fn judge(reply: &Reply, want: Want) -> Result<(), String> {
    if reply.status != want.status {
        let unexpected = if (200..300).contains(&reply.status) {
            "UNEXPECTED 2xx: "
        } else {
            ""
        };
        return Err(format!(
            "{unexpected}got {} {}, expected {}",
            reply.status,
            truncate(&reply.body.to_string()),
            want.status
        ));
    }
    if let Some(problem) = want.problem {
        let param_ok = want.param.is_none_or(|param| reply.body["param"] == param);
        if reply.content_type != "application/problem+json"
            || code(&reply.body) != problem
            || !param_ok
        {
            return Err(format!(
                "expected a {problem} problem (param {:?}), got {} {}",
                want.param,
                reply.content_type,
                truncate(&reply.body.to_string())
            ));
        }
    }
    Ok(())
}

fn truncate(text: &str) -> String {
    text.chars().take(200).collect()
}

/// Creates a key of `role` (with `customer_id` for customer keys) through the API.
fn key_of(admin: &Client, role: &str, customer_id: Option<&str>) -> (String, Client) {
    // Each key a person of its own.
    let mut body = json!({"name": unique(role), "role": role, "owner": unique(role)});
    if let Some(customer) = customer_id {
        body["customer_id"] = json!(customer);
    }
    let (status, key) = admin.post_json("/v1/keys", &body, None);
    assert_eq!(status, 201, "create a {role} key: {key}");
    (
        key["id"].as_str().expect("id").to_string(),
        admin.with_key(key["secret"].as_str().expect("secret")),
    )
}

/// An unknown query parameter that the probing walk adds to every `/v1` call.
const PROBE: &str = "matrix_probe";

/// A server with the fixtures, one key of each role (the customer key belongs to A) and a
/// revoked admin key.
struct Setup {
    _server: Server,
    admin: Client,
    fx: Fixtures,
    keys: Vec<(&'static str, Client)>,
    revoked: Client,
}

/// The outcome of a walk over the table: the rendered matrix and what differs.
struct Walk {
    matrix: String,
    failures: Vec<String>,
    unexpected_2xx: usize,
}

impl Setup {
    fn new() -> Setup {
        // The matrix's changes are watched 1 s: checked every 100 ms, their windows end soon.
        // Every quarantine the fixtures make costs two panics: no shard may escalate.
        let server = Server::start_with_env(
            2,
            &[
                ("ORDERD__CHANGES__WATCH_CHECK_INTERVAL_MS", "100"),
                ("ORDERD__SUPERVISOR__MAX_RESTARTS", "1000"),
                // The matrix's webhooks point at a closed port on loopback.
                ("ORDERD__WEBHOOKS__ALLOW_PRIVATE", "true"),
                ("ORDERD__WEBHOOKS__ENDPOINTS_MAX", "1000"),
            ],
        );
        let admin = server.client();
        let fx = Fixtures::new(&admin);
        let mut keys = Vec::new();
        for role in ROLES {
            let customer = (role == "customer").then_some(fx.a.as_str());
            let (id, client) = key_of(&admin, role, customer);
            if role == "admin" {
                // The matrix's admin approves changes requested with the server's admin key:
                // it must not be their requester (self-approval is 403 by design).
                let path = format!("/v1/ops/changes/{}", fx.change);
                let (status, change) = admin.get_json(&path);
                assert_eq!(status, 200, "GET {path}: {change}");
                assert_ne!(
                    change["requested_by"], id,
                    "the matrix's admin key requested the fixture change"
                );
            }
            keys.push((role, client));
        }
        let (revoked_id, revoked) = key_of(&admin, "admin", None);
        assert_eq!(revoked.get_json("/v1/keys").0, 200, "fresh admin key works");
        let r = admin.call("DELETE", &format!("/v1/keys/{revoked_id}"), None, None);
        assert_eq!(r.status, 204, "revoke: {}", r.body);
        Setup {
            _server: server,
            admin,
            fx,
            keys,
            revoked,
        }
    }

    fn key(&self, role: &str) -> Client {
        let (_, client) = self.keys.iter().find(|(r, _)| *r == role).expect("a key");
        client.clone()
    }

    /// Calls every route of the table as every caller and checks answer and effect. With
    /// `probe`, every `/v1` call carries the unknown parameter [`PROBE`]: refusals by key or
    /// role stay what they are (those are checked first), and calls of an admitted role become
    /// 400 naming it.
    fn walk(&self, probe: bool) -> Walk {
        let fx = &self.fx;
        let columns = callers();
        let mut rows = Vec::new();
        let mut failures = Vec::new();
        let mut unexpected_2xx = 0;
        for (method, template, allowed, ok) in TABLE {
            let mut cells = Vec::new();
            for &who in &columns {
                let skip = (who == Who::CustomerOnOther && !customer_scoped(template))
                    || (probe && allowed.is_none());
                if skip {
                    cells.push(None);
                    continue;
                }
                let (client, owner) = match who {
                    Who::NoKey => (self.admin.without_key(), &fx.b),
                    Who::Revoked => (self.revoked.clone(), &fx.b),
                    Who::CustomerOnOther => (self.key("customer"), &fx.b),
                    Who::Role(role) => (
                        self.key(role),
                        if role == "customer" { &fx.a } else { &fx.b },
                    ),
                };
                let mut call = fx.call(method, template, owner);
                let (status, problem) = expected(*allowed, *ok, who);
                let mut want = Want {
                    status,
                    problem,
                    param: None,
                };
                if probe {
                    let joint = if call.path.contains('?') { '&' } else { '?' };
                    call.path = format!("{}{joint}{PROBE}=1", call.path);
                    // The request's shape is checked once the role admits the route and
                    // before any object is looked up: a customer key asking about B's objects
                    // with a bad parameter learns nothing about them from its 400.
                    let admitted = match (allowed, who) {
                        (Some(roles), Who::Role(role)) => roles.contains(&role),
                        (Some(roles), Who::CustomerOnOther) => roles.contains(&"customer"),
                        _ => false,
                    };
                    if admitted {
                        want = Want {
                            status: 400,
                            problem: Some("invalid_request"),
                            param: Some(PROBE),
                        };
                    }
                }
                let reply = if *template == "/v1/events/stream" {
                    // A stream never ends: its status and type are the answer.
                    match client.open_stream(&call.path, &[]) {
                        Ok(resp) => Reply {
                            status: resp.status(),
                            body: Value::Null,
                            content_type: resp.content_type().to_string(),
                            location: None,
                            retry_after: None,
                        },
                        Err(reply) => reply,
                    }
                } else {
                    client.call(method, &call.path, call.body.as_ref(), None)
                };
                let allowed_call = want.status == *ok;
                if (200..300).contains(&reply.status) && !allowed_call {
                    unexpected_2xx += 1;
                }
                let verdict =
                    judge(&reply, want).and_then(|()| fx.check(&call.effect, allowed_call));
                // Even a wrong answer must not leave a shard restarting for the next calls.
                if verdict.is_err() {
                    if let Effect::ShardRestart { .. } = call.effect {
                        let _ = fx.check(&call.effect, reply.status == 202);
                    }
                }
                let wrong = verdict.err().map(|why| {
                    let text = format!("{method} {} as {}: {why}", call.path, who.label());
                    failures.push(text.clone());
                    text
                });
                cells.push(Some(Cell {
                    status: reply.status,
                    wrong,
                }));
            }
            rows.push((format!("{method} {template}"), cells));
        }
        Walk {
            matrix: render(&rows, &columns),
            failures,
            unexpected_2xx,
        }
    }
}

/// Panics with the whole matrix and every difference unless the walk matched the table.
fn assert_walk(walk: &Walk) {
    println!("{}", walk.matrix);
    assert!(
        walk.failures.is_empty() && walk.unexpected_2xx == 0,
        "{} calls differ from the role table ({} unexpected 2xx):\n{}\n{}",
        walk.failures.len(),
        walk.unexpected_2xx,
        walk.matrix,
        walk.failures.join("\n")
    );
}

#[test]
fn every_route_answers_every_role_as_the_table_says() {
    let _serial = serial();
    // The table covers exactly the routes the server serves.
    let served: BTreeSet<(&str, &str)> = ROUTES.iter().copied().collect();
    let tabled: BTreeSet<(&str, &str)> = TABLE.iter().map(|(m, p, _, _)| (*m, *p)).collect();
    assert_eq!(TABLE.len(), tabled.len(), "a route appears twice in TABLE");
    assert_eq!(
        served, tabled,
        "ROUTES and this test's TABLE differ: write the new route's roles into TABLE"
    );

    let setup = Setup::new();
    assert_walk(&setup.walk(false));

    // A customer key lists only its own orders, without a filter too.
    let fx = &setup.fx;
    let own = setup.key("customer").list_orders("");
    assert!(!own.is_empty(), "A has orders");
    assert!(
        own.iter().all(|o| o["customer_id"] == fx.a.as_str()),
        "a customer key listed another customer's order"
    );
    assert_eq!(own.len(), fx.order_count(&fx.a), "all of A's orders");
}

/// An unknown query parameter is 400 on every `/v1` route, also those that take none, but only
/// for a caller the route admits: the key and the role are checked first.
#[test]
fn unknown_query_parameters_are_refused_after_the_role_check() {
    let _serial = serial();
    let setup = Setup::new();
    assert_walk(&setup.walk(true));
}

/// `GET /v1/whoami` lists, for a key of each role, exactly the routes this file's TABLE (API.md)
/// gives the role: the list the operations console shows is the table the walk above checks.
#[test]
fn whoami_lists_what_each_role_may_do_as_the_table_says() {
    let _serial = serial();
    let server = Server::start(2);
    let admin = server.client();
    let customer = admin.create_customer();
    for role in ROLES {
        let owner = (role == "customer").then_some(customer.as_str());
        let (id, client) = key_of(&admin, role, owner);
        let (status, me) = client.get_json("/v1/whoami");
        assert_eq!(status, 200, "{role}: {me}");
        assert_eq!(me["key_id"], id.as_str(), "{role}");
        assert_eq!(me["role"], role);
        assert_eq!(me["customer_id"].as_str(), owner, "{role}");
        assert!(
            me["owner"].as_str().is_some_and(|o| o.starts_with(role)),
            "{me}"
        );
        let may: BTreeSet<String> = me["may"]
            .as_array()
            .expect("may")
            .iter()
            .map(|r| r.as_str().expect("route").to_string())
            .collect();
        let table: BTreeSet<String> = TABLE
            .iter()
            .filter(|(_, _, roles, _)| roles.is_some_and(|roles| roles.contains(&role)))
            .map(|(method, path, _, _)| format!("{method} {path}"))
            .collect();
        assert_eq!(may, table, "whoami of a {role} key");
    }
    let (status, problem) = admin.with_key("odk_nope").get_json("/v1/whoami");
    assert_eq!((status, code(&problem)), (401, "unauthorized"));
}

#[test]
fn auditors_read_customers_masked_and_frontend_in_full() {
    let _serial = serial();
    let server = Server::start(2);
    let admin = server.client();
    let (_, frontend) = key_of(&admin, "frontend", None);
    let (_, auditor) = key_of(&admin, "auditor", None);
    let person = json!({
        "name": "Jane Doemasked",
        "email": "jane.doemasked@example.com",
        "phone": "+44 20 7946 0123",
        "address": "17 Quillfeather Lane, Oxford",
    });
    let (status, created) = frontend.post_json("/v1/customers", &person, None);
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().expect("id");

    let (status, full) = frontend.get_json(&format!("/v1/customers/{id}"));
    assert_eq!(status, 200, "{full}");
    for field in ["name", "email", "phone", "address"] {
        assert_eq!(full[field], person[field], "frontend sees {field} in full");
    }

    let (status, masked) = auditor.get_json(&format!("/v1/customers/{id}"));
    assert_eq!(status, 200, "{masked}");
    assert_eq!(masked["id"], id);
    assert_eq!(masked["created_at"], full["created_at"]);
    assert_eq!(masked["email"], "j***@example.com", "{masked}");
    for field in ["name", "phone", "address"] {
        let value = masked[field].as_str().expect("a masked string");
        let original = person[field].as_str().unwrap();
        assert_ne!(value, original, "{field} masked: {masked}");
        assert!(
            value.contains("***") && value.starts_with(&original[..1]),
            "{field} masked as first character and ***: {value}"
        );
    }
    // Nothing of the personal data beyond first characters shows anywhere in the answer.
    let text = masked.to_string();
    for secret_part in [
        "Doemasked",
        "jane.",
        "7946",
        "0123",
        "Quillfeather",
        "Oxford",
    ] {
        assert!(
            !text.contains(secret_part),
            "{secret_part} leaks to the auditor: {text}"
        );
    }

    // A customer read by an auditor is still only a read: the auditor reads no orders.
    let (status, _) = auditor.get_json("/v1/orders");
    assert_eq!(status, 403);
}
