//! CRAM records decoded by htslib (feature `htslib`), samtools' own library, through
//! `rust-htslib`: its decode is samtools' in every field and several times faster than
//! noodles-cram's (BENCHMARKS.md, "CRAM scan: htslib"). The scan is otherwise the same: this crate
//! finds the containers of a partition from their headers (or the `.crai`), seeks htslib to each
//! run of them and takes as many records as each header announces, copied out in BAM's layout for
//! the BAM decoder. htslib reads local files only; other locations are decoded by noodles-cram.

use std::sync::Once;

use datafusion::common::Result;
use rust_htslib::bam::{Read as _, Reader, Record};
use rust_htslib::htslib;

use crate::formats::cram::container::{container_error, cram_error, missing_reference, CramHeader, Reference};
use crate::formats::cram::head::{check_checksums, ContainerHead};
use crate::io::ObjectBytes;

/// BAM's CIGAR op codes used for the placeholder CIGAR of records with more ops than BAM's
/// 16-bit count holds (SAM specification, section 4.2.2).
const CIGAR_SOFT_CLIP: u32 = 4;
const CIGAR_SKIP: u32 = 3;
/// The most CIGAR ops a BAM record holds in its own field.
const MAX_FIELD_CIGAR_OPS: u32 = u16::MAX as u32;

/// A CRAM file opened in htslib, positioned after the container it decoded last.
pub struct HtslibCram {
    path: String,
    reader: Reader,
    record: Record,
    /// The offset of the container htslib reads next, when known.
    next: Option<u64>,
}

impl HtslibCram {
    /// Whether htslib can open `bytes`: a local file.
    pub fn can_read(bytes: &ObjectBytes) -> bool {
        bytes.shown.starts_with('/') && std::path::Path::new(&bytes.shown).is_file()
    }

    /// Opens the CRAM file `local` (named `path` in messages) with `reference`'s FASTA, to
    /// decode the data series of `required_fields` (see [`required_fields`]).
    pub fn open(path: &str, local: &str, reference: &Reference, required_fields: u32) -> Result<Self> {
        quiet_htslib();
        let mut reader =
            Reader::from_path(local).map_err(|e| cram_error(path, format!("htslib cannot open it: {e}")))?;
        reader
            .set_cram_options(htslib::hts_fmt_option_CRAM_OPT_REQUIRED_FIELDS, required_fields)
            .map_err(|e| cram_error(path, format!("htslib refuses the fields to decode: {e}")))?;
        if let Some(fasta) = reference.path() {
            reader
                .set_reference(fasta)
                .map_err(|e| cram_error(path, format!("htslib cannot use the reference {fasta}: {e}")))?;
        }
        Ok(Self { path: path.to_string(), reader, record: Record::new(), next: None })
    }

    /// Decodes the container `head` of the file `bytes`, appending each record's BAM encoding (without its
    /// `block_size`) to `data` and its end to `ends`.
    pub fn decode_into(
        &mut self,
        bytes: &ObjectBytes,
        head: &ContainerHead,
        header: &CramHeader,
        reference: &Reference,
        data: &mut Vec<u8>,
        ends: &mut Vec<usize>,
    ) -> Result<()> {
        // htslib checks a block's CRC32 only when it decompresses the block, which it skips for
        // data series no column needs; damage there must still fail the scan.
        let container = bytes.read_range(head.offset, head.end - head.offset)?;
        check_checksums(head, &container).map_err(|what| container_error(&self.path, head.offset, what))?;
        if self.next != Some(head.offset) {
            self.next = None;
            self.reader.seek(head.offset as i64).map_err(|e| container_error(&self.path, head.offset, e))?;
        }
        for number in 0..head.records {
            let failure = match self.reader.read(&mut self.record) {
                Some(Ok(())) => {
                    append_bam(self.record.inner(), data);
                    ends.push(data.len());
                    continue;
                }
                Some(Err(e)) => e.to_string(),
                None => "the container ends early".to_string(),
            };
            if let Some(missing) = missing_reference(&self.path, head, header, reference) {
                return Err(missing.into());
            }
            return Err(container_error(
                &self.path,
                head.offset,
                format!("cannot decode its records: htslib failed at record {number} of {} ({failure})", head.records),
            ));
        }
        self.next = Some(head.end);
        Ok(())
    }
}

/// The SAM fields htslib must decode (its `CRAM_OPT_REQUIRED_FIELDS`) for a scan of the table
/// columns `columns`: those the columns show, and always the fixed fields the decoder's filters,
/// regions and checks read (FLAG, RNAME, POS, MAPQ, CIGAR). htslib then skips the data series
/// of the others, and adds the series these depend on itself (`cram_dependent_data_series`).
pub fn required_fields<'a>(columns: impl IntoIterator<Item = &'a str>) -> u32 {
    let always = htslib::sam_fields_SAM_FLAG
        | htslib::sam_fields_SAM_RNAME
        | htslib::sam_fields_SAM_POS
        | htslib::sam_fields_SAM_MAPQ
        | htslib::sam_fields_SAM_CIGAR;
    columns.into_iter().fold(always, |fields, column| {
        fields
            | match column {
                "qname" => htslib::sam_fields_SAM_QNAME,
                "rnext" => htslib::sam_fields_SAM_RNEXT,
                "pnext" => htslib::sam_fields_SAM_PNEXT,
                "tlen" => htslib::sam_fields_SAM_TLEN,
                "seq" => htslib::sam_fields_SAM_SEQ,
                "qual" => htslib::sam_fields_SAM_QUAL,
                // MD and NM are regenerated from the bases, which htslib does not add itself.
                "tags" | "tags_extra" => {
                    htslib::sam_fields_SAM_AUX | htslib::sam_fields_SAM_RGAUX | htslib::sam_fields_SAM_SEQ
                }
                _ => 0,
            }
    })
}

/// htslib's own messages off: its failures become this crate's errors, which name the file and
/// container. Process-wide, as htslib's log level is.
fn quiet_htslib() {
    static QUIET: Once = Once::new();
    // SAFETY: sets one global integer.
    QUIET.call_once(|| unsafe { htslib::hts_set_log_level(htslib::htsLogLevel_HTS_LOG_OFF) });
}

/// Appends `record` as BAM lays it out on disk (after `block_size`): htslib's in-memory record
/// has wider fixed fields, pads the name with NULs, and keeps CIGARs of any length, which BAM
/// stores in a `CG` tag beyond 65535 ops.
fn append_bam(record: &htslib::bam1_t, data: &mut Vec<u8>) {
    let core = &record.core;
    // SAFETY: htslib's record owns `l_data` bytes at `data` while `record` is borrowed.
    let bytes = unsafe { std::slice::from_raw_parts(record.data, record.l_data as usize) };
    let name_len = usize::from(core.l_qname) - usize::from(core.l_extranul);
    let cigar_at = usize::from(core.l_qname);
    let cigar_len = 4 * core.n_cigar as usize;
    let long_cigar = core.n_cigar > MAX_FIELD_CIGAR_OPS;
    data.extend_from_slice(&core.tid.to_le_bytes());
    data.extend_from_slice(&(core.pos as i32).to_le_bytes());
    data.push(name_len as u8);
    data.push(core.qual);
    data.extend_from_slice(&core.bin.to_le_bytes());
    let field_ops: u16 = if long_cigar { 2 } else { core.n_cigar as u16 };
    data.extend_from_slice(&field_ops.to_le_bytes());
    data.extend_from_slice(&core.flag.to_le_bytes());
    data.extend_from_slice(&core.l_qseq.to_le_bytes());
    data.extend_from_slice(&core.mtid.to_le_bytes());
    data.extend_from_slice(&(core.mpos as i32).to_le_bytes());
    data.extend_from_slice(&(core.isize_ as i32).to_le_bytes());
    data.extend_from_slice(&bytes[..name_len]);
    let cigar = &bytes[cigar_at..cigar_at + cigar_len];
    if long_cigar {
        let reference_len: u32 = cigar
            .chunks_exact(4)
            .map(|op| u32::from_le_bytes(op.try_into().expect("4 bytes")))
            .filter(|op| matches!(op & 0xf, 0 | 2 | 3 | 7 | 8))
            .map(|op| op >> 4)
            .sum();
        data.extend_from_slice(&((core.l_qseq as u32) << 4 | CIGAR_SOFT_CLIP).to_le_bytes());
        data.extend_from_slice(&(reference_len << 4 | CIGAR_SKIP).to_le_bytes());
        data.extend_from_slice(&bytes[cigar_at + cigar_len..]);
        data.extend_from_slice(b"CGBI");
        data.extend_from_slice(&core.n_cigar.to_le_bytes());
        data.extend_from_slice(cigar);
    } else {
        data.extend_from_slice(&bytes[cigar_at..]);
    }
}
