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
            max_command_bytes: 8 << 20,
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

/// Takes one whole command off the front of `buffer`: `Ok(None)` when the buffer does not
/// hold a whole one yet (nothing is consumed), `Ok(Some(arguments))` otherwise. An empty
/// inline line yields an empty command, which the caller skips.
///
/// # Errors
/// [`ProtocolError`] for bytes that are not RESP, or that exceed `limits`.
pub fn parse_command(
    buffer: &mut BytesMut,
    limits: &Limits,
) -> Result<Option<Vec<Bytes>>, ProtocolError> {
    if buffer.is_empty() {
        return Ok(None);
    }
    if buffer[0] == b'*' {
        parse_array(buffer, limits)
    } else {
        parse_inline(buffer, limits)
    }
}

fn parse_array(
    buffer: &mut BytesMut,
    limits: &Limits,
) -> Result<Option<Vec<Bytes>>, ProtocolError> {
    // First check that the whole command is there, then take it: a partial command leaves
    // the buffer untouched.
    let mut at = 1;
    let Some((count, next)) = read_number(buffer, at, limits.max_inline_bytes)? else {
        return Ok(None);
    };
    at = next;
    if count < 0 {
        // A null array: nothing to run.
        buffer.advance(at);
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
    let mut spans = Vec::with_capacity(count.min(64));
    let mut total = 0usize;
    for _ in 0..count {
        if at >= buffer.len() {
            return Ok(None);
        }
        if buffer[at] != b'$' {
            return Err(ProtocolError::Malformed("expected '$' before an argument"));
        }
        let Some((length, next)) = read_number(buffer, at + 1, limits.max_inline_bytes)? else {
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
        total += length;
        if total > limits.max_command_bytes {
            return Err(ProtocolError::TooLarge {
                what: "a command",
                size: total,
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
        spans.push((next, end));
        at = end + 2;
    }
    let frame = buffer.split_to(at).freeze();
    Ok(Some(
        spans
            .into_iter()
            .map(|(start, end)| frame.slice(start..end))
            .collect(),
    ))
}

/// Reads `<digits>\r\n` starting at `from`; returns the number and the offset after the CRLF,
/// or `None` when the line is not complete yet.
fn read_number(
    buffer: &[u8],
    from: usize,
    max_line: usize,
) -> Result<Option<(i64, usize)>, ProtocolError> {
    let Some(line_end) = find_crlf(buffer, from) else {
        if buffer.len() - from.min(buffer.len()) > 20 {
            return Err(ProtocolError::Malformed("a length line is too long"));
        }
        return Ok(None);
    };
    let digits = &buffer[from..line_end];
    if digits.is_empty() || digits.len() > 20 || line_end - from > max_line {
        return Err(ProtocolError::Malformed("invalid length"));
    }
    let text =
        std::str::from_utf8(digits).map_err(|_| ProtocolError::Malformed("invalid length"))?;
    let number = text
        .parse::<i64>()
        .map_err(|_| ProtocolError::Malformed("invalid length"))?;
    Ok(Some((number, line_end + 2)))
}

fn find_crlf(buffer: &[u8], from: usize) -> Option<usize> {
    if from >= buffer.len() {
        return None;
    }
    buffer[from..]
        .windows(2)
        .position(|pair| pair == b"\r\n")
        .map(|position| from + position)
}

fn parse_inline(
    buffer: &mut BytesMut,
    limits: &Limits,
) -> Result<Option<Vec<Bytes>>, ProtocolError> {
    let Some(newline) = buffer.iter().position(|byte| *byte == b'\n') else {
        if buffer.len() > limits.max_inline_bytes {
            return Err(ProtocolError::TooLarge {
                what: "an inline command",
                size: buffer.len(),
                limit: limits.max_inline_bytes,
            });
        }
        return Ok(None);
    };
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
}
