//! The deterministic simulator in `make test`: a fixed budget of seeds must pass, a seed
//! replays exactly, and with each fault of issue 14 put back the budget finds it.

use std::time::Instant;

use orderd_engine::sim::{run, SimConfig};
#[cfg(feature = "failpoints")]
use orderd_engine::sim::{set_regressions, Regression};

/// Seeds `make test` runs, and the steps of each (about 5 s in all in a release build).
const SEEDS: u64 = 64;
const STEPS: u64 = 20_000;

#[test]
fn a_budget_of_seeds_keeps_every_invariant() {
    let started = Instant::now();
    for seed in 1..=SEEDS {
        if let Err(failure) = run(&SimConfig::new(seed, STEPS)) {
            panic!("{failure}");
        }
    }
    println!(
        "{SEEDS} seeds × {STEPS} steps in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// `async` durability: a crash (a power loss) takes back at most what was acknowledged after
/// the writer's last sync — never anything acknowledged before it — and the budget sees it
/// happen; in `sync` nothing acknowledged is ever taken back.
#[test]
fn async_durability_loses_at_most_the_flush_window() {
    let mut lost = 0;
    let mut crashes = 0;
    for seed in 1..=SEEDS / 4 {
        let config = SimConfig {
            async_durability: true,
            ..SimConfig::new(seed, STEPS)
        };
        match run(&config) {
            Ok(report) => {
                lost += report.lost_in_window;
                crashes += report.crashes;
            }
            Err(failure) => panic!("async: {failure}"),
        }
        let report = run(&SimConfig::new(seed, STEPS)).expect("sync passes");
        assert_eq!(report.lost_in_window, 0, "sync lost acknowledged writes");
    }
    println!("async: {crashes} crashes took back {lost} acknowledgements, all in the window");
    assert!(
        crashes > 0 && lost > 0,
        "the budget never lost an unsynced acknowledgement: async is not exercised"
    );
}

#[test]
fn a_seed_replays_exactly() {
    let a = run(&SimConfig::new(7, 3_000)).expect("seed 7 passes");
    let b = run(&SimConfig::new(7, 3_000)).expect("seed 7 passes");
    assert_eq!(format!("{a:?}"), format!("{b:?}"));
}

/// The first seed of the budget that fails with `regressions` put back.
#[cfg(feature = "failpoints")]
fn finds(regressions: &[Regression]) -> Option<(u64, String)> {
    set_regressions(regressions);
    let found = (1..=SEEDS).find_map(|seed| {
        run(&SimConfig::new(seed, STEPS))
            .err()
            .map(|failure| (seed, failure.to_string()))
    });
    set_regressions(&[]);
    found
}

// The switches exist only in test builds (feature `failpoints`, on in `make test`).
macro_rules! sees {
    ($name:ident, $($regression:expr),+) => {
        #[cfg(feature = "failpoints")]
        #[test]
        fn $name() {
            let regressions = [$($regression),+];
            match finds(&regressions) {
                Some((seed, failure)) => {
                    println!("{regressions:?} found by seed {seed}: {failure}")
                }
                None => panic!(
                    "{regressions:?} put back, yet {SEEDS} seeds × {STEPS} steps passed: the simulator cannot see it"
                ),
            }
        }
    };
}

// Fault 1: a failed write keeps the shard going.
sees!(
    sees_a_failed_write_that_keeps_the_shard,
    Regression::WriteFailureKeepsShard
);
// Fault 2: `Reserve` before the intent is durable (an orphan hold), and the whole of the old
// behaviour (with ids reused and any hold standing in for a new order's: an oversell).
sees!(
    sees_reserve_before_the_intent_is_durable,
    Regression::ReserveBeforeDurable
);
sees!(
    sees_the_oversell_of_reused_ids_and_stale_holds,
    Regression::ReserveBeforeDurable,
    Regression::IdsReused,
    Regression::HoldNotTiedToLines
);
// Fault 3: no deadline for a placement whose part does not answer.
sees!(
    sees_placements_without_a_deadline,
    Regression::NoDeadlineAbort
);
// Fault 4: `HoldCheck` sent once.
sees!(sees_hold_checks_sent_once, Regression::HoldCheckOnce);
// Issue 19: a repeated `Restock` (a retry, or one sent again after a crash) restocks again.
sees!(sees_a_restock_applied_twice, Regression::RestockTwice);
