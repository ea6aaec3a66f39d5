#!/usr/bin/env bash
# Makes the test BAM files in this directory from scratch. Needs: python3, samtools, and for the
# realistic files art_illumina (Debian: art-nextgen-simulation-tools) and minimap2.
#
#   tests/data/make.sh          small files, committed to the repository
#   tests/data/make.sh --big DIR    also DIR/big.bam (about 3M records, for benchmarks; not committed)
#   tests/data/make.sh --big-only DIR    only DIR/big.bam
#   tests/data/make.sh --medium DIR    only DIR/medium.bam (about 640k records) and its DIR/ref.fa,
#                                      for the CRAM benchmark (benches/cram.sh)
#
# Everything is seeded, so re-running gives the same records.
set -euo pipefail
big_out=""
big_only=0
medium_out=""
if [[ "${1:-}" == "--big" || "${1:-}" == "--big-only" ]]; then
  big_out=$(realpath -m "${2:?usage: make.sh --big DIR}")
  [[ "$1" == "--big-only" ]] && big_only=1
elif [[ "${1:-}" == "--medium" ]]; then
  medium_out=$(realpath -m "${2:?usage: make.sh --medium DIR}")
fi
cd "$(dirname "$0")"
export PYTHONPATH="$PWD"   # fasta.py
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# A random genome (4 chromosomes) and an unrelated "contaminant" sequence whose reads stay unmapped.
python3 - "$work" <<'PY'
import random, sys
from fasta import random_seq, write_fasta as write
out = sys.argv[1]
rng = random.Random(20261124)
seq = lambda n: random_seq(rng, n)
ref = [("chr1", seq(300_000)), ("chr2", seq(200_000)), ("chr3", seq(120_000)), ("chrM", seq(16_569))]
write(f"{out}/ref.fa", ref)
write(f"{out}/sim.fa", ref + [("contaminant", seq(20_000))])
PY

realistic() { # name, fold coverage, seed
  art_illumina -ss HS25 -i "$work/sim.fa" -p -l 150 -f "$2" -m 350 -s 40 -rs "$3" -na -o "$work/$1_" > "$work/art.log" 2>&1
  minimap2 -t 2 -ax sr --MD -R "@RG\tID:sim\tSM:sample\tPL:ILLUMINA" "$work/ref.fa" \
    "$work/$1_1.fq" "$work/$1_2.fq" 2> /dev/null | sed "/^@PG/d" > "$work/$1.sam"
}

long_reads() { # output, depth
  pbsim --prefix "$work/long" --data-type CLR --depth "$2" --length-mean 8000 --length-max 30000 --seed 5 \
    --model_qc /usr/share/pbsim/models/model_qc_clr "$work/ref.fa" > "$work/pbsim.log" 2>&1
  cat "$work"/long_*.fastq > "$work/long.fq"
  minimap2 -t 2 -ax map-pb "$work/ref.fa" "$work/long.fq" 2> /dev/null | sed "/^@PG/d" \
    | samtools sort --no-PG -o "$1" - 2> /dev/null
  samtools index "$1"
  rm -f "$work"/long_* "$work/long.fq"
}

# Benchmark files: short reads (about 3M), and long reads (about 11k, 100 MB).
big() {
  mkdir -p "$big_out"
  realistic big 1000 11
  samtools sort --no-PG -@2 -m 1G -o "$big_out/big.bam" "$work/big.sam" 2> /dev/null
  samtools index "$big_out/big.bam"
  long_reads "$big_out/big_long.bam" 140
}
if (( big_only )); then
  big
  exit 0
fi
if [[ -n "$medium_out" ]]; then
  mkdir -p "$medium_out"
  realistic medium 150 11
  samtools sort --no-PG -@2 -o "$medium_out/medium.bam" "$work/medium.sam" 2> /dev/null
  samtools index "$medium_out/medium.bam"
  cp "$work/ref.fa" "$medium_out/ref.fa"
  samtools faidx "$medium_out/ref.fa"
  exit 0
fi

realistic sample 5 7
samtools sort --no-PG -@2 -o sample.bam "$work/sample.sam" 2> /dev/null
samtools index sample.bam
samtools sort --no-PG -n -@2 -o name_sorted.bam "$work/sample.sam" 2> /dev/null
# Unaligned BAM, as sequencers deliver it: no references, every read unmapped.
samtools import --no-PG -1 "$work/sample_1.fq" -2 "$work/sample_2.fq" -o unaligned.bam 2> /dev/null

# Hand-written edge cases.
python3 - "$work/edge.sam" "$work/many_refs.sam" <<'PY'
import sys
edge, many = sys.argv[1], sys.argv[2]
long_ref = "r" * 250 + "_" + "x" * 749   # a 1000-character reference name
long_name = "q" * 254                   # the longest read name BAM allows
lines = [
    "@HD\tVN:1.6\tSO:unsorted",
    "@SQ\tSN:chr1\tLN:200000",
    f"@SQ\tSN:{long_ref}\tLN:1000",
    "@RG\tID:g1\tSM:s1",
    "@PG\tID:hand\tPN:make.sh",
    "@CO\tedge cases for datafusion-bam",
]
q = lambda n: "I" * n
# Every tag type; integers chosen so samtools stores each BAM width (c C s S i I).
all_types = ("XA:A:x\tXc:i:-5\tXC:i:200\tXs:i:-300\tXS:i:40000\tXi:i:-70000\tXI:i:3000000000"
             "\tXf:f:1.5\tXZ:Z:hello world\tXH:H:1AE301"
             "\tBc:B:c,-1,2\tBC:B:C,1,255\tBs:B:s,-300,3\tBS:B:S,65535,0\tBi:B:i,-70000,1"
             "\tBI:B:I,4000000000,0\tBf:B:f,1.5,-2.25\tBe:B:i")
recs = [
    f"all_types\t0\tchr1\t100\t60\t10M\t*\t0\t0\tACGTACGTAC\t{q(10)}\tNM:i:0\tMD:Z:10\t{all_types}",
    # Unmapped with a position (placed next to its mate) and without one.
    f"pair\t73\tchr1\t500\t60\t8M\t=\t500\t0\tAAAACCCC\t{q(8)}\tNM:i:0",
    f"pair\t133\tchr1\t500\t0\t*\t=\t500\t0\tGGGGTTTT\t{q(8)}",
    f"lonely\t4\t*\t0\t0\t*\t*\t0\t0\tNACGT\t#####",
    # `*` sequence and quality; sequence without quality.
    f"noseq\t0\tchr1\t1000\t30\t5M\t*\t0\t0\t*\t*\tNM:i:1",
    f"noqual\t0\tchr1\t1000\t30\t5M\t*\t0\t0\tACGTN\t*",
    # Secondary and supplementary records, mapq 255, a mate on another reference.
    f"split\t2048\tchr1\t3000\t255\t5S20M\t{long_ref}\t10\t-2990\tACGTACGTACGTACGTACGTACGTA\t{q(25)}\tSA:Z:chr1,100,+,20M5S,60,0;",
    f"split\t256\tchr1\t4000\t0\t20M\t*\t0\t0\t*\t*\tNM:i:2",
    # Deletions, skips, padding, soft and hard clips: the span counts M D N = X.
    f"spliced\t16\tchr1\t5000\t50\t2H3S4M2D5N3=1X2I1P2M\t*\t0\t0\tACGTACGTACGTACG\t{q(15)}",
    # Unexpected tag types (NM as text), a duplicated tag, and a lower-case tag.
    f"oddtags\t0\tchr1\t6000\t10\t4M\t*\t0\t0\tACGT\t{q(4)}\tNM:Z:notanumber\tXZ:Z:first\tXZ:Z:second\txy:i:7",
    # Names at their length limits.
    f"{long_name}\t0\t{long_ref}\t1\t60\t4M\t*\t0\t0\tACGT\t{q(4)}",
    f"{long_name}\t0\t{long_ref}\t997\t60\t4M\t*\t0\t0\tACGT\t{q(4)}",
]
# A CIGAR of 70000 operations: BAM cannot hold more than 65535, so samtools stores it in CG.
ops = "1M1I" * 35000
recs.append(f"longcigar\t0\tchr1\t10000\t60\t{ops}\t*\t0\t0\t{'A' * 70000}\t*\tNM:i:35000")
with open(edge, "w") as f:
    f.write("\n".join(lines + recs) + "\n")

with open(many, "w") as f:
    f.write("@HD\tVN:1.6\tSO:coordinate\n")
    for i in range(5000):
        f.write(f"@SQ\tSN:contig_{i:05d}\tLN:{1000 + i}\n")
    for i in range(0, 5000, 7):
        f.write(f"read{i}\t0\tcontig_{i:05d}\t{1 + i % 900}\t{i % 61}\t50M\t*\t0\t0\t{'ACGTT' * 10}\t{'F' * 50}\tNM:i:{i % 3}\n")
PY
# Long reads (PacBio CLR-like, up to 30 kbp): records span many BGZF blocks.
long_reads long_reads.bam 1

# A reference longer than BAI's 2^29 limit: only CSI can index it.
python3 - "$work/long_ref.sam" <<'PY'
import random, sys
rng = random.Random(7)
with open(sys.argv[1], "w") as f:
    f.write("@HD\tVN:1.6\tSO:coordinate\n@SQ\tSN:small\tLN:10000\n@SQ\tSN:huge\tLN:1000000000\n")
    for i in range(300):
        f.write(f"s{i}\t0\tsmall\t{1 + i * 30}\t60\t20M\t*\t0\t0\t{'ACGT' * 5}\t{'F' * 20}\n")
    for pos in sorted(rng.randrange(1, 999_999_000) for _ in range(3000)):
        f.write(f"h{pos}\t0\thuge\t{pos}\t{rng.randrange(61)}\t20M\t*\t0\t0\t{'ACGT' * 5}\t{'F' * 20}\n")
PY
samtools view --no-PG -b -o long_ref.bam "$work/long_ref.sam"
samtools index -c long_ref.bam

samtools view --no-PG -b -o edge.bam "$work/edge.sam"
samtools view --no-PG -b -o many_refs.bam "$work/many_refs.sam"
samtools index many_refs.bam
printf '@HD\tVN:1.6\tSO:coordinate\n@SQ\tSN:chr1\tLN:1000\n' | samtools view --no-PG -b -o empty.bam -

if [[ -n "$big_out" ]]; then
  big
fi
ls -l *.bam

# Files from other tools (aligners, samtools subcommands, Picard, ...): tests/data/corpus/.
"$(pwd)/corpus.sh"
