//! Reads every record of a CRAM on one thread, in one of three ways:
//! - `htslib`: htslib's `sam_read1` (through rust-htslib), which decodes into BAM records;
//! - `htslib-copy`: the same, copying each record's BAM bytes (32 fixed bytes, then the variable
//!   data) into a batch buffer, as this project's BAM decoder would take them;
//! - `noodles`: noodles-cram's `Reader::records` (the bare loop of the CRAM issue).
//!
//! Prints the records and bases seen (and bytes copied), so that the work cannot be optimised
//! away and the count can be checked against `samtools view -c`.

use std::error::Error;

use noodles_fasta as fasta;

fn htslib(path: &str, reference: &str, copy: bool) -> Result<(u64, u64, u64), Box<dyn Error>> {
    use rust_htslib::bam::{self, Read, Record};
    let mut reader = bam::Reader::from_path(path)?;
    reader.set_reference(reference)?;
    let mut record = Record::new();
    let mut batch: Vec<u8> = Vec::with_capacity(4 << 20);
    let (mut records, mut bases, mut bytes) = (0u64, 0u64, 0u64);
    while let Some(read) = reader.read(&mut record) {
        read?;
        records += 1;
        bases += record.seq_len() as u64;
        if copy {
            // bam1_core_t is the fixed part of a BAM record; `data` holds the rest, as BAM lays it
            // out (rust-htslib's own accessor for it is private).
            let inner = record.inner();
            // SAFETY: a plain C struct of integers, read as bytes for the length of the struct,
            // and the record's own buffer of `l_data` bytes, both alive while `record` is.
            let (fixed, variable) = unsafe {
                (
                    std::slice::from_raw_parts(
                        &inner.core as *const _ as *const u8,
                        std::mem::size_of_val(&inner.core).min(32),
                    ),
                    std::slice::from_raw_parts(inner.data, inner.l_data as usize),
                )
            };
            batch.extend_from_slice(fixed);
            batch.extend_from_slice(variable);
            if batch.len() >= 4 << 20 {
                bytes += batch.len() as u64;
                batch.clear();
            }
        }
    }
    Ok((records, bases, bytes + batch.len() as u64))
}

fn noodles(path: &str, reference: &str) -> Result<(u64, u64, u64), Box<dyn Error>> {
    let fasta = fasta::io::indexed_reader::Builder::default().build_from_path(reference)?;
    let repository = fasta::Repository::new(fasta::repository::adapters::IndexedReader::new(fasta));
    let mut reader = noodles_cram::io::reader::Builder::default()
        .set_reference_sequence_repository(repository)
        .build_from_path(path)?;
    let header = reader.read_header()?;
    let (mut records, mut bases) = (0u64, 0u64);
    for record in reader.records(&header) {
        let record = record?;
        records += 1;
        bases += record.sequence().len() as u64;
    }
    Ok((records, bases, 0))
}

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, mode, path, reference] = args.as_slice() else {
        eprintln!("usage: htslib-prototype htslib|htslib-copy|noodles x.cram ref.fa");
        std::process::exit(2);
    };
    let (records, bases, bytes) = match mode.as_str() {
        "htslib" => htslib(path, reference, false)?,
        "htslib-copy" => htslib(path, reference, true)?,
        "noodles" => noodles(path, reference)?,
        _ => return Err(format!("unknown mode {mode}").into()),
    };
    println!("{mode}: {records} records, {bases} bases, {bytes} bytes copied");
    Ok(())
}
