"""Occlusion map speed: cnnwidgets' ``occlusion_map`` against Captum's ``Occlusion``.

resnet18 (weights=None) at 224x224, a 32x32 window with constant baseline 0 (the dataset
mean after normalisation), target = the top class's logit. In one run, per stride:

* Captum at several ``perturbations_per_eval`` (the best one is the reference),
* ours (a fresh Probe per run, so preparing the private inference copy is included),
* the speed-up over Captum's best, the max abs difference between the two per-pixel
  attributions (ours converted with ``OcclusionResult.pixel_attribution``), and the time
  until the coarse full-image preview (the 5x5 lattice, or corners and centre, see `preview_count`) is available.

Usage::

    python benchmarks/bench_occlusion.py                 # stride 16 (a few minutes on 2 quiet cores)
    python benchmarks/bench_occlusion.py --stride8       # stride 16 and 8 (625 positions: ~4x longer)
    python benchmarks/bench_occlusion.py --strides 8 --ppe 8 16   # stride 8 only, fewer Captum settings
    python benchmarks/bench_occlusion.py --ablation      # also: which engineering step helps
    python benchmarks/bench_occlusion.py --device cuda   # ours and Captum on a GPU

The "CPU s" column is the process CPU time (all threads); with ``--threads 1`` it measures
the work done and is the steadier number on a machine shared with other jobs.

Timings are wall-clock, best of ``--repeats`` rounds (the variants alternate within a round,
so a busy machine slows them alike). A shared machine also has slow and fast spells that last
longer than one map, which can favour whichever variant ran in a fast one; the paired rounds
that follow (``--pairs``) run Captum at its best ``perturbations_per_eval`` right before and
right after ours, and report the median of the per-round speed-ups.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchvision

from cnnwidgets import ClassLogit, Probe
from cnnwidgets.methods.occlusion import occlusion_map

WINDOW = 32
SIZE = 224


def load_input(device: torch.device) -> tuple[torch.Tensor, str]:
    """A real photo when the shared test data is there, else a fixed random image."""
    shared = Path(os.environ.get("CNNWIDGETS_SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    for path in [shared / "images" / "demo" / "pytorch-cnn-visualizations" / "cat_dog.png"]:
        if path.is_file():
            from PIL import Image

            image = Image.open(path).convert("RGB").resize((SIZE, SIZE))
            x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
            mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
            std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
            return ((x - mean) / std)[None].to(device), path.name
    return torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0)).to(device), "random"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


@dataclass
class Timing:
    wall: float = float("inf")  # seconds
    cpu: float = float("inf")  # process CPU seconds (all threads)
    preview: float = float("inf")  # seconds until the coarse preview was available

    def keep_best(self, other: Timing) -> bool:
        better = other.wall < self.wall
        if better:
            self.wall, self.preview = other.wall, other.preview
        self.cpu = min(self.cpu, other.cpu)
        return better


def run_captum(model, x, cls, stride, ppe, device):
    from captum.attr import Occlusion

    sync(device)
    start, cpu = time.perf_counter(), time.process_time()
    out = Occlusion(model).attribute(
        x, sliding_window_shapes=(3, WINDOW, WINDOW), strides=(3, stride, stride), baselines=0.0,
        target=cls, perturbations_per_eval=ppe,
    )
    sync(device)
    return Timing(time.perf_counter() - start, time.process_time() - cpu), out


def run_ours(model, x, cls, stride, device, *, probe=None, batch_size=None, fold=True, channels_last="auto",
             serial=False):
    """One occlusion map and its per-pixel attribution; with ``probe=None`` a new Probe is made
    (cold: includes all preparation). Returns ``(timing, (result, pixels))``.

    ``serial``: run one batch at a time on all threads (no side-by-side CPU workers).
    """
    import cnnwidgets.methods.occlusion as occlusion_module

    stamps: dict[str, float] = {}

    def callback(result):
        if result.preview_ready and "preview" not in stamps:
            stamps["preview"] = time.perf_counter()

    start, cpu = time.perf_counter(), time.process_time()
    own = probe is None
    if own:
        probe = Probe(model, device=device, channels_last=channels_last)
    workers = occlusion_module._cpu_workers
    if serial:
        occlusion_module._cpu_workers = lambda probe, parallel_safe: (1, torch.get_num_threads())
    try:
        result = occlusion_map(
            probe, x, ClassLogit(cls), window=WINDOW, stride=stride, fill=0.0, batch_size=batch_size,
            progress=False, callback=callback, fold_batchnorm=fold,
        )
        # Captum's result is per pixel: ours is converted inside the timed region, so that both
        # sides do the same work
        pixels = result.pixel_attribution()
    finally:
        occlusion_module._cpu_workers = workers
        if own:
            probe.close()
    wall = time.perf_counter() - start
    return Timing(wall, time.process_time() - cpu, stamps["preview"] - start), (result, pixels)


def main() -> int:
    try:
        import captum  # noqa: F401 - the reference; checked before any work
    except ImportError:
        print("this benchmark compares against Captum, which is not installed: pip install -e '.[test]'")
        return 2
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stride8", action="store_true", help="also run stride 8 (625 positions)")
    parser.add_argument("--strides", type=int, nargs="+", default=None, help="strides to run (default: 16)")
    parser.add_argument("--ppe", type=int, nargs="+", default=[1, 8, 16, 32, 64], help="Captum perturbations_per_eval")
    parser.add_argument("--batch-size", type=int, default=None, help="our batch size (default: automatic)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--repeats", type=int, default=1, help="rounds; the best time of each variant is kept")
    parser.add_argument("--pairs", type=int, default=2,
                        help="paired rounds after the sweep: Captum at its best ppe, ours warm, ours new, "
                             "Captum again, back to back; the speed-up of each round uses the mean of its two "
                             "Captum runs, so slow and fast spells of a shared machine hit both sides alike")
    parser.add_argument("--ablation", action="store_true", help="also time ours without each engineering step")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval().to(device)
    x, source = load_input(device)
    with torch.no_grad():
        cls = int(model(x).argmax())
    print(f"resnet18(weights=None) {SIZE}x{SIZE}, window {WINDOW}, input {source}, target logit {cls}")
    print(f"torch {torch.__version__}, {args.device}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    print(f"best of {args.repeats} round(s); preview = the coarse positions spanning the image "
          "(the 5x5 lattice, or the corners and the centre where 5x5 would be over 4 % of the positions)\n")

    strides = args.strides or ([16, 8] if args.stride8 else [16])
    disagreements = 0
    warm_probe = Probe(model, device=device)  # as in the explorer: a probe that has seen the image
    for stride in strides:
        positions = ((SIZE - WINDOW) // stride + 1) ** 2
        captum: dict[int, Timing] = {ppe: Timing() for ppe in args.ppe}
        captum_out: dict[int, torch.Tensor] = {}
        cold, warm = Timing(), Timing()
        ours_pixels = warm_pixels = None
        variants: dict[str, Timing] = {}
        run_ours(model, x, cls, stride, device, probe=warm_probe)  # prepares the warm probe
        run_captum(model, x, cls, WINDOW, max(args.ppe), device)  # and Captum's: 49 positions, not timed
        for _ in range(args.repeats):
            for ppe in args.ppe:
                timing, out = run_captum(model, x, cls, stride, ppe, device)
                if captum[ppe].keep_best(timing):
                    captum_out[ppe] = out
            timing, (_, ours_pixels) = run_ours(model, x, cls, stride, device, batch_size=args.batch_size)
            cold.keep_best(timing)
            timing, (_, warm_pixels) = run_ours(model, x, cls, stride, device, probe=warm_probe,
                                                batch_size=args.batch_size)
            warm.keep_best(timing)
            if args.ablation:
                ablations = {
                    "ours, one batch at a time": dict(serial=True),
                    "ours, NCHW, no fold": dict(fold=False, channels_last=False),
                    "ours, channels_last, no fold": dict(fold=False),
                    "ours, batch 4": dict(batch_size=4),
                    "ours, batch 16": dict(batch_size=16),
                    "ours, batch 32": dict(batch_size=32),
                    "ours, batch 64": dict(batch_size=64),
                }
                for name, options in ablations.items():
                    variants.setdefault(name, Timing()).keep_best(run_ours(model, x, cls, stride, device, **options)[0])

        best_ppe = min(captum, key=lambda p: captum[p].wall)
        best = captum[best_ppe].wall
        reference = captum_out[best_ppe][0]
        scale = float(reference.abs().max())
        diff = max(float((reference - torch.from_numpy(pixels).to(reference.device)).abs().max())
                   for pixels in (ours_pixels, warm_pixels))  # the new and the warm probe's maps
        agree = diff <= 1e-3 * scale + 1e-5
        disagreements += not agree
        print(f"stride {stride}: {positions} positions")
        print(f"  {'variant':36s} {'wall s':>8s} {'ms/pos':>7s} {'CPU s':>7s} {'speed-up':>9s} {'preview':>8s}")

        def row(name: str, t: Timing, mark: str = "") -> None:
            preview = f"{100 * t.preview / t.wall:7.1f}%" if t.preview != float("inf") else ""
            print(f"  {name:36s} {t.wall:8.2f} {1000 * t.wall / positions:7.1f} {t.cpu:7.1f} "
                  f"{best / t.wall:8.2f}x {preview:>8s}{mark}")

        for ppe in args.ppe:
            row(f"Captum, perturbations_per_eval={ppe}", captum[ppe], "  <- Captum's best" if ppe == best_ppe else "")
        row("ours, new Probe (all preparation)", cold)
        row("ours, warm Probe (explorer case)", warm)
        for name, timing in variants.items():
            row(name, timing)
        print(f"  => speed-up over Captum's best: {best / cold.wall:.2f}x (new Probe), {best / warm.wall:.2f}x (warm Probe)")
        print(f"  => coarse preview after {cold.preview:.2f} s ({100 * cold.preview / cold.wall:.1f} % of the total) "
              f"with a new Probe, {warm.preview:.2f} s ({100 * warm.preview / warm.wall:.1f} %) warm")
        print(f"  => max |ours - Captum| per-pixel attribution, new and warm probe: {diff:.2e} (Captum's max "
              f"|attribution| {scale:.2e}): {'agree' if agree else 'DISAGREE'} (tolerance 1e-3 of that, + 1e-5)")
        if args.pairs:
            warm_ratios, cold_ratios = [], []
            for _ in range(args.pairs):
                first = run_captum(model, x, cls, stride, best_ppe, device)[0].wall
                warm_t = run_ours(model, x, cls, stride, device, probe=warm_probe, batch_size=args.batch_size)[0]
                cold_t = run_ours(model, x, cls, stride, device, batch_size=args.batch_size)[0]
                second = run_captum(model, x, cls, stride, best_ppe, device)[0].wall
                reference_time = (first + second) / 2
                warm_ratios.append(reference_time / warm_t.wall)
                cold_ratios.append(reference_time / cold_t.wall)
                print(f"  paired round: Captum (ppe={best_ppe}) {first:.2f} s and {second:.2f} s, ours warm "
                      f"{warm_t.wall:.2f} s ({warm_ratios[-1]:.2f}x, preview {100 * warm_t.preview / warm_t.wall:.1f} %), "
                      f"new {cold_t.wall:.2f} s ({cold_ratios[-1]:.2f}x, preview {100 * cold_t.preview / cold_t.wall:.1f} %)")
            print(f"  => paired speed-up, median of {args.pairs} round(s): {statistics.median(warm_ratios):.2f}x warm, "
                  f"{statistics.median(cold_ratios):.2f}x new Probe (range {min(warm_ratios + cold_ratios):.2f}-"
                  f"{max(warm_ratios + cold_ratios):.2f}x)")
        print()
    warm_probe.close()
    if disagreements:
        print(f"ours and Captum disagree at {disagreements} stride(s): the timings compare different results")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
