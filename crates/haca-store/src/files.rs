//! Files beside the database: the node key and the operator token, written atomically and
//! readable only by their owner.

use crate::StoreError;
use haca_core::NodeKey;
use rand::RngCore;
use std::fs;
use std::io::Write;
use std::path::Path;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Writes `bytes` to `path` through a temporary file and a rename, so a crash never leaves a
/// half-written file; `private` makes it readable by its owner only.
pub fn write_atomic(path: &Path, bytes: &[u8], private: bool) -> Result<(), StoreError> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    {
        let mut opts = fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        if private {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp).map_err(io(&tmp))?;
        f.write_all(bytes).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
    }
    fs::rename(&tmp, path).map_err(io(path))
}

/// Loads the Ed25519 key at `path`, creating one if the file does not exist.
pub fn load_or_create_key(path: &Path) -> Result<NodeKey, StoreError> {
    match fs::read_to_string(path) {
        Ok(text) => NodeKey::from_file_string(&text)
            .map_err(|e| StoreError::Invalid(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = NodeKey::generate();
            write_atomic(path, key.to_file_string().as_bytes(), true)?;
            Ok(key)
        }
        Err(e) => Err(StoreError::Io {
            path: path.to_owned(),
            source: e,
        }),
    }
}

/// Loads the operator token at `path`, creating a random one if the file does not exist.
pub fn load_or_create_token(path: &Path) -> Result<String, StoreError> {
    match fs::read_to_string(path) {
        Ok(text) if !text.trim().is_empty() => Ok(text.trim().to_owned()),
        Ok(_) => Err(StoreError::Invalid(format!(
            "{}: empty token file",
            path.display()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut bytes = [0u8; 32];
            rand::rngs::OsRng.fill_bytes(&mut bytes);
            let token = hex::encode(bytes);
            write_atomic(path, format!("{token}\n").as_bytes(), true)?;
            Ok(token)
        }
        Err(e) => Err(StoreError::Io {
            path: path.to_owned(),
            source: e,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_and_token_are_created_once_then_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let k1 = load_or_create_key(&dir.path().join("node.key")).unwrap();
        let k2 = load_or_create_key(&dir.path().join("node.key")).unwrap();
        assert_eq!(k1.node_id(), k2.node_id());
        let t1 = load_or_create_token(&dir.path().join("op.token")).unwrap();
        assert_eq!(
            t1,
            load_or_create_token(&dir.path().join("op.token")).unwrap()
        );
        assert_eq!(t1.len(), 64);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.path().join("node.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn a_damaged_key_file_is_refused_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("node.key");
        fs::write(&p, "garbage").unwrap();
        assert!(load_or_create_key(&p).is_err());
        assert_eq!(fs::read_to_string(&p).unwrap(), "garbage");
    }
}
