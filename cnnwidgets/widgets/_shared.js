// Helpers shared by the widgets' modules. cnnwidgets.widgets._base.esm puts this file in front
// of each module's own code, so these are plain top-level functions of every module.

function mimeType(format) {
  return format === "png" ? "image/png" : "image/jpeg";
}

// Shows the bytes of the model's `image` trait (in its `image_format`) in `img` through an
// object URL; `state.url` holds that URL, revoked when the next image comes and at teardown.
function showImageBytes(model, img, state) {
  const data = model.get("image");
  if (state.url) URL.revokeObjectURL(state.url);
  state.url = null;
  if (!data || data.byteLength === 0) {
    img.removeAttribute("src");
    return;
  }
  state.url = URL.createObjectURL(new Blob([data], { type: mimeType(model.get("image_format")) }));
  img.src = state.url;
}

// model.on for each "event": handler pair; returns the function that takes them all off again.
function subscribe(model, handlers) {
  const pairs = Object.entries(handlers);
  for (const [event, fn] of pairs) model.on(event, fn);
  return () => {
    for (const [event, fn] of pairs) model.off(event, fn);
  };
}

// An id for an element that others refer to (aria-describedby, aria-activedescendant): unique in
// the page although every module, and maybe every view, holds its own copy of this counter.
let idCount = 0;
function uniqueId(prefix) {
  idCount += 1;
  return `${prefix}-${idCount}-${Math.random().toString(36).slice(2, 8)}`;
}

// Keys typed in a widget are the widget's: JupyterLab runs no shortcut for a key event when it meets
// the attribute `data-lm-suppress-shortcuts` on the event's target, or on an ancestor, before an
// element that the shortcut's selector matches (else a typed "m" turns the explorer's cell into
// Markdown and arrows move the notebook's cell selection). The notebook's shortcuts match the
// focused element itself (`.jp-Notebook.jp-mod-commandMode :focus`), so the attribute has to be
// on every element that takes the focus: it goes on the closest `.cnnw-explorer` around `el` (or
// on `el` itself outside an explorer), and from there, at `focusin`, on whatever element inside
// receives the focus (the explorer's ipywidgets controls too). A view is rendered before it is
// attached to the page: until `el` is, this looks again at each animation frame, at most `frames`
// times. Returns the function that stops looking (for the view's teardown).
const SUPPRESS = "data-lm-suppress-shortcuts";

function keepKeysInside(ev) {
  if (ev.target && ev.target.setAttribute) ev.target.setAttribute(SUPPRESS, "true");
}

function suppressShortcuts(el, frames = 600) {
  let raf = 0;
  let left = frames;
  const look = () => {
    raf = 0;
    if (el.isConnected) {
      const root = el.closest(".cnnw-explorer") || el;
      if (root.getAttribute(SUPPRESS) !== "true") {
        // once per root, whichever of the widgets inside (each with its own copy of this file) comes first
        root.setAttribute(SUPPRESS, "true");
        root.addEventListener("focusin", keepKeysInside);
      }
    } else if (left > 0) {
      left -= 1;
      raf = requestAnimationFrame(look);
    }
  };
  look();
  return () => {
    if (raf) cancelAnimationFrame(raf);
    raf = 0;
  };
}
