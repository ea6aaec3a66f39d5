//! One row of the table's columns as a BAM record's bytes (SAM spec §4.2), written straight
//! from the Arrow arrays.
//!
//! The checks are those of SAM's grammar (§1.4) and of BAM's layout, as noodles' encoder makes
//! them: the test oracle is noodles writing a `RecordBuf` of the same values.

use arrow::array::{Array, ArrayRef, AsArray, PrimitiveArray, RecordBatch, StringArray, StructArray};
use arrow::compute::cast;
use arrow::datatypes::{ArrowPrimitiveType, DataType, Field, Int32Type, Int64Type, UInt16Type, UInt8Type};
use datafusion::common::{DataFusionError, Result};
use noodles_core::Position;
use noodles_sam as sam;

use crate::record::{cigar_op, FLAG_UNMAPPED, SEQ_CODES};
use crate::schema::{col, fixed_column_type, TagKind, TagName, COLUMN_NAMES};
use crate::write::aux::{write_sam_fields, write_struct_field};

/// BAM's MAPQ for "unavailable", which the table shows as null.
const MAPQ_UNAVAILABLE: u8 = 255;
/// BAM's reference id and position for "none".
const NONE: i32 = -1;
/// BAM's quality byte for a record without qualities.
const QUAL_MISSING: u8 = 0xff;
/// The most CIGAR operations a record holds; longer CIGARs go to a `CG` tag (§4.2.2).
const MAX_CIGAR_OPS: usize = u16::MAX as usize;
/// The longest read name, without its NUL.
const MAX_NAME: usize = 254;
/// The longest CIGAR operation.
const MAX_OP_LEN: u32 = (1 << 28) - 1;
/// The highest base quality (§4.2.3), as a Phred score.
const MAX_QUALITY: u8 = 93;
/// The bin of a record without a position (§4.2.1: `reg2bin(-1, 0)`).
const UNPLACED_BIN: u16 = 4680;

/// Where a record lies in the reference, as an index needs it: reference id, start, end, and
/// whether it is mapped; `None` for a record without a position.
pub type AlignmentContext = Option<(usize, Position, Position, bool)>;

/// One batch's columns, cast to the table's types.
pub struct Columns {
    pub qname: StringArray,
    flag: ArrayRef,
    rname: StringArray,
    pos: ArrayRef,
    mapq: ArrayRef,
    cigar: StringArray,
    rnext: StringArray,
    pnext: ArrayRef,
    tlen: ArrayRef,
    seq: StringArray,
    qual: StringArray,
    tags: Option<StructArray>,
    tags_extra: Option<StringArray>,
}

impl Columns {
    /// The columns of `batch`, whose column `index_of[id]` holds the table's column `id`, and
    /// whose `tags` struct has the fields `tags`.
    pub fn of(
        batch: &RecordBatch,
        index_of: &[Option<usize>; col::COUNT],
        tags: &[(TagName, TagKind)],
    ) -> Result<Self> {
        let get = |id: usize| -> Result<Option<ArrayRef>> {
            index_of[id].map(|i| cast(batch.column(i), &fixed_column_type(id).0)).transpose().map_err(Into::into)
        };
        let required = |id: usize| -> Result<ArrayRef> {
            get(id)?.ok_or_else(|| DataFusionError::Internal(format!("column {} was checked", COLUMN_NAMES[id])))
        };
        let text = |id: usize| -> Result<StringArray> { Ok(required(id)?.as_string::<i32>().clone()) };
        let tags = match index_of[col::TAGS] {
            None => None,
            Some(i) => {
                let fields =
                    tags.iter().map(|(name, kind)| Field::new(String::from_utf8_lossy(name), kind.data_type(), true));
                let target = DataType::Struct(fields.collect());
                Some(cast(batch.column(i), &target)?.as_struct().clone())
            }
        };
        Ok(Self {
            qname: text(col::QNAME)?,
            flag: required(col::FLAG)?,
            rname: text(col::RNAME)?,
            pos: required(col::POS)?,
            mapq: required(col::MAPQ)?,
            cigar: text(col::CIGAR)?,
            rnext: text(col::RNEXT)?,
            pnext: required(col::PNEXT)?,
            tlen: required(col::TLEN)?,
            seq: text(col::SEQ)?,
            qual: text(col::QUAL)?,
            tags,
            tags_extra: get(col::TAGS_EXTRA)?.map(|a| a.as_string::<i32>().clone()),
        })
    }
}

/// Reusable space for one record's parts.
#[derive(Default)]
pub struct Scratch {
    cigar: Vec<u32>,
}

/// Appends row `row` as one BAM record, its block size first, to `out`; returns where it lies.
/// On an error, `out` holds what it held before.
pub fn write_record(
    out: &mut Vec<u8>,
    columns: &Columns,
    tags: &[(TagName, TagKind)],
    header: &sam::Header,
    row: usize,
    scratch: &mut Scratch,
) -> Result<AlignmentContext, String> {
    let start = out.len();
    let written = write_fields(out, columns, tags, header, row, scratch);
    if written.is_err() {
        out.truncate(start);
    }
    written
}

fn write_fields(
    out: &mut Vec<u8>,
    c: &Columns,
    tags: &[(TagName, TagKind)],
    header: &sam::Header,
    row: usize,
    scratch: &mut Scratch,
) -> Result<AlignmentContext, String> {
    let start = out.len();
    let flag = c.flag.as_primitive::<UInt16Type>();
    if flag.is_null(row) {
        return Err("flag is null".into());
    }
    let flag = flag.value(row);
    let ref_id = reference_id(header, &c.rname, row, "rname")?;
    let next_ref_id = match text(&c.rnext, row) {
        Some("=") => ref_id,
        _ => reference_id(header, &c.rnext, row, "rnext")?,
    };
    let pos = position(c.pos.as_primitive::<Int64Type>(), row, "pos")?;
    if pos < NONE {
        return Err(format!("pos {} is negative", i64::from(pos) + 1));
    }
    // A negative PNEXT is kept as htslib keeps it (the table shows it as samtools prints it).
    let next_pos = position(c.pnext.as_primitive::<Int64Type>(), row, "pnext")?;
    let name = match text(&c.qname, row) {
        None | Some("*") => b"*".as_slice(),
        Some(name) => valid_name(name)?,
    };
    let cigar = &mut scratch.cigar;
    parse_cigar(text(&c.cigar, row), cigar)?;
    let (span, read_length) = cigar.iter().fold((0u64, 0u64), |(span, read), &op| {
        let (len, code) = (u64::from(op >> 4), (op & 0xf) as u8);
        (
            span + if cigar_op::consumes_reference(code) { len } else { 0 },
            read + if cigar_op::consumes_query(code) { len } else { 0 },
        )
    });
    let seq = match text(&c.seq, row) {
        None | Some("*") => b"".as_slice(),
        Some(seq) => seq.as_bytes(),
    };
    if read_length > 0 && !seq.is_empty() && seq.len() as u64 != read_length {
        return Err(format!("seq has {} bases, and its cigar {read_length}", seq.len()));
    }
    let l_seq = u32::try_from(seq.len()).map_err(|_| "seq is longer than BAM allows".to_string())?;
    // The end as noodles and htslib take it: a record without reference bases covers one.
    let end = (pos >= 0).then(|| i64::from(pos) + span.max(1) as i64);

    out.extend([0; 4]);
    out.extend(ref_id.to_le_bytes());
    out.extend(pos.to_le_bytes());
    out.push(name.len() as u8 + 1);
    out.push(value_or(c.mapq.as_primitive::<UInt8Type>(), row, MAPQ_UNAVAILABLE));
    out.extend(end.map_or(UNPLACED_BIN, |end| region_to_bin(i64::from(pos), end)).to_le_bytes());
    let overflowing = cigar.len() > MAX_CIGAR_OPS;
    out.extend((if overflowing { 2 } else { cigar.len() as u16 }).to_le_bytes());
    out.extend(flag.to_le_bytes());
    out.extend(l_seq.to_le_bytes());
    out.extend(next_ref_id.to_le_bytes());
    out.extend(next_pos.to_le_bytes());
    out.extend(value_or(c.tlen.as_primitive::<Int32Type>(), row, 0).to_le_bytes());
    out.extend(name);
    out.push(0);
    if overflowing {
        // §4.2.2: `kSmN` in the record, with the real CIGAR in `CG`.
        let span = u32::try_from(span).ok().filter(|&s| s <= MAX_OP_LEN).ok_or("cigar spans too many bases")?;
        out.extend(((l_seq << 4) | u32::from(cigar_op::SOFT_CLIP)).to_le_bytes());
        out.extend(((span << 4) | u32::from(cigar_op::SKIP)).to_le_bytes());
    } else {
        cigar.iter().for_each(|op| out.extend(op.to_le_bytes()));
    }
    write_sequence(out, seq)?;
    write_qualities(out, text(&c.qual, row), seq.len())?;
    if let Some(struct_tags) = &c.tags {
        for ((name, kind), column) in tags.iter().zip(struct_tags.columns()) {
            if column.is_valid(row) {
                write_struct_field(out, *name, *kind, column, row)?;
            }
        }
    }
    if let Some(extra) = c.tags_extra.as_ref().filter(|e| e.is_valid(row)) {
        write_sam_fields(out, extra.value(row))?;
    }
    if overflowing {
        out.extend(b"CGBI");
        out.extend((cigar.len() as u32).to_le_bytes());
        cigar.iter().for_each(|op| out.extend(op.to_le_bytes()));
    }
    let block_size = u32::try_from(out.len() - start - 4).map_err(|_| "the record is larger than BAM allows")?;
    out[start..start + 4].copy_from_slice(&block_size.to_le_bytes());
    Ok(match (usize::try_from(ref_id), end) {
        (Ok(id), Some(end)) => {
            let start = Position::try_from(pos as usize + 1).map_err(|e| e.to_string())?;
            let end = Position::try_from(end as usize).map_err(|e| e.to_string())?;
            Some((id, start, end, flag & FLAG_UNMAPPED == 0))
        }
        _ => None,
    })
}

/// A text column's value; `None` for null.
fn text(column: &StringArray, row: usize) -> Option<&str> {
    column.is_valid(row).then(|| column.value(row))
}

/// A number of a row, or BAM's value for "absent" when it is null.
fn value_or<T: ArrowPrimitiveType>(array: &PrimitiveArray<T>, row: usize, null: T::Native) -> T::Native {
    if array.is_valid(row) {
        array.value(row)
    } else {
        null
    }
}

/// The header's id of the reference named in `column`, or -1 for null or `*`.
fn reference_id(header: &sam::Header, column: &StringArray, row: usize, what: &str) -> Result<i32, String> {
    match text(column, row) {
        None | Some("*") => Ok(NONE),
        Some(name) => match header.reference_sequences().get_index_of(name.as_bytes()) {
            Some(id) => i32::try_from(id).map_err(|_| format!("{what} {name} has a reference id beyond BAM's")),
            None => Err(format!("{what} {name} is not a reference sequence of the output's header")),
        },
    }
}

/// A 1-based position (0 or null: none) as BAM's 0-based one.
fn position(column: &PrimitiveArray<Int64Type>, row: usize, what: &str) -> Result<i32, String> {
    match value_or(column, row, 0) {
        0 => Ok(NONE),
        p => i32::try_from(p - 1).map_err(|_| format!("{what} {p} is beyond BAM's positions")),
    }
}

/// A read name as SAM's grammar allows it: 1 to 254 printable characters other than `@`.
fn valid_name(name: &str) -> Result<&[u8], String> {
    let valid = (1..=MAX_NAME).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_graphic() && b != b'@');
    match valid {
        true => Ok(name.as_bytes()),
        false => Err(format!("qname {name:?} is not 1 to {MAX_NAME} printable characters other than @")),
    }
}

/// Parses a SAM CIGAR (`*` or null: none) into BAM's ops.
fn parse_cigar(cigar: Option<&str>, ops: &mut Vec<u32>) -> Result<(), String> {
    ops.clear();
    let Some(text) = cigar.filter(|c| *c != "*") else {
        return Ok(());
    };
    let invalid = || format!("cigar {text:?} is not SAM's ([0-9]+[MIDNSHP=X])+");
    if text.is_empty() {
        return Err(invalid());
    }
    let mut len: Option<u32> = None;
    for b in text.bytes() {
        match b {
            b'0'..=b'9' => {
                let digit = u32::from(b - b'0');
                len = Some(len.unwrap_or(0).checked_mul(10).and_then(|n| n.checked_add(digit)).ok_or_else(invalid)?);
            }
            _ => {
                let code = cigar_op::LETTERS.iter().position(|&l| l == b).ok_or_else(invalid)?;
                let len = len.take().filter(|&n| n <= MAX_OP_LEN).ok_or_else(invalid)?;
                ops.push((len << 4) | code as u32);
            }
        }
    }
    match len {
        None => Ok(()),
        Some(_) => Err(invalid()),
    }
}

/// BAM's bin of the 0-based, half-open region `start..end` (§5.3, `reg2bin`); beyond BAM's
/// levels it is truncated to 16 bits, as htslib and noodles store it.
fn region_to_bin(start: i64, end: i64) -> u16 {
    let (start, end) = (start as u64, end as u64 - 1);
    let bin = if start >> 14 == end >> 14 {
        ((1 << 15) - 1) / 7 + (start >> 14)
    } else if start >> 17 == end >> 17 {
        ((1 << 12) - 1) / 7 + (start >> 17)
    } else if start >> 20 == end >> 20 {
        ((1 << 9) - 1) / 7 + (start >> 20)
    } else if start >> 23 == end >> 23 {
        ((1 << 6) - 1) / 7 + (start >> 23)
    } else if start >> 26 == end >> 26 {
        1 + (start >> 26)
    } else {
        0
    };
    bin as u16
}

/// Packs bases two to a byte (§4.2.3); SAM's `[A-Za-z=.]`, letters outside BAM's codes as `N`.
fn write_sequence(out: &mut Vec<u8>, seq: &[u8]) -> Result<(), String> {
    const CODES: [u8; 256] = base_codes();
    if let Some(&bad) = seq.iter().find(|&&b| !(b.is_ascii_alphabetic() || b == b'=' || b == b'.')) {
        return Err(format!("seq holds {:?}, which is not a base", char::from(bad)));
    }
    let (pairs, last) = seq.as_chunks::<2>();
    out.extend(pairs.iter().map(|&[a, b]| (CODES[usize::from(a)] << 4) | CODES[usize::from(b)]));
    if let &[a] = last {
        out.push(CODES[usize::from(a)] << 4);
    }
    Ok(())
}

const fn base_codes() -> [u8; 256] {
    let mut codes = [15; 256];
    let mut i = 0;
    while i < SEQ_CODES.len() {
        codes[SEQ_CODES[i] as usize] = i as u8;
        codes[SEQ_CODES[i].to_ascii_lowercase() as usize] = i as u8;
        i += 1;
    }
    codes
}

/// Writes the qualities (`*` or null: none, stored as 0xFF for every base).
fn write_qualities(out: &mut Vec<u8>, qual: Option<&str>, bases: usize) -> Result<(), String> {
    match qual.filter(|q| *q != "*") {
        None => out.extend(std::iter::repeat_n(QUAL_MISSING, bases)),
        Some(qual) if qual.len() != bases => {
            return Err(format!("qual has {} scores, and seq {bases} bases", qual.len()));
        }
        Some(qual) => {
            let start = out.len();
            out.extend(qual.bytes().map(|q| q.wrapping_sub(b'!')));
            if let Some(bad) = out[start..].iter().position(|&q| q > MAX_QUALITY) {
                return Err(format!("qual holds {:?}, not a score from ! to ~", char::from(qual.as_bytes()[bad])));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int32Array, Int64Array, ListBuilder, StringBuilder, UInt16Array, UInt8Array};
    use arrow::datatypes::Float32Type;
    use arrow::datatypes::Schema;
    use noodles_sam::alignment::record::cigar::{op::Kind, Op};
    use noodles_sam::alignment::record::data::field::Tag;
    use noodles_sam::alignment::record_buf::data::field::value::Array;
    use noodles_sam::alignment::record_buf::data::field::Value;
    use noodles_sam::alignment::RecordBuf;
    use noodles_sam::header::record::value::{map::ReferenceSequence, Map};
    use sam::alignment::io::Write as _;

    use super::*;
    use crate::schema::{bam_schema, IntWidth, TagLayout};

    /// A small, seeded generator: each case is reproducible from its seed.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            // xorshift64*
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        fn chance(&mut self, one_in: u64) -> bool {
            self.below(one_in) == 0
        }
        fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
            &items[self.below(items.len() as u64) as usize]
        }
        fn int_in(&mut self, min: i64, max: i64) -> i64 {
            min + (self.next() % ((max - min) as u64 + 1)) as i64
        }
    }

    const REFERENCES: [(&str, usize); 3] = [("chr1", 248_956_422), ("chrM", 16_569), ("big", 536_870_000)];

    fn header() -> sam::Header {
        let mut builder = sam::Header::builder();
        for (name, len) in REFERENCES {
            let len = std::num::NonZero::new(len).unwrap();
            builder = builder.add_reference_sequence(name, Map::<ReferenceSequence>::new(len));
        }
        builder.build()
    }

    /// The struct fields of the generated rows: every kind, and each integer width rule.
    fn struct_tags() -> Vec<(TagName, TagKind)> {
        vec![
            (*b"NM", TagKind::Int(IntWidth::Smallest)),
            (*b"XS", TagKind::Int(IntWidth::SmallestSigned)),
            (*b"XI", TagKind::Int(IntWidth::Fixed(b'i'))),
            (*b"Xc", TagKind::Int(IntWidth::Fixed(b'c'))),
            (*b"XA", TagKind::Char),
            (*b"XZ", TagKind::String),
            (*b"XH", TagKind::Hex),
            (*b"XF", TagKind::Float),
            (*b"XB", TagKind::IntArray(b'C')),
            (*b"Xs", TagKind::IntArray(b's')),
            (*b"XG", TagKind::FloatArray),
        ]
    }

    /// One generated row: the table's values, and the same record as noodles holds it.
    struct Row {
        qname: Option<String>,
        flag: u16,
        rname: Option<String>,
        pos: Option<i64>,
        mapq: Option<u8>,
        cigar: Option<String>,
        rnext: Option<String>,
        pnext: Option<i64>,
        tlen: i32,
        seq: Option<String>,
        qual: Option<String>,
        /// Per struct field: an integer, text, float, or array value.
        tags: Vec<Option<TagValue>>,
        extra: Option<String>,
        record: RecordBuf,
    }

    #[derive(Clone)]
    enum TagValue {
        Int(i64),
        Text(String),
        Float(f32),
        Ints(Vec<i64>),
        Floats(Vec<f32>),
    }

    fn noodles_int(letter: u8, v: i64) -> Value {
        match letter {
            b'c' => Value::Int8(v as i8),
            b'C' => Value::UInt8(v as u8),
            b's' => Value::Int16(v as i16),
            b'S' => Value::UInt16(v as u16),
            b'i' => Value::Int32(v as i32),
            _ => Value::UInt32(v as u32),
        }
    }

    fn noodles_int_array(subtype: u8, values: &[i64]) -> Value {
        Value::Array(match subtype {
            b'c' => Array::Int8(values.iter().map(|&v| v as i8).collect()),
            b'C' => Array::UInt8(values.iter().map(|&v| v as u8).collect()),
            b's' => Array::Int16(values.iter().map(|&v| v as i16).collect()),
            b'S' => Array::UInt16(values.iter().map(|&v| v as u16).collect()),
            b'i' => Array::Int32(values.iter().map(|&v| v as i32).collect()),
            _ => Array::UInt32(values.iter().map(|&v| v as u32).collect()),
        })
    }

    fn text(rng: &mut Rng, alphabet: &[u8], len: usize) -> String {
        (0..len).map(|_| char::from(*rng.pick(alphabet))).collect()
    }

    /// Text of up to `max - 1` characters (times `unit`) from `alphabet`.
    fn some_text(rng: &mut Rng, alphabet: &[u8], max: u64, unit: usize) -> String {
        let len = unit * rng.below(max) as usize;
        text(rng, alphabet, len)
    }

    fn int_range(letter: u8) -> (i64, i64) {
        match letter {
            b'c' => (-128, 127),
            b'C' => (0, 255),
            b's' => (-32768, 32767),
            b'S' => (0, 65535),
            b'i' => (i32::MIN.into(), i32::MAX.into()),
            _ => (0, u32::MAX.into()),
        }
    }

    /// An integer near one of BAM's type boundaries, or anywhere in BAM's range.
    fn boundary_int(rng: &mut Rng) -> i64 {
        let edges = [0, 127, 128, 255, 256, 32767, 32768, 65535, 65536, -1, -128, -129, -32768, -32769];
        match rng.below(3) {
            0 => rng.int_in(i32::MIN.into(), u32::MAX.into()),
            _ => (rng.pick(&edges) + rng.int_in(-1, 1)).clamp(i32::MIN.into(), u32::MAX.into()),
        }
    }

    fn generate(rng: &mut Rng) -> Row {
        let mut record = RecordBuf::default();
        let name_chars: Vec<u8> = (b'!'..=b'~').filter(|&b| b != b'@').collect();
        let qname = (!rng.chance(8))
            .then(|| format!("{}{}", char::from(*rng.pick(&name_chars)), some_text(rng, &name_chars, 30, 1)))
            .filter(|n| n != "*");
        *record.name_mut() = qname.as_deref().map(Into::into);
        let flag = rng.below(1 << 12) as u16;
        *record.flags_mut() = sam::alignment::record::Flags::from(flag);
        let reference = (!rng.chance(5)).then(|| rng.below(REFERENCES.len() as u64) as usize);
        let rname = reference.map(|id| REFERENCES[id].0.to_string());
        *record.reference_sequence_id_mut() = reference;
        let mapq = (!rng.chance(5)).then(|| rng.below(255) as u8);
        *record.mapping_quality_mut() = mapq.and_then(sam::alignment::record::MappingQuality::new);
        let kinds = [Kind::Match, Kind::Insertion, Kind::Deletion, Kind::Skip, Kind::SoftClip, Kind::HardClip];
        let kinds = [&kinds[..], &[Kind::Pad, Kind::SequenceMatch, Kind::SequenceMismatch]].concat();
        let op_count = match rng.below(40) {
            0 => 0,
            1 => 65_536 + rng.below(3) as usize,
            _ => 1 + rng.below(8) as usize,
        };
        let ops: Vec<Op> = (0..op_count).map(|_| Op::new(*rng.pick(&kinds), 1 + rng.below(200) as usize)).collect();
        let cigar = (!ops.is_empty()).then(|| {
            let letters = |k: Kind| cigar_op::LETTERS[k as usize];
            ops.iter().map(|op| format!("{}{}", op.len(), char::from(letters(op.kind())))).collect::<String>()
        });
        *record.cigar_mut() = ops.iter().copied().collect();
        let span: usize = ops.iter().filter(|op| op.kind().consumes_reference()).map(|op| op.len()).sum();
        let pos = reference.and_then(|id| {
            let len = REFERENCES[id].1 as i64;
            match rng.below(6) {
                0 => None,
                // Ending at a bin edge, or a base before or after it, where the end decides the bin.
                1 | 2 => {
                    Some((rng.int_in(1, len >> 14) << 14) - span as i64 + rng.int_in(0, 2)).map(|p| p.clamp(1, len))
                }
                _ => Some(rng.int_in(1, len)),
            }
        });
        *record.alignment_start_mut() = pos.map(|p| Position::try_from(p as usize).unwrap());
        let read_length: usize = ops.iter().filter(|op| op.kind().consumes_read()).map(|op| op.len()).sum();
        let seq_len = match read_length {
            0 => rng.below(20) as usize,
            n => n,
        };
        let seq = (!rng.chance(10)).then(|| text(rng, b"ACGTNacgtn=.RYMKSWBDHVU", seq_len)).filter(|s| !s.is_empty());
        *record.sequence_mut() = seq.as_deref().unwrap_or("").as_bytes().into();
        let qual =
            seq.as_ref().filter(|_| !rng.chance(5)).map(|s| text(rng, &(b'!'..=b'~').collect::<Vec<_>>(), s.len()));
        *record.quality_scores_mut() = qual.as_deref().unwrap_or("").bytes().map(|q| q - b'!').collect();
        let mate = match rng.below(4) {
            0 => None,
            1 => reference.map(|id| ("=".to_string(), id)),
            _ => Some(rng.below(REFERENCES.len() as u64) as usize).map(|id| (REFERENCES[id].0.to_string(), id)),
        };
        *record.mate_reference_sequence_id_mut() = mate.as_ref().map(|(_, id)| *id);
        let pnext = mate.as_ref().filter(|_| !rng.chance(4)).map(|(_, id)| rng.int_in(1, REFERENCES[*id].1 as i64));
        *record.mate_alignment_start_mut() = pnext.map(|p| Position::try_from(p as usize).unwrap());
        let tlen = rng.int_in(i32::MIN.into(), i32::MAX.into()) as i32;
        *record.template_length_mut() = tlen;

        let mut tags = Vec::new();
        let mut data = Vec::new();
        for (name, kind) in struct_tags() {
            if rng.chance(3) {
                tags.push(None);
                continue;
            }
            let (value, noodles) = match kind {
                TagKind::Int(width) => {
                    let v = boundary_int(rng);
                    (TagValue::Int(v), noodles_int(width.type_of(v).unwrap(), v))
                }
                TagKind::Char => {
                    let c = *rng.pick(&name_chars);
                    (TagValue::Text(char::from(c).to_string()), Value::Character(c))
                }
                TagKind::String => {
                    let s = some_text(rng, &(b' '..=b'~').collect::<Vec<_>>(), 12, 1);
                    (TagValue::Text(s.clone()), Value::String(s.into()))
                }
                TagKind::Hex => {
                    let s = some_text(rng, b"0123456789ABCDEF", 6, 2);
                    (TagValue::Text(s.clone()), Value::Hex(s.into()))
                }
                TagKind::Float => {
                    let x = f32::from_bits(rng.next() as u32);
                    let x = if x.is_nan() { 0.5 } else { x };
                    (TagValue::Float(x), Value::Float(x))
                }
                TagKind::IntArray(subtype) => {
                    let (min, max) = int_range(subtype);
                    let values: Vec<i64> = (0..rng.below(5)).map(|_| rng.int_in(min, max)).collect();
                    (TagValue::Ints(values.clone()), noodles_int_array(subtype, &values))
                }
                TagKind::FloatArray => {
                    let values: Vec<f32> = (0..rng.below(4)).map(|i| i as f32 * 0.25 - 1.0).collect();
                    (TagValue::Floats(values.clone()), Value::Array(Array::Float(values)))
                }
            };
            tags.push(Some(value));
            data.push((Tag::from(name), noodles));
        }
        let mut extra = Vec::new();
        for (i, ty) in [b'A', b'i', b'Z', b'H', b'f', b'B'].into_iter().enumerate() {
            if rng.chance(2) {
                continue;
            }
            let name = [b'Y', b'0' + i as u8];
            let (sam, value) = match ty {
                b'A' => {
                    let c = *rng.pick(b"ACGT!~");
                    (format!("A:{}", char::from(c)), Value::Character(c))
                }
                b'i' => {
                    let v = boundary_int(rng);
                    (format!("i:{v}"), noodles_int(IntWidth::Smallest.type_of(v).unwrap(), v))
                }
                b'Z' => {
                    let s = some_text(rng, b"ab c:,=", 6, 1);
                    (format!("Z:{s}"), Value::String(s.into()))
                }
                b'H' => {
                    let s = some_text(rng, b"09AF", 3, 2);
                    (format!("H:{s}"), Value::Hex(s.into()))
                }
                b'f' => (String::from("f:-2.5"), Value::Float(-2.5)),
                _ => {
                    let subtype = *rng.pick(b"cCsSiI");
                    let (min, max) = int_range(subtype);
                    let values: Vec<i64> = (0..rng.below(4)).map(|_| rng.int_in(min, max)).collect();
                    let items: String = values.iter().map(|v| format!(",{v}")).collect();
                    (format!("B:{}{items}", char::from(subtype)), noodles_int_array(subtype, &values))
                }
            };
            extra.push(format!("{}{}:{sam}", char::from(name[0]), char::from(name[1])));
            data.push((Tag::from(name), value));
        }
        *record.data_mut() = data.into_iter().collect();
        let extra = (!extra.is_empty() || rng.chance(2)).then(|| extra.join("\t"));
        let rnext = mate.map(|(name, _)| name);
        Row { qname, flag, rname, pos, mapq, cigar, rnext, pnext, tlen, seq, qual, tags, extra, record }
    }

    /// A list column of the array values `items` finds, null where it finds none.
    fn list_column<T: ArrowPrimitiveType>(
        values: impl Iterator<Item = Option<TagValue>>,
        items: fn(&TagValue) -> Option<Vec<T::Native>>,
    ) -> ArrayRef {
        let mut b = ListBuilder::new(arrow::array::PrimitiveBuilder::<T>::new());
        for value in values {
            match value.as_ref().and_then(items) {
                Some(items) => {
                    b.values().append_slice(&items);
                    b.append(true);
                }
                None => b.append(false),
            }
        }
        Arc::new(b.finish())
    }

    /// The rows as a batch of the table's columns.
    fn batch(rows: &[Row]) -> RecordBatch {
        let layout = TagLayout { tags: struct_tags() };
        let schema = Arc::new(Schema::new(
            bam_schema(&layout).fields().iter().filter(|f| f.name() != "endpos").cloned().collect::<Vec<_>>(),
        ));
        let strings =
            |f: &dyn Fn(&Row) -> Option<&str>| -> ArrayRef { Arc::new(rows.iter().map(f).collect::<StringArray>()) };
        let mut tag_columns: Vec<ArrayRef> = Vec::new();
        for (i, (_, kind)) in struct_tags().into_iter().enumerate() {
            let values = rows.iter().map(|r| r.tags[i].clone());
            tag_columns.push(match kind {
                TagKind::Int(_) => Arc::new(
                    values
                        .map(|v| v.map(|v| if let TagValue::Int(n) = v { n } else { unreachable!() }))
                        .collect::<Int64Array>(),
                ),
                TagKind::Char | TagKind::String | TagKind::Hex => {
                    let mut b = StringBuilder::new();
                    values.for_each(|v| {
                        b.append_option(v.map(|v| if let TagValue::Text(s) = v { s } else { unreachable!() }))
                    });
                    Arc::new(b.finish())
                }
                TagKind::Float => Arc::new(
                    values
                        .map(|v| v.map(|v| if let TagValue::Float(x) = v { x } else { unreachable!() }))
                        .collect::<arrow::array::Float32Array>(),
                ),
                TagKind::IntArray(_) => list_column::<Int64Type>(values, |v| match v {
                    TagValue::Ints(items) => Some(items.clone()),
                    _ => None,
                }),
                TagKind::FloatArray => list_column::<Float32Type>(values, |v| match v {
                    TagValue::Floats(items) => Some(items.clone()),
                    _ => None,
                }),
            });
        }
        let DataType::Struct(tag_fields) = schema.field_with_name("tags").unwrap().data_type().clone() else {
            unreachable!()
        };
        let columns: Vec<ArrayRef> = vec![
            strings(&|r| r.qname.as_deref()),
            Arc::new(rows.iter().map(|r| r.flag).collect::<UInt16Array>()),
            strings(&|r| r.rname.as_deref()),
            Arc::new(rows.iter().map(|r| r.pos).collect::<Int64Array>()),
            Arc::new(rows.iter().map(|r| r.mapq).collect::<UInt8Array>()),
            strings(&|r| r.cigar.as_deref()),
            strings(&|r| r.rnext.as_deref()),
            Arc::new(rows.iter().map(|r| r.pnext).collect::<Int64Array>()),
            Arc::new(rows.iter().map(|r| r.tlen).collect::<Int32Array>()),
            strings(&|r| r.seq.as_deref()),
            strings(&|r| r.qual.as_deref()),
            Arc::new(StructArray::new(tag_fields, tag_columns, None)),
            strings(&|r| r.extra.as_deref()),
        ];
        RecordBatch::try_new(schema, columns).unwrap()
    }

    fn index_of(batch: &RecordBatch) -> [Option<usize>; col::COUNT] {
        let mut index_of = [None; col::COUNT];
        for (i, field) in batch.schema().fields().iter().enumerate() {
            index_of[COLUMN_NAMES.iter().position(|n| n == field.name()).unwrap()] = Some(i);
        }
        index_of
    }

    /// Generated rows give the bytes noodles writes for a `RecordBuf` of the same typed values.
    #[test]
    fn records_equal_noodles_own_encoding() {
        let header = header();
        let mut rng = Rng(0x0005_eed0_fda7);
        let rows: Vec<Row> = (0..400).map(|_| generate(&mut rng)).collect();
        let batch = batch(&rows);
        let columns = Columns::of(&batch, &index_of(&batch), &struct_tags()).unwrap();
        let mut scratch = Scratch::default();
        let (mut overflowing, mut with_extra) = (0, 0);
        for (i, row) in rows.iter().enumerate() {
            let mut ours = Vec::new();
            let context = write_record(&mut ours, &columns, &struct_tags(), &header, i, &mut scratch)
                .unwrap_or_else(|e| panic!("row {i}: {e}"));
            let mut writer = noodles_bam::io::Writer::from(Vec::new());
            writer.write_alignment_record(&header, &row.record).unwrap();
            assert!(
                ours == *writer.get_ref(),
                "row {i} ({:?}, cigar {:?}) differs from noodles'",
                row.qname,
                row.cigar.as_ref().map(|c| c.len())
            );
            let expected = match (row.record.reference_sequence_id(), row.record.alignment_start()) {
                (Some(id), Some(start)) => {
                    let end = sam::alignment::Record::alignment_end(&row.record).unwrap().unwrap();
                    Some((id, start, end, row.flag & FLAG_UNMAPPED == 0))
                }
                _ => None,
            };
            assert_eq!(context, expected, "row {i}");
            overflowing += usize::from(row.record.cigar().as_ref().len() > MAX_CIGAR_OPS);
            with_extra += usize::from(row.extra.as_deref().is_some_and(|e| !e.is_empty()));
        }
        assert!(overflowing > 0 && with_extra > 100, "{overflowing} long CIGARs, {with_extra} rows with tags_extra");
    }

    /// A bad row is refused with a reason naming what is wrong, and leaves nothing written.
    #[test]
    fn bad_rows_are_refused_with_the_reason() {
        let header = header();
        let mut rng = Rng(7);
        let mut good = || loop {
            let row = generate(&mut Rng(rng.next()));
            if row.seq.is_some() && row.cigar.as_ref().is_some_and(|c| c.len() < 100) && row.rname.is_some() {
                return row;
            }
        };
        type Change = Box<dyn Fn(&mut Row)>;
        let cases: Vec<(Change, &str)> = vec![
            (Box::new(|r| r.qname = Some("a b".into())), "qname \"a b\" is not"),
            (Box::new(|r| r.qname = Some("x".repeat(255))), "is not 1 to 254"),
            (Box::new(|r| r.rname = Some("chrX".into())), "rname chrX is not a reference"),
            (Box::new(|r| r.rnext = Some("chrY".into())), "rnext chrY is not a reference"),
            (Box::new(|r| r.pos = Some(-3)), "pos -3 is negative"),
            (Box::new(|r| r.pos = Some(1 << 33)), "beyond BAM's positions"),
            (Box::new(|r| r.cigar = Some("10M3".into())), "is not SAM's"),
            (Box::new(|r| r.cigar = Some("10Q".into())), "is not SAM's"),
            (Box::new(|r| r.cigar = Some("268435456M".into())), "is not SAM's"),
            (Box::new(|r| r.seq = Some(format!("{}A", r.seq.clone().unwrap()))), "bases, and its cigar"),
            (Box::new(|r| r.seq = r.seq.as_ref().map(|s| format!("1{}", &s[1..]))), "which is not a base"),
            (Box::new(|r| r.qual = Some("!".into())), "qual has 1 scores"),
            (Box::new(|r| r.qual = Some(" ".repeat(r.seq.as_ref().unwrap().len()))), "not a score"),
            (Box::new(|r| r.extra = Some("NM:i:x".into())), "tags_extra field \"NM:i:x\" is not an integer"),
            (Box::new(|r| r.tags[4] = Some(TagValue::Text("ab".into()))), "tag XA of type A holds \"ab\""),
            (Box::new(|r| r.tags[6] = Some(TagValue::Text("ABC".into()))), "tag XH of type H"),
            (Box::new(|r| r.tags[8] = Some(TagValue::Ints(vec![256]))), "tag XB holds 256"),
            (Box::new(|r| r.tags[0] = Some(TagValue::Int(1 << 40))), "tag NM value 1099511627776 does not fit"),
        ];
        for (change, reason) in cases {
            let mut row = good();
            change(&mut row);
            let batch = batch(std::slice::from_ref(&row));
            let columns = Columns::of(&batch, &index_of(&batch), &struct_tags()).unwrap();
            let mut out = b"before".to_vec();
            let error =
                write_record(&mut out, &columns, &struct_tags(), &header, 0, &mut Scratch::default()).unwrap_err();
            assert!(error.contains(reason), "expected {reason:?}, got {error:?}");
            assert_eq!(out, b"before");
        }
    }
}
