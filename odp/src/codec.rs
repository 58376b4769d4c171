//! How attribute values are read and written, one module per encoding.
//! [`nla_enum!`](crate::nla_enum) names one of these for every attribute.

use crate::DecodeError;

/// A value of fixed size: integers, addresses and the kernel's key structs.
pub trait Fixed: Sized {
    const LEN: usize;
    /// Reads from exactly `LEN` bytes (the caller checked the length).
    fn read(bytes: &[u8]) -> Self;
    fn write(&self, buf: &mut Vec<u8>);
}

fn check_len(what: &'static str, expected: usize, value: &[u8]) -> Result<(), DecodeError> {
    if value.len() == expected {
        Ok(())
    } else {
        Err(DecodeError::Size {
            what,
            expected,
            got: value.len(),
        })
    }
}

/// Structs and other fixed-size values, in their own documented layout.
pub mod fixed {
    use super::*;

    pub fn read<T: Fixed>(what: &'static str, value: &[u8]) -> Result<T, DecodeError> {
        check_len(what, T::LEN, value)?;
        Ok(T::read(value))
    }

    pub fn write<T: Fixed>(v: &T, buf: &mut Vec<u8>) {
        v.write(buf)
    }
}

/// Integers in host byte order (the netlink default).
pub mod ne {
    use super::*;

    pub trait Int: Sized + Copy {
        const LEN: usize;
        fn from_ne(bytes: &[u8]) -> Self;
        fn put_ne(self, buf: &mut Vec<u8>);
    }

    macro_rules! int {
        ($($t:ty),*) => {$(
            impl Int for $t {
                const LEN: usize = std::mem::size_of::<$t>();
                fn from_ne(bytes: &[u8]) -> $t {
                    <$t>::from_ne_bytes(bytes.try_into().expect("length checked"))
                }
                fn put_ne(self, buf: &mut Vec<u8>) {
                    buf.extend_from_slice(&self.to_ne_bytes())
                }
            }
        )*};
    }
    int!(u8, u16, u32, u64, i32);

    pub fn read<T: Int>(what: &'static str, value: &[u8]) -> Result<T, DecodeError> {
        check_len(what, T::LEN, value)?;
        Ok(T::from_ne(value))
    }

    pub fn write<T: Int>(v: &T, buf: &mut Vec<u8>) {
        v.put_ne(buf)
    }
}

/// Integers and addresses in network byte order (`__be16` and friends).
pub mod be {
    use std::net::Ipv4Addr;

    use super::*;

    pub trait Value: Sized + Copy {
        const LEN: usize;
        fn from_be(bytes: &[u8]) -> Self;
        fn put_be(self, buf: &mut Vec<u8>);
    }

    macro_rules! int {
        ($($t:ty),*) => {$(
            impl Value for $t {
                const LEN: usize = std::mem::size_of::<$t>();
                fn from_be(bytes: &[u8]) -> $t {
                    <$t>::from_be_bytes(bytes.try_into().expect("length checked"))
                }
                fn put_be(self, buf: &mut Vec<u8>) {
                    buf.extend_from_slice(&self.to_be_bytes())
                }
            }
        )*};
    }
    int!(u16, u32, u64);

    impl Value for Ipv4Addr {
        const LEN: usize = 4;
        fn from_be(bytes: &[u8]) -> Ipv4Addr {
            Ipv4Addr::from(<u32 as Value>::from_be(bytes))
        }
        fn put_be(self, buf: &mut Vec<u8>) {
            buf.extend_from_slice(&self.octets())
        }
    }

    pub fn read<T: Value>(what: &'static str, value: &[u8]) -> Result<T, DecodeError> {
        check_len(what, T::LEN, value)?;
        Ok(T::from_be(value))
    }

    pub fn write<T: Value>(v: &T, buf: &mut Vec<u8>) {
        v.put_be(buf)
    }
}

/// NUL-terminated strings, as `nla_put_string` writes them.
pub mod string {
    use super::*;

    pub fn read(what: &'static str, value: &[u8]) -> Result<String, DecodeError> {
        crate::nla::string(what, value)
    }

    pub fn write(v: &str, buf: &mut Vec<u8>) {
        crate::nla::put_string(buf, v)
    }
}

/// Opaque bytes (packets, user data, identifiers).
pub mod bytes {
    use super::*;

    pub fn read(_what: &'static str, value: &[u8]) -> Result<Vec<u8>, DecodeError> {
        Ok(value.to_vec())
    }

    pub fn write(v: &[u8], buf: &mut Vec<u8>) {
        buf.extend_from_slice(v)
    }
}

/// A packed array of host-order u32s.
pub mod u32s {
    use super::*;

    pub fn read(what: &'static str, value: &[u8]) -> Result<Vec<u32>, DecodeError> {
        crate::nla::u32_array(what, value)
    }

    pub fn write(v: &[u32], buf: &mut Vec<u8>) {
        v.iter()
            .for_each(|x| buf.extend_from_slice(&x.to_ne_bytes()))
    }
}

/// Nested attributes may nest again (`encap` in a key, actions in
/// `clone`); beyond this depth the input is rejected instead of recursing
/// until the stack runs out. The kernel's own limit is far lower.
const MAX_NESTING: u32 = 32;

thread_local! {
    static NESTING: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Parses nested attributes one level deeper, within [`MAX_NESTING`].
fn parse_nested<T: crate::nla::Nla>(
    what: &'static str,
    value: &[u8],
) -> Result<Vec<T>, DecodeError> {
    let depth = NESTING.get();
    if depth >= MAX_NESTING {
        return Err(DecodeError::Invalid {
            what,
            reason: format!("nested deeper than {MAX_NESTING} levels"),
        });
    }
    NESTING.set(depth + 1);
    let result = crate::nla::parse_all(value);
    NESTING.set(depth);
    result
}

/// A list of nested attributes.
pub mod nested {
    use super::*;
    use crate::nla::{self, Nla};

    pub fn read<T: Nla>(what: &'static str, value: &[u8]) -> Result<Vec<T>, DecodeError> {
        parse_nested(what, value)
    }

    pub fn write<T: Nla>(v: &[T], buf: &mut Vec<u8>) {
        nla::emit_all(v, buf)
    }
}

/// Exactly one nested attribute (the `set` action carries one key field).
pub mod one {
    use super::*;
    use crate::nla::{self, Nla};

    pub fn read<T: Nla>(what: &'static str, value: &[u8]) -> Result<T, DecodeError> {
        let mut attrs = parse_nested::<T>(what, value)?;
        if attrs.len() != 1 {
            return Err(DecodeError::Invalid {
                what,
                reason: format!("expected one nested attribute, found {}", attrs.len()),
            });
        }
        Ok(attrs.remove(0))
    }

    pub fn write<T: Nla>(v: &T, buf: &mut Vec<u8>) {
        nla::emit_all(std::slice::from_ref(v), buf)
    }
}

/// Declares a typed attribute enum and its [`Nla`](crate::nla::Nla) impl
/// from a table of `Variant(Type) = kernel type as codec` rows, plus flag
/// attributes (no value), plus an `Other` variant that keeps unknown types.
#[macro_export]
#[doc(hidden)]
macro_rules! nla_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident($ty:ty) = $kind:literal as $codec:ident, )*
            $( @flags { $( $(#[$fmeta:meta])* $flag:ident = $fkind:literal, )* } )?
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, Eq)]
        pub enum $name {
            $( $(#[$vmeta])* $variant($ty), )*
            $( $( $(#[$fmeta])* $flag, )* )?
            /// An attribute type this crate does not model, kept byte for byte.
            Other($crate::nla::RawNla),
        }

        impl $crate::nla::Nla for $name {
            fn kind(&self) -> u16 {
                match self {
                    $( Self::$variant(_) => $kind, )*
                    $( $( Self::$flag => $fkind, )* )?
                    Self::Other(raw) => raw.kind,
                }
            }

            fn emit_value(&self, buf: &mut Vec<u8>) {
                match self {
                    $( Self::$variant(v) => $crate::codec::$codec::write(v, buf), )*
                    $( $( Self::$flag => {} )* )?
                    Self::Other(raw) => buf.extend_from_slice(&raw.value),
                }
            }

            fn parse(kind: u16, raw_kind: u16, value: &[u8]) -> Result<Self, $crate::DecodeError> {
                match kind {
                    $( $kind => Ok(Self::$variant(
                        $crate::codec::$codec::read(concat!(stringify!($name), "::", stringify!($variant)), value)?,
                    )), )*
                    $( $( $fkind => {
                        $crate::nla::flag(concat!(stringify!($name), "::", stringify!($flag)), value)?;
                        Ok(Self::$flag)
                    } )* )?
                    _ => Ok(Self::Other($crate::nla::RawNla::new(raw_kind, value))),
                }
            }
        }
    };
}
