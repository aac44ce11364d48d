export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD/src:/tmp/site; D=/tmp/d; P=src/diffinv/assets/priors; S=32,48,64,96; M=48,96,128,192; T=${T:-260}
OMP_NUM_THREADS=4 timeout -s TERM $T python3 scripts/gpu/train_one.py faces-64 $D/faces64 3 $S 256 5e-4 $P/faces-64 resume >$OUT/faces-64.log 2>&1 &
OMP_NUM_THREADS=4 timeout -s TERM $T python3 scripts/gpu/train_one.py ct-chest-64 $D/ctchest64 1 $S 256 5e-4 $P/ct-chest-64 resume >$OUT/ct-chest-64.log 2>&1 &
OMP_NUM_THREADS=4 timeout -s TERM $T python3 scripts/gpu/train_one.py faces-64-m $D/faces64 3 $M 256 3e-4 "" resume >$OUT/faces-64-m.log 2>&1 &
OMP_NUM_THREADS=4 timeout -s TERM $T python3 scripts/gpu/train_one.py ct-chest-64-m $D/ctchest64 1 $M 256 3e-4 "" resume >$OUT/ct-chest-64-m.log 2>&1 &
wait
for r in /tmp/runs/*/; do n=$(basename $r); (cd $r && tar cf $OUT/$n.tar unet scheduler samples.png loss.png MODEL_CARD.md train_config.json summary.json); done
cat $OUT/*.log | tail -8
