//! API key roles and the table of which role may do what (API.md, "Authentication and roles").
//!
//! Deny by default: a permission is a [`RoleSet`] that starts empty and lists its roles
//! explicitly, `admin` included; a role not listed is refused.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The role of an API key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything.
    Admin,
    /// A shop front end: customers, orders, stock reads.
    Frontend,
    /// One customer (the key carries its `customer_id`): its own record and orders only.
    Customer,
    /// Warehouse: stock, shipments, order reads.
    Logistics,
    /// Analytics and reads.
    Analyst,
    /// Operations: `/v1/ops`, changes, reads elsewhere.
    Operator,
    /// Audit log, incidents, change history, customers with personal data masked.
    Auditor,
    /// The catalog: prices read and written; stock reads.
    Merchandiser,
}

impl Role {
    /// Every role, in a fixed order.
    pub const ALL: [Role; 8] = [
        Role::Admin,
        Role::Frontend,
        Role::Customer,
        Role::Logistics,
        Role::Analyst,
        Role::Operator,
        Role::Auditor,
        Role::Merchandiser,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Frontend => "frontend",
            Role::Customer => "customer",
            Role::Logistics => "logistics",
            Role::Analyst => "analyst",
            Role::Operator => "operator",
            Role::Auditor => "auditor",
            Role::Merchandiser => "merchandiser",
        }
    }

    const fn bit(self) -> u8 {
        // Eight roles fill the `u8` of a [`RoleSet`]: a ninth needs a wider set.
        1 << (self as u8)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = ();
    fn from_str(s: &str) -> Result<Role, ()> {
        Role::ALL.into_iter().find(|r| r.as_str() == s).ok_or(())
    }
}

/// A set of roles allowed to do something.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RoleSet(u8);

impl RoleSet {
    /// Nobody.
    pub const NONE: RoleSet = RoleSet(0);

    /// The set of exactly `roles`.
    pub const fn of(roles: &[Role]) -> RoleSet {
        let mut bits = 0;
        let mut i = 0;
        while i < roles.len() {
            bits |= roles[i].bit();
            i += 1;
        }
        RoleSet(bits)
    }

    pub const fn contains(self, role: Role) -> bool {
        self.0 & role.bit() != 0
    }
}

use Role::*;

/// `GET /v1/stock/{sku}`.
pub const STOCK_READ: RoleSet =
    RoleSet::of(&[Admin, Frontend, Logistics, Analyst, Operator, Merchandiser]);
/// `POST /v1/stock/{sku}/adjustments`.
pub const STOCK_ADJUST: RoleSet = RoleSet::of(&[Admin, Logistics]);
/// `POST /v1/stock/{sku}/transfers` (API.md, Commerce: locations): the warehouse, as for
/// adjustments.
pub const STOCK_TRANSFER: RoleSet = RoleSet::of(&[Admin, Logistics]);
/// `POST /v1/locations` (API.md, Commerce: locations).
pub const LOCATION_WRITE: RoleSet = RoleSet::of(&[Admin, Logistics]);
/// `GET /v1/locations`: whoever reads stock (a stock record lists its locations), no more.
pub const LOCATION_READ: RoleSet = STOCK_READ;
/// `PUT /v1/catalog/{sku}`.
pub const CATALOG_WRITE: RoleSet = RoleSet::of(&[Admin, Merchandiser]);
/// `GET /v1/catalog/{sku}` and `GET /v1/catalog`: operators read elsewhere (API.md).
pub const CATALOG_READ: RoleSet = RoleSet::of(&[Admin, Merchandiser, Operator]);
/// `POST /v1/customers`.
pub const CUSTOMER_CREATE: RoleSet = RoleSet::of(&[Admin, Frontend]);
/// `GET /v1/customers/{id}`: a customer key only its own; an auditor sees personal data masked.
pub const CUSTOMER_READ: RoleSet = RoleSet::of(&[Admin, Frontend, Customer, Operator, Auditor]);
/// `PATCH /v1/customers/{id}`: a customer key only its own (API.md, Commerce: erasure).
pub const CUSTOMER_UPDATE: RoleSet = RoleSet::of(&[Admin, Frontend, Customer]);
/// `POST /v1/customers/{id}/erase` (API.md, Commerce: erasure).
pub const CUSTOMER_ERASE: RoleSet = RoleSet::of(&[Admin]);
/// `POST /v1/orders`: a customer key only for itself.
pub const ORDER_PLACE: RoleSet = RoleSet::of(&[Admin, Frontend, Customer]);
/// `GET /v1/orders/{id}`: a customer key only its own.
pub const ORDER_READ: RoleSet =
    RoleSet::of(&[Admin, Frontend, Customer, Logistics, Analyst, Operator]);
/// `GET /v1/orders`: a customer key only its own.
pub const ORDER_LIST: RoleSet =
    RoleSet::of(&[Admin, Frontend, Customer, Logistics, Analyst, Operator]);
/// `POST /v1/orders/{id}/cancel`: a customer key only its own.
pub const ORDER_CANCEL: RoleSet = RoleSet::of(&[Admin, Frontend, Customer]);
/// `POST /v1/orders/bulk` (API.md, Commerce: bulk import).
pub const ORDER_BULK: RoleSet = RoleSet::of(&[Admin, Frontend]);
/// `POST /v1/orders/{id}/shipments` and `POST /v1/shipments/{id}/events`.
pub const SHIPMENT_WRITE: RoleSet = RoleSet::of(&[Admin, Logistics]);
/// `GET /v1/shipments/{id}`.
pub const SHIPMENT_READ: RoleSet = RoleSet::of(&[Admin, Logistics, Operator]);
/// `POST /v1/orders/{id}/returns` (API.md, Commerce): a customer key only for its own orders.
pub const RETURN_CREATE: RoleSet = RoleSet::of(&[Admin, Frontend, Logistics, Customer]);
/// `POST /v1/returns/{id}/receive`: the warehouse.
pub const RETURN_RECEIVE: RoleSet = RoleSet::of(&[Admin, Logistics]);
/// `GET /v1/returns/{id}`: whoever may open or receive a return, and the roles that read
/// orders (a return is part of its order; a customer key only its own).
pub const RETURN_READ: RoleSet =
    RoleSet::of(&[Admin, Frontend, Customer, Logistics, Analyst, Operator]);
/// `POST /v1/orders/{id}/refunds` (API.md, Commerce).
pub const REFUND_CREATE: RoleSet = RoleSet::of(&[Admin, Frontend]);
/// `GET /v1/events` and `GET /v1/events/stream` (API.md, Commerce: events).
pub const EVENTS_READ: RoleSet = RoleSet::of(&[Admin, Operator, Analyst, Frontend]);
/// `POST /v1/webhooks`, `GET /v1/webhooks`, `DELETE /v1/webhooks/{id}`,
/// `GET /v1/webhooks/{id}/deliveries`.
pub const WEBHOOKS_MANAGE: RoleSet = RoleSet::of(&[Admin]);
/// `GET /v1/analytics/summary` and `GET /v1/analytics/orders.csv`.
pub const ANALYTICS_READ: RoleSet = RoleSet::of(&[Admin, Analyst, Operator]);
/// `GET /v1/ops/shards`.
pub const OPS_SHARDS_READ: RoleSet = RoleSet::of(&[Admin, Operator]);
/// `POST /v1/ops/shards/{id}/restart`.
pub const OPS_SHARD_RESTART: RoleSet = RoleSet::of(&[Admin, Operator]);
/// `POST /v1/ops/keys/rotate`.
pub const OPS_KEYS_ROTATE: RoleSet = RoleSet::of(&[Admin, Operator]);
/// `GET /v1/ops/inspection`.
pub const OPS_INSPECTION_READ: RoleSet = RoleSet::of(&[Admin, Operator]);
/// `POST /v1/ops/backups`.
pub const OPS_BACKUP_CREATE: RoleSet = RoleSet::of(&[Admin, Operator]);
/// `GET /v1/ops/backups`.
pub const OPS_BACKUPS_READ: RoleSet = RoleSet::of(&[Admin, Operator]);
/// `POST /v1/ops/backups/{id}/verify`.
pub const OPS_BACKUP_VERIFY: RoleSet = RoleSet::of(&[Admin, Operator]);
/// `GET /v1/ops/incidents` (auditors may read incidents, API.md).
pub const OPS_INCIDENTS_READ: RoleSet = RoleSet::of(&[Admin, Operator, Auditor]);
/// `GET /v1/ops/quarantine`: whoever may read incidents (a quarantine is one).
pub const OPS_QUARANTINE_READ: RoleSet = RoleSet::of(&[Admin, Operator, Auditor]);
/// `DELETE /v1/ops/quarantine/{fingerprint}`: lifting is an operation, like a shard restart.
pub const OPS_QUARANTINE_LIFT: RoleSet = RoleSet::of(&[Admin, Operator]);
/// `GET /v1/ops/config`.
pub const OPS_CONFIG_READ: RoleSet = RoleSet::of(&[Admin, Operator]);
/// `POST /v1/ops/changes`.
pub const CHANGE_REQUEST: RoleSet = RoleSet::of(&[Admin, Operator]);
/// `POST /v1/ops/changes/{id}/approve`: an admin, and never the requester (checked by the
/// change service).
pub const CHANGE_APPROVE: RoleSet = RoleSet::of(&[Admin]);
/// `POST /v1/ops/changes/{id}/apply`.
pub const CHANGE_APPLY: RoleSet = RoleSet::of(&[Admin, Operator]);
/// `POST /v1/ops/changes/{id}/rollback`.
pub const CHANGE_ROLLBACK: RoleSet = RoleSet::of(&[Admin, Operator]);
/// `GET /v1/ops/changes` and `GET /v1/ops/changes/{id}`: the change history, auditors too.
pub const CHANGES_READ: RoleSet = RoleSet::of(&[Admin, Operator, Auditor]);
/// `POST /v1/keys`, `GET /v1/keys`, `DELETE /v1/keys/{id}`.
pub const KEYS_MANAGE: RoleSet = RoleSet::of(&[Admin]);
/// `GET /v1/audit`, `GET /v1/audit/verify`.
pub const AUDIT_READ: RoleSet = RoleSet::of(&[Admin, Auditor]);
/// `GET /v1/whoami`: every key may read its own role and what it may do.
pub const WHOAMI: RoleSet = RoleSet::of(&Role::ALL);

/// Every route that needs a key, as (method, path template, the roles that may call it): what
/// `GET /v1/whoami` answers as a key's `may` (the operations console shows it). The handlers
/// check the same constants; the role-matrix e2e test holds both to API.md's table.
pub const ROUTE_PERMISSIONS: &[(&str, &str, RoleSet)] = &[
    ("GET", "/v1/stock/{sku}", STOCK_READ),
    ("POST", "/v1/stock/{sku}/adjustments", STOCK_ADJUST),
    ("POST", "/v1/stock/{sku}/transfers", STOCK_TRANSFER),
    ("POST", "/v1/locations", LOCATION_WRITE),
    ("GET", "/v1/locations", LOCATION_READ),
    ("PUT", "/v1/catalog/{sku}", CATALOG_WRITE),
    ("GET", "/v1/catalog/{sku}", CATALOG_READ),
    ("GET", "/v1/catalog", CATALOG_READ),
    ("POST", "/v1/customers", CUSTOMER_CREATE),
    ("GET", "/v1/customers/{id}", CUSTOMER_READ),
    ("PATCH", "/v1/customers/{id}", CUSTOMER_UPDATE),
    ("POST", "/v1/customers/{id}/erase", CUSTOMER_ERASE),
    ("POST", "/v1/orders", ORDER_PLACE),
    ("POST", "/v1/orders/bulk", ORDER_BULK),
    ("GET", "/v1/orders", ORDER_LIST),
    ("GET", "/v1/orders/{id}", ORDER_READ),
    ("POST", "/v1/orders/{id}/cancel", ORDER_CANCEL),
    ("POST", "/v1/orders/{id}/shipments", SHIPMENT_WRITE),
    ("POST", "/v1/shipments/{id}/events", SHIPMENT_WRITE),
    ("GET", "/v1/shipments/{id}", SHIPMENT_READ),
    ("POST", "/v1/orders/{id}/returns", RETURN_CREATE),
    ("POST", "/v1/returns/{id}/receive", RETURN_RECEIVE),
    ("GET", "/v1/returns/{id}", RETURN_READ),
    ("POST", "/v1/orders/{id}/refunds", REFUND_CREATE),
    ("GET", "/v1/events", EVENTS_READ),
    ("GET", "/v1/events/stream", EVENTS_READ),
    ("POST", "/v1/webhooks", WEBHOOKS_MANAGE),
    ("GET", "/v1/webhooks", WEBHOOKS_MANAGE),
    ("DELETE", "/v1/webhooks/{id}", WEBHOOKS_MANAGE),
    ("GET", "/v1/webhooks/{id}/deliveries", WEBHOOKS_MANAGE),
    ("GET", "/v1/analytics/summary", ANALYTICS_READ),
    ("GET", "/v1/analytics/orders.csv", ANALYTICS_READ),
    ("GET", "/v1/ops/shards", OPS_SHARDS_READ),
    ("POST", "/v1/ops/shards/{id}/restart", OPS_SHARD_RESTART),
    ("GET", "/v1/ops/incidents", OPS_INCIDENTS_READ),
    ("GET", "/v1/ops/quarantine", OPS_QUARANTINE_READ),
    (
        "DELETE",
        "/v1/ops/quarantine/{fingerprint}",
        OPS_QUARANTINE_LIFT,
    ),
    ("GET", "/v1/ops/inspection", OPS_INSPECTION_READ),
    ("POST", "/v1/ops/keys/rotate", OPS_KEYS_ROTATE),
    ("POST", "/v1/ops/backups", OPS_BACKUP_CREATE),
    ("GET", "/v1/ops/backups", OPS_BACKUPS_READ),
    ("POST", "/v1/ops/backups/{id}/verify", OPS_BACKUP_VERIFY),
    ("GET", "/v1/ops/config", OPS_CONFIG_READ),
    ("POST", "/v1/ops/changes", CHANGE_REQUEST),
    ("GET", "/v1/ops/changes", CHANGES_READ),
    ("GET", "/v1/ops/changes/{id}", CHANGES_READ),
    ("POST", "/v1/ops/changes/{id}/approve", CHANGE_APPROVE),
    ("POST", "/v1/ops/changes/{id}/apply", CHANGE_APPLY),
    ("POST", "/v1/ops/changes/{id}/rollback", CHANGE_ROLLBACK),
    ("POST", "/v1/keys", KEYS_MANAGE),
    ("GET", "/v1/keys", KEYS_MANAGE),
    ("DELETE", "/v1/keys/{id}", KEYS_MANAGE),
    ("GET", "/v1/audit", AUDIT_READ),
    ("GET", "/v1/audit/verify", AUDIT_READ),
    ("GET", "/v1/whoami", WHOAMI),
];

/// The routes of [`ROUTE_PERMISSIONS`] that `role` may call, as `METHOD /path/template`.
pub fn permitted_routes(role: Role) -> Vec<String> {
    ROUTE_PERMISSIONS
        .iter()
        .filter(|(_, _, roles)| roles.contains(role))
        .map(|(method, path, _)| format!("{method} {path}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The OpenAPI document's role enum (`orderd_proto::RoleName`) is written by hand: it names
    /// exactly the roles there are.
    #[test]
    fn the_documented_role_names_are_the_roles() {
        let roles: Vec<String> = Role::ALL
            .iter()
            .map(|role| serde_json::to_string(role).unwrap())
            .collect();
        for name in &roles {
            let documented: orderd_proto::RoleName = serde_json::from_str(name)
                .unwrap_or_else(|e| panic!("role {name} missing from RoleName: {e}"));
            assert_eq!(&serde_json::to_string(&documented).unwrap(), name);
        }
        // And no documented name lacks a role (RoleName has as many variants as Role::ALL).
        let extra = [
            "\"admin\"",
            "\"frontend\"",
            "\"customer\"",
            "\"logistics\"",
            "\"analyst\"",
            "\"operator\"",
            "\"auditor\"",
            "\"merchandiser\"",
        ];
        assert_eq!(roles, extra, "a new role needs RoleName in gateway/proto");
    }

    /// The OpenAPI document's order-status enum (`orderd_proto::OrderStatusName`) is written
    /// by hand: it names exactly the statuses a client sees (`OrderStatus::LISTED` of the
    /// engine), in the same order, both ways, and each one the listing filter parses.
    #[test]
    fn the_documented_order_statuses_are_the_engines() {
        use orderd_engine::OrderStatus;
        use orderd_proto::OrderStatusName;
        let engine: Vec<String> = OrderStatus::LISTED
            .iter()
            .map(|status| format!("\"{}\"", status.as_str()))
            .collect();
        let documented: Vec<String> = OrderStatusName::ALL
            .iter()
            .map(|name| serde_json::to_string(name).unwrap())
            .collect();
        assert_eq!(
            engine, documented,
            "OrderStatusName must follow OrderStatus::LISTED"
        );
        for name in &engine {
            // Engine → document: the name decodes as a documented variant...
            let parsed: OrderStatusName = serde_json::from_str(name)
                .unwrap_or_else(|e| panic!("status {name} missing from OrderStatusName: {e}"));
            assert_eq!(&serde_json::to_string(&parsed).unwrap(), name);
            // ...and document → engine: the filter takes it back.
            let text = name.trim_matches('"');
            assert_eq!(
                OrderStatus::parse(text).map(OrderStatus::as_str),
                Some(text)
            );
        }
        // No variant beyond ALL: an unknown name fails to decode, and `pending` stays internal.
        assert!(serde_json::from_str::<OrderStatusName>("\"pending\"").is_err());
        assert_eq!(OrderStatus::parse("pending"), None);
        let count = |name: OrderStatusName| match name {
            OrderStatusName::Confirmed
            | OrderStatusName::PartiallyShipped
            | OrderStatusName::Shipped
            | OrderStatusName::Delivered
            | OrderStatusName::Cancelled
            | OrderStatusName::PartiallyReturned
            | OrderStatusName::Returned => 1,
        };
        // A new variant without a place in ALL breaks the exhaustive match above or this sum.
        assert_eq!(
            OrderStatusName::ALL.into_iter().map(count).sum::<usize>(),
            7
        );
    }

    const ALL_PERMISSIONS: [(&str, RoleSet); 43] = [
        ("stock read", STOCK_READ),
        ("stock adjust", STOCK_ADJUST),
        ("stock transfer", STOCK_TRANSFER),
        ("location write", LOCATION_WRITE),
        ("location read", LOCATION_READ),
        ("catalog write", CATALOG_WRITE),
        ("catalog read", CATALOG_READ),
        ("customer create", CUSTOMER_CREATE),
        ("customer read", CUSTOMER_READ),
        ("customer update", CUSTOMER_UPDATE),
        ("customer erase", CUSTOMER_ERASE),
        ("order place", ORDER_PLACE),
        ("order read", ORDER_READ),
        ("order list", ORDER_LIST),
        ("order cancel", ORDER_CANCEL),
        ("order bulk import", ORDER_BULK),
        ("ops shards read", OPS_SHARDS_READ),
        ("ops shard restart", OPS_SHARD_RESTART),
        ("ops incidents read", OPS_INCIDENTS_READ),
        ("ops quarantine read", OPS_QUARANTINE_READ),
        ("ops quarantine lift", OPS_QUARANTINE_LIFT),
        ("ops inspection read", OPS_INSPECTION_READ),
        ("ops backup create", OPS_BACKUP_CREATE),
        ("ops backups read", OPS_BACKUPS_READ),
        ("ops backup verify", OPS_BACKUP_VERIFY),
        ("shipment write", SHIPMENT_WRITE),
        ("shipment read", SHIPMENT_READ),
        ("return create", RETURN_CREATE),
        ("return receive", RETURN_RECEIVE),
        ("return read", RETURN_READ),
        ("refund create", REFUND_CREATE),
        ("events read", EVENTS_READ),
        ("webhooks manage", WEBHOOKS_MANAGE),
        ("analytics read", ANALYTICS_READ),
        ("keys manage", KEYS_MANAGE),
        ("audit read", AUDIT_READ),
        ("ops config read", OPS_CONFIG_READ),
        ("change request", CHANGE_REQUEST),
        ("change approve", CHANGE_APPROVE),
        ("change apply", CHANGE_APPLY),
        ("change rollback", CHANGE_ROLLBACK),
        ("changes read", CHANGES_READ),
        ("whoami", WHOAMI),
    ];

    #[test]
    fn deny_by_default() {
        for role in Role::ALL {
            assert!(!RoleSet::NONE.contains(role));
            assert!(!RoleSet::of(&[]).contains(role));
        }
        let only_logistics = RoleSet::of(&[Logistics]);
        for role in Role::ALL {
            assert_eq!(only_logistics.contains(role), role == Logistics);
        }
    }

    /// The bulk import places each line as `POST /v1/orders`: whoever may import may place.
    #[test]
    fn every_importer_may_place() {
        for role in Role::ALL {
            assert!(
                !ORDER_BULK.contains(role) || ORDER_PLACE.contains(role),
                "{role:?}"
            );
        }
    }

    #[test]
    fn admin_may_do_everything() {
        for (name, set) in ALL_PERMISSIONS {
            assert!(set.contains(Admin), "{name}");
        }
    }

    /// The table of API.md, route by route, as (permission, roles allowed).
    #[test]
    fn role_table_matches_the_api() {
        let expected: [(&str, &[Role]); 43] = [
            (
                "stock read",
                &[Admin, Frontend, Logistics, Analyst, Operator, Merchandiser],
            ),
            ("stock adjust", &[Admin, Logistics]),
            ("stock transfer", &[Admin, Logistics]),
            ("location write", &[Admin, Logistics]),
            (
                "location read",
                &[Admin, Frontend, Logistics, Analyst, Operator, Merchandiser],
            ),
            ("catalog write", &[Admin, Merchandiser]),
            ("catalog read", &[Admin, Merchandiser, Operator]),
            ("customer create", &[Admin, Frontend]),
            (
                "customer read",
                &[Admin, Frontend, Customer, Operator, Auditor],
            ),
            ("customer update", &[Admin, Frontend, Customer]),
            ("customer erase", &[Admin]),
            ("order place", &[Admin, Frontend, Customer]),
            (
                "order read",
                &[Admin, Frontend, Customer, Logistics, Analyst, Operator],
            ),
            (
                "order list",
                &[Admin, Frontend, Customer, Logistics, Analyst, Operator],
            ),
            ("order cancel", &[Admin, Frontend, Customer]),
            ("order bulk import", &[Admin, Frontend]),
            ("ops shards read", &[Admin, Operator]),
            ("ops shard restart", &[Admin, Operator]),
            ("ops incidents read", &[Admin, Operator, Auditor]),
            ("ops quarantine read", &[Admin, Operator, Auditor]),
            ("ops quarantine lift", &[Admin, Operator]),
            ("ops inspection read", &[Admin, Operator]),
            ("ops backup create", &[Admin, Operator]),
            ("ops backups read", &[Admin, Operator]),
            ("ops backup verify", &[Admin, Operator]),
            ("shipment write", &[Admin, Logistics]),
            ("shipment read", &[Admin, Logistics, Operator]),
            ("return create", &[Admin, Frontend, Logistics, Customer]),
            ("return receive", &[Admin, Logistics]),
            (
                "return read",
                &[Admin, Frontend, Customer, Logistics, Analyst, Operator],
            ),
            ("refund create", &[Admin, Frontend]),
            ("events read", &[Admin, Operator, Analyst, Frontend]),
            ("webhooks manage", &[Admin]),
            ("analytics read", &[Admin, Analyst, Operator]),
            ("keys manage", &[Admin]),
            ("audit read", &[Admin, Auditor]),
            ("ops config read", &[Admin, Operator]),
            ("change request", &[Admin, Operator]),
            ("change approve", &[Admin]),
            ("change apply", &[Admin, Operator]),
            ("change rollback", &[Admin, Operator]),
            ("changes read", &[Admin, Operator, Auditor]),
            ("whoami", &Role::ALL),
        ];
        for ((name, set), (expected_name, allowed)) in ALL_PERMISSIONS.iter().zip(expected) {
            assert_eq!(*name, expected_name);
            for role in Role::ALL {
                assert_eq!(
                    set.contains(role),
                    allowed.contains(&role),
                    "{name}: {role}"
                );
            }
        }
        // Spot checks of what must never be allowed.
        assert!(!STOCK_ADJUST.contains(Frontend));
        assert!(!OPS_SHARD_RESTART.contains(Auditor));
        assert!(!OPS_QUARANTINE_LIFT.contains(Auditor));
        assert!(!OPS_INSPECTION_READ.contains(Auditor));
        assert!(!ORDER_READ.contains(Auditor));
        assert!(!STOCK_READ.contains(Customer));
        assert!(!CATALOG_WRITE.contains(Frontend));
        assert!(!CATALOG_WRITE.contains(Operator));
        assert!(!STOCK_ADJUST.contains(Merchandiser));
        assert!(!STOCK_TRANSFER.contains(Frontend));
        assert!(!LOCATION_WRITE.contains(Merchandiser));
        assert!(!LOCATION_READ.contains(Customer));
        assert!(!LOCATION_READ.contains(Auditor));
        assert!(!ORDER_PLACE.contains(Merchandiser));
    }

    /// `whoami`'s list for a role is exactly the routes whose permission names it: an
    /// auditor reads incidents and the audit trail but restarts no shard.
    #[test]
    fn permitted_routes_follow_the_table() {
        let auditor = permitted_routes(Auditor);
        assert!(auditor.contains(&"GET /v1/audit".to_string()));
        assert!(auditor.contains(&"GET /v1/whoami".to_string()));
        assert!(!auditor.contains(&"POST /v1/ops/shards/{id}/restart".to_string()));
        assert_eq!(permitted_routes(Admin).len(), ROUTE_PERMISSIONS.len());
        for role in Role::ALL {
            assert!(permitted_routes(role).contains(&"GET /v1/whoami".to_string()));
        }
    }

    #[test]
    fn roles_round_trip_as_text() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
            assert_eq!(
                serde_json::to_string(&role).unwrap(),
                format!("\"{}\"", role.as_str())
            );
        }
        assert!("root".parse::<Role>().is_err());
    }
}
