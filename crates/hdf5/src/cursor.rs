//! Bounds-checked little-endian reading of file structures. Every read names the byte offset
//! it failed at, so errors on hostile files say where the file is wrong.

use crate::{bail, Result};

/// The file being read plus the sizes its superblock declares.
#[derive(Clone, Copy)]
pub struct FileCtx<'a> {
    pub buf: &'a [u8],
    /// Size of file addresses ("offsets") in bytes: 2, 4 or 8.
    pub so: usize,
    /// Size of lengths in bytes: 2, 4 or 8.
    pub sl: usize,
    /// Absolute position of the superblock; all addresses are relative to it.
    pub base: u64,
}

impl<'a> FileCtx<'a> {
    /// A cursor at file address `addr` (relative to the base address).
    pub fn at(&self, addr: u64, what: &str) -> Result<Cursor<'a>> {
        let abs = self.base.checked_add(addr).filter(|&a| a <= self.buf.len() as u64);
        match abs {
            Some(a) => Ok(Cursor {
                buf: self.buf,
                pos: a as usize,
                so: self.so,
                sl: self.sl,
            }),
            None => bail!(
                "{what} at address {addr} lies beyond the end of the file ({} bytes)",
                self.buf.len()
            ),
        }
    }

    /// `len` bytes at file address `addr`.
    pub fn slice(&self, addr: u64, len: u64, what: &str) -> Result<&'a [u8]> {
        let mut c = self.at(addr, what)?;
        let len = usize::try_from(len).map_err(|_| crate::Error(format!("{what}: length {len} too large")))?;
        c.bytes(len, what)
    }
}

#[derive(Clone)]
pub struct Cursor<'a> {
    pub buf: &'a [u8],
    pub pos: usize,
    pub so: usize,
    pub sl: usize,
}

impl<'a> Cursor<'a> {
    /// A cursor over a standalone byte slice (a message body), with the file's sizes.
    pub fn over(buf: &'a [u8], so: usize, sl: usize) -> Cursor<'a> {
        Cursor { buf, pos: 0, so, sl }
    }

    pub fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    pub fn bytes(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        match self.pos.checked_add(n).filter(|&e| e <= self.buf.len()) {
            Some(end) => {
                let s = &self.buf[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => bail!(
                "{what}: expected {n} bytes at offset {}, only {} remain",
                self.pos,
                self.remaining()
            ),
        }
    }

    pub fn skip(&mut self, n: usize, what: &str) -> Result<()> {
        self.bytes(n, what).map(|_| ())
    }

    /// An unsigned little-endian integer of `n` (0..=8) bytes.
    pub fn uint(&mut self, n: usize, what: &str) -> Result<u64> {
        if n > 8 {
            bail!(
                "{what}: integer field of {n} bytes at offset {} (at most 8 supported)",
                self.pos
            );
        }
        let b = self.bytes(n, what)?;
        Ok(b.iter().rev().fold(0u64, |acc, &x| (acc << 8) | u64::from(x)))
    }

    pub fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.bytes(1, what)?[0])
    }

    pub fn u16(&mut self, what: &str) -> Result<u16> {
        Ok(self.uint(2, what)? as u16)
    }

    pub fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(self.uint(4, what)? as u32)
    }

    pub fn u64(&mut self, what: &str) -> Result<u64> {
        self.uint(8, what)
    }

    /// A file address; `None` for the "undefined address" (all bits set).
    pub fn addr(&mut self, what: &str) -> Result<Option<u64>> {
        let v = self.uint(self.so, what)?;
        let undef = if self.so >= 8 {
            u64::MAX
        } else {
            (1u64 << (8 * self.so)) - 1
        };
        Ok(if v == undef { None } else { Some(v) })
    }

    /// A file address that must be defined.
    pub fn addr_req(&mut self, what: &str) -> Result<u64> {
        let pos = self.pos;
        match self.addr(what)? {
            Some(a) => Ok(a),
            None => bail!("{what}: expected a defined address at offset {pos}, found the undefined address"),
        }
    }

    pub fn length(&mut self, what: &str) -> Result<u64> {
        self.uint(self.sl, what)
    }

    /// Checks a 4-byte signature.
    pub fn sig(&mut self, sig: &[u8; 4], what: &str) -> Result<()> {
        let pos = self.pos;
        let got = self.bytes(4, what)?;
        if got != sig {
            bail!(
                "{what}: expected signature {:?} at offset {pos}, found {:?}",
                String::from_utf8_lossy(sig),
                String::from_utf8_lossy(got)
            );
        }
        Ok(())
    }
}

/// Bytes needed to encode `v` (at least 1), as libhdf5's `H5VM_limit_enc_size`.
pub fn enc_size(v: u64) -> usize {
    ((64 - v.leading_zeros() as usize).saturating_sub(1)) / 8 + 1
}
