// Occluder canvas: the image with a box the user drags and resizes entirely in the browser.
// The box follows the pointer locally; the kernel receives at most one `box` update per
// animation frame (requestAnimationFrame coalescing), plus `dragging` at start and end.

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

// Which edges of a `W` x `H` image the box (x, y, w, h) touches on the right and at the bottom:
// there the resize handle goes inside the box, so that it never sticks out of the image.
export function handleAtEdge(b, W, H) {
  return { right: b[0] + b[2] >= W, bottom: b[1] + b[3] >= H };
}

export default {
  render({ model, el }) {
    const root = document.createElement("div");
    root.className = "cnnw-occluder";
    const img = document.createElement("img");
    img.className = "cnnw-occluder-image";
    img.draggable = false;
    img.alt = "input image";
    const box = document.createElement("div");
    box.className = "cnnw-occluder-box";
    const handle = document.createElement("div");
    handle.className = "cnnw-occluder-handle";
    handle.title = "drag to resize";
    box.appendChild(handle);
    root.append(img, box);
    el.appendChild(root);

    const state = { url: null, drag: null, local: null, raf: 0, pending: false };

    const imageWidth = () => Math.max(1, model.get("image_width"));
    const imageHeight = () => Math.max(1, model.get("image_height"));
    const scale = () => model.get("display_width") / imageWidth();

    const setImage = () => showImageBytes(model, img, state);

    function setSize() {
      const w = model.get("display_width");
      const h = Math.round((w * imageHeight()) / imageWidth());
      root.style.width = `${w}px`;
      root.style.height = `${h}px`;
      img.style.width = `${w}px`;
      img.style.height = `${h}px`;
      img.style.imageRendering = scale() >= 2 ? "pixelated" : "auto";
      draw();
    }

    function draw() {
      const b = state.local || model.get("box");
      if (!b || !model.get("enabled")) {
        box.style.display = "none";
        return;
      }
      const s = scale();
      box.style.display = "block";
      box.style.left = `${b[0] * s}px`;
      box.style.top = `${b[1] * s}px`;
      box.style.width = `${b[2] * s}px`;
      box.style.height = `${b[3] * s}px`;
      box.style.background = model.get("fill_color");
      box.classList.toggle("cnnw-occluder-small", handleOutside(b[2] * s, b[3] * s));
      const edge = handleAtEdge(b, imageWidth(), imageHeight());
      box.classList.toggle("cnnw-occluder-at-right", edge.right);
      box.classList.toggle("cnnw-occluder-at-bottom", edge.bottom);
      root.classList.toggle("cnnw-dragging", state.drag !== null);
    }

    const clampBox = (x, y, w, h) => clampBoxTo(x, y, w, h, imageWidth(), imageHeight());

    // image pixels under the pointer, measured from the image itself (inside the frame's border)
    function toImage(ev) {
      const r = img.getBoundingClientRect();
      const s = scale();
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
    // ignored until it is released
    const ownPointer = (ev) => state.drag !== null && ev.pointerId === state.drag.pointerId;

    function onDown(ev) {
      if (ev.button !== 0 || !model.get("enabled")) return;
      ev.preventDefault();
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
      state.drag = { mode, start: [px, py], box: b.slice(), pointerId: ev.pointerId };
      state.local = b;
      try {
        root.setPointerCapture(ev.pointerId);
      } catch (err) {
        // a pointer the browser does not track (a synthetic event): the drag still works without capture
      }
      model.set("box", b);
      model.set("dragging", true);
      model.save_changes();
      draw();
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
      if (!ownPointer(ev)) return;
      state.drag = null;
      if (state.raf) cancelAnimationFrame(state.raf);
      state.raf = 0;
      state.pending = false;
      // the final position and the end of the drag travel together in one message
      model.set("box", state.local);
      model.set("dragging", false);
      model.save_changes();
      state.local = null;
      draw();
    }

    root.addEventListener("pointerdown", onDown);
    root.addEventListener("pointermove", onMove);
    root.addEventListener("pointerup", onEnd);
    root.addEventListener("pointercancel", onEnd);
    root.addEventListener("lostpointercapture", onEnd);

    const redraw = () => draw();
    const unsubscribe = subscribe(model, {
      "change:image": setImage,
      "change:image_width": setSize,
      "change:image_height": setSize,
      "change:display_width": setSize,
      "change:box": redraw,
      "change:enabled": redraw,
      "change:fill_color": redraw,
    });
    setImage();
    setSize();

    return () => {
      if (state.raf) cancelAnimationFrame(state.raf);
      if (state.url) URL.revokeObjectURL(state.url);
      unsubscribe();
    };
  },
};
