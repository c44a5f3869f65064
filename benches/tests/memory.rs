//! Memory per layer instance (issue #18): the bytes every steadfast layer and both HTTP presets
//! hold when built, after a warm-up of 10,000 calls with the lab's `tail` latencies on a paused
//! clock, and per key for the keyed layers, against their targets (see
//! `steadfast_benches::memory` for how they are counted, and `docs/memory.md` for the table).
//!
//! Byte counts do not depend on CPU speed: the clock is paused, the latencies seeded, every call
//! sequential on one thread. Run it with `cargo test -p steadfast-benches --features memory
//! --test memory -- --nocapture` to see the table.

use steadfast_benches::memory::{self, Meter};

fn measure(f: &mut dyn FnMut()) -> i64 {
    allocation_counter::measure(f).bytes_current
}

#[test]
fn the_counter_is_installed_and_counts_what_is_held() {
    let mut kept = None;
    let held = measure(&mut || kept = Some(std::hint::black_box(vec![0u8; 1000])));
    assert_eq!(held, 1000);
    drop(kept);
    assert_eq!(
        measure(&mut || drop(std::hint::black_box(vec![0u8; 1000]))),
        0
    );
}

#[test]
fn every_layer_and_preset_meets_its_memory_targets() {
    let meter = Meter::new(measure).expect("tokio runtime");
    // The control: a bare peer holds nothing, and the runtime grows nothing over a warm-up.
    let bare = meter.footprint(memory::peer, |i| i);
    assert_eq!((bare.built, bare.warm, bare.failed), (0, 0, 0), "{bare:?}");

    let rows = memory::steadfast_rows(&meter);
    println!("{}", memory::table(&rows));
    let misses: Vec<String> = rows.iter().flat_map(|r| r.misses()).collect();
    assert!(misses.is_empty(), "{misses:#?}");

    // Every row is there: each layer of steadfast-layers, the keyed ones per key, both presets.
    assert_eq!(rows.len(), 23);
    assert_eq!(rows.iter().filter(|r| r.keyed.is_some()).count(), 3);
    // The hedge histogram pays for what it sees: no counters before the first sample, then 6 KiB
    // per power of two its samples land in (here at least four: 8-16 ms and 16-32 ms for the fast
    // mode, then the slow mode's or the hedges' losers').
    let hedge = &rows
        .iter()
        .find(|r| r.name.starts_with("HedgeLayer (learned"))
        .expect("the learned hedge row")
        .footprint;
    assert!(hedge.warm - hedge.built >= 4 * 6 * 1024, "{hedge:?}");
}

/// The scale check, small and on the paused clock: every route's stack holds what one stack does
/// in the table, whatever the number of routes.
#[test]
fn the_scale_check_holds_per_route_what_one_stack_does() {
    let s = memory::scale(measure, memory::Clock::Paused, 50, 300).expect("tokio runtime");
    println!("{s}");
    assert_eq!(s.failed, 0);
    assert!(s.per_route_built() <= memory::AT_REST as i64, "{s:?}");
    assert!(s.per_route_warm() <= memory::HEDGE_WARM as i64, "{s:?}");
    // Each route learned its own delay from its own samples: its histogram holds counters.
    assert!(
        s.per_route_warm() - s.per_route_built() >= 2 * 6 * 1024,
        "{s:?}"
    );
}
