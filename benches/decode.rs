//! The decode hot path: record bytes (already inflated) to Arrow columns, per column group, and
//! BGZF inflation alone for scale; and the way back, Arrow batches to BAM records (the encoder of
//! `COPY ... STORED AS BAM`). Run with `cargo bench --bench decode`.
//!
//! Input: the records of tests/data/sample.bam (21,882 reads of 150 bp, RG/NM/ms/AS/nn/tp/cm/s1/
//! s2/de/MD/rl tags), held in memory so only decoding is timed.

use std::io::Read;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::expressions::{binary, col, lit};
use datafusion_bam::bench::{
    bam_schema, bgzf_reader, col as c, read_header, read_record_bytes, BatchDecoder, FileContext, Prefilter, RawRecord,
    RecordEncoder, TagLayout,
};
use datafusion_bam::{IntWidth, TagKind};

const SAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/sample.bam");

fn records() -> (FileContext, Vec<Vec<u8>>) {
    let bytes = std::fs::read(SAMPLE).unwrap();
    let mut reader = bgzf_reader(SAMPLE, bytes.as_slice()).unwrap();
    let header = read_header(SAMPLE, &mut reader).unwrap();
    let mut records = Vec::new();
    let mut buf = Vec::new();
    while read_record_bytes(SAMPLE, 0, &mut reader, &mut buf).unwrap() {
        records.push(buf.clone());
    }
    (header.file, records)
}

/// The layout the table infers for sample.bam: each of its twelve tags (minimap2's, and RG) a
/// typed struct child, so `tags_extra` stays empty as on real files.
fn layout() -> TagLayout {
    use TagKind::{Char, Float, String};
    let int = TagKind::Int(IntWidth::Smallest);
    let tags = [
        (*b"RG", String),
        (*b"NM", int),
        (*b"ms", int),
        (*b"AS", int),
        (*b"nn", int),
        (*b"tp", Char),
        (*b"cm", int),
        (*b"s1", int),
        (*b"s2", int),
        (*b"de", Float),
        (*b"MD", String),
        (*b"rl", int),
    ];
    TagLayout { tags: tags.to_vec() }
}

fn decode(c: &mut Criterion) {
    let (file, records) = records();
    let layout = layout();
    let schema = bam_schema(&layout);
    let n_ref = file.reference_names.len();
    let groups: [(&str, Vec<usize>); 8] = [
        ("nothing (count)", vec![]),
        ("fixed: flag rname pos mapq", vec![c::FLAG, c::RNAME, c::POS, c::MAPQ]),
        ("qname", vec![c::QNAME]),
        ("cigar + endpos", vec![c::CIGAR, c::ENDPOS]),
        ("seq", vec![c::SEQ]),
        ("qual", vec![c::QUAL]),
        ("tags + tags_extra", vec![c::TAGS, c::TAGS_EXTRA]),
        ("all columns", (0..c::COUNT).collect()),
    ];
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(records.len() as u64));
    for (name, projection) in groups {
        group.bench_function(name, |b| {
            b.iter_batched(
                || BatchDecoder::new(&schema, &projection, &layout, &file).unwrap(),
                |mut decoder| {
                    for (i, r) in records.iter().enumerate() {
                        decoder.push(&RawRecord::parse(r, n_ref).unwrap()).unwrap();
                        if i % 8192 == 8191 {
                            decoder.finish().unwrap();
                        }
                    }
                    decoder.finish().unwrap()
                },
                BatchSize::LargeInput,
            )
        });
    }
    let predicate = binary(col("mapq", &schema).unwrap(), Operator::GtEq, lit(30u8), &schema).unwrap();
    group.bench_function("prefilter mapq >= 30", |b| {
        b.iter_batched(
            || Prefilter::new(&predicate, &schema, &layout, &file).unwrap(),
            |mut prefilter| {
                for r in &records {
                    prefilter.push(&RawRecord::parse(r, n_ref).unwrap()).unwrap();
                }
                prefilter.evaluate().unwrap()
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

fn inflate(c: &mut Criterion) {
    let bytes = std::fs::read(SAMPLE).unwrap();
    let (_, records) = records();
    let mut group = c.benchmark_group("inflate");
    group.throughput(Throughput::Elements(records.len() as u64));
    group.bench_function("BGZF inflate of the whole file (noodles, libdeflate)", |b| {
        b.iter(|| {
            let mut out = Vec::with_capacity(64 << 20);
            noodles_bgzf::io::Reader::new(bytes.as_slice()).read_to_end(&mut out).unwrap();
            out.len()
        })
    });
    group.finish();
}

/// The records as Arrow batches of 8192 rows (the table's batch size), encoded back: the
/// mandatory fields alone and with the tags, with BGZF at level 0 (the record making, plus
/// stored blocks and their CRC) and at level 6 (as a COPY writes).
fn encode(c: &mut Criterion) {
    let (file, records) = records();
    let bytes = std::fs::read(SAMPLE).unwrap();
    let header = read_header(SAMPLE, &mut bgzf_reader(SAMPLE, bytes.as_slice()).unwrap()).unwrap().header;
    let header = std::sync::Arc::new(header);
    let layout = layout();
    let schema = bam_schema(&layout);
    let n_ref = file.reference_names.len();
    let all: Vec<usize> = (0..c::COUNT).collect();
    let mut decoder = BatchDecoder::new(&schema, &all, &layout, &file).unwrap();
    let mut batches = Vec::new();
    for (i, r) in records.iter().enumerate() {
        decoder.push(&RawRecord::parse(r, n_ref).unwrap()).unwrap();
        if i % 8192 == 8191 {
            batches.push(decoder.finish().unwrap());
        }
    }
    batches.push(decoder.finish().unwrap());
    let mandatory =
        [c::QNAME, c::FLAG, c::RNAME, c::POS, c::MAPQ, c::CIGAR, c::RNEXT, c::PNEXT, c::TLEN, c::SEQ, c::QUAL];
    let with_tags: Vec<usize> = mandatory.iter().copied().chain([c::TAGS, c::TAGS_EXTRA]).collect();
    let mut group = c.benchmark_group("encode");
    group.throughput(Throughput::Elements(records.len() as u64));
    for (name, columns) in [("mandatory fields", mandatory.to_vec()), ("all fields (tags too)", with_tags)] {
        let projected: Vec<_> = batches.iter().map(|b| b.project(&columns).unwrap()).collect();
        for level in [0, 6] {
            let compression = noodles_bgzf::io::writer::CompressionLevel::new(level).unwrap();
            let empty = TagLayout::default();
            let encoder = RecordEncoder::try_new(&projected[0].schema(), header.clone(), compression, &empty).unwrap();
            group.bench_function(format!("{name}, BGZF level {level}"), |b| {
                b.iter(|| {
                    projected.iter().map(|batch| encoder.encode("bench", batch, 0).unwrap().blocks.len()).sum::<usize>()
                })
            });
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = decode, inflate, encode
}
criterion_main!(benches);
