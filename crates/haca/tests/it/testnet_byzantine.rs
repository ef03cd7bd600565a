//! Byzantine validators on a network of four real validator processes (`haca testnet up
//! --fault I=KIND`): one that proposes blocks settling a forged record, and one that streams
//! two different blocks for one round, are outvoted by the honest three; the chain keeps
//! going and every validator commits the same blocks.

use crate::common::testnet::{records, run_ids, Testnet};
use haca_core::settlement::SettlementMode;
use haca_core::NodeKey;
use serde_json::Value;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(40);
const HONEST: [usize; 3] = [1, 2, 3];
const ALL: [usize; 4] = [0, 1, 2, 3];

/// The lowest height among the validators (all up).
fn low(net: &Testnet) -> u64 {
    net.heights().iter().map(|h| h.unwrap()).min().unwrap()
}

/// The 64-hex-digit value after each occurrence of `key` on log lines containing `marker`.
fn logged_hex(log: &str, marker: &str, key: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains(marker))
        .filter_map(|l| {
            let rest = &l[l.find(key)? + key.len()..];
            let hex: String = rest.chars().take_while(|c| c.is_ascii_hexdigit()).collect();
            (hex.len() == 64).then_some(hex)
        })
        .collect()
}

/// The number after `key` on log lines containing `marker`.
fn logged_num(log: &str, marker: &str, key: &str) -> Vec<u64> {
    log.lines()
        .filter(|l| l.contains(marker))
        .filter_map(|l| {
            let rest = &l[l.find(key)? + key.len()..];
            let n: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
            n.parse().ok()
        })
        .collect()
}

#[test]
fn a_validator_settling_a_forged_record_is_outvoted() {
    let gw = NodeKey::generate();
    let net = Testnet::up(4, &gw, &["--fault", "0=settle-forged"]);
    assert_eq!(net.config(0)["fault"], "settle_forged");
    for i in HONEST {
        assert!(
            net.config(i).get("fault").is_none(),
            "validator {i} is honest"
        );
    }
    net.wait_height(&ALL, 1, LIMIT);
    assert!(
        net.log(0).contains("MISBEHAVES ON PURPOSE"),
        "the faulty validator says so at start"
    );
    let start = low(&net);

    // Genuine records settle; the forged one is rejected with its reason, everywhere.
    let genuine = records(&gw, 0, 20, SettlementMode::Private);
    net.submit(1, &genuine);
    let mut forged = records(&gw, 1000, 1, SettlementMode::Private).remove(0);
    forged.signature = hex::encode([7u8; 64]);
    net.submit(2, std::slice::from_ref(&forged));
    let decided = net.wait_decided(3, &run_ids(&genuine), LIMIT);
    assert!(
        decided.iter().all(|s| s["status"] == "settled"),
        "{decided:?}"
    );
    for i in ALL {
        let d = net.wait_decided(i, &[forged.run_id.to_string()], LIMIT);
        assert_eq!(d[0]["status"], "rejected", "validator {i}: {}", d[0]);
        assert!(
            d[0]["reason"].as_str().unwrap().contains("signature"),
            "validator {i}: {}",
            d[0]
        );
    }

    // The chain keeps going past validator 0's turns to propose (one height in four).
    net.wait_height(&ALL, start + 8, LIMIT);
    net.assert_agree(&ALL);

    // Validator 0 did propose forged blocks; every honest validator refused them, and none
    // of its forged runs was ever settled.
    let faulty = net.log(0);
    let forgeries = logged_hex(&faulty, "fault settle-forged", "settles forged run ");
    assert!(
        !forgeries.is_empty(),
        "validator 0 never proposed:\n{faulty}"
    );
    for i in HONEST {
        let log = net.log(i);
        assert!(
            log.lines().any(|l| l.contains("proposed block refused")
                && l.contains("but its evidence fails")
                && l.contains("signature")),
            "validator {i} never refused a forged block:\n{log}"
        );
    }
    for run in &forgeries {
        for i in ALL {
            let s: Value = net.settlement(i, run);
            assert_eq!(
                s["status"], "pending",
                "forged run {run} on validator {i}: {s}"
            );
        }
    }
}

#[test]
fn an_equivocating_proposer_is_outvoted() {
    let gw = NodeKey::generate();
    let net = Testnet::up(4, &gw, &["--fault", "0=equivocate"]);
    assert_eq!(net.config(0)["fault"], "equivocate");
    net.wait_height(&ALL, 1, LIMIT);
    let start = low(&net);

    // Records submitted to the equivocator and to an honest validator settle.
    let a = records(&gw, 0, 30, SettlementMode::Private);
    let b = records(&gw, 100, 30, SettlementMode::Batch);
    net.submit(0, &a);
    net.submit(2, &b);
    for i in ALL {
        let decided = net.wait_decided(i, &run_ids(&[a.clone(), b.clone()].concat()), LIMIT);
        assert!(
            decided.iter().all(|s| s["status"] == "settled"),
            "validator {i}: {decided:?}"
        );
    }

    // The chain keeps going past validator 0's turns, and all four agree on every height.
    net.wait_height(&ALL, start + 8, LIMIT);
    let more = records(&gw, 200, 10, SettlementMode::Private);
    net.submit(3, &more);
    net.wait_decided(1, &run_ids(&more), LIMIT);
    net.assert_agree(&ALL);

    // Validator 0 streamed two different blocks for its rounds; the second (which no signed
    // consensus proposal names) never committed anywhere, and the honest validators saw
    // the equivocation.
    let faulty = net.log(0);
    let marker = "fault equivocate: streaming two different blocks";
    let heights = logged_num(&faulty, marker, "height=");
    let seconds = logged_hex(&faulty, marker, "other=");
    assert!(!heights.is_empty(), "validator 0 never proposed:\n{faulty}");
    assert_eq!(heights.len(), seconds.len(), "{faulty}");
    let chains: Vec<_> = ALL.iter().map(|&i| net.blocks(i)).collect();
    for (h, other) in heights.iter().zip(&seconds) {
        for (i, chain) in chains.iter().enumerate() {
            assert_ne!(
                chain.get(h),
                Some(other),
                "validator {i} committed the equivocator's second block at height {h}"
            );
        }
    }
    for i in HONEST {
        let log = net.log(i);
        assert!(
            log.contains("the proposer streamed two different blocks for one round"),
            "validator {i} never saw the equivocation:\n{log}"
        );
    }
}
