"""Page faults and time of a training step, with glibc's default allocator settings and with
:func:`appmult_fx.keep_freed_memory` (what the ``appmult-fx`` command line sets).

    python bench/step_faults.py [--threads 1] [--batch 16] [--mult mul8s_trunc8]
                                [--rounds 3] [--steps 3] [--clock cpu|wall] [--json out.json]

Each round runs two fresh processes, one per setting, alternately (an allocator setting holds
for a whole process). Each process builds the CIFAR ResNet-18 of ``bench/e2e_resnet18.py``
(float, LUT gradients, straight-through), warms each up, and then measures ``--steps`` training
steps of each: minor page faults and system time per step (``getrusage``) and the best time of
a step (``--clock``: process CPU time, the default, or wall time, which is what counts with
several threads, whose CPU time includes their waiting). The table gives the medians over the
rounds and each model's step time with the setting over the step time without, and the
resident size of a process after its steps (all three models built and stepped): what the
kept memory costs.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from e2e_resnet18 import training_step
from profile_step import make_model

import appmult_fx as amx

SETTINGS = ("default", "keep")
CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}
MODELS = ("float", "lut", "ste")


def measure(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, clock: str = "cpu"
) -> dict:
    """Faults and system seconds per step (means) and the best seconds of a step (``clock``)."""
    now = CLOCKS[clock]
    step = training_step(model, x, y)
    step()
    step()
    before = resource.getrusage(resource.RUSAGE_SELF)
    best = float("inf")
    for _ in range(steps):
        start = now()
        step()
        best = min(best, now() - start)
    after = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "faults": (after.ru_minflt - before.ru_minflt) / steps,
        "system_s": (after.ru_stime - before.ru_stime) / steps,
        "step_s": best,
    }


def child(args: argparse.Namespace) -> None:
    """One process: the setting, then every model measured; JSON on stdout."""
    torch.set_num_threads(args.threads)
    kept = amx.keep_freed_memory() if args.child == "keep" else False
    if args.child == "keep" and not kept:
        raise SystemExit(
            "keep_freed_memory() did not apply here (not glibc, another malloc preloaded, "
            "opted out, or glibc's own thresholds set)"
        )
    torch.manual_seed(0)
    x, y = torch.randn(args.batch, 3, 32, 32), torch.randint(0, 10, (args.batch,))
    built = {name: make_model(name, args.mult, x) for name in MODELS}
    figures = {name: measure(built[name], x, y, args.steps, args.clock) for name in MODELS}
    pages = int(Path("/proc/self/statm").read_text().split()[1])  # resident, Linux
    print(json.dumps({**figures, "resident_mib": pages * os.sysconf("SC_PAGE_SIZE") / 2**20}))


def run_child(setting: str, args: argparse.Namespace) -> dict:
    """The figures of one fresh process with ``setting``."""
    command = [sys.executable, str(Path(__file__).resolve()), "--child", setting]
    for flag in ("threads", "batch", "mult", "steps", "clock"):
        command += [f"--{flag}", str(getattr(args, flag))]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"the {setting} process failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def summary(runs: dict[str, list[dict]]) -> dict:
    """Medians over the rounds per setting and model, and the step-time ratios keep / default."""
    out: dict = {}
    for setting in SETTINGS:
        out[setting] = {
            name: {
                key: statistics.median(run[name][key] for run in runs[setting])
                for key in ("faults", "system_s", "step_s")
            }
            for name in MODELS
        }
        out[setting]["resident_mib"] = statistics.median(
            run["resident_mib"] for run in runs[setting]
        )
    out["keep_over_default"] = {
        name: round(out["keep"][name]["step_s"] / out["default"][name]["step_s"], 3)
        for name in MODELS
    }
    out["over_float"] = {
        setting: {
            name: round(out[setting][name]["step_s"] / out[setting]["float"]["step_s"], 3)
            for name in ("lut", "ste")
        }
        for setting in SETTINGS
    }
    return out


def positive(text: str) -> int:
    """An argument that must be a whole number of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text}")
    return value


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=positive, default=1)
    p.add_argument("--batch", type=positive, default=16)
    p.add_argument("--mult", default="mul8s_trunc8")
    p.add_argument("--rounds", type=positive, default=3)
    p.add_argument("--steps", type=positive, default=3)
    p.add_argument("--clock", choices=tuple(CLOCKS), default="cpu")
    p.add_argument("--json", help="write the figures here")
    p.add_argument("--child", choices=SETTINGS, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(args)
        return
    try:
        amx.multiplier(args.mult)
    except (KeyError, ValueError) as exc:
        p.error(f"--mult: {exc}")
    runs: dict[str, list[dict]] = {setting: [] for setting in SETTINGS}
    for r in range(args.rounds):
        for setting in SETTINGS:
            runs[setting].append(run_child(setting, args))
            print(f"  round {r + 1}/{args.rounds}: {setting} measured", file=sys.stderr)
    figures = {
        "threads": args.threads,
        "batch": args.batch,
        "mult": args.mult,
        "clock": args.clock,
        **summary(runs),
    }
    print(f"| model | setting | faults / step | system ms / step | {args.clock} ms / step (best) |")
    print("|---|---|---:|---:|---:|")
    for name in MODELS:
        for setting in SETTINGS:
            f = figures[setting][name]
            print(
                f"| {name} | {setting} | {f['faults']:.0f} | {1e3 * f['system_s']:.1f} "
                f"| {1e3 * f['step_s']:.1f} |"
            )
    print(f"step time keep / default: {figures['keep_over_default']}")
    resident = {setting: round(figures[setting]["resident_mib"]) for setting in SETTINGS}
    print(f"resident MiB of a process after its steps: {resident}")
    print(f"step time / float step: {figures['over_float']}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
