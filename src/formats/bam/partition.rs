//! Byte-range partitions of one BAM file: where a range's records begin and end (the index's
//! positions, or a verified record search), and region scans shared out over the bytes the
//! index selects. The ownership rule and the search are described in [`crate::bgzf::pieces`].

use std::sync::Arc;

use datafusion::common::Result;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::FileGroup;
use noodles_bgzf as bgzf;
use object_store::ObjectMeta;

use crate::bgzf::pieces::{select_pieces, BoundaryOrigin, Piece, Selection};
use crate::bgzf::resync::find_first_record;
use crate::error::BamError;
use crate::formats::bam::info::BamInfo;
use crate::io::ObjectBytes;
use crate::options::region::Region;

/// What the byte range `[start, end)` of file `bytes` decodes. `regions`, when given, are the
/// only records wanted.
pub fn plan_range(
    path: &str,
    bytes: &ObjectBytes,
    info: &BamInfo,
    start: u64,
    end: u64,
    regions: Option<&[Region]>,
) -> Result<Selection> {
    let boundary = |x: u64| -> Result<(Option<bgzf::VirtualPosition>, BoundaryOrigin)> {
        // Region scans cut inside index chunks, where the index's next position may be far away.
        let reach = if regions.is_some() { INDEX_BOUNDARY_REACH } else { u64::MAX };
        if let Some(v) = info.index.as_ref().and_then(|i| i.boundary_at(x)).filter(|v| v.compressed() - x <= reach) {
            return Ok((Some(v), BoundaryOrigin::Index(info.index_note.clone())));
        }
        let guess = find_first_record(bytes.open_at(x)?, x, bytes.size, &info.context).map_err(|e| {
            BamError::damaged(path, format!("after byte {x}"), format!("cannot find the first record: {e}"))
        })?;
        Ok((guess, BoundaryOrigin::RecordSearch(x)))
    };
    let from = if start == 0 { Some(info.header_end) } else { boundary(start)?.0 };
    let (to, origin) = if end >= bytes.size {
        (None, None)
    } else {
        let (to, origin) = boundary(end)?;
        (to, Some(origin))
    };
    let Some(from) = from else { return Ok(Selection::Empty) };
    if to.is_some_and(|to| from >= to) {
        return Ok(Selection::Empty);
    }
    Ok(select_pieces(
        &info.context,
        info.index.as_deref(),
        Piece { from, to, boundary_from: origin.filter(|_| to.is_some()), read_until: None },
        regions,
    ))
}

/// In region scans, an index position at most this many bytes after a range boundary places it;
/// farther away, the record search does (the index has no position inside a long chunk).
const INDEX_BOUNDARY_REACH: u64 = 1 << 16;

/// A region scan's share of compressed data per partition, at least (or DataFusion's
/// `repartition_file_min_size` if smaller): smaller selections are read by fewer partitions,
/// since each costs a file open and a boundary search.
pub const MIN_REGION_PARTITION_BYTES: u64 = 1 << 20;

/// For a region scan: `files` (whole files) as up to `target` groups of byte ranges holding about
/// equal shares, of at least `min_share` bytes, of the compressed bytes the index selects in
/// each file (all of a file without an index). `None` when no file's index narrows the scan,
/// or a file's facts are not loaded.
pub fn region_file_groups(
    files: &[PartitionedFile],
    info_of: impl Fn(&ObjectMeta) -> Option<Arc<BamInfo>>,
    regions: &[Region],
    target: usize,
    min_share: u64,
) -> Option<Vec<FileGroup>> {
    // (file, start, expected end, end) of every stretch to read, in file order.
    let mut stretches = Vec::new();
    let mut narrowed = false;
    for (i, file) in files.iter().enumerate() {
        if file.range.is_some() {
            return None;
        }
        let info = info_of(&file.object_meta)?;
        let size = file.object_meta.size;
        let Some(index) = &info.index else {
            stretches.push((i, 0, size, size));
            continue;
        };
        narrowed = true;
        let whole = Piece::whole_file(info.header_end);
        for piece in select_pieces(&info.context, Some(index), whole, Some(regions)).into_pieces() {
            // The blocks in which the piece's records start, and how far reading is expected
            // to go before the records pass the region's end (the rest weighs nothing).
            let (start, end) =
                (piece.from.compressed(), piece.to.map_or(size, |t| t.compressed() + u64::from(t.uncompressed() > 0)));
            let expected = piece
                .read_until
                .and_then(|u| index.offset_estimate(u.reference as usize, u.end))
                .map_or(end, |e| e.clamp(start, end));
            stretches.push((i, start, expected, end));
        }
    }
    let total: u64 = stretches.iter().map(|(_, a, e, _)| e - a).sum();
    if !narrowed || total == 0 {
        return None;
    }
    let groups = total.checked_div(min_share).unwrap_or(u64::MAX).clamp(1, target.max(1) as u64) as usize;
    // Cut the stretches into `groups` shares; a share's part of one file is one byte range
    // (the unselected pieces inside it are skipped by the scan).
    let share = total.div_ceil(groups as u64);
    let mut out: Vec<Vec<PartitionedFile>> = vec![Vec::new()];
    let mut filled = 0;
    for (i, mut a, expected, b) in stretches {
        while a < b {
            if filled >= share && out.len() < groups {
                out.push(Vec::new());
                filled = 0;
            }
            let cut = a + (share - filled);
            let to = if out.len() == groups || cut >= expected { b } else { cut };
            let group = out.last_mut().expect("one group at least");
            match group.last_mut() {
                Some(last) if last.object_meta.location == files[i].object_meta.location => {
                    last.range.as_mut().expect("ranged when added").end = to as i64;
                }
                _ => group.push(files[i].clone().with_range(a as i64, to as i64)),
            }
            filled += to.min(expected).saturating_sub(a);
            a = to;
        }
    }
    Some(out.into_iter().map(FileGroup::new).collect())
}
