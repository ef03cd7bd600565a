//! The networks haca knows by name: CAIP-2 id, chain id, and the USDC token's address and
//! EIP-712 domain on each, so that an operator who names `eip155:8453` (or `base`) gets the
//! asset a real facilitator settles. Any other network is allowed when the asset, its domain
//! name and version are all given ([`resolve`]).
//!
//! USDC's domain names differ by chain: Circle's FiatTokenV2 on Base mainnet signs as
//! `"USD Coin"`, on Base Sepolia as `"USDC"`; both are version `"2"`. A payer who signs with
//! the wrong name makes a signature the token contract refuses, so the node advertises the
//! exact domain in its requirements' `extra`.

use crate::Address;

/// A network with its USDC deployment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KnownNetwork {
    /// CAIP-2 (`eip155:8453`).
    pub caip2: &'static str,
    /// x402 v1's name for it (`base`).
    pub name: &'static str,
    /// USDC's contract.
    pub usdc: &'static str,
    /// USDC's EIP-712 domain name and version.
    pub token_name: &'static str,
    pub token_version: &'static str,
}

/// Base mainnet.
pub const BASE: KnownNetwork = KnownNetwork {
    caip2: "eip155:8453",
    name: "base",
    usdc: "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913",
    token_name: "USD Coin",
    token_version: "2",
};

/// Base Sepolia (testnet).
pub const BASE_SEPOLIA: KnownNetwork = KnownNetwork {
    caip2: "eip155:84532",
    name: "base-sepolia",
    usdc: "0x036CbD53842c5426634e7929541eC2318f3dCF7e",
    token_name: "USDC",
    token_version: "2",
};

/// Every network known by name.
pub const KNOWN: [KnownNetwork; 2] = [BASE, BASE_SEPOLIA];

/// The known network `name` names: its CAIP-2 id or its x402 v1 name.
pub fn known(name: &str) -> Option<KnownNetwork> {
    KNOWN
        .into_iter()
        .find(|n| n.caip2 == name || n.name == name)
}

/// A network, its asset and the asset's EIP-712 domain, ready to advertise.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedAsset {
    /// CAIP-2.
    pub network: String,
    pub asset: Address,
    pub token_name: String,
    pub token_version: String,
}

/// Why a network and asset could not be resolved; each names the setting at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetworkError {
    #[error("network: {0:?} is not CAIP-2 (eip155:CHAIN_ID, such as eip155:8453 for Base or eip155:84532 for Base Sepolia)")]
    NotCaip2(String),
    #[error("asset: {0:?} is not an address (0x + 40 hex digits)")]
    BadAsset(String),
    #[error("{what}: network {network} is not one haca knows (known: {known}); give the asset, token_name and token_version")]
    Unknown {
        what: &'static str,
        network: String,
        known: String,
    },
}

/// Resolves `network` (CAIP-2, or a known network's v1 name) with optional overrides: a
/// known network fills in USDC and its domain for whatever is not given; an unknown one must
/// be given all three.
pub fn resolve(
    network: &str,
    asset: Option<&str>,
    token_name: Option<&str>,
    token_version: Option<&str>,
) -> Result<ResolvedAsset, NetworkError> {
    let known_one = known(network);
    let caip2 = match known_one {
        Some(k) => k.caip2.to_owned(),
        None => {
            let ok = network
                .strip_prefix("eip155:")
                .is_some_and(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()));
            if !ok {
                return Err(NetworkError::NotCaip2(network.into()));
            }
            network.to_owned()
        }
    };
    let missing = |what| NetworkError::Unknown {
        what,
        network: caip2.clone(),
        known: KNOWN
            .iter()
            .map(|k| format!("{} ({})", k.caip2, k.name))
            .collect::<Vec<_>>()
            .join(", "),
    };
    let asset_text = match (asset, known_one) {
        (Some(a), _) => a,
        (None, Some(k)) => k.usdc,
        (None, None) => return Err(missing("asset")),
    };
    let asset =
        parse_address(asset_text).ok_or_else(|| NetworkError::BadAsset(asset_text.into()))?;
    let token_name = match (token_name, known_one) {
        (Some(n), _) => n.to_owned(),
        (None, Some(k)) => k.token_name.to_owned(),
        (None, None) => return Err(missing("token_name")),
    };
    let token_version = match (token_version, known_one) {
        (Some(v), _) => v.to_owned(),
        (None, Some(k)) => k.token_version.to_owned(),
        (None, None) => return Err(missing("token_version")),
    };
    Ok(ResolvedAsset {
        network: caip2,
        asset,
        token_name,
        token_version,
    })
}

/// `0x` + 40 hex digits (any case; checksums are not required).
pub fn parse_address(s: &str) -> Option<Address> {
    crate::types::parse_address(s).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_sepolia_by_caip2_or_name_is_usdc_with_its_domain() {
        for name in ["eip155:84532", "base-sepolia"] {
            let r = resolve(name, None, None, None).unwrap();
            assert_eq!(r.network, "eip155:84532");
            assert_eq!(r.asset.to_checksum(None), BASE_SEPOLIA.usdc);
            assert_eq!(
                (r.token_name.as_str(), r.token_version.as_str()),
                ("USDC", "2")
            );
        }
        let r = resolve("eip155:8453", None, None, None).unwrap();
        assert_eq!(r.asset.to_checksum(None), BASE.usdc);
        assert_eq!(r.token_name, "USD Coin");
    }

    #[test]
    fn an_unknown_network_needs_its_asset_and_domain() {
        let e = resolve("eip155:10", None, None, None).unwrap_err();
        assert!(e.to_string().starts_with("asset:"), "{e}");
        let r = resolve(
            "eip155:10",
            Some("0x0b2C639c533813f4Aa9D7837CAf62653d097Ff85"),
            Some("USD Coin"),
            Some("2"),
        )
        .unwrap();
        assert_eq!(r.network, "eip155:10");
        assert!(matches!(
            resolve("optimism", None, None, None),
            Err(NetworkError::NotCaip2(_))
        ));
        assert!(matches!(
            resolve("eip155:8453", Some("0x12"), None, None),
            Err(NetworkError::BadAsset(_))
        ));
    }
}
