//! Datatype messages (HDF5 spec IV.A.2.d): decoding the numeric, string and bool types Keras and
//! h5py use, converting element bytes to little-endian, and encoding types for the writer.

use crate::cursor::Cursor;
use crate::{bail, Dtype, Result};

/// A decoded datatype message, restricted to what this crate can materialise.
#[derive(Clone, Debug, PartialEq)]
pub enum Datatype {
    Num {
        dtype: Dtype,
        big_endian: bool,
    },
    /// Fixed-length string of `size` bytes (null-terminated or padded).
    FixedString {
        size: usize,
    },
    /// Variable-length string, stored in a global heap.
    VlenString,
}

impl Datatype {
    /// Bytes one element occupies in the file (for a variable-length string, the heap reference:
    /// length u32 + collection address + object index u32).
    pub fn file_size(&self, so: usize) -> usize {
        match self {
            Datatype::Num { dtype, .. } => dtype.size(),
            Datatype::FixedString { size } => *size,
            Datatype::VlenString => 4 + so + 4,
        }
    }
}

/// Decodes a datatype message body; `where_` names the object for error messages.
pub fn parse(body: &[u8], where_: &str) -> Result<Datatype> {
    let mut c = Cursor::over(body, 8, 8);
    parse_inner(&mut c, where_, 0)
}

fn parse_inner(c: &mut Cursor, where_: &str, depth: usize) -> Result<Datatype> {
    if depth > 2 {
        bail!("{where_}: datatype nested too deeply");
    }
    let class_ver = c.u8("datatype class")?;
    let class = class_ver & 0x0f;
    let bits = c.uint(3, "datatype bit field")? as u32;
    let size = c.u32("datatype size")? as usize;
    match class {
        0 => {
            let _offset = c.u16("integer bit offset")?;
            let precision = c.u16("integer precision")?;
            let signed = bits & 0x8 != 0;
            let dtype = match (size, signed) {
                (1, true) => Dtype::I8,
                (2, true) => Dtype::I16,
                (4, true) => Dtype::I32,
                (8, true) => Dtype::I64,
                (1, false) => Dtype::U8,
                (2, false) => Dtype::U16,
                (4, false) => Dtype::U32,
                (8, false) => Dtype::U64,
                _ => bail!("{where_}: integer of {size} bytes is not supported (expected 1, 2, 4 or 8)"),
            };
            if usize::from(precision) != size * 8 {
                bail!("{where_}: integer with precision {precision} bits in {size} bytes is not supported");
            }
            Ok(Datatype::Num {
                dtype,
                big_endian: bits & 1 != 0,
            })
        }
        1 => {
            if bits & 0x40 != 0 {
                bail!("{where_}: VAX-order floating point is not supported");
            }
            let _offset = c.u16("float bit offset")?;
            let precision = c.u16("float precision")?;
            let exp_loc = c.u8("float exponent location")?;
            let exp_size = c.u8("float exponent size")?;
            let mant_loc = c.u8("float mantissa location")?;
            let mant_size = c.u8("float mantissa size")?;
            let layout = (size, precision, exp_loc, exp_size, mant_loc, mant_size);
            let dtype = match layout {
                (2, 16, 10, 5, 0, 10) => Dtype::F16,
                (4, 32, 23, 8, 0, 23) => Dtype::F32,
                (8, 64, 52, 11, 0, 52) => Dtype::F64,
                _ => bail!(
                    "{where_}: non-IEEE float layout {layout:?} (size, precision, exponent, mantissa) is not supported"
                ),
            };
            Ok(Datatype::Num {
                dtype,
                big_endian: bits & 1 != 0,
            })
        }
        3 => {
            if size == 0 {
                bail!("{where_}: fixed-length string of size 0");
            }
            Ok(Datatype::FixedString { size })
        }
        8 => {
            // h5py stores numpy bool as an enum over a 1-byte integer {FALSE: 0, TRUE: 1}.
            let base = parse_inner(c, where_, depth + 1)?;
            match base {
                Datatype::Num {
                    dtype: Dtype::I8 | Dtype::U8,
                    ..
                } if size == 1 => Ok(Datatype::Num {
                    dtype: Dtype::Bool,
                    big_endian: false,
                }),
                _ => bail!("{where_}: enum datatypes other than bool (1-byte base) are not supported"),
            }
        }
        9 => {
            if bits & 0xf == 1 {
                Ok(Datatype::VlenString)
            } else {
                bail!("{where_}: variable-length sequences are not supported (only variable-length strings)")
            }
        }
        other => {
            let name = match other {
                2 => "time",
                4 => "bitfield",
                5 => "opaque",
                6 => "compound",
                7 => "reference",
                10 => "array",
                11 => "complex",
                _ => "unknown",
            };
            bail!("{where_}: datatype class {other} ({name}) is not supported")
        }
    }
}

/// Converts raw file bytes of `n` elements to little-endian in place.
pub fn to_little_endian(data: &mut [u8], dtype: Dtype, big_endian: bool) {
    let size = dtype.size();
    if big_endian && size > 1 {
        for e in data.chunks_exact_mut(size) {
            e.reverse();
        }
    }
}

/// One little-endian element as f64.
pub fn element_to_f64(dtype: Dtype, b: &[u8]) -> f64 {
    let mut w = [0u8; 8];
    let n = b.len().min(8);
    w[..n].copy_from_slice(&b[..n]);
    let u = u64::from_le_bytes(w);
    match dtype {
        Dtype::F16 => f16_to_f64(u as u16),
        Dtype::F32 => f64::from(f32::from_bits(u as u32)),
        Dtype::F64 => f64::from_bits(u),
        Dtype::I8 => f64::from(u as u8 as i8),
        Dtype::I16 => f64::from(u as u16 as i16),
        Dtype::I32 => f64::from(u as u32 as i32),
        Dtype::I64 => u as i64 as f64,
        Dtype::U8 | Dtype::Bool => f64::from(u as u8),
        Dtype::U16 => f64::from(u as u16),
        Dtype::U32 => f64::from(u as u32),
        Dtype::U64 => u as f64,
    }
}

/// One little-endian integer element as i64 (`None` for floats or u64 above i64::MAX).
pub fn element_to_i64(dtype: Dtype, b: &[u8]) -> Option<i64> {
    let mut w = [0u8; 8];
    let n = b.len().min(8);
    w[..n].copy_from_slice(&b[..n]);
    let u = u64::from_le_bytes(w);
    Some(match dtype {
        Dtype::I8 => i64::from(u as u8 as i8),
        Dtype::I16 => i64::from(u as u16 as i16),
        Dtype::I32 => i64::from(u as u32 as i32),
        Dtype::I64 => u as i64,
        Dtype::U8 | Dtype::Bool => i64::from(u as u8),
        Dtype::U16 => i64::from(u as u16),
        Dtype::U32 => i64::from(u as u32),
        Dtype::U64 => i64::try_from(u).ok()?,
        Dtype::F16 | Dtype::F32 | Dtype::F64 => return None,
    })
}

fn f16_to_f64(h: u16) -> f64 {
    let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = i32::from((h >> 10) & 0x1f);
    let mant = f64::from(h & 0x3ff);
    let mag = match exp {
        0 => mant * 2f64.powi(-24),
        31 if mant == 0.0 => f64::INFINITY,
        31 => f64::NAN,
        _ => (1.0 + mant / 1024.0) * 2f64.powi(exp - 15),
    };
    sign * mag
}

/// Encodes a little-endian numeric datatype message (version 1).
pub fn encode(dtype: Dtype) -> Vec<u8> {
    let size = dtype.size() as u32;
    let mut out = Vec::new();
    let float = |out: &mut Vec<u8>, sign: u8, exp_loc: u8, exp_size: u8, mant: u8, bias: u32| {
        out.push(0x11); // class 1 (float), version 1
                        // Bit field: little-endian, implied-MSB mantissa normalisation (2 << 4), sign position.
        out.extend_from_slice(&[0x20, sign, 0]);
        out.extend_from_slice(&size.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(&((size * 8) as u16).to_le_bytes());
        out.extend_from_slice(&[exp_loc, exp_size, 0, mant]);
        out.extend_from_slice(&bias.to_le_bytes());
    };
    let int = |out: &mut Vec<u8>, signed: bool| {
        out.push(0x10); // class 0 (fixed-point), version 1
        out.extend_from_slice(&[if signed { 0x08 } else { 0 }, 0, 0]);
        out.extend_from_slice(&size.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(&((size * 8) as u16).to_le_bytes());
    };
    match dtype {
        Dtype::F16 => float(&mut out, 15, 10, 5, 10, 15),
        Dtype::F32 => float(&mut out, 31, 23, 8, 23, 127),
        Dtype::F64 => float(&mut out, 63, 52, 11, 52, 1023),
        Dtype::I8 | Dtype::I16 | Dtype::I32 | Dtype::I64 => int(&mut out, true),
        Dtype::U8 | Dtype::U16 | Dtype::U32 | Dtype::U64 => int(&mut out, false),
        Dtype::Bool => {
            // Same as h5py: enum (class 8, version 1) with 2 members over a signed 8-bit base.
            out.extend_from_slice(&[0x18, 2, 0, 0]);
            out.extend_from_slice(&1u32.to_le_bytes());
            out.extend_from_slice(&encode(Dtype::I8));
            // Version-1 names are null-terminated and padded to a multiple of 8 bytes.
            out.extend_from_slice(b"FALSE\0\0\0TRUE\0\0\0\0");
            out.extend_from_slice(&[0, 1]);
        }
    }
    out
}

/// Encodes a fixed-length, null-terminated UTF-8 string datatype of `size` bytes.
pub fn encode_fixed_string(size: usize) -> Vec<u8> {
    let mut out = vec![0x13, 0x10, 0, 0]; // class 3, version 1; padding 0 (nullterm), charset 1 (UTF-8)
    out.extend_from_slice(&(size as u32).to_le_bytes());
    out
}
