//! Intel SGX and TDX quotes: the real sample quotes and collateral that dcap-qvl 0.7 ships
//! (see tests/fixtures/dcap/README.md), verified at a time inside their collateral's validity, and
//! broken copies of them.

use haca_tee::dcap::{
    self, parse_collateral, peek_tee_type, DcapError, DcapPolicy, Measurement, QuoteCollateral,
    TcbStatus, TeeType,
};
use std::path::PathBuf;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dcap")
}

/// (quote, collateral, a unix time inside the collateral's validity)
fn sample(name: &str) -> (Vec<u8>, QuoteCollateral, u64) {
    let quote = std::fs::read(dir().join(name)).unwrap();
    let collateral =
        parse_collateral(&std::fs::read(dir().join(format!("{name}_collateral.json"))).unwrap())
            .unwrap();
    let at = std::fs::read_to_string(dir().join(format!("{name}.at")))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    (quote, collateral, at)
}

/// The quote's length without the zero padding after it (the TDX sample is a 5006-byte
/// buffer holding a 4936-byte quote).
fn quote_len(quote: &[u8]) -> usize {
    let sig = signature_offset(quote);
    sig + u32::from_le_bytes(quote[sig - 4..sig].try_into().unwrap()) as usize
}

/// The quote's signed part (header and body) ends here; then a u32 length, then the
/// ECDSA P-256 signature (64 bytes).
fn signature_offset(quote: &[u8]) -> usize {
    match u16::from_le_bytes([quote[0], quote[1]]) {
        3 => 48 + 384 + 4,
        4 => 48 + 584 + 4,
        v => panic!("version {v}"),
    }
}

#[test]
fn tdx_sample_is_up_to_date_and_verifies_by_default() {
    let (quote, collateral, at) = sample("tdx_quote");
    let v = dcap::verify(&quote, &collateral, at, &DcapPolicy::default()).unwrap();
    assert_eq!(v.tee, TeeType::Tdx);
    assert_eq!(v.quote_version, 4);
    assert_eq!(v.tcb_status, TcbStatus::UpToDate);
    assert!(v.advisory_ids.is_empty());
    assert!(v.all_checks_passed());
    let names: Vec<&str> = v.checks.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "structure",
            "collateral_validity",
            "collateral_signature",
            "pck_chain",
            "qe_report",
            "signature",
            "attributes",
            "tcb"
        ]
    );
    assert!(v.collateral_valid_from <= at && at <= v.collateral_valid_until);
    assert_eq!(v.evaluated_at, at);
    assert_eq!(v.signed_digest, haca_core::sha256(&quote[..632]));
    assert_eq!(peek_tee_type(&quote).unwrap(), TeeType::Tdx);
    let Measurement::Tdx { mrtd, rtmr, .. } = v.measurement.clone() else {
        panic!("{:?}", v.measurement)
    };
    // The TD report's fields at their offsets in the quote body (header is 48 bytes).
    assert_eq!(&quote[48 + 136..48 + 184], &mrtd[..]);
    assert_eq!(&quote[48 + 328..48 + 376], &rtmr[0][..]);
    assert_eq!(&quote[48 + 472..48 + 520], &rtmr[3][..]);
    assert_eq!(&quote[48 + 520..48 + 584], &v.report_data[..]);

    // The caller's expectations: reported as checks, required by verify_strict.
    let policy = DcapPolicy::default()
        .expect_mrtd(mrtd)
        .expect_report_data(v.report_data.to_vec());
    let ok = dcap::verify_strict(&quote, &collateral, at, &policy).unwrap();
    assert!(ok.check("mrtd").unwrap().passed && ok.check("report_data").unwrap().passed);
    let policy = DcapPolicy::default()
        .expect_mrtd([0; 48])
        .expect_mrenclave([0; 32])
        .expect_report_data(vec![0xab; 32]);
    let v = dcap::verify(&quote, &collateral, at, &policy).unwrap();
    assert!(!v.check("mrtd").unwrap().passed);
    assert!(v.check("mrenclave").unwrap().detail.contains("MRENCLAVE"));
    assert!(!v.check("report_data").unwrap().passed);
    let err = dcap::verify_strict(&quote, &collateral, at, &policy).unwrap_err();
    assert!(
        matches!(&err, DcapError::CheckFailed { check, .. } if check == "mrenclave"),
        "{err}"
    );

    let json = serde_json::to_value(&ok).unwrap();
    assert_eq!(json["tee"], "TDX");
    assert_eq!(json["tcb_status"], "UpToDate");
    assert_eq!(json["measurement"]["mrtd"], hex::encode(mrtd));
    assert_eq!(json["measurement"]["rtmr"].as_array().unwrap().len(), 4);
    assert_eq!(json["report_data"].as_str().unwrap().len(), 128);
}

#[test]
fn td15ex_sample_verifies() {
    let (quote, collateral, at) = sample("tdx_quote_td15ex");
    let v = dcap::verify(&quote, &collateral, at, &DcapPolicy::default()).unwrap();
    assert_eq!((v.tee, v.quote_version), (TeeType::Tdx, 5));
    assert_eq!(v.tcb_status, TcbStatus::UpToDate);
    assert!(v.checks[0].detail.contains("1.5ex"), "{:?}", v.checks[0]);
}

#[test]
fn sgx_sample_needs_configuration_and_hardening_refused_by_default() {
    let (quote, collateral, at) = sample("sgx_quote");
    let err = dcap::verify(&quote, &collateral, at, &DcapPolicy::default()).unwrap_err();
    match &err {
        DcapError::TcbNotAllowed {
            status,
            advisory_ids,
            allowed,
        } => {
            assert_eq!(*status, TcbStatus::ConfigurationAndSwHardeningNeeded);
            assert_eq!(advisory_ids, &["INTEL-SA-00289", "INTEL-SA-00615"]);
            assert_eq!(allowed, &[TcbStatus::UpToDate]);
        }
        other => panic!("{other:?}"),
    }
    let text = err.to_string();
    assert!(
        text.contains("ConfigurationAndSWHardeningNeeded")
            && text.contains("INTEL-SA-00289")
            && text.contains("INTEL-SA-00615"),
        "{text}"
    );
    // Allowing a neighbouring status is not enough.
    let policy = DcapPolicy::default().allow_tcb(TcbStatus::SwHardeningNeeded);
    assert!(matches!(
        dcap::verify(&quote, &collateral, at, &policy),
        Err(DcapError::TcbNotAllowed { .. })
    ));
    let policy = DcapPolicy::default().allow_tcb(TcbStatus::ConfigurationAndSwHardeningNeeded);
    let v = dcap::verify(&quote, &collateral, at, &policy).unwrap();
    assert_eq!((v.tee, v.quote_version), (TeeType::Sgx, 3));
    assert_eq!(v.advisory_ids, ["INTEL-SA-00289", "INTEL-SA-00615"]);
    assert!(v.check("tcb").unwrap().detail.contains("INTEL-SA-00615"));
    let Measurement::Sgx {
        mrenclave,
        mrsigner,
        ..
    } = v.measurement
    else {
        panic!("{:?}", v.measurement)
    };
    // SGX report body: MRENCLAVE at 64, MRSIGNER at 128, report data at 320.
    assert_eq!(&quote[48 + 64..48 + 96], &mrenclave[..]);
    assert_eq!(&quote[48 + 128..48 + 160], &mrsigner[..]);
    assert_eq!(&quote[48 + 320..48 + 384], &v.report_data[..]);
    let strict = policy.expect_mrenclave(mrenclave).expect_mrsigner(mrsigner);
    dcap::verify_strict(&quote, &collateral, at, &strict).unwrap();
    let wrong = strict.clone().expect_mrtd([1; 48]);
    let v = dcap::verify(&quote, &collateral, at, &wrong).unwrap();
    assert!(!v.check("mrtd").unwrap().passed);
}

/// dcap-qvl's "outdated" TDX sample: its platform is older than every level its TCB info
/// still lists (dcap-qvl itself only verifies it with a TCB-info override), so it is refused
/// whatever statuses the policy allows.
#[test]
fn outdated_tdx_sample_matches_no_tcb_level() {
    let (quote, collateral, at) = sample("tdx_quote_outdated");
    let mut every = DcapPolicy::default();
    every.allowed_tcb.extend(TcbStatus::ALL);
    for policy in [DcapPolicy::default(), every] {
        let err = dcap::verify(&quote, &collateral, at, &policy).unwrap_err();
        assert!(matches!(err, DcapError::TcbUnmatched { .. }), "{err}");
        assert!(err.to_string().contains("No matching TCB level"), "{err}");
    }
}

#[test]
fn truncated_quote_is_malformed() {
    let (quote, collateral, at) = sample("tdx_quote");
    let n = quote_len(&quote);
    assert_eq!((n, quote.len()), (4936, 5006));
    for len in [0, 10, 47, 48, 200, 632, 700, n / 2, n - 1] {
        let err = dcap::verify(&quote[..len], &collateral, at, &DcapPolicy::default()).unwrap_err();
        assert!(
            matches!(err, DcapError::MalformedQuote { .. }),
            "{len}: {err}"
        );
        assert!(err.to_string().contains("truncated"), "{len}: {err}");
    }
}

#[test]
fn trailing_bytes() {
    let (quote, collateral, at) = sample("tdx_quote");
    let mut padded = quote.clone();
    padded.extend_from_slice(&[0; 100]);
    let v = dcap::verify(&padded, &collateral, at, &DcapPolicy::default()).unwrap();
    assert!(v.checks[0].detail.contains("zero padding"));
    let unpadded = dcap::verify(
        &quote[..quote_len(&quote)],
        &collateral,
        at,
        &DcapPolicy::default(),
    )
    .unwrap();
    assert_ne!(v.quote_digest, unpadded.quote_digest);
    assert_eq!(v.signed_digest, unpadded.signed_digest);
    let mut junk = quote.clone();
    junk.extend_from_slice(b"junk");
    let err = dcap::verify(&junk, &collateral, at, &DcapPolicy::default()).unwrap_err();
    assert!(
        matches!(err, DcapError::MalformedQuote { .. }) && err.to_string().contains("not zero"),
        "{err}"
    );
}

#[test]
fn flipped_body_byte_or_signature_breaks_the_signature() {
    for name in ["tdx_quote", "sgx_quote"] {
        let (quote, collateral, at) = sample(name);
        let policy = DcapPolicy::default().allow_tcb(TcbStatus::ConfigurationAndSwHardeningNeeded);
        dcap::verify(&quote, &collateral, at, &policy).unwrap();
        let sig = signature_offset(&quote);
        // A report-data byte (last 64 bytes of the body), and a signature byte.
        for offset in [sig - 4 - 10, sig, sig + 63] {
            let mut bad = quote.clone();
            bad[offset] ^= 0x01;
            let err = dcap::verify(&bad, &collateral, at, &policy).unwrap_err();
            assert_eq!(err, DcapError::BadSignature, "{name} @{offset}: {err}");
        }
    }
}

#[test]
fn wrong_collateral_is_refused() {
    let (sgx, sgx_collateral, at) = sample("sgx_quote");
    let (tdx, tdx_collateral, tdx_at) = sample("tdx_quote");
    // Both sets were issued in June 2025; at either time the other set is valid too.
    let err = dcap::verify(&sgx, &tdx_collateral, at, &DcapPolicy::default()).unwrap_err();
    assert!(matches!(err, DcapError::CollateralMismatch { .. }), "{err}");
    let err = dcap::verify(&tdx, &sgx_collateral, tdx_at, &DcapPolicy::default()).unwrap_err();
    assert!(matches!(err, DcapError::CollateralMismatch { .. }), "{err}");
    // Another TDX platform's collateral (genuine, later): FMSPC or time.
    let (_, outdated_collateral, outdated_at) = sample("tdx_quote_outdated");
    let err = dcap::verify(
        &tdx,
        &outdated_collateral,
        outdated_at,
        &DcapPolicy::default(),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            DcapError::CollateralMismatch { .. } | DcapError::TcbUnmatched { .. }
        ),
        "{err}"
    );
    // Tampered collateral: the TCB info no longer matches Intel's signature.
    let mut forged = tdx_collateral.clone();
    forged.tcb_info = forged.tcb_info.replacen(
        "\"tcbEvaluationDataNumber\":17",
        "\"tcbEvaluationDataNumber\":99",
        1,
    );
    let err = dcap::verify(&tdx, &forged, tdx_at, &DcapPolicy::default()).unwrap_err();
    assert!(
        matches!(err, DcapError::CollateralSignature { .. }),
        "{err}"
    );
    let mut forged = tdx_collateral.clone();
    forged.qe_identity_signature[5] ^= 1;
    let err = dcap::verify(&tdx, &forged, tdx_at, &DcapPolicy::default()).unwrap_err();
    assert!(
        matches!(err, DcapError::CollateralSignature { .. }),
        "{err}"
    );
    // Not collateral at all.
    assert!(matches!(
        parse_collateral(b"{\"tcb_info\": 1}"),
        Err(DcapError::MalformedCollateral { .. })
    ));
    let mut broken = tdx_collateral;
    broken.pck_crl.truncate(20);
    let err = dcap::verify(&tdx, &broken, tdx_at, &DcapPolicy::default()).unwrap_err();
    assert!(
        matches!(err, DcapError::MalformedCollateral { .. }),
        "{err}"
    );
}

#[test]
fn time_outside_the_collateral_validity_is_refused() {
    let (quote, collateral, at) = sample("tdx_quote");
    let v = dcap::verify(&quote, &collateral, at, &DcapPolicy::default()).unwrap();
    let (from, until) = (v.collateral_valid_from, v.collateral_valid_until);
    dcap::verify(&quote, &collateral, from, &DcapPolicy::default()).unwrap();
    dcap::verify(&quote, &collateral, until - 1, &DcapPolicy::default()).unwrap();
    for t in [0, from - 1, at - 40 * 86_400] {
        let err = dcap::verify(&quote, &collateral, t, &DcapPolicy::default()).unwrap_err();
        assert!(
            matches!(err, DcapError::CollateralNotYetValid { .. }),
            "{t}: {err}"
        );
        assert!(err.to_string().contains("not valid before"), "{err}");
    }
    for t in [until + 1, at + 40 * 86_400, u64::MAX / 2] {
        let err = dcap::verify(&quote, &collateral, t, &DcapPolicy::default()).unwrap_err();
        assert!(
            matches!(err, DcapError::CollateralExpired { .. }),
            "{t}: {err}"
        );
        assert!(err.to_string().contains("expired at"), "{err}");
    }
}

/// Every truncation and every single-byte flip of both samples: refused with a reason (or,
/// for a flip in bytes no signature covers, still verified), never a panic.
#[test]
fn every_truncation_and_flip_is_refused_without_panic() {
    let policy = DcapPolicy::default().allow_tcb(TcbStatus::ConfigurationAndSwHardeningNeeded);
    for name in ["sgx_quote", "tdx_quote"] {
        let (quote, collateral, at) = sample(name);
        let n = quote_len(&quote);
        for len in 0..quote.len() {
            let r =
                std::panic::catch_unwind(|| dcap::verify(&quote[..len], &collateral, at, &policy));
            let r = r.unwrap_or_else(|_| panic!("{name}: panic at length {len}"));
            // Cutting trailing zero padding changes nothing; cutting into the quote refuses it.
            assert_eq!(r.is_ok(), len >= n, "{name}: truncated to {len}: {r:?}");
        }
        let mut accepted = Vec::new();
        for i in 0..quote.len() {
            let mut bad = quote.clone();
            bad[i] ^= 0xff;
            let r = std::panic::catch_unwind(|| dcap::verify(&bad, &collateral, at, &policy));
            match r.unwrap_or_else(|_| panic!("{name}: panic flipping byte {i}")) {
                Ok(_) => accepted.push(i),
                Err(e) => assert!(!e.to_string().is_empty()),
            }
        }
        // The signed part (header and body) and the signature must all be covered.
        let sig = signature_offset(&quote);
        assert!(
            accepted.iter().all(|&i| i >= sig + 64),
            "{name}: flips accepted at {accepted:?}"
        );
    }
}
