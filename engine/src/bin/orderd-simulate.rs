//! `make simulate`: runs the deterministic simulator (`orderd_engine::sim`) seed after seed
//! until stopped, or replays one seed exactly (`--seed N --steps M`); `--async` simulates
//! `async` durability (a crash loses what was not synced, never more).

use std::time::Instant;

use orderd_engine::sim::{run, SimConfig};

fn arg(args: &[String], name: &str) -> Option<u64> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name} takes a number, got {v}"))
        })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let steps = arg(&args, "--steps").unwrap_or(20_000);
    let seed = arg(&args, "--seed");
    let async_durability = args.iter().any(|a| a == "--async");
    let config = |seed: u64| SimConfig {
        async_durability,
        ..SimConfig::new(seed, steps)
    };
    let first = arg(&args, "--from").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    if let Some(seed) = seed {
        let started = Instant::now();
        match run(&config(seed)) {
            Ok(report) => {
                println!(
                    "seed {seed}: {steps} steps passed in {:.1} s: {report:?}",
                    started.elapsed().as_secs_f64()
                );
            }
            Err(failure) => {
                eprintln!("{failure}");
                std::process::exit(1);
            }
        }
        return;
    }
    println!("simulating from seed {first}, {steps} steps each; Ctrl-C stops");
    let started = Instant::now();
    let mut total_steps = 0u64;
    for n in 0.. {
        let seed = first.wrapping_add(n);
        if let Err(failure) = run(&config(seed)) {
            eprintln!("{failure}");
            std::process::exit(1);
        }
        total_steps += steps;
        if n % 10 == 9 {
            println!(
                "{} seeds, {total_steps} steps, {:.0} steps/s, no failure",
                n + 1,
                total_steps as f64 / started.elapsed().as_secs_f64()
            );
        }
    }
}
