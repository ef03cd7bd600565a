//! The web panel in a real browser: `web/tests/panel.test.mjs` drives Debian's Chromium with
//! playwright-core against a real devnet. Settlement rounds are slowed to 25 s so the test can
//! try a clear before its run settles; live updates then bring READY.
//! Needs /usr/bin/chromium and `npm ci --prefix web` (.ci/run installs both; CI requires them);
//! its chat step needs the local LLM (`common::local_model`; required in CI too).
//! The devnet's case has no memory (its section says so); the memory continuity lines are
//! checked on a view haca-review builds from receipts with memory boxes (`memory_fixture`).

use crate::common::{self, Devnet};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Chromium and playwright-core, or `None` (a skip) outside CI.
fn browser_ready() -> Option<PathBuf> {
    let chromium =
        PathBuf::from(std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()));
    let playwright = repo().join("web/node_modules/playwright-core");
    if chromium.exists() && playwright.exists() {
        return Some(chromium);
    }
    if std::env::var_os("CI").is_some() {
        panic!(
            "CI must have {} and {} (.ci/run installs them)",
            chromium.display(),
            playwright.display()
        );
    }
    eprintln!(
        "skipped: no Chromium at {} or no web/node_modules (run npm ci --prefix web)",
        chromium.display()
    );
    None
}

/// The memory view of two chat runs as `GET /v1/cases/{id}` serves it, built by haca-review
/// from receipts: row `m-shared` steered both runs and is over the 30 days `memory.fresh`
/// allows, `m-stale` was flagged stale when used, `m-fresh` is fresh, and a row whose id is
/// markup belongs to someone other than the payer (the panel must show it as text).
fn memory_fixture() -> String {
    use haca_core::receipt::{
        BoxStatus, EvidenceBox, MemoryEvidence, MemoryRow, PaymentEvidence, Receipt,
    };
    const DAY_MS: u64 = 86_400_000;
    let owner = "0x1111111111111111111111111111111111111111";
    let row = |id: &str, owner: &str, validated_day: u64, stale: bool| MemoryRow {
        id: id.into(),
        owner: owner.into(),
        created_at: 0,
        last_validated_at: validated_day * DAY_MS,
        score: 0.8125,
        sealed_sha256: Some(haca_core::hash::sha256(id.as_bytes())),
        stale,
    };
    let run = |seed: u64, day: u64, rows: Vec<MemoryRow>| -> Receipt {
        let key = haca_core::keys::NodeKey::from_seed([9; 32]);
        let at = day * DAY_MS;
        let blob = haca_core::BlobId(haca_core::hash::sha256(b"gemma"));
        let mut r = haca_core::testing::vanilla_receipt(&key, blob, at, seed);
        r.boxes.memory = EvidenceBox::with(
            MemoryEvidence {
                rows,
                owner: Some(owner.into()),
                embedder: Some("all-MiniLM-L6-v2".into()),
                max_age_s: Some(30 * 86_400),
                stale_policy: Some("surface".into()),
            },
            BoxStatus::Claimed,
            at,
        );
        r.boxes.payment = EvidenceBox::with(
            PaymentEvidence {
                scheme: "apikey".into(),
                network: "haca:devnet".into(),
                asset: "credit".into(),
                amount: "1".into(),
                payer: owner.into(),
                nonce: format!("n{seed}"),
                resource: "/v1/chat/completions".into(),
                request_hash: haca_core::hash::sha256(b"req"),
                model: None,
                mode: None,
                max_tokens: None,
                authorization: None,
                verified_at: at,
                settlement: None,
                upto: None,
            },
            BoxStatus::Claimed,
            at,
        );
        r
    };
    let first = run(
        1,
        50,
        vec![
            row("m-shared", owner, 45, false),
            row("m-stale", owner, 5, true),
        ],
    );
    let second = run(
        2,
        99,
        vec![
            row("m-shared", owner, 45, false),
            row("m-fresh", owner, 98, false),
            row(
                "<img src=x onerror=\"window.__pwned=1\">",
                "0x2222222222222222222222222222222222222222",
                98,
                false,
            ),
        ],
    );
    let view = haca_review::continuity::memory_view(&[&first, &second], 30 * 86_400, 100 * DAY_MS);
    serde_json::to_string(&view).unwrap()
}

#[test]
fn the_panel_refuses_a_clear_before_settlement_and_clears_after() {
    let Some(chromium) = browser_ready() else {
        return;
    };
    // The chat step runs with the local LLM (required in CI), and is skipped without it.
    let llm = common::local_model("panel_browser (its chat step)")
        .map(|p| p.to_str().expect("a UTF-8 model path").to_owned());
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec!["--round-interval-ms", "25000", "--no-enclave"];
    if let Some(m) = &llm {
        args.extend(["--llm-model", m.as_str()]);
    }
    let node = Devnet::start(dir.path(), &args);
    let reviewer = common::last_line(&node.haca_ok(&[
        "token",
        "create",
        "--role",
        "reviewer",
        "--label",
        "browser test",
    ]));
    let viewer = common::last_line(&node.haca_ok(&["token", "create", "--role", "viewer"]));
    assert!(reviewer.starts_with("rt_") && viewer.starts_with("rt_"));

    let http = reqwest::blocking::Client::new();
    common::wait_ready(&http, &node.url);
    let run: Value = http
        .post(format!("{}/v1/infer", node.url))
        .json(&json!({"model": "example/mnist-mlp", "input": common::mlp_input(7)}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let run_id = run["run_id"].as_str().expect("a run id").to_owned();
    let case: Value = http
        .post(format!("{}/v1/cases", node.url))
        .bearer_auth(&reviewer)
        .json(&json!({"runs": [run_id]}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(case["state"], "PROVISIONAL", "{case}");
    let case_id = case["id"].as_str().unwrap();

    let shots = repo().join("web/screenshots");
    let status = Command::new("node")
        .arg(repo().join("web/tests/panel.test.mjs"))
        .current_dir(repo().join("web"))
        .env("HACA_URL", &node.url)
        .env("REVIEWER_TOKEN", &reviewer)
        .env("VIEWER_TOKEN", &viewer)
        .env("CASE_ID", case_id)
        .env("OUT", &shots)
        .env("CHROMIUM", &chromium)
        .env("CHAT", if llm.is_some() { "1" } else { "0" })
        .env("MEMORY_VIEW", memory_fixture())
        .status()
        .expect("run node");
    assert!(
        status.success(),
        "the browser test failed (screenshots in {})",
        shots.display()
    );
    for name in ["02-queue", "03-clear-refused", "05-cleared"] {
        assert!(
            shots.join(format!("{name}.png")).exists(),
            "{name}.png saved"
        );
    }
}
