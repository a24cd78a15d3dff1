//! orderd's control plane, the part that needs no sockets and no actix-web: the off-site copy
//! of backups ([`offsite`], also used by `orderctl backup restore`) and the request window that
//! change management's watch reads ([`window`]). Backups, inspection, live settings and change
//! management still live in `orderd-gateway` and move here next (docs/ARCHITECTURE.md).

pub mod offsite;
pub mod window;
