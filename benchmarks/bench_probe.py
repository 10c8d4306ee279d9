"""Full forward vs prefix-only capture vs cached re-request, side by side in one run.

Run:  python benchmarks/bench_probe.py [--repeats 10] [--threads N]

For resnet18 and vgg16 (weights=None; timing does not depend on the weights) at 224x224
on CPU, prints per stage the time of a plain full forward of the model, of a
prefix-only capture that stops after the stage (cache cleared every time), and of a
cached re-request, in the default contiguous layout and in channels_last.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torchvision

from cnnwidgets import Probe

STAGES = {
    "resnet18": ["maxpool", "layer1", "layer2", "layer3", "layer4", "fc"],
    "vgg16": ["features.4", "features.9", "features.16", "features.23", "features.30", "classifier.6"],
}


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1000


def bench(arch: str, repeats: int) -> None:
    model = getattr(torchvision.models, arch)(weights=None).eval()
    x = torch.randn(1, 3, 224, 224)
    print(f"\n{arch} @ 224x224, batch 1, {torch.get_num_threads()} threads, median of {repeats} (ms)")
    print(f"{'stage':<14}{'layout':<15}{'full fwd':>10}{'prefix':>10}{'ratio':>8}{'cached':>10}")
    for layout in ("contiguous", "channels_last"):
        cl = layout == "channels_last"
        plain = model if not cl else torch.nn.Module.to(
            getattr(torchvision.models, arch)(weights=None).eval(), memory_format=torch.channels_last
        )
        plain.load_state_dict(model.state_dict())
        xin = x.contiguous(memory_format=torch.channels_last) if cl else x

        def full() -> None:
            with torch.no_grad():
                plain(xin)

        full_ms = timed(full, repeats)
        with Probe(model, device="cpu", channels_last=cl) as probe:
            probe.capture(x, STAGES[arch][0])
            for stage in STAGES[arch]:
                def prefix(stage=stage) -> None:
                    probe.clear_cache()
                    probe.capture(x, stage)

                prefix_ms = timed(prefix, repeats)
                probe.capture(x, stage)
                cached_ms = timed(lambda stage=stage: probe.capture(x, stage), repeats)
                print(
                    f"{stage:<14}{layout:<15}{full_ms:>10.2f}{prefix_ms:>10.2f}"
                    f"{prefix_ms / full_ms:>8.2f}{cached_ms:>10.3f}"
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--arch", choices=sorted(STAGES), nargs="*", default=sorted(STAGES))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    for arch in args.arch:
        bench(arch, args.repeats)


if __name__ == "__main__":
    main()
