// Feature grid: one mosaic image of all channels. Hover shows the channel and its statistics
// locally (the geometry and the statistics are synced with the image); a click selects a channel.
// The arithmetic mirrors cnnwidgets.render.grid.GridLayout.channel_at.

function decodeStats(view) {
  if (!view || view.byteLength === 0) return null;
  // copy: a DataView's offset into its buffer need not be 4-byte aligned
  const bytes = new Uint8Array(view.buffer, view.byteOffset, view.byteLength).slice();
  return new Float32Array(bytes.buffer);
}

function fmt(v) {
  if (!Number.isFinite(v)) return String(v);
  const a = Math.abs(v);
  if (a !== 0 && (a < 0.01 || a >= 1000)) return v.toExponential(1);
  return v.toFixed(a < 1 ? 3 : 2);
}

// Pure geometry, exported for tests; mirrors GridLayout.channel_at and GridLayout.tile_rect.
export function channelAtPixel(L, x, y) {
  if (!L || !L.count) return null;
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
  const slot = L ? L.order.indexOf(channel) : -1;
  if (slot < 0) return null;
  const row = Math.floor(slot / L.cols);
  const col = slot % L.cols;
  const b = L.border;
  return [b + col * (L.tile_width + b), b + row * (L.tile_height + b), L.tile_width, L.tile_height];
}

export default {
  render({ model, el }) {
    const root = document.createElement("div");
    root.className = "cnnw-grid";
    const img = document.createElement("img");
    img.className = "cnnw-grid-image";
    img.draggable = false;
    img.alt = "feature maps";
    const sel = document.createElement("div");
    sel.className = "cnnw-grid-selected";
    const tip = document.createElement("div");
    tip.className = "cnnw-grid-tip";
    root.append(img, sel, tip);
    el.appendChild(root);

    const state = { url: null, hover: -1, raf: 0, layout: null, stats: null };

    function scale() {
      const L = state.layout;
      if (!L || !L.width) return 1;
      const w = model.get("display_width") || L.width;
      return w / L.width;
    }

    const channelAt = (x, y) => channelAtPixel(state.layout, x, y);
    const tileRect = (channel) => tileRectOf(state.layout, channel);

    const setImage = () => showImageBytes(model, img, state);

    function setLayout() {
      state.layout = model.get("layout");
      const L = state.layout;
      if (L && L.width) {
        const s = scale();
        img.style.width = `${L.width * s}px`;
        img.style.height = `${L.height * s}px`;
        root.style.width = `${L.width * s}px`;
        root.style.height = `${L.height * s}px`;
      }
      drawSelection();
    }

    function drawSelection() {
      const r = tileRect(model.get("selected"));
      if (!r) {
        sel.style.display = "none";
        return;
      }
      const s = scale();
      sel.style.display = "block";
      sel.style.left = `${r[0] * s - 2}px`;
      sel.style.top = `${r[1] * s - 2}px`;
      sel.style.width = `${r[2] * s}px`;
      sel.style.height = `${r[3] * s}px`;
    }

    function describe(channel) {
      const st = state.stats;
      let text = `channel ${channel}`;
      if (st && st.length >= (channel + 1) * 5) {
        const o = channel * 5;
        text += `\nmean ${fmt(st[o])}  std ${fmt(st[o + 1])}\nmin ${fmt(st[o + 2])}  max ${fmt(st[o + 3])}`;
        text += `\nactive ${(100 * st[o + 4]).toFixed(0)}%`;
        if (st[o + 3] <= 0) text += "  (dead on this image)";
      }
      return text;
    }

    function syncHover() {
      state.raf = 0;
      if (model.get("hover") === state.hover) return;
      model.set("hover", state.hover);
      model.save_changes();
    }

    function pointerPixel(ev) {
      const r = img.getBoundingClientRect();
      const s = scale();
      return [(ev.clientX - r.left) / s, (ev.clientY - r.top) / s, ev.clientX - r.left, ev.clientY - r.top];
    }

    function onMove(ev) {
      const [x, y, cx, cy] = pointerPixel(ev);
      const ch = channelAt(x, y);
      if (ch === null) {
        tip.style.display = "none";
      } else {
        tip.textContent = describe(ch);
        tip.style.display = "block";
        tip.style.left = `${cx + 14}px`;
        tip.style.top = `${cy + 14}px`;
      }
      const hover = ch === null ? -1 : ch;
      if (hover !== state.hover) {
        state.hover = hover;
        if (!state.raf) state.raf = requestAnimationFrame(syncHover);
      }
    }

    function onLeave() {
      tip.style.display = "none";
      state.hover = -1;
      if (!state.raf) state.raf = requestAnimationFrame(syncHover);
    }

    function onClick(ev) {
      const [x, y] = pointerPixel(ev);
      const ch = channelAt(x, y);
      if (ch === null) return;
      model.set("selected", ch);
      model.save_changes();
      drawSelection();
    }

    function setStats() {
      state.stats = decodeStats(model.get("stats"));
    }

    root.addEventListener("pointermove", onMove);
    root.addEventListener("pointerleave", onLeave);
    root.addEventListener("click", onClick);
    const unsubscribe = subscribe(model, {
      "change:image": setImage,
      "change:layout": setLayout,
      "change:display_width": setLayout,
      "change:selected": drawSelection,
      "change:stats": setStats,
    });
    setStats();
    setImage();
    setLayout();

    return () => {
      if (state.raf) cancelAnimationFrame(state.raf);
      if (state.url) URL.revokeObjectURL(state.url);
      unsubscribe();
    };
  },
};
