//! Prices in token base units (USDC: 6 decimals, so 1_000_000 is one dollar), and what one
//! request must pay up front under the `exact` scheme.

use alloy_primitives::U256;

/// USDC's decimals, the usual x402 asset.
pub const USDC_DECIMALS: u8 = 6;

/// What a route charges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Price {
    /// A fixed amount per request, in base units.
    PerRequest(U256),
    /// An amount per generated token, in base units. `exact` cannot pay after the fact, so a
    /// request pays for its `max_tokens` up front.
    PerToken(U256),
}

/// Per-token prices of a chat model, as x402 `upto` charges it: base units per 1,000 prompt
/// and per 1,000 completion tokens. One rule for the node that settles and the validators
/// that check its `upto` boxes: they must price a call alike.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenPrice {
    pub input: U256,
    pub output: U256,
}

impl TokenPrice {
    /// What `prompt` and `completion` tokens cost, each rounded up to a whole base unit.
    pub fn cost(&self, prompt: u64, completion: u64) -> U256 {
        per_1k(self.input, prompt) + per_1k(self.output, completion)
    }
}

/// Base units for `tokens` at `per_1k` base units per 1,000 tokens, rounded up.
fn per_1k(per_1k: U256, tokens: u64) -> U256 {
    (per_1k * U256::from(tokens)).div_ceil(U256::from(1000u64))
}

/// Why a price could not be computed or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PriceError {
    #[error("a per-token price needs max_tokens of at least 1")]
    NoMaxTokens,
    #[error("{max_tokens} tokens at {per_token} base units each overflows")]
    Overflow { per_token: U256, max_tokens: u64 },
    #[error("amount {text:?}: {reason}")]
    Amount { text: String, reason: &'static str },
}

impl Price {
    /// The amount one request pays up front: the fixed price, or `max_tokens` times the token
    /// price.
    pub fn upfront(&self, max_tokens: u64) -> Result<U256, PriceError> {
        match *self {
            Price::PerRequest(amount) => Ok(amount),
            Price::PerToken(_) if max_tokens == 0 => Err(PriceError::NoMaxTokens),
            Price::PerToken(per_token) => {
                per_token
                    .checked_mul(U256::from(max_tokens))
                    .ok_or(PriceError::Overflow {
                        per_token,
                        max_tokens,
                    })
            }
        }
    }
}

/// Read a decimal amount such as `"0.001"` or `"$1.50"` into base units of a token with
/// `decimals` decimals (`"0.001"` with 6 decimals is 1000). More fractional digits than the
/// token has are refused rather than rounded.
pub fn parse_units(text: &str, decimals: u8) -> Result<U256, PriceError> {
    let err = |reason| PriceError::Amount {
        text: text.into(),
        reason,
    };
    let s = text.trim();
    let s = s.strip_prefix('$').unwrap_or(s);
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    if whole.is_empty() && frac.is_empty() {
        return Err(err("no digits"));
    }
    if !whole
        .bytes()
        .chain(frac.bytes())
        .all(|b| b.is_ascii_digit())
    {
        return Err(err("only digits and one decimal point are allowed"));
    }
    if frac.len() > decimals as usize {
        return Err(err("more fractional digits than the token has decimals"));
    }
    let digits = format!("{whole}{frac:0<width$}", width = decimals as usize);
    let digits = digits.trim_start_matches('0');
    if digits.is_empty() {
        return Ok(U256::ZERO);
    }
    U256::from_str_radix(digits, 10).map_err(|_| err("does not fit in 256 bits"))
}

/// Write base units as a decimal amount with `decimals` decimals, trailing zeros dropped
/// (`1500000` with 6 decimals is `"1.5"`).
pub fn format_units(amount: U256, decimals: u8) -> String {
    let s = amount.to_string();
    let d = decimals as usize;
    let (whole, frac) = if s.len() > d {
        s.split_at(s.len() - d)
    } else {
        ("", s.as_str())
    };
    let frac = format!("{frac:0>d$}");
    let frac = frac.trim_end_matches('0');
    let whole = if whole.is_empty() { "0" } else { whole };
    if frac.is_empty() {
        whole.to_string()
    } else {
        format!("{whole}.{frac}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upfront_amounts() {
        let p = Price::PerRequest(U256::from(1000u64));
        assert_eq!(p.upfront(0).unwrap(), U256::from(1000u64));
        let t = Price::PerToken(U256::from(3u64));
        assert_eq!(t.upfront(256).unwrap(), U256::from(768u64));
        assert_eq!(t.upfront(0), Err(PriceError::NoMaxTokens));
        let huge = Price::PerToken(U256::MAX);
        assert!(matches!(huge.upfront(2), Err(PriceError::Overflow { .. })));
    }

    #[test]
    fn units_parse_and_format() {
        assert_eq!(parse_units("0.001", 6).unwrap(), U256::from(1000u64));
        assert_eq!(parse_units("$1.50", 6).unwrap(), U256::from(1_500_000u64));
        assert_eq!(parse_units("2", 6).unwrap(), U256::from(2_000_000u64));
        assert_eq!(parse_units(".5", 6).unwrap(), U256::from(500_000u64));
        assert_eq!(parse_units("0", 6).unwrap(), U256::ZERO);
        assert!(parse_units("0.0000001", 6).is_err());
        assert!(parse_units("1e3", 6).is_err());
        assert!(parse_units("-1", 6).is_err());
        assert!(parse_units(".", 6).is_err());
        assert_eq!(format_units(U256::from(1_500_000u64), 6), "1.5");
        assert_eq!(format_units(U256::from(1000u64), 6), "0.001");
        assert_eq!(format_units(U256::from(2_000_000u64), 6), "2");
        assert_eq!(format_units(U256::ZERO, 6), "0");
        assert_eq!(format_units(U256::from(7u64), 0), "7");
    }
}
