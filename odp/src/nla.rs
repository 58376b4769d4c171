//! Netlink attributes: the type-length-value records every ODP message is
//! made of.
//!
//! ```text
//!  0               2               4
//! +---------------+---------------+----------------------+---------+
//! | length (u16)  | type (u16)    | value (length - 4)   | pad to 4|
//! +---------------+---------------+----------------------+---------+
//! ```
//!
//! Values are in host byte order unless the kernel header says `__be`.

use crate::DecodeError;

pub(crate) const HEADER_LEN: usize = 4;
/// Flags the kernel may OR into the type; they are not part of the type.
const NLA_F_NESTED: u16 = 1 << 15;
const NLA_F_NET_BYTEORDER: u16 = 1 << 14;
const TYPE_MASK: u16 = !(NLA_F_NESTED | NLA_F_NET_BYTEORDER);

pub(crate) const fn align(len: usize) -> usize {
    (len + 3) & !3
}

/// A typed attribute: one variant per kernel attribute type, with an
/// `Other` variant keeping unknown types byte for byte.
pub trait Nla: Sized {
    /// The attribute type as sent on the wire.
    fn kind(&self) -> u16;
    /// Appends the value (without header or padding).
    fn emit_value(&self, buf: &mut Vec<u8>);
    /// Reads the value of an attribute of type `kind` (flags stripped).
    /// `raw_kind` is the type as it appeared, flags included, for `Other`.
    fn parse(kind: u16, raw_kind: u16, value: &[u8]) -> Result<Self, DecodeError>;
}

/// Appends one attribute, header and padding included.
pub(crate) fn emit_with(buf: &mut Vec<u8>, kind: u16, value: impl FnOnce(&mut Vec<u8>)) {
    let start = buf.len();
    buf.extend_from_slice(&[0, 0]);
    buf.extend_from_slice(&kind.to_ne_bytes());
    value(buf);
    let len = u16::try_from(buf.len() - start).unwrap_or(u16::MAX);
    buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    buf.resize(start + align(buf.len() - start), 0);
}

pub fn emit_all<A: Nla>(attrs: &[A], buf: &mut Vec<u8>) {
    for attr in attrs {
        emit_with(buf, attr.kind(), |buf| attr.emit_value(buf));
    }
}

/// Emits `attrs` into a fresh buffer.
pub fn to_bytes<A: Nla>(attrs: &[A]) -> Vec<u8> {
    let mut buf = Vec::new();
    emit_all(attrs, &mut buf);
    buf
}

/// Splits `buf` into (raw type, value) pairs, checking every length.
pub(crate) fn split(mut buf: &[u8]) -> impl Iterator<Item = Result<(u16, &[u8]), DecodeError>> {
    std::iter::from_fn(move || {
        if buf.is_empty() {
            return None;
        }
        if buf.len() < HEADER_LEN {
            let err = DecodeError::Short {
                what: "attribute header",
                need: HEADER_LEN,
                have: buf.len(),
            };
            buf = &[];
            return Some(Err(err));
        }
        let len = usize::from(u16::from_ne_bytes([buf[0], buf[1]]));
        let kind = u16::from_ne_bytes([buf[2], buf[3]]);
        if len < HEADER_LEN || len > buf.len() {
            let err = DecodeError::AttributeLength {
                len,
                remaining: buf.len(),
            };
            buf = &[];
            return Some(Err(err));
        }
        let value = &buf[HEADER_LEN..len];
        buf = &buf[align(len).min(buf.len())..];
        Some(Ok((kind, value)))
    })
}

pub fn parse_all<A: Nla>(buf: &[u8]) -> Result<Vec<A>, DecodeError> {
    split(buf)
        .map(|item| item.and_then(|(raw, value)| A::parse(raw & TYPE_MASK, raw, value)))
        .collect()
}

/// An attribute of a type this crate does not model, kept as it came.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawNla {
    /// The type as it appeared, flags included.
    pub kind: u16,
    pub value: Vec<u8>,
}

impl RawNla {
    pub fn new(raw_kind: u16, value: &[u8]) -> RawNla {
        RawNla {
            kind: raw_kind,
            value: value.to_vec(),
        }
    }
}

/// A flag attribute: present or absent, never with a value.
pub(crate) fn flag(what: &'static str, value: &[u8]) -> Result<(), DecodeError> {
    if value.is_empty() {
        Ok(())
    } else {
        Err(DecodeError::Size {
            what,
            expected: 0,
            got: value.len(),
        })
    }
}

/// A NUL-terminated string, as `nla_put_string` writes it.
pub(crate) fn string(what: &'static str, value: &[u8]) -> Result<String, DecodeError> {
    let invalid = |reason: &str| DecodeError::Invalid {
        what,
        reason: reason.to_string(),
    };
    let text = value
        .strip_suffix(&[0])
        .ok_or_else(|| invalid("not NUL-terminated"))?;
    if text.contains(&0) {
        return Err(invalid("NUL inside the string"));
    }
    String::from_utf8(text.to_vec()).map_err(|_| invalid("not UTF-8"))
}

pub(crate) fn put_string(buf: &mut Vec<u8>, s: &str) {
    buf.extend_from_slice(s.as_bytes());
    buf.push(0);
}

/// A packed array of host-order u32s (upcall port ids).
pub(crate) fn u32_array(what: &'static str, value: &[u8]) -> Result<Vec<u32>, DecodeError> {
    if !value.len().is_multiple_of(4) {
        return Err(DecodeError::Invalid {
            what,
            reason: format!("length {} is not a multiple of 4", value.len()),
        });
    }
    Ok(value
        .chunks_exact(4)
        .map(|c| u32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_checks_every_length() {
        // A 5-byte attribute padded to 8, then a 4-byte empty one.
        let mut buf = vec![5, 0, 1, 0, 0xaa, 0, 0, 0, 4, 0, 2, 0];
        let attrs: Vec<_> = split(&buf).collect::<Result<_, _>>().unwrap();
        assert_eq!(attrs, vec![(1, &[0xaa][..]), (2, &[][..])]);
        buf[8] = 200;
        assert!(matches!(
            split(&buf).nth(1),
            Some(Err(DecodeError::AttributeLength { len: 200, .. }))
        ));
        assert!(split(&[1, 0]).next().unwrap().is_err());
        assert!(
            split(&[2, 0, 0, 0]).next().unwrap().is_err(),
            "length below header size"
        );
    }

    #[test]
    fn the_last_attribute_may_omit_its_padding() {
        let buf = [5, 0, 1, 0, 0xaa];
        let attrs: Vec<_> = split(&buf).collect::<Result<_, _>>().unwrap();
        assert_eq!(attrs, vec![(1, &[0xaa][..])]);
    }

    #[test]
    fn strings_must_be_nul_terminated() {
        assert_eq!(string("name", b"weft\0").unwrap(), "weft");
        assert!(string("name", b"weft").is_err());
        assert!(string("name", b"we\0ft\0").is_err());
        let mut buf = Vec::new();
        put_string(&mut buf, "weft");
        assert_eq!(buf, b"weft\0");
    }
}
