//! CRAM output: noodles-cram's writer, fed the records the encoder made.
//!
//! noodles-cram 0.102 writes containers one after another from one writer
//! (`io/writer.rs`, `Writer::flush`), so a CRAM output has one encoding thread; the rows become
//! records on every core before it ([`RecordEncoder`](super::encode::RecordEncoder)).

use std::collections::HashSet;
use std::io::{self, Write};

use datafusion::common::{DataFusionError, Result};
use md5::{Digest, Md5};
use noodles_cram as cram;
use noodles_sam as sam;
use noodles_sam::alignment::io::Write as _;
use noodles_sam::header::record::value::map::reference_sequence::tag::MD5_CHECKSUM;
use tokio::sync::mpsc;

use crate::error::BamError;
use crate::formats::cram::container::{catch_decode_panic, Reference};

/// Bytes the writer gathers before it hands them to the output.
const CHUNK_BYTES: usize = 8 << 20;

/// Writes a CRAM file from batches of BAM record bytes (each with its block size), in order, and
/// sends its bytes to `out` in chunks. Runs on a blocking thread.
pub fn write_cram(
    path: &str,
    header: &sam::Header,
    reference: &Reference,
    mut batches: mpsc::Receiver<Vec<u8>>,
    out: mpsc::Sender<Vec<u8>>,
) -> Result<()> {
    let failed = |what: String| DataFusionError::Execution(format!("CRAM output {path}: {what}"));
    let sink = io::BufWriter::with_capacity(CHUNK_BYTES, ChannelWriter(out));
    let mut writer = cram::io::writer::Builder::default()
        .set_reference_sequence_repository(reference.repository())
        .build_from_writer(sink);
    // noodles-cram fills in the M5 of every @SQ line without one from the reference
    // (`add_missing_reference_sequence_checksums`, `io/writer/header.rs`): each needs its sequence.
    for (id, (_, map)) in header.reference_sequences().iter().enumerate() {
        if !map.other_fields().contains_key(&MD5_CHECKSUM) {
            check_reference(path, header, reference, id)?;
        }
    }
    run_writer(|| writer.write_header(header)).map_err(|e| failed(format!("cannot write the header: {e}")))?;
    let mut checked = HashSet::new();
    let mut record = noodles_bam::Record::default();
    while let Some(raw) = batches.blocking_recv() {
        let mut records = noodles_bam::io::Reader::from(&raw[..]);
        while records.read_record(&mut record).map_err(|e| failed(format!("cannot read back a record: {e}")))? != 0 {
            if let Some(id) = record.reference_sequence_id().transpose().map_err(|e| failed(e.to_string()))? {
                if !record.flags().is_unmapped() && checked.insert(id) {
                    check_reference(path, header, reference, id)?;
                }
            }
            run_writer(|| writer.write_alignment_record(header, &record))
                .map_err(|e| failed(format!("cannot encode record {:?}: {e}", record.name())))?;
        }
    }
    run_writer(|| writer.try_finish(header)).map_err(|e| failed(format!("cannot finish the file: {e}")))?;
    writer.get_mut().flush().map_err(|e| failed(format!("cannot write: {e}")))
}

/// A call into noodles-cram's writer, its panics on unexpected input made errors.
fn run_writer(f: impl FnOnce() -> io::Result<()>) -> io::Result<()> {
    catch_decode_panic(f).unwrap_or_else(|panicked| Err(io::Error::other(panicked)))
}

/// Checks that the reference holds sequence `id` of `header`, with the header's `M5` when it has
/// one: records compressed against another sequence would decode to other bases.
fn check_reference(path: &str, header: &sam::Header, reference: &Reference, id: usize) -> Result<()> {
    let Some((name, map)) = header.reference_sequences().get_index(id) else { return Ok(()) };
    let md5 = map.other_fields().get(&MD5_CHECKSUM).map(|m| m.to_string());
    let missing = |reason: String| -> DataFusionError {
        BamError::MissingReference { file: path.to_string(), sequence: name.to_string(), md5: md5.clone(), reason }
            .into()
    };
    let Some(fasta) = reference.path() else {
        return Err(missing(format!(
            "a CRAM output needs the reference its reads are compressed against (here {name}), \
             OPTIONS ('reference' 'path/to/ref.fa')"
        )));
    };
    let sequence = match reference.repository().get(name) {
        Some(Ok(sequence)) => sequence,
        // The indexed FASTA reader answers an unknown name with an error, not `None`.
        Some(Err(e)) => {
            return Err(missing(format!(
                "the reference {fasta} does not hold sequence {name} of the output's header (reading it: {e})"
            )))
        }
        None => {
            return Err(missing(format!("the reference {fasta} does not hold sequence {name} of the output's header")))
        }
    };
    if let Some(expected) = &md5 {
        // SAM spec §1.3: the MD5 of the sequence in upper case, without line breaks.
        let mut hasher = Md5::new();
        let bases: &[u8] = AsRef::<[u8]>::as_ref(&*sequence);
        bases.chunks(1 << 16).for_each(|chunk| hasher.update(chunk.to_ascii_uppercase()));
        let found: String = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
        if !found.eq_ignore_ascii_case(expected) {
            return Err(missing(format!(
                "sequence {name} of the reference {fasta} has MD5 {found}, and the header's M5 is {expected}: \
                 it is another sequence than the reads were aligned to"
            )));
        }
    }
    Ok(())
}

/// Sends what is written to the async side that writes the output.
struct ChannelWriter(mpsc::Sender<Vec<u8>>);

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.blocking_send(buf.to_vec()).map_err(|_| io::Error::other("the output was closed"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The `.crai` of a CRAM file on disk, as noodles-cram's `fs::index` builds it, but with the
/// reference: noodles-cram 0.102 decodes the records of multi-reference slices there without one
/// (`fasta::Repository::default(), // TODO` in `fs/index.rs`) and panics on the first mapped read.
/// Each slice gives one entry per reference its records lie on, spanning them.
pub fn crai(path: &std::path::Path, reference: &Reference) -> io::Result<Vec<u8>> {
    use std::collections::BTreeMap;

    use noodles_core::Position;
    use sam::alignment::Record as _;

    let mut reader = cram::io::Reader::new(std::fs::File::open(path)?);
    let header = reader.read_header()?;
    let mut index = Vec::new();
    let mut container = cram::io::reader::Container::default();
    let mut container_position = reader.position()?;
    loop {
        let container_len = match reader.read_container(&mut container)? {
            0 => break,
            n => n,
        };
        let compression_header = container.compression_header()?;
        let landmarks = container.header().landmarks().to_vec();
        for (i, slice) in container.slices().enumerate() {
            let slice = slice?;
            let landmark = landmarks[i];
            let slice_length = landmarks.get(i + 1).copied().unwrap_or(container_len) - landmark;
            let (core, external) = slice.decode_blocks()?;
            let records = slice.records(reference.repository(), &header, &compression_header, &core, &external)?;
            // Per reference (None: unplaced), the first start and last end of its records.
            let mut spans: BTreeMap<Option<usize>, Option<(Position, Position)>> = BTreeMap::new();
            for record in &records {
                let id = record.reference_sequence_id(&header).transpose()?;
                let span = spans.entry(id).or_default();
                if let (Some(_), Some(start)) = (id, record.alignment_start().transpose()?) {
                    let end = record.alignment_end().transpose()?.unwrap_or(start).max(start);
                    *span = Some(match *span {
                        Some((first, last)) => (first.min(start), last.max(end)),
                        None => (start, end),
                    });
                }
            }
            for (id, span) in spans {
                let (start, length) = match (id, span) {
                    (Some(_), Some((start, end))) => (Some(start), usize::from(end) - usize::from(start) + 1),
                    _ => (None, 0),
                };
                let (offset, landmark, length_bytes) = (container_position, landmark as u64, slice_length as u64);
                index.push(cram::crai::Record::new(id, start, length, offset, landmark, length_bytes));
            }
        }
        container_position = reader.position()?;
    }
    let mut writer = cram::crai::io::Writer::new(Vec::new());
    writer.write_index(&index)?;
    writer.finish()
}
