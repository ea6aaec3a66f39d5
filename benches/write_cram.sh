#!/usr/bin/env bash
# CRAM output against samtools writing CRAM 3.0 (the version noodles-cram writes), in one run on
# one machine, the commands alternated within each round (BENCHMARKS.md, "CRAM output").
#
#   benches/write_cram.sh [BIN]
#
# BIN: a release datafusion-bam CLI (default target/release/datafusion-bam). The file is the
# corpus' bwa_mem.bam concatenated COPIES times (default 400) with `samtools cat`, against its
# reference tests/data/cram/ref.fa. RUNS (default 3) rounds; prints the median and range of wall
# seconds, CPU seconds and peak RSS per command.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
source "$root/benches/stats.sh"
bin=${1:-$root/target/release/datafusion-bam}
dir=${BENCH_DIR:-$HOME/.cache/datafusion-bam/bench/cram_out}
runs=${RUNS:-3}
copies=${COPIES:-400}
mkdir -p "$dir"
input=$dir/bwa_x$copies.bam
ref=$root/tests/data/cram/ref.fa
[[ -f "$input" ]] || samtools cat -o "$input" $(for _ in $(seq "$copies"); do echo "$root/tests/data/corpus/bwa_mem.bam"; done)
export bin input ref dir
echo "# $(samtools view -c -@2 "$input") records, $(nproc) cores, $runs rounds"

names=(
  "samtools view -C -@2 (CRAM 3.0)"
  "COPY (SELECT *) TO CRAM, 2 partitions"
  "COPY (SELECT *) TO BAM, 2 partitions"
)
run() {
  case $1 in
    0) samtools view -C -@2 -O cram,version=3.0 -T "$ref" -o "$dir/samtools.cram" "$input" ;;
    1) "$bin" -q -c "SET datafusion.execution.target_partitions = 2" \
         -c "CREATE EXTERNAL TABLE reads STORED AS BAM LOCATION '$input'" \
         -c "COPY (SELECT * FROM reads) TO '$dir/ours.cram' STORED AS CRAM OPTIONS ('reference' '$ref')" ;;
    2) "$bin" -q -c "SET datafusion.execution.target_partitions = 2" \
         -c "CREATE EXTERNAL TABLE reads STORED AS BAM LOCATION '$input'" \
         -c "COPY (SELECT * FROM reads) TO '$dir/ours.bam' STORED AS BAM" ;;
  esac
}
declare -A walls cpus rss
rounds "$runs" "${#names[@]}" run
table "${names[@]}"
# The outputs hold every record, as samtools reads them.
[[ $(samtools view -c -T "$ref" "$dir/ours.cram") == $(samtools view -c "$input") ]] || { echo "ours.cram lost records" >&2; exit 1; }
ls -l "$dir/samtools.cram" "$dir/ours.cram" | awk '{print $5, $9}'
