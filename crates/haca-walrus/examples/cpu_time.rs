//! Walrus blob id throughput by CPU time: bytes in per CPU-second of this (single-threaded)
//! process, the median of 3 runs per size, at mainnet's 1,000 shards. CPU seconds, unlike
//! criterion's wall clock, do not count the time other processes hold the core, so the figure
//! holds on a shared machine. Same input as the criterion bench: byte i = (i*31 + 7) mod 251.
//!
//! cargo run --release -p haca-walrus --example cpu_time -- 8 64 256   (sizes in MiB)

use haca_walrus::{blob_id, MAINNET_SHARDS};

/// CPU seconds this process has spent (user + system), from /proc (Linux).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .expect("a stat line")
        .1
        .split_whitespace()
        .collect();
    let ticks = |i: usize| fields[i].parse::<f64>().expect("a tick count");
    // The kernel reports in USER_HZ, 100 on every Linux this runs on.
    (ticks(11) + ticks(12)) / 100.0
}

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("a size in MiB"))
        .collect();
    let sizes = if sizes.is_empty() {
        vec![8, 64, 256]
    } else {
        sizes
    };
    for mib in sizes {
        let data: Vec<u8> = (0..mib << 20).map(|i| ((i * 31 + 7) % 251) as u8).collect();
        let mut runs: Vec<(f64, f64)> = (0..3)
            .map(|_| {
                let (cpu, wall) = (cpu_seconds(), std::time::Instant::now());
                blob_id(&data, MAINNET_SHARDS).expect("an id");
                (cpu_seconds() - cpu, wall.elapsed().as_secs_f64())
            })
            .collect();
        runs.sort_by(|a, b| a.0.total_cmp(&b.0));
        let (cpu, wall) = runs[1];
        let mb = data.len() as f64 / 1e6;
        println!(
            "{mib} MiB: {cpu:.2} CPU-s, {:.0} MB/s per CPU-second (wall {wall:.2} s, {:.0} MB/s)",
            mb / cpu,
            mb / wall
        );
    }
}
