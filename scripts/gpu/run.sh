#!/usr/bin/env bash
# Issue 12 GPU session: continue faces-64 / ct-chest-64 (same UNet, batch 256) and a pilot of a 4x wider UNet.
T=${T:-380}
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
export PYTHONUNBUFFERED=1
if ! python3 -c "import diffusers" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
D=/tmp/d; rm -rf $D /tmp/runs; mkdir -p $D /tmp/runs
tar xf gpu/faces_jpg.tar -C $D && tar xf gpu/chest64.tar -C $D && python3 scripts/gpu/crop_faces.py $D/faces_jpg $D/faces64 || exit 1
nvidia-smi --query-gpu=name,memory.used --format=csv
P=src/diffinv/assets/priors
S="32,48,64,96"; M="48,96,128,192"
OMP_NUM_THREADS=4 timeout -s TERM $T python3 scripts/gpu/train_one.py faces-64 $D/faces64 3 $S 256 5e-4 $P/faces-64 >$OUT/faces-64.log 2>&1 &
OMP_NUM_THREADS=4 timeout -s TERM $T python3 scripts/gpu/train_one.py ct-chest-64 $D/ctchest64 1 $S 256 5e-4 $P/ct-chest-64 >$OUT/ct-chest-64.log 2>&1 &
OMP_NUM_THREADS=4 timeout -s TERM $T python3 scripts/gpu/train_one.py faces-64-m $D/faces64 3 $M 256 3e-4 "" >$OUT/faces-64-m.log 2>&1 &
OMP_NUM_THREADS=4 timeout -s TERM $T python3 scripts/gpu/train_one.py ct-chest-64-m $D/ctchest64 1 $M 256 3e-4 "" >$OUT/ct-chest-64-m.log 2>&1 &
sleep 60; nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv
wait
for r in /tmp/runs/*/; do n=$(basename $r); (cd $r && tar cf $OUT/$n.tar unet scheduler samples.png loss.png MODEL_CARD.md train_config.json summary.json); done
cat $OUT/*.log | grep -v Warning | tail -20
ls -la $OUT
