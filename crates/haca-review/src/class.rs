//! Case classes: the claims a class of cases requires, and the webhook its clearances go to.

use haca_core::claims::{Claim, Policy};
use serde::Serialize;
use std::collections::BTreeMap;

/// A class of cases (its policy) and where a clearance is announced.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct CaseClass {
    pub policy: Policy,
    /// `http(s)://` URL a signed `case.cleared` event is posted to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
}

/// A `--case-class` value that cannot be used, with the part at fault.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("case class {spec:?}: {reason}")]
pub struct ClassError {
    pub spec: String,
    pub reason: String,
}

impl CaseClass {
    /// devnet's `default`: the answer is signed by the node, and its run is settled.
    pub fn default_class() -> Self {
        CaseClass {
            policy: Policy {
                name: "default".into(),
                required: vec![Claim::ExecutionSigned, Claim::RunSettled],
            },
            webhook: None,
        }
    }

    /// Parses `name=NAME,claims=CLAIM;CLAIM[,webhook=URL]`, such as
    /// `name=loans,claims=execution.signed;enclave.genuine;run.settled,webhook=https://x/hook`.
    ///
    /// ```
    /// let c = haca_review::CaseClass::parse("name=loans,claims=run.settled;data.fresh(5m)").unwrap();
    /// assert_eq!(c.policy.required.len(), 2);
    /// assert!(haca_review::CaseClass::parse("name=x,claims=run.setled").is_err());
    /// ```
    pub fn parse(spec: &str) -> Result<Self, ClassError> {
        let err = |reason: String| ClassError {
            spec: spec.to_owned(),
            reason,
        };
        let mut name = None;
        let mut claims = None;
        let mut webhook = None;
        for part in spec.split(',') {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| err(format!("{part:?} is not KEY=VALUE")))?;
            let slot = match k.trim() {
                "name" => &mut name,
                "claims" => &mut claims,
                "webhook" => &mut webhook,
                other => {
                    return Err(err(format!(
                        "unknown key {other:?} (known: name, claims, webhook)"
                    )))
                }
            };
            if slot.replace(v.trim().to_owned()).is_some() {
                return Err(err(format!("{k} is given twice")));
            }
        }
        let name = name.ok_or_else(|| err("name is missing".into()))?;
        if name.is_empty()
            || name.len() > 64
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(err(format!(
                "name {name:?}: 1 to 64 letters, digits, '-' or '_'"
            )));
        }
        let claims = claims.ok_or_else(|| err("claims is missing".into()))?;
        let mut required = Vec::new();
        for c in claims.split(';').filter(|c| !c.trim().is_empty()) {
            let claim: Claim = c.parse().map_err(|e| err(format!("claims: {e}")))?;
            if !required.contains(&claim) {
                required.push(claim);
            }
        }
        if required.is_empty() {
            return Err(err("claims: name at least one claim".into()));
        }
        if let Some(url) = &webhook {
            if !(url.starts_with("http://") || url.starts_with("https://")) || url.len() < 10 {
                return Err(err(format!(
                    "webhook {url:?}: expected an http:// or https:// URL"
                )));
            }
        }
        Ok(CaseClass {
            policy: Policy { name, required },
            webhook,
        })
    }
}

/// The case classes a node knows, by name; `default` is always there (a configured class
/// of that name replaces devnet's).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaseClasses(BTreeMap<String, CaseClass>);

impl CaseClasses {
    pub fn new(configured: Vec<CaseClass>) -> Result<Self, ClassError> {
        let mut map = BTreeMap::new();
        let default = CaseClass::default_class();
        map.insert(default.policy.name.clone(), default);
        let mut seen = std::collections::BTreeSet::new();
        for c in configured {
            if !seen.insert(c.policy.name.clone()) {
                return Err(ClassError {
                    spec: c.policy.name.clone(),
                    reason: "this class name is configured twice".into(),
                });
            }
            map.insert(c.policy.name.clone(), c);
        }
        Ok(CaseClasses(map))
    }
    pub fn get(&self, name: &str) -> Option<&CaseClass> {
        self.0.get(name)
    }
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }
    pub fn iter(&self) -> impl Iterator<Item = &CaseClass> {
        self.0.values()
    }
}

impl Default for CaseClasses {
    fn default() -> Self {
        CaseClasses::new(Vec::new()).expect("no duplicates")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_or_name_the_part_at_fault() {
        let c = CaseClass::parse(
            "name=loans,claims=execution.signed;enclave.genuine;run.settled,webhook=http://127.0.0.1:9/h",
        )
        .unwrap();
        assert_eq!(c.policy.name, "loans");
        assert_eq!(c.policy.required.len(), 3);
        assert_eq!(c.webhook.as_deref(), Some("http://127.0.0.1:9/h"));
        for (spec, needle) in [
            ("claims=run.settled", "name is missing"),
            ("name=a", "claims is missing"),
            ("name=a,claims=", "at least one"),
            ("name=a b,claims=run.settled", "name"),
            ("name=a,claims=run.done", "unknown claim"),
            ("name=a,claims=run.settled,webhook=ftp://x/y", "webhook"),
            ("name=a,name=b,claims=run.settled", "twice"),
            ("name=a,claims=run.settled,color=red", "unknown key"),
            ("name=a,claims", "KEY=VALUE"),
        ] {
            let e = CaseClass::parse(spec).unwrap_err().to_string();
            assert!(e.contains(needle), "{spec}: {e}");
        }
    }

    #[test]
    fn default_is_always_known_and_can_be_replaced() {
        let classes = CaseClasses::default();
        assert_eq!(
            classes.get("default").unwrap().policy.required,
            vec![Claim::ExecutionSigned, Claim::RunSettled]
        );
        let mine = CaseClass::parse("name=default,claims=execution.signed").unwrap();
        let classes = CaseClasses::new(vec![mine.clone()]).unwrap();
        assert_eq!(classes.get("default"), Some(&mine));
        assert!(CaseClasses::new(vec![mine.clone(), mine]).is_err());
    }

    proptest::proptest! {
        /// Any spec: a class or a refusal naming it, never a panic.
        #[test]
        fn any_spec_parses_or_is_refused(spec in ".{0,120}") {
            match CaseClass::parse(&spec) {
                Ok(c) => proptest::prop_assert!(!c.policy.required.is_empty()),
                Err(e) => proptest::prop_assert_eq!(e.spec, spec),
            }
        }
    }
}
