//! Dataset storage: data layout messages (versions 3 and 4: compact, contiguous, chunked), chunk
//! indexes (v1 B-tree, single chunk, implicit, fixed array, v2 B-tree) and the filter pipeline
//! (deflate, shuffle, fletcher32). Decompression is bounded by the expected chunk size.

use std::io::Read;

use crate::btree;
use crate::cursor::{Cursor, FileCtx};
use crate::object::Budget;
use crate::{bail, Error, Result};

/// A chunk's location: element coordinates of its first element, file address, stored size and
/// filter mask (bit i set = filter i was not applied).
struct Chunk {
    offset: Vec<u64>,
    addr: u64,
    size: u64,
    mask: u32,
}

#[allow(clippy::too_many_arguments)]
pub fn read_data(
    f: &FileCtx,
    layout: &[u8],
    filters: Option<&[u8]>,
    dims: &[u64],
    max_dims: &[u64],
    esize: usize,
    nbytes: u64,
    fill: &[u8],
    budget: &mut Budget,
    path: &str,
) -> Result<Vec<u8>> {
    let mut c = Cursor::over(layout, f.so, f.sl);
    let version = c.u8("layout version")?;
    // libhdf5 2.0 writes version 5 with the version-4 encoding for the layouts read here.
    if !(3..=5).contains(&version) {
        bail!("{path}: data layout message version {version} is not supported (expected 3, 4 or 5)");
    }
    let n = nbytes as usize;
    match c.u8("layout class")? {
        0 => {
            let size = usize::from(c.u16("compact data size")?);
            let data = c.bytes(size, "compact data")?;
            match data.get(..n) {
                Some(d) => Ok(d.to_vec()),
                None => bail!("{path}: compact data holds {size} bytes, expected {n}"),
            }
        }
        1 => {
            let addr = c.addr("contiguous data address")?;
            let size = c.length("contiguous data size")?;
            match addr {
                // Never written: libhdf5 reads the fill value, 0 unless one was set.
                None => Ok(filled(fill, n)),
                Some(_) if size < nbytes => bail!("{path}: contiguous storage holds {size} bytes, expected {nbytes}"),
                Some(a) => Ok(f.slice(a, nbytes, "contiguous data")?.to_vec()),
            }
        }
        2 => {
            if dims.is_empty() {
                bail!("{path}: chunked layout on a scalar dataset");
            }
            let pipeline = match filters {
                Some(p) => parse_filters(p, path)?,
                None => Vec::new(),
            };
            let (cdims, chunks) = if version == 3 {
                chunks_v3(f, &mut c, dims, budget, path)?
            } else {
                chunks_v4(f, &mut c, dims, max_dims, esize, !pipeline.is_empty(), budget, path)?
            };
            assemble(
                f,
                dims,
                &cdims,
                esize,
                filled(fill, n),
                &chunks,
                &pipeline,
                budget,
                path,
            )
        }
        3 => bail!("{path}: virtual datasets are not supported"),
        k => bail!("{path}: data layout class {k} is not valid"),
    }
}

fn chunk_dims(raw: &[u64], dims: &[u64], path: &str) -> Result<Vec<u64>> {
    // The stored dimensionality is the dataset rank + 1 (the last entry is the element size).
    if raw.len() != dims.len() + 1 {
        bail!(
            "{path}: chunk dimensionality {} does not match dataset rank {} + 1",
            raw.len(),
            dims.len()
        );
    }
    let cdims = raw[..dims.len()].to_vec();
    if cdims.contains(&0) {
        bail!("{path}: chunk dimension of 0 in {cdims:?}");
    }
    Ok(cdims)
}

fn chunks_v3(
    f: &FileCtx,
    c: &mut Cursor,
    dims: &[u64],
    budget: &mut Budget,
    path: &str,
) -> Result<(Vec<u64>, Vec<Chunk>)> {
    let nd = usize::from(c.u8("chunk dimensionality")?);
    let tree = c.addr("chunk B-tree address")?;
    let mut raw = Vec::new();
    for _ in 0..nd {
        raw.push(u64::from(c.u32("chunk dimension")?));
    }
    let cdims = chunk_dims(&raw, dims, path)?;
    let mut chunks = Vec::new();
    let Some(tree) = tree else { return Ok((cdims, chunks)) };
    btree::v1_leaves(f, tree, 1, 8 + 8 * nd, budget, path, &mut |key, addr| {
        let mut k = Cursor::over(key, 8, 8);
        let size = u64::from(k.u32("chunk size")?);
        let mask = k.u32("chunk filter mask")?;
        let mut offset = Vec::with_capacity(nd);
        for _ in 0..nd - 1 {
            offset.push(k.u64("chunk offset")?);
        }
        chunks.push(Chunk {
            offset,
            addr,
            size,
            mask,
        });
        Ok(())
    })?;
    Ok((cdims, chunks))
}

#[allow(clippy::too_many_arguments)]
fn chunks_v4(
    f: &FileCtx,
    c: &mut Cursor,
    dims: &[u64],
    max_dims: &[u64],
    esize: usize,
    filtered: bool,
    budget: &mut Budget,
    path: &str,
) -> Result<(Vec<u64>, Vec<Chunk>)> {
    let flags = c.u8("chunked layout flags")?;
    let nd = usize::from(c.u8("chunk dimensionality")?);
    let enc = usize::from(c.u8("chunk dimension size")?);
    let mut raw = Vec::new();
    for _ in 0..nd {
        raw.push(c.uint(enc, "chunk dimension")?);
    }
    let cdims = chunk_dims(&raw, dims, path)?;
    let chunk_bytes = cdims
        .iter()
        .try_fold(esize as u64, |a, &d| a.checked_mul(d))
        .ok_or_else(|| Error(format!("{path}: chunk size overflows")))?;
    // libhdf5 numbers chunks row-major over the *maximum* extent ("max_down_chunks"), with an
    // unlimited dimension (extensible-array indexes) moved to the front ("swizzled").
    let rank = dims.len();
    let mut order: Vec<usize> = (0..rank).collect();
    if let Some(u) = max_dims.iter().position(|&m| m == u64::MAX) {
        order.remove(u);
        order.insert(0, u);
    }
    let grid: Vec<u64> = order
        .iter()
        .map(|&k| {
            let extent = if max_dims.get(k) == Some(&u64::MAX) {
                dims[k]
            } else {
                dims[k].max(max_dims.get(k).copied().unwrap_or(0))
            };
            extent.div_ceil(cdims[k])
        })
        .collect();
    let coords = |mut i: u64| {
        let mut off = vec![0u64; rank];
        for j in (0..rank).rev() {
            let g = grid[j].max(1);
            off[order[j]] = (i % g).saturating_mul(cdims[order[j]]);
            i /= g;
        }
        off
    };
    // Entries of an array index (fixed or extensible): address, then for filtered datasets the
    // stored size and filter mask.
    let from_entries = |entry: usize, data: &[u8], chunks: &mut Vec<Chunk>| -> Result<()> {
        for (i, e) in data.chunks_exact(entry.max(1)).enumerate() {
            let mut ec = Cursor::over(e, f.so, f.sl);
            let Some(addr) = ec.addr("chunk address")? else {
                continue;
            };
            let (size, mask) = if filtered {
                let len = entry
                    .checked_sub(f.so + 4)
                    .ok_or_else(|| Error(format!("{path}: chunk index entry too small")))?;
                (ec.uint(len, "chunk size")?, ec.u32("chunk filter mask")?)
            } else {
                (chunk_bytes, 0)
            };
            chunks.push(Chunk {
                offset: coords(i as u64),
                addr,
                size,
                mask,
            });
        }
        Ok(())
    };
    let index_type = c.u8("chunk index type")?;
    let mut chunks = Vec::new();
    match index_type {
        1 => {
            let (size, mask) = if flags & 2 != 0 {
                (c.length("filtered chunk size")?, c.u32("filter mask")?)
            } else {
                (chunk_bytes, 0)
            };
            if let Some(addr) = c.addr("single chunk address")? {
                chunks.push(Chunk {
                    offset: vec![0; dims.len()],
                    addr,
                    size,
                    mask,
                });
            }
        }
        2 => {
            if let Some(base) = c.addr("implicit index address")? {
                let total = crate::read::count(&grid, path)?;
                for i in 0..total {
                    budget.object(path)?;
                    let addr = i
                        .checked_mul(chunk_bytes)
                        .and_then(|o| o.checked_add(base))
                        .ok_or_else(|| Error(format!("{path}: chunk address overflows")))?;
                    chunks.push(Chunk {
                        offset: coords(i),
                        addr,
                        size: chunk_bytes,
                        mask: 0,
                    });
                }
            }
        }
        3 => {
            c.skip(1, "fixed array page bits")?;
            if let Some(addr) = c.addr("fixed array address")? {
                let (entry, data) = btree::fixed_array(f, addr, budget, path)?;
                from_entries(entry, &data, &mut chunks)?;
            }
        }
        4 => {
            c.skip(5, "extensible array parameters")?;
            if let Some(addr) = c.addr("extensible array address")? {
                let needed = crate::read::count(&grid, path)?;
                let (entry, data) = btree::extensible_array(f, addr, needed, budget, path)?;
                from_entries(entry, &data, &mut chunks)?;
            }
        }
        5 => {
            c.skip(6, "v2 B-tree parameters")?;
            if let Some(addr) = c.addr("chunk v2 B-tree address")? {
                let rank = dims.len();
                btree::v2_records(f, addr, budget, path, &mut |rec| {
                    let mut r = Cursor::over(rec, f.so, f.sl);
                    let addr = r.addr_req("chunk address")?;
                    let (size, mask) = if filtered {
                        let len = rec
                            .len()
                            .checked_sub(f.so + 4 + 8 * rank)
                            .ok_or_else(|| Error(format!("{path}: chunk record too small")))?;
                        (r.uint(len, "chunk size")?, r.u32("chunk filter mask")?)
                    } else {
                        (chunk_bytes, 0)
                    };
                    let mut offset = Vec::with_capacity(rank);
                    for k in 0..rank {
                        // Records hold scaled offsets (in chunks); convert to elements.
                        offset.push(r.u64("chunk scaled offset")?.saturating_mul(cdims[k]));
                    }
                    chunks.push(Chunk {
                        offset,
                        addr,
                        size,
                        mask,
                    });
                    Ok(())
                })?;
            }
        }
        t => bail!("{path}: chunk index type {t} is not valid"),
    }
    Ok((cdims, chunks))
}

/// One filter of a pipeline: id and client data values.
struct Filter {
    id: u16,
    values: Vec<u32>,
}

fn parse_filters(data: &[u8], path: &str) -> Result<Vec<Filter>> {
    let mut c = Cursor::over(data, 8, 8);
    let version = c.u8("filter pipeline version")?;
    let n = c.u8("filter count")?;
    if version == 1 {
        c.skip(6, "filter pipeline reserved")?;
    } else if version != 2 {
        bail!("{path}: filter pipeline version {version}, expected 1 or 2");
    }
    let mut out = Vec::new();
    for _ in 0..n {
        let id = c.u16("filter id")?;
        let name_len = if version == 1 || id >= 256 {
            usize::from(c.u16("filter name length")?)
        } else {
            0
        };
        let _flags = c.u16("filter flags")?;
        let nvals = c.u16("filter client value count")?;
        let name_len = if version == 1 {
            name_len.div_ceil(8) * 8
        } else {
            name_len
        };
        c.skip(name_len, "filter name")?;
        let mut values = Vec::new();
        for _ in 0..nvals {
            values.push(c.u32("filter client value")?);
        }
        if version == 1 && nvals % 2 == 1 {
            c.skip(4, "filter client data padding")?;
        }
        out.push(Filter { id, values });
    }
    Ok(out)
}

/// Undoes the pipeline (in reverse order) on one stored chunk.
fn decode(raw: &[u8], pipeline: &[Filter], mask: u32, chunk_bytes: usize, esize: usize, path: &str) -> Result<Vec<u8>> {
    let mut data = raw.to_vec();
    for (i, filt) in pipeline.iter().enumerate().rev() {
        if i < 32 && mask & (1 << i) != 0 {
            continue;
        }
        data = match filt.id {
            1 => {
                // Bounded: reading one byte past the expected size proves the chunk is corrupt.
                let mut out = Vec::with_capacity(chunk_bytes);
                let mut z = flate2::read::ZlibDecoder::new(data.as_slice()).take(chunk_bytes as u64 + 1);
                if let Err(e) = z.read_to_end(&mut out) {
                    bail!("{path}: deflate stream is corrupt ({e})");
                }
                out
            }
            2 => {
                let s = filt.values.first().map_or(esize, |&v| v as usize);
                unshuffle(&data, s)
            }
            3 => {
                let keep = data
                    .len()
                    .checked_sub(4)
                    .ok_or_else(|| Error(format!("{path}: fletcher32 chunk shorter than its checksum")))?;
                data.truncate(keep);
                data
            }
            id => bail!("{path}: filter {id} is not supported (only deflate 1, shuffle 2, fletcher32 3)"),
        };
    }
    if data.len() != chunk_bytes {
        bail!("{path}: chunk decodes to {} bytes, expected {chunk_bytes}", data.len());
    }
    Ok(data)
}

fn unshuffle(data: &[u8], s: usize) -> Vec<u8> {
    // An element size of 1 (or one larger than the chunk, only in corrupt files) is a no-op.
    if s <= 1 || s > data.len() {
        return data.to_vec();
    }
    let n = data.len() / s;
    let mut out = data.to_vec();
    for b in 0..s {
        for i in 0..n {
            out[i * s + b] = data[b * n + i];
        }
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn assemble(
    f: &FileCtx,
    dims: &[u64],
    cdims: &[u64],
    esize: usize,
    mut out: Vec<u8>,
    chunks: &[Chunk],
    pipeline: &[Filter],
    budget: &mut Budget,
    path: &str,
) -> Result<Vec<u8>> {
    let chunk_bytes = cdims.iter().try_fold(esize as u64, |a, &d| a.checked_mul(d));
    let chunk_bytes = match chunk_bytes {
        Some(b) if b <= u64::from(u32::MAX) => b,
        _ => bail!("{path}: chunk of {cdims:?} elements exceeds HDF5's 4 GiB chunk limit"),
    };
    // The per-chunk decode buffer is charged too, so a tiny dataset cannot claim huge chunks.
    budget.bytes(chunk_bytes, path)?;
    let rank = dims.len();
    for ch in chunks {
        budget.object(path)?;
        if ch.offset.len() != rank || ch.offset.iter().zip(dims).any(|(o, d)| o >= d) {
            continue; // outside the current extent: libhdf5 ignores such chunks too
        }
        let raw = f.slice(ch.addr, ch.size, "chunk data")?;
        let data = decode(raw, pipeline, ch.mask, chunk_bytes as usize, esize, path)?;
        // Copy each row (run along the last dimension) of the chunk that lies inside the dataset.
        let last = rank - 1;
        let run = cdims[last].min(dims[last] - ch.offset[last]) as usize * esize;
        let mut idx = vec![0u64; last];
        'rows: loop {
            let mut src = 0u64;
            let mut dst = 0u64;
            for k in 0..rank {
                let i = if k < last { idx[k] } else { 0 };
                src = src * cdims[k] + i;
                dst = dst * dims[k] + ch.offset[k] + i;
            }
            let (src, dst) = (src as usize * esize, dst as usize * esize);
            out[dst..dst + run].copy_from_slice(&data[src..src + run]);
            // Advance the row counter over the in-bounds part of the chunk.
            let mut k = last;
            loop {
                if k == 0 {
                    break 'rows;
                }
                k -= 1;
                idx[k] += 1;
                if idx[k] < cdims[k] && ch.offset[k] + idx[k] < dims[k] {
                    continue 'rows;
                }
                idx[k] = 0;
            }
        }
    }
    Ok(out)
}

/// `n` bytes of the repeated fill element (already charged to the budget by the caller).
fn filled(fill: &[u8], n: usize) -> Vec<u8> {
    if fill.iter().all(|&b| b == 0) {
        return vec![0; n];
    }
    fill.iter().copied().cycle().take(n).collect()
}
