// Decoded samples to screen pixels, done in the browser so window changes need no round trip:
// the modality LUT (rescale slope and intercept), then the linear window of PS3.3 C.11.2.1.2
// exactly as diagnosis/dicom/render.py computes it for WADO-RS /rendered, MONOCHROME1 inverted.
// Colour frames are shown as stored.

// image: {width, height, components, samples} from htj2k.decode; display: {slope, intercept,
// inverted}; window: {center, width}.
export function toImageData(image, display, window) {
  const { width, height, components, samples } = image;
  const pixels = new ImageData(width, height);
  const out = pixels.data;
  if (components === 3) {
    for (let i = 0, j = 0; i < samples.length; i += 3, j += 4) {
      out[j] = samples[i]; out[j + 1] = samples[i + 1]; out[j + 2] = samples[i + 2]; out[j + 3] = 255;
    }
    return pixels;
  }
  const { slope, intercept, inverted } = display;
  const low = window.center - 0.5 - (window.width - 1) / 2;
  const span = Math.max(window.width - 1, 1);
  for (let i = 0, j = 0; i < samples.length; i += 1, j += 4) {
    const grey = Math.min(255, Math.max(0, Math.round(((samples[i] * slope + intercept - low) / span) * 255)));
    out[j] = out[j + 1] = out[j + 2] = inverted ? 255 - grey : grey;
    out[j + 3] = 255;
  }
  return pixels;
}

// The window that shows every value, for images that store none.
export function fullRange(image, display) {
  let low = Infinity, high = -Infinity;
  for (const stored of image.samples) {
    low = Math.min(low, stored);
    high = Math.max(high, stored);
  }
  [low, high] = [low * display.slope + display.intercept, high * display.slope + display.intercept].sort((a, b) => a - b);
  return { center: (low + high) / 2, width: Math.max(high - low, 1) };
}
