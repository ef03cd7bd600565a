//! Route discipline: which providers, over which paths, may serve a request, in the order
//! they are tried. Pure: the gateway does the calling and records every attempt.
//!
//! A request's `privacy` is a floor. `any` takes any path; `private` needs a path whose
//! operator cannot read the prompt (an enclave; OHTTP once it exists); `tee` needs an attested
//! enclave. A route below the floor is never planned, so neither the first choice nor a
//! fallback can take the prompt somewhere the client refused: when nothing meets it, the plan
//! fails closed.

use super::chat::Privacy;
use haca_core::receipt::PrivacyPath;

/// What a provider's path guarantees about who can read the prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathClass {
    /// The provider's operator reads the prompt (a public API, this node's own process).
    Standard,
    /// Executed in an attested enclave: meets `private` and `tee`. (An OHTTP path will be
    /// a second class meeting `private`.)
    Tee,
}

impl PathClass {
    pub fn parse(s: &str) -> Option<PathClass> {
        match s {
            "standard" => Some(PathClass::Standard),
            "tee" => Some(PathClass::Tee),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PathClass::Standard => "standard",
            PathClass::Tee => "tee",
        }
    }

    /// Whether this path satisfies a request's requirement.
    pub fn meets(self, required: Privacy) -> bool {
        match required {
            Privacy::Any => true,
            Privacy::Private | Privacy::Tee => self == PathClass::Tee,
        }
    }

    /// The receipt's name for the path.
    pub fn receipt_path(self) -> PrivacyPath {
        match self {
            PathClass::Standard => PrivacyPath::Direct,
            PathClass::Tee => PrivacyPath::Tee,
        }
    }
}

/// How a provider is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderKind {
    /// The node's own local model (in its process, or in its enclave for the tee path).
    Local,
    /// An OpenAI-compatible endpoint.
    OpenAi {
        base_url: String,
        /// The environment variable holding its API key.
        key_env: Option<String>,
    },
}

/// A configured provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provider {
    pub name: String,
    pub kind: ProviderKind,
    /// Model ids as the provider knows them; `name/model` is the public name.
    pub models: Vec<String>,
    /// The paths it can serve over, cheapest first.
    pub paths: Vec<PathClass>,
    /// The provider tried next when this one fails, for requests whose privacy it meets.
    pub fallback: Option<String>,
}

/// One planned attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub provider: String,
    /// The model id the provider gets.
    pub model: String,
    pub path: PathClass,
}

/// Why no route could be planned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("model {model:?} names no provider; models are named provider/model (see /v1/models)")]
    NoProvider { model: String },
    #[error("provider {provider:?} is not configured on this node (see /v1/models)")]
    UnknownProvider { provider: String },
    #[error("provider {provider:?} does not serve {model:?}; it serves {available}")]
    UnknownModel {
        provider: String,
        model: String,
        available: String,
    },
    #[error("privacy: {required} cannot be met: {provider} is reached only over {paths} paths; nothing was sent")]
    PrivacyUnmet {
        provider: String,
        required: &'static str,
        paths: String,
    },
}

/// Plans the attempts for `model` (`provider/model`) at `privacy`: the named provider over
/// the cheapest path that meets it, then each fallback in turn that meets it too.
pub fn plan(
    providers: &[Provider],
    model: &str,
    privacy: Privacy,
) -> Result<Vec<Route>, RouteError> {
    let (name, id) = model
        .split_once('/')
        .ok_or_else(|| RouteError::NoProvider {
            model: model.to_owned(),
        })?;
    let find = |n: &str| providers.iter().find(|p| p.name == n);
    let first = find(name).ok_or_else(|| RouteError::UnknownProvider {
        provider: name.to_owned(),
    })?;
    if !first.models.iter().any(|m| m == id) {
        return Err(RouteError::UnknownModel {
            provider: name.to_owned(),
            model: id.to_owned(),
            available: first
                .models
                .iter()
                .map(|m| format!("{name}/{m}"))
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    let path_for = |p: &Provider| p.paths.iter().copied().find(|c| c.meets(privacy));
    let Some(path) = path_for(first) else {
        return Err(RouteError::PrivacyUnmet {
            provider: first.name.clone(),
            required: privacy.as_str(),
            paths: first
                .paths
                .iter()
                .map(|p| p.as_str())
                .collect::<Vec<_>>()
                .join(" or "),
        });
    };
    let mut routes = vec![Route {
        provider: first.name.clone(),
        model: id.to_owned(),
        path,
    }];
    let mut next = first.fallback.as_deref();
    while let Some(n) = next {
        let Some(p) = find(n) else { break };
        if routes.iter().any(|r| r.provider == p.name) {
            break; // a fallback cycle
        }
        if let Some(path) = path_for(p) {
            // The same model when the fallback serves it, else its first.
            let model = p
                .models
                .iter()
                .find(|m| *m == id)
                .or_else(|| p.models.first());
            if let Some(model) = model {
                routes.push(Route {
                    provider: p.name.clone(),
                    model: model.clone(),
                    path,
                });
            }
        }
        next = p.fallback.as_deref();
    }
    Ok(routes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn providers() -> Vec<Provider> {
        vec![
            Provider {
                name: "local".into(),
                kind: ProviderKind::Local,
                models: vec!["gemma-3-270m".into()],
                paths: vec![PathClass::Standard, PathClass::Tee],
                fallback: None,
            },
            Provider {
                name: "openai".into(),
                kind: ProviderKind::OpenAi {
                    base_url: "https://api.openai.com/v1".into(),
                    key_env: Some("OPENAI_API_KEY".into()),
                },
                models: vec!["gpt-4o-mini".into()],
                paths: vec![PathClass::Standard],
                fallback: Some("local".into()),
            },
        ]
    }

    #[test]
    fn any_takes_the_cheapest_path_then_falls_back() {
        let r = plan(&providers(), "openai/gpt-4o-mini", Privacy::Any).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(
            (r[0].provider.as_str(), r[0].path),
            ("openai", PathClass::Standard)
        );
        assert_eq!(
            (r[1].provider.as_str(), r[1].model.as_str()),
            ("local", "gemma-3-270m")
        );
        let r = plan(&providers(), "local/gemma-3-270m", Privacy::Any).unwrap();
        assert_eq!(r[0].path, PathClass::Standard);
    }

    #[test]
    fn private_and_tee_never_take_a_standard_path() {
        let r = plan(&providers(), "local/gemma-3-270m", Privacy::Private).unwrap();
        assert_eq!(r[0].path, PathClass::Tee);
        let e = plan(&providers(), "openai/gpt-4o-mini", Privacy::Private).unwrap_err();
        assert!(matches!(e, RouteError::PrivacyUnmet { .. }), "{e}");
        // A private-capable first choice whose fallback is standard: no fallback is planned.
        let mut p = providers();
        p[0].fallback = Some("openai".into());
        let r = plan(&p, "local/gemma-3-270m", Privacy::Tee).unwrap();
        assert_eq!(r.len(), 1);
        let r = plan(&p, "local/gemma-3-270m", Privacy::Any).unwrap();
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn unknown_names_are_refused() {
        assert!(matches!(
            plan(&providers(), "gemma", Privacy::Any),
            Err(RouteError::NoProvider { .. })
        ));
        assert!(matches!(
            plan(&providers(), "x/y", Privacy::Any),
            Err(RouteError::UnknownProvider { .. })
        ));
        assert!(matches!(
            plan(&providers(), "local/gpt", Privacy::Any),
            Err(RouteError::UnknownModel { .. })
        ));
    }

    #[test]
    fn fallback_cycles_end() {
        let mut p = providers();
        p[0].fallback = Some("openai".into());
        let r = plan(&p, "openai/gpt-4o-mini", Privacy::Any).unwrap();
        assert_eq!(r.len(), 2);
    }
}
