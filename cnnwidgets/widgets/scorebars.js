// Class scores: top-k bars with probability and change against the unoccluded image.
// Clicking a row picks that class as the target.

export default {
  render({ model, el }) {
    const root = document.createElement("div");
    root.className = "cnnw-scores";
    el.appendChild(root);

    function draw() {
      root.replaceChildren();
      const title = model.get("title");
      if (title) {
        const h = document.createElement("div");
        h.className = "cnnw-scores-title";
        h.textContent = title;
        root.appendChild(h);
      }
      const selected = model.get("selected");
      for (const row of model.get("rows")) {
        const line = document.createElement("div");
        line.className = "cnnw-score-row";
        if (row.index === selected) line.classList.add("cnnw-score-selected");
        line.dataset.index = String(row.index);
        line.title = "click to make this the target class";
        const label = document.createElement("span");
        label.className = "cnnw-score-label";
        label.textContent = row.label;
        const bar = document.createElement("span");
        bar.className = "cnnw-score-bar";
        const fill = document.createElement("span");
        fill.className = "cnnw-score-fill";
        fill.style.width = `${Math.max(0, Math.min(1, row.prob)) * 100}%`;
        bar.appendChild(fill);
        const value = document.createElement("span");
        value.className = "cnnw-score-value";
        value.textContent = `${(100 * row.prob).toFixed(1)}%`;
        const delta = document.createElement("span");
        delta.className = "cnnw-score-delta";
        if (row.delta !== null && row.delta !== undefined && Number.isFinite(row.delta)) {
          const d = 100 * row.delta;
          delta.textContent = `${d >= 0 ? "+" : "\u2212"}${Math.abs(d).toFixed(1)}`;
          delta.classList.add(d > 0.05 ? "cnnw-up" : d < -0.05 ? "cnnw-down" : "cnnw-same");
        }
        line.append(label, bar, value, delta);
        line.addEventListener("click", () => {
          model.set("selected", row.index);
          model.save_changes();
        });
        root.appendChild(line);
      }
    }

    const unsubscribe = subscribe(model, { "change:rows": draw, "change:selected": draw, "change:title": draw });
    draw();
    return unsubscribe;
  },
};
