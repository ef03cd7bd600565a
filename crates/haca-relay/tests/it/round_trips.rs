//! haca's own client and gateway halves together: single-shot and chunked answers, both
//! AEADs, BHTTP and JSON inside, chunked bodies read in any pieces.

use haca_relay::bhttp::{InnerFormat, InnerRequest, InnerResponse};
use haca_relay::{decapsulate, encapsulate, encapsulate_with, Aead, KeyPair, KeyRing};

fn ring() -> KeyRing {
    KeyRing::new(KeyPair::from_seed(1, &[7; 32]).unwrap())
}

#[test]
fn a_json_body_goes_and_a_single_shot_answer_comes_back_with_either_aead() {
    let ring = ring();
    for aead in [Aead::ChaCha20Poly1305, Aead::Aes128Gcm] {
        let body = br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
        let (request, client) = encapsulate_with(ring.current().config(), aead, body).unwrap();
        assert_eq!(request.len(), 7 + 32 + body.len() + 16);
        let (plaintext, ctx) = decapsulate(&ring, &request).unwrap();
        assert_eq!(plaintext, body);
        assert_eq!(InnerFormat::sniff(&plaintext), InnerFormat::Json);
        assert_eq!(ctx.header().aead_id, aead.id());
        let response = ctx.encapsulate(b"{\"ok\":true}").unwrap();
        assert_eq!(response.len(), aead.response_nonce_len() + 11 + 16);
        assert_eq!(client.open(&response).unwrap(), b"{\"ok\":true}");
    }
}

#[test]
fn the_client_picks_the_gateways_first_suite() {
    let ring = ring();
    let (request, _) = encapsulate(ring.current().config(), b"x").unwrap();
    assert_eq!(request[..7], [1, 0, 0x20, 0, 1, 0, 3]);
}

#[test]
fn a_bhttp_request_and_response_travel_inside() {
    let ring = ring();
    let inner = InnerRequest {
        method: "POST".into(),
        scheme: "https".into(),
        authority: "gateway.haca".into(),
        path: "/v1/chat/completions".into(),
        headers: vec![("content-type".into(), "application/json".into())],
        body: br#"{"model":"m"}"#.to_vec(),
    };
    let (request, client) = encapsulate(ring.current().config(), &inner.encode().unwrap()).unwrap();
    let (plaintext, ctx) = decapsulate(&ring, &request).unwrap();
    assert_eq!(InnerFormat::sniff(&plaintext), InnerFormat::Bhttp);
    assert_eq!(InnerRequest::decode(&plaintext).unwrap(), inner);
    let answer = InnerResponse {
        status: 402,
        headers: vec![("payment-required".into(), "e30=".into())],
        body: vec![],
    };
    let response = ctx.encapsulate(&answer.encode().unwrap()).unwrap();
    let opened = InnerResponse::decode(&client.open(&response).unwrap()).unwrap();
    assert_eq!(opened, answer);
}

#[test]
fn a_chunked_answer_reads_back_in_any_pieces() {
    let ring = ring();
    for aead in [Aead::ChaCha20Poly1305, Aead::Aes128Gcm] {
        let chunks: Vec<Vec<u8>> = vec![
            b"data: one\n\n".to_vec(),
            vec![],
            vec![0xab; 300], // a two-byte length prefix
            b"data: three\n\n".to_vec(),
        ];
        let last = b"data: [DONE]\n\n";
        let (request, client) = encapsulate_with(ring.current().config(), aead, b"{}").unwrap();
        let (_, ctx) = decapsulate(&ring, &request).unwrap();
        let mut encoder = ctx.chunked().unwrap();
        let mut body = encoder.start();
        assert_eq!(body.len(), aead.response_nonce_len());
        assert!(encoder.start().is_empty(), "the nonce is sent once");
        for c in &chunks {
            body.extend(encoder.push(c).unwrap());
        }
        body.extend(encoder.finish(last).unwrap());
        let mut expected = chunks.clone();
        expected.push(last.to_vec());

        assert_eq!(client.clone().open_chunked(&body).unwrap(), expected);
        for piece in 1..=17 {
            let mut decoder = client.clone().chunked();
            let mut got = Vec::new();
            let pieces: Vec<&[u8]> = body.chunks(piece).collect();
            for (i, p) in pieces.iter().enumerate() {
                got.extend(decoder.push(p, i + 1 == pieces.len()).unwrap());
            }
            assert_eq!(got, expected, "{aead:?}, pieces of {piece}");
        }
    }
}

#[test]
fn a_streamed_body_fed_byte_by_byte_yields_each_chunk_as_it_completes() {
    let ring = ring();
    let (request, client) = encapsulate(ring.current().config(), b"{}").unwrap();
    let (_, ctx) = decapsulate(&ring, &request).unwrap();
    let mut encoder = ctx.chunked().unwrap();
    let first = encoder.push(b"alpha").unwrap();
    let second = encoder.push(b"beta").unwrap();
    let end = encoder.finish(b"").unwrap();
    let mut decoder = client.chunked();
    let mut got = Vec::new();
    for (i, b) in first.iter().enumerate() {
        let out = decoder.push(&[*b], false).unwrap();
        if i + 1 < first.len() {
            assert!(out.is_empty(), "nothing before the chunk completes");
        } else {
            assert_eq!(out, vec![b"alpha".to_vec()]);
        }
        got.extend(out);
    }
    got.extend(decoder.push(&second, false).unwrap());
    // The final chunk is only read at the end of the stream.
    assert!(decoder.push(&end, false).unwrap().is_empty());
    got.extend(decoder.push(&[], true).unwrap());
    assert_eq!(got, vec![b"alpha".to_vec(), b"beta".to_vec(), vec![]]);
}

#[test]
fn an_answer_with_only_a_final_chunk_reads_back() {
    let ring = ring();
    let (request, client) = encapsulate(ring.current().config(), b"{}").unwrap();
    let (_, ctx) = decapsulate(&ring, &request).unwrap();
    let body = ctx.chunked().unwrap().finish(b"all at once").unwrap();
    assert_eq!(
        client.open_chunked(&body).unwrap(),
        vec![b"all at once".to_vec()]
    );
}
