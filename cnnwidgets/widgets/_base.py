"""What the widgets share: where their browser code lives (shipped as package data next to this
file), the mixins and trait types of the views, and the controls a browser sets (menus, toggle
buttons, sliders, int boxes, checkboxes, text boxes) or only shows (buttons, progress bars), each
checked against what its browser side may send (:class:`RefusesBrowserValues`,
:class:`BrowserSetsOnly`); a disabled one takes nothing from the browser.

The settings a user makes on a view take the values the functions of the package take: an index
(:class:`IndexTrait`) is a Python int, a NumPy integer or a 0-d integer tensor, never a bool or a
float; an on/off setting (:class:`FlagTrait`) is ``True`` or ``False`` (NumPy's too), never 0 or
1; a name (:class:`NameTrait`, :class:`ChoiceTrait`) is a ``str`` (NumPy's ``str_`` too), never
``bytes``. Each is held as the plain Python value.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ipywidgets
import numpy as np
import traitlets

HERE = Path(__file__).resolve().parent
#: The widgets' style sheet, as text: a path would make anywidget watch the file and keep every
#: widget instance reachable from its class for as long as the process lives.
CSS = (HERE / "widgets.css").read_text(encoding="utf-8")
SHARED = HERE / "_shared.js"


def esm(name: str) -> str:
    """Source of the ES module ``name`` shipped with the package, after the shared helpers.

    ``_shared.js`` (object-URL images, event subscriptions, element ids, and the attribute that
    keeps JupyterLab's keyboard shortcuts out of the widgets and of the explorer around them)
    goes in front of every module, so the modules call its functions without an import: a
    widget's module is one string in the browser, with no URL to import siblings from.
    """
    return SHARED.read_text(encoding="utf-8") + "\n" + (HERE / name).read_text(encoding="utf-8")


def close_parts(widget: ipywidgets.Widget) -> None:
    """Close every widget inside ``widget`` (box children, recursively) and the layouts and
    styles of all of them, but not ``widget`` itself.

    ipywidgets keeps every open widget in a global registry; a part left open keeps alive
    whatever its callbacks reach (a view, its controller, a model), so a view that goes away
    closes all of its parts.
    """
    seen: set[int] = set()
    stack: list[object] = [widget]
    parts: list[ipywidgets.Widget] = []
    while stack:
        item = stack.pop()
        if not isinstance(item, ipywidgets.Widget) or id(item) in seen:
            continue
        seen.add(id(item))
        if item is not widget:
            parts.append(item)
        stack.extend(getattr(item, "children", None) or ())
        for name in ("layout", "style"):
            if name in item.trait_names():
                stack.append(getattr(item, name))
    for part in parts:
        ipywidgets.Widget.close(part)


class RefusesWhenClosed:
    """Mixin for a view that refuses new settings once closed (``_closed`` true): a closed view
    shows nothing, so setting its state is a mistake, not a silent no-op. Its validators call
    :meth:`_refuse_when_closed`; ``_MAKER`` names what makes a new view.

    traitlets takes None for a trait that allows it without calling any validator, so for None
    the mixin asks :meth:`_refuse_when_closed` itself, for every trait the view validates (its
    settings), however it is set (an assignment or ``set_trait``).
    """

    #: the function that makes the view, named when a closed one is used
    _MAKER = "a new view"

    def _refuse_when_closed(self, proposal: dict) -> None:
        if getattr(self, "_closed", False):
            raise traitlets.TraitError(
                f"cannot set {proposal['trait'].name}: this view is closed; make a new one with {self._MAKER}"
            )

    def _refuse_none_when_closed(self, name: str, value: Any) -> None:
        """Refuse None for the setting ``name`` of a closed view, which no validator is asked about."""
        if value is None and getattr(self, "_closed", False) and name in getattr(self, "_trait_validators", ()):
            trait = getattr(type(self), name, None)
            if isinstance(trait, traitlets.TraitType) and trait.allow_none:
                self._refuse_when_closed({"trait": trait, "value": value, "owner": self})

    def __setattr__(self, name: str, value: Any) -> None:
        self._refuse_none_when_closed(name, value)
        super().__setattr__(name, value)

    def set_trait(self, name: str, value: Any) -> None:
        """Set the trait ``name`` to ``value`` as traitlets does (read-only ones too); a closed view
        refuses None for its settings as it refuses every other value."""
        self._refuse_none_when_closed(name, value)
        super().set_trait(name, value)  # type: ignore[misc]


#: What an index setting takes, for messages.
_INT_ACCEPTED = "a Python int, a NumPy integer or a 0-d integer tensor"

#: The names of torch's integer dtypes (read from a value's ``dtype``: the widgets do not import torch).
_TORCH_INTEGER = re.compile(r"torch\.u?int\d+")


def given(value: Any) -> str:
    """``value`` for a message: its type and a short repr."""
    return f"{type(value).__name__} {value!r:.60}"


def _integer_tensor(value: Any) -> bool:
    """Whether ``value`` is a 0-d tensor of integers (not bools), told by its shape and dtype."""
    shape = getattr(value, "shape", None)
    return (shape is not None and len(shape) == 0 and not isinstance(value, (np.ndarray, np.generic))
            and _TORCH_INTEGER.fullmatch(str(getattr(value, "dtype", ""))) is not None)


class IndexTrait(traitlets.Int):
    """An int setting that takes an index as the package's functions do (a Python int, a NumPy
    integer or a 0-d integer tensor) and holds it as a Python int; bools (``True`` is not 1) and
    floats (``2.0`` included, which ``traitlets.Int`` would take as 2) are refused, naming the
    setting and what it takes."""

    def validate(self, obj: Any, value: Any) -> int:
        if isinstance(value, (bool, np.bool_)):
            raise traitlets.TraitError(f"{self.name} must be an int ({_INT_ACCEPTED}), not a bool; got {value!r}")
        if isinstance(value, (int, np.integer)):
            return super().validate(obj, int(value))  # type: ignore[no-any-return]
        if _integer_tensor(value):
            return super().validate(obj, operator.index(value))  # type: ignore[no-any-return]
        raise traitlets.TraitError(f"{self.name} must be an int ({_INT_ACCEPTED}), got {given(value)}")


class FlagTrait(traitlets.Bool):
    """An on/off setting: ``True`` or ``False`` (NumPy's too), held as a Python bool; not the 0,
    1 (or other values) that ``traitlets.Bool`` would take."""

    def validate(self, obj: Any, value: Any) -> bool:
        if not isinstance(value, (bool, np.bool_)):
            raise traitlets.TraitError(f"{self.name} must be True or False, got {given(value)}")
        return bool(value)


class NameTrait(traitlets.Unicode):
    """A name setting: a ``str`` (NumPy's ``str_`` too) held as a plain ``str``; ``bytes``, which
    ``traitlets.Unicode`` would decode, are refused."""

    def validate(self, obj: Any, value: Any) -> str:
        if not isinstance(value, str):
            raise traitlets.TraitError(f"{self.name} must be a name (a str), got {given(value)}")
        return str(value)


class ChoiceTrait(traitlets.Enum):
    """One of a few names, held as a plain ``str`` (NumPy's ``str_`` given too)."""

    def validate(self, obj: Any, value: Any) -> Any:
        value = super().validate(obj, value)
        return str(value) if isinstance(value, str) else value


class RefusesBrowserValues:
    """Mixin for widgets whose traits the browser sets: a value they refuse.

    Without it the ``TraitError`` leaves the comm handler, where only the kernel's log shows it,
    and the browser keeps showing a value the kernel never took. With it the kernel's values are
    sent back (the browser shows them again) and the error goes to :attr:`on_refused`, which an
    app points at its status line; with no handler set it is raised as before.

    A value the widget itself takes may still be refused by a view's trait it is linked to (the
    view's validator raises in the link, after the widget took the value): the widget's synced
    values are then set back to what they were, so that it goes on showing the view's value and
    not a choice the view never made.
    """

    #: called with ``(trait names, error)`` for a refused change from the browser
    on_refused: Callable[[str, BaseException], None] | None = None

    def set_state(self, sync_data) -> bool:  # type: ignore[no-untyped-def]
        """Take the values the browser sent, ``sync_data`` (trait name -> value), as ipywidgets does;
        a change a trait refuses is undone and sent back (see the class docstring).

        Returns:
            whether the values were taken (False: refused, and handed to :attr:`on_refused`).
        """
        names = [name for name in sync_data if name in self.keys]  # type: ignore[attr-defined]
        before = {name: getattr(self, name) for name in names}
        try:
            self._check_browser_state(sync_data)
            super().set_state(sync_data)  # type: ignore[misc]
            return True
        except traitlets.TraitError as exc:
            for name, value in before.items():
                if getattr(self, name) != value:
                    try:
                        setattr(self, name, value)
                    except traitlets.TraitError:  # pragma: no cover - the value it held a moment ago
                        pass
            self.send_state(names)  # type: ignore[attr-defined]
            if self.on_refused is None:
                raise
            self.on_refused(", ".join(names), exc)
            return False

    def _check_browser_state(self, sync_data: dict) -> None:
        """Raise ``TraitError`` for browser values refused before any is taken (none here)."""


def browser_int(value: Any, what: str) -> int:
    """``value``, a whole number as the browser sends it, as an int: JSON has one number type, so
    ``10.0`` (and ``-0.0``) stand for the ints they equal.

    Raises:
        traitlets.TraitError: for a bool, a number with a fraction, one too large for a float to
            hold exactly (past 2**53 its digits are lost), or anything that is not a number;
            the message names ``what``.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise traitlets.TraitError(f"{what} must be a whole number, got {given(value)}")
    if isinstance(value, float):
        if not (math.isfinite(value) and value.is_integer() and abs(value) <= 2**53):
            raise traitlets.TraitError(f"{what} must be a whole number, got {value!r}")
        return int(value)
    return value


class BrowserSetsOnly(RefusesBrowserValues):
    """Mixin for a widget whose browser side sets only the traits named in ``_BROWSER_SETS``: every
    other synced trait (an image, a geometry, a slider's bounds, a menu's labels, the module's
    code) belongs to the kernel, and a value the browser sends for it is refused and sent back, as
    a value the widget's own checks refuse is (see :class:`RefusesBrowserValues`), never taken.
    While the widget is disabled (its ``disabled`` trait is true), a value the browser sends for
    the traits it does set is refused the same way: a disabled control changes nothing.

    :meth:`_check_browser_values` checks the values of the traits the browser does set, before
    any is taken (subclasses add their checks there).
    """

    #: The synced traits the browser side sets.
    _BROWSER_SETS: frozenset[str] = frozenset()

    def _check_browser_state(self, sync_data: dict) -> None:
        keys = self.keys  # type: ignore[attr-defined]
        owned = [name for name in sync_data if name in keys and name not in self._BROWSER_SETS]
        if owned:
            sets = ", ".join(sorted(self._BROWSER_SETS)) or "nothing"
            raise traitlets.TraitError(f"{', '.join(owned)} cannot be set from the browser (it sets {sets} only)")
        sent = [name for name in sync_data if name in self._BROWSER_SETS]
        if sent and self._browser_disabled():
            raise traitlets.TraitError(self.disabled_reason or (
                f"'{_caption(self, type(self).__name__)}' is disabled: {', '.join(sent)} "
                "cannot be changed until it is enabled again"))
        self._check_browser_values(sync_data)
        super()._check_browser_state(sync_data)

    #: what a value the browser sends while the control is disabled is refused with (why it is
    #: disabled, in words); None: a general message naming the control
    disabled_reason: str | None = None

    def _browser_disabled(self) -> bool:
        """Whether the control is disabled (its ``disabled`` trait, where it has one): a value the
        browser sends for it then is refused, not acted upon. A page sends one when the change
        was made before the kernel's ``disabled`` reached it (a run started meanwhile)."""
        return bool(getattr(self, "disabled", False)) if "disabled" in self.keys else False  # type: ignore[attr-defined]

    def _check_browser_values(self, sync_data: dict) -> None:
        """Raise ``TraitError`` for a value of ``sync_data`` the browser may not send (none here)."""


def _caption(widget: Any, fallback: str) -> str:
    """What a control is called in a message: its description, else ``fallback``."""
    return str(getattr(widget, "description", "") or fallback)


# ---------------------------------------------------------------- the controls a browser sets
# Each refuses, without raising out of the comm handler, what its browser side never sends and
# what the trait it is linked to refuses (see RefusesBrowserValues and BrowserSetsOnly); the
# keyword arguments (``**kwargs``) of each are those of the ipywidgets control it extends.


class _ChecksChoice(BrowserSetsOnly):
    """A selection control: the browser sets ``index`` only, a whole number inside the options
    (ipywidgets' own check), not a bool or a fraction, and not None (no choice) while there are
    options: a linked trait that may be None (nothing to choose from yet) takes None without its
    validators being asked."""

    _BROWSER_SETS = frozenset({"index"})

    def _check_browser_values(self, sync_data: dict) -> None:
        if "index" not in sync_data:
            return
        if sync_data["index"] is not None:
            browser_int(sync_data["index"], f"the index of a choice in '{_caption(self, 'menu')}'")
        elif self._options_labels:  # type: ignore[attr-defined]
            raise traitlets.TraitError(
                f"no choice made; choose one of {list(self._options_labels)}"  # type: ignore[attr-defined]
            )


class CheckedDropdown(_ChecksChoice, ipywidgets.Dropdown):
    """A Dropdown whose browser index must be a whole number among its options (see
    :class:`_ChecksChoice`): a ``Dropdown`` would take ``true`` as index 1, and let the browser
    set its labels."""


class CheckedToggleButtons(_ChecksChoice, ipywidgets.ToggleButtons):
    """ToggleButtons whose browser index is checked as a :class:`CheckedDropdown`'s is."""


class _ChecksBoundedInt(BrowserSetsOnly):
    """A bounded int control: the browser sets ``value`` only, a whole number inside
    ``min..max``. ipywidgets' bounded controls would cut ``10.5`` to 10, take ``"3"`` and
    ``true``, and move a value outside the range (one sent for another range, by a page still
    showing the old one) to its end, a value nobody chose."""

    _BROWSER_SETS = frozenset({"value"})
    #: what the control is, for messages
    _KIND = "control"

    def _check_browser_values(self, sync_data: dict) -> None:
        if "value" in sync_data:
            what = _caption(self, self._KIND)
            value = browser_int(sync_data["value"], what)
            low, high = self.min, self.max  # type: ignore[attr-defined]
            if not low <= value <= high:
                raise traitlets.TraitError(f"{what} {value} is outside the {self._KIND}'s range {low}..{high}")


class CheckedIntSlider(_ChecksBoundedInt, ipywidgets.IntSlider):
    """An IntSlider whose browser value must be a whole number inside its range (see
    :class:`_ChecksBoundedInt`)."""

    _KIND = "slider"


class CheckedBoundedIntText(_ChecksBoundedInt, ipywidgets.BoundedIntText):
    """A BoundedIntText whose browser value must be a whole number inside its range (see
    :class:`_ChecksBoundedInt`)."""

    _KIND = "box"


class CheckedCheckbox(BrowserSetsOnly, ipywidgets.Checkbox):
    """A Checkbox whose browser value must be true or false (a ``Checkbox`` would take 0 and 1)."""

    _BROWSER_SETS = frozenset({"value"})

    def _check_browser_values(self, sync_data: dict) -> None:
        if "value" in sync_data and not isinstance(sync_data["value"], bool):
            raise traitlets.TraitError(
                f"'{_caption(self, 'checkbox')}' must be true or false, got {given(sync_data['value'])}"
            )


class CheckedText(BrowserSetsOnly, ipywidgets.Text):
    """A Text box whose browser value must be a string."""

    _BROWSER_SETS = frozenset({"value"})

    def _check_browser_values(self, sync_data: dict) -> None:
        if "value" in sync_data and not isinstance(sync_data["value"], str):
            raise traitlets.TraitError(
                f"the text of '{_caption(self, self.placeholder or 'text box')}' must be a string, "
                f"got {given(sync_data['value'])}"
            )


class CheckedButton(BrowserSetsOnly, ipywidgets.Button):
    """A Button whose browser side sets nothing (its caption, icon, style and ``disabled`` belong to
    the kernel) and whose clicks count only while it is enabled: a click the page sent before the
    kernel's ``disabled`` reached it is refused, its handlers are not called, and it goes to
    :attr:`on_refused` (raised as ``TraitError`` with no handler set)."""

    def _handle_button_msg(self, _, content, buffers) -> None:  # type: ignore[no-untyped-def]
        if content.get("event", "") == "click" and self.disabled:
            exc = traitlets.TraitError(f"'{_caption(self, self.tooltip or 'button')}' is disabled: the click "
                                       "was not acted upon")
            if self.on_refused is None:
                raise exc
            self.on_refused("click", exc)
            return
        super()._handle_button_msg(_, content, buffers)


class CheckedIntProgress(BrowserSetsOnly, ipywidgets.IntProgress):
    """An IntProgress bar the browser sets nothing of: its value and bounds show the kernel's
    progress, and a value sent from the browser is refused and sent back."""


class CheckedFloatProgress(BrowserSetsOnly, ipywidgets.FloatProgress):
    """A FloatProgress bar the browser sets nothing of (see :class:`CheckedIntProgress`)."""
