#!/usr/bin/env bash
# The Python doors against polars-bio, in one run on one machine, the commands alternated within
# each round (BENCHMARKS.md, "Python: polars").
#
#   benches/python_scan.sh VENV PEER_VENV [BIN]
#
# VENV: a virtual environment with this package installed as a release build (`pip install
# './python[polars]'`). PEER_VENV: one with polars-bio (`pip install polars-bio`), apart,
# because polars-bio pins another major version of the datafusion package. BIN: a release
# datafusion-bam CLI, for the COPY that the Python doors are measured against (default
# target/release/datafusion-bam). The files are those of benches/depth.sh (made by it if missing):
# short reads (2.1M records) and long reads. RUNS (default 3) rounds; prints the median and range
# of wall seconds, CPU seconds and peak RSS per command.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
source "$root/benches/stats.sh"
venv=${1:?usage: benches/python_scan.sh VENV PEER_VENV [BIN]}
peer_venv=${2:?usage: benches/python_scan.sh VENV PEER_VENV [BIN]}
bin=${3:-$root/target/release/datafusion-bam}
dir=${BENCH_DIR:-$HOME/.cache/datafusion-bam/bench/depth}
runs=${RUNS:-3}
[[ -f "$dir/short.bam" && -f "$dir/long.bam" ]] || "$root/benches/depth.sh" "$bin" > /dev/null
py=$venv/bin/python
peer=$peer_venv/bin/python
export py peer bin dir

for kind in short long; do
  file=$dir/$kind.bam
  export file
  names=("scan_bam(f).select(3 columns).collect()" "polars-bio scan_bam(f).select(3 columns).collect()"
    "scan_bam(f).sink_parquet()" "polars-bio scan_bam(f).sink_parquet()" "CLI COPY to Parquet")
  run() {
    rm -rf "$dir/out" && mkdir -p "$dir/out"
    case $1 in
      0) "$py" -c "import datafusion_bam as bam; bam.scan_bam('$file').select('qname', 'pos', 'mapq').collect()" ;;
      1) "$peer" -c "import polars_bio as pb; pb.scan_bam('$file').select('name', 'start', 'mapping_quality').collect()" ;;
      2) "$py" -c "import datafusion_bam as bam; bam.scan_bam('$file').sink_parquet('$dir/out/x.parquet')" ;;
      3) "$peer" -c "import polars_bio as pb; pb.scan_bam('$file').sink_parquet('$dir/out/x.parquet')" ;;
      4) "$bin" -q -c "COPY (SELECT * FROM '$file') TO '$dir/out/x.parquet' STORED AS PARQUET" ;;
    esac
  }
  declare -A walls=() cpus=() rss=()
  rounds "$runs" ${#names[@]} run
  echo "## $kind ($(samtools view -c "$file") records), $runs rounds"
  table "${names[@]}"
  unset walls cpus rss
done
