#!/usr/bin/env bash
# Every check that needs a GPU, as one script for a machine that has one: the accelerator tests,
# the CLI on --device cuda, bench_accelerator.py and `mimi bench --device cuda`, results in OUTDIR.
# Where the machine's python3 has torch but not soundfile/soxr/cffi, put their wheels in .whl/
# (ignored by git) and the script installs them into /tmp/site first.
#   bash benchmarks/gpu_check.sh OUTDIR
set -uo pipefail
OUT=${1:-/tmp/gpu_check}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
echo "== accelerator tests"
timeout 200 python3 -m pytest -q -s -p no:cacheprovider tests/codec/test_accelerator.py 2>&1 | tee "$OUT/tests.log"
echo "== CLI on cuda"
python3 scripts/make_audio.py /tmp/corpus --files 24 --min-s 2 --max-s 8 >/dev/null
for dev in cuda cpu; do
  /usr/bin/time -f "encode --device $dev: %e s wall" python3 -m mimi_cli.cli encode /tmp/corpus /tmp/t_$dev.parquet \
    --weights synthetic --device $dev -q 8 --overwrite --quiet
done
python3 - <<'PY'
import pyarrow.parquet as pq, numpy as np
a, b = (pq.read_table(f"/tmp/t_{d}.parquet").to_pylist() for d in ("cuda", "cpu"))
a, b = sorted(a, key=lambda r: r["id"]), sorted(b, key=lambda r: r["id"])
eq = [np.mean(np.array(x["codes"])[0] == np.array(y["codes"])[0]) for x, y in zip(a, b)]
print(f"corpus cuda vs cpu: {len(a)} files, first-codebook agreement min {min(eq):.4f} mean {np.mean(eq):.4f}")
PY
python3 -m mimi_cli.cli decode /tmp/t_cuda.parquet /tmp/dec --weights synthetic --device cuda --overwrite --quiet && find /tmp/dec -type f | wc -l
python3 -m mimi_cli.cli stream-encode $(find /tmp/corpus -name "*.wav" | head -1) --weights synthetic --device cuda --quiet \
  | python3 -m mimi_cli.cli stream-decode - /tmp/s.wav --weights synthetic --device cuda --quiet && python3 -c "import soundfile as sf; print('stream pipe on cuda:', sf.info('/tmp/s.wav').duration, 's')"
python3 scripts/make_audio.py /tmp/big --files 120 --min-s 4 --max-s 12 >/dev/null
/usr/bin/time -f "encode --device cuda, 120 files: %e s wall" python3 -m mimi_cli.cli encode /tmp/big /tmp/big.parquet \
  --weights synthetic --device cuda -q 8 --overwrite 2>&1 | grep -v WARNING | tail -2
echo "== speed and precision"
timeout 180 python3 benchmarks/bench_accelerator.py --seconds 60 2>&1 | grep -v Warning | tee "$OUT/precision.log"
timeout 120 python3 -m mimi_cli.cli bench --device cuda --weights synthetic --streams 1,64,256,1024 --quiet 2>&1 | tee "$OUT/bench.log"
