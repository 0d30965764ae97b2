"""CUDA checks for a machine with a GPU: the library's arithmetic there equals the CPU's.

In float64, on tiny conv4 networks and random 3-way tasks: the second-order MAML, first-order
MAML, Meta-SGD, ANIL, MAML++ and Reptile meta-gradients computed on the GPU against the CPU's
(loss to 1e-10, every gradient entry to 1e-8); a ProtoNet's within-class whitening and its
cached evaluation with test-time views on the GPU against the CPU's. Prints one
PASS/FAIL line per check and exits 1 if any failed. No GPU: exits 0 with a note.

    python benchmarks/cuda_checks.py
"""

import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
if not torch.cuda.is_available():
    print("skipped: no CUDA device here")
    sys.exit(0)
from fewshot_helpers import make_tasks, tiny_conv  # noqa: E402

from meta.evaluation import evaluate  # noqa: E402
from meta.maml import ANIL, FOMAML, MAML, MAMLPlusPlus, MetaSGD  # noqa: E402
from meta.protonet import ProtoNet  # noqa: E402
from meta.reptile import Reptile  # noqa: E402
from mtl import create_backbone  # noqa: E402

cuda = torch.device("cuda")
ok = True


def check(name, cond, detail=""):
    global ok
    ok &= bool(cond)
    print(f"{'PASS' if cond else 'FAIL'} {name} {detail}", flush=True)


def grads(algo, tasks):
    loss, _ = algo.outer_loss(*tasks)
    return loss.detach(), torch.autograd.grad(loss, [p for p in algo.parameters()], allow_unused=True)


tasks = make_tasks((1, 16, 16), tasks=3)
for name, make in [("maml", lambda m: MAML(m, inner_lr=0.3, inner_steps=2)),
                   ("fomaml", lambda m: FOMAML(m, inner_lr=0.3, inner_steps=2)),
                   ("metasgd", lambda m: MetaSGD(m, inner_lr=0.3, inner_steps=2)),
                   ("anil", lambda m: ANIL(m, inner_lr=0.3, inner_steps=2)),
                   ("mamlpp", lambda m: MAMLPlusPlus(m, inner_lr=0.3, inner_steps=2)),
                   ("reptile", lambda m: Reptile(m, inner_lr=0.3, inner_steps=2))]:
    try:
        torch.manual_seed(0)
        cpu_algo = make(tiny_conv())
        gpu_algo = make(tiny_conv()).to(cuda)
        gpu_algo.load_state_dict(cpu_algo.state_dict())
        lc, gc = grads(cpu_algo, tasks)
        lg, gg = grads(gpu_algo, [t.to(cuda) for t in tasks])
        diff = max(float((a - b.cpu()).abs().max()) for a, b in zip(gc, gg) if a is not None)
        check(f"{name} meta-gradient cuda == cpu (float64)", abs(float(lc) - float(lg)) < 1e-10 and diff < 1e-8,
              f"loss {float(lc):.12f} vs {float(lg):.12f}, max grad diff {diff:.2e}")
    except Exception as e:  # report and go on with the other checks
        check(f"{name} meta-gradient cuda == cpu", False, repr(e))

try:
    g = torch.Generator().manual_seed(0)
    images = torch.rand(40, 1, 16, 16, generator=g).double()
    labels = torch.arange(8).repeat_interleave(5)
    torch.manual_seed(0)
    net = create_backbone("conv4", in_channels=1, image_size=16, hidden=8).double()
    cpu_p = ProtoNet(net, test_shift=1, test_rotate=10.0)
    gpu_p = ProtoNet(create_backbone("conv4", in_channels=1, image_size=16, hidden=8).double(), test_shift=1,
                     test_rotate=10.0).to(cuda)
    gpu_p.load_state_dict(cpu_p.state_dict())
    cpu_p.fit_whitening(images, labels, 0.3)
    gpu_p.fit_whitening(images.to(cuda), labels.to(cuda), 0.3)
    check("protonet whitening cuda == cpu", float((cpu_p.whitening - gpu_p.whitening.cpu()).abs().max()) < 1e-8)

    class Src:
        def __init__(self, dev):
            self.dev, self.g = dev, torch.Generator().manual_seed(1)

        def __call__(self, i):
            idx = torch.randperm(40, generator=self.g)
            t = type("T", (), {})()
            sy = torch.arange(8)
            t.support_x = images[sy * 5][None].to(self.dev)
            t.support_y = sy[None].to(self.dev)
            t.query_x = images[sy * 5 + 1 + idx[:8] % 4][None].to(self.dev)
            t.query_y = sy[None].to(self.dev)
            return t
    rc = evaluate(cpu_p, Src("cpu"), num_tasks=20, progress=False)
    rg = evaluate(gpu_p, Src(cuda), num_tasks=20, progress=False)
    check("protonet cached evaluation with views and whitening cuda == cpu",
          abs(rc["loss"] - rg["loss"]) < 1e-8 and rc["accuracy"] == rg["accuracy"], f"{rc['loss']} vs {rg['loss']}")
except Exception as e:  # noqa: BLE001
    check("protonet on cuda", False, repr(e))
print("ALL PASS" if ok else "SOME FAILED")
sys.exit(0 if ok else 1)
