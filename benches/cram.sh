#!/usr/bin/env bash
# CRAM read benchmark: our scans, with noodles-cram (the default build) and with htslib (feature
# `htslib`), against samtools on the same CRAM, in one run on one machine, the commands
# alternated.
#
#   benches/cram.sh BAM REF.fa      RUNS (default 3) rounds of every command
#   BIN=x HTSLIB_BIN=y benches/cram.sh BAM REF.fa    the same with these two builds
#
# Makes BAM.cram (samtools view -C -T REF.fa, CRAM 3.0, with a .crai) once. Prints a Markdown
# table (wall: median and range; CPU seconds, user + sys; peak RSS) and ratios to samtools, then
# the peers' wall and CPU over our CRAM COPY. The peers (polars-bio, oxbow; both decode CRAM with
# noodles) run when PEERS names a Python that has them (default: the venv benches/compare.sh
# makes, ~/.cache/datafusion-bam/bench/peers/bin/python, if it is there).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
source "$root/benches/stats.sh"
bam=$(realpath "${1:?usage: benches/cram.sh BAM REF.fa}")
ref=$(realpath "${2:?usage: benches/cram.sh BAM REF.fa}")
runs=${RUNS:-3}
cram=${bam%.bam}.cram
[[ -f "$cram" ]] || { samtools view -C -T "$ref" -o "$cram" "$bam" && samtools index "$cram"; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
# Both release builds (unless BIN and HTSLIB_BIN name them, for a repeated run).
if [[ -n "${BIN:-}" && -n "${HTSLIB_BIN:-}" ]]; then
  bin=$BIN
  cp "$HTSLIB_BIN" "$out/datafusion-bam-htslib"
else
  bin=${CARGO_TARGET_DIR:-$root/target}/release/datafusion-bam
  (cd "$root" && cargo build --release --quiet --bin datafusion-bam --features datafusion-bam/htslib)
  cp "$bin" "$out/datafusion-bam-htslib"
  (cd "$root" && cargo build --release --quiet --bin datafusion-bam)
fi
records=$(samtools view -c -@2 "$bam")
echo "# $records records, CRAM $(( $(stat -c %s "$cram") / 1000000 )) MB, $(nproc) cores, ${runs} rounds"
echo

ours() { # SQL over the CRAM table, 2 partitions (WITH: another build)
  "${WITH:-$bin}" -q -c "SET datafusion.execution.target_partitions = 2" \
    -c "CREATE EXTERNAL TABLE reads STORED AS CRAM LOCATION '$cram' OPTIONS ('reference' '$ref')" -c "$1" > /dev/null
}
# Every column decoded, nothing written: what a full scan costs.
every="SELECT count(qname), count(cigar), count(rnext), count(pnext), count(tlen), count(seq), count(qual), \
count(tags), count(tags_extra), sum(mapq), sum(flag), max(pos), max(endpos) FROM reads"
names=(
  "samtools view -c -@2 (CRAM)"
  "samtools view -@2 -o /dev/null (CRAM, every record decoded)"
  "SELECT count(*) (CRAM, noodles)"
  "every column, no output (CRAM, noodles)"
  "COPY (SELECT *) TO Parquet (CRAM, noodles)"
  "SELECT count(*) (CRAM, htslib)"
  "every column, no output (CRAM, htslib)"
  "COPY (SELECT *) TO Parquet (CRAM, htslib)"
  "COPY (SELECT *) TO Parquet (BAM, same records)"
)
py=${PEERS:-$HOME/.cache/datafusion-bam/bench/peers/bin/python}
if [[ -x "$py" ]] && "$py" -c "import polars_bio, oxbow" 2> /dev/null; then
  names+=("polars-bio scan_cram().sink_parquet() (CRAM)" "oxbow from_cram().pl().write_parquet() (CRAM)")
else
  echo "(no peers: PEERS=$py lacks polars_bio or oxbow)" >&2
  py=
fi
run() {
  case $1 in
    0) samtools view -c -@2 -T "$ref" "$cram" > /dev/null ;;
    1) samtools view -@2 -T "$ref" -o /dev/null "$cram" ;;
    2) ours "SELECT count(*) FROM reads" ;;
    3) ours "$every" ;;
    4) ours "COPY (SELECT * FROM reads) TO '$out/cram.parquet' STORED AS PARQUET" ;;
    5) WITH=$out/datafusion-bam-htslib ours "SELECT count(*) FROM reads" ;;
    6) WITH=$out/datafusion-bam-htslib ours "$every" ;;
    7) WITH=$out/datafusion-bam-htslib ours "COPY (SELECT * FROM reads) TO '$out/cram.parquet' STORED AS PARQUET" ;;
    8) "$bin" -q -c "SET datafusion.execution.target_partitions = 2" \
         -c "CREATE EXTERNAL TABLE b STORED AS BAM LOCATION '$bam'" \
         -c "COPY (SELECT * FROM b) TO '$out/bam.parquet' STORED AS PARQUET" > /dev/null ;;
    9) "$py" -c "import polars_bio as pb; pb.scan_cram('$cram', reference_path='$ref').sink_parquet('$out/pb.parquet')" ;;
    10) "$py" -c "import oxbow as ox; ox.from_cram('$cram', reference='$ref').pl().write_parquet('$out/ox.parquet')" ;;
  esac
}
declare -A walls cpus rss
export bin cram ref bam out py every
rounds "$runs" "${#names[@]}" run ours
base_wall=$(echo "${walls[1]}" | median)
base_cpu=$(echo "${cpus[1]}" | median)
echo "| job | wall s (median, range) | CPU s (median) | peak RSS MiB | wall / samtools full decode | CPU / samtools |"
echo "|---|---:|---:|---:|---:|---:|"
for i in "${!names[@]}"; do
  w=$(echo "${walls[$i]}" | median); c=$(echo "${cpus[$i]}" | median)
  echo "| ${names[$i]} | $w ($(echo "${walls[$i]}" | range)) | $c | ${rss[$i]} | $(echo "scale=2; $w / $base_wall" | bc) | $(echo "scale=2; $c / $base_cpu" | bc) |"
done
if [[ -n "$py" ]]; then
  copy_wall=$(echo "${walls[4]}" | median); copy_cpu=$(echo "${cpus[4]}" | median)
  htslib_wall=$(echo "${walls[7]}" | median); htslib_cpu=$(echo "${cpus[7]}" | median)
  echo
  echo "| peer (CRAM to Parquet) | wall / our COPY (noodles) | CPU / our COPY (noodles) | wall / our COPY (htslib) | CPU / our COPY (htslib) |"
  echo "|---|---:|---:|---:|---:|"
  for i in 9 10; do
    w=$(echo "${walls[$i]}" | median); c=$(echo "${cpus[$i]}" | median)
    echo "| ${names[$i]} | $(echo "scale=2; $w / $copy_wall" | bc) | $(echo "scale=2; $c / $copy_cpu" | bc) | $(echo "scale=2; $w / $htslib_wall" | bc) | $(echo "scale=2; $c / $htslib_cpu" | bc) |"
  done
fi
