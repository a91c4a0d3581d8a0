//! Heaps: the local heap (link names of symbol-table groups), global heap collections
//! (variable-length string attributes) and fractal heaps (links and attributes of dense
//! new-style groups). Every object returned is a bounds-checked slice of the file.

use crate::cursor::{enc_size, Cursor, FileCtx};
use crate::object::Budget;
use crate::{bail, Result};

/// A local heap's data segment.
pub struct LocalHeap<'a> {
    data: &'a [u8],
}

impl<'a> LocalHeap<'a> {
    pub fn open(f: &FileCtx<'a>, addr: u64, where_: &str) -> Result<LocalHeap<'a>> {
        let mut c = f.at(addr, "local heap")?;
        c.sig(b"HEAP", &format!("{where_}: local heap"))?;
        let version = c.u8("local heap version")?;
        if version != 0 {
            bail!("{where_}: local heap version {version} at address {addr}, expected 0");
        }
        c.skip(3, "local heap reserved")?;
        let size = c.length("local heap data size")?;
        let _free = c.length("local heap free list offset")?;
        let data_addr = c.addr_req("local heap data address")?;
        Ok(LocalHeap {
            data: f.slice(data_addr, size, "local heap data segment")?,
        })
    }

    /// The null-terminated string at `offset` in the data segment.
    pub fn string(&self, offset: u64, where_: &str) -> Result<String> {
        let start = usize::try_from(offset).ok().filter(|&o| o < self.data.len());
        let Some(start) = start else {
            bail!(
                "{where_}: link name offset {offset} outside the local heap ({} bytes)",
                self.data.len()
            );
        };
        let rest = &self.data[start..];
        let Some(end) = rest.iter().position(|&b| b == 0) else {
            bail!("{where_}: link name at heap offset {offset} is not null-terminated");
        };
        utf8(&rest[..end], where_)
    }
}

pub fn utf8(b: &[u8], where_: &str) -> Result<String> {
    match std::str::from_utf8(b) {
        Ok(s) => Ok(s.to_string()),
        Err(e) => bail!("{where_}: name or string is not valid UTF-8 ({e})"),
    }
}

/// Object `index` of the global heap collection at `addr`.
pub fn global_heap_object<'a>(f: &FileCtx<'a>, addr: u64, index: u32, where_: &str) -> Result<&'a [u8]> {
    let mut c = f.at(addr, "global heap collection")?;
    c.sig(b"GCOL", &format!("{where_}: global heap collection"))?;
    let version = c.u8("global heap version")?;
    if version != 1 {
        bail!("{where_}: global heap version {version} at address {addr}, expected 1");
    }
    c.skip(3, "global heap reserved")?;
    let size = c.length("global heap collection size")?;
    let coll = f.slice(addr, size, "global heap collection")?;
    let mut c = Cursor::over(coll, f.so, f.sl);
    c.pos = 8 + f.sl;
    // Each object is >= 8 + sl header bytes, so this loop advances on every iteration.
    while c.remaining() >= 8 + f.sl {
        let idx = c.u16("global heap object index")?;
        c.skip(6, "global heap object refcount")?;
        let len = c.length("global heap object size")?;
        if idx == 0 {
            break; // free space: the end of the used objects
        }
        let Ok(len) = usize::try_from(len) else {
            bail!("{where_}: global heap object too large")
        };
        let data = c.bytes(len, "global heap object")?;
        if u32::from(idx) == index {
            return Ok(data);
        }
        let pad = (8 - len % 8) % 8;
        if c.remaining() < pad {
            break;
        }
        c.skip(pad, "global heap padding")?;
    }
    bail!("{where_}: object {index} not found in global heap collection at address {addr}")
}

/// A fractal heap, opened from its header.
pub struct FractalHeap<'a> {
    f: FileCtx<'a>,
    id_len: usize,
    width: u64,
    start_size: u64,
    max_direct_rows: u32,
    root: Option<u64>,
    root_rows: u32,
    off_size: usize,
    len_size: usize,
    direct_header: u64,
}

impl<'a> FractalHeap<'a> {
    pub fn open(f: &FileCtx<'a>, addr: u64, where_: &str) -> Result<FractalHeap<'a>> {
        let mut c = f.at(addr, "fractal heap header")?;
        c.sig(b"FRHP", &format!("{where_}: fractal heap header"))?;
        let version = c.u8("fractal heap version")?;
        if version != 0 {
            bail!("{where_}: fractal heap version {version}, expected 0");
        }
        let id_len = usize::from(c.u16("heap ID length")?);
        let filter_len = c.u16("I/O filter length")?;
        if filter_len != 0 {
            bail!("{where_}: fractal heaps with I/O filters are not supported");
        }
        let flags = c.u8("fractal heap flags")?;
        let max_man = c.u32("max managed object size")?;
        c.skip(f.sl + f.so + f.sl + f.so, "huge/free-space fields")?;
        c.skip(f.sl * 8, "heap statistics")?;
        let width = u64::from(c.u16("table width")?);
        let start_size = c.length("starting block size")?;
        let max_direct = c.length("max direct block size")?;
        let max_heap_bits = c.u16("max heap size")?;
        let _start_rows = c.u16("starting rows")?;
        let root = c.addr("root block address")?;
        let root_rows = u32::from(c.u16("current rows in root indirect block")?);
        let pow2 = |v: u64| v != 0 && v.is_power_of_two();
        if width == 0 || !pow2(start_size) || !pow2(max_direct) || max_direct < start_size || max_heap_bits > 64 {
            bail!("{where_}: fractal heap has inconsistent doubling table (width {width}, block sizes {start_size}..{max_direct})");
        }
        let max_direct_rows = max_direct.trailing_zeros() - start_size.trailing_zeros() + 2;
        let off_size = usize::from(max_heap_bits).div_ceil(8);
        let len_size = (max_direct.trailing_zeros() as usize)
            .div_ceil(8)
            .min(enc_size(u64::from(max_man)));
        let checksum = if flags & 2 != 0 { 4 } else { 0 };
        let direct_header = (5 + f.so + off_size + checksum) as u64;
        Ok(FractalHeap {
            f: *f,
            id_len,
            width,
            start_size,
            max_direct_rows,
            root,
            root_rows,
            off_size,
            len_size,
            direct_header,
        })
    }

    pub fn id_len(&self) -> usize {
        self.id_len
    }

    /// Block size of row `r` in the doubling table.
    fn row_size(&self, r: u32) -> Result<u64> {
        if r == 0 {
            return Ok(self.start_size);
        }
        match 1u64.checked_shl(r - 1).and_then(|m| m.checked_mul(self.start_size)) {
            Some(s) => Ok(s),
            None => bail!("fractal heap row {r} block size overflows"),
        }
    }

    /// The object a heap ID names.
    pub fn get(&self, id: &[u8], budget: &mut Budget, where_: &str) -> Result<Vec<u8>> {
        let Some(&first) = id.first() else {
            bail!("{where_}: empty fractal heap ID")
        };
        if first >> 6 != 0 {
            bail!("{where_}: fractal heap ID version {}, expected 0", first >> 6);
        }
        match (first >> 4) & 3 {
            0 => {
                let mut c = Cursor::over(id, self.f.so, self.f.sl);
                c.pos = 1;
                let off = c.uint(self.off_size, "heap ID offset")?;
                let len = c.uint(self.len_size, "heap ID length")?;
                let Some(root) = self.root else {
                    bail!("{where_}: fractal heap ID into an empty heap")
                };
                let obj = if self.root_rows == 0 {
                    self.in_direct(root, 0, self.start_size, off, len, where_)?
                } else {
                    self.in_indirect(root, 0, self.root_rows, off, len, budget, 0, where_)?
                };
                Ok(obj.to_vec())
            }
            2 => {
                let len = usize::from(first & 0x0f) + 1;
                match id.get(1..1 + len) {
                    Some(d) => Ok(d.to_vec()),
                    None => bail!(
                        "{where_}: tiny heap object of {len} bytes overruns its {}-byte ID",
                        id.len()
                    ),
                }
            }
            1 => bail!("{where_}: 'huge' fractal heap objects are not supported"),
            t => bail!("{where_}: fractal heap ID type {t} is not valid"),
        }
    }

    fn in_direct(&self, addr: u64, block_off: u64, size: u64, off: u64, len: u64, where_: &str) -> Result<&'a [u8]> {
        let mut c = self.f.at(addr, "fractal heap direct block")?;
        c.sig(b"FHDB", &format!("{where_}: fractal heap direct block"))?;
        let rel = off - block_off; // caller guarantees block_off <= off < block_off + size
        match rel.checked_add(len) {
            Some(end) if rel >= self.direct_header && end <= size => {}
            _ => bail!("{where_}: heap object ({len} bytes at heap offset {off}) does not fit its direct block at address {addr}"),
        }
        self.f.slice(addr + rel, len, "fractal heap object")
    }

    #[allow(clippy::too_many_arguments)]
    fn in_indirect(
        &self,
        addr: u64,
        block_off: u64,
        rows: u32,
        off: u64,
        len: u64,
        budget: &mut Budget,
        depth: usize,
        where_: &str,
    ) -> Result<&'a [u8]> {
        if depth > 16 || rows > 64 {
            bail!("{where_}: fractal heap indirect blocks nested too deeply");
        }
        budget.object(where_)?;
        let mut c = self.f.at(addr, "fractal heap indirect block")?;
        c.sig(b"FHIB", &format!("{where_}: fractal heap indirect block"))?;
        c.skip(1 + self.f.so + self.off_size, "indirect block header")?;
        let mut pos = block_off;
        for r in 0..rows {
            let size = self.row_size(r)?;
            for _ in 0..self.width {
                let child = c.addr("indirect block child address")?;
                let end = pos
                    .checked_add(size)
                    .ok_or_else(|| crate::Error(format!("{where_}: heap offset overflow")))?;
                if off >= pos && off < end {
                    let Some(child) = child else {
                        bail!("{where_}: heap offset {off} falls in an unallocated heap block");
                    };
                    if r < self.max_direct_rows {
                        return self.in_direct(child, pos, size, off, len, where_);
                    }
                    // A child indirect block spanning `size` bytes has enough rows to cover it.
                    let span = self.start_size.saturating_mul(self.width);
                    let child_rows = size.trailing_zeros().saturating_sub(span.trailing_zeros()) + 1;
                    return self.in_indirect(child, pos, child_rows, off, len, budget, depth + 1, where_);
                }
                pos = end;
            }
        }
        bail!("{where_}: heap offset {off} lies beyond the fractal heap's blocks")
    }
}
