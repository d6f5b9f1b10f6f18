#!/usr/bin/env bash
# Both GPU benchmarks in one call (about 10 minutes on one H100), everything under one folder.
#
#   benchmarks/gpu_suite.sh OUT_DIR [DATA_DIR]
#
# OUT_DIR   receives nvidia-smi.txt, torch.txt, tp/microbench_{mace,selfprod}_cuda.{csv,png},
#           model_step_cuda.{csv,png} and the two logs (tp.log, model.log).
# DATA_DIR  the reference data folder (oc20_traj/, molecules/); default $EQUITENSOR_SHARED_DATA.
# Environment: PYTHON (default python) with a CUDA build of torch and equitensor importable;
# EQUITENSOR_MACE_PYTHON, a python with mace-torch 0.3.16 (plus cuequivariance-torch and
# cuequivariance-ops-torch-cu12 for its cueq rows); without it the mace-torch rows record why.
# Each step has its own time limit, so a slow or failing step never eats the other's time; the
# script exits non-zero when a step failed or was cut off (its finished rows are kept).
set -uo pipefail
status=0
OUT=${1:?usage: benchmarks/gpu_suite.sh OUT_DIR [DATA_DIR]}
DATA=${2:-${EQUITENSOR_SHARED_DATA:-}}
PY=${PYTHON:-python}
mkdir -p "$OUT/tp"
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || echo "nvidia-smi not found" > "$OUT/nvidia-smi.txt"
"$PY" -c "import torch; assert torch.cuda.is_available(), 'torch sees no CUDA device'; print(torch.__version__, torch.cuda.get_device_name())" \
    | tee "$OUT/torch.txt" || exit 1

# 1. Tensor products (MACE convolution and self-product, 128 channels, every registered backend
#    plus gaunt_fft through torch.fft, float32 and float64, forward and forward+backward, 2e5
#    edges per call; the CSVs are rewritten after every case).
timeout 240 "$PY" -m equitensor bench tp --device cuda --backends "all,gaunt_fft[method=fft]" --settings mace,selfprod \
    --dtype float32,float64 --pass fwd,fwdbwd --repeats 20 --max-call-seconds 5 --out "$OUT/tp" \
    2>&1 | tee "$OUT/tp.log" || status=$?

# 2. MACE training / inference step (defaults: 128x0e+128x1o, max_ell 3, correlation 3), 128 OC20
#    slabs per step, our backends against mace-torch with and without cuEquivariance; the CSV is
#    rewritten after every row, so rows finished before a time limit are kept.
timeout 330 "$PY" -m equitensor bench model --device cuda --systems oc20 --max-L 1 --dtypes float32,float64 \
    --combos cg/cg,e3nn/cg,gaunt_grid/gaunt_grid,gaunt_fft/gaunt_fft,cp/cp,cueq/cueq \
    --mace-variants e3nn,cueq --repeats 5 --timeout 40 ${DATA:+--data "$DATA"} --out "$OUT" \
    2>&1 | tee "$OUT/model.log" || status=$?
echo "results in $OUT (exit status $status: 0 = both steps finished, 124 = a step hit its time limit)"
exit $status
