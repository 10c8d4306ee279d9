// Class scores: top-k bars with probability and change against the unoccluded image.
// Clicking a row picks that class as the target.

// The tooltip of a class's row: the full class name (the label column may cut it short).
export function rowTitle(label) {
  return `${label}: click to make this the target class`;
}

// The row element of each class shown, keyed by class index: a new `rows` value updates these
// elements in place (and reorders them), so a row stays the same element across frames.
function rowElement() {
  const line = document.createElement("div");
  line.className = "cnnw-score-row";
  const label = document.createElement("span");
  label.className = "cnnw-score-label";
  const bar = document.createElement("span");
  bar.className = "cnnw-score-bar";
  const fill = document.createElement("span");
  fill.className = "cnnw-score-fill";
  bar.appendChild(fill);
  const value = document.createElement("span");
  value.className = "cnnw-score-value";
  const delta = document.createElement("span");
  delta.className = "cnnw-score-delta";
  line.append(label, bar, value, delta);
  return line;
}

function fillRow(line, row, selected) {
  line.dataset.index = String(row.index);
  line.classList.toggle("cnnw-score-selected", row.index === selected);
  const [label, bar, value, delta] = line.children;
  label.textContent = row.label;
  line.title = rowTitle(row.label);
  bar.firstChild.style.width = `${Math.max(0, Math.min(1, row.prob)) * 100}%`;
  value.textContent = `${(100 * row.prob).toFixed(1)}%`;
  delta.className = "cnnw-score-delta";
  delta.textContent = "";
  if (row.delta !== null && row.delta !== undefined && Number.isFinite(row.delta)) {
    const d = 100 * row.delta;
    delta.textContent = `${d >= 0 ? "+" : "\u2212"}${Math.abs(d).toFixed(1)}`;
    delta.classList.add(d > 0.05 ? "cnnw-up" : d < -0.05 ? "cnnw-down" : "cnnw-same");
  }
}

export default {
  render({ model, el }) {
    const root = document.createElement("div");
    root.className = "cnnw-scores";
    const heading = document.createElement("div");
    heading.className = "cnnw-scores-title";
    const list = document.createElement("div");
    list.className = "cnnw-scores-list";
    root.append(heading, list);
    el.appendChild(root);

    const lines = new Map(); // class index -> row element
    let pressed = null; // class index of the row a press started on, until its release

    function drawTitle() {
      const title = model.get("title");
      heading.textContent = title;
      heading.style.display = title ? "" : "none";
    }

    function drawRows() {
      const selected = model.get("selected");
      const rows = model.get("rows") || [];
      const keep = new Set(rows.map((r) => r.index));
      for (const [index, line] of lines) {
        if (!keep.has(index)) {
          line.remove();
          lines.delete(index);
        }
      }
      rows.forEach((row, i) => {
        let line = lines.get(row.index);
        if (!line) {
          line = rowElement();
          lines.set(row.index, line);
        }
        fillRow(line, row, selected);
        if (list.children[i] !== line) list.insertBefore(line, list.children[i] || null);
      });
    }

    const rowIndex = (ev) => {
      const line = ev.target.closest ? ev.target.closest(".cnnw-score-row") : null;
      return line && list.contains(line) ? Number(line.dataset.index) : null;
    };

    // A click picks the class its press was on: rows move and change between the press and the
    // release when a frame arrives, so the release only has to land on some row.
    function onDown(ev) {
      pressed = ev.button === 0 ? rowIndex(ev) : null;
    }

    function onUp(ev) {
      const index = pressed;
      pressed = null;
      if (index === null || ev.button !== 0 || rowIndex(ev) === null) return;
      model.set("selected", index);
      model.save_changes();
    }

    const onCancel = () => {
      pressed = null;
    };

    list.addEventListener("pointerdown", onDown);
    list.addEventListener("pointerup", onUp);
    list.addEventListener("pointercancel", onCancel);
    const unsubscribe = subscribe(model, {
      "change:rows": drawRows,
      "change:selected": drawRows,
      "change:title": drawTitle,
    });
    drawTitle();
    drawRows();
    return unsubscribe;
  },
};
