// An upload button: the file chosen is read in the browser and sent to the kernel in pieces of
// CHUNK bytes, with the share sent shown on the button. One message per file would be dropped
// by the Jupyter server above its websocket limit (10 MiB by default) without a word; a file
// larger than the widget's `max_bytes` is not sent at all, and the kernel is told why.

const CHUNK = 1 << 20;

// [start, end) byte ranges of a file of `size` bytes in pieces of `chunk`; one empty range for an
// empty file, so that it arrives too (and is refused as an image by the kernel, with the reason).
export function pieces(size, chunk = CHUNK) {
  if (size === 0) return [[0, 0]];
  const out = [];
  for (let start = 0; start < size; start += chunk) out.push([start, Math.min(size, start + chunk)]);
  return out;
}

let uploadSerial = 0;

export default {
  render({ model, el }) {
    const input = document.createElement("input");
    input.type = "file";
    input.hidden = true;
    const button = document.createElement("button");
    button.type = "button";
    button.className = "jupyter-widgets jupyter-button widget-button cnnw-upload";
    const icon = document.createElement("i");
    icon.className = "fa fa-upload";
    const text = document.createElement("span");
    button.append(icon, text);
    el.append(button, input);

    let busy = false;
    const show = () => {
      if (!busy) text.textContent = model.get("label");
      button.title = model.get("hint");
      input.accept = model.get("accept");
    };

    async function send(file) {
      const id = ++uploadSerial;
      if (file.size > model.get("max_bytes")) {
        model.send({ kind: "refused", id, name: file.name, size: file.size });
        return;
      }
      busy = true;
      button.disabled = true;
      try {
        const data = await file.arrayBuffer();
        for (const [start, end] of pieces(data.byteLength)) {
          model.send({ kind: "piece", id, name: file.name, size: data.byteLength, offset: start },
                     undefined, [data.slice(start, end)]);
          text.textContent = `${model.get("label")} ${Math.round((100 * end) / Math.max(1, data.byteLength))}%`;
        }
      } catch (err) {
        model.send({ kind: "failed", id, name: file.name, message: String((err && err.message) || err) });
      } finally {
        busy = false;
        button.disabled = false;
        show();
      }
    }

    const choose = () => input.click();
    const chosen = () => {
      const file = input.files && input.files[0];
      input.value = ""; // the same file chosen again is a new choice
      if (file) send(file);
    };
    button.addEventListener("click", choose);
    input.addEventListener("change", chosen);
    const unsubscribe = subscribe(model, { "change:label": show, "change:hint": show, "change:accept": show });
    const stopLooking = suppressShortcuts(el);
    show();
    return () => {
      stopLooking();
      unsubscribe();
      button.removeEventListener("click", choose);
      input.removeEventListener("change", chosen);
    };
  },
};
