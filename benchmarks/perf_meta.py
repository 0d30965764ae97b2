"""Speed and memory of the toolkit's meta-learners next to learn2learn's and higher's, same math.

One process, one model initialisation, the same task batches and seeds for every variant:

* ``maml``    second-order MAML (Finn et al. 2017): toolkit ``MAML`` | learn2learn ``MAML.clone/adapt``
              | higher ``innerloop_ctx``;
* ``fomaml``  first-order MAML: toolkit ``FOMAML`` | learn2learn ``MAML(first_order=True)`` (higher has
              no first-order mode that keeps the gradient to the initial weights);
* ``anil``    ANIL (Raghu et al. 2020), second order through the head step: toolkit ``ANIL`` |
              learn2learn ``MAML`` on the head | higher ``innerloop_ctx`` on the head;
* ``protonet`` ProtoNets (Snell et al. 2017): toolkit ``ProtoNet`` | a plain PyTorch loop (neither
              peer library ships a ProtoNet learner).

Peers run the way their documentation does it: a loop over tasks, ``backward()`` per task. All
variants normalise every forward pass with its own batch statistics (support and query passes
separately), so the meta-gradients agree; the first one of every peer is compared with the
toolkit's. Repeats alternate between variants (a noisy shared machine slows them alike). Times
are medians over repeats of the process CPU time (``time.process_time``; one thread) and of the
wall time; ratios are toolkit / peer of meta-iterations per second (> 1: toolkit faster) and
toolkit / peer of peak memory (< 1: toolkit smaller). Peak memory is the peak of live CPU tensor
bytes during one meta-iteration, from the PyTorch profiler.

The floor: a meta-iteration of (first-order) MAML cannot cost less than ``inner_steps``
forward-backward passes over the support images plus one over the query images with the same
network; ANIL and ProtoNets need one pass over support and query. The floor is measured on the
plain ``nn.Module`` with all tasks' images in one batch, and every variant is reported as
time / floor.

Peers come from ``scripts/peers_env.sh`` (never CI); without them only the toolkit and the floor
are measured, and the output says so::

    scripts/peers_env.sh
    runs/peers-venv/bin/python benchmarks/perf_meta.py --json runs/perf/perf.json \\
        --plot docs/img/perf_meta_batch.png
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("KINETO_LOG_LEVEL", "5")  # silence the profiler's start/stop lines

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from meta.functional import ForwardPlan  # noqa: E402
from meta.maml import ANIL, FOMAML, MAML  # noqa: E402
from meta.protonet import ProtoNet, prototype_logits, prototypes  # noqa: E402
from mtl import create_backbone  # noqa: E402

ALGOS = ("maml", "fomaml", "anil", "protonet")


def load_peers() -> tuple[object | None, object | None, str]:
    """Import learn2learn and higher when installed; a note on what is missing."""
    missing = []
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import learn2learn as l2l
    except Exception as exc:  # learn2learn's import chain can fail in many ways
        l2l = None
        missing.append(f"learn2learn ({type(exc).__name__}: {exc})")
    try:
        import higher
    except Exception as exc:
        higher = None
        missing.append(f"higher ({type(exc).__name__}: {exc})")
    return l2l, higher, "; ".join(missing)


# --------------------------------------------------------------------------- data


def make_batches(args: argparse.Namespace, tasks: int, count: int) -> list[tuple[torch.Tensor, ...]]:
    """``count`` batches of ``tasks`` N-way K-shot episodes of random-glyph-like images (fixed seed)."""
    g = torch.Generator().manual_seed(args.seed)
    n, k, q, s = args.ways, args.shots, args.queries, args.image_size
    out = []
    for _ in range(count):
        # class templates plus per-sample noise, thresholded like pen strokes on a blank page
        templates = torch.rand(tasks, n, 1, s, s, generator=g)
        sx = (templates.repeat_interleave(k, 1) + 0.3 * torch.rand(tasks, n * k, 1, s, s, generator=g) > 0.9)
        qx = (templates.repeat_interleave(q, 1) + 0.3 * torch.rand(tasks, n * q, 1, s, s, generator=g) > 0.9)
        sy = torch.arange(n).repeat_interleave(k).expand(tasks, -1).contiguous()
        qy = torch.arange(n).repeat_interleave(q).expand(tasks, -1).contiguous()
        out.append((sx.float(), sy, qx.float(), qy))
    return out


def make_model(args: argparse.Namespace, head: bool) -> torch.nn.Module:
    torch.manual_seed(args.seed)
    return create_backbone("conv4", in_channels=1, image_size=args.image_size, hidden=args.hidden,
                           num_classes=args.ways if head else None, track_running_stats=False)


# --------------------------------------------------------------------------- variants
# Each variant: (name, model, step) where step(batch) runs forward + backward of one meta-iteration,
# leaving the meta-gradient in the model's .grad (summed over tasks / number of tasks).

Step = Callable[[tuple[torch.Tensor, ...]], None]


def toolkit_variant(algo_name: str, base: torch.nn.Module, args: argparse.Namespace, lean: bool = True,
                    workers: int = 1) -> tuple[torch.nn.Module, Step]:
    model = copy.deepcopy(base)
    if algo_name == "protonet":
        algo: torch.nn.Module = ProtoNet(model)
    else:
        cls = {"maml": MAML, "fomaml": FOMAML, "anil": ANIL}[algo_name]
        algo = cls(model, inner_lr=args.inner_lr, inner_steps=args.inner_steps)

    def step(batch: tuple[torch.Tensor, ...]) -> None:
        model.zero_grad(set_to_none=True)
        if workers > 1:
            algo.outer_backward(*batch, workers=workers)  # tasks on threads, --threads split between them
        elif lean:
            algo.outer_backward(*batch)  # task by task: one task's graph alive at a time
        else:
            loss, _ = algo.outer_loss(*batch)
            loss.backward()

    return model, step


def l2l_variant(algo_name: str, base: torch.nn.Module, args: argparse.Namespace, l2l: object
                ) -> tuple[torch.nn.Module, Step] | None:
    if algo_name == "protonet":
        return None
    model = copy.deepcopy(base)
    lr, steps = args.inner_lr, args.inner_steps
    if algo_name == "anil":
        features = model.features
        head = l2l.algorithms.MAML(model.head, lr=lr, first_order=False)  # type: ignore[attr-defined]

        def step(batch: tuple[torch.Tensor, ...]) -> None:
            sx, sy, qx, qy = batch
            model.zero_grad(set_to_none=True)
            for b in range(sx.shape[0]):
                fs, fq = features(sx[b]), features(qx[b])
                learner = head.clone()
                for _ in range(steps):
                    learner.adapt(F.cross_entropy(learner(fs), sy[b]))
                (F.cross_entropy(learner(fq), qy[b]) / sx.shape[0]).backward()

        return model, step
    maml = l2l.algorithms.MAML(model, lr=lr, first_order=(algo_name == "fomaml"))  # type: ignore[attr-defined]

    def step(batch: tuple[torch.Tensor, ...]) -> None:  # noqa: F811
        sx, sy, qx, qy = batch
        model.zero_grad(set_to_none=True)
        for b in range(sx.shape[0]):
            learner = maml.clone()
            for _ in range(steps):
                learner.adapt(F.cross_entropy(learner(sx[b]), sy[b]))
            (F.cross_entropy(learner(qx[b]), qy[b]) / sx.shape[0]).backward()

    return model, step


def higher_variant(algo_name: str, base: torch.nn.Module, args: argparse.Namespace, higher: object
                   ) -> tuple[torch.nn.Module, Step] | None:
    if algo_name in ("protonet", "fomaml"):
        return None
    model = copy.deepcopy(base)
    inner = model.head if algo_name == "anil" else model
    opt = torch.optim.SGD(inner.parameters(), lr=args.inner_lr)

    def step(batch: tuple[torch.Tensor, ...]) -> None:
        sx, sy, qx, qy = batch
        model.zero_grad(set_to_none=True)
        for b in range(sx.shape[0]):
            xs, xq = (model.features(sx[b]), model.features(qx[b])) if algo_name == "anil" else (sx[b], qx[b])
            with higher.innerloop_ctx(inner, opt, copy_initial_weights=False,  # type: ignore[attr-defined]
                                      track_higher_grads=True) as (fmodel, diffopt):
                for _ in range(args.inner_steps):
                    diffopt.step(F.cross_entropy(fmodel(xs), sy[b]))
                (F.cross_entropy(fmodel(xq), qy[b]) / sx.shape[0]).backward()

    return model, step


def plain_protonet_variant(base: torch.nn.Module) -> tuple[torch.nn.Module, Step]:
    model = copy.deepcopy(base)

    def step(batch: tuple[torch.Tensor, ...]) -> None:
        sx, sy, qx, qy = batch
        model.zero_grad(set_to_none=True)
        for b in range(sx.shape[0]):
            emb = model(torch.cat([sx[b], qx[b]])).flatten(1)
            protos = prototypes(emb[: sx.shape[1]], sy[b])
            (F.cross_entropy(prototype_logits(emb[sx.shape[1]:], protos), qy[b]) / sx.shape[0]).backward()

    return model, step


def floor_variant(algo_name: str, base: torch.nn.Module, args: argparse.Namespace, plan: bool = True
                  ) -> tuple[torch.nn.Module, Step]:
    """The cost floor: plain forward-backward passes of the network over each task's images.

    ``inner_steps`` passes over the support set and one over the query set per task (one pass
    over each for ANIL and ProtoNets), with the batch shapes and batch statistics the algorithms
    use, and nothing else: no inner update, no second-order terms. ``plan=True`` runs the network
    with the toolkit's fastest kernels (:class:`meta.functional.ForwardPlan`), ``False`` as the
    ``nn.Module`` itself.
    """
    model = copy.deepcopy(base)
    passes = 1 if algo_name in ("anil", "protonet") else args.inner_steps
    runner = ForwardPlan(model) if plan else None

    def loss_of(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = (model(x) if runner is None else runner(dict(model.named_parameters()), x)).flatten(1)
        if algo_name == "protonet":
            return out.pow(2).mean()
        return F.cross_entropy(out, y)

    def step(batch: tuple[torch.Tensor, ...]) -> None:
        sx, sy, qx, qy = batch
        model.zero_grad(set_to_none=True)
        for b in range(sx.shape[0]):
            for _ in range(passes):
                loss_of(sx[b], sy[b]).backward()
            loss_of(qx[b], qy[b]).backward()

    return model, step


def build_variants(algo_name: str, args: argparse.Namespace, l2l: object | None, higher: object | None
                   ) -> dict[str, tuple[torch.nn.Module, Step]]:
    base = make_model(args, head=algo_name != "protonet")
    variants = {"toolkit": toolkit_variant(algo_name, base, args)}
    if args.one_loss:
        variants["toolkit-1loss"] = toolkit_variant(algo_name, base, args, lean=False)
    if args.workers > 1 and algo_name != "protonet":
        variants[f"toolkit-workers{args.workers}"] = toolkit_variant(algo_name, base, args, workers=args.workers)
    if l2l is not None and (v := l2l_variant(algo_name, base, args, l2l)) is not None:
        variants["learn2learn"] = v
    if higher is not None and (v := higher_variant(algo_name, base, args, higher)) is not None:
        variants["higher"] = v
    if algo_name == "protonet":
        variants["plain"] = plain_protonet_variant(base)
    variants["floor-nn"] = floor_variant(algo_name, base, args, plan=False)
    variants["floor"] = floor_variant(algo_name, base, args)
    return variants


# --------------------------------------------------------------------------- measuring


def peak_bytes(fn: Callable[[], None]) -> int | None:
    """Peak of live CPU tensor bytes during ``fn()`` above the level at its start (profiler trace)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    fd, path = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    try:
        prof.export_chrome_trace(path)
        with open(path) as fh:
            events = json.load(fh)["traceEvents"]
    finally:
        os.remove(path)
    mem = [e["args"] for e in events if e.get("name") == "[memory]" and "Total Allocated" in e.get("args", {})]
    if not mem:
        return None
    start = mem[0]["Total Allocated"] - mem[0]["Bytes"]
    return int(max(m["Total Allocated"] for m in mem) - start)


def rss_peak_bytes(algo_name: str, variant: str, argv: list[str]) -> int | None:
    """Growth of the resident set (peak RSS minus RSS before) over one meta-iteration of ``variant``
    after a warm-up one, measured in a fresh child process (Linux only: ``None`` elsewhere).

    Unlike the profiler's count of live tensor bytes it sees allocations on every thread
    (task-parallel workers), and it also counts allocator overhead, so compare it only with
    other RSS numbers."""
    import subprocess

    cmd = [sys.executable, str(Path(__file__).resolve()), *argv, "--rss-child", f"{algo_name}:{variant}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("rss-growth-bytes ")]
    return int(lines[-1].split()[1]) if proc.returncode == 0 and lines else None


def _status_bytes(key: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:  # Linux: "VmRSS:   1234 kB"
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _rss_child(spec: str, args: argparse.Namespace, l2l: object | None, higher: object | None) -> int:
    import ctypes
    import ctypes.util

    algo_name, variant = spec.split(":", 1)
    step = build_variants(algo_name, args, l2l, higher)[variant][1]
    batches = make_batches(args, args.tasks, 2)
    step(batches[0])  # warm-up: library initialisation is not the step's memory
    name = ctypes.util.find_library("c")
    trim = getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None
    if trim is not None:
        trim(0)  # hand the warm-up's freed memory back, so the step's growth shows again
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # reset the peak resident set size (VmHWM)
    except OSError:
        return 0
    before = _status_bytes("VmRSS")
    step(batches[1])
    peak = _status_bytes("VmHWM")
    if before is not None and peak is not None:
        print(f"rss-growth-bytes {max(0, peak - before)}")
    return 0


def grad_agreement(a: torch.nn.Module, b: torch.nn.Module) -> tuple[float, float]:
    """(max abs difference, relative L2 difference) of the .grad of two models with equal names."""
    ga = dict(a.named_parameters())
    diffs, num, den = [], 0.0, 0.0
    for name, p in b.named_parameters():
        x = ga[name].grad if ga[name].grad is not None else torch.zeros_like(p)
        y = p.grad if p.grad is not None else torch.zeros_like(p)
        diffs.append(float((x - y).abs().max()))
        num += float((x - y).pow(2).sum())
        den += float(y.pow(2).sum())
    return max(diffs), (num ** 0.5) / max(den ** 0.5, 1e-30)


def measure(algo_name: str, args: argparse.Namespace, tasks: int, l2l: object | None, higher: object | None,
            repeats: int, with_memory: bool, check_grads: bool = True) -> dict[str, object]:
    batches = make_batches(args, tasks, repeats + 1)
    agreement = {}
    if check_grads:
        # first meta-gradient of every variant on the same batch, in float64 (so that rounding
        # cannot flip exact ties of max-pooling), compared with the toolkit's
        torch.set_default_dtype(torch.float64)
        try:
            variants = build_variants(algo_name, args, l2l, higher)
            first = [t.double() if t.is_floating_point() else t for t in batches[0]]
            first = [t[: min(4, tasks)] for t in first]
            for _, step in variants.values():
                step(tuple(first))
            tool_model = variants["toolkit"][0]
            agreement = {name: grad_agreement(model, tool_model) for name, (model, _) in variants.items()
                         if not name.startswith(("toolkit", "floor"))}
        finally:
            torch.set_default_dtype(torch.float32)
    variants = build_variants(algo_name, args, l2l, higher)
    for _, step in variants.values():
        step(batches[0])  # warm-up
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    wall: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for r in range(repeats):
        order = names[r % len(names):] + names[: r % len(names)]  # rotate who goes first
        for name in order:
            step = variants[name][1]
            c0, w0 = time.process_time(), time.perf_counter()
            step(batches[1 + r])
            cpu[name].append(time.process_time() - c0)
            wall[name].append(time.perf_counter() - w0)
    memory = {}
    if with_memory:
        for name, (_, step) in variants.items():
            # the profiler sees the calling thread only: task-parallel workers get RSS numbers instead
            threaded = name.startswith("toolkit-workers")
            memory[name] = None if threaded else peak_bytes(lambda step=step: step(batches[0]))
    return {
        "algo": algo_name, "tasks": tasks,
        "cpu_s": {k: statistics.median(v) for k, v in cpu.items()},
        "wall_s": {k: statistics.median(v) for k, v in wall.items()},
        "cpu_all": cpu, "peak_bytes": memory,
        "grad_max_abs_diff": {k: v[0] for k, v in agreement.items()},
        "grad_rel_diff": {k: v[1] for k, v in agreement.items()},
    }


# --------------------------------------------------------------------------- report


def ratio_rows(res: dict[str, object]) -> list[str]:
    cpu, wall, mem = res["cpu_s"], res["wall_s"], res["peak_bytes"]  # type: ignore[index]
    floor = cpu["floor"]  # type: ignore[index]
    rows = []
    for name in cpu:  # type: ignore[union-attr]
        if name.startswith("floor"):
            continue
        c, w = cpu[name], wall[name]  # type: ignore[index]
        speed = "" if name.startswith("toolkit") else f"{cpu[name] / cpu['toolkit']:.2f}x"  # type: ignore[index]
        speed_w = "" if name.startswith("toolkit") else f"{wall[name] / wall['toolkit']:.2f}x"  # type: ignore[index]
        m = mem.get(name) if mem else None  # type: ignore[union-attr]
        mt = mem.get("toolkit") if mem else None  # type: ignore[union-attr]
        mem_s = f"{m / 2**20:.0f}" if m else "-"
        mem_r = f"{mt / m:.2f}" if (m and mt and name != "toolkit") else ""
        agree = res["grad_rel_diff"].get(name)  # type: ignore[union-attr]
        agree_s = f"{agree:.1e}" if agree is not None else ""
        rows.append(f"| {res['algo']} | {name} | {1 / c:.2f} | {c:.3f} | {w:.3f} | {speed} | {speed_w} | "
                    f"{c / floor:.2f} | {mem_s} | {mem_r} | {agree_s} |")
    for name in ("floor-nn", "floor"):
        f_mem = (mem.get(name) or 0) / 2**20 if mem else 0  # type: ignore[union-attr]
        rows.append(f"| {res['algo']} | {name} | {1 / cpu[name]:.2f} | {cpu[name]:.3f} | "  # type: ignore[index]
                    f"{wall[name]:.3f} | | | {cpu[name] / floor:.2f} | {f_mem:.0f} | | |")  # type: ignore[index]
    return rows


def workers_rows(res: dict[str, object], workers: int) -> list[str]:
    """Wall-clock comparison of the task-parallel toolkit with the peers (with several threads CPU
    time adds up over threads, so wall time is the measure here)."""
    name = f"toolkit-workers{workers}"
    wall, mem = res["wall_s"], res.get("rss_growth_bytes") or {}  # type: ignore[index]
    if name not in wall:  # type: ignore[operator]
        return []
    rows = []
    for peer in ("learn2learn", "higher", "toolkit"):
        if peer not in wall:  # type: ignore[operator]
            continue
        m, mp = mem.get(name), mem.get(peer)  # type: ignore[union-attr]
        mem_r = f"{m / mp:.2f}" if (m and mp) else "-"
        rows.append(f"| {res['algo']} | {name} vs {peer} | {wall[name]:.3f} | {wall[peer]:.3f} | "  # type: ignore[index]
                    f"{wall[peer] / wall[name]:.2f}x | {mem_r} |")  # type: ignore[index]
    return rows


WORKERS_HEADER = ("| algorithm | comparison | toolkit wall s/it | other wall s/it | toolkit speed-up (wall) | "
                  "toolkit/other peak RSS growth |\n|---|---|---|---|---|---|")

HEADER = ("| algorithm | implementation | meta-it/s (CPU) | CPU s/it | wall s/it | toolkit speed-up (CPU) | "
          "toolkit speed-up (wall) | time / floor | peak MiB | toolkit/peer memory | grad rel. diff |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|")


def plot_sweep(path: Path, sweep: list[dict[str, object]], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len({r["algo"] for r in sweep}), figsize=(9, 3.4), squeeze=False)
    for ax, algo in zip(axes[0], dict.fromkeys(r["algo"] for r in sweep)):
        rows = [r for r in sweep if r["algo"] == algo]
        for name in rows[0]["cpu_s"]:  # type: ignore[union-attr]
            xs = [r["tasks"] for r in rows]
            ys = [1 / r["cpu_s"][name] for r in rows]  # type: ignore[index]
            ax.plot(xs, ys, marker="o", label=name, linestyle="--" if name.startswith("floor") else "-")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("meta-batch size (tasks)")
        ax.set_ylabel("meta-iterations / CPU second")
        ax.set_title(algo)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--algos", default=",".join(ALGOS), help=f"comma list of {ALGOS}")
    p.add_argument("--tasks", type=int, default=16, help="meta-batch size of the main table")
    p.add_argument("--ways", type=int, default=5)
    p.add_argument("--shots", type=int, default=1)
    p.add_argument("--queries", type=int, default=15)
    p.add_argument("--image-size", type=int, default=28)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--inner-steps", type=int, default=1)
    p.add_argument("--inner-lr", type=float, default=0.4)
    p.add_argument("--repeats", type=int, default=5, help="timed meta-iterations per variant (median)")
    p.add_argument("--sweep", default="", help="meta-batch sizes for the plot, e.g. 2,4,8,16 (empty: none)")
    p.add_argument("--sweep-algos", default="maml,fomaml", help="algorithms of the sweep")
    p.add_argument("--sweep-repeats", type=int, default=3)
    p.add_argument("--one-loss", action="store_true",
                   help="also time the toolkit's outer_loss().backward() (all tasks' graphs alive at once)")
    p.add_argument("--no-memory", action="store_true", help="skip the profiler memory measurement")
    p.add_argument("--no-peers", action="store_true", help="do not import learn2learn/higher")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rss-child", default=None, help=argparse.SUPPRESS)  # internal: ALGO:VARIANT
    p.add_argument("--workers", type=int, default=1,
                   help="also time the toolkit with outer_backward(workers=N): tasks on N threads "
                        "(compare wall times; use with --threads N)")
    p.add_argument("--tune-allocator", action="store_true",
                   help="mtl.utils.runtime.tune_cpu_allocator() first (process-wide: peers get it too)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="write all measurements here")
    p.add_argument("--plot", type=Path, default=None, help="write the sweep plot here (needs --sweep)")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--smoke", action="store_true", help="tiny sizes: 2 tasks, 8x8 filters, 2 repeats")
    args = p.parse_args(argv)
    if args.smoke:
        args.tasks, args.hidden, args.queries, args.repeats, args.image_size = 2, 8, 3, 2, 16
        args.sweep_repeats = 1
    for path in (args.json, args.plot):
        if path is not None and path.exists() and not args.overwrite:
            p.error(f"{path} exists; pass --overwrite to replace it")
    algos = [a for a in args.algos.split(",") if a]
    bad = [a for a in algos if a not in ALGOS]
    if bad:
        p.error(f"--algos: unknown {bad}; allowed: {list(ALGOS)}")
    args.algo_list = algos
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.tune_allocator:
        from mtl.utils.runtime import tune_cpu_allocator

        print(f"tuned CPU allocator (glibc mallopt) for every implementation: {tune_cpu_allocator()}")
    l2l, higher, missing = (None, None, "--no-peers") if args.no_peers else load_peers()
    if args.rss_child:
        return _rss_child(args.rss_child, args, l2l, higher)
    print(f"torch {torch.__version__}, {args.threads} thread(s); conv4 (hidden {args.hidden}), "
          f"{args.ways}-way {args.shots}-shot {args.queries}-query, {args.image_size}x{args.image_size}, "
          f"{args.inner_steps} inner step(s), meta-batch {args.tasks}")
    if missing:
        print(f"peers absent: {missing} -- comparing the toolkit with the floor only "
              "(scripts/peers_env.sh builds the peer environment)")
    results = []
    print(HEADER)
    for algo in args.algo_list:
        res = measure(algo, args, args.tasks, l2l, higher, args.repeats, not args.no_memory)
        results.append(res)
        print("\n".join(ratio_rows(res)), flush=True)
    if args.workers > 1:
        print(f"\ntask-parallel toolkit, {args.workers} workers, {args.threads} thread(s) in all:")
        print(WORKERS_HEADER)
        child_argv = list(argv if argv is not None else sys.argv[1:])
        for res in results:
            if not args.no_memory:
                res["rss_growth_bytes"] = {
                    name: rss_peak_bytes(str(res["algo"]), name, child_argv)
                    for name in res["wall_s"] if not name.startswith("floor")}  # type: ignore[union-attr]
            print("\n".join(workers_rows(res, args.workers)), flush=True)
    sweep = []
    sizes = [int(s) for s in args.sweep.split(",") if s]
    for algo in [a for a in args.sweep_algos.split(",") if a] if sizes else []:
        for tasks in sizes:
            res = measure(algo, args, tasks, l2l, higher, args.sweep_repeats, False, False)
            sweep.append(res)
            tput = ", ".join(f"{k} {1 / v:.2f}" for k, v in res["cpu_s"].items())  # type: ignore[union-attr]
            print(f"sweep {algo} tasks={tasks}: meta-it/CPU-s {tput}", flush=True)
    if args.plot is not None and sweep:
        plot_sweep(args.plot, sweep, f"conv4, {args.ways}-way {args.shots}-shot, {args.queries} queries, "
                                     f"{args.threads} thread, torch {torch.__version__}")
        print(f"plot: {args.plot}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                   "torch": torch.__version__, "peers_missing": missing, "results": results, "sweep": sweep}
        args.json.write_text(json.dumps(payload, indent=1))
        print(f"json: {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
