//! haca-zk against the real digit models in fixtures/: accuracy on held-out digits, proofs that
//! verify, and every tamper case refused with its reason.

mod digits;
mod tamper;

use std::path::PathBuf;

pub fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures")
        .join(rel)
}

pub fn model(name: &str) -> Vec<u8> {
    std::fs::read(fixture(&format!("models/{name}"))).unwrap()
}

/// The held-out digits: (pixels / 255, label).
pub fn heldout() -> Vec<(Vec<f32>, u8)> {
    let images = std::fs::read(fixture("digits/heldout-images.u8")).unwrap();
    let labels = std::fs::read(fixture("digits/heldout-labels.u8")).unwrap();
    assert_eq!(images.len(), labels.len() * 784);
    images
        .chunks(784)
        .zip(labels)
        .map(|(px, l)| (px.iter().map(|&p| p as f32 / 255.0).collect(), l))
        .collect()
}

pub fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i)
        .unwrap()
}
