//! The header of a `.npy` file is a Python dictionary literal: strings in single or
//! double quotes, `True` and `False`, tuples of integers. This reads that much of Python's
//! syntax, and takes anything bracketed (a list describing a structured dtype) whole, as
//! text, for the caller to refuse.

use crate::error::NpyErrorKind;

pub(super) fn bad_header(text: &[u8], reason: &str) -> NpyErrorKind {
    const SHOWN: usize = 200;
    let mut header = String::from_utf8_lossy(&text[..text.len().min(SHOWN)]).into_owned();
    if text.len() > SHOWN {
        header.push_str("...");
    }
    NpyErrorKind::BadHeader {
        header,
        reason: reason.into(),
    }
}

/// A value of the header dictionary.
#[derive(Clone, Debug)]
pub(super) enum Literal {
    Str(String),
    Bool(bool),
    /// A tuple of non-negative integers; those past `u64::MAX` are clamped to it, so
    /// that the shape overflows.
    Tuple(Vec<u64>),
    /// Anything else (a list describing a structured dtype, `None`), as written.
    Other(String),
}

/// The header's dictionary, keys in the order written.
pub(super) struct Dict<'a> {
    text: &'a [u8],
    pub(super) entries: Vec<(String, Literal)>,
}

impl<'a> Dict<'a> {
    pub(super) fn parse(text: &'a [u8]) -> Result<Self, NpyErrorKind> {
        let mut p = Parser { text, at: 0 };
        let entries = p.dict().map_err(|reason| bad_header(text, &reason))?;
        Ok(Self { text, entries })
    }

    pub(super) fn get(&self, key: &str) -> Result<&Literal, NpyErrorKind> {
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
            .ok_or_else(|| bad_header(self.text, &format!("no {key:?} key")))
    }
}

/// A recursive-descent reader of the little Python literal syntax headers use.
struct Parser<'a> {
    text: &'a [u8],
    at: usize,
}

impl Parser<'_> {
    fn skip_space(&mut self) {
        while self.text.get(self.at).is_some_and(u8::is_ascii_whitespace) {
            self.at += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_space();
        self.text.get(self.at).copied()
    }

    fn expect(&mut self, c: u8) -> Result<(), String> {
        match self.peek() {
            Some(found) if found == c => {
                self.at += 1;
                Ok(())
            }
            Some(found) => Err(format!(
                "expected {:?} at byte {}, found {:?}",
                c as char, self.at, found as char
            )),
            None => Err(format!("expected {:?}, found the end", c as char)),
        }
    }

    fn dict(&mut self) -> Result<Vec<(String, Literal)>, String> {
        self.expect(b'{')?;
        let mut entries = Vec::new();
        loop {
            if self.peek() == Some(b'}') {
                self.at += 1;
                break;
            }
            let key = self.string()?;
            self.expect(b':')?;
            let value = self.value()?;
            if entries.iter().any(|(k, _)| *k == key) {
                return Err(format!("key {key:?} appears twice"));
            }
            entries.push((key, value));
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b'}') => {}
                _ => return Err(format!("expected ',' or '}}' at byte {}", self.at)),
            }
        }
        if self.peek().is_some() {
            return Err(format!(
                "unexpected text after the dictionary at byte {}",
                self.at
            ));
        }
        Ok(entries)
    }

    fn string(&mut self) -> Result<String, String> {
        let quote = match self.peek() {
            Some(q @ (b'\'' | b'"')) => q,
            _ => return Err(format!("expected a quoted string at byte {}", self.at)),
        };
        let start = self.at + 1;
        let len = self.text[start..]
            .iter()
            .position(|&c| c == quote || c == b'\\')
            .ok_or("unterminated string")?;
        if self.text[start + len] == b'\\' {
            return Err("escapes in strings are not read".into());
        }
        self.at = start + len + 1;
        Ok(String::from_utf8_lossy(&self.text[start..start + len]).into_owned())
    }

    fn value(&mut self) -> Result<Literal, String> {
        match self.peek() {
            Some(b'\'' | b'"') => self.string().map(Literal::Str),
            Some(b'(') => self.tuple(),
            Some(b'[' | b'{') => self.nested().map(Literal::Other),
            Some(c) if c.is_ascii_alphabetic() => {
                let start = self.at;
                while self
                    .text
                    .get(self.at)
                    .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_')
                {
                    self.at += 1;
                }
                Ok(match &self.text[start..self.at] {
                    b"True" => Literal::Bool(true),
                    b"False" => Literal::Bool(false),
                    word => Literal::Other(String::from_utf8_lossy(word).into_owned()),
                })
            }
            _ => Err(format!("expected a value at byte {}", self.at)),
        }
    }

    fn tuple(&mut self) -> Result<Literal, String> {
        self.expect(b'(')?;
        let mut dims = Vec::new();
        loop {
            match self.peek() {
                Some(b')') => {
                    self.at += 1;
                    return Ok(Literal::Tuple(dims));
                }
                Some(c) if c.is_ascii_digit() => {
                    let mut value = 0u64;
                    while let Some(d) = self.text.get(self.at).filter(|c| c.is_ascii_digit()) {
                        value = value.saturating_mul(10).saturating_add(u64::from(d - b'0'));
                        self.at += 1;
                    }
                    // Python 2 wrote long integers with a suffix.
                    if self.text.get(self.at) == Some(&b'L') {
                        self.at += 1;
                    }
                    dims.push(value);
                    match self.peek() {
                        Some(b',') => self.at += 1,
                        Some(b')') => {}
                        _ => return Err(format!("expected ',' or ')' at byte {}", self.at)),
                    }
                }
                _ => {
                    return Err(format!(
                        "expected a non-negative integer or ')' at byte {}",
                        self.at
                    ))
                }
            }
        }
    }

    /// A bracketed value taken whole, quotes and nesting respected.
    fn nested(&mut self) -> Result<String, String> {
        let start = self.at;
        let mut depth = 0usize;
        let mut quote = None;
        while let Some(&c) = self.text.get(self.at) {
            self.at += 1;
            match (quote, c) {
                (Some(q), _) if c == q => quote = None,
                (Some(_), _) => {}
                (None, b'\'' | b'"') => quote = Some(c),
                (None, b'[' | b'(' | b'{') => depth += 1,
                (None, b']' | b')' | b'}') => {
                    depth -= 1;
                    if depth == 0 {
                        return Ok(String::from_utf8_lossy(&self.text[start..self.at]).into_owned());
                    }
                }
                _ => {}
            }
        }
        Err("unbalanced brackets".into())
    }
}
