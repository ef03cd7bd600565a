//! The certificate chain: leaf (`certificate`) -> `cabundle[n-1]` -> ... -> `cabundle[0]`, the
//! root, which must be one of the trusted roots (pinned by the SHA-256 of its DER).

use sha2::{Digest as _, Sha256};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::ParsedExtension;
use x509_parser::oid_registry::{
    OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_SIG_ECDSA_WITH_SHA384,
};
use x509_parser::prelude::FromDer;

use super::parse::AttestationDocument;
use super::roots::TrustedRoot;
use crate::NitroError;

/// What a verified chain tells the rest of the verification.
pub(crate) struct VerifiedChain {
    pub root: TrustedRoot,
    /// Uncompressed P-384 point of the leaf key (0x04 || x || y).
    pub leaf_point: Vec<u8>,
    pub leaf_not_before_ms: i128,
    pub leaf_not_after_ms: i128,
    /// Certificates in the chain, leaf and root included.
    pub length: usize,
}

/// Checks the root pin, every link (issuer name, CA rights, path length, signature with
/// ecdsa-with-SHA384), the root's self-signature, the leaf key type, and that every
/// certificate is valid at `at_ms`.
pub(crate) fn verify_chain(
    doc: &AttestationDocument,
    roots: &[TrustedRoot],
    at_ms: u64,
) -> Result<VerifiedChain, NitroError> {
    let root_der = doc
        .cabundle
        .first()
        .ok_or_else(|| NitroError::field("cabundle", "empty"))?;
    let fingerprint: [u8; 32] = Sha256::digest(root_der).into();
    let root = roots
        .iter()
        .find(|r| r.sha256 == fingerprint)
        .cloned()
        .ok_or_else(|| NitroError::UntrustedRoot {
            fingerprint: hex::encode(fingerprint),
        })?;

    // Leaf first, then the bundle from its end (the leaf's issuer) back to the root.
    let mut chain: Vec<(String, X509Certificate<'_>)> = Vec::with_capacity(doc.cabundle.len() + 1);
    chain.push((
        "certificate".to_string(),
        parse_cert("certificate", &doc.certificate)?,
    ));
    for (i, der) in doc.cabundle.iter().enumerate().rev() {
        let name = format!("cabundle[{i}]");
        let cert = parse_cert(&name, der)?;
        chain.push((name, cert));
    }

    for (name, cert) in &chain {
        check_algorithm_and_extensions(name, cert)?;
    }
    for j in 0..chain.len() - 1 {
        let (child_name, child) = &chain[j];
        let (parent_name, parent) = &chain[j + 1];
        check_may_issue(parent_name, parent, j)?;
        check_link(child_name, child, parent_name, parent)?;
    }
    // The root (already checked as an issuer above) must be self-signed.
    let (root_name, root_cert) = &chain[chain.len() - 1];
    check_link(root_name, root_cert, root_name, root_cert)?;

    let leaf = &chain[0].1;
    let leaf_point = p384_point("certificate", leaf)?;
    match leaf.key_usage() {
        Ok(Some(ku)) if !ku.value.digital_signature() => {
            return Err(NitroError::cert(
                "certificate",
                "its key usage does not allow digital signatures",
            ))
        }
        Ok(_) => {}
        Err(e) => return Err(NitroError::cert("certificate", format!("key usage: {e}"))),
    }

    for (name, cert) in &chain {
        check_valid_at(name, cert, at_ms)?;
    }
    let (leaf_not_before_ms, leaf_not_after_ms) = validity_ms(leaf);
    Ok(VerifiedChain {
        root,
        leaf_point,
        leaf_not_before_ms,
        leaf_not_after_ms,
        length: chain.len(),
    })
}

fn parse_cert<'a>(name: &str, der: &'a [u8]) -> Result<X509Certificate<'a>, NitroError> {
    match X509Certificate::from_der(der) {
        Ok(([], cert)) => Ok(cert),
        Ok((rest, _)) => Err(NitroError::cert(
            name,
            format!("{} trailing bytes after the certificate", rest.len()),
        )),
        Err(e) => Err(NitroError::cert(
            name,
            format!("not a DER X.509 certificate: {e}"),
        )),
    }
}

fn check_algorithm_and_extensions(
    name: &str,
    cert: &X509Certificate<'_>,
) -> Result<(), NitroError> {
    if cert.signature_algorithm.algorithm != OID_SIG_ECDSA_WITH_SHA384 {
        return Err(NitroError::cert(
            name,
            format!(
                "signed with algorithm {}; Nitro certificates use ecdsa-with-SHA384",
                cert.signature_algorithm.algorithm
            ),
        ));
    }
    if cert.tbs_certificate.signature != cert.signature_algorithm {
        return Err(NitroError::cert(
            name,
            "the signed and the outer signature algorithms differ",
        ));
    }
    for ext in cert.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::ParseError { error } => {
                return Err(NitroError::cert(
                    name,
                    format!("extension {} does not parse: {error}", ext.oid),
                ))
            }
            ParsedExtension::UnsupportedExtension { .. } if ext.critical => {
                return Err(NitroError::cert(
                    name,
                    format!("critical extension {} is not supported", ext.oid),
                ))
            }
            _ => {}
        }
    }
    Ok(())
}

/// `cert` issues the next certificate down; `below` CA certificates sit between it and the
/// leaf.
fn check_may_issue(name: &str, cert: &X509Certificate<'_>, below: usize) -> Result<(), NitroError> {
    let bc = cert
        .basic_constraints()
        .map_err(|e| NitroError::cert(name, format!("basic constraints: {e}")))?;
    let Some(bc) = bc.filter(|bc| bc.value.ca) else {
        return Err(NitroError::cert(
            name,
            "issues a certificate but is not a CA (basic constraints)",
        ));
    };
    if let Some(max) = bc.value.path_len_constraint {
        if below as u64 > u64::from(max) {
            return Err(NitroError::cert(
                name,
                format!("its path length constraint {max} is exceeded ({below} CAs below it)"),
            ));
        }
    }
    match cert.key_usage() {
        Ok(Some(ku)) if !ku.value.key_cert_sign() => Err(NitroError::cert(
            name,
            "its key usage does not allow signing certificates",
        )),
        Ok(_) => Ok(()),
        Err(e) => Err(NitroError::cert(name, format!("key usage: {e}"))),
    }
}

fn check_link(
    child_name: &str,
    child: &X509Certificate<'_>,
    parent_name: &str,
    parent: &X509Certificate<'_>,
) -> Result<(), NitroError> {
    let chain_err = |reason: String| NitroError::Chain {
        cert: child_name.to_string(),
        issuer: parent_name.to_string(),
        reason,
    };
    if child.issuer().as_raw() != parent.subject().as_raw() {
        return Err(chain_err(format!(
            "its issuer \"{}\" is not the subject \"{}\"",
            child.issuer(),
            parent.subject()
        )));
    }
    child
        .verify_signature(Some(parent.public_key()))
        .map_err(|e| chain_err(format!("the signature does not verify ({e})")))
}

fn p384_point(name: &str, cert: &X509Certificate<'_>) -> Result<Vec<u8>, NitroError> {
    let spki = cert.public_key();
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok());
    if spki.algorithm.algorithm != OID_KEY_TYPE_EC_PUBLIC_KEY || curve != Some(OID_NIST_EC_P384) {
        return Err(NitroError::cert(
            name,
            "its key is not an EC P-384 key, which ES384 needs",
        ));
    }
    Ok(spki.subject_public_key.data.to_vec())
}

pub(crate) fn validity_ms(cert: &X509Certificate<'_>) -> (i128, i128) {
    let v = cert.validity();
    (
        i128::from(v.not_before.timestamp()) * 1000,
        i128::from(v.not_after.timestamp()) * 1000,
    )
}

fn check_valid_at(name: &str, cert: &X509Certificate<'_>, at_ms: u64) -> Result<(), NitroError> {
    let (not_before, not_after) = validity_ms(cert);
    let at = i128::from(at_ms);
    if at < not_before {
        return Err(NitroError::CertificateNotYetValid {
            cert: name.to_string(),
            not_before: format_ms(not_before),
            at: format_ms(at),
        });
    }
    if at > not_after {
        return Err(NitroError::CertificateExpired {
            cert: name.to_string(),
            not_after: format_ms(not_after),
            at: format_ms(at),
        });
    }
    Ok(())
}

/// RFC 3339 for people; a plain count where the instant is outside what that can show.
pub(crate) fn format_ms(ms: i128) -> String {
    match u64::try_from(ms) {
        Ok(ms) if ms < 253_402_300_800_000 => haca_core::format_unix_ms(ms),
        _ => format!("unix ms {ms}"),
    }
}
