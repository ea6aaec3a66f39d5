//! CRAMs of odd files, as users meet them: every SAM of htslib's test set (Debian `htslib-test`,
//! each a corner of the format) written by samtools as a `no_ref` CRAM and, where htslib ships its
//! FASTA, as a reference-compressed CRAM; htslib-test's own CRAMs, most written by htsjdk; and
//! CRAM 3.1 with every codec (`small` and `archive` profiles). Each must equal
//! `samtools view` at 1, 2, 3 and 7 partitions and go through the README's COPY.
//!
//! noodles-cram 0.102 decodes some of them differently from htslib, or not at all; the default
//! backend's test names each such file and the reason, and fails when the set changes either
//! way. With feature `htslib`, every file must equal samtools.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use datafusion_bam::{AlignmentFormat, BamOptions};

use crate::corpus::check_file;
use crate::oracle::samtools;

const HTSLIB_TEST: &str = "/usr/share/htslib-test/test";

/// A CRAM to check, and the FASTA it is read with, if any.
struct Cram {
    path: PathBuf,
    reference: Option<PathBuf>,
}

/// The FASTA htslib-test ships for a test file, by its name's stem before `#` (`ce#5b` → `ce.fa`;
/// `range.cram` is on `ce.fa` too).
fn fasta_for(name: &str) -> Option<PathBuf> {
    let stem = match name.split(['#', '.']).next()? {
        "range" => "ce",
        stem => stem,
    };
    let fasta = Path::new(HTSLIB_TEST).join(format!("{stem}.fa"));
    fasta.is_file().then_some(fasta)
}

/// Writes the CRAMs of the corpus into `dir`.
fn odd_crams(dir: &Path) -> Vec<Cram> {
    let root = Path::new(HTSLIB_TEST);
    let mut crams = Vec::new();
    let mut names: Vec<PathBuf> =
        std::fs::read_dir(root).expect("htslib-test is installed (.ci/run)").map(|e| e.unwrap().path()).collect();
    names.sort();
    for path in names {
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        if let Some(stem) = name.strip_suffix(".sam") {
            let bam = dir.join(format!("{stem}.bam"));
            samtools(&["view", "--no-PG", "-b", "-o", bam.to_str().unwrap(), path.to_str().unwrap()]);
            let no_ref = dir.join(format!("no_ref_{stem}.cram"));
            samtools(&[
                "view",
                "--no-PG",
                "-C",
                "-O",
                "cram,no_ref",
                "-o",
                no_ref.to_str().unwrap(),
                bam.to_str().unwrap(),
            ]);
            crams.push(Cram { path: no_ref, reference: None });
            if let Some(fasta) = fasta_for(stem) {
                let with_ref = dir.join(format!("ref_{stem}.cram"));
                let (out, input) = (with_ref.to_str().unwrap(), bam.to_str().unwrap());
                samtools(&["view", "--no-PG", "-C", "-T", fasta.to_str().unwrap(), "-o", out, input]);
                crams.push(Cram { path: with_ref, reference: Some(fasta) });
            }
        } else if name.ends_with(".cram") {
            crams.push(Cram { reference: fasta_for(&name), path });
        }
    }
    assert!(crams.len() >= 90, "{} CRAMs from htslib-test", crams.len());
    crams
}

/// The files the noodles-cram 0.102 backend does not read as samtools does, each with why. Feature
/// `htslib` reads every one of them as samtools does.
const NOODLES_DIFFERS: &[(&str, &str)] = &[
    // htsjdk marks a missing QUAL per record; noodles-cram decodes it as Phred 0 ('!').
    ("auxf#values_java.cram", "missing QUAL comes back as '!'"),
    ("xx#large_aux_java.cram", "missing QUAL comes back as '!'"),
    ("ce#5b_java.cram", "'attempt to subtract with overflow' in noodles-cram's record decoder"),
    // Slices holding several references: noodles-cram's `Slice::records` fetches a reference
    // sequence for each record even when the slice needs none.
    ("no_ref_ce#5b.cram", "invalid reference sequence name"),
    ("no_ref_fieldarith.cram", "invalid reference sequence name"),
    ("no_ref_index.cram", "invalid reference sequence name"),
    ("no_ref_index_dos.cram", "invalid reference sequence name"),
    ("no_ref_xx#unsorted.cram", "invalid reference sequence name"),
    ("no_ref_auxf#values.cram", "asks for a reference the no_ref file does not need"),
    // Records named `*` come back with made-up names, and padded alignments' positions differ.
    ("no_ref_ce#tag_depadded.cram", "QNAME '*' and POS"),
    ("no_ref_ce#tag_padded.cram", "QNAME '*' and POS"),
    ("ref_ce#tag_depadded.cram", "QNAME '*' and POS"),
    ("ref_ce#tag_padded.cram", "QNAME '*' and POS"),
    ("no_ref_xx#minimal.cram", "'out of range integral type conversion' reading the container"),
    ("ref_xx#minimal.cram", "'out of range integral type conversion' reading the container"),
    // htslib signs TLEN across a template's whole chain of segments in the slice
    // (`cram_decode_slice_xref`), which noodles-cram's records do not expose.
    ("no_ref_xx#tlen.cram", "TLEN sign"),
    ("no_ref_xx#tlen2.cram", "TLEN sign"),
    ("no_ref_xx#triplet.cram", "TLEN sign"),
    ("ref_xx#tlen.cram", "TLEN sign"),
    ("ref_xx#tlen2.cram", "TLEN sign"),
    ("ref_xx#triplet.cram", "TLEN sign"),
    // noodles-bam's encoder, which turns noodles-cram's records into BAM bytes, refuses hex
    // that is not upper case (`H1:H:dead00beef`), which htslib keeps (`encoder/data.rs`).
    ("ref_auxf#values.cram", "'invalid hex' for lower-case H digits"),
    // Alignments past the reference's end: noodles-cram slices the reference out of range.
    ("ref_c1#bounds.cram", "range start index out of range"),
    ("ref_realn01.cram", "range start index out of range"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_odd_cram_equals_samtools() {
    let dir = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let mut failures = BTreeMap::new();
    for cram in odd_crams(dir.path()) {
        let mut options = BamOptions::default().with_format(AlignmentFormat::Cram);
        let mut args = Vec::new();
        if let Some(fasta) = &cram.reference {
            options = options.with_reference(fasta.to_str().unwrap());
            args = vec!["-T", fasta.to_str().unwrap()];
        }
        if let Err(why) = check_file(&cram.path, &options, &args, &[1, 2, 3, 7], out.path()).await {
            let name = cram.path.file_name().unwrap().to_str().unwrap().to_string();
            failures.insert(name, why);
        }
    }
    if cfg!(feature = "htslib") {
        assert!(failures.is_empty(), "{} CRAMs differ from samtools:\n{failures:#?}", failures.len());
        return;
    }
    let unexpected: Vec<_> =
        failures.iter().filter(|(name, _)| !NOODLES_DIFFERS.iter().any(|(known, _)| known == name)).collect();
    let fixed: Vec<_> =
        NOODLES_DIFFERS.iter().filter(|(known, _)| !failures.contains_key(*known)).map(|(n, _)| n).collect();
    assert!(
        unexpected.is_empty() && fixed.is_empty(),
        "differ from samtools, not listed: {unexpected:#?}\nlisted, now equal (remove them): {fixed:?}"
    );
}
