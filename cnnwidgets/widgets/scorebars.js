// Class scores: top-k bars with probability and change against the unoccluded image.
// Clicking a row picks that class as the target. The rows are a listbox: arrow keys (and Home,
// End) move the active row, Enter or Space picks it as a click does.

// The tooltip of a class's row: the full class name (the label column may cut it short).
export function rowTitle(label) {
  return `${label}: click to make this the target class`;
}

// A change of probability `delta` (a fraction) in percentage points, signed ("+1.5", "−0.3"),
// "0.0" for a change that rounds to zero (no sign: "−0.0" would read as a fall), or "" for none.
export function deltaText(delta) {
  if (delta === null || delta === undefined || !Number.isFinite(delta)) return "";
  const text = Math.abs(100 * delta).toFixed(1);
  if (Number(text) === 0) return "0.0";
  return `${delta > 0 ? "+" : "\u2212"}${text}`;
}

// What a screen reader says for a row: the class, its probability and its change.
export function rowLabel(row) {
  const change = deltaText(row.delta);
  const text = `${row.label}, ${(100 * row.prob).toFixed(1)}%`;
  return change ? `${text}, change ${change} points` : text;
}

// The class a key makes active among the rows `order` (class indices, top to bottom) when
// `current` is active (null, or a class no longer shown: none); null for a key that moves nothing.
export function nextRow(order, current, key) {
  if (!order.length) return null;
  const at = order.indexOf(current);
  const last = order.length - 1;
  switch (key) {
    case "ArrowDown":
      return order[Math.min(at + 1, last)];
    case "ArrowUp":
      return order[Math.max(at - 1, 0)];
    case "Home":
      return order[0];
    case "End":
      return order[last];
    default:
      return null;
  }
}

// The row element of each class shown, keyed by class index: a new `rows` value updates these
// elements in place (and reorders them), so a row stays the same element across frames.
function rowElement() {
  const line = document.createElement("div");
  line.className = "cnnw-score-row";
  line.setAttribute("role", "option");
  line.id = uniqueId("cnnw-score-row");
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
  line.setAttribute("aria-selected", String(row.index === selected));
  line.setAttribute("aria-label", rowLabel(row));
  const [label, bar, value, delta] = line.children;
  label.textContent = row.label;
  // the text again, bold and invisible (widgets.css): a column keeps its width when its row
  // turns bold on being picked, so the bars do not move
  label.dataset.text = row.label;
  line.title = rowTitle(row.label);
  bar.firstChild.style.width = `${Math.max(0, Math.min(1, row.prob)) * 100}%`;
  value.textContent = `${(100 * row.prob).toFixed(1)}%`;
  value.dataset.text = value.textContent;
  delta.className = "cnnw-score-delta";
  delta.textContent = deltaText(row.delta);
  delta.dataset.text = delta.textContent;
  if (delta.textContent) {
    const d = 100 * row.delta;
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
    list.tabIndex = 0;
    list.setAttribute("role", "listbox");
    root.append(heading, list);
    el.appendChild(root);

    const lines = new Map(); // class index -> row element
    let pressed = null; // class index of the row a press started on, until its release
    let active = null; // class index of the row the keys act on (null: the selected or first row)

    function drawTitle() {
      const title = model.get("title");
      heading.textContent = title;
      heading.style.display = title ? "" : "none";
      list.setAttribute("aria-label", title || "class scores");
    }

    // the row the keys act on: the one last moved to, else the selected one, else the first
    function activeIndex() {
      if (lines.has(active)) return active;
      const selected = model.get("selected");
      if (lines.has(selected)) return selected;
      const first = list.firstElementChild;
      return first ? Number(first.dataset.index) : null;
    }

    function drawActive() {
      const index = activeIndex();
      for (const [i, line] of lines) line.classList.toggle("cnnw-score-active", i === index);
      const line = lines.get(index);
      if (line) list.setAttribute("aria-activedescendant", line.id);
      else list.removeAttribute("aria-activedescendant");
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
      drawActive();
    }

    function pick(index) {
      active = index;
      // the selected class picked again is unpicked: the target follows the top class again
      model.set("selected", index === model.get("selected") ? null : index);
      model.save_changes();
      drawRows();
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
      pick(index);
    }

    const onCancel = () => {
      pressed = null;
    };

    function onKeyDown(ev) {
      if (ev.altKey || ev.ctrlKey || ev.metaKey) return;
      const index = activeIndex();
      if (ev.key === "Enter" || ev.key === " ") {
        ev.preventDefault();
        ev.stopPropagation(); // the notebook around the widget does nothing with this key
        if (index !== null) pick(index);
        return;
      }
      const order = Array.from(list.children, (line) => Number(line.dataset.index));
      const next = nextRow(order, index, ev.key);
      if (next === null) return;
      ev.preventDefault();
      ev.stopPropagation();
      active = next;
      drawActive();
      lines.get(next).scrollIntoView({ block: "nearest" });
    }

    list.addEventListener("pointerdown", onDown);
    list.addEventListener("pointerup", onUp);
    list.addEventListener("pointercancel", onCancel);
    list.addEventListener("keydown", onKeyDown);
    const unsubscribe = subscribe(model, {
      "change:rows": drawRows,
      "change:selected": drawRows,
      "change:title": drawTitle,
    });
    const stopLooking = suppressShortcuts(el);
    drawTitle();
    drawRows();
    return () => {
      stopLooking();
      unsubscribe();
    };
  },
};
