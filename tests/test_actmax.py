"""Activation maximisation: it raises the target, is reproducible, prefix-only, cancellable."""

from __future__ import annotations

import json
import threading
import warnings

import numpy as np
import pytest
import torch
from torch import nn
from traitlets import TraitError

from cnnwidgets import ChannelActivation, ClassLogit, Probe
from cnnwidgets.app.filters import CLASS_TARGET, ActMaxController, actmax_view
from cnnwidgets.methods.actmax import ZeroGradientWarning, maximize_activation

FAST = dict(size=16, steps=24, progress=False)


def small_net() -> nn.Module:
    """Random but deterministic, with He initialisation as in torchvision's CNNs."""
    torch.manual_seed(3)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3),
    )
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            nn.init.zeros_(module.bias)
    return model


class TinyVGG(nn.Module):
    """CNN Explainer's TinyVGG (layout from shared/data/README.md)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv_1_1, self.relu_1_1 = nn.Conv2d(3, 10, 3), nn.ReLU()
        self.conv_1_2, self.relu_1_2 = nn.Conv2d(10, 10, 3), nn.ReLU()
        self.pool_1 = nn.MaxPool2d(2)
        self.conv_2_1, self.relu_2_1 = nn.Conv2d(10, 10, 3), nn.ReLU()
        self.conv_2_2, self.relu_2_2 = nn.Conv2d(10, 10, 3), nn.ReLU()
        self.pool_2 = nn.MaxPool2d(2)
        self.output = nn.Linear(1690, 10)

    def forward(self, x):
        x = self.pool_1(self.relu_1_2(self.conv_1_2(self.relu_1_1(self.conv_1_1(x)))))
        x = self.pool_2(self.relu_2_2(self.conv_2_2(self.relu_2_1(self.conv_2_1(x)))))
        return self.output(x.flatten(1))


@pytest.fixture(scope="module")
def tinyvgg(request):
    shared = request.getfixturevalue("shared_data")
    folder = shared / "tinyvgg-cnn-explainer"
    model = TinyVGG()
    model.load_state_dict(torch.load(folder / "tinyvgg_state_dict.pth", weights_only=True, map_location="cpu"))
    classes = json.loads((folder / "classes.json").read_text())
    return model.eval(), [classes[str(i)] for i in range(10)]


def _noise_values(probe, target, size, n=8):
    generator = torch.Generator().manual_seed(123)
    x = torch.rand(n, 3, size, size, generator=generator)  # uniform noise images in [0, 1]
    layer = target.layer
    act = probe.logits(x) if layer is None else probe.capture(x, layer)[layer]
    return target(act)


def test_every_channel_rises_above_the_start_and_above_noise():
    model = small_net()
    with Probe(model, input_size=(3, 16, 16)) as probe:
        for channel in range(8):
            target = ChannelActivation("3", channel)
            result = maximize_activation(probe, target, **dict(FAST, steps=48))
            noise = float(_noise_values(probe, target, 16).max())
            assert result.steps == 48 and result.trace.shape == (48,)
            assert result.activation > max(noise, result.initial_activation) + 0.15, channel
            assert result.trace[-4:].mean() > result.trace[:4].mean()
        strong = maximize_activation(probe, ChannelActivation("3", 2), **dict(FAST, steps=96))
        assert strong.activation > 3 * float(_noise_values(probe, ChannelActivation("3", 2), 16).max())


def test_same_seed_same_image_other_seed_other_image_global_rng_untouched():
    model = small_net()
    state = torch.random.get_rng_state()
    first = maximize_activation(model, ChannelActivation("0", 2), seed=7, **FAST)
    second = maximize_activation(model, ChannelActivation("0", 2), seed=7, **FAST)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(first.image, second.image)
    np.testing.assert_array_equal(first.trace, second.trace)
    other = maximize_activation(model, ChannelActivation("0", 2), seed=8, **FAST)
    assert not torch.equal(first.image, other.image)
    assert first.seed == 7


def test_image_is_the_normalised_rgb_and_rgb_is_in_unit_range():
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    result = maximize_activation(small_net(), 1, mean=mean, std=std, **FAST)
    assert result.rgb.shape == (16, 16, 3) and result.rgb.dtype == np.float32
    assert result.rgb.min() >= 0 and result.rgb.max() <= 1
    rgb = torch.from_numpy(result.rgb).permute(2, 0, 1)[None]
    expected = (rgb - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close(result.image, expected)
    assert result.image.shape == (1, 3, 16, 16) and result.image.device.type == "cpu"


def test_a_bundle_gives_its_own_normalisation_unless_one_is_given():
    from cnnwidgets import zoo

    bundle = zoo.load_default()
    assert bundle.mean is not None and bundle.mean != (0.0, 0.0, 0.0)
    options = dict(FAST, size=16)

    def image_of(result):
        return torch.from_numpy(result.rgb).permute(2, 0, 1)[None]

    own = maximize_activation(bundle, 2, **options)
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (bundle.mean, bundle.std))
    torch.testing.assert_close(own.image, (image_of(own) - mean) / std)  # the model saw its own input space
    given = maximize_activation(bundle, 2, mean=0.0, std=1.0, **options)
    torch.testing.assert_close(given.image, image_of(given))  # an explicit normalisation wins
    plain = maximize_activation(bundle.model, 2, **options)  # a bare module has none to give
    torch.testing.assert_close(plain.image, image_of(plain))
    view = actmax_view(bundle, size=16, background=False)  # the view of a bundle runs in its input space too
    try:
        assert view.controller.options["mean"] == bundle.mean and view.controller.options["std"] == bundle.std
    finally:
        view.close()


def test_prefix_only_and_gradients_only_for_the_image():
    model = small_net()
    with Probe(model, input_size=(3, 16, 16)) as probe:
        probe.layers
        probe.reset_stats()
        maximize_activation(probe, ChannelActivation("1", 0), **FAST)
        assert probe.stats.full_forwards == 0  # never ran past layer "1"
        assert all(p.grad is None and not p.requires_grad for p in probe.model.parameters())
        assert all(len(m._forward_hooks) == 1 for name, m in probe.model.named_modules() if name)


def red_unit(activation: nn.Module, bias: float = -5.0) -> nn.Module:
    """One channel: the red input summed over 3x3 plus ``bias``, then ``activation``."""
    model = nn.Sequential(nn.Conv2d(3, 1, 3), activation)
    with torch.no_grad():
        model[0].weight.zero_()
        model[0].weight[0, 0] = 1.0
        model[0].bias.fill_(bias)
    return model


@pytest.mark.parametrize("activation", [nn.ReLU(), nn.ReLU6(), nn.Hardtanh(0.0, 2.0)], ids=str)
def test_a_channel_that_is_off_on_the_start_image_is_reached_by_redirected_relu(activation):
    # The only channel sums the red input minus a bias: off on the gray start image (9 * 0.5 - 5 < 0),
    # reachable with a red image (9 * 1 - 5 > 0). A plain ReLU (or ReLU6) gives no gradient at the start.
    model = red_unit(activation)
    target = ChannelActivation("1", 0)
    with pytest.warns(ZeroGradientWarning, match="zero at every one of the 24 steps.*redirect_steps=0") as record:
        stuck = maximize_activation(model, target, redirect_steps=0, **FAST)
    assert stuck.activation == 0 and np.all(stuck.trace == 0) and record[0].filename == __file__
    with warnings.catch_warnings():
        warnings.simplefilter("error", ZeroGradientWarning)
        start = maximize_activation(model, target, **dict(FAST, steps=0))  # no step: nothing to say
        moved = maximize_activation(model, target, **FAST)
    assert torch.equal(stuck.image, start.image)  # the starting image, unchanged
    assert moved.activation > 0.5


def test_redirected_clamp_lets_through_only_gradient_that_brings_a_unit_back_into_range():
    from cnnwidgets.methods.actmax import _redirect_relus

    model = nn.Sequential(nn.ReLU6())
    x = torch.tensor([-1.0, -1.0, 3.0, 3.0, 7.0, 7.0], requires_grad=True)
    upstream = torch.tensor([1.0, -1.0, 1.0, -1.0, 1.0, -1.0])
    handles = []
    try:
        _redirect_relus(model, handles)
        out = model(x)
        (grad,) = torch.autograd.grad(out, x, upstream)
    finally:
        for handle in handles:
            handle.remove()
    assert torch.equal(out, torch.tensor([0.0, 0.0, 3.0, 3.0, 6.0, 6.0]))  # forward value is the true ReLU6
    assert torch.equal(grad, torch.tensor([1.0, 0.0, 1.0, -1.0, 0.0, -1.0]))  # up from 0, down from 6
    assert len(model[0]._forward_hooks) == 0


def test_a_run_whose_gradient_is_zero_at_every_step_warns_that_the_result_is_the_starting_image():
    # Hardswish passes no gradient below -3, and the redirect does not reach it: the red sum minus 10
    # is below -3 on every image near the gray start
    model = red_unit(nn.Hardswish(), bias=-10.0)
    target = ChannelActivation("1", 0)
    with pytest.warns(ZeroGradientWarning) as record:
        stuck = maximize_activation(model, target, **dict(FAST, steps=4))
    (warning,) = record
    message = str(warning.message)
    assert warning.filename == __file__
    assert message.startswith("maximize_activation: the target's gradient was zero at every one of the 4 steps, "
                              "so the image never changed: the result is the starting image (the target is 0 "
                              "on it)")
    assert "none ran on the way to the target (the activation modules that ran: 1 Hardswish)" in message
    assert "another channel or seed" in message and "the layer before the activation" in message
    start = maximize_activation(model, target, **dict(FAST, steps=0))
    assert torch.equal(stuck.image, start.image) and np.all(stuck.trace == 0)
    # behind a ReLU that is redirected, the Hardswish still stops the gradient: the message names it
    behind = nn.Sequential(*red_unit(nn.Hardswish(), bias=-10.0), nn.Conv2d(1, 1, 1), nn.ReLU())
    with pytest.warns(ZeroGradientWarning, match=r"at the single step.*without effect: .*an activation it does not "
                                                 r"redirect \(Hardswish\)"):
        maximize_activation(behind, ChannelActivation("3", 0), **dict(FAST, steps=1))
    with warnings.catch_warnings():
        warnings.simplefilter("error", ZeroGradientWarning)
        maximize_activation(small_net(), ChannelActivation("1", 5), **FAST)  # a plain ReLU net moves
        maximize_activation(small_net(), 2, **FAST)


def test_pixel_parametrisation_with_blur_also_works():
    model = small_net()
    target = ChannelActivation("3", 2)
    plain = maximize_activation(model, target, parametrization="pixel", **dict(FAST, steps=48))
    blurred = maximize_activation(model, target, parametrization="pixel", blur=0.3, **dict(FAST, steps=48))
    assert plain.activation > plain.initial_activation + 0.3
    assert blurred.activation > blurred.initial_activation + 0.3
    # the blur removes high frequencies: neighbouring pixels differ less
    roughness = [np.abs(np.diff(r.rgb, axis=1)).mean() for r in (plain, blurred)]
    assert roughness[1] < roughness[0]


@pytest.mark.parametrize("size, blur", [((8, 8), 4.0), ((4, 16), 2.0), ((2, 12), 1.0)])
def test_a_blur_wider_than_the_image_is_cut_at_its_side(size, blur):
    # reflected borders need a pad narrower than the image: the kernel is cut there, not the run
    model = small_net()
    plain = maximize_activation(model, ChannelActivation("3", 2), parametrization="pixel", size=size, steps=4,
                                progress=False, seed=1)
    blurred = maximize_activation(model, ChannelActivation("3", 2), parametrization="pixel", size=size, steps=4,
                                  progress=False, seed=1, blur=blur)
    assert blurred.rgb.shape[:2] == size and np.isfinite(blurred.rgb).all()
    roughness = [np.abs(np.diff(r.rgb.astype(float), axis=1)).mean() for r in (plain, blurred)]
    assert roughness[1] < roughness[0]


def test_callback_and_cancel():
    model = small_net()
    seen, stop = [], threading.Event()

    def callback(step, value, rgb):
        seen.append((step, value, tuple(rgb.shape)))
        if step == 5:
            stop.set()

    result = maximize_activation(model, 0, callback=callback, cancel=stop, **FAST)
    assert result.cancelled and result.steps == 5 and [s[0] for s in seen] == [1, 2, 3, 4, 5]
    assert seen[0][2] == (3, 16, 16) and seen[-1][1] == result.trace[-1]
    result = maximize_activation(model, 0, cancel=lambda: True, **FAST)
    assert result.cancelled and result.steps == 0


@pytest.mark.parametrize("mode", ["no_grad", "set_grad_enabled(False)", "inference_mode"])
def test_the_same_image_with_gradients_turned_off_and_the_mode_is_kept(mode):
    enter = {"no_grad": torch.no_grad, "set_grad_enabled(False)": lambda: torch.set_grad_enabled(False),
             "inference_mode": torch.inference_mode}[mode]
    model = small_net()
    kwargs = dict(FAST, steps=6)
    expected = maximize_activation(model, ChannelActivation("3", 1), **kwargs)
    with enter():
        result = maximize_activation(model, ChannelActivation("3", 1), **kwargs)
        assert not torch.is_grad_enabled()
        assert torch.is_inference_mode_enabled() == (mode == "inference_mode")
    assert torch.is_grad_enabled() and not torch.is_inference_mode_enabled()
    assert torch.equal(result.image, expected.image)
    np.testing.assert_array_equal(result.trace, expected.trace)
    assert result.activation == expected.activation and result.activation > result.initial_activation


def test_errors():
    model = small_net()
    with pytest.raises(KeyError, match="unknown layer"):
        maximize_activation(model, ChannelActivation("9", 0), **FAST)
    with pytest.raises(IndexError, match="8 channels"):
        maximize_activation(model, ChannelActivation("3", 8), **FAST)
    with pytest.raises(IndexError, match="out of range"):
        maximize_activation(model, 3, **FAST)
    with pytest.raises(ValueError, match="parametrization"):
        maximize_activation(model, 0, parametrization="cppn", **FAST)
    with pytest.raises(ValueError, match="blur"):
        maximize_activation(model, 0, blur=1.0, **FAST)
    with pytest.raises(ValueError, match="one value per input channel"):
        maximize_activation(model, 0, mean=(0.5, 0.5), **FAST)
    with pytest.raises(TypeError, match="unsupported target"):
        maximize_activation(model, "3", **FAST)


def test_controller_runs_stops_and_shows_the_result():
    view_probe = Probe(small_net(), input_size=(3, 16, 16))
    controller = ActMaxController(view_probe, size=16, background=False)
    view = controller.view
    # every layer with feature maps (the pooled 1x1 one too), and a middle activation by default
    assert view.layers == ["0", "1", "2", "3", "4", "5", CLASS_TARGET]
    assert view.layer == "3" and view.image_shape == () and "press Run" in view.status  # nothing drawn yet
    assert view._image.layout.display == "none"  # no broken-image icon before the first result
    view.layer, view.channel, view.steps = "3", 5, 16
    view.running = True  # what the Run button does
    assert not view.running and view.progress == 16 and not view.error
    assert controller.result is not None and controller.result.steps == 16
    assert view.image_shape == (256, 256, 3) and "done after 16 steps" in view.status
    assert view._image.layout.display is None
    view.layer = CLASS_TARGET
    assert view.channels == 3  # the model's classes: the box holds 0..2, and a class beyond is refused
    with pytest.raises(TraitError, match="out of range"):
        view.channel = 7
    assert not view.running
    controller.background = True
    view.layer, view.channel, view.steps = "3", 1, 100000
    controller.start()
    view.running = False  # what the Stop button does
    controller.wait(30)
    assert "stopped after" in view.status and controller.result.cancelled
    controller.close()
    view_probe.close()


def test_view_options_set_the_step_count_and_refuse_what_the_controller_sets():
    view = actmax_view(small_net(), size=16, steps=12, lr=0.05, background=False)
    assert view.steps == 12
    view.layer, view.channel = "3", 2
    view.controller.start()  # what the Run button does
    assert not view.error, view.status
    assert view.controller.result.steps == 12 and "done after 12 steps" in view.status
    view.controller.close()
    for owned in ("progress", "callback", "cancel"):
        with pytest.raises(TypeError, match=f"{owned} cannot be given"):
            ActMaxController(small_net(), size=16, background=False, **{owned: None})


def test_tinyvgg_classes_and_channels_are_driven_far_beyond_noise(tinyvgg):
    model, classes = tinyvgg
    with Probe(model, input_size=(3, 64, 64)) as probe:
        for target in (ClassLogit(1), ClassLogit(8)):
            result = maximize_activation(probe, target, size=64, steps=48, decay=1.5, progress=False)
            noise = _noise_values(probe, target, 64)
            assert result.activation > float(noise.max()) + 10, classes[target.index]
            assert int(probe.logits(result.image).argmax()) == target.index  # the net sees its class
        for target in (ChannelActivation("conv_2_2", 3), ChannelActivation("relu_2_2", 7)):
            result = maximize_activation(probe, target, size=64, steps=48, decay=1.5, progress=False)
            noise = _noise_values(probe, target, 64)
            assert result.activation > 3 * max(float(noise.max()), 0.1), target


def test_redirected_relu_changes_only_the_gradient_and_only_in_its_own_thread():
    from cnnwidgets.methods.actmax import _redirect_relus

    model = nn.Sequential(nn.ReLU())
    x = torch.full((1, 1, 2, 2), -1.0, requires_grad=True)
    handles = []
    try:
        _redirect_relus(model, handles)
        out = model(x)
        here = torch.autograd.grad(out.sum(), x)[0]
        elsewhere = {}
        worker = threading.Thread(target=lambda: elsewhere.update(g=torch.autograd.grad(model(x).sum(), x)[0]))
        worker.start()
        worker.join()
    finally:
        for handle in handles:
            handle.remove()
    assert torch.equal(out, torch.zeros_like(out))  # forward value is the true ReLU
    assert torch.equal(here, torch.ones_like(here))  # upward gradient let through a switched-off unit
    assert torch.equal(elsewhere["g"], torch.zeros_like(here))  # other threads see a plain ReLU
    assert len(model[0]._forward_hooks) == 0


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(28 * 28, 10)

    def forward(self, x):
        return self.fc(x.flatten(1))


def test_size_errors_name_the_accepted_forms():
    model = small_net().eval()
    for bad in ((16,), (3, 16, 16), 1, (16, 1), 16.0, (16.0, 16), True, "16"):
        with pytest.raises(ValueError, match=r"size must be an int H or a pair \(H, W\) of ints >= 2; .*input_size"):
            maximize_activation(model, 0, size=bad, steps=1, progress=False)
    with pytest.raises(ValueError, match="not both"):
        maximize_activation(model, 0, size=16, input_size=(3, 16, 16), steps=1, progress=False)
    with pytest.raises(ValueError, match=r"input_size must be \(C, H, W\)"):
        maximize_activation(model, 0, input_size=(16, 16), steps=1, progress=False)
    assert maximize_activation(model, 0, size=np.int64(12), steps=1, progress=False).image.shape == (1, 3, 12, 12)
    # a size no tensor can hold is told in the size's own words (it once named an internal candidate list)
    for huge in (2**63, (2**40, 2**40), (2, 2**62)):
        with pytest.raises(ValueError, match=r"^size \(\d+, \d+\) is too large: .*more than a tensor can hold"):
            maximize_activation(model, 0, size=huge, steps=1, progress=False)


def test_input_size_gives_the_channels_for_a_model_without_convolutions():
    model = MLP().eval()
    # without a convolution to read the channels off, RGB and then gray are tried
    assert maximize_activation(model, 0, steps=1, progress=False).image.shape == (1, 1, 28, 28)
    assert maximize_activation(model, 0, size=(28, 28), steps=1, progress=False).image.shape == (1, 1, 28, 28)
    with pytest.raises(RuntimeError, match=r"at \(3, 20, 20\); the same error .* at the other sizes tried: \(1, 20, 20\)\).*input_size=\(C, H, W\)"):
        maximize_activation(model, 0, size=(20, 20), steps=1, progress=False)
    result = maximize_activation(model, 3, input_size=(1, 28, 28), steps=3, progress=False)
    assert result.image.shape == (1, 1, 28, 28) and result.rgb.shape == (28, 28, 1) and result.steps == 3
    with Probe(model, input_size=(1, 28, 28)) as probe:
        assert maximize_activation(probe, 3, size=28, steps=1, progress=False).image.shape == (1, 1, 28, 28)


def test_numbers_must_be_finite_and_counts_ints():
    model = small_net().eval()
    for name, value in (("lr", float("nan")), ("lr", float("inf")), ("lr", -1.0), ("scale", float("nan")),
                        ("rotate", float("inf")), ("init_sd", float("nan")), ("decay", float("nan"))):
        with pytest.raises(ValueError, match=f"{name} must be a finite number"):
            maximize_activation(model, 0, size=8, steps=1, progress=False, **{name: value})
    for name, value in (("steps", 2.5), ("steps", "3"), ("steps", True), ("redirect_steps", 1.5), ("jitter", 1.0)):
        with pytest.raises(TypeError, match=f"{name} must be an int >= 0, got"):
            maximize_activation(model, 0, size=8, progress=False, **{"steps": 1, name: value})
    with pytest.raises(ValueError, match="steps must be an int >= 0, got -1"):
        maximize_activation(model, 0, size=8, steps=-1, progress=False)
    with pytest.raises(TypeError, match="lr must be a number"):
        maximize_activation(model, 0, size=8, steps=1, lr="0.1", progress=False)
    assert maximize_activation(model, 0, size=8, steps=np.int64(2), progress=False).steps == 2
    # counts take the int types seeds and indices take: a 0-d integer tensor too
    assert maximize_activation(model, 0, size=8, steps=torch.tensor(2), jitter=torch.tensor(1),
                               progress=False).steps == 2
    with pytest.raises(TypeError, match=r"steps must be an int >= 0, got a tensor of shape \(\) and dtype torch.float32"):
        maximize_activation(model, 0, size=8, steps=torch.tensor(2.0), progress=False)


def test_seed_flags_callbacks_and_normalisation_are_checked_before_any_step():
    model = small_net().eval()
    run = lambda **kw: maximize_activation(model, 0, size=8, steps=1, **{"progress": False, **kw})  # noqa: E731
    for kw, error, message in (
        ({"seed": 1.5}, TypeError, "seed must be an int .*got float 1.5"),
        ({"seed": "2"}, TypeError, "seed must be an int"),
        # torch wraps a negative seed around (-1 gave the image of 2**64 - 1) and overflows past 2**64
        ({"seed": -1}, ValueError, r"seed must be an int in \[0, 2\*\*64\), got -1"),
        ({"seed": 2**64}, ValueError, r"seed must be an int in \[0, 2\*\*64\), got 18446744073709551616"),
        ({"decay": -1}, ValueError, "decay must be a finite number >= 0, got -1"),
        ({"decorrelate": "False"}, TypeError, "decorrelate must be True or False, got str"),
        # progress is an on/off flag like every other: "no" would show the bar, 0 would hide it
        ({"progress": "no"}, TypeError, "progress must be True or False, got str 'no'"),
        ({"progress": 0}, TypeError, "progress must be True or False, got int 0"),
        ({"callback": 5}, TypeError, r"callback must be None or a callable as callback\(step, value, rgb\), got int 5"),
        ({"cancel": True}, TypeError, "cancel must be a threading.Event or a callable"),
        ({"mean": float("nan")}, ValueError, r"mean must hold finite numbers, got \[nan\]"),
        ({"std": [1.0, float("inf"), 1.0]}, ValueError, "std must hold finite numbers"),
        ({"mean": "0.5"}, TypeError, "mean must be a number or one number per input channel"),
    ):
        with pytest.raises(error, match=message):
            run(**kw)
    # ints of other kinds are seeds; the image depends on the seed's value only
    assert torch.equal(run(seed=np.int64(3)).image, run(seed=3).image)
    assert run(seed=torch.tensor(3)).seed == 3


# --- the view: a run keeps its target, refused values, options checked up front, closing -----------------------


def _hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_a_run_keeps_its_target_and_the_status_names_the_target_of_the_image():
    view = actmax_view(small_net(), size=16, steps=100000, update_every=1)
    controller = view.controller
    view.layer, view.channel = "3", 5
    controller.start()  # in the background
    try:
        with pytest.raises(Exception, match="cannot change channel while a run is going.*press Stop first"):
            view.channel = 2
        view._channel_box.set_state({"value": 7})  # from the browser: refused, said, and the box set back
        assert view.channel == 5 and view._channel_box.value == 5
        assert "channel: not changed (cannot change channel while a run is going" in view.status
        view._layer_menu.set_state({"index": 0})
        assert view.layer == "3" and view._layer_menu.value == "3"
    finally:
        view.running = False  # Stop
        controller.wait(30)
    assert view.status.startswith("stopped after") and "for layer '3' channel 5: its activation went from" in view.status
    assert not view.error and view.image_shape == (256, 256, 3)
    done = view.status
    view.channel = 2  # another target after the run: the image is still channel 5's, and the view says so
    assert view.status == f"{done}. The image shown is for layer '3' channel 5; press Run to synthesise one for layer '3' channel 2"
    view.channel = 5
    assert view.status == done
    view.close()


def test_no_target_is_refused_not_maximised_as_something_else():
    view = actmax_view(small_net(), size=16, steps=2, background=False)
    view.layer, view.channel = "3", 1
    view.running = True
    picture = view._image.value
    view._layer_menu.set_state({"index": None})  # from the browser: refused
    assert view.layer == "3" and view._layer_menu.value == "3" and view._image.value == picture
    assert view.error and "target: not changed (no choice made" in view.status
    view.layer = None  # from Python: Run says what is missing instead of maximising ChannelActivation(None, 1)
    view.running = True
    assert not view.running and view.error and view.controller.result.steps == 2
    assert view.status == f"no target chosen: pick a layer or {CLASS_TARGET} in the target menu, then press Run"
    assert view.image_shape == () and view._image.value == b""  # the last run's image is not left under it
    view._layer_menu.set_state({"index": 99})
    assert view.status == "target: not changed (Invalid selection: index out of bounds)"
    view.close()


@pytest.mark.parametrize("options, error, message", [
    (dict(foo=1), TypeError, r"unknown option foo for maximize_activation; its options are blur, decay, .*seed"),
    (dict(lr=-1), ValueError, r"lr must be a finite number > 0, got -1"),
    (dict(mean=[0.5, 0.5], std=[1, 1]), ValueError, r"mean must have one value per input channel \(3\), got 2"),
    (dict(size="32"), ValueError, r"size must be an int H or a pair \(H, W\) of ints >= 2; .*got '32'"),
    (dict(size=(16.5, 16)), ValueError, r"size must be an int H or a pair \(H, W\) of ints >= 2; .*got \(16.5, 16\)"),
    (dict(size=True), ValueError, r"size must be an int H or a pair \(H, W\) of ints >= 2; .*got True"),
    (dict(update_every=0), ValueError, r"update_every must be an int >= 1, got 0"),
    (dict(steps="3"), TypeError, r"steps must be an int >= 1, got str '3'"),
    (dict(size=16, input_size=(3, 16, 16)), ValueError, "not both"),
])
def test_view_options_are_checked_when_the_view_is_made(options, error, message):
    model = small_net()
    with pytest.raises(error, match=message):
        actmax_view(model, background=False, **options)
    assert _hooks(model) == 0


def test_a_closed_view_refuses_to_run():
    view = actmax_view(small_net(), size=16, steps=2, background=False)
    view.close()
    with pytest.raises(Exception, match=r"cannot set running: this view is closed; make a new one with actmax_view"):
        view.running = True
    with pytest.raises(Exception, match="this view is closed"):
        view.controller.start()
    with pytest.raises(Exception, match="cannot set channel: this view is closed"):
        view.channel = 3
    assert view.controller.result is None
    other = actmax_view(small_net(), size=16, steps=2, background=False)
    other.controller.close()  # the controller alone: its probe is gone, so a run is refused with the reason
    other.running = True
    assert not other.running and other.error
    assert other.status == "this view's controller is closed; make a new view with actmax_view(...)"
    other.close()


def test_a_channel_of_an_empty_feature_map_is_refused_before_any_step():
    from tests.test_layer_geometry import EMPTY_ACT, empty_branch

    model = empty_branch()  # layer 'act' is (8, 0, 0) at 32 x 32, 12 x 12 at 64 x 64
    for reduce in ("mean", "sum", "max"):  # was "not finite ... a log of 0?", a flat 0, a raw IndexError
        with pytest.raises(ValueError, match=EMPTY_ACT):
            maximize_activation(model, ChannelActivation("act", 0, reduce=reduce), size=32, steps=2, progress=False)
    with Probe(model, input_size=(3, 64, 64)) as probe, pytest.raises(ValueError, match=EMPTY_ACT):
        maximize_activation(probe, ChannelActivation("act", 0), size=32, steps=2, progress=False)
    assert maximize_activation(model, ChannelActivation("act", 0), size=64, steps=2, progress=False).steps == 2
    assert _hooks(model) == 0


def test_the_ascent_does_not_depend_on_the_scale_of_the_target():
    model = small_net()
    with Probe(model, input_size=(3, 16, 16)) as probe:
        start = maximize_activation(probe, 1, **dict(FAST, steps=0)).rgb
        plain = maximize_activation(probe, 1, **dict(FAST, steps=32))
        tiny = maximize_activation(probe, lambda y: 1e-9 * y[:, 1], **dict(FAST, steps=32))
    moved = float(np.abs(plain.rgb - start).max())
    assert moved > 0.1
    # Adam ignores the gradient's scale; an absolute eps of 1e-8 would have kept the tiny one still
    assert float(np.abs(tiny.rgb - plain.rgb).max()) < 0.05 * moved
    assert tiny.activation == pytest.approx(1e-9 * plain.activation, rel=1e-2)


class SharedRelu(nn.Module):
    """One ReLU module after both convolutions, as in a ResNet block."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(4)
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.conv2 = nn.Conv2d(6, 6, 3, padding=1)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        x = self.relu(self.conv2(self.relu(self.conv1(x))))
        return self.fc(x.mean(dim=(2, 3)))


def test_the_view_says_that_a_module_run_twice_is_read_at_its_last_call():
    view = actmax_view(SharedRelu().eval(), size=16, steps=4, background=False)
    assert "relu" in view.layers
    view.layer, view.channel = "relu", 2
    view.controller.start()
    assert not view.error, view.status
    assert "layer 'relu' (its last of 2 calls in a pass) channel 2" in view.status
    view.layer = "conv1"  # run once: nothing to say
    view.controller.start()
    assert "layer 'conv1' channel" in view.status and "calls" not in view.status
    view.controller.close()
