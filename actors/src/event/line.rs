//! The TCP line format: bytes → lines of bounded length ([`LineSplitter`]) → what
//! each line is ([`parse_line`]): `ping`, an event tagged with its `kind`, or
//! something answered with an error at once. The socket side lives in the `flujo`
//! crate's TCP transport; this part is pure, so it can be tested and fuzzed alone.

use super::{tagged_kind, Kind};
use serde_json::Value;

/// One input line (without its newline and a trailing `\r`), or the fact that it was
/// too long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// The line's bytes.
    Text(Vec<u8>),
    /// The line was over the limit; its bytes were dropped.
    TooLong,
}

impl Line {
    /// The bytes the line holds in memory.
    pub fn len(&self) -> usize {
        match self {
            Line::Text(text) => text.len(),
            Line::TooLong => 0,
        }
    }

    /// True when the line holds no bytes (an empty or a dropped line).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Splits a byte stream, fed in pieces of any size, into lines of at most `max`
/// bytes without ever holding more than that; a longer line is skipped up to its
/// newline and reported as [`Line::TooLong`]. A partial line stays here between
/// pieces, so a reader built on it is cancel-safe.
#[derive(Debug)]
pub struct LineSplitter {
    line: Vec<u8>,
    discarding: bool,
    max: usize,
}

impl LineSplitter {
    /// A splitter for lines of at most `max` bytes (a trailing `\r` counts).
    pub fn new(max: usize) -> Self {
        LineSplitter {
            line: Vec::new(),
            discarding: false,
            max,
        }
    }

    /// Takes the front of `buf` up to and including its first newline (or all of it
    /// when it has none): the number of bytes taken, and the line if one ended.
    pub fn push(&mut self, buf: &[u8]) -> (usize, Option<Line>) {
        let newline = buf.iter().position(|&b| b == b'\n');
        let taken = newline.map_or(buf.len(), |i| i + 1);
        self.keep(&buf[..newline.unwrap_or(taken)]);
        (taken, newline.map(|_| self.finish()))
    }

    /// At the end of the stream: the last line, if it was not empty and had no
    /// newline.
    pub fn end(&mut self) -> Option<Line> {
        let partial = self.discarding || !self.line.is_empty();
        partial.then(|| self.finish())
    }

    /// Appends `bytes` to the partial line, or switches to discarding once the line
    /// would exceed `max`.
    fn keep(&mut self, bytes: &[u8]) {
        if self.discarding {
            return;
        }
        if self.line.len() + bytes.len() > self.max {
            self.discarding = true;
            self.line = Vec::new();
        } else {
            self.line.extend_from_slice(bytes);
        }
    }

    fn finish(&mut self) -> Line {
        if std::mem::take(&mut self.discarding) {
            self.line.clear();
            Line::TooLong
        } else {
            let mut line = std::mem::take(&mut self.line);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            Line::Text(line)
        }
    }
}

/// A line as read: answered at once, or an event for the receiver.
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    /// The answer line (`pong`, `err ...`), never containing a newline.
    Answer(String),
    /// An event of the kind it names.
    Event(Kind, Value),
}

/// What `line` is: a ping, an event of a kind, or something answered with an error
/// (`max` is the line limit, named in the refusal of a [`Line::TooLong`]).
pub fn parse_line(line: Line, max: usize) -> Parsed {
    let text = match line {
        Line::TooLong => return Parsed::Answer(format!("err line longer than {max} bytes")),
        Line::Text(text) => text,
    };
    let trimmed = text.trim_ascii();
    if trimmed == b"ping" {
        return Parsed::Answer("pong".to_owned());
    }
    if trimmed.is_empty() {
        return Parsed::Answer("err empty line".to_owned());
    }
    let value: Value = match serde_json::from_slice(trimmed) {
        Ok(v) => v,
        Err(e) => return Parsed::Answer(one_line(format!("err invalid JSON: {e}"))),
    };
    match tagged_kind(&value) {
        Ok(kind) => Parsed::Event(kind, value),
        Err(e) => Parsed::Answer(one_line(format!("err {}", e.message))),
    }
}

/// An answer line (without its newline): newlines inside `text` become spaces.
pub fn one_line(text: String) -> String {
    if text.contains(['\n', '\r']) {
        text.replace(['\n', '\r'], " ")
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split_all(input: &[u8], max: usize, piece: usize) -> Vec<Line> {
        let mut s = LineSplitter::new(max);
        let mut lines = Vec::new();
        for mut chunk in input.chunks(piece) {
            while !chunk.is_empty() {
                let (taken, line) = s.push(chunk);
                lines.extend(line);
                chunk = &chunk[taken..];
            }
        }
        lines.extend(s.end());
        lines
    }

    #[test]
    fn lines_crlf_partial_and_too_long_in_any_pieces() {
        let input = b"ping\r\nabc\n0123456789ABCDEF\nlast";
        let expected = vec![
            Line::Text(b"ping".to_vec()),
            Line::Text(b"abc".to_vec()),
            Line::TooLong,
            Line::Text(b"last".to_vec()),
        ];
        for piece in [1, 2, 3, 7, 64] {
            assert_eq!(split_all(input, 10, piece), expected, "pieces of {piece}");
        }
        assert_eq!(split_all(b"", 10, 4), vec![]);
        assert_eq!(split_all(b"0123456789AB", 10, 4), vec![Line::TooLong]);
        assert_eq!(split_all(b"\n", 10, 4), vec![Line::Text(vec![])]);
    }

    #[test]
    fn lines_are_classified() {
        let parse = |s: &str| parse_line(Line::Text(s.as_bytes().to_vec()), 10);
        assert_eq!(parse(" ping "), Parsed::Answer("pong".into()));
        assert_eq!(parse(""), Parsed::Answer("err empty line".into()));
        assert!(matches!(
            parse(r#"{"kind":"tweet"}"#),
            Parsed::Event(Kind::Tweet, _)
        ));
        assert!(matches!(parse("{oops"), Parsed::Answer(a) if a.starts_with("err invalid JSON")));
        assert_eq!(
            parse_line(Line::TooLong, 10),
            Parsed::Answer("err line longer than 10 bytes".into())
        );
        assert_eq!(one_line("a\nb\rc".into()), "a b c");
    }
}
