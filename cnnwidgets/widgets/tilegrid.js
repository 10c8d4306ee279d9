// Feature grid: one mosaic image of all channels. Hover shows the channel and its statistics
// locally (the geometry and the statistics are synced with the image); a click selects a channel.
// From the keyboard, arrow keys select the neighbouring tile, and a text line under the grid
// (also read by screen readers) shows the selected channel's statistics while the grid has focus.
// The arithmetic mirrors cnnwidgets.render.grid.GridLayout.channel_at. The grid shrinks to a
// narrow output, so pointer positions are mapped through the size shown on screen.

function decodeStats(view) {
  if (!view || view.byteLength === 0) return null;
  // copy: a DataView's offset into its buffer need not be 4-byte aligned
  const bytes = new Uint8Array(view.buffer, view.byteOffset, view.byteLength).slice();
  return new Float32Array(bytes.buffer);
}

export function fmt(v) {
  if (!Number.isFinite(v)) return String(v);
  const a = Math.abs(v);
  if (a !== 0 && (a < 0.01 || a >= 1000)) return v.toExponential(1);
  return v.toFixed(a < 1 ? 3 : 2);
}

// Pure geometry, exported for tests; mirrors GridLayout.channel_at and GridLayout.tile_rect.
export function channelAtPixel(L, x, y) {
  if (!L || !L.count || !Array.isArray(L.order)) return null;
  x = Math.floor(x);
  y = Math.floor(y);
  if (x < 0 || y < 0 || x >= L.width || y >= L.height) return null;
  const b = L.border;
  if (x < b || y < b) return null;
  const sx = L.tile_width + b;
  const sy = L.tile_height + b;
  const col = Math.floor((x - b) / sx);
  const row = Math.floor((y - b) / sy);
  if (x - b - col * sx >= L.tile_width || y - b - row * sy >= L.tile_height) return null;
  if (col >= L.cols || row >= L.rows) return null;
  const slot = row * L.cols + col;
  return slot < L.count ? L.order[slot] : null;
}

export function tileRectOf(L, channel) {
  const slot = L && Array.isArray(L.order) ? L.order.indexOf(channel) : -1;
  if (slot < 0) return null;
  const row = Math.floor(slot / L.cols);
  const col = slot % L.cols;
  const b = L.border;
  return [b + col * (L.tile_width + b), b + row * (L.tile_height + b), L.tile_width, L.tile_height];
}

// Mosaic pixel under a pointer at client (x, y) over the image shown in `rect` (its bounding
// client rectangle): the grid is drawn at any size (a narrow output shrinks it), so the scale
// comes from the size on screen, not from `display_width`.
export function toMosaic(L, rect, x, y) {
  if (!L || !L.width || !L.height || !rect || !(rect.width > 0) || !(rect.height > 0)) return null;
  return [((x - rect.left) * L.width) / rect.width, ((y - rect.top) * L.height) / rect.height];
}

// The tile of `channel` as percentages of the mosaic's width and height ([left, top, width,
// height]), so that its outline scales with the grid; null for a channel not shown.
export function tilePercent(L, channel) {
  const r = tileRectOf(L, channel);
  if (!r || !L.width || !L.height) return null;
  return [(100 * r[0]) / L.width, (100 * r[1]) / L.height, (100 * r[2]) / L.width, (100 * r[3]) / L.height];
}

// Top-left corner of a `tw` x `th` tooltip for a pointer at (cx, cy) over a `W` x `H` grid:
// `gap` pixels right of and below the pointer, on the other side of it where that would cross the
// grid's right or bottom edge, and shifted to stay inside the grid where it fits.
export function tipPosition(cx, cy, tw, th, W, H, gap = 14) {
  const place = (p, size, room) => {
    const after = p + gap;
    const at = after + size <= room ? after : p - gap - size;
    return Math.max(0, Math.min(at, room - size));
  };
  return [place(cx, tw, W), place(cy, th, H)];
}

// The channel selected by a key when `channel` is: the tile beside it (ArrowLeft, ArrowRight),
// above or below it (ArrowUp, ArrowDown; the last tile where the row below is shorter), the first
// or last tile (Home, End), in the mosaic's order. A channel not shown goes to the first tile; at
// an edge the selection stays, except on a page of a wider layer, where the left arrow key on the
// first tile and the right one on the last go to the channel before or after the page (`before`,
// `after`), whose page the kernel then shows. Null for a key that selects nothing or a grid
// without tiles.
export function neighbourChannel(L, channel, key) {
  if (!L || !L.count || !Array.isArray(L.order) || !L.cols) return null;
  const keys = ["ArrowLeft", "ArrowRight", "ArrowUp", "ArrowDown", "Home", "End"];
  if (!keys.includes(key)) return null;
  const slot = L.order.indexOf(channel);
  const last = L.count - 1;
  if (slot < 0) return L.order[key === "End" ? last : 0];
  if (key === "ArrowLeft" && slot === 0 && Number.isInteger(L.before)) return L.before;
  if (key === "ArrowRight" && slot === last && Number.isInteger(L.after)) return L.after;
  const row = (s) => Math.floor(s / L.cols);
  const next = {
    ArrowLeft: Math.max(slot - 1, 0),
    ArrowRight: Math.min(slot + 1, last),
    ArrowUp: slot >= L.cols ? slot - L.cols : slot,
    ArrowDown: row(slot) < row(last) ? Math.min(slot + L.cols, last) : slot,
    Home: 0,
    End: last,
  }[key];
  return L.order[next];
}

// The hover text of `channel` from the decoded statistics (5 numbers per channel: mean, std, min,
// max, active fraction); "channel N" without them. Mirrored by ChannelStats.describe in Python.
export function statsText(st, channel) {
  let text = `channel ${channel}`;
  if (st && channel >= 0 && st.length >= (channel + 1) * 5) {
    const o = channel * 5;
    text += `\nmean ${fmt(st[o])}  std ${fmt(st[o + 1])}\nmin ${fmt(st[o + 2])}  max ${fmt(st[o + 3])}`;
    text += `\nactive ${(100 * st[o + 4]).toFixed(0)}%`;
    // all zero: dead on this image; negative values too (a layer before its ReLU): they
    // still draw a pattern, and only a following ReLU makes them zero
    if (st[o + 3] <= 0) text += st[o + 2] < 0 ? "  (no positive value on this image)" : "  (dead on this image)";
  }
  return text;
}

// The statistics of a channel as the tooltip shows them (`describe`'s lines), on one line.
export function oneLine(text) {
  return text.split("\n").map((part) => part.trim()).join(", ");
}

export default {
  render({ model, el }) {
    const root = document.createElement("div");
    root.className = "cnnw-grid";
    root.tabIndex = 0;
    root.setAttribute("role", "application"); // the arrow keys are the grid's, not a reading cursor's
    root.setAttribute("aria-roledescription", "feature grid");
    const img = document.createElement("img");
    img.className = "cnnw-grid-image";
    img.draggable = false;
    img.alt = "feature maps";
    const sel = document.createElement("div");
    sel.className = "cnnw-grid-selected";
    const tip = document.createElement("div");
    tip.className = "cnnw-grid-tip";
    root.append(img, sel, tip);
    // the selected channel's statistics, shown (and read) while the grid has the keyboard focus;
    // outside the grid's box, whose height places the tile outline in percentages
    const info = document.createElement("div");
    info.className = "cnnw-grid-info";
    info.id = uniqueId("cnnw-grid-info");
    info.setAttribute("aria-live", "polite");
    root.setAttribute("aria-describedby", info.id);
    el.append(root, info);

    // pointer: the last position over the grid (client coordinates), null when outside
    const state = { url: null, hover: -1, raf: 0, pointer: null, statsBytes: null, stats: null };

    const geometry = () => model.get("geometry");

    // CSS pixels per mosaic pixel asked for (the grid is drawn smaller where it does not fit)
    function scale() {
      const L = geometry();
      if (!L || !L.width) return 1;
      const w = model.get("display_width") || L.width;
      return w / L.width;
    }

    // decoded once per `stats` value; read through here so that every change handler of one
    // message sees the statistics of that message
    function stats() {
      const bytes = model.get("stats");
      if (bytes !== state.statsBytes) {
        state.statsBytes = bytes;
        state.stats = decodeStats(bytes);
      }
      return state.stats;
    }

    const setImage = () => showImageBytes(model, img, state);

    // The grid is `display_width` wide, or less where the output is narrower (max-width: 100%
    // in the style sheet); its height follows the mosaic's aspect ratio either way.
    function setGeometry() {
      const L = geometry();
      if (L && L.width && L.height) {
        root.style.width = `${L.width * scale()}px`;
        img.style.aspectRatio = `${L.width} / ${L.height}`;
      }
      drawSelection();
      refreshHover();
    }

    // the grid's name for screen readers and the statistics line of the selected channel
    function drawInfo() {
      const L = geometry();
      const count = L && L.count ? L.count : 0;
      const channel = model.get("selected");
      const total = L && L.channels ? L.channels : count;
      const shown = total > count ? `${count} of ${total} channels (a page: the page menu shows the others)`
        : `${count} channels`;
      img.alt = `feature maps of ${shown}`;
      root.setAttribute("aria-label", `feature maps, ${shown}; arrow keys select the `
        + "neighbouring tile, Home and End the first and the last");
      info.textContent = count ? oneLine(describe(channel)) : "";
    }

    // in percentages of the grid, so that the outline follows the grid's size on screen
    function drawSelection() {
      drawInfo();
      const r = tilePercent(geometry(), model.get("selected"));
      if (!r) {
        sel.style.display = "none";
        return;
      }
      sel.style.display = "block";
      sel.style.left = `calc(${r[0]}% - 2px)`;
      sel.style.top = `calc(${r[1]}% - 2px)`;
      sel.style.width = `${r[2]}%`;
      sel.style.height = `${r[3]}%`;
    }

    // the channel under a pointer at client (x, y), with the pointer's position over the image
    function channelAt(x, y) {
      const rect = img.getBoundingClientRect();
      const m = toMosaic(geometry(), rect, x, y);
      const ch = m === null ? null : channelAtPixel(geometry(), m[0], m[1]);
      return { ch, cx: x - rect.left, cy: y - rect.top, rect };
    }

    function describe(channel) {
      return statsText(stats(), channel);
    }

    function syncHover() {
      state.raf = 0;
      if (model.get("hover") === state.hover) return;
      model.set("hover", state.hover);
      model.save_changes();
    }

    // The tile under the last pointer position, against the geometry and statistics shown now:
    // updates the tooltip and reports `hover` whenever it differs from the model's value. A view
    // the pointer is not over (and that reported nothing) leaves `hover` to the other views.
    function refreshHover() {
      const p = state.pointer;
      if (!p && state.hover === -1) {
        tip.style.display = "none";
        return;
      }
      let ch = null;
      if (p) {
        const at = channelAt(p[0], p[1]);
        ch = at.ch;
        if (ch !== null) {
          tip.textContent = describe(ch);
          tip.style.display = "block";
          const [left, top] = tipPosition(at.cx, at.cy, tip.offsetWidth, tip.offsetHeight,
            at.rect.width, at.rect.height);
          tip.style.left = `${left}px`;
          tip.style.top = `${top}px`;
        }
      }
      if (ch === null) tip.style.display = "none";
      state.hover = ch === null ? -1 : ch;
      if (model.get("hover") !== state.hover && !state.raf) state.raf = requestAnimationFrame(syncHover);
    }

    function onMove(ev) {
      state.pointer = [ev.clientX, ev.clientY];
      refreshHover();
    }

    function onLeave() {
      state.pointer = null;
      refreshHover();
    }

    // The kernel resets `hover` when the grid starts to show something else (another layer):
    // the tooltip describes the old grid, so it hides until the new geometry and statistics
    // arrive (refreshHover then reports the tile under the pointer again) or the pointer moves.
    function onHoverChanged() {
      if (state.pointer && model.get("hover") !== state.hover) tip.style.display = "none";
    }

    function onClick(ev) {
      const { ch } = channelAt(ev.clientX, ev.clientY);
      if (ch === null) return;
      model.set("selected", ch);
      model.save_changes();
      drawSelection();
    }

    // an arrow key selects the neighbouring tile, as a click on it does
    function onKeyDown(ev) {
      if (ev.altKey || ev.ctrlKey || ev.metaKey) return;
      const ch = neighbourChannel(geometry(), model.get("selected"), ev.key);
      if (ch === null) return;
      ev.preventDefault();
      ev.stopPropagation(); // the notebook around the widget does nothing with this key
      if (ch === model.get("selected")) return;
      model.set("selected", ch);
      model.save_changes();
      drawSelection();
    }

    function onStats() {
      drawInfo();
      refreshHover();
    }

    root.addEventListener("pointermove", onMove);
    root.addEventListener("pointerleave", onLeave);
    root.addEventListener("click", onClick);
    root.addEventListener("keydown", onKeyDown);
    const unsubscribe = subscribe(model, {
      "change:image": setImage,
      "change:geometry": setGeometry,
      "change:display_width": setGeometry,
      "change:selected": drawSelection,
      "change:stats": onStats,
      "change:hover": onHoverChanged,
    });
    const stopLooking = suppressShortcuts(el);
    setImage();
    setGeometry();

    return () => {
      stopLooking();
      if (state.raf) cancelAnimationFrame(state.raf);
      if (state.url) URL.revokeObjectURL(state.url);
      unsubscribe();
    };
  },
};
