//! EIP-1559 transactions: build, sign with a local key, encode as the EIP-2718 bytes
//! `eth_sendRawTransaction` takes. Pure: no I/O.

use alloy_consensus::{SignableTransaction, TxEip1559};
use alloy_eips::eip2718::Encodable2718;
use alloy_primitives::{Address, Bytes, TxKind, B256, U256};
use alloy_signer::SignerSync;
use alloy_signer_local::PrivateKeySigner;

/// What one transaction does and what it may pay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxRequest {
    pub chain_id: u64,
    pub nonce: u64,
    /// `None`: a contract deployment (`data` is the init code).
    pub to: Option<Address>,
    pub value: U256,
    pub data: Bytes,
    pub gas_limit: u64,
    pub max_fee_per_gas: u128,
    pub max_priority_fee_per_gas: u128,
}

/// A signed transaction: its hash and its raw EIP-2718 bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedTx {
    pub hash: B256,
    pub raw: Bytes,
}

/// Signs `req` as an EIP-1559 (type 2) transaction.
pub fn sign_eip1559(req: &TxRequest, key: &PrivateKeySigner) -> SignedTx {
    let tx = TxEip1559 {
        chain_id: req.chain_id,
        nonce: req.nonce,
        gas_limit: req.gas_limit,
        max_fee_per_gas: req.max_fee_per_gas,
        max_priority_fee_per_gas: req.max_priority_fee_per_gas,
        to: match req.to {
            Some(a) => TxKind::Call(a),
            None => TxKind::Create,
        },
        value: req.value,
        access_list: Default::default(),
        input: req.data.clone(),
    };
    let sig = key
        .sign_hash_sync(&tx.signature_hash())
        .expect("a local secp256k1 key signs any 32-byte digest");
    let signed = tx.into_signed(sig);
    SignedTx {
        hash: *signed.hash(),
        raw: Bytes::from(signed.encoded_2718()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_consensus::transaction::SignerRecoverable;
    use alloy_consensus::TxEnvelope;
    use alloy_eips::eip2718::Decodable2718;
    use alloy_primitives::keccak256;

    fn key() -> PrivateKeySigner {
        crate::parse_private_key(crate::anvil::DEV_KEYS[0]).unwrap()
    }

    fn req() -> TxRequest {
        TxRequest {
            chain_id: 31337,
            nonce: 0,
            to: Some(Address::repeat_byte(0x11)),
            value: U256::ZERO,
            data: Bytes::from_static(&[0xde, 0xad, 0xbe, 0xef]),
            gas_limit: 100_000,
            max_fee_per_gas: 2_000_000_000,
            max_priority_fee_per_gas: 1_000_000_000,
        }
    }

    #[test]
    fn a_signed_transaction_is_type_2_hashes_to_its_bytes_and_recovers_its_signer() {
        let s = sign_eip1559(&req(), &key());
        assert_eq!(s.raw[0], 0x02, "EIP-2718 type byte");
        assert_eq!(s.hash, keccak256(&s.raw));
        let decoded = TxEnvelope::decode_2718(&mut s.raw.as_ref()).unwrap();
        assert_eq!(decoded.recover_signer().unwrap(), key().address());
        // Any field changed changes the hash.
        let mut other = req();
        other.nonce = 1;
        assert_ne!(sign_eip1559(&other, &key()).hash, s.hash);
    }

    #[test]
    fn the_encoding_is_the_known_one() {
        // RLP of [chain_id, nonce, tip, max_fee, gas, to, value, data, access_list, y, r, s]
        // after 0x02: the fields up to the access list, checked by hand.
        let s = sign_eip1559(&req(), &key());
        let body = &s.raw[1..];
        assert_eq!(body[0], 0xf8, "a list longer than 55 bytes");
        let fields = hex::encode(&body[2..]);
        let want = format!(
            "{}{}{}{}{}94{}{}",
            "827a69",     // chain id 31337
            "80",         // nonce 0
            "843b9aca00", // max priority fee 1 gwei
            "8477359400", // max fee 2 gwei
            "830186a0",   // gas 100000
            "11".repeat(20),
            "8084deadbeefc0", // value 0, data, empty access list
        );
        assert!(fields.starts_with(&want), "{fields}");
        // Then y parity (0x80 or 0x01) and r, s (32 bytes each, 0xa0 + bytes unless short).
        assert_eq!(body.len() - 2, want.len() / 2 + 1 + 33 + 33);
    }

    #[test]
    fn deployments_land_where_anvil_puts_them() {
        // anvil's account 0, nonce 0: the devnet asset's address.
        assert_eq!(
            key().address().create(0),
            "0x5FbDB2315678afecb367f032d93F642f64180aa3"
                .parse::<Address>()
                .unwrap()
        );
        assert_eq!(
            key().address().create(1),
            "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512"
                .parse::<Address>()
                .unwrap()
        );
    }
}
