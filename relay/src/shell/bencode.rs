//! Bencode as the ng control protocol uses it: byte strings, integers, lists, dictionaries.
//! Decoding never panics, bounds nesting, and rejects trailing garbage.

use std::collections::BTreeMap;

/// Deepest nesting accepted (ng messages are two or three levels deep).
const MAX_DEPTH: usize = 32;

/// A bencoded value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// `i<n>e`
    Int(i64),
    /// `<len>:<bytes>`
    Bytes(Vec<u8>),
    /// `l...e`
    List(Vec<Self>),
    /// `d...e`, keys sorted on output.
    Dict(BTreeMap<Vec<u8>, Self>),
}

impl Value {
    /// Overwrites every byte string with zeros (an ng message carries SDP, and SDP carries
    /// keys: docs/behaviour.md §9, no key outlives its use in memory).
    pub fn wipe(&mut self) {
        use zeroize::Zeroize as _;
        match self {
            Self::Int(_) => {}
            Self::Bytes(b) => b.zeroize(),
            Self::List(items) => items.iter_mut().for_each(Self::wipe),
            Self::Dict(d) => d.values_mut().for_each(Self::wipe),
        }
    }
}

/// Why a message is not bencode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BencodeError {
    /// The input ended inside a value.
    #[error("bencode: truncated at byte {0}")]
    Truncated(usize),
    /// An unexpected byte.
    #[error("bencode: unexpected byte at {0}")]
    Unexpected(usize),
    /// A number that does not fit or is malformed.
    #[error("bencode: bad number at byte {0}")]
    Number(usize),
    /// Nested too deeply.
    #[error("bencode: nested deeper than {MAX_DEPTH}")]
    TooDeep,
    /// Bytes after the value.
    #[error("bencode: trailing data at byte {0}")]
    Trailing(usize),
}

impl Value {
    /// A byte string from text.
    pub fn str(s: &str) -> Self {
        Self::Bytes(s.as_bytes().to_vec())
    }

    /// The value under `key` of a dictionary.
    pub fn get(&self, key: &str) -> Option<&Self> {
        match self {
            Self::Dict(d) => d.get(key.as_bytes()),
            _ => None,
        }
    }

    /// The value as UTF-8 text, if it is a byte string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::Bytes(b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }

    /// The value's list items, if it is a list.
    pub fn as_list(&self) -> Option<&[Self]> {
        match self {
            Self::List(l) => Some(l),
            _ => None,
        }
    }

    /// Appends the encoding of the value to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Self::Int(i) => out.extend_from_slice(format!("i{i}e").as_bytes()),
            Self::Bytes(b) => {
                out.extend_from_slice(b.len().to_string().as_bytes());
                out.push(b':');
                out.extend_from_slice(b);
            }
            Self::List(items) => {
                out.push(b'l');
                items.iter().for_each(|v| v.encode(out));
                out.push(b'e');
            }
            Self::Dict(d) => {
                out.push(b'd');
                for (k, v) in d {
                    Self::Bytes(k.clone()).encode(out);
                    v.encode(out);
                }
                out.push(b'e');
            }
        }
    }
}

/// Builds a dictionary from `(key, value)` pairs.
pub fn dict<const N: usize>(pairs: [(&str, Value); N]) -> Value {
    Value::Dict(
        pairs
            .into_iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v))
            .collect(),
    )
}

/// Decodes exactly one value spanning all of `input`.
pub fn decode(input: &[u8]) -> Result<Value, BencodeError> {
    let (v, end) = decode_at(input, 0, 0)?;
    if end != input.len() {
        return Err(BencodeError::Trailing(end));
    }
    Ok(v)
}

fn decode_at(input: &[u8], pos: usize, depth: usize) -> Result<(Value, usize), BencodeError> {
    if depth > MAX_DEPTH {
        return Err(BencodeError::TooDeep);
    }
    match input.get(pos) {
        None => Err(BencodeError::Truncated(pos)),
        Some(b'i') => {
            let end = find(input, pos + 1, b'e')?;
            let text =
                std::str::from_utf8(&input[pos + 1..end]).map_err(|_| BencodeError::Number(pos))?;
            let n = text.parse().map_err(|_| BencodeError::Number(pos))?;
            Ok((Value::Int(n), end + 1))
        }
        Some(b'l') => {
            let mut items = Vec::new();
            let mut at = pos + 1;
            loop {
                match input.get(at) {
                    None => return Err(BencodeError::Truncated(at)),
                    Some(b'e') => return Ok((Value::List(items), at + 1)),
                    Some(_) => {
                        let (v, next) = decode_at(input, at, depth + 1)?;
                        items.push(v);
                        at = next;
                    }
                }
            }
        }
        Some(b'd') => {
            let mut map = BTreeMap::new();
            let mut at = pos + 1;
            loop {
                match input.get(at) {
                    None => return Err(BencodeError::Truncated(at)),
                    Some(b'e') => return Ok((Value::Dict(map), at + 1)),
                    Some(b'0'..=b'9') => {
                        let (key, next) = decode_bytes(input, at)?;
                        let (v, next) = decode_at(input, next, depth + 1)?;
                        map.insert(key, v);
                        at = next;
                    }
                    Some(_) => return Err(BencodeError::Unexpected(at)),
                }
            }
        }
        Some(b'0'..=b'9') => decode_bytes(input, pos).map(|(b, end)| (Value::Bytes(b), end)),
        Some(_) => Err(BencodeError::Unexpected(pos)),
    }
}

fn decode_bytes(input: &[u8], pos: usize) -> Result<(Vec<u8>, usize), BencodeError> {
    let colon = find(input, pos, b':')?;
    let len: usize = std::str::from_utf8(&input[pos..colon])
        .ok()
        .and_then(|t| t.parse().ok())
        .ok_or(BencodeError::Number(pos))?;
    let start = colon + 1;
    let end = start
        .checked_add(len)
        .filter(|&e| e <= input.len())
        .ok_or(BencodeError::Truncated(input.len()))?;
    Ok((input[start..end].to_vec(), end))
}

fn find(input: &[u8], from: usize, byte: u8) -> Result<usize, BencodeError> {
    input
        .get(from..)
        .and_then(|rest| rest.iter().position(|&b| b == byte))
        .map(|i| from + i)
        .ok_or(BencodeError::Truncated(input.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_an_ng_offer() {
        let msg = b"d7:call-id10:cBkxYACHa37:command5:offer5:flagsl12:SDES-no-NULLe3:sdp5:v=0\r\n8:from-tag9:rNMd53Y7Je";
        let v = decode(msg).unwrap();
        assert_eq!(v.get("command").and_then(Value::as_str), Some("offer"));
        assert_eq!(
            v.get("flags").and_then(Value::as_list).map(<[Value]>::len),
            Some(1)
        );
        let mut out = Vec::new();
        v.encode(&mut out);
        assert_eq!(decode(&out).unwrap(), v);
    }

    #[test]
    fn hostile_input_is_an_error_not_a_panic() {
        for bad in [
            &b""[..],
            b"d",
            b"i12",
            b"i1x2e",
            b"5:abc",
            b"99999999999999999999:x",
            b"d3:keyi1e",
            b"x",
            b"de1",
            b"d1:ae",
            b"l",
        ] {
            assert!(decode(bad).is_err(), "{bad:?}");
        }
        let deep = "l".repeat(100) + &"e".repeat(100);
        assert_eq!(decode(deep.as_bytes()), Err(BencodeError::TooDeep));
        assert_eq!(decode(b"i-42e"), Ok(Value::Int(-42)));
    }
}
