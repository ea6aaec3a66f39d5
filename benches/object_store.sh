#!/usr/bin/env bash
# Remote scan against download-then-scan: the benchmark file on a local S3-compatible server
# (moto, from PyPI), read by datafusion-bam straight from S3, and downloaded first and then read
# locally. Prints both times and their ratio (goal: the remote scan is not slower).
#
# BENCH_DIR (default ~/.cache/datafusion-bam/bench) keeps big.bam and the venv between runs.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dir=${BENCH_DIR:-$HOME/.cache/datafusion-bam/bench}
mkdir -p "$dir/download"
[[ -f "$dir/big.bam" ]] || "$root/tests/data/make.sh" --big "$dir" > /dev/null
(cd "$root" && cargo build --release --quiet --bin datafusion-bam)
bin=${CARGO_TARGET_DIR:-$root/target}/release/datafusion-bam

venv=$dir/moto-venv
"$venv/bin/python" -c "import moto.server" 2> /dev/null || { python3 -m venv --clear "$venv" && "$venv/bin/pip" install -q 'moto[server]>=5,<6' boto3; }
port=$("$venv/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$venv/bin/python" -m moto.server -H 127.0.0.1 -p "$port" > /dev/null 2>&1 &
server=$!
trap 'kill $server' EXIT
endpoint=http://127.0.0.1:$port
until "$venv/bin/python" -c "import urllib.request; urllib.request.urlopen('$endpoint')" 2> /dev/null; do sleep 0.2; done

cat > "$dir/s3.py" <<PY
import sys, boto3
s3 = boto3.client("s3", endpoint_url="$endpoint", region_name="us-east-1",
                  aws_access_key_id="test", aws_secret_access_key="test")
action, path = sys.argv[1], sys.argv[2]
if action == "upload":
    s3.create_bucket(Bucket="bench")
    s3.upload_file(path, "bench", "big.bam")
else:
    s3.download_file("bench", "big.bam", path)
PY
s3() { "$venv/bin/python" "$dir/s3.py" "$@"; }
s3 upload "$dir/big.bam"

options="'aws.endpoint' '$endpoint', 'aws.allow_http' 'true', 'aws.region' 'us-east-1', 'aws.access_key_id' 'test', 'aws.secret_access_key' 'test'"
query="SELECT count(qname) FROM r"
seconds() { /usr/bin/time -f %e -o "$dir/time.txt" "$@" > /dev/null; cat "$dir/time.txt"; }

remote=$(seconds "$bin" -q -c "CREATE EXTERNAL TABLE r STORED AS BAM LOCATION 's3://bench/big.bam' OPTIONS ($options)" -c "$query")
download=$(seconds "$venv/bin/python" "$dir/s3.py" download "$dir/download/big.bam")
local=$(seconds "$bin" -q -c "CREATE EXTERNAL TABLE r STORED AS BAM LOCATION '$dir/download/big.bam'" -c "$query")
rm -f "$dir/download/big.bam"

echo "| run | seconds |"
echo "|---|---|"
echo "| scan from S3 (moto on loopback) | $remote |"
echo "| download from S3 | $download |"
echo "| scan of the downloaded file | $local |"
echo "| download + scan | $(echo "$download + $local" | bc) |"
echo
echo "remote scan / (download + scan) = $(echo "scale=2; $remote / ($download + $local)" | bc)"
