//! The Redis protocol (RESP2), parsed without doing any I/O: [`parse_command`] looks at a
//! buffer, and either takes one whole command off its front or says it needs more bytes.
//!
//! A command arrives as an array of bulk strings (`*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`, what
//! `redis-cli` and `redis-benchmark` send) or as an inline line (`GET k\r\n`, what a person
//! typing into `nc` sends). Replies are the five RESP2 types, built by [`Reply`].
//!
//! Every length is checked against a limit before anything is allocated for it: a client
//! cannot make the server reserve memory by announcing a large bulk string.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// The limits a connection's input is held to.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// The largest bulk string (a key or a value).
    pub max_bulk_bytes: usize,
    /// The most arguments one command may carry.
    pub max_arguments: usize,
    /// The longest inline command line.
    pub max_inline_bytes: usize,
    /// The most bytes one command's arguments may add up to.
    pub max_command_bytes: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_bulk_bytes: 1 << 20,
            max_arguments: 1 << 16,
            max_inline_bytes: 64 << 10,
            // A SET of the largest key and value, with room for many small arguments.
            max_command_bytes: 3 << 20,
        }
    }
}

/// Why a connection's bytes are not RESP. The connection answers with the error and closes:
/// after a framing error nothing that follows can be trusted to start a command.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// A length or count that is not a number, or a missing `\r\n` or `$`.
    #[error("Protocol error: {0}")]
    Malformed(&'static str),
    /// A bulk string, an argument count or an inline line above its limit.
    #[error("Protocol error: {what} of {size} above the limit of {limit}")]
    TooLarge {
        /// What was too large.
        what: &'static str,
        /// Its announced size.
        size: usize,
        /// The limit.
        limit: usize,
    },
}

/// Takes whole commands off the front of a connection's buffer. It remembers how far it got
/// through a command that has not fully arrived, so a command trickling in over many reads
/// costs its size once, not once per read.
#[derive(Debug)]
pub struct CommandParser {
    limits: Limits,
    /// The multi-bulk command at the front of the buffer, as far as it has been checked.
    partial: Option<Partial>,
    /// How much of an inline line at the front of the buffer holds no newline.
    inline_scanned: usize,
    /// Bytes looked at so far (what the linear-time test counts).
    examined: usize,
}

#[derive(Debug)]
struct Partial {
    /// Arguments announced.
    count: usize,
    /// Where the next argument's `$` is expected.
    at: usize,
    /// Each argument checked so far, as a range of the buffer.
    spans: Vec<(usize, usize)>,
    /// Their bytes, added up.
    total: usize,
}

impl CommandParser {
    /// A parser holding commands to `limits`.
    pub fn new(limits: Limits) -> CommandParser {
        CommandParser {
            limits,
            partial: None,
            inline_scanned: 0,
            examined: 0,
        }
    }

    /// Takes one whole command off the front of `buffer`: `Ok(None)` when the buffer does not
    /// hold a whole one yet (nothing is consumed; call again with more bytes appended),
    /// `Ok(Some(arguments))` otherwise. An empty inline line yields an empty command, which
    /// the caller skips.
    ///
    /// # Errors
    /// [`ProtocolError`] for bytes that are not RESP, or that exceed the limits. The
    /// connection must then be closed: what follows cannot be trusted to start a command.
    pub fn parse(&mut self, buffer: &mut BytesMut) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        if buffer.is_empty() {
            return Ok(None);
        }
        if self.partial.is_none() && buffer[0] != b'*' {
            return self.parse_inline(buffer);
        }
        self.parse_array(buffer)
    }

    fn parse_array(&mut self, buffer: &mut BytesMut) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        let limits = self.limits;
        if self.partial.is_none() {
            let Some((count, next)) = read_number(buffer, 1)? else {
                return Ok(None);
            };
            self.examined += next;
            if count < 0 {
                // A null array: nothing to run.
                buffer.advance(next);
                return Ok(Some(Vec::new()));
            }
            let count = count as usize;
            if count > limits.max_arguments {
                return Err(ProtocolError::TooLarge {
                    what: "an argument count",
                    size: count,
                    limit: limits.max_arguments,
                });
            }
            self.partial = Some(Partial {
                count,
                at: next,
                spans: Vec::with_capacity(count.min(64)),
                total: 0,
            });
        }
        let partial = self.partial.as_mut().expect("set above");
        while partial.spans.len() < partial.count {
            let at = partial.at;
            if at >= buffer.len() {
                return Ok(None);
            }
            if buffer[at] != b'$' {
                return Err(ProtocolError::Malformed("expected '$' before an argument"));
            }
            let Some((length, next)) = read_number(buffer, at + 1)? else {
                return Ok(None);
            };
            if length < 0 {
                return Err(ProtocolError::Malformed(
                    "a command argument cannot be null",
                ));
            }
            let length = length as usize;
            if length > limits.max_bulk_bytes {
                return Err(ProtocolError::TooLarge {
                    what: "a bulk string",
                    size: length,
                    limit: limits.max_bulk_bytes,
                });
            }
            if partial.total + length > limits.max_command_bytes {
                return Err(ProtocolError::TooLarge {
                    what: "a command",
                    size: partial.total + length,
                    limit: limits.max_command_bytes,
                });
            }
            let end = next + length;
            if buffer.len() < end + 2 {
                return Ok(None);
            }
            if &buffer[end..end + 2] != b"\r\n" {
                return Err(ProtocolError::Malformed("a bulk string must end with CRLF"));
            }
            self.examined += end + 2 - at;
            partial.total += length;
            partial.spans.push((next, end));
            partial.at = end + 2;
        }
        let partial = self.partial.take().expect("checked above");
        let frame = buffer.split_to(partial.at).freeze();
        Ok(Some(
            partial
                .spans
                .into_iter()
                .map(|(start, end)| frame.slice(start..end))
                .collect(),
        ))
    }

    fn parse_inline(&mut self, buffer: &mut BytesMut) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        let limits = self.limits;
        let from = self.inline_scanned.min(buffer.len());
        self.examined += buffer.len() - from;
        let Some(newline) = buffer[from..]
            .iter()
            .position(|byte| *byte == b'\n')
            .map(|position| from + position)
        else {
            if buffer.len() > limits.max_inline_bytes {
                return Err(ProtocolError::TooLarge {
                    what: "an inline command",
                    size: buffer.len(),
                    limit: limits.max_inline_bytes,
                });
            }
            self.inline_scanned = buffer.len();
            return Ok(None);
        };
        self.inline_scanned = 0;
        if newline > limits.max_inline_bytes {
            return Err(ProtocolError::TooLarge {
                what: "an inline command",
                size: newline,
                limit: limits.max_inline_bytes,
            });
        }
        let line = buffer.split_to(newline + 1).freeze();
        let text = line.slice(..newline);
        let text = match text.last() {
            Some(b'\r') => text.slice(..text.len() - 1),
            _ => text,
        };
        let arguments: Vec<Bytes> = text
            .split(|byte| *byte == b' ' || *byte == b'\t')
            .filter(|word| !word.is_empty())
            .map(|word| text.slice_ref(word))
            .collect();
        if arguments.len() > limits.max_arguments {
            return Err(ProtocolError::TooLarge {
                what: "an argument count",
                size: arguments.len(),
                limit: limits.max_arguments,
            });
        }
        Ok(Some(arguments))
    }
}

/// Parses one command off `buffer` with a fresh parser: for a buffer known to hold whole
/// commands (tests, one-shot tools). A connection keeps one [`CommandParser`] instead.
///
/// # Errors
/// As [`CommandParser::parse`].
pub fn parse_command(
    buffer: &mut BytesMut,
    limits: &Limits,
) -> Result<Option<Vec<Bytes>>, ProtocolError> {
    CommandParser::new(*limits).parse(buffer)
}

/// Reads `<digits>\r\n` starting at `from`; returns the number and the offset after the CRLF,
/// or `None` when the line is not complete yet.
fn read_number(buffer: &[u8], from: usize) -> Result<Option<(i64, usize)>, ProtocolError> {
    // 20 digits and a sign at most: a longer line is not a number.
    const LONGEST: usize = 21;
    let window = &buffer[from.min(buffer.len())..buffer.len().min(from + LONGEST + 2)];
    let Some(position) = window.windows(2).position(|pair| pair == b"\r\n") else {
        if window.len() >= LONGEST + 2 {
            return Err(ProtocolError::Malformed("a length line is too long"));
        }
        return Ok(None);
    };
    let digits = &window[..position];
    let number = std::str::from_utf8(digits)
        .ok()
        .filter(|text| !text.is_empty())
        .and_then(|text| text.parse::<i64>().ok())
        .ok_or(ProtocolError::Malformed("invalid length"))?;
    Ok(Some((number, from + position + 2)))
}

/// One RESP2 reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// `+text`: a status such as `OK` or `PONG`.
    Simple(&'static str),
    /// `-text`: an error; `text` starts with its kind (`ERR`, `MOVED`, `TRYAGAIN`).
    Error(String),
    /// `:n`.
    Integer(i64),
    /// `$len` then the bytes.
    Bulk(Bytes),
    /// `$-1`: no value.
    Nil,
    /// `*n` then each element.
    Array(Vec<Reply>),
}

impl Reply {
    /// An `ERR` error.
    pub fn error(message: impl std::fmt::Display) -> Reply {
        Reply::Error(format!("ERR {message}"))
    }

    /// Appends the wire form of this reply to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        match self {
            Reply::Simple(text) => {
                out.put_u8(b'+');
                out.put_slice(text.as_bytes());
                out.put_slice(b"\r\n");
            }
            Reply::Error(text) => {
                out.put_u8(b'-');
                // A CR or LF inside would end the reply early and desynchronise the client.
                for byte in text.bytes() {
                    out.put_u8(if byte == b'\r' || byte == b'\n' {
                        b' '
                    } else {
                        byte
                    });
                }
                out.put_slice(b"\r\n");
            }
            Reply::Integer(value) => {
                out.put_u8(b':');
                out.put_slice(value.to_string().as_bytes());
                out.put_slice(b"\r\n");
            }
            Reply::Bulk(bytes) => {
                out.put_u8(b'$');
                out.put_slice(bytes.len().to_string().as_bytes());
                out.put_slice(b"\r\n");
                out.put_slice(bytes);
                out.put_slice(b"\r\n");
            }
            Reply::Nil => out.put_slice(b"$-1\r\n"),
            Reply::Array(items) => {
                out.put_u8(b'*');
                out.put_slice(items.len().to_string().as_bytes());
                out.put_slice(b"\r\n");
                for item in items {
                    item.encode(out);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        parse_command(&mut BytesMut::from(bytes), &Limits::default())
    }

    fn words(arguments: &[&str]) -> Vec<Bytes> {
        arguments
            .iter()
            .map(|word| Bytes::copy_from_slice(word.as_bytes()))
            .collect()
    }

    #[test]
    fn an_array_command_parses_and_every_prefix_of_it_waits_for_more() {
        let whole = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nv\r\nx!\r\n";
        for cut in 0..whole.len() {
            let mut buffer = BytesMut::from(&whole[..cut]);
            assert_eq!(
                parse_command(&mut buffer, &Limits::default()).unwrap(),
                None,
                "cut at {cut}"
            );
            assert_eq!(buffer.len(), cut, "a partial command consumes nothing");
        }
        let mut buffer = BytesMut::from(&whole[..]);
        buffer.extend_from_slice(b"PING\r\n");
        assert_eq!(
            parse_command(&mut buffer, &Limits::default()).unwrap(),
            Some(words(&["SET", "k", "v\r\nx!"]))
        );
        assert_eq!(
            parse_command(&mut buffer, &Limits::default()).unwrap(),
            Some(words(&["PING"]))
        );
        assert!(buffer.is_empty());
    }

    #[test]
    fn inline_commands_split_on_spaces_with_or_without_cr() {
        assert_eq!(
            parse(b"SET a 1\r\n").unwrap(),
            Some(words(&["SET", "a", "1"]))
        );
        assert_eq!(parse(b"  GET   a\n").unwrap(), Some(words(&["GET", "a"])));
        assert_eq!(parse(b"\r\n").unwrap(), Some(Vec::new()));
        assert_eq!(parse(b"GET a").unwrap(), None);
    }

    #[test]
    fn malformed_framing_is_an_error_not_a_panic() {
        for bad in [
            &b"*x\r\n"[..],
            b"*1\r\n+OK\r\n",
            b"*1\r\n$-1\r\n",
            b"*1\r\n$3\r\nabcd\r\n",
            b"*1\r\n$99999999999999999999999\r\n",
            b"*1\r\n$\r\n",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn lengths_above_the_limits_are_refused_before_any_allocation() {
        let limits = Limits {
            max_bulk_bytes: 10,
            max_arguments: 2,
            max_inline_bytes: 16,
            max_command_bytes: 12,
        };
        let mut total = BytesMut::from(&b"*2\r\n$8\r\n12345678\r\n$8\r\n"[..]);
        assert!(matches!(
            parse_command(&mut total, &limits),
            Err(ProtocolError::TooLarge { .. })
        ));
        let mut bulk = BytesMut::from(&b"*1\r\n$11\r\n"[..]);
        assert!(matches!(
            parse_command(&mut bulk, &limits),
            Err(ProtocolError::TooLarge { .. })
        ));
        let mut count = BytesMut::from(&b"*3\r\n"[..]);
        assert!(matches!(
            parse_command(&mut count, &limits),
            Err(ProtocolError::TooLarge { .. })
        ));
        let mut inline = BytesMut::from(&[b'a'; 17][..]);
        assert!(matches!(
            parse_command(&mut inline, &limits),
            Err(ProtocolError::TooLarge { .. })
        ));
        let mut huge = BytesMut::from(&b"*1\r\n$9223372036854775807\r\n"[..]);
        assert!(parse_command(&mut huge, &limits).is_err());
    }

    #[test]
    fn replies_encode_as_resp2() {
        let mut out = BytesMut::new();
        Reply::Array(vec![
            Reply::Simple("OK"),
            Reply::Integer(-3),
            Reply::Bulk(Bytes::from_static(b"hi")),
            Reply::Nil,
            Reply::Error("ERR bad\r\nthing".to_string()),
        ])
        .encode(&mut out);
        assert_eq!(
            &out[..],
            b"*5\r\n+OK\r\n:-3\r\n$2\r\nhi\r\n$-1\r\n-ERR bad  thing\r\n"
        );
    }

    /// A command trickling in one argument per read is checked once, not re-read from its
    /// start on every read (which made a 65536-argument command cost seconds of CPU).
    #[test]
    fn a_large_command_arriving_piece_by_piece_is_examined_once() {
        let limits = Limits::default();
        let count = limits.max_arguments;
        let mut parser = CommandParser::new(limits);
        let mut buffer = BytesMut::from(format!("*{count}\r\n").as_bytes());
        let mut fed = buffer.len();
        let mut parsed = None;
        for _ in 0..count {
            buffer.extend_from_slice(b"$1\r\na\r\n");
            fed += 7;
            parsed = parser.parse(&mut buffer).unwrap();
        }
        assert_eq!(parsed.map(|arguments| arguments.len()), Some(count));
        assert!(
            parser.examined <= 2 * fed,
            "examined {} bytes of a {fed}-byte command",
            parser.examined
        );
        // The same holds for an inline line arriving a byte at a time.
        let mut parser = CommandParser::new(limits);
        let mut buffer = BytesMut::new();
        for _ in 0..60_000 {
            buffer.extend_from_slice(b"a");
            assert_eq!(parser.parse(&mut buffer).unwrap(), None);
        }
        buffer.extend_from_slice(b"\n");
        assert!(parser.parse(&mut buffer).unwrap().is_some());
        assert!(
            parser.examined <= 2 * 60_001,
            "examined {}",
            parser.examined
        );
    }
}
