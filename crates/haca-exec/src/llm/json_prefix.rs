//! An incremental JSON recognizer: does this text still lead to valid JSON, and is the value
//! complete? The local model's `response_format: json_object` and forced tool calls sample
//! only tokens that keep it valid, so the answer parses by construction.

/// Where the recognizer is inside a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ctx {
    ObjKeyOrEnd,
    ObjKey,
    ObjColon,
    ObjValue,
    ObjCommaOrEnd,
    ArrValueOrEnd,
    ArrValue,
    ArrCommaOrEnd,
}

/// The token being lexed, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lex {
    None,
    /// Inside a string: after a backslash, or with this many hex digits of `\u` left.
    Str {
        backslash: bool,
        hex_left: u8,
        len: u32,
    },
    Num(Num),
    Lit {
        word: &'static str,
        at: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Num {
    Minus,
    Zero,
    Int,
    Dot,
    Frac,
    Exp,
    ExpSign,
    ExpDigits,
}

/// Deepest nesting accepted, the longest whitespace run and the longest string, in
/// characters: a small model can loop on whitespace or ramble inside a string, and a bound
/// on both keeps an answer within its token budget.
const MAX_DEPTH: usize = 32;
const MAX_WHITESPACE_RUN: u32 = 3;
const MAX_STRING_CHARS: u32 = 120;

#[derive(Debug, Clone)]
pub struct JsonPrefix {
    stack: Vec<Ctx>,
    lex: Lex,
    started: bool,
    done: bool,
    whitespace_run: u32,
    object_only: bool,
}

impl JsonPrefix {
    /// A recognizer whose top-level value must be an object.
    pub fn object() -> Self {
        JsonPrefix {
            stack: Vec::new(),
            lex: Lex::None,
            started: false,
            done: false,
            whitespace_run: 0,
            object_only: true,
        }
    }

    /// True once a whole top-level value has been read.
    pub fn is_complete(&self) -> bool {
        self.done
    }

    /// Feeds `text`; false (and the state is unspecified) when it cannot continue valid JSON.
    pub fn feed(&mut self, text: &str) -> bool {
        text.chars().all(|c| self.push(c))
    }

    /// Whether `text` would keep the prefix valid, without changing it.
    pub fn accepts(&self, text: &str) -> bool {
        self.clone().feed(text)
    }

    fn push(&mut self, c: char) -> bool {
        match self.lex {
            Lex::Str {
                backslash,
                hex_left,
                len,
            } => {
                let len = len + 1;
                if len > MAX_STRING_CHARS && (c != '"' || backslash || hex_left > 0) {
                    return false;
                }
                if hex_left > 0 {
                    if !c.is_ascii_hexdigit() {
                        return false;
                    }
                    self.lex = Lex::Str {
                        backslash: false,
                        hex_left: hex_left - 1,
                        len,
                    };
                } else if backslash {
                    self.lex = match c {
                        'u' => Lex::Str {
                            backslash: false,
                            hex_left: 4,
                            len,
                        },
                        '"' | '\\' | '/' | 'b' | 'f' | 'n' | 'r' | 't' => Lex::Str {
                            backslash: false,
                            hex_left: 0,
                            len,
                        },
                        _ => return false,
                    };
                } else if c == '\\' {
                    self.lex = Lex::Str {
                        backslash: true,
                        hex_left: 0,
                        len,
                    };
                } else if c == '"' {
                    self.lex = Lex::None;
                    self.value_done();
                } else if (c as u32) < 0x20 {
                    return false;
                } else {
                    self.lex = Lex::Str {
                        backslash: false,
                        hex_left: 0,
                        len,
                    };
                }
                return true;
            }
            Lex::Num(n) => {
                let next = match (n, c) {
                    (Num::Minus, '0') => Some(Num::Zero),
                    (Num::Minus, '1'..='9') => Some(Num::Int),
                    (Num::Int, '0'..='9') => Some(Num::Int),
                    (Num::Zero | Num::Int, '.') => Some(Num::Dot),
                    (Num::Dot | Num::Frac, '0'..='9') => Some(Num::Frac),
                    (Num::Zero | Num::Int | Num::Frac, 'e' | 'E') => Some(Num::Exp),
                    (Num::Exp, '+' | '-') => Some(Num::ExpSign),
                    (Num::Exp | Num::ExpSign | Num::ExpDigits, '0'..='9') => Some(Num::ExpDigits),
                    _ => None,
                };
                if let Some(next) = next {
                    self.lex = Lex::Num(next);
                    return true;
                }
                if !matches!(n, Num::Zero | Num::Int | Num::Frac | Num::ExpDigits) {
                    return false;
                }
                self.lex = Lex::None;
                self.value_done();
                // `c` ends the number; it is structure.
            }
            Lex::Lit { word, at } => {
                if word.as_bytes().get(at) != Some(&(c as u8)) || !c.is_ascii() {
                    return false;
                }
                if at + 1 == word.len() {
                    self.lex = Lex::None;
                    self.value_done();
                } else {
                    self.lex = Lex::Lit { word, at: at + 1 };
                }
                return true;
            }
            Lex::None => {}
        }
        if matches!(c, ' ' | '\n') {
            // Not before the value: an answer starts with it.
            self.whitespace_run += 1;
            return self.started && self.whitespace_run <= MAX_WHITESPACE_RUN;
        }
        self.whitespace_run = 0;
        if self.done {
            return false;
        }
        let Some(top) = self.stack.last_mut() else {
            if self.started || (self.object_only && c != '{') {
                return false;
            }
            self.started = true;
            return self.value_start(c);
        };
        match (*top, c) {
            (Ctx::ObjKeyOrEnd | Ctx::ObjCommaOrEnd, '}') => self.close(),
            (Ctx::ObjKeyOrEnd | Ctx::ObjKey, '"') => {
                *top = Ctx::ObjColon;
                self.lex = Lex::Str {
                    backslash: false,
                    hex_left: 0,
                    len: 0,
                };
                true
            }
            (Ctx::ObjColon, ':') => {
                *top = Ctx::ObjValue;
                true
            }
            (Ctx::ObjValue, _) => {
                *top = Ctx::ObjCommaOrEnd;
                self.value_start(c)
            }
            (Ctx::ObjCommaOrEnd, ',') => {
                *top = Ctx::ObjKey;
                true
            }
            (Ctx::ArrValueOrEnd | Ctx::ArrCommaOrEnd, ']') => self.close(),
            (Ctx::ArrValueOrEnd | Ctx::ArrValue, _) => {
                *top = Ctx::ArrCommaOrEnd;
                self.value_start(c)
            }
            (Ctx::ArrCommaOrEnd, ',') => {
                *top = Ctx::ArrValue;
                true
            }
            _ => false,
        }
    }

    fn value_start(&mut self, c: char) -> bool {
        match c {
            '{' | '[' => {
                if self.stack.len() >= MAX_DEPTH {
                    return false;
                }
                self.stack.push(if c == '{' {
                    Ctx::ObjKeyOrEnd
                } else {
                    Ctx::ArrValueOrEnd
                });
            }
            '"' => {
                self.lex = Lex::Str {
                    backslash: false,
                    hex_left: 0,
                    len: 0,
                }
            }
            '-' => self.lex = Lex::Num(Num::Minus),
            '0' => self.lex = Lex::Num(Num::Zero),
            '1'..='9' => self.lex = Lex::Num(Num::Int),
            't' => {
                self.lex = Lex::Lit {
                    word: "true",
                    at: 1,
                }
            }
            'f' => {
                self.lex = Lex::Lit {
                    word: "false",
                    at: 1,
                }
            }
            'n' => {
                self.lex = Lex::Lit {
                    word: "null",
                    at: 1,
                }
            }
            _ => return false,
        }
        true
    }

    fn close(&mut self) -> bool {
        self.stack.pop();
        self.value_done();
        true
    }

    /// A value (or key) ended; at top level that completes the document.
    fn value_done(&mut self) {
        if self.stack.is_empty() {
            self.done = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn complete(s: &str) -> bool {
        let mut j = JsonPrefix::object();
        j.feed(s) && j.is_complete()
    }

    #[test]
    fn objects_complete_and_prefixes_stay_open() {
        assert!(complete(
            r#"{"a": [1, -2.5e+3, true, null, {"b": "x\"\u00e9"}], "c": {}}"#
        ));
        let mut j = JsonPrefix::object();
        assert!(j.feed(r#"{"a": [1, 2"#));
        assert!(!j.is_complete());
        for bad in [
            r#"[1]"#,
            r#"{"a" 1}"#,
            r#"{"a": 01}"#,
            r#"{"a": tru}"#,
            "{} x",
            r#"{"a":1,}"#,
            "{\"a\n\": 1}",
        ] {
            assert!(
                !complete(bad),
                "{bad} should not be accepted as complete valid JSON"
            );
        }
    }

    proptest! {
        /// Whatever serde_json writes for an object is accepted, and every proper prefix of it
        /// is accepted but incomplete.
        #[test]
        fn serde_json_objects_are_accepted(v in proptest::collection::btree_map(
            "[a-z\"\\\\é]{0,6}",
            prop_oneof![any::<i64>().prop_map(serde_json::Value::from),
                        any::<bool>().prop_map(serde_json::Value::from),
                        "[ -~é\n]{0,8}".prop_map(serde_json::Value::from),
                        (-1e6f64..1e6).prop_map(serde_json::Value::from)],
            0..5)) {
            let text = serde_json::to_string(&v).unwrap().replace(",", ", ");
            let mut j = JsonPrefix::object();
            for (i, c) in text.char_indices() {
                prop_assert!(!j.is_complete() || c.is_whitespace(), "complete early at {i} in {text}");
                prop_assert!(j.push(c), "refused {c:?} at {i} in {text}");
            }
            prop_assert!(j.is_complete());
        }
    }
}
