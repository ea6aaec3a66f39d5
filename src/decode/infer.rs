//! Choosing the `tags` struct fields: sampling the first records of the files.

use std::io::Read;

use datafusion::common::Result;

use crate::bgzf::framing::{bgzf_reader, error_at, read_header, read_record_bytes};
use crate::decode::reader::{RawBatch, RecordSource};
use crate::options::TagSelection;
use crate::record::{RawRecord, RecordError};
use crate::schema::{is_tag_name, predefined_kind, IntWidth, TagKind, TagLayout, TagName};

/// How often each (tag, kind) occurred, in order of first appearance, and which width rule the
/// integers of each tag follow. A record has a handful of tags and a file a few dozen at most,
/// so linear search beats hashing here.
#[derive(Debug, Default)]
pub struct TagCounts {
    counts: Vec<TagCount>,
}

#[derive(Debug)]
struct TagCount {
    tag: TagName,
    /// Kinds with their counts; integers of every width count as one kind.
    kinds: Vec<(TagKind, u64)>,
    ints: IntEvidence,
}

/// Which [`IntWidth`] rules every sampled integer of a tag follows, and the letters seen.
#[derive(Debug)]
struct IntEvidence {
    smallest: bool,
    smallest_signed: bool,
    letters: Vec<u8>,
}

impl IntEvidence {
    fn add(&mut self, letter: u8, value: i64) {
        self.smallest &= IntWidth::Smallest.type_of(value) == Some(letter);
        self.smallest_signed &= IntWidth::SmallestSigned.type_of(value) == Some(letter);
        if !self.letters.contains(&letter) {
            self.letters.push(letter);
        }
    }

    /// The first rule every value followed: htslib's, htsjdk's, or one letter. Values of several
    /// letters that follow neither keep htslib's rule, as samtools would write them from SAM.
    fn width(&self) -> IntWidth {
        match self.letters[..] {
            _ if self.smallest => IntWidth::Smallest,
            _ if self.smallest_signed => IntWidth::SmallestSigned,
            [letter] => IntWidth::Fixed(letter),
            _ => IntWidth::Smallest,
        }
    }
}

impl TagCounts {
    /// Counts one field of `kind`, with its value when it is an integer.
    fn add(&mut self, tag: TagName, kind: TagKind, int: Option<i64>) {
        let i = match self.counts.iter().position(|c| c.tag == tag) {
            Some(i) => i,
            None => {
                let ints = IntEvidence { smallest: true, smallest_signed: true, letters: Vec::new() };
                self.counts.push(TagCount { tag, kinds: Vec::new(), ints });
                self.counts.len() - 1
            }
        };
        let count = &mut self.counts[i];
        let kind = match (kind, int) {
            (TagKind::Int(IntWidth::Fixed(letter)), Some(value)) => {
                count.ints.add(letter, value);
                TagKind::Int(IntWidth::Smallest)
            }
            _ => kind,
        };
        match count.kinds.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, n)) => *n += 1,
            None => count.kinds.push((kind, 1)),
        }
    }

    fn tags(&self) -> impl Iterator<Item = TagName> + '_ {
        self.counts.iter().map(|c| c.tag)
    }

    /// The kind seen most often for `tag` (ties broken by the kind's order, for determinism),
    /// integers with the width rule their values follow.
    fn observed(&self, tag: TagName) -> Option<TagKind> {
        let count = self.counts.iter().find(|c| c.tag == tag)?;
        let kind = count.kinds.iter().max_by_key(|(k, n)| (*n, std::cmp::Reverse(k.sam_type()))).map(|(k, _)| *k)?;
        Some(match kind {
            TagKind::Int(_) => TagKind::Int(count.ints.width()),
            _ => kind,
        })
    }
}

/// How much of the files a tag sample may still read.
#[derive(Debug, Clone, Copy)]
pub struct SampleBudget {
    pub records: usize,
    pub bytes: usize,
}

/// Counts the tags of one BAM stream's first records, within `budget` (the record that crosses
/// the byte budget still counts); returns the budget left. Damage is an error, unless
/// `skip_damaged`: then damaged records are passed over and damaged framing ends the sample (the
/// scan reports both).
pub fn sample_tags<R: Read>(
    path: &str,
    inner: R,
    mut budget: SampleBudget,
    skip_damaged: bool,
    counts: &mut TagCounts,
) -> Result<SampleBudget> {
    let mut reader = bgzf_reader(path, inner)?;
    let header = read_header(path, &mut reader)?;
    let n_ref = header.file.reference_names.len();
    let mut buf = Vec::new();
    let mut fields = Vec::new();
    while budget.records > 0 && budget.bytes > 0 {
        let start = reader.virtual_position();
        match read_record_bytes(path, 0, &mut reader, &mut buf) {
            Ok(true) => {}
            Ok(false) => break,
            Err(_) if skip_damaged => break,
            Err(e) => return Err(e),
        }
        match count_record_tags(&buf, n_ref, &mut fields, counts) {
            Ok(()) => {}
            Err(_) if skip_damaged => {}
            Err(e) => return Err(error_at(path, start, format!("invalid record: {e}"))),
        }
        budget.records -= 1;
        budget.bytes = budget.bytes.saturating_sub(buf.len());
    }
    Ok(budget)
}

/// Counts the (tag, kind) pairs of one record's bytes, only once the whole record parsed. Fields
/// with an invalid name or type cannot be struct columns; the decoder shows them in `tags_extra`
/// or reports them.
fn count_record_tags(
    buf: &[u8],
    n_ref: usize,
    fields: &mut Vec<(TagName, TagKind, Option<i64>)>,
    counts: &mut TagCounts,
) -> Result<(), RecordError> {
    fields.clear();
    RawRecord::parse(buf, n_ref)?.aux().try_for_each(|field| {
        let field = field?;
        if let Some(kind) = TagKind::from_bam_type(field.ty, field.subtype).filter(|_| is_tag_name(field.tag)) {
            fields.push((field.tag, kind, field.int()));
        }
        Ok::<_, RecordError>(())
    })?;
    fields.iter().for_each(|&(tag, kind, int)| counts.add(tag, kind, int));
    Ok(())
}

/// Records decoded per step of a CRAM or SAM sample.
const SAMPLE_BATCH: usize = 1024;

/// Counts the tags of the first records of `source` (a CRAM or SAM file), within `budget`, as
/// [`sample_tags`] does for BAM.
pub fn sample_source<S: RecordSource>(
    mut source: S,
    n_ref: usize,
    mut budget: SampleBudget,
    skip_damaged: bool,
    counts: &mut TagCounts,
) -> Result<SampleBudget> {
    let (mut raw, mut fields) = (RawBatch::default(), Vec::new());
    while budget.records > 0 && budget.bytes > 0 {
        let more = match source.fill(&mut raw, budget.records.min(SAMPLE_BATCH)) {
            Ok(more) => more,
            Err(_) if skip_damaged => break,
            Err(e) => return Err(e),
        };
        let mut begin = 0;
        for (&end, &at) in raw.ends.iter().zip(&raw.starts) {
            if budget.records == 0 || budget.bytes == 0 {
                break;
            }
            match count_record_tags(&raw.data[begin..end], n_ref, &mut fields, counts) {
                Ok(()) => {}
                Err(_) if skip_damaged => {}
                Err(e) => return Err(source.invalid(at, e)),
            }
            budget.records -= 1;
            budget.bytes = budget.bytes.saturating_sub(end - begin);
            begin = end;
        }
        if !more {
            break;
        }
    }
    Ok(budget)
}

/// The layout for a selection, given the sampled counts.
pub fn resolve(selection: &TagSelection, counts: &TagCounts) -> TagLayout {
    let tags = match selection {
        TagSelection::None => Vec::new(),
        TagSelection::Auto => counts
            .tags()
            // CG holds the real CIGAR of long alignments and is consumed into `cigar`.
            .filter(|t| t != b"CG")
            .map(|t| (t, spec_kind(t, counts).or_else(|| counts.observed(t)).unwrap_or(TagKind::String)))
            .collect(),
        TagSelection::List(list) => list
            .iter()
            .map(|&(t, k)| {
                // A type given as `i` says "integer"; the width rule is still the file's.
                let given = k.map(|k| match k {
                    TagKind::Int(_) => k.with_width_of(counts.observed(t)),
                    _ => k,
                });
                (t, given.or_else(|| spec_kind(t, counts)).or_else(|| counts.observed(t)).unwrap_or(TagKind::String))
            })
            .collect(),
    };
    TagLayout { tags }
}

/// The specification's kind of a tag, with the array subtype the file uses.
fn spec_kind(tag: TagName, counts: &TagCounts) -> Option<TagKind> {
    predefined_kind(tag).map(|kind| kind.with_width_of(counts.observed(tag)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Long reads stop the sample at the byte budget, after the record that crosses it.
    #[test]
    fn the_sample_stops_at_its_byte_budget() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/long_reads.bam");
        let file = || std::fs::File::open(path).unwrap();
        let whole = SampleBudget { records: usize::MAX, bytes: usize::MAX };
        let left = sample_tags(path, file(), whole, false, &mut TagCounts::default()).unwrap();
        let (records, bytes) = (usize::MAX - left.records, usize::MAX - left.bytes);
        assert!(records > 20, "{records} records in the file");
        let budget = SampleBudget { records: usize::MAX, bytes: bytes / 4 };
        let left = sample_tags(path, file(), budget, false, &mut TagCounts::default()).unwrap();
        let sampled = usize::MAX - left.records;
        assert_eq!(left.bytes, 0);
        assert!(sampled > 0 && sampled < records / 2, "{sampled} of {records} records sampled");
        let one = SampleBudget { records: usize::MAX, bytes: 1 };
        let left = sample_tags(path, file(), one, false, &mut TagCounts::default()).unwrap();
        assert_eq!(usize::MAX - left.records, 1, "at least one record is read");
    }

    #[test]
    fn spec_types_win_over_observed_ones() {
        let mut counts = TagCounts::default();
        counts.add(*b"XS", TagKind::Int(IntWidth::Fixed(b'C')), Some(7));
        counts.add(*b"NM", TagKind::String, None);
        counts.add(*b"NM", TagKind::String, None);
        counts.add(*b"ZZ", TagKind::Float, None);
        counts.add(*b"ZZ", TagKind::Float, None);
        counts.add(*b"ZZ", TagKind::Char, None);
        counts.add(*b"CG", TagKind::IntArray(b'I'), None);
        let auto = resolve(&TagSelection::Auto, &counts);
        let int = TagKind::Int(IntWidth::Smallest);
        assert_eq!(auto.tags, vec![(*b"XS", int), (*b"NM", int), (*b"ZZ", TagKind::Float)]);
        let list = TagSelection::parse("MD,ZZ,QQ,XS:Z").unwrap();
        assert_eq!(
            resolve(&list, &counts).tags,
            vec![
                (*b"MD", TagKind::String),
                (*b"ZZ", TagKind::Float),
                (*b"QQ", TagKind::String),
                (*b"XS", TagKind::String)
            ]
        );
    }

    /// The width rule is the first that every sampled value follows; integers of every width
    /// count as one kind against other kinds.
    #[test]
    fn integer_widths_are_inferred_from_the_values() {
        let width = |values: &[(u8, i64)]| {
            let mut counts = TagCounts::default();
            values.iter().for_each(|&(letter, v)| counts.add(*b"XN", TagKind::Int(IntWidth::Fixed(letter)), Some(v)));
            counts.add(*b"XN", TagKind::String, None);
            match counts.observed(*b"XN") {
                Some(TagKind::Int(width)) => width,
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(width(&[(b'C', 0), (b'S', 300), (b'c', -1)]), IntWidth::Smallest);
        assert_eq!(width(&[(b'c', 0), (b'C', 200), (b's', 300)]), IntWidth::SmallestSigned);
        assert_eq!(width(&[(b'C', 0), (b'C', 1)]), IntWidth::Smallest, "both rules fit: htslib's first");
        assert_eq!(width(&[(b'i', 0), (b'i', 70000)]), IntWidth::Fixed(b'i'));
        assert_eq!(width(&[(b'i', 0), (b's', 1)]), IntWidth::Smallest, "no rule fits");
        let spec = resolve(&TagSelection::parse("NM").unwrap(), &{
            let mut counts = TagCounts::default();
            counts.add(*b"NM", TagKind::Int(IntWidth::Fixed(b'i')), Some(3));
            counts
        });
        assert_eq!(spec.tags, vec![(*b"NM", TagKind::Int(IntWidth::Fixed(b'i')))]);
    }
}
