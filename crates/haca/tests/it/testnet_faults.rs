//! Fault tests on a network of four real validator processes on loopback (`haca testnet`):
//! one down still finalizes, two down halts without conflicting blocks, restarted validators
//! catch up, `kill -9` loses no committed round, and bad input is refused without harm.

use crate::common;

use crate::common::testnet::{records, run_ids, Testnet};
use haca_core::settlement::SettlementMode;
use haca_core::NodeKey;
use serde_json::Value;
use std::io::Write;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

fn settled(decided: &[Value]) -> usize {
    decided.iter().filter(|s| s["status"] == "settled").count()
}

#[test]
fn four_validators_tolerate_one_fault_halt_at_two_and_catch_up() {
    let gw = NodeKey::generate();
    let net = Testnet::up(4, &gw, &[]);
    net.wait_height(&[0, 1, 2, 3], 1, LIMIT);

    // All four: records given to one validator settle, and every validator knows it.
    let batch = records(&gw, 0, 50, SettlementMode::Private);
    net.submit(1, &batch);
    let decided = net.wait_decided(3, &run_ids(&batch), LIMIT);
    assert_eq!(settled(&decided), 50, "{decided:?}");

    // One stopped: rounds still finalize.
    net.stop(3);
    let h = net.heights()[0].unwrap();
    let batch = records(&gw, 100, 20, SettlementMode::Batch);
    net.submit(0, &batch);
    let decided = net.wait_decided(2, &run_ids(&batch), LIMIT);
    assert_eq!(settled(&decided), 20);
    net.wait_height(&[0, 1, 2], h + 2, LIMIT);

    // Two stopped: no new height commits (2 of 4 is not more than 2/3).
    net.stop(2);
    std::thread::sleep(Duration::from_secs(2)); // a height in flight may still land
    let before = net.heights();
    let stuck = records(&gw, 200, 5, SettlementMode::Private);
    net.submit(0, &stuck);
    std::thread::sleep(Duration::from_secs(5));
    let after = net.heights();
    assert_eq!(
        before, after,
        "a height committed with half the validators down"
    );
    assert_eq!(
        net.settlement(0, &stuck[0].run_id.to_string())["status"],
        "pending"
    );
    net.assert_agree(&[0, 1]);

    // Restarted: they catch up, the chain resumes, and the waiting records settle.
    net.restart();
    let top = after[0].unwrap();
    net.wait_height(&[0, 1, 2, 3], top + 2, LIMIT);
    let decided = net.wait_decided(3, &run_ids(&stuck), LIMIT);
    assert_eq!(settled(&decided), 5);
    net.assert_agree(&[0, 1, 2, 3]);
}

#[test]
fn kill_9_mid_round_loses_no_committed_round() {
    let gw = NodeKey::generate();
    let net = Testnet::up(4, &gw, &[]);
    net.wait_height(&[0, 1, 2, 3], 1, LIMIT);

    // Keep rounds busy, then kill validator 1 while records are in flight.
    let mut all = Vec::new();
    for k in 0..5 {
        let batch = records(&gw, k * 1000, 200, SettlementMode::Private);
        net.submit((k % 4) as usize, &batch);
        all.extend(batch);
    }
    std::thread::sleep(Duration::from_millis(300));
    net.kill9(1);
    let kept = {
        // What validator 1 had committed is in its store; read it back after the restart.
        let mut more = records(&gw, 9000, 200, SettlementMode::Private);
        net.submit(0, &more);
        all.append(&mut more);
        let decided = net.wait_decided(0, &run_ids(&all), LIMIT);
        assert_eq!(settled(&decided), all.len());
        net.blocks(0)
    };

    net.restart();
    let top = *kept.keys().last().unwrap();
    net.wait_height(&[1], top, LIMIT);
    let after = net.blocks(1);
    for (h, id) in &kept {
        assert_eq!(
            after.get(h),
            Some(id),
            "height {h} differs after kill -9 and restart"
        );
    }
    let decided = net.wait_decided(1, &run_ids(&all), LIMIT);
    assert_eq!(settled(&decided), all.len());
    net.assert_agree(&[0, 1, 2, 3]);
}

#[test]
fn bad_input_is_refused_and_the_network_keeps_going() {
    let gw = NodeKey::generate();
    let net = Testnet::up(4, &gw, &[]);
    net.wait_height(&[0, 1, 2, 3], 1, LIMIT);
    let url = &net.urls[0];
    let post = |path: &str, body: Vec<u8>| {
        let r = net
            .http
            .post(format!("{url}{path}"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .unwrap();
        (
            r.status().as_u16(),
            r.json::<Value>().unwrap_or(Value::Null),
        )
    };

    // Malformed records: refused with the field and the reason; nothing is queued.
    let (s, v) = post("/v1/chain/records", b"{\"run_id\": 5}".to_vec());
    assert_eq!(s, 400, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("run_id"),
        "{v}"
    );
    let good = records(&gw, 0, 3, SettlementMode::Private);
    let mut batch: Vec<Value> = good
        .iter()
        .map(|r| serde_json::to_value(r).unwrap())
        .collect();
    batch[1]["receipt_digest"] = Value::from("zz");
    let (s, v) = post("/v1/chain/records", serde_json::to_vec(&batch).unwrap());
    assert_eq!(s, 400, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("records[1]"),
        "{v}"
    );
    assert_eq!(
        net.settlement(0, &good[0].run_id.to_string())["status"],
        "pending"
    );
    // Oversized: 413.
    let (s, _) = post("/v1/chain/records", vec![b' '; 70 << 20]);
    assert_eq!(s, 413);

    // Forged and unregistered records are decided as rejected, with the reason; the genuine
    // record of a forged run id still settles.
    let mut forged = good[0].clone();
    forged.signature = hex::encode([7u8; 64]);
    net.submit(0, std::slice::from_ref(&forged));
    let stranger = NodeKey::generate();
    let unregistered = records(&stranger, 50, 1, SettlementMode::Private);
    net.submit(2, &unregistered);
    let d = net.wait_decided(3, &run_ids(&unregistered), LIMIT);
    assert_eq!(d[0]["status"], "rejected");
    assert!(
        d[0]["reason"].as_str().unwrap().contains("not registered"),
        "{}",
        d[0]
    );
    let d = net.wait_decided(1, &[forged.run_id.to_string()], LIMIT);
    assert_eq!(d[0]["status"], "rejected", "{}", d[0]);
    assert!(
        d[0]["reason"].as_str().unwrap().contains("signature"),
        "{}",
        d[0]
    );
    net.submit(0, &good);
    let d = net.wait_decided(2, &run_ids(&good[1..]), LIMIT);
    assert_eq!(settled(&d), 2, "{d:?}");
    // good[0] shares its run id with the forged record, so it reads "rejected" until the
    // genuine record's round commits.
    let t = std::time::Instant::now();
    while net.settlement(2, &good[0].run_id.to_string())["status"] != "settled" {
        assert!(
            t.elapsed() < LIMIT,
            "the genuine record of a forged run id did not settle"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // Replayed: a settled record submitted again is a no-op (to node 2, which has committed
    // its round; another node may still be a block behind).
    let again = net.submit(2, &good[..1]);
    assert_eq!(again["results"][0]["status"], "already_settled", "{again}");

    // Garbage on the consensus port and on the HTTP port: refused, nobody crashes.
    let cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(net.path("v0/config.json")).unwrap())
            .unwrap();
    let p2p = cfg["p2p_listen"].as_str().unwrap().to_owned();
    let http = url.trim_start_matches("http://").to_owned();
    for addr in [&p2p, &http] {
        for junk in [
            &b"\x00\x00\x00\xffgarbage"[..],
            &[0xffu8; 4096][..],
            b"GET / HTTP/1.1\r\n\r\n",
        ] {
            if let Ok(mut s) = std::net::TcpStream::connect(addr) {
                let _ = s.write_all(junk);
            }
        }
    }
    let h = net.heights()[0].unwrap();
    net.wait_height(&[0, 1, 2, 3], h + 2, LIMIT);
    net.assert_agree(&[0, 1, 2, 3]);
}

#[test]
fn a_devnet_gateway_settles_on_the_testnet_and_its_receipts_verify() {
    // The gateway is not in the genesis: it registers itself by governance.
    let net = Testnet::up(4, &NodeKey::generate(), &[]);
    let gw_dir = net.path("gw");
    let gw = common::Devnet::start(&gw_dir, &["--chain", net.dir()]);
    let out = gw.haca_ok(&[
        "infer",
        "example/mnist-mlp",
        "--input",
        gw_dir.join("example-input.json").to_str().unwrap(),
        "--json",
        "--settlement",
        "private",
    ]);
    let ans: Value = serde_json::from_slice(&out.stdout).unwrap();
    let run = ans["run_id"].as_str().unwrap();
    let out = gw.haca_ok(&[
        "receipt",
        run,
        "--wait",
        "settled",
        "--json",
        "--timeout",
        "60s",
    ]);
    let receipt = net.path("receipt.json");
    std::fs::write(&receipt, &out.stdout).unwrap();

    // Every validator has the run settled; the exported history names the gateway.
    let decided = net.wait_decided(2, &[run.to_owned()], LIMIT);
    assert_eq!(decided[0]["status"], "settled");
    let history = gw.haca_ok(&["chain", "validators", "--export", "--node", &net.urls[1]]);
    let history_file = net.path("validators.json");
    std::fs::write(&history_file, &history.stdout).unwrap();
    let h: Value = serde_json::from_slice(&history.stdout).unwrap();
    let node_id = ans["receipt"]["boxes"]["execution"]["evidence"]["signer"].clone();
    assert!(
        h["gateways"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["node"] == node_id),
        "{h}"
    );

    // Offline: the settlement holds against the testnet's validators, not against another
    // chain's.
    let out = gw.haca(&[
        "verify",
        receipt.to_str().unwrap(),
        "--validators",
        history_file.to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.lines().any(|l| l.contains("run.settled")
            && l.contains("holds")
            && l.contains("haca-testnet-")),
        "{text}"
    );
    let other = Testnet::up(1, &NodeKey::generate(), &[]);
    let out = gw.haca(&[
        "verify",
        receipt.to_str().unwrap(),
        "--validators",
        other.path("genesis.json").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
}

#[test]
fn validators_join_and_leave_by_governance() {
    let gw = NodeKey::generate();
    let net = Testnet::up(4, &gw, &[]);
    net.wait_height(&[0, 1, 2, 3], 1, LIMIT);

    // Without a quorum of approvals the change is refused at the door.
    let stranger = NodeKey::generate();
    let key_file = net.path("v0/validator.key");
    let out = std::process::Command::new(common::BIN)
        .args(["chain", "govern", "add-validator"])
        .arg(stranger.node_id().to_string())
        .arg("--key")
        .arg(&key_file)
        .args(["--node", &net.urls[0]])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("quorum") || err.contains("2/3"), "{err}");

    // A fifth validator joins: it starts as a follower, and after its AddValidator commits it
    // signs certificates.
    common::testnet::haca_ok(&["testnet", "add", "--dir", net.dir()]);
    let five: Value =
        serde_json::from_str(&std::fs::read_to_string(net.path("testnet.json")).unwrap()).unwrap();
    let newcomer = five["validators"][4]["validator_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let url4 = five["validators"][4]["http"].as_str().unwrap().to_owned();
    let batch = records(&gw, 0, 10, SettlementMode::Private);
    net.submit(0, &batch);
    let decided = net.wait_decided(0, &run_ids(&batch), LIMIT);
    assert_eq!(settled(&decided), 10);
    let history: Value = net
        .http
        .get(format!("{}/v1/chain/validators", net.urls[1]))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let sets = history["validator_sets"].as_array().unwrap();
    assert_eq!(sets.len(), 2, "{history}");
    let from = sets[1]["from_height"].as_u64().unwrap();
    assert_eq!(sets[1]["validators"].as_array().unwrap().len(), 5);
    // With one of the original four stopped, only the newcomer's vote makes more than 2/3 of
    // five: the chain goes on, and every certificate from then on carries its signature.
    let h = net.heights()[0].unwrap().max(from);
    net.stop(3);
    let first = net.heights()[0].unwrap() + 1;
    net.wait_height(&[0], first + 2, LIMIT);
    for height in first..=first + 2 {
        let b: Value = net
            .http
            .get(format!("{}/v1/chain/blocks/{height}", net.urls[2]))
            .send()
            .unwrap()
            .json()
            .unwrap();
        let sigs = b["certificate"]["signatures"].as_array().unwrap();
        assert!(
            sigs.len() >= 4,
            "height {height}: {} signatures",
            sigs.len()
        );
        assert!(
            sigs.iter().any(|s| s["validator"] == newcomer.as_str()),
            "height {height} was certified without the new validator: {sigs:?}"
        );
    }
    net.restart();
    let s: Value = net
        .http
        .get(format!("{url4}/v1/chain/status"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert!(
        s["height"].as_u64().unwrap() >= h,
        "the newcomer did not catch up: {s}"
    );

    // It leaves again; the chain goes on with four, and the history keeps all three sets.
    common::testnet::haca_ok(&["testnet", "remove", "--dir", net.dir(), "--validator", "4"]);
    let h = net.heights()[0].unwrap();
    net.wait_height(&[0, 1, 2, 3], h + 2, LIMIT);
    let history: Value = net
        .http
        .get(format!("{}/v1/chain/validators", net.urls[3]))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(history["validator_sets"].as_array().unwrap().len(), 3);
    net.assert_agree(&[0, 1, 2, 3]);
}
