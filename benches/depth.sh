#!/usr/bin/env bash
# bam_depth against mosdepth and samtools depth, in one run on one machine, the commands
# alternated within each round (BENCHMARKS.md, "Depth").
#
#   benches/depth.sh [BIN]      BIN: a release datafusion-bam (default target/release/datafusion-bam)
#
# Files (made once in BENCH_DIR, default ~/.cache/datafusion-bam/bench/depth, with samtools), so
# that the genome is long and the runs many: short reads, tests/data/sample.bam copied 100 times,
# each copy on references of its own (chr1_0 ... chrM_99: a 64 Mbp genome, 2.2M reads), and long
# reads, tests/data/long_reads.bam copied 300 times the same way; both sorted and indexed, and
# linked without their index.
# Every command writes its whole output (Parquet here, bgzipped BED for mosdepth, text for
# samtools) and uses two threads. RUNS (default 3) rounds; prints the median and range of wall
# seconds, CPU seconds and peak RSS per command.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
source "$root/benches/stats.sh"
bin=${1:-$root/target/release/datafusion-bam}
dir=${BENCH_DIR:-$HOME/.cache/datafusion-bam/bench/depth}
runs=${RUNS:-3}
mkdir -p "$dir"
copies() { # source, times, output: each copy's references renamed NAME_i, placed reads only
  [[ -f "$3" ]] && return
  local i
  {
    samtools view -H "$1" | grep -v '^@SQ'
    for ((i = 0; i < $2; i++)); do
      samtools view -H "$1" | awk -v i="$i" 'BEGIN { OFS = "\t" } /^@SQ/ { sub(/^SN:/, "", $2); $2 = "SN:" $2 "_" i; print }'
    done
    for ((i = 0; i < $2; i++)); do
      samtools view "$1" | awk -v i="$i" 'BEGIN { OFS = "\t" } $3 != "*" {
        $1 = $1 "_" i; $3 = $3 "_" i; if ($7 != "=" && $7 != "*") $7 = $7 "_" i; print }'
    done
  } | samtools view -@2 -b -o "$3.tmp" -
  mv "$3.tmp" "$3"
  samtools index "$3"
}
copies "$root/tests/data/sample.bam" 100 "$dir/short.bam"
copies "$root/tests/data/long_reads.bam" 300 "$dir/long.bam"
# The same files without their index: counted in byte ranges, or in one pass with split=false.
mkdir -p "$dir/bare"
for kind in short long; do [[ -e "$dir/bare/$kind.bam" ]] || ln "$dir/$kind.bam" "$dir/bare/$kind.bam"; done
export bin dir

depth_sql() { # file, bam_depth arguments after the file
  echo "COPY (SELECT * FROM bam_depth('$1'$2)) TO '$dir/out/depth.parquet' STORED AS PARQUET"
}
export -f depth_sql

for kind in short long; do
  file=$dir/$kind.bam
  export file kind
  names=("bam_depth per-base" "mosdepth -t 2" "samtools depth -a -@2"
    "bam_depth window=1000" "mosdepth -t 2 -n --by 1000"
    "bam_depth chr1_0:100000-150000" "mosdepth -t 2 -c chr1_0"
    "bam_depth per-base, no index" "bam_depth per-base, no index, one pass"
    "bam_depth window=1000, no index" "bam_depth window=1000, no index, one pass")
  run() {
    rm -rf "$dir/out" && mkdir -p "$dir/out"
    case $1 in
      0) "$bin" -q -c "$(depth_sql "$file" "")" ;;
      1) mosdepth -t 2 "$dir/out/md" "$file" ;;
      2) samtools depth -a -@2 -o "$dir/out/depth.txt" "$file" ;;
      3) "$bin" -q -c "$(depth_sql "$file" ", 'window=1000'")" ;;
      4) mosdepth -t 2 -n --by 1000 "$dir/out/md" "$file" ;;
      5) "$bin" -q -c "$(depth_sql "$file" ", 'chr1_0:100000-150000'")" ;;
      6) mosdepth -t 2 -c chr1_0 "$dir/out/md" "$file" ;;
      7) "$bin" -q -c "$(depth_sql "$dir/bare/$kind.bam" "")" ;;
      8) "$bin" -q -c "$(depth_sql "$dir/bare/$kind.bam" ", 'split=false'")" ;;
      9) "$bin" -q -c "$(depth_sql "$dir/bare/$kind.bam" ", 'window=1000'")" ;;
      10) "$bin" -q -c "$(depth_sql "$dir/bare/$kind.bam" ", 'window=1000 split=false'")" ;;
    esac
  }
  declare -A walls=() cpus=() rss=()
  rounds "$runs" ${#names[@]} run
  echo "## $kind ($(samtools view -c "$file") records), $runs rounds"
  table "${names[@]}"
  unset walls cpus rss
done
