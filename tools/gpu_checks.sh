#!/usr/bin/env bash
# The README's GPU figures in one run (training step, `avmaster train`, loader, extraction), the
# most wanted first, within a time budget: BUDGET_S seconds (default 480) from the start, after
# which no command starts, and each command's time limit is cut to what is left, so the whole
# run fits a 15-minute GPU lease with its start (run it with a 10-minute limit). A run cut short
# still reports what ran; the log says which commands the budget skipped.
# Writes gpu_checks.log (and one JSON line per benchmark) to the folder given, default $OUT or
# /tmp/gpu_checks.
#
#   bash tools/gpu_checks.sh [FOLDER]          # on the GPU machine, from the repository root
#   SMOKE=1 PYTHON=.venv/bin/python bash tools/gpu_checks.sh /tmp/gc   # tiny sizes, on CPU
#
# A machine with PyTorch (CUDA) but without this project's other packages installs them from
# wheels in .whl/ (pure-Python or manylinux x86-64 wheels for its Python, downloaded where pip
# works: omegaconf, antlr4-python3-runtime, open_clip_torch, ftfy, wcwidth, torchvggish, av,
# resampy, soundfile). Encoders are randomly initialised: ViT-L-14-336 costs the same with or
# without its weights, and nothing is downloaded.
set -uo pipefail
deadline=$((SECONDS + ${BUDGET_S:-480}))
out=${1:-${OUT:-/tmp/gpu_checks}}
mkdir -p "$out"
log=$out/gpu_checks.log
PYTHON=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=$PYTHONPATH:/tmp/site
fi

if [ "${SMOKE:-0}" = 1 ]; then  # the same commands at sizes a CPU runs in seconds
    device=cpu precision=32 batches=(4) dim=(--dim 32) seconds=4 steps=(--warmup 1 --steps 1)
    dim_set=(model.dim=32) fit_size=(--videos 10 --warmup 1 --batches 2)
    clip=avmaster-tiny videos=2 video_s=4 loader=(--videos 20 --questions 200 --batches 5)
else
    device=cuda precision=bf16-mixed batches=(32 128) dim=() seconds=60
    steps=(--warmup 5 --steps 20) clip=ViT-L-14-336 videos=48 video_s=60
    dim_set=() fit_size=(--videos 500 --warmup 10 --batches 50)
    loader=(--batches 200)
fi

run() {  # run LIMIT_S CMD...: log the command, its last lines and its exit status; the
    # limit is cut to the budget left, and with under MIN_S (20 s) left the command is skipped
    local limit=$1 left=$((deadline - SECONDS))
    shift
    echo "== $*" >>"$log"
    if [ "$left" -lt "${MIN_S:-20}" ]; then
        echo "skipped: ${left}s of BUDGET_S left" >>"$log"
        return
    fi
    [ "$left" -lt "$limit" ] && limit=$left
    timeout "$limit" "$@" >"$out/last.txt" 2>&1
    local rc=$?
    grep -v -e "Warning" -e "^W[0-9]" "$out/last.txt" | tail -4 >>"$log"
    echo "rc=$rc" >>"$log"
}

{ date -u; nvidia-smi -L 2>/dev/null || echo "no nvidia-smi"; } >"$log"
"$PYTHON" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" \
    >>"$log" 2>&1
train=("$PYTHON" tools/bench_train.py --device "$device" --precision "$precision" \
    --seconds "$seconds" "${dim[@]}" "${steps[@]}")
# most wanted first: a run cut short still reports them
run 150 "${train[@]}" --batch "${batches[0]}" --matmul-floor  # each product in the step and alone
# the tests that need a GPU: the CUDA graph of the training step against eager steps
run 150 "$PYTHON" -m pytest -q -p no:cacheprovider tests/test_step_graph.py tests/test_tools.py \
    -k "cuda or graph"
# `avmaster train` itself (loader, step, optimiser, Lightning) with the step's CUDA graph; the
# synthetic dataset is written once per size
fit=("$PYTHON" tools/bench_fit.py --device "$device" --seconds "$seconds" "${fit_size[@]}"
    --work /tmp/gpu_fit --set trainer.precision="$precision" "${dim_set[@]}")
[ "$device" = cuda ] && run 150 "${fit[@]}" cuda_graph=true --batch "${batches[0]}"
extract=("$PYTHON" tools/bench_extract.py --random-init --device "$device"
    --workers "$(($(nproc) - 1))" --n-videos "$videos" --seconds "$video_s" --work /tmp/gpu_videos)
run 300 "${extract[@]}" --model "$clip"  # the videos are written in parallel first
for w in 0 4; do  # the loop alone (loader, transfer, Lightning): no step's samples/s beats it
    run 100 "${fit[@]}" --no-model --batch "${batches[0]}" --workers "$w"
done
run 150 "${fit[@]}" --batch "${batches[0]}"  # eager
if [ "$device" = cuda ]; then  # the whole step recorded once as a CUDA graph, then replayed
    run 150 "${train[@]}" --batch "${batches[0]}" --cuda-graph
    for b in "${batches[@]:1}"; do
        run 150 "${fit[@]}" cuda_graph=true --batch "$b"
        run 150 "${train[@]}" --batch "$b" --cuda-graph
    done
fi
for b in "${batches[@]:1}"; do
    run 150 "${train[@]}" --batch "$b" --matmul-floor
done
run 120 "$PYTHON" tools/bench_loader.py --batch "${batches[-1]}" --seconds "$seconds" \
    --workers 0 4 "${loader[@]}"
if [ "$device" = cuda ]; then  # decoding alone on the NVDEC engines (software if PyAV lacks them)
    run 120 "${extract[@]}" --model avmaster-tiny --hwaccel cuda --stages decode
fi
run 120 "${train[@]}" --batch "${batches[-1]}" --set focus_scan=autograd
# the autograd scan's focus step compiled once for all T seconds and replayed as CUDA graphs
run 240 "${train[@]}" --batch "${batches[-1]}" --compile --compile-mode reduce-overhead \
    --set focus_scan=autograd
run 200 "${train[@]}" --batch "${batches[-1]}" --compile  # the default scan, blocks compiled
if [ "$device" = cuda ]; then  # what Lightning's progress bar costs (it reads the loss each step)
    run 150 "${fit[@]}" cuda_graph=true trainer.enable_progress_bar=true --batch "${batches[0]}"
fi
rm -f "$out/last.txt"
cat "$log"
