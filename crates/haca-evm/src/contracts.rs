//! The contracts in `contracts/` (Solidity sources, compiled by `contracts/build.mjs` with
//! solc 0.8.37; the bytecode and ABI are committed in `contracts/build/`): their calls as
//! ABI-encoded bytes, their init code, and their revert errors in words.

use alloy_primitives::{Address, Bytes, B256};
use alloy_sol_types::{SolError, SolValue};

alloy_sol_types::sol! {
    /// `contracts/src/HacaToken.sol`: ERC-20 with EIP-3009 (what x402's `exact` scheme uses;
    /// USDC answers the same calls).
    interface IHacaToken {
        function name() external view returns (string);
        function decimals() external view returns (uint8);
        function DOMAIN_SEPARATOR() external view returns (bytes32);
        function balanceOf(address owner) external view returns (uint256);
        function authorizationState(address authorizer, bytes32 nonce) external view returns (bool);
        function transferWithAuthorization(
            address from,
            address to,
            uint256 value,
            uint256 validAfter,
            uint256 validBefore,
            bytes32 nonce,
            uint8 v,
            bytes32 r,
            bytes32 s
        ) external;
        function mint(address to, uint256 amount) external;
        function minter() external view returns (address);

        error NotMinter(address caller);
        error AuthorizationNotYetValid(uint256 validAfter, uint256 nowSeconds);
        error AuthorizationExpired(uint256 validBefore, uint256 nowSeconds);
        error AuthorizationAlreadyUsed(address authorizer, bytes32 nonce);
        error InvalidSignature(address expected, address recovered);
        error ERC20InsufficientBalance(address sender, uint256 balance, uint256 needed);
        error ECDSAInvalidSignature();
        error ECDSAInvalidSignatureLength(uint256 length);
        error ECDSAInvalidSignatureS(bytes32 s);
    }

    /// `contracts/src/SettlementRegistry.sol`: certified settlement round roots by haca
    /// block height.
    interface ISettlementRegistry {
        function owner() external view returns (address);
        function isPoster(address poster) external view returns (bool);
        function setPoster(address poster, bool allowed) external;
        function post(uint64 height, uint64 round, bytes32 rfc6962Root, bytes32 ozRoot) external returns (bool);
        function postBatch(uint64[] heights, uint64[] rounds, bytes32[] rfc6962Roots, bytes32[] ozRoots) external;
        function rootAt(uint64 height) external view returns (uint64 round, bytes32 rfc6962Root, bytes32 ozRoot, address poster, uint64 postedAtBlock);
        function latestHeight() external view returns (uint64);

        event RootPosted(uint64 indexed height, uint64 indexed round, bytes32 rfc6962Root, bytes32 ozRoot, address indexed poster);

        error NotOwner(address caller);
        error NotPoster(address caller);
        error ZeroRoot(uint64 height);
        error RootConflict(uint64 height, bytes32 postedRfc6962Root, bytes32 postedOzRoot);
        error LengthMismatch();
    }

    /// Solidity's `require(cond, "message")` and panics.
    interface ISolidity {
        error Error(string message);
        error Panic(uint256 code);
    }
}

/// `contracts/build/HacaToken.json`, as `build.mjs` wrote it.
pub const TOKEN_ARTIFACT: &str = include_str!("../../../contracts/build/HacaToken.json");
/// `contracts/build/SettlementRegistry.json`.
pub const REGISTRY_ARTIFACT: &str =
    include_str!("../../../contracts/build/SettlementRegistry.json");

/// An artifact's creation bytecode and the compiler that made it.
pub fn artifact_bytecode(artifact: &str) -> (Bytes, String) {
    let v: serde_json::Value = serde_json::from_str(artifact).expect("committed artifacts parse");
    let code = v["bytecode"]
        .as_str()
        .and_then(|s| s.strip_prefix("0x"))
        .and_then(|s| hex::decode(s).ok())
        .expect("committed artifacts carry hex bytecode");
    (
        Bytes::from(code),
        v["compiler"].as_str().unwrap_or("?").to_owned(),
    )
}

/// The init code deploying a HacaToken with EIP-712 domain `name`/`version` and ERC-20
/// symbol `symbol`.
pub fn token_init_code(name: &str, version: &str, symbol: &str) -> Bytes {
    let (mut code, _) = artifact_bytecode(TOKEN_ARTIFACT);
    let args = (name.to_owned(), version.to_owned(), symbol.to_owned()).abi_encode_params();
    let mut v = code.to_vec();
    v.extend_from_slice(&args);
    code = Bytes::from(v);
    code
}

/// The init code deploying a SettlementRegistry (owner and first poster: the deployer).
/// The `transferWithAuthorization` call of an EIP-3009 authorization (from, to, value,
/// valid after, valid before, nonce) and its signature (r, s, v: 65 bytes); `None` for a
/// signature of another length.
pub fn transfer_with_authorization(
    (from, to, value): (Address, Address, alloy_primitives::U256),
    (valid_after, valid_before): (alloy_primitives::U256, alloy_primitives::U256),
    nonce: B256,
    signature: &[u8],
) -> Option<Vec<u8>> {
    use alloy_sol_types::SolCall;
    let sig: &[u8; 65] = signature.try_into().ok()?;
    Some(
        IHacaToken::transferWithAuthorizationCall {
            from,
            to,
            value,
            validAfter: valid_after,
            validBefore: valid_before,
            nonce,
            v: sig[64],
            r: B256::from_slice(&sig[..32]),
            s: B256::from_slice(&sig[32..64]),
        }
        .abi_encode(),
    )
}

pub fn registry_init_code() -> Bytes {
    artifact_bytecode(REGISTRY_ARTIFACT).0
}

/// A token's revert, decoded: what the chain refused and why, with the x402 reason code it
/// maps to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revert {
    /// x402's reason code (the facilitator answers it in `errorReason`).
    pub code: &'static str,
    pub message: String,
}

/// Decodes revert data from either contract (or a `require` string); unknown data is
/// reported as hex.
pub fn decode_revert(data: &[u8]) -> Revert {
    use IHacaToken as T;
    use ISettlementRegistry as R;
    let r = |code, message: String| Revert { code, message };
    if let Ok(e) = T::AuthorizationAlreadyUsed::abi_decode(data) {
        return r(
            "invalid_exact_evm_nonce_already_used",
            format!(
                "the token says authorization nonce {} of {} was already used",
                e.nonce, e.authorizer
            ),
        );
    }
    if let Ok(e) = T::AuthorizationExpired::abi_decode(data) {
        return r(
            "invalid_exact_evm_payload_authorization_valid_before",
            format!(
                "the token says the authorization expired (validBefore {}, block time {})",
                e.validBefore, e.nowSeconds
            ),
        );
    }
    if let Ok(e) = T::AuthorizationNotYetValid::abi_decode(data) {
        return r(
            "invalid_exact_evm_payload_authorization_valid_after",
            format!(
                "the token says the authorization is not valid yet (validAfter {}, block time {})",
                e.validAfter, e.nowSeconds
            ),
        );
    }
    if let Ok(e) = T::InvalidSignature::abi_decode(data) {
        return r(
            "invalid_exact_evm_payload_signature",
            format!("the token recovers {} from the signature, not the payer {} (wrong EIP-712 domain or message)", e.recovered, e.expected),
        );
    }
    if T::ECDSAInvalidSignature::abi_decode(data).is_ok()
        || T::ECDSAInvalidSignatureLength::abi_decode(data).is_ok()
        || T::ECDSAInvalidSignatureS::abi_decode(data).is_ok()
    {
        return r(
            "invalid_exact_evm_payload_signature",
            "the token refuses the signature's form".into(),
        );
    }
    if let Ok(e) = T::ERC20InsufficientBalance::abi_decode(data) {
        return r(
            "insufficient_funds",
            format!(
                "the token says {} holds {}, {} needed",
                e.sender, e.balance, e.needed
            ),
        );
    }
    if let Ok(e) = T::NotMinter::abi_decode(data) {
        return r(
            "not_minter",
            format!("{} is not the token's minter", e.caller),
        );
    }
    if let Ok(e) = R::NotPoster::abi_decode(data) {
        return r(
            "not_poster",
            format!("{} is not a registered poster of the registry", e.caller),
        );
    }
    if let Ok(e) = R::RootConflict::abi_decode(data) {
        return r(
            "root_conflict",
            format!(
                "the registry holds other roots for height {}: rfc6962 {}, oz {}",
                e.height, e.postedRfc6962Root, e.postedOzRoot
            ),
        );
    }
    if let Ok(e) = ISolidity::Error::abi_decode(data) {
        return r("reverted", e.message);
    }
    r("reverted", format!("revert data 0x{}", hex::encode(data)))
}

/// The EIP-712 domain separator of a token with domain `name`/`version` at `token` on
/// `chain_id`: what its `DOMAIN_SEPARATOR()` must answer for payments signed in that domain
/// to verify.
pub fn domain_separator(name: &str, version: &str, chain_id: u64, token: Address) -> B256 {
    alloy_sol_types::Eip712Domain::new(
        Some(name.to_owned().into()),
        Some(version.to_owned().into()),
        Some(alloy_primitives::U256::from(chain_id)),
        Some(token),
        None,
    )
    .separator()
}

/// The selector of each function and error in an artifact's ABI, as `name(types)` ->
/// selector: used to check this module's interfaces against the committed build.
pub fn abi_selectors(artifact: &str) -> Vec<(String, [u8; 4])> {
    let v: serde_json::Value = serde_json::from_str(artifact).expect("committed artifacts parse");
    let mut out = Vec::new();
    for item in v["abi"].as_array().into_iter().flatten() {
        let kind = item["type"].as_str().unwrap_or("");
        if kind != "function" && kind != "error" {
            continue;
        }
        let types: Vec<String> = item["inputs"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|i| i["type"].as_str().unwrap_or("").to_owned())
            .collect();
        let sig = format!(
            "{}({})",
            item["name"].as_str().unwrap_or(""),
            types.join(",")
        );
        let h = alloy_primitives::keccak256(sig.as_bytes());
        out.push((sig, [h[0], h[1], h[2], h[3]]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_sol_types::SolCall;

    fn has(artifact: &str, selector: [u8; 4], sig: &str) {
        let all = abi_selectors(artifact);
        assert!(
            all.iter().any(|(s, sel)| *sel == selector && s == sig),
            "{sig} with selector {} is not in the committed ABI: {all:?}",
            hex::encode(selector)
        );
    }

    #[test]
    fn the_interfaces_match_the_committed_abi() {
        use IHacaToken as T;
        use ISettlementRegistry as R;
        has(
            TOKEN_ARTIFACT,
            T::balanceOfCall::SELECTOR,
            "balanceOf(address)",
        );
        has(
            TOKEN_ARTIFACT,
            T::authorizationStateCall::SELECTOR,
            "authorizationState(address,bytes32)",
        );
        has(
            TOKEN_ARTIFACT,
            T::transferWithAuthorizationCall::SELECTOR,
            "transferWithAuthorization(address,address,uint256,uint256,uint256,bytes32,uint8,bytes32,bytes32)",
        );
        has(
            TOKEN_ARTIFACT,
            T::mintCall::SELECTOR,
            "mint(address,uint256)",
        );
        has(
            TOKEN_ARTIFACT,
            T::AuthorizationAlreadyUsed::SELECTOR,
            "AuthorizationAlreadyUsed(address,bytes32)",
        );
        has(
            TOKEN_ARTIFACT,
            T::InvalidSignature::SELECTOR,
            "InvalidSignature(address,address)",
        );
        has(
            TOKEN_ARTIFACT,
            T::ERC20InsufficientBalance::SELECTOR,
            "ERC20InsufficientBalance(address,uint256,uint256)",
        );
        has(
            REGISTRY_ARTIFACT,
            R::postCall::SELECTOR,
            "post(uint64,uint64,bytes32,bytes32)",
        );
        has(
            REGISTRY_ARTIFACT,
            R::postBatchCall::SELECTOR,
            "postBatch(uint64[],uint64[],bytes32[],bytes32[])",
        );
        has(REGISTRY_ARTIFACT, R::rootAtCall::SELECTOR, "rootAt(uint64)");
        has(
            REGISTRY_ARTIFACT,
            R::RootConflict::SELECTOR,
            "RootConflict(uint64,bytes32,bytes32)",
        );
        // The well-known selector of USDC's transferWithAuthorization (v, r, s form).
        assert_eq!(
            hex::encode(T::transferWithAuthorizationCall::SELECTOR),
            "e3ee160e"
        );
    }

    #[test]
    fn init_code_is_bytecode_then_constructor_arguments() {
        let (code, compiler) = artifact_bytecode(TOKEN_ARTIFACT);
        assert!(compiler.starts_with("solc 0.8."), "{compiler}");
        let init = token_init_code("USD Coin", "2", "USDC");
        assert_eq!(&init[..code.len()], code.as_ref());
        let args = &init[code.len()..];
        // Three string offsets, then each string's length and padded bytes.
        assert_eq!(args.len(), 3 * 32 + 3 * 64);
        assert!(args.windows(8).any(|w| w == b"USD Coin"));
        assert!(!registry_init_code().is_empty());
    }

    #[test]
    fn reverts_read_as_x402_reasons() {
        use IHacaToken as T;
        let used = T::AuthorizationAlreadyUsed {
            authorizer: Address::repeat_byte(1),
            nonce: Default::default(),
        }
        .abi_encode();
        assert_eq!(
            decode_revert(&used).code,
            "invalid_exact_evm_nonce_already_used"
        );
        let bad = T::InvalidSignature {
            expected: Address::repeat_byte(1),
            recovered: Address::repeat_byte(2),
        }
        .abi_encode();
        let r = decode_revert(&bad);
        assert_eq!(r.code, "invalid_exact_evm_payload_signature");
        assert!(r.message.contains("domain"), "{}", r.message);
        let req = ISolidity::Error {
            message: "nope".into(),
        }
        .abi_encode();
        assert_eq!(decode_revert(&req).message, "nope");
        assert!(decode_revert(&[1, 2, 3]).message.contains("010203"));
    }
}
