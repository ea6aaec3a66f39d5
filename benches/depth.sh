#!/usr/bin/env bash
# bam_depth against mosdepth and samtools depth, in one run on one machine, the commands
# alternated within each round (BENCHMARKS.md, "Depth").
#
#   benches/depth.sh [BIN]      BIN: a release datafusion-bam (default target/release/datafusion-bam)
#
# Files (made once in BENCH_DIR, default ~/.cache/datafusion-bam/bench/depth, with samtools):
# short reads, tests/data/sample.bam 100 times under new read names (2.2M records), and long reads,
# tests/data/long_reads.bam 1000 times (78,000 records); both coordinate-sorted and indexed.
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
copies() { # source, times, output
  [[ -f "$3" ]] && return
  for ((i = 0; i < $2; i++)); do
    samtools view "$1" | awk -v i="$i" 'BEGIN { OFS = "\t" } { $1 = $1 "_" i; print }'
  done | cat <(samtools view -H "$1") - | samtools sort -@2 -o "$3.tmp" -
  mv "$3.tmp" "$3"
  samtools index "$3"
}
copies "$root/tests/data/sample.bam" 100 "$dir/short.bam"
copies "$root/tests/data/long_reads.bam" 1000 "$dir/long.bam"
export bin dir

depth_sql() { # file, bam_depth arguments after the file
  echo "COPY (SELECT * FROM bam_depth('$1'$2)) TO '$dir/out/depth.parquet' STORED AS PARQUET"
}
export -f depth_sql

for kind in short long; do
  file=$dir/$kind.bam
  export file
  names=("bam_depth per-base" "mosdepth -t 2" "samtools depth -a -@2"
    "bam_depth window=1000" "mosdepth -t 2 -n --by 1000"
    "bam_depth chr1:100000-150000" "mosdepth -t 2 -c chr1")
  run() {
    rm -rf "$dir/out" && mkdir -p "$dir/out"
    case $1 in
      0) "$bin" -q -c "$(depth_sql "$file" "")" ;;
      1) mosdepth -t 2 "$dir/out/md" "$file" ;;
      2) samtools depth -a -@2 -o "$dir/out/depth.txt" "$file" ;;
      3) "$bin" -q -c "$(depth_sql "$file" ", 'window=1000'")" ;;
      4) mosdepth -t 2 -n --by 1000 "$dir/out/md" "$file" ;;
      5) "$bin" -q -c "$(depth_sql "$file" ", 'chr1:100000-150000'")" ;;
      6) mosdepth -t 2 -c chr1 "$dir/out/md" "$file" ;;
    esac
  }
  declare -A walls=() cpus=() rss=()
  rounds "$runs" ${#names[@]} run
  echo "## $kind ($(samtools view -c "$file") records), $runs rounds"
  printf "%-32s %-18s %-18s %s\n" command "wall s (range)" "CPU s (range)" "peak RSS MiB"
  for i in "${!names[@]}"; do
    printf "%-32s %-18s %-18s %s\n" "${names[$i]}" \
      "$(median <<< "${walls[$i]}") ($(range <<< "${walls[$i]}"))" \
      "$(median <<< "${cpus[$i]}") ($(range <<< "${cpus[$i]}"))" "${rss[$i]}"
  done
  unset walls cpus rss
done
