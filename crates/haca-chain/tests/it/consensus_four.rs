//! Four validators on loopback, talking through Malachite's libp2p networking: every one of
//! them commits the same blocks, each with a certificate of at least three signatures.

use crate::support::consensus_host;

use std::collections::BTreeMap;
use std::time::Duration;

use consensus_host::*;
use haca_chain::consensus;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_validators_commit_the_same_blocks() {
    init_tracing();
    let keys = keys(4);
    let set = set_of(&keys);
    let addrs: Vec<_> = (0..4).map(|_| free_addr()).collect();
    let homes: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();

    let mut engines = Vec::new();
    let mut receivers = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let peers = addrs
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, a)| *a)
            .collect();
        let (host, rx) = HeaderHost::salted("haca-test", set.clone(), BTreeMap::new(), i as u64);
        let cfg = config(homes[i].path(), key, &set, addrs[i], peers);
        engines.push(consensus::start(cfg, host).await.unwrap());
        receivers.push(rx);
    }

    let started = std::time::Instant::now();
    let mut ids = Vec::new();
    let mut salts = std::collections::BTreeSet::new();
    for (i, rx) in receivers.iter_mut().enumerate() {
        let mut mine = Vec::new();
        for height in 1..=3u64 {
            let c = tokio::time::timeout(Duration::from_secs(60), rx.recv())
                .await
                .unwrap_or_else(|_| panic!("validator {i} decides height {height} within 60 s"))
                .unwrap();
            assert_eq!(c.header.height, height);
            assert!(c.certificate.signatures.len() >= 3);
            c.certificate.verify(&c.header, &set).unwrap();
            eprintln!(
                "validator {i} committed height {height} (round {}) at {:?}",
                c.certificate.round,
                started.elapsed()
            );
            salts.insert(c.header.time_ms % 1000);
            mine.push(c.header.id());
        }
        ids.push(mine);
    }
    for other in &ids[1..] {
        assert_eq!(other, &ids[0], "all validators commit the same blocks");
    }
    // Different validators proposed the blocks (each mixes its own salt into its headers),
    // so blocks reached the others through the proposal-part streams.
    assert!(salts.len() >= 2, "proposers: {salts:?}");
    for e in engines {
        e.stop().await;
    }
}
