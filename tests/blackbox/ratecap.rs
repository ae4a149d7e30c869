//! `--limit-rate`: the sum of a run's downloads stays under the cap. A loose
//! check (the bench measures the rate in 5-second windows, scripts/bench
//! row h): a closure of about 1 MB at a 256 KiB/s cap takes at least its
//! bytes ÷ the cap, less the bucket's small burst; uncapped it takes a
//! fraction of that over loopback.

use std::time::Instant;

use crate::support::deploy::Deploy;

#[test]
fn limit_rate_holds_a_run_to_the_cap() {
    let d = Deploy::new("zstd", &[("0.1.175", "system-v1")], "{}");
    let t = Instant::now();
    let r = d.apply("=0.1.175", &["--limit-rate", "256k", "--jobs", "4"]);
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(r.code, 0, "{r:?}");
    let bytes: u64 = d.hub.requests().iter().filter_map(|q| q.bytes).sum();
    assert!(
        bytes > 600_000,
        "the closure is too small to time: {bytes} B"
    );
    let rate = 256.0 * 1024.0;
    // The burst: a tenth of a second's worth (rate.rs).
    let floor = (bytes as f64 - rate / 10.0) / rate;
    eprintln!("{bytes} B in {secs:.2} s at --limit-rate 256k (floor {floor:.2} s)");
    assert!(
        secs >= floor * 0.95,
        "{bytes} B arrived in {secs:.2} s: faster than 256 KiB/s allows ({floor:.2} s)"
    );
    assert!(
        secs < floor * 3.0 + 5.0,
        "far slower than the cap: {secs:.2} s"
    );
    // A rate that is not one is refused, naming the option.
    let r = d.apply("=0.1.175", &["--limit-rate", "fast"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("--limit-rate"), "{}", r.stderr);
}
