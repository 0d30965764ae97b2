"""Shared training utilities: checkpoints, seeds, devices, budgets, logs and plots."""

from mtl.utils.checkpoint import (
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    load_checkpoint,
    load_checkpoint_or_previous,
    previous_path,
    save_checkpoint,
    verify_checkpoint,
)
from mtl.utils.logging import CSVLogger, plot_curves
from mtl.utils.runtime import (
    Budget,
    check_new_output,
    prepare_out_dir,
    resolve_device,
    rng_state,
    seed_everything,
    set_rng_state,
)

__all__ = [
    "Budget",
    "CSVLogger",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "check_new_output",
    "load_checkpoint",
    "load_checkpoint_or_previous",
    "plot_curves",
    "prepare_out_dir",
    "previous_path",
    "resolve_device",
    "rng_state",
    "save_checkpoint",
    "seed_everything",
    "set_rng_state",
    "verify_checkpoint",
]
