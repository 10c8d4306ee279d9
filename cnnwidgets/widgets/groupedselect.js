// A drop-down whose options are grouped (<optgroup>), e.g. layers grouped by block.

export default {
  render({ model, el }) {
    const root = document.createElement("label");
    root.className = "cnnw-select";
    const caption = document.createElement("span");
    caption.className = "cnnw-select-caption";
    const select = document.createElement("select");
    root.append(caption, select);
    el.appendChild(root);

    function build() {
      caption.textContent = model.get("description");
      select.replaceChildren();
      for (const group of model.get("groups")) {
        const og = document.createElement("optgroup");
        og.label = group.label;
        for (const [label, value] of group.options) {
          const opt = document.createElement("option");
          opt.value = value;
          opt.textContent = label;
          og.appendChild(opt);
        }
        select.appendChild(og);
      }
      select.value = model.get("value");
    }

    function onChange() {
      model.set("value", select.value);
      model.save_changes();
    }
    const setValue = () => {
      select.value = model.get("value");
    };

    select.addEventListener("change", onChange);
    const unsubscribe = subscribe(model, { "change:groups": build, "change:description": build, "change:value": setValue });
    const stopLooking = suppressShortcuts(el);
    build();
    return () => {
      stopLooking();
      unsubscribe();
    };
  },
};
