// HTJ2K decoding with OpenJPH's WebAssembly build (web/vendor/openjph/). A progressive frame
// stream is RPCL with one tile-part per resolution, so the prefix that ends a level decodes on
// its own at that resolution (docs/imaging-delivery.md).
const VENDOR = new URL("./vendor/openjph/", import.meta.url);
let loading = null;
let codec = null;

// The Emscripten loader is a classic script, not a module: it defines the global `Module`
// factory, which fetches the .wasm next to it.
function loadScript(url) {
  return new Promise((resolve, reject) => {
    const script = Object.assign(document.createElement("script"), { src: url });
    script.addEventListener("load", resolve);
    script.addEventListener("error", () => reject(new Error(`cannot load the HTJ2K decoder (${url})`)));
    document.head.append(script);
  });
}

// Resolves once decode() can be used.
export function loadDecoder() {
  loading ??= loadScript(new URL("openjphjs.js", VENDOR))
    .then(() => window.Module({ locateFile: (name) => new URL(name, VENDOR).href }))
    .then((module) => { codec = module; });
  return loading;
}

// bytes: a whole code stream, or a prefix ending at a resolution level's end; reduce: how many
// resolutions to drop (0 = full size). Returns {width, height, components, samples} with the
// samples as stored: Int16Array, Uint16Array or Uint8Array, components interleaved.
// Synchronous, so a level is on screen before the next chunk is handled.
export function decode(bytes, reduce) {
  if (!codec) throw new Error("the HTJ2K decoder is not loaded yet");
  const decoder = new codec.HTJ2KDecoder();
  try {
    decoder.getEncodedBuffer(bytes.length).set(bytes);
    decoder.decodeSubResolution(reduce);
    // The decoder reports failures instead of throwing; its buffer then holds nothing usable.
    const problem = decoder.getIsHeaderValid() ? decoder.getLastErrorMessage() : "no valid header";
    if (problem) throw new Error(`HTJ2K decoding failed: ${problem}`);
    const info = decoder.getFrameInfo();
    if (info.bitsPerSample <= 8 && info.isSigned) throw new Error("signed 8-bit HTJ2K is not supported");
    const { width, height } = decoder.calculateSizeAtDecompositionLevel(reduce);
    const Samples = info.bitsPerSample <= 8 ? Uint8Array : info.isSigned ? Int16Array : Uint16Array;
    const view = decoder.getDecodedBuffer(); // WebAssembly memory: copy it out before delete()
    const samples = new Samples(view.buffer, view.byteOffset, view.byteLength / Samples.BYTES_PER_ELEMENT).slice();
    return { width, height, components: info.componentCount, samples };
  } finally {
    decoder.delete();
  }
}
