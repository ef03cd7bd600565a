//! One validator on loopback: heights decide back to back, certificates verify offline, and
//! a restart from the same home resumes at the next height.

use crate::support::consensus_host;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use consensus_host::*;
use haca_chain::consensus;

async fn next(rx: &mut tokio::sync::mpsc::UnboundedReceiver<Committed>) -> Committed {
    tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .expect("a height decides within 30 s")
        .expect("engine running")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_validator_decides_and_restarts() {
    init_tracing();
    let home = tempfile::tempdir().unwrap();
    let keys = keys(1);
    let set = set_of(&keys);
    let listen = free_addr();

    let (host, mut rx) = HeaderHost::new("haca-test", set.clone(), BTreeMap::new());
    let started = Instant::now();
    let engine = consensus::start(
        config(home.path(), &keys[0], &set, listen, vec![]),
        host.clone(),
    )
    .await
    .unwrap();

    let mut first_commit = None;
    let mut latencies = Vec::new();
    for height in 1..=20u64 {
        let c = next(&mut rx).await;
        first_commit.get_or_insert_with(|| started.elapsed());
        assert_eq!(c.header.height, height, "heights decide in order");
        assert_eq!(c.certificate.height, height);
        assert_eq!(c.certificate.signatures.len(), 1);
        c.certificate.verify(&c.header, &set).unwrap();
        latencies.push(
            c.since_propose
                .expect("the only validator proposes every block"),
        );
    }
    let t20 = Instant::now();
    let per_height = (started.elapsed() - first_commit.unwrap()) / 19;
    engine.stop().await;
    let stopped = t20.elapsed();

    latencies.sort();
    eprintln!(
        "single validator: first commit after {:?}; {per_height:?} per height; propose-to-commit min {:?} median {:?} max {:?}; stop took {stopped:?}",
        first_commit.unwrap(),
        latencies[0],
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1],
    );
    assert!(latencies[latencies.len() / 2] < Duration::from_millis(100));

    // Restart with the same home and a host that kept heights 1..=5 only.
    let kept: BTreeMap<_, _> = host
        .blocks
        .lock()
        .unwrap()
        .range(1..=5)
        .map(|(h, c)| (*h, c.clone()))
        .collect();
    assert_eq!(kept.len(), 5);
    let (host2, mut rx2) = HeaderHost::new("haca-test", set.clone(), kept);
    let engine = consensus::start(
        config(home.path(), &keys[0], &set, listen, vec![]),
        host2.clone(),
    )
    .await
    .unwrap();
    let c = next(&mut rx2).await;
    assert_eq!(
        c.header.height, 6,
        "restart resumes at committed height + 1"
    );
    c.certificate.verify(&c.header, &set).unwrap();
    assert_eq!(
        c.header.prev_block,
        host2.blocks.lock().unwrap()[&5].header.id()
    );
    let c = next(&mut rx2).await;
    assert_eq!(c.header.height, 7);
    engine.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_outside_the_set_runs_as_a_follower() {
    // A key outside the set starts (it follows without voting); with no validator running,
    // nothing decides.
    let home = tempfile::tempdir().unwrap();
    let ks = keys(2);
    let set = set_of(&ks[..1]);
    let (host, mut rx) = HeaderHost::new("haca-test", set.clone(), BTreeMap::new());
    let engine = consensus::start(config(home.path(), &ks[1], &set, free_addr(), vec![]), host)
        .await
        .expect("a follower starts");
    assert!(
        tokio::time::timeout(Duration::from_millis(500), rx.recv())
            .await
            .is_err(),
        "a follower alone decides nothing"
    );
    engine.stop().await;
}
