// Occluder canvas: the image with a box the user drags and resizes entirely in the browser.
// The box follows the pointer locally; the kernel receives at most one `box` update per
// animation frame (requestAnimationFrame coalescing), plus `dragging` at start and end.
// Keys move it the same way: a key press is a drag from key down to key up (a held key repeats
// moves, sent at most once per frame), so the kernel sees `box` and `dragging` as for the mouse.

// Pure geometry, exported for tests; mirrors cnnwidgets.widgets.occluder.clamp_box.
export function clampBoxTo(x, y, w, h, W, H) {
  w = Math.max(1, Math.min(Math.round(w), W));
  h = Math.max(1, Math.min(Math.round(h), H));
  x = Math.max(0, Math.min(Math.round(x), W - w));
  y = Math.max(0, Math.min(Math.round(y), H - h));
  return [x, y, w, h];
}

// The box after the pointer moved (dx, dy) image pixels since the drag started from `box`.
// "move" translates it; "resize" moves the bottom-right corner, keeping the top-left fixed.
export function dragBox(mode, box, dx, dy, W, H) {
  if (mode === "move") return clampBoxTo(box[0] + dx, box[1] + dy, box[2], box[3], W, H);
  const w = Math.min(box[2] + dx, W - box[0]);
  const h = Math.min(box[3] + dy, H - box[1]);
  return clampBoxTo(box[0], box[1], w, h, W, H);
}

// Boxes narrower or lower than this (CSS pixels) carry the resize handle outside their
// bottom-right corner: inside, it would cover most of the box and leave nothing to move it by.
export const SMALL_BOX_PX = 24;

export function handleOutside(widthPx, heightPx) {
  return Math.min(widthPx, heightPx) < SMALL_BOX_PX;
}

// How far (CSS pixels) the resize handle reaches past the box's bottom-right corner: a normal
// box's handle straddles the corner, a small box's sits outside it (see widgets.css).
export const HANDLE_REACH_PX = 6;
export const SMALL_HANDLE_REACH_PX = 14;

// Which edges of a `W` x `H` image the box (x, y, w, h) is too near, on the right and at the
// bottom, for a handle reaching `reachPx` CSS pixels past its corner at `s` CSS pixels per image
// pixel (by default: which edges it touches). There the handle is placed so that it never sticks
// out of the image: inside a normal box; beside, below or above a small one.
export function handleAtEdge(b, W, H, s = 1, reachPx = 0.5) {
  return { right: (W - b[0] - b[2]) * s < reachPx, bottom: (H - b[1] - b[3]) * s < reachPx };
}

// Arrow keys move the box `step` image pixels per press, Shift+arrows BIG_STEP times as far.
export const BIG_STEP = 4;

const ARROWS = new Map([
  ["ArrowLeft", [-1, 0]],
  ["ArrowRight", [1, 0]],
  ["ArrowUp", [0, -1]],
  ["ArrowDown", [0, 1]],
]);

// The box `b` grown by `d` image pixels in width and height (shrunk for d < 0) about its centre,
// as the explorer's size slider scales it; at least 1 pixel, inside the `W` x `H` image.
export function growBox(b, d, W, H) {
  const w = Math.max(1, Math.min(b[2] + d, W));
  const h = Math.max(1, Math.min(b[3] + d, H));
  return clampBoxTo(b[0] + (b[2] - w) / 2, b[1] + (b[3] - h) / 2, w, h, W, H);
}

// The box after the key `key` (a KeyboardEvent.key) with the modifiers `mods` ({shift, ctrl, alt,
// meta}) on the box `b` (null: none) in a `W` x `H` image, or null for a key that does nothing:
//   arrows             move the box `step` image pixels (Shift: BIG_STEP * step);
//   Ctrl+arrows        move its bottom-right corner as the resize handle does (Shift: farther);
//   + or =, - or _     grow or shrink it by `step` pixels in width and height, about its centre;
//   Enter or Space     place a `size` x `size` box in the middle of the image when there is none.
// Alt and Meta combinations are left to the browser (Alt+arrows navigate back and forward).
export function keyBox(key, mods, b, W, H, step, size) {
  if (mods.alt || mods.meta) return null;
  if (!b) {
    if ((key === "Enter" || key === " ") && !mods.ctrl) {
      const s = Math.min(size, W, H);
      return clampBoxTo((W - s) / 2, (H - s) / 2, s, s, W, H);
    }
    return null;
  }
  const arrow = ARROWS.get(key);
  if (arrow) {
    const d = step * (mods.shift ? BIG_STEP : 1);
    return dragBox(mods.ctrl ? "resize" : "move", b, arrow[0] * d, arrow[1] * d, W, H);
  }
  if (mods.ctrl) return null;
  if (key === "+" || key === "=") return growBox(b, step, W, H);
  if (key === "-" || key === "_") return growBox(b, -step, W, H);
  return null;
}

// What a screen reader says for the widget: the image and where the box is, in image pixels.
export function occluderLabel(b, W, H, enabled = true) {
  const image = `input image, ${W} by ${H} pixels`;
  if (!enabled) return image;
  if (!b) return `${image}; no occluder box: press Enter to place one`;
  return `${image}; occluder box at x ${b[0]}, y ${b[1]}, width ${b[2]}, height ${b[3]} (image pixels)`;
}

// The keys, for screen readers (aria-describedby) and the docstring of OccluderCanvas.
export function occluderHelp(step) {
  return `Arrow keys move the occluder box ${step} image pixels, ${BIG_STEP * step} with Shift; `
    + "Control with arrow keys moves its bottom-right corner to resize it; "
    + "plus and minus grow and shrink it; Enter or Space places a box when there is none.";
}

const sameBox = (a, b) => a === b || (!!a && !!b && a[0] === b[0] && a[1] === b[1] && a[2] === b[2] && a[3] === b[3]);

export default {
  render({ model, el }) {
    const root = document.createElement("div");
    root.className = "cnnw-occluder";
    // one stop in the tab order for the image and its box; "application" hands the arrow keys
    // to the widget instead of a screen reader's reading cursor
    root.tabIndex = 0;
    root.setAttribute("role", "application");
    root.setAttribute("aria-roledescription", "occluder");
    const img = document.createElement("img");
    img.className = "cnnw-occluder-image";
    img.draggable = false;
    img.alt = "input image";
    const help = document.createElement("span");
    help.className = "cnnw-sr-only";
    help.id = uniqueId("cnnw-occluder-help");
    root.setAttribute("aria-describedby", help.id);
    // where a key put the box, said once the key is released
    const said = document.createElement("span");
    said.className = "cnnw-sr-only";
    said.setAttribute("aria-live", "polite");
    const box = document.createElement("div");
    box.className = "cnnw-occluder-box";
    const handle = document.createElement("div");
    handle.className = "cnnw-occluder-handle";
    handle.title = "drag to resize";
    box.appendChild(handle);
    root.append(img, box, help, said);
    el.appendChild(root);

    const state = { url: null, drag: null, local: null, raf: 0, pending: false };

    const imageWidth = () => Math.max(1, model.get("image_width"));
    const imageHeight = () => Math.max(1, model.get("image_height"));
    // CSS pixels per image pixel as shown: the display width, or less where a narrow output
    // shrinks the picture (max-width: 100%); the box is placed in percent of the picture, so it
    // shrinks with it, and the pointer is measured against the picture's real size. The width
    // shown is kept by a ResizeObserver: draw() runs on every pointer move and reads no layout.
    let shownWidth = 0;
    const perPixel = (width) => (width > 0 ? width : model.get("display_width")) / imageWidth();
    const scale = () => perPixel(shownWidth);

    const setImage = () => showImageBytes(model, img, state);

    function setSize() {
      const w = model.get("display_width");
      root.style.width = `${w}px`;
      root.style.maxWidth = "calc(100% - 2px)"; // its 1px border on each side included
      img.style.width = "100%";
      img.style.aspectRatio = `${imageWidth()} / ${imageHeight()}`;
      img.style.height = "auto";
      img.style.imageRendering = w / imageWidth() >= 2 ? "pixelated" : "auto";
      draw();
    }

    function draw() {
      const b = state.local || model.get("box");
      root.setAttribute("aria-label", occluderLabel(b, imageWidth(), imageHeight(), model.get("enabled")));
      help.textContent = occluderHelp(model.get("key_step"));
      root.classList.toggle("cnnw-dragging", state.drag !== null);
      if (!b || !model.get("enabled")) {
        box.style.display = "none";
        return;
      }
      const s = scale();
      const pct = (v, of) => `${(100 * v) / of}%`;
      box.style.display = "block";
      box.style.left = pct(b[0], imageWidth());
      box.style.top = pct(b[1], imageHeight());
      box.style.width = pct(b[2], imageWidth());
      box.style.height = pct(b[3], imageHeight());
      const picture = model.get("fill_image");
      if (picture) {
        // the fill's own picture (blur, noise), the part of it under the box: what the model sees there
        box.style.background = "";
        box.style.backgroundImage = `url("${picture}")`;
        box.style.backgroundOrigin = "border-box";
        box.style.backgroundRepeat = "no-repeat";
        box.style.backgroundSize = `${imageWidth() * s}px ${imageHeight() * s}px`;
        box.style.backgroundPosition = `${-b[0] * s}px ${-b[1] * s}px`;
        box.style.imageRendering = img.style.imageRendering;
      } else {
        box.style.backgroundImage = "";
        box.style.background = model.get("fill_color");
      }
      const small = handleOutside(b[2] * s, b[3] * s);
      box.classList.toggle("cnnw-occluder-small", small);
      const edge = handleAtEdge(b, imageWidth(), imageHeight(), s, small ? SMALL_HANDLE_REACH_PX : HANDLE_REACH_PX);
      box.classList.toggle("cnnw-occluder-at-right", edge.right);
      box.classList.toggle("cnnw-occluder-at-bottom", edge.bottom);
    }

    const clampBox = (x, y, w, h) => clampBoxTo(x, y, w, h, imageWidth(), imageHeight());

    // image pixels under the pointer, measured from the image itself (inside the frame's border)
    function toImage(ev) {
      const r = img.getBoundingClientRect();
      const s = perPixel(r.width);
      return [(ev.clientX - r.left) / s, (ev.clientY - r.top) / s];
    }

    function flush() {
      state.raf = 0;
      if (!state.pending || !state.local) return;
      state.pending = false;
      model.set("box", state.local);
      model.save_changes();
    }

    function schedule() {
      state.pending = true;
      if (!state.raf) state.raf = requestAnimationFrame(flush);
    }

    // one pointer drives a drag: the others (a second finger, a pen next to the mouse) are
    // ignored until it is released; a key drag has no pointer
    const ownPointer = (ev) =>
      state.drag !== null && state.drag.mode !== "key" && ev.pointerId === state.drag.pointerId;

    // The start of a drag from the box `b`: the box and `dragging` travel together in one message.
    function startDrag(drag, b) {
      state.drag = drag;
      state.local = b;
      model.set("box", b);
      model.set("dragging", true);
      model.save_changes();
      draw();
    }

    // The end of a drag: the final box and the end of the drag travel together in one message.
    function endDrag() {
      state.drag = null;
      if (state.raf) cancelAnimationFrame(state.raf);
      state.raf = 0;
      state.pending = false;
      model.set("box", state.local);
      model.set("dragging", false);
      model.save_changes();
      state.local = null;
      draw();
    }

    function onDown(ev) {
      if (ev.button !== 0 || !model.get("enabled")) return;
      ev.preventDefault();
      root.focus({ preventScroll: true }); // the keys work on the box the pointer just moved
      if (state.drag) return;
      const [px, py] = toImage(ev);
      let b = model.get("box");
      let mode = "move";
      if (b && ev.target === handle) {
        mode = "resize";
      } else if (!(b && px >= b[0] && px < b[0] + b[2] && py >= b[1] && py < b[1] + b[3])) {
        // pressing outside the box (or with no box yet) centres the box on the pointer
        const w = b ? b[2] : model.get("default_size");
        const h = b ? b[3] : model.get("default_size");
        b = clampBox(px - w / 2, py - h / 2, w, h);
      }
      try {
        root.setPointerCapture(ev.pointerId);
      } catch (err) {
        // a pointer the browser does not track (a synthetic event): the drag still works without capture
      }
      startDrag({ mode, start: [px, py], box: b.slice(), pointerId: ev.pointerId }, b);
    }

    function onMove(ev) {
      if (!ownPointer(ev)) return;
      const d = state.drag;
      const [px, py] = toImage(ev);
      const dx = px - d.start[0];
      const dy = py - d.start[1];
      const b = dragBox(d.mode, d.box, dx, dy, imageWidth(), imageHeight());
      const old = state.local;
      if (old && old[0] === b[0] && old[1] === b[1] && old[2] === b[2] && old[3] === b[3]) return;
      state.local = b;
      draw();
      schedule();
    }

    function onEnd(ev) {
      if (ownPointer(ev)) endDrag();
    }

    // A key press is a drag: its first move starts it, moves of a held key follow at most once per
    // frame, and the key's release (or the focus leaving) ends it. A key that moves nothing (the
    // box at the image's edge) sends nothing.
    function onKeyDown(ev) {
      if (!model.get("enabled") || (state.drag && state.drag.mode !== "key")) return;
      const current = state.local || model.get("box");
      const mods = { shift: ev.shiftKey, ctrl: ev.ctrlKey, alt: ev.altKey, meta: ev.metaKey };
      const b = keyBox(ev.key, mods, current, imageWidth(), imageHeight(), model.get("key_step"),
        model.get("default_size"));
      if (b === null) return;
      ev.preventDefault();
      ev.stopPropagation(); // the notebook around the widget does nothing with this key
      if (sameBox(b, current)) return;
      if (!state.drag) {
        startDrag({ mode: "key" }, b);
        return;
      }
      state.local = b;
      draw();
      schedule();
    }

    function onKeyEnd() {
      if (!state.drag || state.drag.mode !== "key") return;
      endDrag();
      said.textContent = occluderLabel(model.get("box"), imageWidth(), imageHeight());
    }

    root.addEventListener("pointerdown", onDown);
    root.addEventListener("pointermove", onMove);
    root.addEventListener("pointerup", onEnd);
    root.addEventListener("pointercancel", onEnd);
    root.addEventListener("lostpointercapture", onEnd);
    root.addEventListener("keydown", onKeyDown);
    root.addEventListener("keyup", onKeyEnd);
    root.addEventListener("blur", onKeyEnd);

    const redraw = () => draw();
    const unsubscribe = subscribe(model, {
      "change:image": setImage,
      "change:image_width": setSize,
      "change:image_height": setSize,
      "change:display_width": setSize,
      "change:box": redraw,
      "change:enabled": redraw,
      "change:fill_color": redraw,
      "change:fill_image": redraw,
      "change:key_step": redraw,
    });
    const stopLooking = suppressShortcuts(el);
    // a picture shrunk or grown by its output's width: the handle's placement depends on it
    const resized = typeof ResizeObserver === "undefined" ? null : new ResizeObserver((entries) => {
      shownWidth = entries[entries.length - 1].contentRect.width;
      draw();
    });
    if (resized) resized.observe(img);
    setImage();
    setSize();

    return () => {
      stopLooking();
      if (resized) resized.disconnect();
      if (state.raf) cancelAnimationFrame(state.raf);
      if (state.url) URL.revokeObjectURL(state.url);
      unsubscribe();
    };
  },
};
