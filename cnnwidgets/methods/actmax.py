"""Activation maximisation: synthesise an input that strongly activates a channel or a class.

Gradient ascent on the input image (Erhan, Bengio, Courville & Vincent 2009, "Visualizing
Higher-Layer Features of a Deep Network"; Simonyan, Vedaldi & Zisserman 2014 for class scores)::

    x* = argmax_x  E_T[f(T(x))],   x <- x + lr * Adam(grad_x f(T(x)))   (a new random T each step)

where ``f`` is a target (a channel's mean activation, a class logit ...). Unregularised ascent
finds high-frequency patterns that excite the unit but look like noise. As in Olah, Mordvintsev
& Schubert (2017), "Feature Visualization" (Distill), two things make results readable:

* **Parametrisation.** The image is not optimised pixel by pixel but through
  ``x = normalize(sigmoid(M @ irfft2(s(f) * c)))``: ``c`` are Fourier coefficients, scaled by
  ``s(f) = 1 / max(f, 1/max(H, W))**decay`` (``f`` in cycles per pixel) so that all spatial
  frequencies have about the same energy as in natural images (whose spectrum falls like
  ``1/f``), and ``M`` is the square root of a colour covariance of natural photos, so the
  optimised channels are decorrelated. (``parametrization="pixel"`` optimises pixels directly,
  optionally with a Gaussian blur of the parameters after every step, as in Yosinski et al.
  2015, "Understanding Neural Networks Through Deep Visualization".)
* **Transformation robustness.** Every step evaluates ``f`` on a randomly jittered, scaled and
  rotated copy ``T(x)``, so patterns that only work at one exact pixel alignment are not rewarded.

The ``sigmoid`` keeps the image in [0, 1]; ``normalize`` maps it to the model's input space with
the given ``mean`` and ``std``. Without them (and without a zoo bundle, which knows its model's),
``normalize`` does nothing: the image is optimised in unnormalised [0, 1] pixel space and the model
sees it as it is, which suits a model trained on such images but not one trained on normalised
ones (ImageNet models). Every result says what was assumed (:attr:`ActMaxResult.assumed`), the
image size included, and a bare ImageNet classifier (1000 outputs) given without ``mean``/``std``
warns (:class:`AssumedInputWarning`). The colour matrix ``M`` is the symmetric square root of the RGB
covariance of pixels in [0, 1], estimated on a sample of 62 ImageNet photos (one per class, each
resized to 128x128), divided by its largest column norm.
"""

from __future__ import annotations

import contextlib
import math
import threading
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from cnnwidgets.core.images import IMAGENET_CLASSES, IMAGENET_MEAN, IMAGENET_STD
from cnnwidgets.core.probe import (
    FALLBACK_CHANNELS, MAX_TENSOR_BYTES, Probe, bundle_input_normalization, check_input_size, class_count,
    probe_scope, trained_input_size,
)
from cnnwidgets.core.targets import (
    SizeTypeError, Target, as_callback, as_cancel_check, as_count, as_flag, as_real, as_seed, int_pair,
    resolve_target, target_score,
)
from cnnwidgets.methods._quiet import QuietSwitch
from cnnwidgets.methods.gradients import check_target_layer, gradients_enabled, hook_activations, require_graph

__all__ = [
    "ActMaxResult", "AssumedInputWarning", "SaturatedImageWarning",
    "ZeroGradientWarning", "maximize_activation", "zero_gradient_quietly",
]

_COLOR_SQRT_COV = torch.tensor(
    [
        [0.2189, 0.1266, 0.0967],
        [0.1266, 0.1958, 0.1274],
        [0.0967, 0.1274, 0.2312],
    ]
)
_COLOR_MATRIX = _COLOR_SQRT_COV / _COLOR_SQRT_COV.norm(dim=0).max()
_PARAMETRIZATIONS = ("fourier", "pixel")


class ZeroGradientWarning(RuntimeWarning):
    """The target's gradient was zero at every step of :func:`maximize_activation`: the image never
    changed, and the result is the starting image. Also when a run that was not cancelled ends with
    the target no higher than on the starting image (a channel that is never active, whose image
    the redirected ReLUs moved without switching it on): the image shows no feature of the target."""


class SaturatedImageWarning(RuntimeWarning):
    """The image :func:`maximize_activation` made is saturated: most of its values are at the ends
    of [0, 1] (within 1e-6 of 0 or 1), a two-colour picture rather than a pattern. The steps were too
    large for the image parameters (an ``lr`` far above the default): try a smaller ``lr``."""


class AssumedInputWarning(UserWarning):
    """:func:`maximize_activation` was given a bare ImageNet classifier (an ``nn.Module`` with
    :data:`IMAGENET_CLASSES` outputs; no zoo bundle, no probe) and neither ``mean`` nor ``std``: it
    optimised the image in unnormalised [0, 1] pixel space and fed it to the model as it is, although
    such models are trained on normalised images. The message also says the image size when that was
    assumed too, and how to give both. Passing ``mean`` and ``std`` (``mean=0, std=1`` says that [0, 1]
    is right) silences it. For other models the result's ``assumed`` says the same, quietly."""


_SATURATED_EPS = 1e-6
"""A value of the [0, 1] image within this of 0 or 1 counts as saturated (its logit is beyond about 13.8)."""
_SATURATED_SHARE = 0.9
"""The share of saturated values from which :func:`maximize_activation` warns (the default ``lr``
gives none on the package's test models; ``lr=1`` about a third, ``lr=5`` over 90 %)."""
_MAX_ROTATE = 360.0
"""The largest ``rotate`` (degrees) :func:`maximize_activation` takes: a full turn either way."""


# Per thread: whether maximize_activation leaves its ZeroGradientWarning and SaturatedImageWarning out
# (see zero_gradient_quietly).
_ZERO_QUIET = QuietSwitch()


def zero_gradient_quietly() -> contextlib.AbstractContextManager[list[Warning]]:
    """Within this block, on this thread, :func:`maximize_activation` issues no
    :class:`ZeroGradientWarning` and no :class:`SaturatedImageWarning`; the block yields a list that
    receives the warnings left out.
    For callers that say so themselves, as the activation-maximisation view does in its status line."""
    return _ZERO_QUIET.quietly()


@dataclass(frozen=True)
class ActMaxResult:
    """The outcome of :func:`maximize_activation`.

    Attributes:
        image: the synthesised input in the model's input space (normalised), (1, C, H, W), CPU.
        rgb: the same image before normalisation, float32 (H, W, C) in [0, 1], ready to show.
        trace: float64 (steps,), the objective at every step (on the transformed image the
            step optimised).
        activation: the target's value on the final image (untransformed).
        initial_activation: the target's value on the initial image (untransformed).
        steps: number of steps done (fewer than requested when cancelled).
        cancelled: whether ``cancel`` stopped the run early.
        seed: the seed used.
        input_size: the (C, H, W) of the image.
        mean, std: the per-channel normalisation applied, one float per channel: the model saw
            ``(rgb - mean) / std``; 0 and 1 when none was given (nor a bundle's).
        assumed: what the run assumed about the model's input, in words (the image size when
            neither ``size`` nor ``input_size`` nor a bundle gave it; the input space when neither
            ``mean``/``std`` nor a bundle gave it), with how to give it instead; ``""`` when
            nothing was assumed.
    """

    image: torch.Tensor
    rgb: np.ndarray
    trace: np.ndarray
    activation: float
    initial_activation: float
    steps: int
    cancelled: bool
    seed: int
    input_size: tuple[int, int, int] = (0, 0, 0)
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    assumed: str = ""


class _FourierImage(nn.Module):
    """x = sigmoid(M @ irfft2(s * c)): decorrelated, 1/f-scaled image parametrisation."""

    def __init__(self, channels: int, height: int, width: int, *, decay: float, sd: float,
                 decorrelate: bool, generator: torch.Generator) -> None:
        super().__init__()
        fy = torch.fft.fftfreq(height)[:, None]
        fx = torch.fft.rfftfreq(width)[None, :]
        freq = torch.sqrt(fx**2 + fy**2)
        scale = 1.0 / freq.clamp(min=1.0 / max(height, width)) ** decay
        scale = scale / scale.pow(2).mean().sqrt()  # unit RMS: a step means the same at any size
        self.size = (height, width)
        self.register_buffer("scale", scale)
        shape = (channels, height, width // 2 + 1, 2)
        self.coefficients = nn.Parameter(torch.randn(shape, generator=generator) * sd)
        self.register_buffer("color", _color_matrix(channels, decorrelate))

    def forward(self) -> torch.Tensor:
        spectrum = torch.view_as_complex(self.coefficients) * self.scale
        linear = torch.fft.irfft2(spectrum, s=self.size, norm="ortho")
        return torch.sigmoid(torch.einsum("ij,jhw->ihw", self.color, linear))[None]


class _PixelImage(nn.Module):
    """x = sigmoid(M @ p): one parameter per pixel and channel."""

    def __init__(self, channels: int, height: int, width: int, *, sd: float, decorrelate: bool,
                 generator: torch.Generator) -> None:
        super().__init__()
        self.pixels = nn.Parameter(torch.randn((channels, height, width), generator=generator) * sd)
        self.register_buffer("color", _color_matrix(channels, decorrelate))

    def forward(self) -> torch.Tensor:
        return torch.sigmoid(torch.einsum("ij,jhw->ihw", self.color, self.pixels))[None]

    @torch.no_grad()
    def blur_(self, sigma: float) -> None:
        """Separable Gaussian blur with reflected borders; the kernel is cut at 2 sigma and, on
        an image narrower than that, at the image's side (reflection needs a pad below it)."""
        c, height, width = self.pixels.shape

        def kernel(side: int) -> tuple[torch.Tensor, int]:
            radius = min(max(1, math.ceil(2 * sigma)), side - 1)
            offsets = torch.arange(-radius, radius + 1, dtype=self.pixels.dtype, device=self.pixels.device)
            weights = torch.exp(-(offsets**2) / (2 * sigma**2))
            return weights / weights.sum(), radius

        x = self.pixels[None]
        across, rx = kernel(width)
        if rx > 0:
            rows = across.view(1, 1, 1, -1).repeat(c, 1, 1, 1)
            x = F.conv2d(F.pad(x, (rx, rx, 0, 0), mode="reflect"), rows, groups=c)
        down, ry = kernel(height)
        if ry > 0:
            cols = down.view(1, 1, -1, 1).repeat(c, 1, 1, 1)
            x = F.conv2d(F.pad(x, (0, 0, ry, ry), mode="reflect"), cols, groups=c)
        self.pixels.copy_(x[0])


def _color_matrix(channels: int, decorrelate: bool) -> torch.Tensor:
    if decorrelate and channels == 3:
        return _COLOR_MATRIX.clone()
    return torch.eye(channels)


def _random_transform(x: torch.Tensor, generator: torch.Generator, jitter: int, scale: float,
                      rotate: float) -> torch.Tensor:
    """Shift by up to ``jitter`` px, zoom by up to ``scale``, rotate by up to ``rotate`` degrees."""
    if jitter == 0 and scale == 0 and rotate == 0:
        return x
    u = torch.rand(4, generator=generator, dtype=torch.float64).tolist()
    height, width = x.shape[-2:]
    dx = round((2 * u[0] - 1) * jitter)
    dy = round((2 * u[1] - 1) * jitter)
    zoom = 1.0 + (2 * u[2] - 1) * scale
    angle = math.radians((2 * u[3] - 1) * rotate)
    cos, sin = math.cos(angle) / zoom, math.sin(angle) / zoom
    theta = torch.tensor(
        [[cos, -sin * height / width, 2.0 * dx / width], [sin * width / height, cos, 2.0 * dy / height]],
        dtype=x.dtype, device=x.device,
    )[None]
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    if x.device.type == "mps":
        # sampled on the CPU (one small image per step): older PyTorch releases that cnnwidgets
        # supports have no grid_sample backward pass on MPS, and the optimisation differentiates
        # through this transform
        return F.grid_sample(x.cpu(), grid.cpu(), mode="bilinear", padding_mode="reflection",
                             align_corners=False).to(x.device)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


class _RedirectedReLU(torch.autograd.Function):
    """ReLU whose backward also lets through gradient that would raise a switched-off unit."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return grad * ((x > 0) | (grad > 0)).to(grad.dtype)


class _RedirectedHardtanh(torch.autograd.Function):
    """``clamp(x, low, high)`` (``nn.Hardtanh``, ``nn.ReLU6``) whose backward also lets through
    gradient that would bring a clamped unit back into ``(low, high)``: up from ``low``, down from
    ``high``."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, low: float, high: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.low, ctx.high = low, high
        return x.clamp(min=low, max=high)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (x,) = ctx.saved_tensors
        inside = (x > ctx.low) & (x < ctx.high)
        back_in = ((x <= ctx.low) & (grad > 0)) | ((x >= ctx.high) & (grad < 0))
        return grad * (inside | back_in).to(grad.dtype), None, None


_REDIRECTED = (nn.ReLU, nn.Hardtanh)
"""The activation modules :func:`_redirect_relus` redirects (``nn.ReLU6`` is a ``nn.Hardtanh``)."""


def _redirect_relus(model: nn.Module, handles: list[torch.utils.hooks.RemovableHandle]) -> None:
    """Make every ``nn.ReLU`` of ``model`` (a private copy) return a redirected ReLU, and every
    ``nn.Hardtanh`` (``nn.ReLU6`` included) a redirected clamp.

    The forward value is unchanged; the hooks run before any other forward hook, so captured
    outputs carry the redirected gradient too. They act only in the calling thread, so another
    thread using the same probe meanwhile (a saliency map in an explorer) gets true gradients.

    Args:
        model: the private copy to hook.
        handles: each handle is appended to it as soon as its hook is registered, so a caller
            that made the list before its ``try`` removes every hook, also when an interrupt
            stops the registration half-way.
    """
    owner = threading.get_ident()

    def hook(module: nn.Module, args: tuple, output: Any) -> Any:
        if threading.get_ident() != owner:
            return None
        if args and isinstance(args[0], torch.Tensor) and torch.is_grad_enabled():
            if isinstance(module, nn.Hardtanh):
                return _RedirectedHardtanh.apply(args[0], float(module.min_val), float(module.max_val))
            return _RedirectedReLU.apply(args[0])
        return None

    for module in model.modules():
        if isinstance(module, _REDIRECTED):
            handles.append(module.register_forward_hook(hook, prepend=True))


def _zero_gradient_message(steps: int, value: float, redirect_steps: int, ran: dict[str, int],
                           redirected: set[str]) -> str:
    """The :class:`ZeroGradientWarning` of a run whose gradient was zero at all of its ``steps``;
    ``ran`` counts the activation modules on the way to the target per class, ``redirected`` names
    the classes of the model's modules that the redirect acts on."""
    if not redirected & set(ran):
        listed = ", ".join(f"{count} {kind}" for kind, count in ran.items())
        why = ("The redirect that lets gradient reach switched-off units acts only on nn.ReLU and nn.ReLU6 / "
               "nn.Hardtanh modules, and none ran on the way to the target"
               + (f" (the activation modules that ran: {listed})" if listed else "")
               + "; ReLUs applied as functions (F.relu) are not redirected either.")
    elif redirect_steps == 0:
        why = ("redirect_steps=0 turned off the redirect that lets gradient reach switched-off units of the "
               "model's nn.ReLU and nn.ReLU6 / nn.Hardtanh modules; leave it at its default.")
    else:
        others = [kind for kind in ran if kind not in redirected]
        why = ("The redirect that lets gradient reach switched-off units ran at the model's nn.ReLU and "
               "nn.ReLU6 / nn.Hardtanh modules without effect: the gradient is stopped elsewhere, "
               + (f"by an activation it does not redirect ({', '.join(others)}), " if others else "")
               + "by a ReLU applied as a function (F.relu), which it cannot reach, or by weights of zero.")
    times = "the single step" if steps == 1 else f"every one of the {steps} steps"
    return (f"maximize_activation: the target's gradient was zero at {times}, so the image never changed: "
            f"the result is the starting image (the target is {value:.3g} on it). The target is flat "
            "around every image tried, usually because the unit is switched off there by an activation that "
            f"passes no gradient where it clips. {why} Try another channel or seed, a larger init_sd (a more "
            "varied start), or a target on the layer before the activation (its input is not clipped).")


def _no_rise_message(steps: int, initial: float, final: float, trace: np.ndarray) -> str:
    """The :class:`ZeroGradientWarning` of a run of ``steps`` steps whose image moved but whose target
    ended at ``final``, no higher than its ``initial`` value (``trace``: the objective at every step)."""
    never = final <= 0 and initial <= 0 and float(trace.max()) <= 0
    values = (f"it is {initial:.3g} on the starting image, {final:.3g} at the end"
              + (f", and never above 0 in any of the {steps} steps" if never else ""))
    if never:
        why = ("A unit that is never above 0 is switched off on every image tried: its activation's input stays "
               "below 0 (a large negative bias, a dead channel; dead_channels finds such channels), and the "
               "redirected ReLUs moved the image without switching it on. Try another channel, or a target on the "
               "layer before the activation (its input is not clipped, so it can rise).")
    else:
        why = ("The ascent did not get anywhere: try more steps, another lr or seed, or a larger init_sd (a more "
               "varied start), or another channel.")
    return (f"maximize_activation: the target did not rise above its starting value ({values}), so the image "
            f"shows no feature of the target: it is what the steps made of the starting image. {why}")


class _AdamAscent:
    """Adam (Kingma & Ba 2015) stepping *up* the gradient, on our own leaf tensors only.

    Written out (a dozen lines) rather than ``torch.optim.Adam``, whose first construction
    imports ``torch._dynamo`` and costs seconds.

    Adam's step does not depend on the gradient's scale, but for its ``eps``, which keeps
    coordinates whose gradient is ~0 still. Here ``eps`` is relative: times the largest RMS
    of a leaf's gradient seen so far, so a target scaled by 1e-9 (or the tiny gradients of an
    untrained network) gives the same ascent as the unscaled one instead of an image that
    barely moves.
    """

    def __init__(self, leaves: list[torch.Tensor], lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8) -> None:
        self.leaves, self.lr, self.betas, self.eps, self.t = leaves, lr, betas, eps, 0
        self.m = [torch.zeros_like(p) for p in leaves]
        self.v = [torch.zeros_like(p) for p in leaves]
        self.scale = [0.0 for _ in leaves]  # the largest gradient RMS of each leaf so far

    @torch.no_grad()
    def step(self, grads: Sequence[torch.Tensor]) -> None:
        self.t += 1
        b1, b2 = self.betas
        for i, (p, g, m, v) in enumerate(zip(self.leaves, grads, self.m, self.v)):
            self.scale[i] = max(self.scale[i], float(g.float().pow(2).mean().sqrt()))
            eps = self.eps * self.scale[i] + torch.finfo(torch.float32).tiny  # never 0 / 0
            m.mul_(b1).add_(g, alpha=1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            m_hat = m / (1 - b1**self.t)
            v_hat = v / (1 - b2**self.t)
            p.add_(self.lr * m_hat / (v_hat.sqrt() + eps))


def _channel_stats(values: Sequence[float] | float | None, channels: int, default: float, what: str) -> torch.Tensor:
    if values is None:
        return torch.full((channels,), default)
    try:
        t = torch.as_tensor(values, dtype=torch.float32).flatten()
    except (TypeError, ValueError, RuntimeError) as exc:
        raise TypeError(f"{what} must be a number or one number per input channel, got {values!r}") from exc
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{what} must hold finite numbers, got {t.tolist()}")
    if t.numel() == 1:
        t = t.repeat(channels)
    if t.numel() != channels:
        raise ValueError(f"{what} must have one value per input channel ({channels}), got {t.numel()}")
    if what == "std" and bool((t <= 0).any()):
        raise ValueError(f"std must be positive, got {t.tolist()}")
    return t


def _assumed_size_text(size: tuple[int, int, int], origin: str) -> str:
    """The sentence saying where the image size ``size`` (C, H, W) came from when no size was given:
    ``origin`` ``"probe"`` (the probe's input size), ``"trained"`` (the size the model says it was
    trained at) or ``"assumed"`` (the first of the usual sizes the model runs on)."""
    text = "x".join(str(v) for v in size)
    how = "give size=H or (H, W), or input_size=(C, H, W), for another"
    if origin == "probe":
        return f"the image is {text}, the probe's input size; {how}."
    if origin == "trained":
        return f"the image is {text}, the size the model says it was trained at; {how}."
    return (f"the image size {text} was assumed (the model came without one: no size, input_size or zoo bundle), "
            f"the first of the usual sizes the model runs on; {how}.")


def _assumed_space_text(channels: int) -> str:
    """The sentence saying that a run with no normalisation optimised in [0, 1] pixel space, and how to
    give the model's normalisation."""
    imagenet = (f" (ImageNet models: mean={IMAGENET_MEAN}, std={IMAGENET_STD})"
                if channels == 3 else "")
    return ("no normalisation was given (neither mean and std nor a zoo bundle), so the image was optimised in "
            "unnormalised [0, 1] pixel space and the model saw it as it is (mean 0, std 1): for a model trained on "
            f"normalised images, pass its mean= and std={imagenet} or its zoo bundle; mean=0, std=1 says that "
            "[0, 1] is right.")


def _image_size(size: Any) -> tuple[int, int]:
    """``size`` (``H`` or ``(H, W)``, ints >= 2, each as :func:`~cnnwidgets.core.targets.as_index`
    takes one) as (H, W).

    Raises:
        SizeTypeError: (a ``TypeError`` and a ``ValueError``) for a size of another type.
        ValueError: for an entry below 2.
    """
    accepted = "an int H or a pair (H, W) of ints >= 2; for the number of channels too, give input_size=(C, H, W)"
    try:
        height, width = int_pair(size, "size", accepted)
    except SizeTypeError:
        raise SizeTypeError(f"size must be {accepted} (each a Python int, a numpy integer or a 0-d integer tensor); "
                            f"got {size!r}") from None
    if min(height, width) < 2:
        raise ValueError(f"size must be {accepted}; got {size!r}")
    needed = 4 * max(FALLBACK_CHANNELS) * height * width  # bytes of one float32 RGB image
    if needed > MAX_TENSOR_BYTES:
        raise ValueError(f"size {(height, width)} is too large: an image of that size would take about "
                         f"2**{needed.bit_length() - 1} bytes, more than a tensor can hold (2**63 - 1); "
                         "give the size the model takes, such as 224")
    return height, width


def fit_channels(probe: Probe, height: int, width: int) -> int:
    """Describe ``probe`` at an image size of ``height`` x ``width`` and return the channel count
    the model runs on there: the probe's guess first, then RGB and gray, as the probe tries them.

    Raises:
        RuntimeError: if the model runs on none (the message lists the sizes tried).
    """
    guesses = dict.fromkeys((probe.input_size[0], *FALLBACK_CHANNELS))
    return probe.fit_input_size((c, height, width) for c in guesses)[0]


def bundle_normalization(model: object) -> tuple[Any, Any]:
    """``(mean, std)`` of a bundle (an object with an ``nn.Module`` in ``.model``, see
    :func:`~cnnwidgets.core.probe.unwrap_model`) or of a probe made from one (its
    :attr:`~cnnwidgets.core.probe.Probe.normalization`), or ``(None, None)`` for a model or a
    probe made from a model."""
    normalization = _given_normalization(model)
    return (None, None) if normalization is None else normalization


def _given_normalization(model: object) -> tuple[Any, Any] | None:
    """The normalisation that came with ``model`` (a bundle's, or that of the bundle a probe was
    made from; ``(None, None)`` for a bundle without one), or None where nothing says it."""
    if isinstance(model, Probe):
        return model.normalization
    return bundle_input_normalization(model)


def _nonfinite_gradient_message(step: int, value: float, target: Any) -> str:
    """What a run whose gradient is NaN or infinite at ``step`` is told (``value``: the target's value there)."""
    layer = getattr(target, "layer", None)
    where = "its output" if layer is None else f"layer {layer!r}"
    return (f"maximize_activation: at step {step} the gradient of the target (value {value:.4g}) with respect to "
            f"the image is not finite (NaN or inf), so the image cannot be changed along it: the model computes "
            f"non-finite values on the way to {where} or back (are its weights finite? has training diverged?)")


def maximize_activation(
    model_or_probe: nn.Module | Probe,
    target: Target | int,
    *,
    steps: int = 256,
    lr: float = 0.05,
    size: int | Sequence[int] | None = None,
    input_size: Sequence[int] | None = None,
    seed: int = 0,
    mean: Sequence[float] | float | None = None,
    std: Sequence[float] | float | None = None,
    parametrization: str = "fourier",
    decorrelate: bool = True,
    decay: float = 1.0,
    blur: float = 0.0,
    jitter: int | None = None,
    scale: float = 0.05,
    rotate: float = 5.0,
    init_sd: float = 0.01,
    redirect_steps: int = 16,
    progress: bool = True,
    callback: Callable[[int, float, torch.Tensor], None] | None = None,
    cancel: Callable[[], bool] | Any | None = None,
) -> ActMaxResult:
    """Synthesise an image that maximises ``target`` by gradient ascent on the input.

    Formula: ``x* = argmax_x E_T[f(T(x))]`` with ``x = normalize(sigmoid(M @ irfft2(s(f) * c)))``,
    ``s(f) = 1 / max(f, 1/max(H, W))**decay``, ``T`` a random jitter/scale/rotation per step and
    ``f`` the target, optimised with Adam over ``c`` (Erhan et al. 2009; Olah et al. 2017,
    "Feature Visualization", Distill). See the module docstring for details.

    Only the image parameters receive gradients (``torch.autograd.grad``); the model is run
    through the probe's private copy, prefix-only up to the target's layer. Gradients are
    enabled for the run whatever the caller's mode (``torch.no_grad()``,
    ``torch.inference_mode()``), which is unchanged on return. All randomness
    (initialisation and transforms) comes from a private generator seeded with ``seed``, so the
    same call gives the same image (bit-identical on CPU) and the global RNG is not touched.

    Args:
        model_or_probe: a model or a :class:`~cnnwidgets.Probe` (a model is inspected through a
            temporary probe, so it is never changed).
        target: what to maximise: ``ChannelActivation(layer, channel)`` (default reduction: the
            mean over the map), a class index or ``ClassLogit``, or any callable (a function of the
            model's output, or one with a ``layer`` attribute; see :func:`~cnnwidgets.core.targets.resolve_target`).
        steps: number of ascent steps.
        lr: Adam learning rate for the image parameters (> 0). Each step moves a parameter by about
            ``lr``, so with a much larger rate (``lr=5`` for 256 steps, ``lr=1e30``) the image ends
            saturated, nearly every value 0 or 1: then a :class:`SaturatedImageWarning` says so (the
            check costs one look at the final image).
        size: image size, ``H`` or ``(H, W)`` (ints >= 2: Python ints, numpy integers or 0-d integer
            tensors), with the first number of channels the
            model runs on at that size: the probe's (that of the model's first convolution, 3 for
            a model without one, unless a probe created with another ``input_size`` is passed),
            then RGB and gray (see :func:`fit_channels`). Default: the probe's input size (its last
            input, else the first size the model runs on, see
            :func:`~cnnwidgets.core.probe.default_input_sizes`).
        input_size: the full image size (C, H, W), for a model whose channels or size cannot be
            guessed (a grayscale MLP: ``input_size=(1, 28, 28)``). Give ``size`` or ``input_size``,
            not both.
        seed: seed of the private random generator, an int in [0, 2**64) (a Python int, a numpy
            integer or a 0-d integer tensor, as for every count here).
        mean, std: the normalisation the model expects (per channel, or one value): the model sees
            ``(x - mean) / std`` for an image ``x`` in [0, 1]. Default: a bundle's own ``mean`` and
            ``std`` (a zoo bundle, such as :func:`cnnwidgets.zoo.load_default`, says how its model
            was trained), also for a probe made from a bundle (``Probe(bundle)`` keeps them), else
            0 and 1 (a model fed [0, 1] images): the result's ``assumed`` then says so, and a bare
            ImageNet classifier warns (:class:`AssumedInputWarning`). For ImageNet models use
            (0.485, 0.456, 0.406) and (0.229, 0.224, 0.225).
        parametrization: ``"fourier"`` (1/f-scaled Fourier coefficients) or ``"pixel"``.
        decorrelate: optimise in decorrelated colour space (3-channel inputs only).
        decay: exponent of the 1/f scaling, >= 0 (``"fourier"``; 0 = flat spectrum). 1 matches natural
            images; small low-resolution nets (TinyVGG at 64x64) give smoother, more readable
            images with 1.5-2, where 1 lets 2-pixel stripe patterns dominate.
        blur: with ``"pixel"``, the sigma (in pixels) of a Gaussian blur applied to the parameters
            after every step (0 = none).
        jitter: largest random shift in pixels per step; default ``max(1, min(H, W) // 16)``. It
            must be smaller than the image's smaller side (a shift of the whole image leaves only
            reflected borders): a larger one is refused.
        scale: largest relative random zoom per step (0.05 = +-5 %).
        rotate: largest random rotation per step in degrees, in [0, 360] (each step rotates by an
            angle drawn from ``[-rotate, rotate]``; 180 already reaches every orientation). A larger
            value is refused, not taken modulo 360, which would turn 370 into a smaller range.
        init_sd: standard deviation of the random initial parameters (small: a gray image).
        redirect_steps: during the first ``redirect_steps`` steps, and later whenever the
            gradient vanished in the previous step, every ``nn.ReLU`` module passes gradient back
            also where it is switched off, if that gradient would switch it on ("redirected
            ReLU"; forward values stay exact), and every ``nn.Hardtanh`` module (``nn.ReLU6``
            included) also where it clamps, if that gradient would bring the value back
            into its range. Without it a channel that is zero on the initial gray image has zero
            gradient and never moves. 0 turns it off. Only these modules are redirected: ReLUs
            called as functions (``F.relu``) and other activations that pass no gradient in
            part of their range (``nn.Hardswish``, ``nn.Hardsigmoid``, ...) keep their true
            gradient.
        progress: show a progress bar (``tqdm.auto``); True or False.
        callback: called after every step as ``callback(step, value, rgb)`` with the 1-based step,
            the objective and the current image as a detached (C, H, W) tensor in [0, 1].
        cancel: an object with ``is_set()`` (``threading.Event``) or a callable returning True to
            stop early; checked before every step. The result then has ``cancelled=True``.

    Returns:
        An :class:`ActMaxResult` (input-space image, [0, 1] image, objective trace, the target's
        value before and after).

    Raises:
        KeyError: for an unknown target layer (with suggestions).
        IndexError: for a channel or class index out of range.
        TypeError: for an unsupported target.
        ValueError: for bad sizes, steps, mean/std or option values (numbers must be finite; a
            ``jitter`` not smaller than the image's smaller side, a ``rotate`` above 360), or a
            target layer whose feature map is empty at the image's size (see
            :func:`~cnnwidgets.core.layers.check_map_not_empty`).
        TypeError: for a count (``steps``, ``redirect_steps``, ``jitter``, ``seed``) that is not an
            int (a Python int, a numpy integer or a 0-d integer tensor; a bool or a float is
            refused), an option that is not a number, a ``decorrelate`` or ``progress`` that is
            not True or False, or a ``callback`` / ``cancel`` of the wrong kind; a ``size`` that is
            not such an int or a pair of them (a
            :class:`~cnnwidgets.core.targets.SizeTypeError`, which is a ``ValueError`` too).
        ValueError: for a step whose gradient is not finite (NaN or inf), as with NaN weights on the
            way to the target.
        RuntimeError: if the model fails on the image (the message says how to give its size).

    Warns:
        ZeroGradientWarning: if the target's gradient was zero at every step done: the image never
            changed and the result is the starting image (a unit that is switched off on every
            image tried, behind an activation the redirect does not reach). The message names the
            activation modules on the way to the target and what to try instead. Also when a run
            that was not cancelled moved the image but ended with the target no higher than on the
            starting image (a channel that is never above 0, as one never active behind a ReLU): the
            image shows no feature of the target.
        SaturatedImageWarning: if most values of the final image (90 %) are within 1e-6 of 0 or 1:
            a two-colour image from steps too large for it; the message suggests a smaller ``lr``.
        AssumedInputWarning: for a bare ImageNet classifier (an ``nn.Module``, not a bundle or a
            probe, with :data:`IMAGENET_CLASSES` outputs) given neither ``mean`` nor ``std``: the
            image was optimised in unnormalised [0, 1] pixel space, not in the normalised space
            such models are trained in (one extra forward pass finds the number of outputs). The
            message says so, names the image size (and whether it was assumed too) and how to give
            both. A model with other outputs may well take [0, 1] images, and a probe is taken as
            set up by code that says the input space itself (the activation-maximisation view does,
            in its status line): the result's ``assumed`` says what was assumed in every case.
    """
    target = resolve_target(target)
    if parametrization not in _PARAMETRIZATIONS:
        raise ValueError(f"parametrization must be one of {_PARAMETRIZATIONS}, got {parametrization!r}")
    seed = as_seed(seed)
    decorrelate = as_flag(decorrelate, "decorrelate")
    progress = as_flag(progress, "progress")
    stop_now = as_cancel_check(cancel)
    as_callback(callback, "callback", "as callback(step, value, rgb)")
    steps = as_count(steps, "steps", minimum=0)
    redirect_steps = as_count(redirect_steps, "redirect_steps", minimum=0)
    if jitter is not None:
        jitter = as_count(jitter, "jitter", minimum=0)
    lr = as_real(lr, "lr", "> 0", lambda v: v > 0)
    scale = as_real(scale, "scale", "in [0, 1)", lambda v: 0 <= v < 1)
    rotate = as_real(rotate, "rotate", f"in [0, {_MAX_ROTATE:g}] (degrees; 180 reaches every orientation)",
                     lambda v: 0 <= v <= _MAX_ROTATE)
    init_sd = as_real(init_sd, "init_sd", ">= 0", lambda v: v >= 0)
    decay = as_real(decay, "decay", ">= 0", lambda v: v >= 0)
    blur = as_real(blur, "blur", ">= 0", lambda v: v >= 0)
    if blur > 0 and parametrization != "pixel":
        raise ValueError(f"blur is used with parametrization='pixel' only, got blur={blur}")
    if size is not None and input_size is not None:
        raise ValueError("give size (H or (H, W)) or input_size ((C, H, W)), not both")
    if size is not None:
        height, width = _image_size(size)
    if input_size is not None:
        input_size = check_input_size(input_size)
        if min(input_size[1:]) < 2:
            raise ValueError(f"input_size must be at least 2x2 pixels, got {input_size}")
    is_bundle = not isinstance(model_or_probe, (nn.Module, Probe))
    # [0, 1] pixels, fed as they are, with nothing (no mean and std, no bundle) saying so
    space_assumed = mean is None and std is None and _given_normalization(model_or_probe) is None
    if mean is None and std is None:
        mean, std = bundle_normalization(model_or_probe)
    # where the size comes from when none is given: a bundle's, a probe's, or one found for a bare model
    size_origin = ("" if size is not None or input_size is not None or is_bundle
                   else "probe" if isinstance(model_or_probe, Probe) else "assumed")
    # a temporary probe is described at input_size; a probe given is used as it is (the image below has that size)
    own_size = None if isinstance(model_or_probe, Probe) else input_size
    with gradients_enabled(), probe_scope(model_or_probe, input_size=own_size) as probe:
        if input_size is not None:
            channels, height, width = input_size
        else:
            if size is None:
                probe.layers  # without a size given, finds one the model runs on (and its channels)
                height, width = probe.input_size[1:]
                channels = probe.input_size[0]
                if size_origin == "assumed" and trained_input_size(probe.model) == tuple(probe.input_size):
                    size_origin = "trained"
            else:
                channels = fit_channels(probe, height, width)
        if jitter is None:
            jitter = max(1, min(height, width) // 16)
        elif jitter >= min(height, width):
            raise ValueError(
                f"jitter must be smaller than the image's smaller side (a shift in pixels, at most "
                f"{min(height, width) - 1} for a {height}x{width} image), got {jitter}"
            )
        device = probe.device
        mean_t = _channel_stats(mean, channels, 0.0, "mean").view(1, -1, 1, 1).to(device)
        std_t = _channel_stats(std, channels, 1.0, "std").view(1, -1, 1, 1).to(device)

        generator = torch.Generator(device="cpu").manual_seed(seed)
        if parametrization == "fourier":
            param = _FourierImage(channels, height, width, decay=decay, sd=init_sd,
                                  decorrelate=decorrelate, generator=generator)
        else:
            param = _PixelImage(channels, height, width, sd=init_sd, decorrelate=decorrelate, generator=generator)
        param = param.to(device)
        leaves = list(param.parameters())
        optimizer = _AdamAscent(leaves, lr)

        def clean_value() -> float:
            with torch.no_grad():
                x = (param() - mean_t) / std_t
            return float(target_score(probe, x, target).mean())

        try:
            size = (channels, height, width)
            if tuple(probe.input_size) != size:
                probe.describe(size)
            # a channel of a map that is empty at this size has no value to raise: say so, not NaN
            check_target_layer(probe, target)
            initial = clean_value()  # also validates the target before any work
        except RuntimeError as exc:
            if input_size is not None or probe.closed:
                raise
            raise RuntimeError(
                f"{exc}; the image was {channels}x{height}x{width} (C x H x W): if the model expects another "
                "number of channels or size, give input_size=(C, H, W)"
            ) from exc
        assumed = " ".join(
            text[0].upper() + text[1:] for text in (
                _assumed_space_text(channels) if space_assumed else "",
                _assumed_size_text((channels, height, width), size_origin) if size_origin else "",
            ) if text
        )
        if space_assumed and isinstance(model_or_probe, nn.Module) and class_count(probe) == IMAGENET_CLASSES:
            warnings.warn(
                f"maximize_activation: the model has {IMAGENET_CLASSES} outputs, like ImageNet classifiers, which are "
                f"trained on normalised images; {assumed[0].lower()}{assumed[1:]}",
                AssumedInputWarning,
                stacklevel=2,
            )
        trace: list[float] = []
        cancelled = False
        stuck = False
        moved = False
        ran: dict[str, set[int]] = {}  # the activation modules on the way to the target, seen in step 1
        bar = tqdm(total=steps, disable=not progress, desc="activation maximisation", unit="step")
        try:
            for step in range(1, steps + 1):
                if stop_now():
                    cancelled = True
                    break
                rgb = param()
                x = _random_transform((rgb - mean_t) / std_t, generator, jitter, scale, rotate)
                redirect = redirect_steps > 0 and (step <= redirect_steps or stuck)
                handles: list[torch.utils.hooks.RemovableHandle] = []
                try:
                    if redirect:
                        _redirect_relus(probe.model, handles)
                    if step == 1:
                        hook_activations(probe.model, lambda kind, m: ran.setdefault(kind, set()).add(id(m)),
                                         handles=handles)
                    value = require_graph(target_score(probe, x, target, grad=True).mean(), "maximize_activation")
                    grads = torch.autograd.grad(value, leaves)
                finally:
                    for handle in handles:
                        handle.remove()
                if not all(bool(torch.isfinite(g).all()) for g in grads):
                    # one step on it would make every pixel NaN, and the next step refuse the image
                    raise ValueError(_nonfinite_gradient_message(step, float(value.detach()), target))
                stuck = not any(bool(g.any()) for g in grads)
                moved = moved or not stuck
                optimizer.step(grads)
                if blur > 0:
                    param.blur_(blur)
                trace.append(float(value.detach()))
                bar.update(1)
                if callback is not None:
                    callback(step, trace[-1], rgb.detach()[0])
        finally:
            bar.close()

        with torch.no_grad():
            rgb = param()
            image = ((rgb - mean_t) / std_t).cpu()
        result = ActMaxResult(
            image=image,
            rgb=rgb[0].permute(1, 2, 0).cpu().numpy().astype(np.float32),
            trace=np.asarray(trace, dtype=np.float64),
            activation=clean_value(),
            initial_activation=initial,
            steps=len(trace),
            cancelled=cancelled,
            seed=int(seed),
            input_size=(int(channels), int(height), int(width)),
            mean=tuple(float(v) for v in mean_t.flatten().tolist()),
            std=tuple(float(v) for v in std_t.flatten().tolist()),
            assumed=assumed,
        )
        if trace and not moved:
            redirected = {type(m).__name__ for m in probe.model.modules() if isinstance(m, _REDIRECTED)}
            counts = {kind: len(modules) for kind, modules in ran.items()}
            warning = ZeroGradientWarning(
                _zero_gradient_message(len(trace), result.activation, redirect_steps, counts, redirected))
            _ZERO_QUIET.warn(warning, stacklevel=2)
        elif trace and not cancelled and not result.activation > result.initial_activation:
            warning = ZeroGradientWarning(
                _no_rise_message(len(trace), result.initial_activation, result.activation, result.trace))
            _ZERO_QUIET.warn(warning, stacklevel=2)
        saturated = float(np.mean((result.rgb <= _SATURATED_EPS) | (result.rgb >= 1 - _SATURATED_EPS)))
        if trace and saturated >= _SATURATED_SHARE:
            warning = SaturatedImageWarning(
                f"maximize_activation: the image is saturated: {saturated:.0%} of its values are 0 or 1 (within "
                f"{_SATURATED_EPS:g}), a two-colour picture rather than a pattern. The steps were too large for it "
                f"(lr={lr:g}, the default is 0.05): try a smaller lr."
            )
            _ZERO_QUIET.warn(warning, stacklevel=2)
        return result
