//! Crash safety: SIGKILL under load, restart on the same data directory, and prove every
//! acknowledged order survived, unknown outcomes resolve by retry, and stock is conserved.

use crate::support::{classify, random_order, serial, unique, Attempt, Ledger, Outcome, Server};
use rand::seq::SliceRandom;
use rand::Rng;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

const CYCLES: usize = 10;
const CLIENTS: usize = 16;
// Enough that orders keep confirming through every cycle (a sold-out run tests little).
const INITIAL: i64 = 1_000_000;

#[test]
fn sigkill_under_load_loses_nothing_acknowledged() {
    let _serial = serial();
    let started = Instant::now();
    let mut server = Server::start(4);
    let skus: Vec<String> = (0..6).map(|i| format!("CR-{i}")).collect();
    let setup = server.client();
    for sku in &skus {
        setup.adjust_stock(sku, INITIAL);
    }
    let customers: Vec<String> = (0..4).map(|_| setup.create_customer()).collect();

    let mut ledger = Ledger::default();
    let mut unknown_total = 0;
    let mut rng = rand::thread_rng();
    for cycle in 0..CYCLES {
        let client = server.client();
        let stop = AtomicBool::new(false);
        let delay = Duration::from_millis(rng.gen_range(100..=600));

        let attempts: Vec<Attempt> = thread::scope(|s| {
            let handles: Vec<_> = (0..CLIENTS)
                .map(|t| {
                    let (client, stop, skus) = (&client, &stop, &skus);
                    let customer = &customers[t % customers.len()];
                    s.spawn(move || {
                        let mut rng = rand::thread_rng();
                        let mut mine = Vec::new();
                        while !stop.load(Ordering::Relaxed) {
                            let body = random_order(&mut rng, customer, skus, 1..=3, 1..=2);
                            let key = unique("crash");
                            let res = client.send("POST", "/v1/orders", Some(&body), Some(&key));
                            let gone = res.is_err();
                            let outcome = classify(res);
                            let retry_later = matches!(outcome, Outcome::Unknown(_));
                            mine.push(Attempt {
                                key,
                                body,
                                outcome,
                                at: Instant::now(),
                            });
                            if gone {
                                break;
                            }
                            if retry_later {
                                thread::sleep(Duration::from_millis(20));
                            }
                        }
                        mine
                    })
                })
                .collect();
            thread::sleep(delay);
            server.kill_9();
            stop.store(true, Ordering::Relaxed);
            handles
                .into_iter()
                .flat_map(|h| h.join().expect("client thread"))
                .collect()
        });

        server.restart();
        let client = server.client();
        let unknown = attempts
            .iter()
            .filter(|a| matches!(a.outcome, Outcome::Unknown(_)))
            .count();
        unknown_total += unknown;
        let acked: Vec<String> = attempts
            .iter()
            .filter(|a| matches!(a.outcome, Outcome::Confirmed(_)))
            .map(|a| a.key.clone())
            .collect();

        // Acknowledged orders are all there after the crash, with identical lines.
        let confirmed = ledger.settle(&client, &attempts);
        ledger.verify_readable(&client, &confirmed);

        // Replaying an acknowledged key returns the same order: every key that only got its
        // answer on retry, plus a sample of keys acknowledged before this and earlier crashes.
        let mut replay: Vec<String> = confirmed
            .iter()
            .filter(|k| !acked.contains(k))
            .cloned()
            .collect();
        let all: Vec<&String> = ledger.by_key.keys().collect();
        replay.extend(all.choose_multiple(&mut rng, 40).map(|k| (*k).clone()));
        replay.sort();
        replay.dedup();
        ledger.replay(&client, &replay);

        ledger.check_conservation(&client, &skus, INITIAL);
        eprintln!(
            "crash cycle {cycle}: killed after {delay:?}, {} attempts, {} acked, {unknown} unknown, \
             {} confirmed orders in all ({:?} elapsed)",
            attempts.len(),
            acked.len(),
            ledger.orders.len(),
            started.elapsed()
        );
    }

    assert!(
        ledger.orders.len() >= 50,
        "the load must confirm orders to be meaningful (got {})",
        ledger.orders.len()
    );
    assert!(
        unknown_total > 0,
        "some requests must have been in flight at a kill"
    );
    // Final pass over everything, after one more clean restart.
    server.restart();
    let client = server.client();
    let keys: Vec<String> = ledger.by_key.keys().cloned().collect();
    ledger.verify_readable(&client, &keys);
    ledger.check_conservation(&client, &skus, INITIAL);
}
