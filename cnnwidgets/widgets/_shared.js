// Helpers shared by the widgets' modules. cnnwidgets.widgets._base.esm puts this file in front
// of each module's own code, so these are plain top-level functions of every module.

function mimeType(format) {
  return format === "png" ? "image/png" : "image/jpeg";
}

// Shows the bytes of the model's `image` trait (in its `image_format`) in `img` through an
// object URL; `state.url` holds that URL, revoked when the next image comes and at teardown.
function showImageBytes(model, img, state) {
  const data = model.get("image");
  if (state.url) URL.revokeObjectURL(state.url);
  state.url = null;
  if (!data || data.byteLength === 0) {
    img.removeAttribute("src");
    return;
  }
  state.url = URL.createObjectURL(new Blob([data], { type: mimeType(model.get("image_format")) }));
  img.src = state.url;
}

// model.on for each "event": handler pair; returns the function that takes them all off again.
function subscribe(model, handlers) {
  const pairs = Object.entries(handlers);
  for (const [event, fn] of pairs) model.on(event, fn);
  return () => {
    for (const [event, fn] of pairs) model.off(event, fn);
  };
}
