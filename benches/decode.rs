//! The decode hot path: record bytes (already inflated) to Arrow columns, per column group, and
//! BGZF inflation alone for scale. Run with `cargo bench --bench decode`.
//!
//! Input: the records of tests/data/sample.bam (21,882 reads of 150 bp, RG/NM/ms/AS/nn/tp/cm/s1/
//! s2/de/MD/rl tags), held in memory so only decoding is timed.

use std::io::Read;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::expressions::{binary, col, lit};
use datafusion_bam::bench::{
    bam_schema, bgzf_reader, col as c, read_header, read_record_bytes, BatchDecoder, FileContext, Prefilter, RawRecord,
    TagLayout,
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

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = decode, inflate
}
criterion_main!(benches);
