//! Webhooks: endpoints (`POST /v1/webhooks`), where they may point (no loopback or private
//! addresses unless `webhooks.allow_private`), and their delivery workers, which read the
//! public events from the `events` family (never the order path), sign each (HMAC-SHA256 over
//! `"<t>.<body>"`, as Stripe signs) and POST it, in order per endpoint, retrying with
//! exponential backoff and jitter for `webhooks.retry_for_s`.
//!
//! State lives in the `control` family and is written before it is acted on, so a restart
//! mid-retry loses nothing and re-sends nothing acknowledged: `whk/e/<id>` the endpoint,
//! `whk/p/<id>` the cursor of the last event it finished (delivered or failed), and
//! `whk/d/<id><cursor>` one delivery record per event attempted. A delivery's 2xx and the
//! endpoint's progress past it are one synced write.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use hmac::{Hmac, Mac};
use orderd_engine::events::{self, EventType, StoredEvent, TypeSet};
use orderd_engine::storage::{Family, Storage, StorageError, Write};
use orderd_engine::Engine;
use orderd_service::ApiError;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// The signature header: `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`.
pub const SIGNATURE_HEADER: &str = "Orderd-Signature";
/// The event id header.
pub const EVENT_ID_HEADER: &str = "Orderd-Event-Id";
/// Longest endpoint URL.
pub const URL_CHARS_MAX: usize = 2048;
/// Events one worker reads from the store at a time.
const READ_BATCH: usize = 100;
/// Old delivery records go in one range delete each time the oldest kept cursor has moved
/// this far: a range delete per delivery piled up range tombstones in RocksDB's memtable, and
/// every read re-fragments them, so delivery slowed to 27 events/s after 16,000 events. An
/// endpoint keeps at most `webhooks.deliveries_max` plus this many records.
const TRIM_EVERY_CURSORS: u64 = 1024;

/// The settings the workers follow (read at start): `[webhooks]` and `events.scan_max`.
#[derive(Clone, Debug)]
pub struct Settings {
    pub webhooks: orderd_config::WebhooksConfig,
    pub scan_max: usize,
}

impl Settings {
    pub fn from_config(config: &orderd_config::Config) -> Settings {
        Settings {
            webhooks: config.webhooks.clone(),
            scan_max: config.events.scan_max,
        }
    }
}

/// A stored endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub id: u64,
    pub url: String,
    /// Event type names, as given.
    pub types: Vec<String>,
    pub secret: String,
    pub created_us: i64,
}

impl Endpoint {
    pub fn wire_id(&self) -> String {
        format!("whk_{:016x}", self.id)
    }

    fn type_set(&self) -> TypeSet {
        let types: Vec<EventType> = self
            .types
            .iter()
            .filter_map(|t| EventType::parse(t))
            .collect();
        TypeSet::of(&types)
    }
}

/// Where one event's delivery to one endpoint stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeliveryStatus {
    Pending,
    Delivered,
    Failed,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
        }
    }
}

/// A delivery record (`whk/d/<id><cursor>`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    pub cursor: u64,
    pub attempts: u32,
    pub status: DeliveryStatus,
    pub last_status_code: Option<u16>,
    /// Microseconds; meaningful while pending.
    pub next_attempt_us: i64,
    pub first_attempt_us: i64,
}

fn endpoint_key(id: u64) -> Vec<u8> {
    [b"whk/e/".as_slice(), &id.to_be_bytes()].concat()
}

fn progress_key(id: u64) -> Vec<u8> {
    [b"whk/p/".as_slice(), &id.to_be_bytes()].concat()
}

fn delivery_prefix(id: u64) -> Vec<u8> {
    [b"whk/d/".as_slice(), &id.to_be_bytes()].concat()
}

fn delivery_key(id: u64, cursor: u64) -> Vec<u8> {
    [delivery_prefix(id).as_slice(), &cursor.to_be_bytes()].concat()
}

fn put(key: Vec<u8>, value: Vec<u8>) -> Write {
    Write::Put {
        family: Family::Control,
        key,
        value,
    }
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_allocvec(value).expect("encoding to a Vec")
}

fn decode<T: for<'de> Deserialize<'de>>(value: &[u8]) -> Result<T, StorageError> {
    postcard::from_bytes(value).map_err(|e| StorageError::Corrupt(format!("webhook record: {e}")))
}

/// Whether an address is one a webhook may not reach without `webhooks.allow_private`:
/// loopback, private (RFC 1918, unique local), link-local (cloud metadata at 169.254.169.254),
/// shared (100.64/10), unspecified, broadcast, multicast, documentation, or IPv4 inside IPv6.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
                || o[0] >= 240
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private(IpAddr::V4(v4));
            }
            let s = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] == 0x2001 && s[1] == 0x0db8)
                || (s[0] == 0 && s[1] == 0 && s[2] == 0 && s[3] == 0 && s[4] == 0)
        }
    }
}

/// The addresses `host:port` resolves to, refused when any is private and private addresses
/// are not allowed (a name that resolves to several must be public in all of them).
fn resolve(host: &str, port: u16, allow_private: bool) -> Result<Vec<SocketAddr>, String> {
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .collect();
    if addrs.is_empty() {
        return Err(format!("{host} resolves to no address"));
    }
    if !allow_private {
        if let Some(addr) = addrs.iter().find(|a| is_private(a.ip())) {
            return Err(format!(
                "{host} resolves to {}, a loopback or private address (webhooks.allow_private is off)",
                addr.ip()
            ));
        }
    }
    Ok(addrs)
}

/// Checks an endpoint URL: http(s), a host, no credentials, and (unless `allow_private`) no
/// loopback or private address, by literal or by what the name resolves to.
pub fn check_url(text: &str, allow_private: bool) -> Result<url::Url, ApiError> {
    let bad = |detail: String| ApiError::invalid("url", detail);
    if text.chars().count() > URL_CHARS_MAX {
        return Err(bad(format!("at most {URL_CHARS_MAX} characters")));
    }
    let url = url::Url::parse(text).map_err(|e| bad(format!("not a URL: {e}")))?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(bad("the scheme must be http or https".into()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("a URL with credentials is refused".into()));
    }
    let port = url.port_or_known_default().unwrap_or(80);
    match url.host() {
        None => Err(bad("a URL needs a host".into())),
        Some(url::Host::Ipv4(ip)) => {
            if !allow_private && is_private(IpAddr::V4(ip)) {
                return Err(bad(format!(
                    "{ip} is a loopback or private address (webhooks.allow_private is off)"
                )));
            }
            Ok(url)
        }
        Some(url::Host::Ipv6(ip)) => {
            if !allow_private && is_private(IpAddr::V6(ip)) {
                return Err(bad(format!(
                    "{ip} is a loopback or private address (webhooks.allow_private is off)"
                )));
            }
            Ok(url)
        }
        Some(url::Host::Domain(name)) => {
            resolve(name, port, allow_private).map_err(bad)?;
            Ok(url)
        }
    }
}

/// The `Orderd-Signature` value of `body` sent at `t` (unix seconds) under `secret`.
pub fn signature(secret: &str, t: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// The wait before retry `attempt` (1: the first retry): `initial · 2^(attempt-1)`, at most
/// `max`, drawn uniformly from half of it to all of it.
pub fn backoff_ms(attempt: u32, initial: u64, max: u64, random: f64) -> u64 {
    let exp = initial.saturating_mul(1u64 << attempt.saturating_sub(1).min(40));
    let full = exp.min(max);
    let half = full / 2;
    half + ((full - half) as f64 * random.clamp(0.0, 1.0)) as u64
}

/// Resolves names for deliveries: the checks of [`check_url`] again at connect time, so a
/// name that later resolves to a private address (DNS rebinding) is not reached.
struct GuardedResolver {
    allow_private: bool,
}

impl ureq::Resolver for GuardedResolver {
    fn resolve(&self, netloc: &str) -> std::io::Result<Vec<SocketAddr>> {
        let addrs: Vec<SocketAddr> = netloc.to_socket_addrs()?.collect();
        if !self.allow_private && addrs.iter().any(|a| is_private(a.ip())) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!("{netloc} resolves to a loopback or private address"),
            ));
        }
        Ok(addrs)
    }
}

struct Worker {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

/// The endpoints and their delivery workers.
pub struct Webhooks {
    engine: Engine,
    settings: Settings,
    agent: ureq::Agent,
    endpoints: Mutex<HashMap<u64, (Endpoint, Worker)>>,
    /// Serializes creation (the endpoint bound, the id counter).
    create: Mutex<()>,
}

impl Webhooks {
    /// Loads the stored endpoints and starts a worker for each.
    pub fn start(engine: Engine, settings: Settings) -> Result<Arc<Webhooks>, StorageError> {
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_millis(settings.webhooks.timeout_ms))
            .redirects(0)
            .resolver(GuardedResolver {
                allow_private: settings.webhooks.allow_private,
            })
            .build();
        let webhooks = Arc::new(Webhooks {
            engine,
            settings,
            agent,
            endpoints: Mutex::new(HashMap::new()),
            create: Mutex::new(()),
        });
        let storage = webhooks.engine.storage();
        let mut stored = Vec::new();
        let mut failure = None;
        storage.scan_prefix(Family::Control, b"whk/e/", &mut |_, value| {
            match decode::<Endpoint>(value) {
                Ok(endpoint) => stored.push(endpoint),
                Err(error) => failure = Some(error),
            }
            true
        })?;
        if let Some(error) = failure {
            return Err(error);
        }
        for endpoint in stored {
            webhooks.spawn(endpoint);
        }
        Ok(webhooks)
    }

    fn spawn(self: &Arc<Self>, endpoint: Endpoint) {
        let stop = Arc::new(AtomicBool::new(false));
        let this = Arc::downgrade(self);
        let (id, worker_endpoint, worker_stop) = (endpoint.id, endpoint.clone(), stop.clone());
        let handle = std::thread::Builder::new()
            .name(format!("orderd-whk-{:x}", id & 0xffff))
            .spawn(move || {
                if let Some(webhooks) = this.upgrade() {
                    let (engine, settings, agent) = (
                        webhooks.engine.clone(),
                        webhooks.settings.clone(),
                        webhooks.agent.clone(),
                    );
                    drop(webhooks);
                    deliver_loop(&engine, &settings, &agent, &worker_endpoint, &worker_stop);
                }
            })
            .expect("spawn webhook worker");
        self.endpoints.lock().expect("webhooks poisoned").insert(
            id,
            (
                endpoint,
                Worker {
                    stop,
                    handle: Some(handle),
                },
            ),
        );
    }

    /// Creates an endpoint: the URL checked, a fresh secret, deliveries from the next event on.
    pub fn create(self: &Arc<Self>, url: &str, types: &[String]) -> Result<Endpoint, ApiError> {
        let url = check_url(url, self.settings.webhooks.allow_private)?;
        if types.is_empty() || types.len() > EventType::ALL.len() {
            return Err(ApiError::invalid("types", "1 to 9 event types"));
        }
        for (i, t) in types.iter().enumerate() {
            if EventType::parse(t).is_none() {
                return Err(ApiError::invalid(
                    format!("types[{i}]"),
                    format!("unknown event type {t:?}"),
                ));
            }
            if types[..i].contains(t) {
                return Err(ApiError::invalid(
                    format!("types[{i}]"),
                    format!("{t} is listed twice"),
                ));
            }
        }
        let _create = self.create.lock().expect("webhooks poisoned");
        if self.endpoints.lock().expect("webhooks poisoned").len()
            >= self.settings.webhooks.endpoints_max
        {
            return Err(ApiError::invalid(
                "url",
                format!(
                    "at most {} endpoints (webhooks.endpoints_max)",
                    self.settings.webhooks.endpoints_max
                ),
            ));
        }
        let id = rand::random::<u64>() >> 1;
        let secret = format!("whsec_{}", hex::encode(rand::random::<[u8; 24]>()));
        let endpoint = Endpoint {
            id,
            url: url.to_string(),
            types: types.to_vec(),
            secret,
            created_us: orderd_engine::clock::now_us(),
        };
        // Deliveries start after the newest event now: the endpoint hears what happens next.
        let start = self.engine.event_head().get();
        self.engine
            .storage()
            .write(
                vec![
                    put(endpoint_key(id), encode(&endpoint)),
                    put(progress_key(id), start.to_be_bytes().to_vec()),
                ],
                true,
            )
            .map_err(|e| ApiError::Internal(format!("webhook write: {e}")))?;
        self.spawn(endpoint.clone());
        Ok(endpoint)
    }

    /// Every endpoint, by id.
    pub fn list(&self) -> Vec<Endpoint> {
        let mut list: Vec<Endpoint> = self
            .endpoints
            .lock()
            .expect("webhooks poisoned")
            .values()
            .map(|(e, _)| e.clone())
            .collect();
        list.sort_by_key(|e| e.id);
        list
    }

    fn parse_id(id: &str) -> Option<u64> {
        let hex = id.strip_prefix("whk_")?;
        if hex.len() != 16 {
            return None;
        }
        u64::from_str_radix(hex, 16).ok()
    }

    /// Deletes an endpoint, its worker stopped first, with its delivery records.
    pub fn delete(&self, id: &str) -> Result<(), ApiError> {
        let id = Self::parse_id(id).ok_or_else(ApiError::not_found)?;
        let removed = self
            .endpoints
            .lock()
            .expect("webhooks poisoned")
            .remove(&id);
        let Some((_, mut worker)) = removed else {
            return Err(ApiError::not_found());
        };
        worker.stop.store(true, Ordering::SeqCst);
        if let Some(handle) = worker.handle.take() {
            let _ = handle.join();
        }
        let prefix = delivery_prefix(id);
        let end = orderd_engine::storage::prefix_end(&prefix).expect("prefix has a next");
        self.engine
            .storage()
            .write(
                vec![
                    Write::DeleteRange {
                        family: Family::Control,
                        from: endpoint_key(id),
                        to: orderd_engine::storage::prefix_end(&endpoint_key(id)).expect("next"),
                    },
                    Write::DeleteRange {
                        family: Family::Control,
                        from: progress_key(id),
                        to: orderd_engine::storage::prefix_end(&progress_key(id)).expect("next"),
                    },
                    Write::DeleteRange {
                        family: Family::Control,
                        from: prefix,
                        to: end,
                    },
                ],
                true,
            )
            .map_err(|e| ApiError::Internal(format!("webhook write: {e}")))
    }

    /// A page of an endpoint's deliveries, oldest event first, after the event cursor `after`.
    pub fn deliveries(
        &self,
        id: &str,
        after: u64,
        limit: usize,
    ) -> Result<(Vec<Delivery>, bool), ApiError> {
        let id = Self::parse_id(id).ok_or_else(ApiError::not_found)?;
        if !self
            .endpoints
            .lock()
            .expect("webhooks poisoned")
            .contains_key(&id)
        {
            return Err(ApiError::not_found());
        }
        let storage = self.engine.storage();
        let from = delivery_key(id, after.saturating_add(1));
        let to = orderd_engine::storage::prefix_end(&delivery_prefix(id)).expect("next");
        let mut items = Vec::new();
        let mut more = false;
        let mut failure = None;
        storage
            .scan(Family::Control, &from, &to, &mut |_, value| {
                if items.len() == limit {
                    more = true;
                    return false;
                }
                match decode::<Delivery>(value) {
                    Ok(d) => items.push(d),
                    Err(e) => failure = Some(e),
                }
                failure.is_none()
            })
            .map_err(|e| ApiError::Internal(format!("webhook read: {e}")))?;
        if let Some(e) = failure {
            return Err(ApiError::Internal(format!("webhook read: {e}")));
        }
        Ok((items, more))
    }

    /// Stops every worker (at shutdown).
    pub fn stop(&self) {
        let mut endpoints = self.endpoints.lock().expect("webhooks poisoned");
        for (_, worker) in endpoints.values() {
            worker.stop.store(true, Ordering::SeqCst);
        }
        for (_, (_, worker)) in endpoints.iter_mut() {
            if let Some(handle) = worker.handle.take() {
                let _ = handle.join();
            }
        }
    }
}

/// Sleeps until `until_us` or until stopped (checked every 50 ms); false when stopped.
fn sleep_until(until_us: i64, stop: &AtomicBool) -> bool {
    loop {
        if stop.load(Ordering::SeqCst) {
            return false;
        }
        let now = orderd_engine::clock::now_us();
        if now >= until_us {
            return true;
        }
        let wait = ((until_us - now) as u64).min(50_000);
        std::thread::sleep(Duration::from_micros(wait));
    }
}

/// One endpoint's worker: its events in cursor order, each until delivered or failed.
fn deliver_loop(
    engine: &Engine,
    settings: &Settings,
    agent: &ureq::Agent,
    endpoint: &Endpoint,
    stop: &AtomicBool,
) {
    let storage = engine.storage();
    let head = engine.event_head();
    let types = endpoint.type_set();
    // Records below this cursor are deleted (in memory: a restart trims once at its first
    // delivery).
    let mut trimmed_to: Option<u64> = None;
    let mut progress = match storage.get(Family::Control, &progress_key(endpoint.id)) {
        Ok(Some(value)) if value.len() == 8 => u64::from_be_bytes(value.try_into().expect("8")),
        _ => head.get(),
    };
    while !stop.load(Ordering::SeqCst) {
        let page = events::read_after(
            storage.as_ref(),
            progress,
            types,
            READ_BATCH,
            settings.scan_max,
        );
        let (page, reached) = match page {
            Ok(page) => page,
            Err(error) => {
                tracing::error!(message = "Webhook worker cannot read events.", %error);
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
        };
        for event in &page {
            if !deliver(
                storage.as_ref(),
                settings,
                agent,
                endpoint,
                event,
                &mut trimmed_to,
                stop,
            ) {
                return;
            }
            progress = event.cursor;
        }
        if reached > progress {
            // Events of other types: skip past them (kept in memory; a restart reads them
            // again and skips them again).
            progress = reached;
        }
        if page.is_empty() {
            head.wait_past(progress, Duration::from_millis(500));
        }
    }
}

/// Delivers one event until a 2xx or its retry time is over; false when stopped first.
fn deliver(
    storage: &dyn Storage,
    settings: &Settings,
    agent: &ureq::Agent,
    endpoint: &Endpoint,
    event: &StoredEvent,
    trimmed_to: &mut Option<u64>,
    stop: &AtomicBool,
) -> bool {
    let key = delivery_key(endpoint.id, event.cursor);
    let mut record = match storage.get(Family::Control, &key) {
        Ok(Some(value)) => decode::<Delivery>(&value).ok(),
        _ => None,
    }
    .unwrap_or(Delivery {
        cursor: event.cursor,
        attempts: 0,
        status: DeliveryStatus::Pending,
        last_status_code: None,
        next_attempt_us: 0,
        first_attempt_us: 0,
    });
    let body = serde_json::to_vec(&orderd_service::wire::event(event)).expect("an event encodes");
    let event_id = events::event_id(event.cursor);
    while record.status == DeliveryStatus::Pending {
        if !sleep_until(record.next_attempt_us, stop) {
            return false;
        }
        let now_us = orderd_engine::clock::now_us();
        if record.attempts == 0 {
            record.first_attempt_us = now_us;
        }
        let t = now_us / 1_000_000;
        let answer = agent
            .post(&endpoint.url)
            .set("content-type", "application/json")
            .set(SIGNATURE_HEADER, &signature(&endpoint.secret, t, &body))
            .set(EVENT_ID_HEADER, &event_id)
            .send_bytes(&body);
        let code = match answer {
            Ok(response) => Some(response.status()),
            Err(ureq::Error::Status(code, _)) => Some(code),
            Err(ureq::Error::Transport(error)) => {
                tracing::info!(message = "Webhook delivery failed to connect.", endpoint = %endpoint.wire_id(), event = %event_id, %error);
                None
            }
        };
        record.attempts += 1;
        record.last_status_code = code;
        let now_us = orderd_engine::clock::now_us();
        if code.is_some_and(|c| (200..300).contains(&c)) {
            record.status = DeliveryStatus::Delivered;
        } else if now_us - record.first_attempt_us
            >= (settings.webhooks.retry_for_s as i64).saturating_mul(1_000_000)
        {
            record.status = DeliveryStatus::Failed;
        } else {
            let wait = backoff_ms(
                record.attempts,
                settings.webhooks.backoff_initial_ms,
                settings.webhooks.backoff_max_ms,
                rand::random::<f64>(),
            );
            record.next_attempt_us = now_us + (wait as i64) * 1000;
        }
        let mut writes = vec![put(key.clone(), encode(&record))];
        let mut trim = None;
        if record.status != DeliveryStatus::Pending {
            writes.push(put(
                progress_key(endpoint.id),
                event.cursor.to_be_bytes().to_vec(),
            ));
            if let Some(old) = event
                .cursor
                .checked_sub(settings.webhooks.deliveries_max as u64)
            {
                // Records of events this far behind go (cursors are global, so this keeps
                // at most `deliveries_max` records per endpoint, plus those of the last
                // `TRIM_EVERY_CURSORS` cursors until the next trim).
                if trimmed_to.is_none_or(|to| old >= to + TRIM_EVERY_CURSORS) {
                    writes.push(Write::DeleteRange {
                        family: Family::Control,
                        from: delivery_prefix(endpoint.id),
                        to: delivery_key(endpoint.id, old),
                    });
                    trim = Some(old);
                }
            }
        }
        // Synced: a 2xx is remembered before the worker moves on, so it is never re-sent.
        while let Err(error) = storage.write(writes.clone(), true) {
            tracing::error!(message = "Cannot record a webhook delivery; retrying.", %error);
            if !sleep_until(orderd_engine::clock::now_us() + 1_000_000, stop) {
                return false;
            }
        }
        if trim.is_some() {
            *trimmed_to = trim;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_addresses_are_recognised() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "::",
            "fc00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_private(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["93.184.216.34", "8.8.8.8", "2606:4700::1111"] {
            assert!(!is_private(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn urls_are_checked_without_resolving_literals() {
        for url in [
            "file:///etc/passwd",
            "ftp://93.184.216.34/",
            "http://127.0.0.1:9/",
            "http://10.0.0.1/",
            "http://169.254.169.254/latest",
            "http://[::1]:8080/",
            "http://user:pw@93.184.216.34/",
            "not a url",
        ] {
            assert!(check_url(url, false).is_err(), "{url}");
        }
        assert!(check_url("http://93.184.216.34/hook", false).is_ok());
        assert!(check_url("http://127.0.0.1:9/", true).is_ok());
        assert!(check_url("file:///etc/passwd", true).is_err());
    }

    #[test]
    fn signatures_are_hmac_sha256_of_t_dot_body() {
        // RFC 4231-independent check: recompute with the same primitives.
        let sig = signature("whsec_x", 1700000000, b"{}");
        let mut mac = Hmac::<Sha256>::new_from_slice(b"whsec_x").unwrap();
        mac.update(b"1700000000.{}");
        let expected = hex::encode(mac.finalize().into_bytes());
        assert_eq!(sig, format!("t=1700000000,v1={expected}"));
    }

    #[test]
    fn backoff_doubles_up_to_the_bound_with_jitter() {
        assert_eq!(backoff_ms(1, 100, 10_000, 1.0), 100);
        assert_eq!(backoff_ms(1, 100, 10_000, 0.0), 50);
        assert_eq!(backoff_ms(3, 100, 10_000, 1.0), 400);
        assert_eq!(backoff_ms(30, 100, 10_000, 1.0), 10_000);
        assert_eq!(backoff_ms(30, 100, 10_000, 0.0), 5_000);
    }
}
