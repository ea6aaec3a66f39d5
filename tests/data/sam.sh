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
ls -l "$out"
