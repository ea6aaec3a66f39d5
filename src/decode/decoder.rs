//! Record bytes to Arrow columns.
//!
//! A [`BatchDecoder`] holds builders for the projected columns only, so a query that reads
//! `rname, pos` never touches sequence, quality or tags. Values follow `samtools view`: 1-based
//! positions, `*` as null, the real CIGAR from the `CG` tag for ultra-long alignments (with `CG`
//! then dropped from the tags), and `tags` + `tags_extra` holding every aux field.

use std::fmt::Write as _;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayBuilder, ArrayRef, ArrowPrimitiveType, Float32Builder, Int32Builder, Int64Builder, ListBuilder,
    NullBufferBuilder, PrimitiveArray, PrimitiveBuilder, RecordBatch, RecordBatchOptions, StringArray, StringBuilder,
    StructArray, UInt16Builder, UInt8Builder,
};
use arrow::buffer::{Buffer, OffsetBuffer, ScalarBuffer};
use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;

use crate::bgzf::framing::FileContext;
use crate::record::{cigar_op, cigar_ops, reference_span, AuxField, RawRecord, RecordError, FLAG_UNMAPPED, SEQ_CODES};
use crate::schema::{col, column_id, TagKind, TagLayout, TagName};

/// Both bases of a packed sequence byte, so a byte is decoded with one lookup.
const SEQ_PAIRS: [[u8; 2]; 256] = {
    let mut pairs = [[0u8; 2]; 256];
    let mut i = 0;
    while i < 256 {
        pairs[i] = [SEQ_CODES[i >> 4], SEQ_CODES[i & 0xf]];
        i += 1;
    }
    pairs
};
const NO_TAG_COLUMN: u16 = u16::MAX;

/// Builds Arrow record batches from BAM records, for a fixed projection of the table schema.
pub struct BatchDecoder {
    /// Output schema (the table schema projected).
    schema: SchemaRef,
    projection: Vec<usize>,
    reference_names: Arc<[String]>,
    rows: usize,
    qname: Option<StringBuilder>,
    flag: Option<UInt16Builder>,
    rname: Option<StringBuilder>,
    pos: Option<Int64Builder>,
    endpos: Option<Int64Builder>,
    mapq: Option<UInt8Builder>,
    cigar: Option<AsciiColumn>,
    rnext: Option<StringBuilder>,
    pnext: Option<Int64Builder>,
    tlen: Option<Int32Builder>,
    seq: Option<AsciiColumn>,
    qual: Option<AsciiColumn>,
    tags: Option<TagColumns>,
    tags_extra: Option<StringBuilder>,
    text: String,
}

impl BatchDecoder {
    /// `table_schema` is the full BAM schema; `projection` lists the columns to produce (indices
    /// into `table_schema`), in output order.
    pub fn new(
        table_schema: &SchemaRef,
        projection: &[usize],
        layout: &TagLayout,
        file: &FileContext,
    ) -> Result<Self, ArrowError> {
        let schema = Arc::new(table_schema.project(projection)?);
        let projection = projection
            .iter()
            .map(|&i| {
                column_id(table_schema, i).ok_or_else(|| {
                    ArrowError::SchemaError(format!("column {} is not a BAM column", table_schema.field(i).name()))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let wants = |c: usize| projection.contains(&c);
        Ok(Self {
            schema,
            reference_names: Arc::clone(&file.reference_names),
            rows: 0,
            qname: wants(col::QNAME).then(StringBuilder::new),
            flag: wants(col::FLAG).then(UInt16Builder::new),
            rname: wants(col::RNAME).then(StringBuilder::new),
            pos: wants(col::POS).then(Int64Builder::new),
            endpos: wants(col::ENDPOS).then(Int64Builder::new),
            mapq: wants(col::MAPQ).then(UInt8Builder::new),
            cigar: wants(col::CIGAR).then(AsciiColumn::default),
            rnext: wants(col::RNEXT).then(StringBuilder::new),
            pnext: wants(col::PNEXT).then(Int64Builder::new),
            tlen: wants(col::TLEN).then(Int32Builder::new),
            seq: wants(col::SEQ).then(AsciiColumn::default),
            qual: wants(col::QUAL).then(AsciiColumn::default),
            tags: (wants(col::TAGS) || wants(col::TAGS_EXTRA)).then(|| TagColumns::new(layout)),
            tags_extra: wants(col::TAGS_EXTRA).then(StringBuilder::new),
            text: String::new(),
            projection,
        })
    }

    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Runs every check [`push`](Self::push) can fail on, whatever the projection, without
    /// appending anything. Option `skip_damaged` drops a record that fails it, so the columns
    /// stay aligned and a record counts as damaged whichever columns a query reads.
    pub fn check(r: &RawRecord<'_>) -> Result<(), RecordError> {
        let cg = long_cigar(r)?;
        reference_span(cg.map_or(r.cigar_bytes(), |f| f.value), r.flag(), r.l_seq())?;
        ascii(r.name(), "read name")?;
        for field in r.aux() {
            let field = field?;
            tag_kind(&field)?;
            if matches!(field.ty, b'Z' | b'H' | b'A') {
                tag_text(&field)?;
            }
        }
        if r.l_seq() > 0 {
            check_quality(r.qual_bytes())?;
        }
        Ok(())
    }

    /// Appends one record. After an error the decoder's columns may disagree in length: the
    /// scan stops there and drops it (or, skipping damaged records, ran [`check`](Self::check)
    /// first).
    pub fn push(&mut self, r: &RawRecord<'_>) -> Result<(), RecordError> {
        let flag = r.flag();
        // The real CIGAR of an alignment with more than 65535 ops lives in the CG tag.
        let cg = long_cigar(r)?;
        let cigar = cg.map_or(r.cigar_bytes(), |f| f.value);
        let span = reference_span(cigar, flag, r.l_seq())?;
        let name = r.name();
        let qname = if self.qname.is_some() && name != b"*" { Some(ascii(name, "read name")?) } else { None };

        // Tags are parsed first: they are the only other part that can fail.
        if let Some(tags) = &mut self.tags {
            self.text.clear();
            tags.push(r, cg.is_some(), &mut self.text)?;
        }

        if let Some(b) = &mut self.qname {
            b.append_option(qname);
        }
        if let Some(b) = &mut self.flag {
            b.append_value(flag);
        }
        if let Some(b) = &mut self.rname {
            let id = r.ref_id();
            b.append_option((id >= 0).then(|| self.reference_names[id as usize].as_str()));
        }
        // Only -1 means "none": other negative positions, which htslib's own test files hold,
        // are shown as samtools prints them, as for pnext.
        let pos0 = r.pos();
        if let Some(b) = &mut self.pos {
            b.append_option((pos0 != -1).then(|| i64::from(pos0) + 1));
        }
        if let Some(b) = &mut self.endpos {
            // samtools' endpos (bam_endpos): pos + reference span; an unmapped read placed by
            // its mate, or one without CIGAR, covers its one position (so regions include it).
            let end = if pos0 == -1 {
                None
            } else if flag & FLAG_UNMAPPED != 0 || cigar.is_empty() {
                Some(i64::from(pos0) + 1)
            } else {
                Some(i64::from(pos0) + span as i64)
            };
            b.append_option(end);
        }
        if let Some(b) = &mut self.mapq {
            let q = r.mapq();
            b.append_option((q != 255).then_some(q));
        }
        if let Some(b) = &mut self.cigar {
            if cigar.is_empty() {
                b.append_null();
            } else {
                // Op codes were checked by reference_span above.
                for (len, op) in cigar_ops(cigar) {
                    write_u64(&mut b.values, u64::from(len));
                    b.values.push(cigar_op::LETTERS[op as usize]);
                }
                b.end_value()?;
            }
        }
        if let Some(b) = &mut self.rnext {
            let id = r.next_ref_id();
            b.append_option((id >= 0).then(|| self.reference_names[id as usize].as_str()));
        }
        if let Some(b) = &mut self.pnext {
            // Only -1 means "none": other negative values are shown as samtools prints them.
            let p = r.next_pos();
            b.append_option((p != -1).then(|| i64::from(p) + 1));
        }
        if let Some(b) = &mut self.tlen {
            b.append_value(r.tlen());
        }
        let l_seq = r.l_seq();
        if let Some(b) = &mut self.seq {
            if l_seq == 0 {
                b.append_null();
            } else {
                let end = b.values.len() + l_seq;
                b.values.extend(r.seq_bytes().iter().flat_map(|&byte| SEQ_PAIRS[usize::from(byte)]));
                // An odd length leaves one padding base.
                b.values.truncate(end);
                b.end_value()?;
            }
        }
        if let Some(b) = &mut self.qual {
            let q = r.qual_bytes();
            if l_seq == 0 || q[0] == 0xff {
                b.append_null();
            } else {
                // Checked for the whole read first, so the +33 loop runs without branches.
                check_quality(q)?;
                b.values.extend(q.iter().map(|&v| v + 33));
                b.end_value()?;
            }
        }
        if let Some(b) = &mut self.tags_extra {
            b.append_option((!self.text.is_empty()).then_some(self.text.as_str()));
        }
        self.rows += 1;
        Ok(())
    }

    /// Returns the rows appended since the last call as a batch, and starts a new one.
    pub fn finish(&mut self) -> Result<RecordBatch, ArrowError> {
        let columns: Vec<ArrayRef> = self
            .projection
            .iter()
            .map(|&c| -> ArrayRef {
                match c {
                    col::QNAME => Arc::new(finish_text(self.qname.as_mut().unwrap())),
                    col::FLAG => Arc::new(finish_primitive(self.flag.as_mut().unwrap())),
                    col::RNAME => Arc::new(finish_text(self.rname.as_mut().unwrap())),
                    col::POS => Arc::new(finish_primitive(self.pos.as_mut().unwrap())),
                    col::ENDPOS => Arc::new(finish_primitive(self.endpos.as_mut().unwrap())),
                    col::MAPQ => Arc::new(finish_primitive(self.mapq.as_mut().unwrap())),
                    col::CIGAR => Arc::new(self.cigar.as_mut().unwrap().finish()),
                    col::RNEXT => Arc::new(finish_text(self.rnext.as_mut().unwrap())),
                    col::PNEXT => Arc::new(finish_primitive(self.pnext.as_mut().unwrap())),
                    col::TLEN => Arc::new(finish_primitive(self.tlen.as_mut().unwrap())),
                    col::SEQ => Arc::new(self.seq.as_mut().unwrap().finish()),
                    col::QUAL => Arc::new(self.qual.as_mut().unwrap().finish()),
                    col::TAGS => Arc::new(self.tags.as_mut().unwrap().finish(self.rows)),
                    col::TAGS_EXTRA => Arc::new(finish_text(self.tags_extra.as_mut().unwrap())),
                    _ => unreachable!("column id {c} checked against the schema in new()"),
                }
            })
            .collect();
        // Without `tags`, the tag builders still ran (for tags_extra) and must be reset too.
        if let Some(tags) = &mut self.tags {
            if !self.projection.contains(&col::TAGS) {
                tags.finish(self.rows);
            }
        }
        let rows = std::mem::take(&mut self.rows);
        RecordBatch::try_new_with_options(
            Arc::clone(&self.schema),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(rows)),
        )
    }
}

/// A text column whose values (always ASCII: bases, qualities, CIGAR strings) are written
/// straight into its value buffer, without a per-record scratch copy or UTF-8 check.
struct AsciiColumn {
    values: Vec<u8>,
    /// End offset of each value so far (the leading 0 is added by `finish`).
    ends: Vec<i32>,
    nulls: NullBufferBuilder,
}

impl Default for AsciiColumn {
    fn default() -> Self {
        Self { values: Vec::new(), ends: Vec::new(), nulls: NullBufferBuilder::new(0) }
    }
}

impl AsciiColumn {
    /// Closes the value written into `values` since the previous one.
    fn end_value(&mut self) -> Result<(), RecordError> {
        let end = i32::try_from(self.values.len()).map_err(|_| RecordError::TextColumnTooLarge)?;
        self.ends.push(end);
        self.nulls.append_non_null();
        Ok(())
    }

    fn append_null(&mut self) {
        self.ends.push(self.ends.last().copied().unwrap_or(0));
        self.nulls.append_null();
    }

    /// Returns the values so far and starts over, sized like the batch just finished.
    fn finish(&mut self) -> StringArray {
        let (rows, bytes) = (self.ends.len(), self.values.len());
        let mut offsets = Vec::with_capacity(rows + 1);
        offsets.push(0);
        // `append` leaves `ends` empty with its capacity.
        offsets.append(&mut self.ends);
        let offsets = OffsetBuffer::new(ScalarBuffer::from(offsets));
        let values = Buffer::from_vec(std::mem::replace(&mut self.values, Vec::with_capacity(bytes)));
        let nulls = std::mem::replace(&mut self.nulls, NullBufferBuilder::new(rows)).finish();
        // Validates offsets and UTF-8 once per batch; values are ASCII by construction.
        StringArray::try_new(offsets, values, nulls)
            .expect("ASCII values with monotonic i32 offsets form a valid StringArray")
    }
}

/// The `CG` field holding the real CIGAR, when the stored CIGAR is the `kSmN` placeholder
/// (the same test as htslib's `bam_tag2cigar`).
fn long_cigar<'a>(r: &RawRecord<'a>) -> Result<Option<AuxField<'a>>, RecordError> {
    let mut ops = cigar_ops(r.cigar_bytes());
    let Some((len, op)) = ops.next() else { return Ok(None) };
    if r.ref_id() < 0 || r.pos() < 0 || op != 4 || len as usize != r.l_seq() {
        return Ok(None);
    }
    for field in r.aux() {
        let field = field?;
        if &field.tag == b"CG" {
            return Ok((field.ty == b'B' && matches!(field.subtype, b'I' | b'i')).then_some(field));
        }
    }
    Ok(None)
}

/// Base qualities print as ASCII 33..=126 (a leading 0xff means "no qualities").
fn check_quality(q: &[u8]) -> Result<(), RecordError> {
    let max = q.iter().copied().fold(0, u8::max);
    if max > 93 && q.first() != Some(&0xff) {
        return Err(RecordError::QualityAbove93(max));
    }
    Ok(())
}

fn ascii<'a>(bytes: &'a [u8], what: &'static str) -> Result<&'a str, RecordError> {
    std::str::from_utf8(bytes).map_err(|_| RecordError::NotUtf8(what))
}

fn write_u64(out: &mut Vec<u8>, mut v: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Arrow's `finish` leaves an empty builder, which would grow again by doubling and copying for
/// every batch; these leave one sized like the batch just finished (batches are alike in size).
fn finish_text(b: &mut StringBuilder) -> StringArray {
    let sized = StringBuilder::with_capacity(b.len(), b.values_slice().len());
    std::mem::replace(b, sized).finish()
}

fn finish_primitive<T: ArrowPrimitiveType>(b: &mut PrimitiveBuilder<T>) -> PrimitiveArray<T> {
    let sized = PrimitiveBuilder::with_capacity(b.len());
    std::mem::replace(b, sized).finish()
}

fn finish_list<T: ArrowPrimitiveType>(b: &mut ListBuilder<PrimitiveBuilder<T>>) -> arrow::array::ListArray {
    let sized = ListBuilder::with_capacity(PrimitiveBuilder::with_capacity(b.values_ref().len()), b.len());
    std::mem::replace(b, sized).finish()
}

enum TagColumn {
    Text(StringBuilder),
    Int(Int64Builder),
    Float(Float32Builder),
    IntArray(ListBuilder<Int64Builder>),
    FloatArray(ListBuilder<Float32Builder>),
}

/// The `tags` struct's children, plus the routing of aux fields to them or to `tags_extra`.
struct TagColumns {
    layout: Vec<(TagName, TagKind)>,
    columns: Vec<TagColumn>,
    fields: arrow::datatypes::Fields,
    /// Tag (as u16) -> column index, or NO_TAG_COLUMN.
    column_of: Vec<u16>,
    /// Which columns received a value in the current record.
    filled: Vec<bool>,
}

impl TagColumns {
    fn new(layout: &TagLayout) -> Self {
        let mut column_of = vec![NO_TAG_COLUMN; 1 << 16];
        for (i, (name, _)) in layout.tags.iter().enumerate() {
            column_of[usize::from(u16::from_le_bytes(*name))] = i as u16;
        }
        let columns = layout
            .tags
            .iter()
            .map(|(_, kind)| match kind {
                TagKind::Char | TagKind::String | TagKind::Hex => TagColumn::Text(StringBuilder::new()),
                TagKind::Int(_) => TagColumn::Int(Int64Builder::new()),
                TagKind::Float => TagColumn::Float(Float32Builder::new()),
                TagKind::IntArray(_) => TagColumn::IntArray(ListBuilder::new(Int64Builder::new())),
                TagKind::FloatArray => TagColumn::FloatArray(ListBuilder::new(Float32Builder::new())),
            })
            .collect();
        Self {
            layout: layout.tags.clone(),
            columns,
            fields: layout.struct_fields(),
            column_of,
            filled: vec![false; layout.tags.len()],
        }
    }

    /// Routes each aux field of `r` to its struct column, or as SAM text to `extra`.
    fn push(&mut self, r: &RawRecord<'_>, skip_cg: bool, extra: &mut String) -> Result<(), RecordError> {
        self.filled.fill(false);
        for field in r.aux() {
            let field = field?;
            if skip_cg && &field.tag == b"CG" {
                continue;
            }
            let kind = tag_kind(&field)?;
            let i = self.column_of[usize::from(u16::from_le_bytes(field.tag))];
            if i != NO_TAG_COLUMN && !self.filled[i as usize] && self.layout[i as usize].1.holds(kind) {
                let i = i as usize;
                self.filled[i] = true;
                match &mut self.columns[i] {
                    TagColumn::Text(b) => b.append_value(tag_text(&field)?),
                    TagColumn::Int(b) => b.append_option(field.int()),
                    TagColumn::Float(b) => b.append_option(field.float()),
                    TagColumn::IntArray(b) => {
                        b.values().extend(field.int_array().map(Some));
                        b.append(true);
                    }
                    TagColumn::FloatArray(b) => {
                        b.values().extend(field.float_array().map(Some));
                        b.append(true);
                    }
                }
            } else {
                write_sam_field(extra, &field)?;
            }
        }
        for (i, column) in self.columns.iter_mut().enumerate() {
            if !self.filled[i] {
                match column {
                    TagColumn::Text(b) => b.append_null(),
                    TagColumn::Int(b) => b.append_null(),
                    TagColumn::Float(b) => b.append_null(),
                    TagColumn::IntArray(b) => b.append_null(),
                    TagColumn::FloatArray(b) => b.append_null(),
                }
            }
        }
        Ok(())
    }

    fn finish(&mut self, rows: usize) -> StructArray {
        let arrays: Vec<ArrayRef> = self
            .columns
            .iter_mut()
            .map(|c| -> ArrayRef {
                match c {
                    TagColumn::Text(b) => Arc::new(finish_text(b)),
                    TagColumn::Int(b) => Arc::new(finish_primitive(b)),
                    TagColumn::Float(b) => Arc::new(finish_primitive(b)),
                    TagColumn::IntArray(b) => Arc::new(finish_list(b)),
                    TagColumn::FloatArray(b) => Arc::new(finish_list(b)),
                }
            })
            .collect();
        if arrays.is_empty() {
            return StructArray::new_empty_fields(rows, None);
        }
        debug_assert!(arrays.iter().all(|a| a.len() == rows));
        StructArray::new(self.fields.clone(), arrays, None)
    }
}

#[inline(always)]
fn tag_kind(field: &AuxField<'_>) -> Result<TagKind, RecordError> {
    TagKind::from_bam_type(field.ty, field.subtype).ok_or(RecordError::InvalidTagType(field.ty))
}

fn tag_text<'a>(field: &AuxField<'a>) -> Result<&'a str, RecordError> {
    let what = "aux field text";
    ascii(field.value, what)
}

/// Appends `TAG:TYPE:VALUE` as `samtools view` prints it (integers of any width as `i`),
/// tab-separated from what is already in `out`.
fn write_sam_field(out: &mut String, f: &AuxField<'_>) -> Result<(), RecordError> {
    if !out.is_empty() {
        out.push('\t');
    }
    out.push(f.tag[0] as char);
    out.push(f.tag[1] as char);
    match f.ty {
        b'A' => {
            out.push_str(":A:");
            out.push_str(tag_text(f)?);
        }
        b'Z' | b'H' => {
            out.push(':');
            out.push(f.ty as char);
            out.push(':');
            out.push_str(tag_text(f)?);
        }
        b'f' => {
            let _ = write!(out, ":f:{}", f.float().unwrap_or_default());
        }
        b'B' => {
            let _ = write!(out, ":B:{}", f.subtype as char);
            if f.subtype == b'f' {
                for v in f.float_array() {
                    let _ = write!(out, ",{v}");
                }
            } else {
                for v in f.int_array() {
                    let _ = write!(out, ",{v}");
                }
            }
        }
        _ => {
            let _ = write!(out, ":i:{}", f.int().unwrap_or_default());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::bam_schema;
    use arrow::array::AsArray;

    fn record(cigar: &[u32], seq_len: usize, aux: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend(0i32.to_le_bytes());
        b.extend(9i32.to_le_bytes());
        b.push(3);
        b.push(255);
        b.extend(0u16.to_le_bytes());
        b.extend((cigar.len() as u16).to_le_bytes());
        b.extend(0u16.to_le_bytes());
        b.extend((seq_len as u32).to_le_bytes());
        b.extend(0i32.to_le_bytes());
        b.extend(20i32.to_le_bytes());
        b.extend((-7i32).to_le_bytes());
        b.extend(b"rx\0");
        for op in cigar {
            b.extend(op.to_le_bytes());
        }
        b.extend(std::iter::repeat_n(0x12, seq_len.div_ceil(2)));
        b.extend(std::iter::repeat_n(0xff, seq_len));
        b.extend(aux);
        b
    }

    /// A file with one reference, chr1.
    fn chr1() -> FileContext {
        FileContext { reference_names: Arc::from(vec!["chr1".to_string()]), reference_lengths: Arc::from(vec![1000]) }
    }

    /// A decoder of every column, with tag columns NM (integer) and XB (integer array).
    fn all_columns_nm_xb() -> BatchDecoder {
        let layout =
            TagLayout { tags: vec![(*b"NM", TagKind::Int(Default::default())), (*b"XB", TagKind::IntArray(b'C'))] };
        let all: Vec<usize> = (0..col::COUNT).collect();
        BatchDecoder::new(&bam_schema(&layout), &all, &layout, &chr1()).unwrap()
    }

    #[test]
    fn decodes_like_samtools_view() {
        let mut d = all_columns_nm_xb();
        // NM as Z (wrong type) and a duplicate XB both overflow to tags_extra.
        let aux = [b"NMZx\0".as_slice(), b"XBBC\x02\0\0\0\x01\x02", b"XBBC\x01\0\0\0\x03", b"XFf\0\0\xc0\x3f"].concat();
        let bytes = record(&[(1 << 4), (2 << 4) | 2, (2 << 4)], 3, &aux);
        d.push(&RawRecord::parse(&bytes, 1).unwrap()).unwrap();
        let batch = d.finish().unwrap();
        assert_eq!(batch.num_rows(), 1);
        let s = |c: usize| batch.column(c).as_string::<i32>().value(0).to_string();
        assert_eq!(s(col::QNAME), "rx");
        assert_eq!(s(col::CIGAR), "1M2D2M");
        assert_eq!(s(col::RNEXT), "chr1");
        assert_eq!(s(col::SEQ), "ACA");
        assert!(batch.column(col::QUAL).is_null(0));
        assert!(batch.column(col::MAPQ).is_null(0));
        let i64s = |c: usize| batch.column(c).as_primitive::<arrow::datatypes::Int64Type>().value(0);
        assert_eq!((i64s(col::POS), i64s(col::ENDPOS), i64s(col::PNEXT)), (10, 14, 21));
        assert_eq!(s(col::TAGS_EXTRA), "NM:Z:x\tXB:B:C,3\tXF:f:1.5");
        let tags = batch.column(col::TAGS).as_struct();
        assert!(tags.column(0).is_null(0));
        let xb = tags.column(1).as_list::<i32>().value(0);
        assert_eq!(xb.as_primitive::<arrow::datatypes::Int64Type>().values(), &[1, 2]);
    }

    #[test]
    fn long_cigar_comes_from_cg_tag() {
        let layout = TagLayout::default();
        let schema = bam_schema(&layout);
        // Without tag fields there is no `tags` column: tags_extra is the schema's last.
        let proj = [col::CIGAR, col::ENDPOS, schema.index_of("tags_extra").unwrap()];
        let mut d = BatchDecoder::new(&schema, &proj, &layout, &chr1()).unwrap();
        // Placeholder 4S10N; CG holds 2M1I1M (span 3).
        let mut aux = b"CGBI\x03\0\0\0".to_vec();
        for op in [(2u32 << 4), (1 << 4) | 1, (1 << 4)] {
            aux.extend(op.to_le_bytes());
        }
        aux.extend(b"NMC\x01");
        let bytes = record(&[(4 << 4) | 4, (10 << 4) | 3], 4, &aux);
        d.push(&RawRecord::parse(&bytes, 1).unwrap()).unwrap();
        let b = d.finish().unwrap();
        assert_eq!(b.column(0).as_string::<i32>().value(0), "2M1I1M");
        assert_eq!(b.column(1).as_primitive::<arrow::datatypes::Int64Type>().value(0), 12);
        assert_eq!(b.column(2).as_string::<i32>().value(0), "NM:i:1");
    }

    #[test]
    fn each_batch_holds_only_its_own_rows() {
        // finish() leaves builders with capacity from the previous batch: none of its values.
        let mut d = all_columns_nm_xb();
        let first = record(&[(4 << 4)], 4, b"NMC\x02XBBC\x01\0\0\0\x07");
        for _ in 0..3 {
            d.push(&RawRecord::parse(&first, 1).unwrap()).unwrap();
        }
        assert_eq!(d.finish().unwrap().num_rows(), 3);
        d.push(&RawRecord::parse(&record(&[(2 << 4)], 2, b"ZZZq\0"), 1).unwrap()).unwrap();
        let b = d.finish().unwrap();
        assert_eq!(b.num_rows(), 1);
        assert!(b.columns().iter().all(|c| c.len() == 1));
        assert_eq!(b.column(col::CIGAR).as_string::<i32>().value(0), "2M");
        assert_eq!(b.column(col::SEQ).as_string::<i32>().value(0), "AC");
        assert_eq!(b.column(col::TAGS_EXTRA).as_string::<i32>().value(0), "ZZ:Z:q");
        let tags = b.column(col::TAGS).as_struct();
        assert!(tags.column(0).is_null(0) && tags.column(1).is_null(0));
    }

    #[test]
    fn empty_projection_counts_rows() {
        let layout = TagLayout::default();
        let schema = bam_schema(&layout);
        let mut d = BatchDecoder::new(&schema, &[], &layout, &chr1()).unwrap();
        let bytes = record(&[], 0, b"");
        for _ in 0..3 {
            d.push(&RawRecord::parse(&bytes, 1).unwrap()).unwrap();
        }
        assert_eq!(d.finish().unwrap().num_rows(), 3);
        assert_eq!(d.finish().unwrap().num_rows(), 0);
    }
}
