"""Training-step throughput of AV-Master on random inputs (forward + backward + Adam step).

The model, loss and optimiser are the training run's (``AVMasterLoss``, ``build_optimizer``).

Prints one line: seconds per step (median and best of ``--steps``), the process's CPU seconds
per step (median; with one thread less sensitive than wall time to other jobs on a shared
machine), samples/s (from the median), the step's matmul/attention work (torch's
``FlopCounterMode``, counted on one untimed step) and the rate it runs at (per wall and per CPU
second), peak memory (CUDA: allocator peak; CPU: peak resident set size of the process) and the
process's memory allocator (``malloc=glibc``, or ``tcmalloc`` when preloaded; see
:mod:`avmaster.malloc`).
Example::

    python tools/bench_train.py --batch 8 --seconds 60 --device cpu --threads 2

``--matmul-floor`` adds a second line from one more step in which every matrix product (``mm``,
``addmm``, ``bmm``, ``baddbmm``, oneDNN's packed linear) is timed where it runs and then again
alone, repeated on the same inputs with warm caches: ``matmul_in_step_s`` is what the step's
products took, ``matmul_alone_s`` the sum of their best repeats, the time the step would take if
everything else were free (its GFLOP/s is the machine's matrix rate at the step's own shapes).

``ops`` counts the step's operator calls that are neither views nor allocations: on a GPU each
is about one kernel launch, so ``step_s`` near ``cpu_s`` and near ``ops`` times a few
microseconds means the host's launches, not the GPU, set the pace (with ``--compile`` it counts
the eager operators, not the compiled kernels). ``--cuda-graph`` (CUDA only)
then records the whole step (forward, backward, Adam with ``capturable=True``) once as a CUDA
graph after warm-up steps on a side stream, and times its replays, each after copying a batch
into the graph's inputs: what launches cost is what the step saves. The learning rate is fixed
at capture and autocast does not cache its weight casts across the capture. A second line
compares the graph with eager steps (:func:`graph_difference`).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from avmaster.lightning_module import build_optimizer
from avmaster.losses import AVMasterLoss
from avmaster.models import AVMaster, FeatureDims, ModelConfig, OptimConfig, count_parameters
from avmaster.step_graph import WARMUP as GRAPH_WARMUP
from avmaster.step_graph import CUDARecorder

COMPILE_WARMUP = 3  # compiled forward, backward and recompiles settle within a few steps


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    d = FeatureDims()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seconds", type=int, default=60, help="T, segments per video")
    p.add_argument("--words", type=int, default=16, help="question tokens L")
    p.add_argument("--dim", type=int, default=ModelConfig.dim)
    p.add_argument("--visual-dim", type=int, default=d.visual)
    p.add_argument("--audio-dim", type=int, default=d.audio)
    p.add_argument("--text-dim", type=int, default=d.text)
    p.add_argument("--answers", type=int, default=42)
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", choices=("32", "bf16-mixed"), default="32")
    p.add_argument("--compile", nargs="?", const="blocks", default="none",
                   choices=("none", "blocks", "full"),
                   help="torch.compile each block (default when given) or the whole model")
    p.add_argument("--compile-mode", default=None,
                   choices=("default", "reduce-overhead", "max-autotune"),
                   help="torch.compile mode (reduce-overhead: CUDA graphs on a GPU)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--steps", type=int, default=5, help="timed steps")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="ModelConfig overrides, e.g. --set ff_mult=4 share=none")
    p.add_argument("--matmul-floor", action="store_true",
                   help="also time each matrix product of one step in place and alone")
    p.add_argument("--repeats", type=int, default=3,
                   help="--matmul-floor: repeats of each product alone (the best counts)")
    p.add_argument("--cuda-graph", action="store_true",
                   help="record the whole step once as a CUDA graph and time its replays")
    args = p.parse_args(argv)
    if args.cuda_graph and (torch.device(args.device).type != "cuda" or args.compile != "none"
                            or args.matmul_floor):
        p.error("--cuda-graph needs --device cuda, and neither --compile nor --matmul-floor")
    return args


def model_config(args: argparse.Namespace) -> ModelConfig:
    from omegaconf import OmegaConf

    cfg = OmegaConf.merge(OmegaConf.structured(ModelConfig(dim=args.dim)),
                          OmegaConf.from_dotlist(args.set))
    return OmegaConf.to_object(cfg)  # type: ignore[return-value]


def random_batch(args: argparse.Namespace, device: torch.device) -> dict[str, torch.Tensor]:
    b, t, n = args.batch, args.seconds, args.words
    mask = torch.ones(b, n, dtype=torch.bool)
    mask[b // 2 :, n // 2 :] = False  # half the batch has shorter questions
    batch = {
        "visual": torch.randn(b, t, args.visual_dim),
        "audio": torch.randn(b, t, args.audio_dim),
        "question_tokens": torch.randn(b, n, args.text_dim),
        "question_mask": mask,
        "question": torch.randn(b, args.text_dim),
        "label": torch.randint(0, args.answers, (b,)),
    }
    return {k: v.to(device) for k, v in batch.items()}


def packed_linear_flop(x_shape, w_shape, *_args, out_shape=None, **_kwargs) -> int:
    """FLOPs of oneDNN's linear on a pre-packed weight ``[out, in]`` (the focus scan's CPU path;
    ``FlopCounterMode`` does not know the op)."""
    return 2 * math.prod(x_shape[:-1]) * x_shape[-1] * w_shape[0]


def inplace_addmm_flop(self_shape, a_shape, b_shape, *_args, out_shape=None, **_kwargs) -> int:
    """FLOPs of ``grad.addmm_(a, b)`` (the focus scan's float32 weight gradients), which
    ``FlopCounterMode`` counts for ``addmm`` only."""
    return 2 * a_shape[0] * a_shape[1] * b_shape[1]


def flop_counter() -> FlopCounterMode:
    extra = {torch.ops.aten.addmm_: inplace_addmm_flop}
    with contextlib.suppress(AttributeError, RuntimeError):  # builds without oneDNN
        extra[torch.ops.mkldnn._linear_pointwise] = packed_linear_flop
    return FlopCounterMode(display=False, custom_mapping=extra)


def _products() -> set:
    """The matrix-product overloads :class:`MatmulTimer` times (out= variants write the same
    result again when repeated; in-place ones are repeated on a copy)."""
    aten = torch.ops.aten
    ops = {aten.mm.default, aten.mm.out, aten.addmm.default, aten.addmm.out, aten.addmm_.default,
           aten.bmm.default, aten.bmm.out, aten.baddbmm.default}
    with contextlib.suppress(AttributeError, RuntimeError):  # builds without oneDNN
        ops.add(torch.ops.mkldnn._linear_pointwise.default)
    return ops


class MatmulTimer(TorchDispatchMode):
    """Times every matrix product run under it, in place and then alone (``repeats`` more runs
    on the same inputs, the best kept), and counts its FLOPs with :func:`flop_counter`'s
    formulas; ``sync`` waits for the device."""

    def __init__(self, sync, repeats: int = 3):
        super().__init__()
        self.ops, self.formulas = _products(), flop_counter().flop_registry
        self.sync, self.repeats = sync, repeats
        self.in_step = self.alone = 0.0
        self.flop = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func not in self.ops:
            return func(*args, **kwargs)
        self.sync()
        t0 = time.perf_counter()
        out = func(*args, **kwargs)
        self.sync()
        self.in_step += time.perf_counter() - t0
        best = math.inf
        inplace = func.overloadpacket.__name__.endswith("_")
        for _ in range(self.repeats):
            again = (args[0].clone(), *args[1:]) if inplace else args  # the step's result stays
            self.sync()
            t0 = time.perf_counter()
            func(*again, **kwargs)
            self.sync()
            best = min(best, time.perf_counter() - t0)
        self.alone += best
        self.flop += self.formulas[func.overloadpacket](*args, **kwargs, out_val=out)
        return out


class OpCounter(TorchDispatchMode):
    """Counts the operator calls run under it that are neither views nor allocations."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not func.is_view and not func.overloadpacket.__name__.startswith("empty"):
            self.calls += 1
        return func(*args, **(kwargs or {}))


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA; other devices run synchronously here)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def allocator() -> str:
    """This process's memory allocator (:func:`avmaster.malloc.loaded_allocator`); ``?`` with an
    earlier version of the package that lacks it (A/B runs load one through ``PYTHONPATH``)."""
    try:
        from avmaster.malloc import loaded_allocator
    except ImportError:
        return "?"
    return loaded_allocator()


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10  # KiB on Linux


@dataclass
class Training:
    """A model, its optimiser and a batch; ``train_step`` runs forward, backward and the
    optimiser step, ``step`` the same and then ``zero_grad``."""

    model: AVMaster
    opt: torch.optim.Optimizer
    batch: dict[str, torch.Tensor]
    train_step: Callable[[], None]
    step: Callable[[], None]


def setup(args: argparse.Namespace, cfg: ModelConfig) -> Training:
    """The benchmark's model (seeded with ``--seed``), loss, optimiser and random batch."""
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    dims = FeatureDims(args.visual_dim, args.audio_dim, args.text_dim)
    model = AVMaster(cfg, dims, args.answers).to(device).train()
    criterion = AVMasterLoss()
    # passed only when needed: A/B runs import earlier versions of the package without it
    graph = {"capturable": True} if args.cuda_graph else {}
    opt, _ = build_optimizer(model.parameters(), OptimConfig(), **graph)
    forward = torch.compile(model, mode=args.compile_mode) if args.compile == "full" else model
    if args.compile == "blocks":
        model.compile_blocks(mode=args.compile_mode)
    batch = random_batch(args, device)
    autocast = (
        torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=not args.cuda_graph)
        if args.precision == "bf16-mixed"
        else contextlib.nullcontext()
    )

    def train_step() -> None:
        with autocast:
            loss = criterion(forward(batch), batch["label"])["loss"]
        loss.backward()
        opt.step()

    def step() -> None:
        train_step()
        opt.zero_grad(set_to_none=True)

    return Training(model, opt, batch, train_step, step)


def record_graph(run: Training) -> Callable[[], None]:
    """Record ``run.train_step`` once as a CUDA graph after :data:`GRAPH_WARMUP` runs of
    ``run.step`` on a side stream; the function returned copies a batch into the graph's inputs
    (``run.batch``) and replays it."""
    recorder = CUDARecorder()
    with recorder.side_stream():
        for _ in range(GRAPH_WARMUP):
            run.step()
    run.opt.zero_grad(set_to_none=True)  # the recorded backward writes the gradients, not adds
    recorder.record(run.train_step)
    fresh = {k: v.clone() for k, v in run.batch.items()}

    def replay() -> None:
        for k, v in fresh.items():
            run.batch[k].copy_(v, non_blocking=True)
        recorder.replay()

    return replay


def graph_difference(args: argparse.Namespace, steps: int = 2) -> tuple[float, float]:
    """``(difference, moved)``: the largest difference of any parameter between ``GRAPH_WARMUP +
    steps`` steps run eagerly and the same with the last ``steps`` replayed as a CUDA graph,
    from the same weights and batch, with dropout off (eager and graphed steps draw different
    masks); and the largest change of any parameter over the eager steps, its scale."""
    cfg = replace(model_config(args), dropout=0.0)

    def weights(run: Training) -> list[torch.Tensor]:
        return [p.detach().clone() for p in run.model.parameters()]

    def largest(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
        return max((x - y).abs().max().item() for x, y in zip(a, b, strict=True))

    eager = setup(args, cfg)
    start = weights(eager)
    for _ in range(GRAPH_WARMUP + steps):
        eager.step()
    graphed = setup(args, cfg)
    replay = record_graph(graphed)
    for _ in range(steps):
        replay()
    sync(torch.device(args.device))
    return largest(weights(eager), weights(graphed)), largest(weights(eager), start)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    run = setup(args, model_config(args))
    n_params = count_parameters(run.model)

    warmup = args.warmup if args.compile == "none" else max(args.warmup, COMPILE_WARMUP)
    for _ in range(warmup):
        run.step()
    sync(device)
    counter, ops = flop_counter(), OpCounter()
    with counter, ops:  # one more untimed step (the counters slow it down)
        run.step()
    gflop = counter.get_total_flops() / 1e9
    timed = record_graph(run) if args.cuda_graph else run.step
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times, cpu_times = [], []
    for _ in range(args.steps):
        t0, c0 = time.perf_counter(), time.process_time()
        timed()
        sync(device)
        times.append(time.perf_counter() - t0)
        cpu_times.append(time.process_time() - c0)
    dt, best, cpu = statistics.median(times), min(times), statistics.median(cpu_times)
    print(
        f"device={device.type} threads={torch.get_num_threads()} batch={args.batch} "
        f"T={args.seconds} L={args.words} dim={args.dim} precision={args.precision} "
        f"compile={args.compile}{'' if args.compile_mode is None else ':' + args.compile_mode} "
        f"cuda_graph={int(args.cuda_graph)} ops={ops.calls} "
        f"params={n_params / 1e6:.2f}M step_s={dt:.3f} best_s={best:.3f} "
        f"cpu_s={cpu:.3f} "
        f"samples_per_s={args.batch / dt:.2f} gflop={gflop:.4g} gflop_per_s={gflop / dt:.1f} "
        f"gflop_per_cpu_s={gflop / cpu:.1f} "
        f"peak_mem_mb={peak_memory_mb(device):.0f} malloc={allocator()}",
        flush=True,
    )
    if args.cuda_graph:
        diff, moved = graph_difference(args)
        print(f"graph_max_abs_diff={diff:.3g} eager_max_param_change={moved:.3g}", flush=True)
    if args.matmul_floor:
        timer = MatmulTimer(lambda: sync(device), args.repeats)
        with timer:
            run.step()
        gf = timer.flop / 1e9
        print(f"matmul_gflop={gf:.4g} matmul_in_step_s={timer.in_step:.3f} "
              f"matmul_in_step_gflop_per_s={gf / timer.in_step:.1f} "
              f"matmul_alone_s={timer.alone:.3f} matmul_alone_gflop_per_s={gf / timer.alone:.1f} "
              f"rest_s={dt - timer.in_step:.3f}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
