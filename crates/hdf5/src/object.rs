//! Superblock (versions 0-3) and object header (versions 1 and 2) parsing, plus the budget that
//! bounds how much work and memory a hostile file can make the reader spend.

use std::collections::HashSet;

use crate::checksum::lookup3;
use crate::cursor::{Cursor, FileCtx};
use crate::{bail, Limits, Result};

const SIGNATURE: &[u8; 8] = b"\x89HDF\r\n\x1a\n";

/// Remaining allowance of materialised bytes and visited objects.
pub struct Budget {
    pub bytes_left: u64,
    pub objects_left: usize,
    pub max_depth: usize,
}

impl Budget {
    pub fn new(limits: &Limits) -> Budget {
        Budget {
            bytes_left: limits.max_bytes,
            objects_left: limits.max_objects,
            max_depth: limits.max_depth,
        }
    }

    /// Counts one more object (group, dataset, attribute, B-tree node, heap block, header chunk).
    pub fn object(&mut self, where_: &str) -> Result<()> {
        match self.objects_left.checked_sub(1) {
            Some(n) => {
                self.objects_left = n;
                Ok(())
            }
            None => bail!("{where_}: file has more objects than Limits::max_objects allows"),
        }
    }

    /// Charges `n` bytes before they are allocated.
    pub fn bytes(&mut self, n: u64, where_: &str) -> Result<()> {
        match self.bytes_left.checked_sub(n) {
            Some(left) => {
                self.bytes_left = left;
                Ok(())
            }
            None => bail!("{where_}: {n} more bytes of data would exceed Limits::max_bytes"),
        }
    }
}

/// Finds the superblock (at 0, 512, 1024, 2048, ...) and returns the file context and the root
/// group's object header address.
pub fn superblock(buf: &[u8]) -> Result<(FileCtx<'_>, u64)> {
    let mut at = 0usize;
    loop {
        if at.checked_add(8).is_none_or(|e| e > buf.len()) {
            bail!("no HDF5 signature found (expected \\x89HDF\\r\\n\\x1a\\n at offset 0, 512, 1024, ...)");
        }
        if &buf[at..at + 8] == SIGNATURE {
            break;
        }
        at = if at == 0 { 512 } else { at * 2 };
    }
    let mut c = Cursor::over(buf, 8, 8);
    c.pos = at + 8;
    let version = c.u8("superblock version")?;
    let (so, sl, root);
    match version {
        0 | 1 => {
            c.skip(3, "superblock v0 versions")?;
            c.skip(1, "superblock v0 reserved")?;
            so = usize::from(c.u8("size of offsets")?);
            sl = usize::from(c.u8("size of lengths")?);
            check_sizes(so, sl)?;
            c.skip(1, "reserved")?;
            c.skip(4, "group K values")?;
            c.skip(4, "file consistency flags")?;
            if version == 1 {
                c.skip(4, "indexed storage K")?;
            }
            c.so = so;
            c.sl = sl;
            let _base = c.addr("base address")?;
            c.skip(3 * so, "free space, end of file and driver info addresses")?;
            // Root group symbol table entry: link name offset, object header address, ...
            c.skip(sl, "root link name offset")?;
            root = c.addr_req("root group object header address")?;
        }
        2 | 3 => {
            so = usize::from(c.u8("size of offsets")?);
            sl = usize::from(c.u8("size of lengths")?);
            check_sizes(so, sl)?;
            c.so = so;
            c.sl = sl;
            c.skip(1, "file consistency flags")?;
            c.skip(3 * so, "base, extension and end-of-file addresses")?;
            root = c.addr_req("root group object header address")?;
            let end = c.pos;
            let stored = c.u32("superblock checksum")?;
            if lookup3(&buf[at..end]) != stored {
                bail!("superblock checksum mismatch at offset {end}");
            }
        }
        v => bail!(
            "superblock version {v} is not supported (expected 0-3) at offset {}",
            at + 8
        ),
    }
    // Addresses are relative to where the superblock sits (a user block may precede it).
    Ok((
        FileCtx {
            buf,
            so,
            sl,
            base: at as u64,
        },
        root,
    ))
}

fn check_sizes(so: usize, sl: usize) -> Result<()> {
    for (what, s) in [("offsets", so), ("lengths", sl)] {
        if ![2, 4, 8].contains(&s) {
            bail!("superblock: size of {what} is {s}, expected 2, 4 or 8");
        }
    }
    Ok(())
}

/// One header message: type, flags, body.
#[derive(Clone, Copy)]
pub struct Message<'a> {
    pub kind: u16,
    pub flags: u8,
    pub data: &'a [u8],
}

pub const MSG_DATASPACE: u16 = 0x01;
pub const MSG_LINK_INFO: u16 = 0x02;
pub const MSG_DATATYPE: u16 = 0x03;
pub const MSG_FILL_VALUE_OLD: u16 = 0x04;
pub const MSG_FILL_VALUE: u16 = 0x05;
pub const MSG_LINK: u16 = 0x06;
pub const MSG_LAYOUT: u16 = 0x08;
pub const MSG_FILTERS: u16 = 0x0B;
pub const MSG_ATTRIBUTE: u16 = 0x0C;
pub const MSG_CONTINUATION: u16 = 0x10;
pub const MSG_SYMBOL_TABLE: u16 = 0x11;
pub const MSG_ATTRIBUTE_INFO: u16 = 0x15;

/// Reads all messages of the object header at `addr`, following continuation blocks.
pub fn object_header<'a>(f: &FileCtx<'a>, addr: u64, budget: &mut Budget, where_: &str) -> Result<Vec<Message<'a>>> {
    budget.object(where_)?;
    let mut c = f.at(addr, where_)?;
    let mut messages = Vec::new();
    // Continuation blocks still to parse: (address, length).
    let mut pending: Vec<(u64, u64)> = Vec::new();
    let mut seen = HashSet::new();
    if c.buf.get(c.pos..c.pos + 4) == Some(b"OHDR".as_slice()) {
        let start = c.pos;
        c.skip(4, "OHDR")?;
        let version = c.u8("object header version")?;
        if version != 2 {
            bail!("{where_}: OHDR version {version} at address {addr}, expected 2");
        }
        let flags = c.u8("object header flags")?;
        if flags & 0x20 != 0 {
            c.skip(16, "object header times")?;
        }
        if flags & 0x10 != 0 {
            c.skip(4, "attribute phase change values")?;
        }
        let size = c.uint(1 << (flags & 3), "object header chunk size")?;
        let size = usize::try_from(size).map_err(|_| crate::Error(format!("{where_}: huge header chunk")))?;
        let body = c.bytes(size, "object header chunk #0")?;
        let end = c.pos;
        let stored = c.u32("object header checksum")?;
        if lookup3(&c.buf[start..end]) != stored {
            bail!("{where_}: object header checksum mismatch at address {addr}");
        }
        parse_v2_messages(body, flags & 4 != 0, &mut messages, &mut pending, f, where_)?;
        while let Some((a, len)) = pending.pop() {
            if !seen.insert(a) {
                bail!("{where_}: object header continuation loops back to address {a}");
            }
            budget.object(where_)?;
            let block = f.slice(a, len, "object header continuation block")?;
            if block.len() < 8 || &block[..4] != b"OCHK" {
                bail!("{where_}: expected OCHK continuation block of >= 8 bytes at address {a}");
            }
            let (body, sum) = block.split_at(block.len() - 4);
            if lookup3(body) != u32::from_le_bytes([sum[0], sum[1], sum[2], sum[3]]) {
                bail!("{where_}: continuation block checksum mismatch at address {a}");
            }
            parse_v2_messages(&body[4..], flags & 4 != 0, &mut messages, &mut pending, f, where_)?;
        }
    } else {
        let version = c.u8("object header version")?;
        if version != 1 {
            bail!("{where_}: object header version {version} at address {addr}, expected 1 or an OHDR signature");
        }
        c.skip(1, "reserved")?;
        let _nmsgs = c.u16("number of header messages")?;
        c.skip(4, "object reference count")?;
        let size = c.u32("object header size")?;
        c.skip(4, "object header alignment padding")?;
        let body = c.bytes(size as usize, "object header messages")?;
        parse_v1_messages(body, &mut messages, &mut pending, f, where_)?;
        while let Some((a, len)) = pending.pop() {
            if !seen.insert(a) {
                bail!("{where_}: object header continuation loops back to address {a}");
            }
            budget.object(where_)?;
            let block = f.slice(a, len, "object header continuation block")?;
            parse_v1_messages(block, &mut messages, &mut pending, f, where_)?;
        }
    }
    Ok(messages)
}

fn parse_v1_messages<'a>(
    body: &'a [u8],
    out: &mut Vec<Message<'a>>,
    pending: &mut Vec<(u64, u64)>,
    f: &FileCtx<'a>,
    where_: &str,
) -> Result<()> {
    let mut c = Cursor::over(body, f.so, f.sl);
    while c.remaining() >= 8 {
        let kind = c.u16("message type")?;
        let size = c.u16("message size")?;
        let flags = c.u8("message flags")?;
        c.skip(3, "message reserved")?;
        let data = c.bytes(usize::from(size), "message body")?;
        push(Message { kind, flags, data }, out, pending, f, where_)?;
    }
    Ok(())
}

fn parse_v2_messages<'a>(
    body: &'a [u8],
    creation_order: bool,
    out: &mut Vec<Message<'a>>,
    pending: &mut Vec<(u64, u64)>,
    f: &FileCtx<'a>,
    where_: &str,
) -> Result<()> {
    let header = if creation_order { 6 } else { 4 };
    let mut c = Cursor::over(body, f.so, f.sl);
    // Fewer bytes than a message header left over is a gap, not a message.
    while c.remaining() >= header {
        let kind = u16::from(c.u8("message type")?);
        let size = c.u16("message size")?;
        let flags = c.u8("message flags")?;
        if creation_order {
            c.skip(2, "message creation order")?;
        }
        let data = c.bytes(usize::from(size), "message body")?;
        push(Message { kind, flags, data }, out, pending, f, where_)?;
    }
    Ok(())
}

fn push<'a>(
    m: Message<'a>,
    out: &mut Vec<Message<'a>>,
    pending: &mut Vec<(u64, u64)>,
    f: &FileCtx<'a>,
    where_: &str,
) -> Result<()> {
    if m.kind == MSG_CONTINUATION {
        let mut c = Cursor::over(m.data, f.so, f.sl);
        let a = c.addr_req("continuation address")?;
        let len = c.length("continuation length")?;
        if pending.len() > 4096 {
            bail!("{where_}: too many object header continuation blocks");
        }
        pending.push((a, len));
    } else if m.kind != 0 {
        // Type 0 is a NIL (padding) message.
        out.push(m);
    }
    Ok(())
}

/// Dataspace: `None` for the null dataspace (no elements), `Some((dims, max_dims))` otherwise
/// (empty dims = scalar; max_dims = dims when not stored; u64::MAX = unlimited).
pub fn dataspace(data: &[u8], sl: usize, where_: &str) -> Result<Option<(Vec<u64>, Vec<u64>)>> {
    let mut c = Cursor::over(data, 8, sl);
    let version = c.u8("dataspace version")?;
    let rank = usize::from(c.u8("dataspace rank")?);
    let flags = c.u8("dataspace flags")?;
    let kind = match version {
        1 => {
            c.skip(5, "dataspace reserved")?;
            1
        }
        2 => c.u8("dataspace type")?,
        v => bail!("{where_}: dataspace version {v}, expected 1 or 2"),
    };
    if rank > 32 {
        bail!("{where_}: dataspace rank {rank} exceeds HDF5's maximum of 32");
    }
    match kind {
        0 => Ok(Some((Vec::new(), Vec::new()))),
        1 => {
            let mut dims = Vec::with_capacity(rank);
            for _ in 0..rank {
                dims.push(c.length("dataspace dimension")?);
            }
            let mut max = dims.clone();
            if flags & 1 != 0 {
                for m in max.iter_mut() {
                    *m = c.length("dataspace max dimension")?;
                    if sl < 8 && *m == (1u64 << (8 * sl)) - 1 {
                        *m = u64::MAX; // "unlimited" is all bits set in the stored width
                    }
                }
            }
            Ok(Some((dims, max)))
        }
        2 => Ok(None),
        k => bail!("{where_}: dataspace type {k}, expected 0 (scalar), 1 (simple) or 2 (null)"),
    }
}
