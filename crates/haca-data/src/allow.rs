//! The allowlist: `--data-allow PREFIX` rules. A rule is a URL prefix, matched on the parsed
//! URL, never on the raw string: the scheme and host must be equal, the port the same
//! (explicit or the scheme's default), and the path must start with the rule's path at a
//! segment boundary (`/v1` admits `/v1` and `/v1/x`, not `/v1x`). So the rule
//! `https://example.com/` does not admit `https://example.com.evil/` or
//! `https://example.com@evil/` (whose host is `evil`). URLs carrying credentials are refused.

use std::fmt;
use url::Url;

/// One `--data-allow` rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllowRule {
    scheme: String,
    host: String,
    port: u16,
    /// Without a trailing `/`, unless it is `/` alone.
    path: String,
    text: String,
}

/// Why a rule or a source was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllowError {
    /// A `--data-allow` value that is not an http(s) URL prefix.
    #[error("--data-allow {rule:?}: {why}")]
    BadRule { rule: String, why: String },
    /// The source is not a URL haca fetches.
    #[error("url {url:?}: {why}")]
    BadUrl { url: String, why: String },
    /// No rule admits the source.
    #[error("url {url}: refused by the data allowlist [{rules}]: {why}")]
    Refused {
        url: String,
        /// The rules, comma-separated.
        rules: String,
        why: String,
    },
}

impl AllowError {
    /// A stable code for the HTTP layer.
    pub fn code(&self) -> &'static str {
        match self {
            AllowError::BadRule { .. } => "invalid_rule",
            AllowError::BadUrl { .. } => "invalid_url",
            AllowError::Refused { .. } => "source_not_allowed",
        }
    }
}

/// A URL as a data node fetches it: http(s), a host, no credentials.
pub fn parse_source(s: &str) -> Result<Url, AllowError> {
    let bad = |why: &str| AllowError::BadUrl {
        url: s.to_owned(),
        why: why.to_owned(),
    };
    let u = Url::parse(s).map_err(|e| bad(&e.to_string()))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(bad(&format!(
            "scheme {:?} is not fetched (http or https only)",
            u.scheme()
        )));
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err(bad("no host"));
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err(bad("a URL with credentials is never fetched"));
    }
    Ok(u)
}

impl AllowRule {
    pub fn parse(s: &str) -> Result<Self, AllowError> {
        let u = parse_source(s).map_err(|e| AllowError::BadRule {
            rule: s.to_owned(),
            why: match e {
                AllowError::BadUrl { why, .. } => why,
                other => other.to_string(),
            },
        })?;
        if u.query().is_some() || u.fragment().is_some() {
            return Err(AllowError::BadRule {
                rule: s.to_owned(),
                why: "a rule is a scheme, host and path prefix; it has no query or fragment".into(),
            });
        }
        let mut path = u.path().to_owned();
        while path.len() > 1 && path.ends_with('/') {
            path.pop();
        }
        Ok(AllowRule {
            scheme: u.scheme().to_owned(),
            host: u.host_str().expect("checked").to_owned(),
            port: u
                .port_or_known_default()
                .expect("http(s) has a default port"),
            path,
            text: s.to_owned(),
        })
    }

    /// Why this rule does not admit `u`, or `None` when it does.
    fn mismatch(&self, u: &Url) -> Option<String> {
        let host = u.host_str().unwrap_or("");
        let port = u.port_or_known_default().unwrap_or(0);
        if u.scheme() != self.scheme {
            return Some(format!("scheme {} is not {}", u.scheme(), self.scheme));
        }
        if host != self.host {
            return Some(format!("host {host} is not {}", self.host));
        }
        if port != self.port {
            return Some(format!("port {port} is not {}", self.port));
        }
        let p = u.path();
        let inside = self.path == "/"
            || p == self.path
            || (p.starts_with(&self.path) && p.as_bytes().get(self.path.len()) == Some(&b'/'));
        (!inside).then(|| format!("path {p} is outside {}", self.path))
    }
}

impl fmt::Display for AllowRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The rules a data node fetches under. Empty, it refuses every source.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Allowlist {
    rules: Vec<AllowRule>,
}

impl Allowlist {
    pub fn new(rules: Vec<AllowRule>) -> Self {
        Allowlist { rules }
    }

    /// Parses each `--data-allow` value.
    pub fn parse<S: AsRef<str>>(rules: &[S]) -> Result<Self, AllowError> {
        Ok(Allowlist {
            rules: rules
                .iter()
                .map(|r| AllowRule::parse(r.as_ref()))
                .collect::<Result<_, _>>()?,
        })
    }

    pub fn rules(&self) -> &[AllowRule] {
        &self.rules
    }

    /// The rule that admits `u`, or a refusal naming the rules and why none matched.
    pub fn check(&self, u: &Url) -> Result<&AllowRule, AllowError> {
        let mut why = Vec::new();
        for r in &self.rules {
            match r.mismatch(u) {
                None => return Ok(r),
                Some(w) => why.push((r, w)),
            }
        }
        let rules = self
            .rules
            .iter()
            .map(|r| r.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        // The most telling reason: a rule for the same host says which part is off.
        let host = u.host_str().unwrap_or("");
        let why = match why.iter().find(|(r, _)| r.host == host) {
            _ if self.rules.is_empty() => "the allowlist is empty (set --data-allow PREFIX)".into(),
            Some((r, w)) => format!("rule {r}: {w}"),
            None => format!("no rule is for host {host}"),
        };
        Err(AllowError::Refused {
            url: u.to_string(),
            rules,
            why,
        })
    }

    /// Parses `url` and checks it.
    pub fn admit(&self, url: &str) -> Result<Url, AllowError> {
        let u = parse_source(url)?;
        self.check(&u)?;
        Ok(u)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(rules: &[&str]) -> Allowlist {
        Allowlist::parse(rules).unwrap()
    }

    #[test]
    fn a_prefix_admits_its_own_host_and_path_only() {
        let l = list(&["https://example.com/v1"]);
        assert!(l.admit("https://example.com/v1").is_ok());
        assert!(l.admit("https://example.com/v1/price?x=1").is_ok());
        assert!(l.admit("https://EXAMPLE.com:443/v1/").is_ok());
        for bad in [
            "https://example.com.evil/v1",
            "https://example.com/v1x",
            "https://example.com/v2",
            "http://example.com/v1",
            "https://example.com:8443/v1",
            "https://evil/example.com/v1",
        ] {
            let e = l.admit(bad).unwrap_err();
            assert!(matches!(e, AllowError::Refused { .. }), "{bad} was {e:?}");
            assert!(e.to_string().contains("https://example.com/v1"), "{e}");
        }
    }

    #[test]
    fn a_refusal_names_the_rules_and_the_part_that_differs() {
        let l = list(&["https://example.com/v1", "http://127.0.0.1:8080/"]);
        let e = l
            .admit("https://example.com/admin")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("[https://example.com/v1, http://127.0.0.1:8080/]"),
            "{e}"
        );
        assert!(e.contains("path /admin is outside /v1"), "{e}");
        let e = Allowlist::default()
            .admit("https://a.b/")
            .unwrap_err()
            .to_string();
        assert!(e.contains("the allowlist is empty"), "{e}");
    }

    proptest::proptest! {
        /// No host that merely starts or ends like the rule's, and no path that merely
        /// starts like its prefix, is admitted.
        #[test]
        fn look_alike_hosts_and_paths_are_never_admitted(
            label in "[a-z0-9]{1,12}", seg in "[a-z0-9]{1,8}",
        ) {
            let l = list(&["https://example.com/v1"]);
            let suffixed = format!("https://example.com.{label}/v1");
            let prefixed = format!("https://{label}example.com/v1");
            let longer = format!("https://example.com/v1{seg}");
            let inside = format!("https://example.com/v1/{seg}");
            proptest::prop_assert!(l.admit(&suffixed).is_err());
            proptest::prop_assert!(l.admit(&prefixed).is_err());
            proptest::prop_assert!(l.admit(&longer).is_err());
            proptest::prop_assert!(l.admit(&inside).is_ok());
        }
    }

    #[test]
    fn bad_rules_and_urls_are_named() {
        assert!(AllowRule::parse("ftp://x/").is_err());
        assert!(AllowRule::parse("example.com").is_err());
        assert!(AllowRule::parse("https://x/?q").is_err());
        assert!(matches!(
            list(&["https://example.com/"]).admit("https://example.com@evil/"),
            Err(AllowError::BadUrl { .. })
        ));
        assert!(matches!(
            list(&["https://a/"]).admit("https://u:p@a/"),
            Err(AllowError::BadUrl { .. })
        ));
        assert!(matches!(
            list(&["https://a/"]).admit("file:///etc/passwd"),
            Err(AllowError::BadUrl { .. })
        ));
    }
}
