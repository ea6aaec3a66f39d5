#!/usr/bin/env bash
# CRAM decoding on one thread: htslib (rust-htslib), noodles-cram's bare record loop and samtools,
# on the same CRAM in one run, the commands alternated (BENCHMARKS.md, "CRAM decoding: noodles
# or htslib"). Builds the prototype first and prints its clean build time once.
#
#   benches/htslib-prototype/run.sh x.cram ref.fa     RUNS (default 3) rounds
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/../stats.sh"
cram=$(realpath "${1:?usage: run.sh x.cram ref.fa}")
ref=$(realpath "${2:?usage: run.sh x.cram ref.fa}")
runs=${RUNS:-3}
bin=$here/target/release/htslib-prototype
if [[ ! -x "$bin" ]]; then
  cargo fetch --quiet --manifest-path "$here/Cargo.toml"
  read -r wall cpu _ <<< "$(timed cargo build --release --quiet --manifest-path "$here/Cargo.toml")"
  [[ -x "$bin" ]] || { echo "the build failed: cargo build --release --manifest-path $here/Cargo.toml" >&2; exit 1; }
  echo "# clean release build of the prototype (htslib, zlib-ng, bzip2, xz and noodles-cram): ${wall} s, ${cpu} CPU-s"
fi
records=$(samtools view -c -T "$ref" "$cram")
for mode in htslib noodles; do
  seen=$("$bin" "$mode" "$cram" "$ref" | awk '{print $2}')
  [[ "$seen" == "$records" ]] || { echo "$mode read $seen records, samtools counts $records" >&2; exit 1; }
done
echo "# $records records, CRAM $(( $(stat -c %s "$cram") / 1000000 )) MB, one thread each, ${runs} rounds"
echo
names=(
  "samtools view -c (one thread)"
  "samtools view -o /dev/null (one thread, every record decoded and printed)"
  "htslib sam_read1 loop"
  "htslib sam_read1, BAM bytes copied to a batch"
  "noodles-cram Reader::records loop"
)
run() {
  case $1 in
    0) samtools view -c -T "$ref" "$cram" ;;
    1) samtools view -T "$ref" -o /dev/null "$cram" ;;
    2) "$bin" htslib "$cram" "$ref" ;;
    3) "$bin" htslib-copy "$cram" "$ref" ;;
    4) "$bin" noodles "$cram" "$ref" ;;
  esac
}
declare -A walls cpus rss
export bin cram ref
rounds "$runs" "${#names[@]}" run
base=$(echo "${cpus[0]}" | median)
echo "| job | wall s (median, range) | CPU s (median, range) | peak RSS MiB | CPU / samtools view -c | CPU us per record |"
echo "|---|---:|---:|---:|---:|---:|"
for i in "${!names[@]}"; do
  c=$(echo "${cpus[$i]}" | median)
  echo "| ${names[$i]} | $(echo "${walls[$i]}" | median) ($(echo "${walls[$i]}" | range)) | $c ($(echo "${cpus[$i]}" | range)) | ${rss[$i]} | $(echo "scale=2; $c / $base" | bc) | $(echo "scale=2; $c * 1000000 / $records" | bc) |"
done
