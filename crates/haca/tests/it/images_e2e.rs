//! Image generation end to end: a real `haca devnet` routing `POST /v1/images/generations`
//! to local OpenAI-compatible image servers this test starts (one draws real PNGs, one
//! answers with something that is not an image), then `haca verify --image` proving which
//! bytes came back.

use crate::common::{wait_ready, Devnet};
use base64::Engine as _;
use haca_exec::image::crc32;
use reqwest::blocking::Client;
use serde_json::{json, Value};
use std::time::Duration;

fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for &x in data {
        a = (a + x as u32) % 65521;
        b = (b + a) % 65521;
    }
    (b << 16) | a
}

/// A PNG (8-bit RGB) of `w` x `h` whose pixels follow from `seed`: zlib with stored blocks,
/// so any decoder reads it.
pub fn png(w: u32, h: u32, seed: u8) -> Vec<u8> {
    let mut raw = Vec::new();
    for y in 0..h {
        raw.push(0); // filter: none
        for x in 0..w {
            raw.extend([
                (x as u8).wrapping_mul(seed),
                (y as u8).wrapping_add(seed),
                seed ^ (x + y) as u8,
            ]);
        }
    }
    let mut z = vec![0x78, 0x01];
    let mut blocks = raw.chunks(65535).peekable();
    while let Some(block) = blocks.next() {
        z.push(u8::from(blocks.peek().is_none()));
        let len = block.len() as u16;
        z.extend(len.to_le_bytes());
        z.extend((!len).to_le_bytes());
        z.extend(block);
    }
    z.extend(adler32(&raw).to_be_bytes());
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut chunk = |kind: &[u8], data: &[u8]| {
        out.extend((data.len() as u32).to_be_bytes());
        let mut c = kind.to_vec();
        c.extend(data);
        out.extend(&c);
        out.extend(crc32(&c).to_be_bytes());
    };
    let mut ihdr = w.to_be_bytes().to_vec();
    ihdr.extend(h.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]);
    chunk(b"IHDR", &ihdr);
    chunk(b"IDAT", &z);
    chunk(b"IEND", &[]);
    out
}

/// An OpenAI-compatible `/images/generations` server: each request's answer is
/// `answer(request body)`, as JSON with HTTP 200.
fn image_server(answer: fn(&Value) -> Value) -> u16 {
    crate::common::http_server(move |path, req| {
        let out = if path.ends_with("/images/generations") {
            answer(req)
        } else {
            json!({"error": {"message": format!("no route {path}")}})
        };
        ("application/json", out.to_string().into_bytes())
    })
}

/// Draws `n` PNGs, each from the prompt's length and its index.
fn painter(req: &Value) -> Value {
    assert_eq!(
        req["response_format"], "b64_json",
        "haca asks for the bytes"
    );
    let n = req["n"].as_u64().unwrap_or(1) as u8;
    let seed = req["prompt"].as_str().unwrap_or_default().len() as u8;
    let data: Vec<Value> = (0..n)
        .map(|i| {
            json!({"b64_json": base64::engine::general_purpose::STANDARD
                .encode(png(16 + i as u32, 8, seed.wrapping_add(i)))})
        })
        .collect();
    json!({"created": 0, "data": data})
}

/// Answers with base64 that decodes to text: not an image.
fn liar(_: &Value) -> Value {
    json!({"created": 0, "data": [{"b64_json": base64::engine::general_purpose::STANDARD
        .encode(b"<html>sorry, no image today</html>")}]})
}

fn start(dir: &std::path::Path) -> Devnet {
    let good = image_server(painter);
    let bad = image_server(liar);
    let node = Devnet::start(
        dir,
        &[
            "--provider",
            &format!("name=pix,url=http://127.0.0.1:{good}/v1,models=painter,kind=image"),
            "--provider",
            &format!(
                "name=fake,url=http://127.0.0.1:{bad}/v1,models=painter,kind=image,fallback=pix"
            ),
            "--provider",
            &format!("name=alone,url=http://127.0.0.1:{bad}/v1,models=painter,kind=image"),
        ],
    );
    wait_ready(&client(), &node.url);
    node
}

fn generate(node: &Devnet, body: Value) -> (u16, Value) {
    let r = client()
        .post(format!("{}/v1/images/generations", node.url))
        .json(&body)
        .send()
        .unwrap();
    (r.status().as_u16(), r.json().unwrap())
}

#[test]
fn images_are_covered_by_the_receipt_and_a_swapped_image_fails_verify() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path());
    let (status, v) = generate(
        &node,
        json!({"model": "pix/painter", "prompt": "a red kite", "n": 2, "size": "256x256",
               "response_format": "b64_json"}),
    );
    assert_eq!(status, 200, "{v}");
    let run = v["haca"]["run_id"].as_str().unwrap().to_owned();
    let images: Vec<Vec<u8>> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            base64::engine::general_purpose::STANDARD
                .decode(d["b64_json"].as_str().unwrap())
                .unwrap()
        })
        .collect();
    assert_eq!(images.len(), 2);
    assert_eq!(images[0], png(16, 8, 10), "the provider's bytes, unchanged");

    // The node serves each image by the hash the run's output lists.
    let http = client();
    for (i, bytes) in images.iter().enumerate() {
        let r = http
            .get(format!("{}/v1/runs/{run}/images/{i}", node.url))
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "image/png");
        assert_eq!(&r.bytes().unwrap()[..], &bytes[..]);
    }
    let r = http
        .get(format!("{}/v1/runs/{run}/images/2", node.url))
        .send()
        .unwrap();
    assert_eq!(r.status(), 404);

    // Offline: the receipt with the image files proves which bytes came back.
    let receipt = http
        .get(format!("{}/v1/runs/{run}/receipt", node.url))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let rfile = dir.path().join("receipt.json");
    std::fs::write(&rfile, receipt).unwrap();
    let (a, b) = (dir.path().join("a.png"), dir.path().join("b.png"));
    std::fs::write(&a, &images[0]).unwrap();
    std::fs::write(&b, &images[1]).unwrap();
    let (s, _) = (a.to_str().unwrap(), b.to_str().unwrap());
    let (ok, out) = node.verify(&rfile, &["--image", s, "--image", b.to_str().unwrap()]);
    assert!(ok, "{out}");
    assert!(
        out.contains("images: 2 file(s) are the images the run served"),
        "{out}"
    );
    // Swapped order, a changed image, or one image missing: not what the run served.
    let (ok, out) = node.verify(&rfile, &["--image", b.to_str().unwrap(), "--image", s]);
    assert!(!ok, "{out}");
    assert!(out.contains("not the images the run served"), "{out}");
    let c = dir.path().join("c.png");
    std::fs::write(&c, png(16, 8, 11)).unwrap();
    let (ok, out) = node.verify(
        &rfile,
        &[
            "--image",
            c.to_str().unwrap(),
            "--image",
            b.to_str().unwrap(),
        ],
    );
    assert!(!ok, "{out}");
    let (ok, out) = node.verify(&rfile, &["--image", s]);
    assert!(!ok, "{out}");
}

#[test]
fn an_answer_that_is_not_an_image_is_refused_and_the_next_route_serves() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path());
    let (status, v) = generate(&node, json!({"model": "fake/painter", "prompt": "a kite"}));
    assert_eq!(status, 200, "{v}");
    let route = &v["haca"]["route"];
    assert_eq!(route["provider"], "pix/painter", "{route}");
    let attempts = route["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[0]["outcome"], "failed");
    assert!(
        attempts[0]["error"]
            .as_str()
            .unwrap()
            .contains("is not a PNG, JPEG or WebP image"),
        "{route}"
    );
    // response_format url: the image is at the node, by its hash.
    let url = v["data"][0]["url"].as_str().unwrap();
    let bytes = client().get(url).send().unwrap().bytes().unwrap();
    assert_eq!(&bytes[..], &png(16, 8, 6)[..]);

    // No other route: the request fails, naming why, and no run is stored.
    let (status, v) = generate(&node, json!({"model": "alone/painter", "prompt": "a kite"}));
    assert_eq!(status, 502, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not a PNG"),
        "{v}"
    );
    // Bad input names its field before anything is sent.
    let (status, v) = generate(
        &node,
        json!({"model": "pix/painter", "prompt": "x", "n": 7}),
    );
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["param"], "n", "{v}");
    let (status, v) = generate(
        &node,
        json!({"model": "pix/painter", "prompt": "x", "privacy": "tee"}),
    );
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["code"], "privacy_unmet", "{v}");
}

#[test]
fn an_image_over_the_size_limit_is_refused_and_the_next_route_serves() {
    let dir = tempfile::tempdir().unwrap();
    let (small, big) = (image_server(painter), image_server(big_painter));
    let node = Devnet::start(
        dir.path(),
        &[
            "--max-image-bytes",
            "1048576",
            "--provider",
            &format!("name=pix,url=http://127.0.0.1:{small}/v1,models=painter,kind=image"),
            "--provider",
            &format!(
                "name=huge,url=http://127.0.0.1:{big}/v1,models=painter,kind=image,fallback=pix"
            ),
        ],
    );
    wait_ready(&client(), &node.url);
    let (status, v) = generate(&node, json!({"model": "huge/painter", "prompt": "a kite"}));
    assert_eq!(status, 200, "{v}");
    let attempts = v["haca"]["route"]["attempts"].as_array().unwrap();
    assert_eq!(attempts[0]["outcome"], "failed");
    let error = attempts[0]["error"].as_str().unwrap();
    // The answer (4 MiB of base64) passes the body cap of a 1 MiB image, as base64 with room
    // for the JSON around it, before the image itself is decoded and sized.
    let cap = (1usize << 20) * 4 / 3 + (64 << 10);
    assert!(
        error.contains(&format!("its answer is over {cap} bytes")),
        "{error}"
    );
    assert_eq!(v["haca"]["route"]["provider"], "pix/painter");
}

#[test]
fn haca_image_writes_the_file_the_receipt_covers() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path());
    let out = dir.path().join("kite.png");
    let o = node.haca_ok(&[
        "image",
        "a kite",
        "--model",
        "pix/painter",
        "--out",
        out.to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(
        crate::common::last_line(&o),
        out.to_str().unwrap(),
        "{text}"
    );
    assert_eq!(std::fs::read(&out).unwrap(), png(16, 8, 6));
    let run = text
        .lines()
        .find_map(|l| l.strip_prefix("run "))
        .unwrap()
        .to_owned();
    let receipt = client()
        .get(format!("{}/v1/runs/{run}/receipt", node.url))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let rfile = dir.path().join("r.json");
    std::fs::write(&rfile, receipt).unwrap();
    let (ok, out) = node.verify(&rfile, &["--image", out.to_str().unwrap()]);
    assert!(ok, "{out}");
}

/// Draws one 1024x1024 PNG (3 MiB, stored blocks), whatever the prompt.
fn big_painter(_: &Value) -> Value {
    static BIG: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let b64 =
        BIG.get_or_init(|| base64::engine::general_purpose::STANDARD.encode(png(1024, 1024, 7)));
    json!({"created": 0, "data": [{"b64_json": b64}]})
}

/// BENCHMARKS.md's image route overhead: the same image server called directly and through
/// the node (plan, hash, check, store, sign, commit), sequentially.
/// `cargo test --release -p haca --test it bench_image_route_overhead -- --ignored --nocapture`
#[test]
#[ignore]
fn bench_image_route_overhead() {
    let dir = tempfile::tempdir().unwrap();
    let small = image_server(painter);
    let big = image_server(big_painter);
    let node = Devnet::start(
        dir.path(),
        &[
            "--provider",
            &format!("name=small,url=http://127.0.0.1:{small}/v1,models=p,kind=image"),
            "--provider",
            &format!("name=big,url=http://127.0.0.1:{big}/v1,models=p,kind=image"),
        ],
    );
    let http = client();
    wait_ready(&http, &node.url);
    let body = |m: &str| json!({"model": m, "prompt": "a kite", "response_format": "url"});
    let pct = |mut v: Vec<f64>, q: f64| {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[((v.len() - 1) as f64 * q) as usize]
    };
    for (name, port, runs) in [("small", small, 200), ("big", big, 30)] {
        let mut direct = Vec::new();
        let mut routed = Vec::new();
        for _ in 0..runs {
            let t = std::time::Instant::now();
            let r = http
                .post(format!("http://127.0.0.1:{port}/v1/images/generations"))
                .json(&json!({"model": "p", "prompt": "a kite", "response_format": "b64_json"}))
                .send()
                .unwrap();
            let _ = r.bytes().unwrap();
            direct.push(t.elapsed().as_secs_f64() * 1e3);
            let t = std::time::Instant::now();
            let r = http
                .post(format!("{}/v1/images/generations", node.url))
                .json(&body(&format!("{name}/p")))
                .send()
                .unwrap();
            assert_eq!(r.status(), 200);
            let _ = r.bytes().unwrap();
            routed.push(t.elapsed().as_secs_f64() * 1e3);
        }
        println!(
            "{name}: {runs} runs; direct p50 {:.2} ms p95 {:.2} ms; through haca p50 {:.2} ms p95 {:.2} ms; overhead p50 {:.2} ms",
            pct(direct.clone(), 0.5),
            pct(direct.clone(), 0.95),
            pct(routed.clone(), 0.5),
            pct(routed.clone(), 0.95),
            pct(routed, 0.5) - pct(direct, 0.5)
        );
    }
}

/// The panel's image button in a real browser (web/tests/image_button.test.mjs), when Chromium
/// and playwright-core are there (`.ci/run` installs both; CI requires them).
#[test]
fn the_panel_image_button_shows_the_image_with_its_hash_and_boxes() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let chromium = std::path::PathBuf::from(
        std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()),
    );
    if !(chromium.exists() && repo.join("web/node_modules/playwright-core").exists()) {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have Chromium and web/node_modules"
        );
        eprintln!("skipped: no Chromium or no web/node_modules (npm ci --prefix web)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path());
    let status = std::process::Command::new("node")
        .arg(repo.join("web/tests/image_button.test.mjs"))
        .current_dir(repo.join("web"))
        .env("HACA_URL", &node.url)
        .env("OUT", dir.path().join("shots"))
        .env("CHROMIUM", &chromium)
        .status()
        .expect("run node");
    assert!(status.success(), "the image button's browser test failed");
}
