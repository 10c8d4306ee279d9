// An upload button: the file chosen is read in the browser and sent to the kernel in pieces of
// CHUNK bytes. One message per file would be dropped by the Jupyter server above its websocket
// limit (10 MiB by default) without a word. The kernel acknowledges each piece before the next
// one is sent, so the share shown on the button is what has arrived, and a large file does not
// pile up in the connection. A file larger than the widget's `max_bytes` is not sent at all,
// and the kernel is told why.

const CHUNK = 1 << 20;
// How long to wait for the kernel to acknowledge a piece (it may be busy with a cell).
const ACK_TIMEOUT_MS = 120000;

// [start, end) byte ranges of a file of `size` bytes in pieces of `chunk`; one empty range for an
// empty file, so that it arrives too (and is refused as an image by the kernel, with the reason).
export function pieces(size, chunk = CHUNK) {
  if (size === 0) return [[0, 0]];
  const out = [];
  for (let start = 0; start < size; start += chunk) out.push([start, Math.min(size, start + chunk)]);
  return out;
}

// The percentage shown on the button once `received` of `size` bytes have arrived.
export function shareText(received, size) {
  return `${Math.floor((100 * received) / Math.max(1, size))}%`;
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
    let waiting = null; // {id, resolve, reject} of the piece sent last
    const show = () => {
      if (!busy) text.textContent = model.get("label");
      button.title = model.get("hint");
      input.accept = model.get("accept");
    };

    // the kernel's answers: "ack" (bytes received so far) or "stop" (it gave the file up)
    const onMessage = (msg) => {
      if (!waiting || !msg || msg.id !== waiting.id) return;
      if (msg.kind === "ack") waiting.resolve(msg.received);
      else if (msg.kind === "stop") waiting.reject(null);
    };

    function answer(id) {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error("the kernel did not answer within 2 minutes")), ACK_TIMEOUT_MS);
        waiting = {
          id,
          resolve: (v) => { clearTimeout(timer); resolve(v); },
          reject: (e) => { clearTimeout(timer); reject(e); },
        };
      });
    }

    async function send(file) {
      const id = `${++uploadSerial}-${Math.random().toString(36).slice(2, 8)}`;
      if (file.size > model.get("max_bytes")) {
        model.send({ kind: "refused", id, name: file.name, size: file.size });
        return;
      }
      busy = true;
      button.disabled = true;
      text.textContent = `${model.get("label")} 0%`;
      try {
        const data = await file.arrayBuffer();
        for (const [start, end] of pieces(data.byteLength)) {
          const arrived = answer(id);
          model.send({ kind: "piece", id, name: file.name, size: data.byteLength, offset: start },
                     undefined, [data.slice(start, end)]);
          text.textContent = `${model.get("label")} ${shareText(await arrived, data.byteLength)}`;
        }
      } catch (err) {
        // null: the kernel stopped the upload and said why itself
        if (err !== null) model.send({ kind: "failed", id, name: file.name, message: String((err && err.message) || err) });
      } finally {
        waiting = null;
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
    const unsubscribe = subscribe(model, {
      "change:label": show, "change:hint": show, "change:accept": show, "msg:custom": onMessage,
    });
    const stopLooking = suppressShortcuts(el);
    show();
    return () => {
      stopLooking();
      unsubscribe();
      if (waiting) waiting.reject(new Error("the upload button was closed"));
      button.removeEventListener("click", choose);
      input.removeEventListener("change", chosen);
    };
  },
};
