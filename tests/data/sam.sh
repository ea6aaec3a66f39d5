#!/usr/bin/env bash
# Makes tests/data/sam/: SAM text files, plain and BGZF-compressed, from BAMs of the corpus
# (tests/data/corpus/), for the SAM tests (tests/it/sam.rs), which compare each of them with
# `samtools view` and convert each through the README's COPY.
#
#   tests/data/sam.sh           (also run by tests/data/corpus.sh)
#
# Needs: samtools, bgzip (tabix).
set -euo pipefail
data="$(cd "$(dirname "$0")" && pwd)"
out="$data/sam"
corpus="$data/corpus"
rm -rf "$out" && mkdir -p "$out"
sam() { samtools view --no-PG -h "$corpus/$1"; }
# Short reads with many tags, as aligners write SAM.
sam bwa_mem.bam > "$out/bwa_mem.sam"
# The spec's corners (padding, =/X, hard clips, * SEQ/QUAL, every B subtype, H tags).
sam hand_corners.bam > "$out/hand_corners.sam"
# Only a header.
sam header_only.bam > "$out/header_only.sam"
# BGZF-compressed: long reads whose lines cross blocks, and unaligned reads without tags.
sam minimap2_long_Y.bam | bgzip -c > "$out/long_reads.sam.gz"
sam import_plain.bam | bgzip -c > "$out/unaligned.sam.gz"
# Coordinate-sorted files in several BGZF blocks, with each index a tool writes for them:
# samtools index (.bai; .csi with -c) and tabix -p sam (.tbi, which names its references and
# files the records without one under `*`). Short reads, and long reads with unplaced ones.
sam bwa_mem.bam | bgzip -c > "$out/sorted_bai.sam.gz"
samtools index "$out/sorted_bai.sam.gz"
sam minimap2_long_Y.bam | bgzip -c > "$out/long_csi.sam.gz"
samtools index -c "$out/long_csi.sam.gz"
cp "$out/sorted_bai.sam.gz" "$out/sorted_tbi.sam.gz"
cp "$out/long_csi.sam.gz" "$out/long_tbi.sam.gz"
# tabix warns of every record at position 0 (the unmapped ones).
tabix -p sam "$out/sorted_tbi.sam.gz" 2> /dev/null
tabix -p sam "$out/long_tbi.sam.gz" 2> /dev/null
# Two bgzip outputs concatenated, as `cat` joins them: an empty end-of-file block mid-file.
{ samtools view --no-PG -H "$corpus/minimap2_sr.bam"; samtools view "$corpus/minimap2_sr.bam" | awk "NR <= 800"; } \
    | bgzip -c > "$out/concatenated.sam.gz"
samtools view "$corpus/minimap2_sr.bam" | awk "NR > 800" | bgzip -c >> "$out/concatenated.sam.gz"
ls -l "$out"
