#!/usr/bin/env bash
# Makes tests/data/cram/: CRAM files written the ways users' files are written, from BAMs of the
# corpus (tests/data/corpus/) against the corpus genome (tests/data/cram/ref.fa, which corpus.sh
# writes), for the CRAM tests (tests/it/cram.rs), which compare each of them with
# `samtools view -T ref.fa` and convert each through the README's COPY.
#
#   tests/data/cram.sh          (also run by tests/data/corpus.sh)
#
# Needs: samtools (htslib's CRAM writer), bgzip (tabix), picard-tools (htsjdk's CRAM writer).
set -euo pipefail
data="$(cd "$(dirname "$0")" && pwd)"
out="$data/cram"
corpus="$data/corpus"
ref="$out/ref.fa"
[[ -s "$ref" ]] || { echo "missing $ref: run tests/data/corpus.sh" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
find "$out" -maxdepth 1 -type f ! -name ref.fa -delete
rm -rf "$out/unsupported" && mkdir -p "$out/unsupported"
samtools faidx "$ref"
# The same genome bgzipped, with .fai and .gzi: the other form option reference takes.
bgzip -c -i -I "$out/ref.fa.gz.gzi" "$ref" > "$out/ref.fa.gz"
samtools faidx "$out/ref.fa.gz"

cram() { # output, input, extra output-fmt options (comma-separated, may be empty)
  samtools view --no-PG -T "$ref" --output-fmt "cram${3:+,$3}" -o "$out/$1" "$corpus/$2" 2> /dev/null
}
# CRAM 3.0 (samtools' default), coordinate-sorted, small containers and a .crai: the index path.
cram bwa_mem.cram bwa_mem.bam seqs_per_slice=250
samtools index "$out/bwa_mem.cram"
# CRAM 3.1 as samtools writes it by default (rANS-Nx16), no index: containers found by walking.
cram bwa_mem_v31.cram bwa_mem.bam version=3.1,seqs_per_slice=200
# CRAM 3.1's other codecs: the `small` profile (fqzcomp qualities) and the `archive` profile
# (the arithmetic coder and the name tokeniser too). htslib keeps a codec only where it
# compresses best, and with 200-read slices it chose neither fqzcomp nor the tokeniser; with 600
# it chooses both (src/formats/cram/head.rs checks the files' block methods).
cram bwa_mem_v31_small.cram bwa_mem.bam version=3.1,small,seqs_per_slice=600
cram bwa_mem_v31_archive.cram bwa_mem.bam version=3.1,archive,seqs_per_slice=600
# CRAM 2.1, the older version still found in archives: noodles-cram reads 3.x only, so this one
# is for the error that says so.
cram unsupported/bwa_mem_v21.cram bwa_mem.bam version=2.1,seqs_per_slice=400
# Long reads with the reference embedded in the file: readable without a FASTA.
cram long_embedded_ref.cram minimap2_long_Y.bam embed_ref=1,seqs_per_slice=20
samtools index "$out/long_embedded_ref.cram"
# Reference-free compression: bases stored verbatim, no FASTA needed either.
cram sr_no_ref.cram minimap2_sr.bam no_ref=1,seqs_per_slice=300
# Read order (not sorted): containers span several references.
cram bowtie2_unsorted.cram bowtie2.bam seqs_per_slice=150
# Unmapped reads only, no references in the header.
samtools view --no-PG -C -o "$out/unaligned.cram" "$corpus/import_plain.bam"
# The spec's corners (padding, =/X, hard clips, * SEQ/QUAL, every B subtype, H tags).
cram hand_corners.cram hand_corners.bam ""
# Tags in quantity (MC, ms, duplicates), bzip2 and lzma blocks.
cram markdup_bzip2_lzma.cram markdup.bam use_bzip2=1,use_lzma=1,seqs_per_slice=500
# Spliced reads (CIGAR N) and soft-clipped supplementary long reads.
cram hisat2_spliced.cram hisat2_spliced.bam seqs_per_slice=300
# htsjdk's CRAM writer (Picard), another implementation of the format.
PicardCommandLine SamFormatConverter -I "$corpus/picard_sorted.bam" -O "$work/picard.cram" -R "$ref" \
  -VALIDATION_STRINGENCY SILENT > /dev/null 2>&1
mv "$work/picard.cram" "$out/picard_sorted.cram"
ls -l "$out"
