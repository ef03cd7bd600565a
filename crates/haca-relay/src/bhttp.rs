//! The message inside the encapsulation. Standard OHTTP clients seal a Binary HTTP message
//! (RFC 9292); OpenGradient's client seals a bare JSON chat body and expects JSON back.
//! [`InnerFormat::sniff`] tells them apart; [`InnerRequest`] and [`InnerResponse`] read and
//! write known-length BHTTP through the `bhttp` crate.

use crate::OhttpError;
use std::io::Cursor;

/// Which kind of message a decapsulated plaintext is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InnerFormat {
    /// A BHTTP request: framing indicator 0 (known length) or 2 (indeterminate length).
    Bhttp,
    /// A JSON value (OpenGradient's client: a chat completion body).
    Json,
    /// Neither.
    Unknown,
}

impl InnerFormat {
    /// Looks at the first byte only; the parser of the chosen format has the last word.
    pub fn sniff(plaintext: &[u8]) -> InnerFormat {
        match plaintext.iter().find(|b| !b" \t\r\n".contains(b)) {
            _ if matches!(plaintext.first(), Some(0 | 2)) => InnerFormat::Bhttp,
            Some(b'{' | b'[') => InnerFormat::Json,
            _ => InnerFormat::Unknown,
        }
    }
}

/// A request as carried in BHTTP. Header names are lowercase, as BHTTP requires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InnerRequest {
    pub method: String,
    pub scheme: String,
    pub authority: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// A final response as carried in BHTTP (informational responses are dropped on reading).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InnerResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

fn bhttp_err(e: impl std::fmt::Display) -> OhttpError {
    OhttpError::Bhttp(e.to_string())
}

fn utf8(what: &str, bytes: &[u8]) -> Result<String, OhttpError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| OhttpError::Bhttp(format!("{what} is not UTF-8")))
}

fn read_message(bytes: &[u8]) -> Result<::bhttp::Message, OhttpError> {
    let mut cursor = Cursor::new(bytes);
    let message = ::bhttp::Message::read_bhttp(&mut cursor).map_err(bhttp_err)?;
    // Known-length messages may carry zero padding after the trailer (RFC 9292 section 3.8).
    let rest = &bytes[usize::try_from(cursor.position()).unwrap_or(bytes.len())..];
    if rest.iter().any(|b| *b != 0) {
        return Err(OhttpError::Bhttp(
            "bytes after the message that are not padding".into(),
        ));
    }
    Ok(message)
}

fn fields(message: &::bhttp::Message) -> Result<Vec<(String, String)>, OhttpError> {
    message
        .header()
        .iter()
        .map(|f| {
            Ok((
                utf8("a header name", f.name())?,
                utf8("a header value", f.value())?,
            ))
        })
        .collect()
}

impl InnerRequest {
    /// Known-length BHTTP (framing indicator 0).
    pub fn encode(&self) -> Result<Vec<u8>, OhttpError> {
        let mut m = ::bhttp::Message::request(
            self.method.as_bytes().to_vec(),
            self.scheme.as_bytes().to_vec(),
            self.authority.as_bytes().to_vec(),
            self.path.as_bytes().to_vec(),
        );
        for (n, v) in &self.headers {
            m.put_header(n.to_ascii_lowercase().into_bytes(), v.as_bytes().to_vec());
        }
        m.write_content(&self.body);
        let mut out = Vec::new();
        m.write_bhttp(::bhttp::Mode::KnownLength, &mut out)
            .map_err(bhttp_err)?;
        Ok(out)
    }

    /// Reads a BHTTP request, either length mode.
    pub fn decode(bytes: &[u8]) -> Result<InnerRequest, OhttpError> {
        let m = read_message(bytes)?;
        let c = m.control();
        let (Some(method), Some(path)) = (c.method(), c.path()) else {
            return Err(OhttpError::Bhttp(
                "a response where a request was expected".into(),
            ));
        };
        Ok(InnerRequest {
            method: utf8("the method", method)?,
            scheme: utf8("the scheme", c.scheme().unwrap_or_default())?,
            authority: utf8("the authority", c.authority().unwrap_or_default())?,
            path: utf8("the path", path)?,
            headers: fields(&m)?,
            body: m.content().to_vec(),
        })
    }
}

impl InnerResponse {
    /// Known-length BHTTP (framing indicator 1).
    pub fn encode(&self) -> Result<Vec<u8>, OhttpError> {
        let status = ::bhttp::StatusCode::try_from(self.status).map_err(bhttp_err)?;
        let mut m = ::bhttp::Message::response(status);
        for (n, v) in &self.headers {
            m.put_header(n.to_ascii_lowercase().into_bytes(), v.as_bytes().to_vec());
        }
        m.write_content(&self.body);
        let mut out = Vec::new();
        m.write_bhttp(::bhttp::Mode::KnownLength, &mut out)
            .map_err(bhttp_err)?;
        Ok(out)
    }

    /// Reads a BHTTP response, either length mode.
    pub fn decode(bytes: &[u8]) -> Result<InnerResponse, OhttpError> {
        let m = read_message(bytes)?;
        let Some(status) = m.control().status() else {
            return Err(OhttpError::Bhttp(
                "a request where a response was expected".into(),
            ));
        };
        Ok(InnerResponse {
            status: status.code(),
            headers: fields(&m)?,
            body: m.content().to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc9458_appendix_a_messages_decode() {
        let get = hex::decode("00034745540568747470730b6578616d706c652e636f6d012f").unwrap();
        let req = InnerRequest::decode(&get).unwrap();
        assert_eq!(
            (
                req.method.as_str(),
                req.scheme.as_str(),
                req.authority.as_str(),
                req.path.as_str()
            ),
            ("GET", "https", "example.com", "/")
        );
        // The RFC's example leaves out the empty header, content and trailer (section 3.8
        // allows it); the encoder writes their zero lengths. Both read the same.
        let ours = req.encode().unwrap();
        assert_eq!(ours[..get.len()], get[..]);
        assert_eq!(ours[get.len()..], [0, 0, 0]);
        assert_eq!(InnerRequest::decode(&ours).unwrap(), req);
        let ok = InnerResponse::decode(&[0x01, 0x40, 0xc8]).unwrap();
        assert_eq!(ok.status, 200);
        assert!(ok.body.is_empty());
    }

    #[test]
    fn a_post_with_headers_and_body_round_trips() {
        let req = InnerRequest {
            method: "POST".into(),
            scheme: "https".into(),
            authority: "gateway.haca".into(),
            path: "/v1/chat/completions".into(),
            headers: vec![("content-type".into(), "application/json".into())],
            body: br#"{"model":"m"}"#.to_vec(),
        };
        let bytes = req.encode().unwrap();
        assert_eq!(InnerFormat::sniff(&bytes), InnerFormat::Bhttp);
        assert_eq!(InnerRequest::decode(&bytes).unwrap(), req);
        let mut padded = bytes.clone();
        padded.extend_from_slice(&[0; 5]);
        assert_eq!(InnerRequest::decode(&padded).unwrap(), req);
        assert!(InnerResponse::decode(&bytes).is_err());
    }

    #[test]
    fn sniff_tells_json_from_bhttp() {
        assert_eq!(InnerFormat::sniff(b" {\"a\":1}"), InnerFormat::Json);
        assert_eq!(InnerFormat::sniff(b"hello"), InnerFormat::Unknown);
        assert_eq!(InnerFormat::sniff(b""), InnerFormat::Unknown);
    }
}
