"""Tutorial: knowledge distillation (Hinton et al. 2015) and Born-Again Networks (Furlanello et al. 2018).

On the built-in Omniglot-like glyphs (no download needed):

1. train a wide conv4 teacher on the labels;
2. train a narrow conv4 student on the labels alone (the baseline);
3. train the same student with the distillation loss, taught by the teacher;
4. run two Born-Again generations of the narrow student and ensemble them.

    python examples/distillation.py               # a few minutes on a CPU
    python examples/distillation.py --smoke       # a few seconds: tiny sizes, checks that it runs

Writes ``results.json`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from mtl.data import make_glyphs
from mtl.distill import DistillConfig, born_again, distill, kd_loss, train_from_scratch


def split(num_classes: int, test_per_class: int):
    """Glyphs with 20 drawings per class; the last ``test_per_class`` of each class are the test set."""
    data = make_glyphs(num_classes, samples_per_class=20, seed=0)
    position = torch.arange(len(data)) % 20  # make_glyphs orders samples by class, 20 each
    test = position >= 20 - test_per_class
    return data.select(~test), data.select(test)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--smoke", action="store_true", help="tiny sizes: runs in seconds")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/example_distillation")
    args = p.parse_args()
    torch.set_num_threads(1)

    classes, epochs, teacher_width, student_width = (6, 2, 8, 4) if args.smoke else (50, 15, 32, 8)
    train, test = split(classes, test_per_class=5)
    print(f"glyphs: {classes} classes, {len(train)} training and {len(test)} test drawings")

    # The loss on its own: alpha * CE + (1 - alpha) * T^2 * KL(teacher_T || student_T).
    z_student, z_teacher = torch.tensor([[0.0, 0.0]]), torch.tensor([[1.0, 0.0]])
    print(f"kd_loss on one example: {kd_loss(z_student, z_teacher, torch.tensor([0]), 4.0, 0.5).item():.4f}")

    cfg = DistillConfig(epochs=epochs, batch_size=32, lr=3e-3, temperature=4.0, alpha=0.5, shift=1, seed=args.seed)
    teacher = train_from_scratch("conv4", train, cfg, backbone_kwargs={"hidden": teacher_width}, test=test)
    print(f"teacher   (conv4, {teacher_width} filters): test accuracy {100 * teacher.accuracy:.1f}%")

    student = {"hidden": student_width}
    scratch = train_from_scratch("conv4", train, cfg, backbone_kwargs=student, test=test, reference=teacher.model)
    taught = distill(teacher.model, "conv4", train, cfg, backbone_kwargs=student, test=test)
    print(f"student   (conv4, {student_width} filters) from scratch: {100 * scratch.accuracy:.1f}% "
          f"(agrees with the teacher on {100 * scratch.agreement:.1f}%)")
    print(f"student   (conv4, {student_width} filters) distilled:    {100 * taught.accuracy:.1f}% "
          f"(agrees with the teacher on {100 * taught.agreement:.1f}%)")

    # Born-again: generation 0 is the scratch student; each generation teaches the next.
    ban = born_again("conv4", train, 2, cfg, teacher=scratch.model, backbone_kwargs=student, test=test, log=print)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {"teacher": teacher.accuracy, "scratch": scratch.accuracy, "distilled": taught.accuracy,
              "scratch_agreement": scratch.agreement, "distilled_agreement": taught.agreement,
              "born_again": ban.to_dict()}
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out / 'results.json'}")


if __name__ == "__main__":
    main()
