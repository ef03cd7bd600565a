//! The committed contracts, deployed on anvil: EIP-3009 transfers as x402 signs them (replays,
//! expiry, wrong domains and short balances refused before sending), the devnet minter, and
//! the settlement registry's posters, idempotent posts and conflicts. Skipped, saying so, when
//! anvil is not installed (`.ci/run` installs it).

use alloy_primitives::{Address, Bytes, B256, U256};
use alloy_signer::SignerSync;
use alloy_sol_types::{eip712_domain, SolCall, SolStruct};
use haca_evm::anvil::{find_anvil, Anvil, DEV_KEYS};
use haca_evm::contracts::{IHacaToken, ISettlementRegistry};
use haca_evm::{deploy, parse_private_key, Rpc, SendError, Sender, TokenParams};
use std::sync::Arc;
use std::time::Duration;

alloy_sol_types::sol! {
    struct TransferWithAuthorization {
        address from;
        address to;
        uint256 value;
        uint256 validAfter;
        uint256 validBefore;
        bytes32 nonce;
    }
}

/// `CI` is set (and not `false` or `0`): what is skipped elsewhere is required.
fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false" && v != "0")
}

async fn anvil() -> Option<Anvil> {
    let Some(bin) = find_anvil() else {
        assert!(
            !in_ci(),
            "CI must have anvil (.ci/run installs it and sets HACA_ANVIL)"
        );
        eprintln!("SKIPPED: anvil is not installed (set HACA_ANVIL, or run .ci/run, which installs npm @foundry-rs/anvil)");
        return None;
    };
    Some(Anvil::start(&bin, None).await.expect("anvil starts"))
}

async fn sender(url: &str, key: usize) -> Sender {
    let rpc = Arc::new(Rpc::new(url, Duration::from_secs(5)));
    Sender::connect(rpc, parse_private_key(DEV_KEYS[key]).unwrap())
        .await
        .unwrap()
}

fn authorization(
    from: Address,
    to: Address,
    value: u64,
    valid_before: u64,
    nonce: u8,
) -> TransferWithAuthorization {
    TransferWithAuthorization {
        from,
        to,
        value: U256::from(value),
        validAfter: U256::ZERO,
        validBefore: U256::from(valid_before),
        nonce: B256::repeat_byte(nonce),
    }
}

fn signed_call(
    a: &TransferWithAuthorization,
    key: &alloy_signer_local::PrivateKeySigner,
    name: &str,
    token: Address,
) -> Bytes {
    let domain = eip712_domain! {
        name: name.to_owned(),
        version: "2",
        chain_id: 31337,
        verifying_contract: token,
    };
    let sig = key.sign_hash_sync(&a.eip712_signing_hash(&domain)).unwrap();
    haca_evm::contracts::transfer_with_authorization(
        (a.from, a.to, a.value),
        (a.validAfter, a.validBefore),
        a.nonce,
        &sig.as_bytes(),
    )
    .expect("65 bytes")
    .into()
}

fn far_future() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600
}

#[tokio::test]
async fn eip3009_transfers_settle_once_and_bad_authorizations_are_refused_before_sending() {
    let Some(anvil) = anvil().await else { return };
    let owner = sender(&anvil.url, 0).await;
    let d = deploy(&owner, &TokenParams::default()).await.unwrap();
    assert_eq!(d.chain_id, 31337);
    assert_eq!(
        d.token,
        "0x5FbDB2315678afecb367f032d93F642f64180aa3"
            .parse::<Address>()
            .unwrap(),
        "account 0's first contract is devnet's asset"
    );
    let token = d.token;
    let name = owner.view(token, &IHacaToken::nameCall {}).await.unwrap();
    assert_eq!(name, "USD Coin");
    // The domain payers sign in is the one the token checks.
    let sep = owner
        .view(token, &IHacaToken::DOMAIN_SEPARATORCall {})
        .await
        .unwrap();
    assert_eq!(
        sep,
        haca_evm::contracts::domain_separator("USD Coin", "2", 31337, token)
    );
    assert_eq!(
        owner
            .view(token, &IHacaToken::decimalsCall {})
            .await
            .unwrap(),
        6
    );

    let payer = parse_private_key(DEV_KEYS[2]).unwrap();
    let payee = Address::repeat_byte(0x77);
    let mint = IHacaToken::mintCall {
        to: payer.address(),
        amount: U256::from(5_000u64),
    };
    owner
        .send(Some(token), mint.abi_encode().into())
        .await
        .unwrap();

    // The facilitator (account 1) submits the payer's authorization.
    let facilitator = sender(&anvil.url, 1).await;
    let a = authorization(payer.address(), payee, 1_000, far_future(), 1);
    let call = signed_call(&a, &payer, "USD Coin", token);
    let c = facilitator.send(Some(token), call.clone()).await.unwrap();
    assert!(c.block_number > 0);
    let balance = |who| {
        let f = &facilitator;
        async move {
            f.view(token, &IHacaToken::balanceOfCall { owner: who })
                .await
                .unwrap()
        }
    };
    assert_eq!(balance(payee).await, U256::from(1_000u64));
    assert_eq!(balance(payer.address()).await, U256::from(4_000u64));
    let used = IHacaToken::authorizationStateCall {
        authorizer: payer.address(),
        nonce: a.nonce,
    };
    assert!(facilitator.view(token, &used).await.unwrap());

    let refused = |r: Result<_, SendError>| match r {
        Err(SendError::Refused(revert)) => revert,
        other => panic!("expected a refusal, got {other:?}"),
    };
    // The same authorization again: the chain refuses the replay.
    let r = refused(facilitator.send(Some(token), call).await);
    assert_eq!(
        r.code, "invalid_exact_evm_nonce_already_used",
        "{}",
        r.message
    );
    // Signed in another domain (USDC's name on Base is "USDC"): the recovered signer differs.
    let b = authorization(payer.address(), payee, 1_000, far_future(), 2);
    let r = refused(
        facilitator
            .send(Some(token), signed_call(&b, &payer, "USDC", token))
            .await,
    );
    assert_eq!(
        r.code, "invalid_exact_evm_payload_signature",
        "{}",
        r.message
    );
    // Expired.
    let e = authorization(payer.address(), payee, 1_000, 1_000, 3);
    let r = refused(
        facilitator
            .send(Some(token), signed_call(&e, &payer, "USD Coin", token))
            .await,
    );
    assert_eq!(
        r.code,
        "invalid_exact_evm_payload_authorization_valid_before"
    );
    // More than the balance.
    let big = authorization(payer.address(), payee, 1_000_000, far_future(), 4);
    let r = refused(
        facilitator
            .send(Some(token), signed_call(&big, &payer, "USD Coin", token))
            .await,
    );
    assert_eq!(r.code, "insufficient_funds", "{}", r.message);
    // Only the minter mints.
    let r = refused(
        facilitator
            .send(Some(token), mint.abi_encode().into())
            .await,
    );
    assert_eq!(r.code, "not_minter");
    // Nothing moved.
    assert_eq!(balance(payee).await, U256::from(1_000u64));
}

#[tokio::test]
async fn registered_posters_post_roots_once_and_anyone_reads_them() {
    let Some(anvil) = anvil().await else { return };
    let owner = sender(&anvil.url, 0).await;
    let d = deploy(&owner, &TokenParams::default()).await.unwrap();
    let reg = d.registry;
    let post = |h: u64, root: u8| ISettlementRegistry::postCall {
        height: h,
        round: h / 2,
        rfc6962Root: B256::repeat_byte(root),
        ozRoot: B256::repeat_byte(root ^ 0xff),
    };
    owner
        .send(Some(reg), post(10, 1).abi_encode().into())
        .await
        .unwrap();
    let at = owner
        .view(reg, &ISettlementRegistry::rootAtCall { height: 10 })
        .await
        .unwrap();
    assert_eq!(at.rfc6962Root, B256::repeat_byte(1));
    assert_eq!(at.ozRoot, B256::repeat_byte(0xfe));
    assert_eq!(at.round, 5);
    assert_eq!(at.poster, owner.address());
    // The same roots again: a no-op, not an error (posting is retried freely).
    owner
        .send(Some(reg), post(10, 1).abi_encode().into())
        .await
        .unwrap();
    // Other roots for a posted height: refused.
    match owner.send(Some(reg), post(10, 2).abi_encode().into()).await {
        Err(SendError::Refused(r)) => assert_eq!(r.code, "root_conflict", "{}", r.message),
        other => panic!("{other:?}"),
    }
    // A stranger may not post until the owner registers it.
    let other = sender(&anvil.url, 1).await;
    match other.send(Some(reg), post(12, 3).abi_encode().into()).await {
        Err(SendError::Refused(r)) => assert_eq!(r.code, "not_poster"),
        other => panic!("{other:?}"),
    }
    let allow = ISettlementRegistry::setPosterCall {
        poster: other.address(),
        allowed: true,
    };
    owner
        .send(Some(reg), allow.abi_encode().into())
        .await
        .unwrap();
    let batch = ISettlementRegistry::postBatchCall {
        heights: vec![12, 14],
        rounds: vec![6, 7],
        rfc6962Roots: vec![B256::repeat_byte(3), B256::repeat_byte(4)],
        ozRoots: vec![B256::repeat_byte(5), B256::repeat_byte(6)],
    };
    other
        .send(Some(reg), batch.abi_encode().into())
        .await
        .unwrap();
    let at = other
        .view(reg, &ISettlementRegistry::rootAtCall { height: 14 })
        .await
        .unwrap();
    assert_eq!(at.rfc6962Root, B256::repeat_byte(4));
    assert_eq!(
        other
            .view(reg, &ISettlementRegistry::latestHeightCall {})
            .await
            .unwrap(),
        14
    );
    // A height never posted reads as zeros.
    let none = other
        .view(reg, &ISettlementRegistry::rootAtCall { height: 11 })
        .await
        .unwrap();
    assert_eq!(none.rfc6962Root, B256::ZERO);
}

#[tokio::test]
async fn a_transaction_waits_for_its_confirmations() {
    let Some(anvil) = anvil().await else { return };
    let mut owner = sender(&anvil.url, 0).await;
    owner.confirmations = 3;
    let rpc = Rpc::new(&anvil.url, Duration::from_secs(5));
    let start_block = rpc.block_number().await.unwrap();
    // anvil mines the transaction at once, then no block comes until asked for.
    let miner = {
        let url = anvil.url.clone();
        tokio::spawn(async move {
            let rpc = Rpc::new(&url, Duration::from_secs(5));
            for _ in 0..2 {
                tokio::time::sleep(Duration::from_millis(300)).await;
                rpc.call_raw("evm_mine", serde_json::json!([]))
                    .await
                    .unwrap();
            }
        })
    };
    let t = std::time::Instant::now();
    let c = owner
        .send(None, haca_evm::contracts::registry_init_code())
        .await
        .unwrap();
    miner.await.unwrap();
    assert_eq!(c.block_number, start_block + 1);
    assert!(
        t.elapsed() >= Duration::from_millis(550),
        "confirmed before the two blocks on top were mined: {:?}",
        t.elapsed()
    );
    assert!(rpc.block_number().await.unwrap() >= c.block_number + 2);
    assert!(owner.still_on_chain(&c).await.unwrap());
}

/// The committed build is what the committed sources compile to: `contracts/build.mjs` (npm
/// solc 0.8.37, `npm ci --prefix contracts`, which `.ci/run` does) into a temporary directory,
/// compared file by file. Skipped, saying so, without node or the npm packages; required in CI.
#[test]
fn the_committed_contract_build_is_what_the_sources_compile_to() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../contracts");
    if !root.join("node_modules/solc").exists() {
        assert!(
            !in_ci(),
            "CI must have contracts/node_modules (.ci/run: npm ci --prefix contracts)"
        );
        eprintln!("SKIPPED: no contracts/node_modules (npm ci --prefix contracts)");
        return;
    }
    let out = std::env::temp_dir().join(format!("haca-contracts-{}", std::process::id()));
    let status = std::process::Command::new("node")
        .arg(root.join("build.mjs"))
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("node runs");
    assert!(status.success(), "contracts/build.mjs failed");
    for name in ["HacaToken.json", "SettlementRegistry.json"] {
        let built = std::fs::read_to_string(out.join(name)).unwrap();
        let committed = std::fs::read_to_string(root.join("build").join(name)).unwrap();
        assert!(
            built == committed,
            "contracts/build/{name} is not what contracts/src compiles to: run node contracts/build.mjs and commit the result"
        );
    }
    let _ = std::fs::remove_dir_all(&out);
}
