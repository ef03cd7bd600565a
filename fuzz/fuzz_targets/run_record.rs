//! Settlement records, transactions and blocks as validators receive them (`POST
//! /v1/chain/records`, `POST /v1/chain/txs`, proposals): any bytes, no panic; what parses is
//! re-verified against a chain state.
#![no_main]

use haca_chain::{Block, ChainState, RunRecord, SignatureAndHashes};
use haca_core::settlement::{Genesis, SettlementParams, Validator, ValidatorSet};
use haca_core::NodeId;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let genesis = Genesis {
        chain_id: "fuzz".into(),
        genesis_time_ms: 0,
        validators: ValidatorSet::new(vec![Validator {
            public_key: NodeId([1; 32]),
            power: 1,
        }])
        .unwrap(),
        gateways: vec![NodeId([2; 32])],
        settlement: SettlementParams::default(),
    };
    let state = ChainState::genesis(&genesis);
    if let Ok(record) = RunRecord::from_json_slice(data) {
        let _ = state.propose(1, vec![record], vec![], &SignatureAndHashes);
    }
    if let Ok(tx) = serde_json::from_slice::<haca_chain::state::Tx>(data) {
        if state.check_tx(&tx).is_ok() {
            let _ = state.propose(1, vec![], vec![tx], &SignatureAndHashes);
        }
    }
    if let Ok(block) = Block::decode(data) {
        let _ = state.check(&block, &SignatureAndHashes);
    }
});
