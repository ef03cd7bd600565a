//! How long a fetched item stays good: the data node's maximum age (default 60 s), or less
//! when the source says so: `Cache-Control: max-age` (`s-maxage` wins, as for a shared
//! cache), `no-cache`/`no-store` (good only at the instant it was fetched), or `Expires`
//! (counted from the source's `Date`, so a skewed source clock moves nothing).

use std::time::{Duration, SystemTime};

/// The data node's freshness policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FreshnessPolicy {
    pub max_age_ms: u64,
}

/// The default maximum age of an item: 60 s.
pub const DEFAULT_MAX_AGE_MS: u64 = 60_000;

impl Default for FreshnessPolicy {
    fn default() -> Self {
        FreshnessPolicy {
            max_age_ms: DEFAULT_MAX_AGE_MS,
        }
    }
}

/// The lifetime the source's cache headers give, in milliseconds; `None` when they say
/// nothing usable.
pub fn source_lifetime_ms(
    cache_control: Option<&str>,
    expires: Option<&str>,
    date: Option<&str>,
) -> Option<u64> {
    if let Some(cc) = cache_control {
        let mut max_age = None;
        let mut s_maxage = None;
        for d in cc.split(',') {
            let d = d.trim().to_ascii_lowercase();
            let (name, value) = match d.split_once('=') {
                Some((n, v)) => (
                    n.trim().to_owned(),
                    Some(v.trim().trim_matches('"').to_owned()),
                ),
                None => (d.clone(), None),
            };
            let secs = || value.as_deref().and_then(|v| v.parse::<u64>().ok());
            match name.as_str() {
                "no-store" | "no-cache" => return Some(0),
                "max-age" => max_age = secs(),
                "s-maxage" => s_maxage = secs(),
                _ => {}
            }
        }
        if let Some(s) = s_maxage.or(max_age) {
            return Some(s.saturating_mul(1000));
        }
    }
    let expires = expires?;
    // An invalid Expires (such as "0") means already expired (RFC 9111 5.3).
    let Ok(exp) = httpdate::parse_http_date(expires.trim()) else {
        return Some(0);
    };
    let base = date
        .and_then(|d| httpdate::parse_http_date(d.trim()).ok())
        .unwrap_or_else(SystemTime::now);
    Some(
        exp.duration_since(base)
            .unwrap_or(Duration::ZERO)
            .as_millis() as u64,
    )
}

impl FreshnessPolicy {
    /// `valid_until` for an item fetched at `fetched_at` (unix ms): the policy's maximum age,
    /// or the source's lifetime when shorter.
    pub fn valid_until(
        &self,
        fetched_at: u64,
        cache_control: Option<&str>,
        expires: Option<&str>,
        date: Option<&str>,
    ) -> u64 {
        let life = source_lifetime_ms(cache_control, expires, date)
            .map_or(self.max_age_ms, |s| s.min(self.max_age_ms));
        fetched_at.saturating_add(life)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const P: FreshnessPolicy = FreshnessPolicy { max_age_ms: 60_000 };

    #[test]
    fn the_shorter_of_the_policy_and_the_source_wins() {
        assert_eq!(P.valid_until(1000, None, None, None), 61_000);
        assert_eq!(
            P.valid_until(1000, Some("public, max-age=10"), None, None),
            11_000
        );
        assert_eq!(
            P.valid_until(1000, Some("max-age=3600"), None, None),
            61_000
        );
        assert_eq!(
            P.valid_until(1000, Some("max-age=30, s-maxage=5"), None, None),
            6_000
        );
        assert_eq!(P.valid_until(1000, Some("no-store"), None, None), 1000);
        let date = "Sun, 06 Nov 1994 08:49:37 GMT";
        let exp = "Sun, 06 Nov 1994 08:49:57 GMT";
        assert_eq!(P.valid_until(1000, None, Some(exp), Some(date)), 21_000);
        // Cache-Control max-age overrides Expires.
        assert_eq!(
            P.valid_until(1000, Some("max-age=5"), Some(exp), Some(date)),
            6_000
        );
        assert_eq!(P.valid_until(1000, None, Some("0"), Some(date)), 1000);
        assert_eq!(P.valid_until(1000, None, Some(date), Some(exp)), 1000);
    }

    proptest! {
        #[test]
        fn valid_until_is_never_before_the_fetch_nor_past_the_policy(
            at in 0u64..u64::MAX / 2, max_age in 0u64..10_000_000, cc in "[a-z=, 0-9-]{0,30}",
        ) {
            let policy = FreshnessPolicy { max_age_ms: max_age };
            let v = policy.valid_until(at, Some(&cc), None, None);
            prop_assert!(v >= at && v <= at + max_age);
        }
    }
}
