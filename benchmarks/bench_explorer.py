"""Explorer benchmark: kernel-side cost of one drag step, next to the bare forward and the tutorials' way.

Run:  python benchmarks/bench_explorer.py [--quick] [--steps N] [--models embedded,tinyvgg,resnet18]

For the embedded model, TinyVGG (../shared/data or $CNNWIDGETS_SHARED_DATA) and resnet18 at
224x224 (random weights: timing does not depend on them), on the CPU, it prints side by side per layer:

* ``prefix``    bare ``probe.capture`` of the layer for a new occluded input, uncached (as the
                drag step captures it);
* ``plain``     the same prefix as a user would run it in plain PyTorch: the user's own model
                (standard memory layout, no probe), in inference mode, stopped by a forward hook
                on the layer that raises;
* ``drag``      one drag step of the explorer as the kernel runs it while the mouse moves: new
                box -> occluded input -> prefix forward -> draft render -> JPEG encode
                (synchronous mode, class scores hidden), and ``drag/prefix``;
* ``final``     the same step at final quality (what the release of the mouse costs);
* ``full``      bare full forward, and ``drag+scores``: a drag step with class scores shown;
* ``tutorial``  the tutorials' way for one update: a full forward and a matplotlib figure with
                one subplot per channel, saved as PNG (median after one untimed figure, so that
                matplotlib's one-off set-up is not counted); and ``speedup`` = tutorial / drag;
* ``switch``    a channel switch (render only, no forward).

With ``--floor``, also a drag step whose render stage returns the last frame (everything
else as usual): how close to the bare prefix any kernel-side drawing could get.

Then the resident memory growth over N drag steps per model. Goals: drag <= 1.3x prefix;
speedup >= 50x. Medians of several repetitions; the machine's other load shows up as noise.
"""

from __future__ import annotations

import argparse
import gc
import io
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cnnwidgets.app import Explorer  # noqa: E402


def median_ms(fn, repeat: int) -> float:
    times = []
    for i in range(repeat):
        start = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def alternate(first, second, repeat: int) -> tuple[float, float]:
    """Median milliseconds of ``first`` and ``second``, timed in turns."""
    a, b = [], []
    for i in range(repeat):
        for fn, out in ((first, a), (second, b)):
            start = time.perf_counter()
            fn(i)
            out.append(time.perf_counter() - start)
    return 1000 * statistics.median(a), 1000 * statistics.median(b)


def rss_mb() -> float:
    """Resident memory of this process in MiB (psutil if installed, else /proc on Linux)."""
    try:
        import psutil

        return psutil.Process(os.getpid()).memory_info().rss / 2**20
    except ImportError:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


# ---------------------------------------------------------------------- models
def embedded():
    try:
        from cnnwidgets.zoo import load_default, sample_image
    except ImportError:
        return None, "cnnwidgets.zoo.load_default is not available in this checkout"
    bundle = load_default()
    return (bundle, sample_image(), None), None


def tinyvgg():
    data = Path(os.environ.get("CNNWIDGETS_SHARED_DATA", REPO.parent / "shared" / "data")) / "tinyvgg-cnn-explainer"
    if not data.is_dir():
        return None, f"TinyVGG data not found at {data}"
    photos = sorted((data / "images").glob("*_1.jpeg")) or sorted(data.glob("**/*.jpeg"))
    try:
        from cnnwidgets.zoo import load_tinyvgg

        bundle = load_tinyvgg(data / "tinyvgg_state_dict.pth")
        return (bundle, photos[0], None), None
    except ImportError:
        pass
    # until the zoo's loader is present: the documented architecture (4 valid 3x3 convs, 2 pools)
    model = nn.Sequential()
    for name, cin in (("conv_1_1", 3), ("conv_1_2", 10), ("conv_2_1", 10), ("conv_2_2", 10)):
        model.add_module(name, nn.Conv2d(cin, 10, 3))
        model.add_module(f"relu_{name[5:]}", nn.ReLU())
        if name.endswith("_2"):
            model.add_module(f"pool_{name[5]}", nn.MaxPool2d(2))
    model.add_module("flatten", nn.Flatten())
    model.add_module("output", nn.Linear(1690, 10))
    state = torch.load(data / "tinyvgg_state_dict.pth", weights_only=True, map_location="cpu")
    model.load_state_dict(state, strict=True)
    opts = {"input_size": (3, 64, 64), "preprocess": _unit_scale, "denormalize": _unit_unscale}
    return (model.eval(), photos[0], opts), None


def _unit_scale(pil):
    return torch.from_numpy(np.asarray(pil.convert("RGB").resize((64, 64)), dtype=np.float32) / 255).permute(2, 0, 1)


def _unit_unscale(x):
    return x.clamp(0, 1).permute(1, 2, 0).numpy()


def resnet18():
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    rng = np.random.default_rng(0)
    photo = (rng.random((224, 224, 3)) * 255).astype(np.uint8)
    demo = Path(os.environ.get("CNNWIDGETS_SHARED_DATA", REPO.parent / "shared" / "data")) / "images" / "demo"
    found = sorted(demo.glob("**/cat_dog.png"))
    return (model, found[0] if found else photo, {"input_size": (3, 224, 224)}), None


MODELS = {"embedded": embedded, "tinyvgg": tinyvgg, "resnet18": resnet18}


def bench_layers(ex: Explorer) -> list[str]:
    """Conv layers (and, for deep nets, block outputs) to time: at most 6, spread over the depth."""
    names = [n for n, i in ex.layers.items() if i.is_spatial and i.calls and (i.is_conv or "." not in n and not i.is_leaf)]
    convs = [n for n in names if ex.layers[n].is_conv]
    blocks = [n for n in names if not ex.layers[n].is_conv]
    chosen = convs if len(convs) <= 6 else [convs[0]] + blocks[:5]
    return chosen[:6]


def render_free(ex: Explorer, bare_prefix, move, repeat: int) -> tuple[float, float]:
    """Bare prefix vs a drag step whose render stage hands back the last frame drawn.

    Everything else of the step runs as usual (state, controller, prefix forward, showing the
    frame): the lower bound of a drag step for any way of drawing in the kernel.
    """
    controller_module = sys.modules[type(ex.controller).__module__]
    real = controller_module.render_frame
    drawn = ex._current()[0]

    def last_frame(*_args, **_kwargs):
        return drawn

    controller_module.render_frame = last_frame
    try:
        return alternate(bare_prefix, move, repeat)
    finally:
        controller_module.render_frame = real


# ---------------------------------------------------------------------- plain PyTorch prefix
class _Stop(Exception):
    """Raised by the hook that ends a plain prefix forward."""


def plain_prefix(user_model: nn.Module, layer: str):
    """``(run, remove)``: ``run(x)`` runs the user's model on x up to ``layer`` and stops there."""
    grabbed = []

    def stop(_module, _args, output):
        grabbed[:] = [output]
        raise _Stop

    handle = dict(user_model.named_modules())[layer].register_forward_hook(stop)

    def run(x: torch.Tensor) -> torch.Tensor:
        try:
            with torch.inference_mode():
                user_model(x)
        except _Stop:
            pass
        return grabbed.pop()

    return run, handle.remove


# ---------------------------------------------------------------------- the tutorials' way
def tutorial_update(model: nn.Module, x: torch.Tensor, layer: str) -> None:
    """Full forward with a hook, then one matplotlib subplot per channel, saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grabbed = {}
    handle = dict(model.named_modules())[layer].register_forward_hook(lambda m, a, o: grabbed.update(o=o.detach()))
    try:
        with torch.no_grad():
            model(x)
    finally:
        handle.remove()
    maps = grabbed["o"][0].numpy()
    n = maps.shape[0]
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols, rows))
    for i, ax in enumerate(np.atleast_1d(axes).ravel()):
        ax.axis("off")
        if i < n:
            ax.imshow(maps[i], cmap="viridis")
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)


# ---------------------------------------------------------------------- one model
def run_model(name: str, spec, args) -> list[dict]:
    model, image, opts = spec
    opts = dict(opts or {})
    ex = Explorer(model, image, samples={}, background=False, show_scores=False, device="cpu", **opts)
    rows = []
    try:
        h, w = ex._images[ex._image_id].size
        side = max(4, min(h, w) // 4)
        positions = [((7 * i) % (w - side + 1), (11 * i) % (h - side + 1)) for i in range(1, 4000)]
        counter = iter(range(10**9))
        bare_counter = iter(range(10**9))

        def move(_i):
            k = next(counter)
            x0, y0 = positions[k % len(positions)]
            ex.box = (x0, y0, side, side)

        for layer in bench_layers(ex):
            ex.show_scores = False
            ex.dragging = True
            ex.layer = layer
            move(0)
            prepared = ex._images[ex._image_id]
            probe = ex.probe

            def fresh_box():  # one pixel smaller than the explorer's box: never an input seen before
                k = next(bare_counter)
                return (positions[-k - 1][0], positions[-k - 1][1], side - 1, side - 1)

            def bare_prefix(_i):
                # as the explorer's own capture while dragging: channels first, in the layout
                # computed (no copy), and neither looked up in nor kept by the cache (an occluded
                # input is seen once)
                probe.capture(prepared.occluded(fresh_box(), ex.fill), [layer], cache=False, channels_first=True)

            def bare_full(_i):
                probe.logits(prepared.occluded(fresh_box(), ex.fill), cache=False)

            user_model = model.model if hasattr(model, "model") else model
            run_plain, unhook = plain_prefix(user_model, layer)

            def bare_plain(_i):
                run_plain(prepared.occluded(fresh_box(), ex.fill))

            move(0)
            # alternate the bare forward with the explorer step, so that load from elsewhere on the
            # machine hits both alike; the ratio of the medians is what the goal is about
            prefix_a, drag = alternate(bare_prefix, move, args.repeat)
            try:
                plain, drag_b = alternate(bare_plain, move, args.repeat)
            finally:
                unhook()
            if args.floor:
                floor_prefix, floor = render_free(ex, bare_prefix, move, args.repeat)
                print(f"  {name} {layer}: drag step without drawing and encoding {floor:.2f} ms, "
                      f"{floor / floor_prefix:.2f}x the bare prefix ({floor_prefix:.2f} ms)", flush=True)
            ex.dragging = False
            prefix_b, final = alternate(bare_prefix, move, args.repeat)
            prefix = statistics.median([prefix_a, prefix_b])
            channels = ex.layers[layer].output_shape[0]
            switch = median_ms(lambda i: setattr(ex, "channel", (i * 7 + 1) % channels), args.repeat)
            ex.show_scores = True
            ex.dragging = True
            move(0)
            full, scores = alternate(bare_full, move, args.repeat)
            ex.dragging = False
            if args.tutorial:
                x = prepared.occluded(ex.box, ex.fill)
                tutorial_update(user_model, x, layer)  # not timed: the first figure pays matplotlib's set-up
                tutorial = median_ms(lambda i: tutorial_update(user_model, x, layer), args.tutorial_repeat)
            else:
                tutorial = float("nan")
            shape = "x".join(str(s) for s in ex.layers[layer].output_shape)
            rows.append(dict(model=name, layer=layer, shape=shape, prefix=prefix, plain=plain,
                             plain_ratio=drag_b / plain, drag=drag, final=final,
                             full=full, scores=scores, tutorial=tutorial, switch=switch))
            print_row(rows[-1])
        # memory over many drag steps (scores shown, as a user would have it)
        ex.layer = bench_layers(ex)[len(bench_layers(ex)) // 2]
        ex.show_scores = True
        ex.dragging = True
        for _ in range(50):
            move(0)
        gc.collect()
        before = rss_mb()
        for _ in range(args.steps):
            move(0)
        gc.collect()
        after = rss_mb()
        print(f"  {name}: RSS {before:.0f} MB -> {after:.0f} MB over {args.steps} drag steps at {ex.layer} "
              f"(growth {after - before:+.1f} MB); stats {ex.stats}")
    finally:
        ex.close()
    return rows


HEADER = (f"{'model':9s} {'layer':16s} {'shape':>11s} {'prefix':>8s} {'drag':>8s} {'drag/pre':>8s} {'plain':>7s} "
          f"{'drag/pl':>7s} {'final':>8s} "
          f"{'full':>8s} {'drag+sc':>8s} {'tutorial':>9s} {'speedup':>8s} {'switch':>7s}")


def print_row(r: dict) -> None:
    speed = r["tutorial"] / r["drag"] if r["tutorial"] == r["tutorial"] else float("nan")
    print(f"{r['model']:9s} {r['layer'][:16]:16s} {r['shape']:>11s} {r['prefix']:8.2f} {r['drag']:8.2f} "
          f"{r['drag'] / r['prefix']:7.2f}x {r['plain']:7.2f} {r['plain_ratio']:6.2f}x {r['final']:8.2f} {r['full']:8.2f} {r['scores']:8.2f} "
          f"{r['tutorial']:9.1f} {speed:7.0f}x {r['switch']:7.2f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="embedded,tinyvgg,resnet18")
    parser.add_argument("--repeat", type=int, default=15, help="repetitions per timing (median)")
    parser.add_argument("--steps", type=int, default=1000, help="drag steps for the memory check")
    parser.add_argument("--tutorial-repeat", type=int, default=5)
    parser.add_argument("--no-tutorial", dest="tutorial", action="store_false")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions and steps")
    parser.add_argument("--floor", action="store_true",
                        help="also time a drag step with drawing and encoding taken out (its lower bound)")
    args = parser.parse_args()
    if args.quick:
        args.repeat, args.steps, args.tutorial_repeat = 5, 100, 1
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU; times in ms (median of {args.repeat})")
    print(HEADER)
    for name in args.models.split(","):
        spec, why = MODELS[name]()
        if spec is None:
            print(f"{name:9s} skipped: {why}")
            continue
        run_model(name, spec, args)
    print("prefix: bare probe.capture (new input); drag: explorer step while dragging (prefix + draft render +"
          " encode); plain: the user's model up to the layer in plain PyTorch (drag/pl: a drag step over it, timed"
          " in turns with it); final: same at release quality; full: bare full forward; drag+sc: drag step with class scores;"
          " tutorial: full forward + matplotlib subplot per channel + PNG; speedup: tutorial / drag;"
          " switch: channel change (render only)")


if __name__ == "__main__":
    main()
