// imgsearch web page: search by image, more like this, browse, duplicates, upload.
// Plain JavaScript, no dependencies; talks to the gateway's JSON API (v1/...).
"use strict";

const TOKEN_KEY = "imgsearch.token";
const $ = (id) => document.getElementById(id);

// ---------------------------------------------------------------- API and errors

function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

function authHeaders() {
  const value = token();
  return value ? { Authorization: `Bearer ${value}` } : {};
}

class ApiError extends Error {}

async function describeFailure(response) {
  let code = "";
  let message = "";
  try {
    const body = await response.json();
    code = body.code || "";
    message = body.message || "";
  } catch (_) {
    message = response.statusText;
  }
  const hints = {
    401: " Set a token (top right).",
    403: " Your token does not allow this.",
    413: " Pick a smaller file.",
    429: " The server is busy: try again in a moment.",
    503: " Search is not available right now: try again shortly.",
    504: " Search took too long: try again, or narrow the filter.",
  };
  return `${message || "request failed"} (${code || "HTTP"} ${response.status}).${hints[response.status] || ""}`;
}

async function api(path, options = {}) {
  let response;
  try {
    response = await fetch(path, { ...options, headers: { ...authHeaders(), ...(options.headers || {}) } });
  } catch (error) {
    throw new ApiError(`The gateway cannot be reached: ${error.message}`);
  }
  if (!response.ok) {
    throw new ApiError(await describeFailure(response));
  }
  return response;
}

async function apiJson(path, options) {
  return (await api(path, options)).json();
}

function showError(message) {
  $("error-text").textContent = message;
  $("error").hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error-text").textContent = "";
}

async function guarded(action) {
  clearError();
  try {
    await action();
  } catch (error) {
    showError(error instanceof ApiError ? error.message : `Something went wrong: ${error.message}`);
  }
}

// ---------------------------------------------------------------- tiles

async function loadThumbnail(img, url) {
  if (!token()) {
    img.src = url; // the browser caches it (ETag, Cache-Control)
    return;
  }
  const response = await fetch(url, { headers: authHeaders() });
  if (!response.ok) throw new Error(String(response.status));
  img.src = URL.createObjectURL(await response.blob());
}

function thumbnail(url, alt) {
  const img = document.createElement("img");
  img.className = "thumb";
  img.alt = alt;
  img.loading = "lazy";
  img.decoding = "async";
  const missing = () => {
    const box = document.createElement("div");
    box.className = "thumb missing";
    box.textContent = "no preview";
    img.replaceWith(box);
  };
  img.addEventListener("error", missing, { once: true });
  img.addEventListener("load", () => {
    if (img.naturalWidth < 64) img.classList.add("pixelated"); // e.g. 28 px Fashion-MNIST
  });
  loadThumbnail(img, url).catch(missing);
  return img;
}

function labelsText(labels) {
  return Object.entries(labels || {})
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([key, value]) => `${key}=${value}`)
    .join(", ");
}

// The file name at the end of a uri, for display: percent-encoded characters are decoded
// ("name%20with%20spaces.jpg" -> "name with spaces.jpg"). Bytes that are not UTF-8, control
// characters and path separators stay encoded. The stored uri and id are never changed.
function displayName(uri) {
  const last = (uri || "").split(/[\\/]/).pop();
  return last.replace(/(?:%[0-9A-Fa-f]{2})+/g, decodeEscapes);
}

// Decode a run of %XX escapes one UTF-8 character (1 to 4 escapes) at a time.
function decodeEscapes(run) {
  let out = "";
  for (let at = 0; at < run.length; ) {
    const lead = parseInt(run.slice(at + 1, at + 3), 16);
    const size = lead < 0x80 ? 1 : lead >= 0xf0 ? 4 : lead >= 0xe0 ? 3 : lead >= 0xc0 ? 2 : 1;
    const escapes = run.slice(at, at + 3 * size);
    let text = null;
    try {
      text = decodeURIComponent(escapes);
    } catch {
      text = null; // not UTF-8
    }
    if (text === null || /[\u0000-\u001f\u007f-\u009f/\\]/.test(text)) {
      out += run.slice(at, at + 3); // this escape stays as it is
      at += 3;
    } else {
      out += text;
      at += escapes.length;
    }
  }
  return out;
}

// What a hit's matched_view says, in words (an unknown kind is named as it is).
const VIEW_NOTES = {
  inset: "found as the picture pasted into your image",
  straightened: "found with your image straightened",
  uncaptioned: "found with the captions on your image painted over",
};

function viewNote(view) {
  // Own keys only: "constructor" or "toString" would otherwise read Object's prototype.
  return Object.hasOwn(VIEW_NOTES, view)
    ? VIEW_NOTES[view]
    : `found through the ${view} view of your image`;
}

// A tile: thumbnail, optional score, id, labels; clicking it runs "more like this".
function tile(item, score) {
  const figure = document.createElement("figure");
  figure.className = "tile clickable";
  figure.tabIndex = 0;
  figure.dataset.id = item.id;
  figure.title = `More like ${item.id}`;
  figure.append(thumbnail(item.thumbnail_url, item.id));
  const caption = document.createElement("figcaption");
  if (score !== undefined) {
    const s = document.createElement("span");
    s.className = "score";
    s.textContent = score.toFixed(4);
    caption.append(s);
  }
  if (item.matched_view) {
    const v = document.createElement("span");
    v.className = "matched-view";
    v.dataset.matchedView = item.matched_view;
    v.textContent = viewNote(item.matched_view);
    caption.append(v);
  }
  const name = displayName(item.uri);
  if (name && name !== item.id) {
    const n = document.createElement("span");
    n.className = "name";
    n.textContent = name;
    caption.append(n);
  }
  const id = document.createElement("span");
  id.className = "id";
  id.textContent = item.id;
  caption.append(id);
  const labels = labelsText(item.labels);
  if (labels) {
    const l = document.createElement("span");
    l.className = "labels";
    l.textContent = labels;
    caption.append(l);
  }
  figure.append(caption);
  const open = () => {
    showView("search");
    guarded(() => searchById(item.id));
  };
  figure.addEventListener("click", open);
  figure.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      open();
    }
  });
  return figure;
}

// ---------------------------------------------------------------- search

function searchOptions() {
  const options = { top_k: Number($("top-k").value), filter: $("filter").value.trim() };
  const minScore = $("min-score").value.trim();
  if (minScore !== "") options.min_score = Number(minScore);
  return options;
}

function showQuery(src, caption) {
  $("query").hidden = false;
  const img = $("query-image");
  if (src) {
    img.src = src;
  } else {
    img.removeAttribute("src");
  }
  $("query-caption").textContent = caption;
}

function showHits(result, started) {
  const grid = $("results");
  grid.replaceChildren(...result.hits.map((hit) => tile(hit, hit.score)));
  const ms = Math.round(performance.now() - started);
  const cached = result.cached ? ", from the cache" : "";
  $("status").textContent = result.hits.length
    ? `${result.hits.length} hits in ${ms} ms${cached}. Click one for more like it.`
    : "No hits (is the collection empty, or does the filter match nothing?).";
}

// The gateway's own limits (GET v1/limits), asked once; unknown if that fails.
let gatewayLimits = null;

function limits() {
  if (!gatewayLimits) gatewayLimits = apiJson("v1/limits").catch(() => ({}));
  return gatewayLimits;
}

function formatBytes(count) {
  if (count >= 1024 * 1024) return `${(count / (1024 * 1024)).toFixed(1).replace(/\.0$/, "")} MiB`;
  if (count >= 1024) return `${Math.round(count / 1024)} KiB`;
  return `${count} bytes`;
}

// Refuse, with a readable reason, a file that cannot be a query or an upload,
// before sending it: not an image, empty, or over the gateway's upload limit.
async function checkImageFile(file) {
  const name = file.name || "The pasted image";
  // No type or a generic one (a file without a known extension): Search decides.
  const unknown = file.type === "" || file.type === "application/octet-stream";
  if (!(file.type.startsWith("image/") || unknown)) {
    throw new ApiError(`${name} is not an image (${file.type}). Pick a JPEG, PNG, WebP, GIF, BMP or TIFF file.`);
  }
  if (file.size === 0) throw new ApiError(`${name} is empty (0 bytes).`);
  const max = (await limits()).max_upload_bytes;
  if (max && file.size > max) {
    throw new ApiError(
      `${name} is ${formatBytes(file.size)}, over the upload limit of ${formatBytes(max)}. Pick a smaller file.`,
    );
  }
}

// The query the options (filter, top k, min score) apply to, to run it again when they change.
let lastQuery = null;

function rerunLastQuery() {
  if (!lastQuery) {
    throw new ApiError("Drop a photo, pick a file or paste an image first: the filter, top k and min score apply to it.");
  }
  return lastQuery.kind === "image" ? searchByImage(lastQuery.file) : searchById(lastQuery.id);
}

async function searchByImage(file) {
  if (!file) return;
  await checkImageFile(file);
  lastQuery = { kind: "image", file };
  showQuery(URL.createObjectURL(file), `Your image: ${file.name || "pasted image"}`);
  $("results").replaceChildren();
  $("status").textContent = "Searching…";
  const options = searchOptions();
  const params = new URLSearchParams({ top_k: String(options.top_k) });
  if (options.filter) params.set("filter", options.filter);
  if (options.min_score !== undefined) params.set("min_score", String(options.min_score));
  const form = new FormData();
  form.append("image", file, file.name || "pasted.png");
  const started = performance.now();
  try {
    const result = await apiJson(`v1/search/image?${params}`, { method: "POST", body: form });
    showHits(result, started);
  } catch (error) {
    $("status").textContent = "";
    throw error;
  }
}

async function searchById(id) {
  lastQuery = { kind: "id", id };
  const url = `v1/thumbnails/${encodeURIComponent(id)}`;
  $("results").replaceChildren();
  showQuery(null, `More like ${id}`);
  loadThumbnail($("query-image"), url).catch(() => {});
  $("status").textContent = "Searching…";
  const started = performance.now();
  try {
    const result = await apiJson("v1/search", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ id, ...searchOptions() }),
    });
    showHits(result, started);
  } catch (error) {
    $("status").textContent = "";
    throw error;
  }
}

function setUpSearch() {
  const zone = $("dropzone");
  const input = $("file");
  // Enter in the filter box, or another top k or min score: the same query again
  // (never a page reload that would lose the results).
  $("search-options").addEventListener("submit", (event) => {
    event.preventDefault();
    guarded(rerunLastQuery);
  });
  for (const id of ["top-k", "min-score"]) {
    $(id).addEventListener("change", () => {
      if (lastQuery) guarded(rerunLastQuery);
    });
  }
  input.addEventListener("change", () => guarded(() => searchByImage(input.files[0])).finally(() => (input.value = "")));
  zone.addEventListener("click", (event) => {
    if (event.target === zone || event.target.tagName === "P" || event.target.tagName === "STRONG") input.click();
  });
  zone.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      input.click();
    }
  });
  for (const type of ["dragenter", "dragover"]) {
    zone.addEventListener(type, (event) => {
      event.preventDefault();
      zone.classList.add("over");
    });
  }
  for (const type of ["dragleave", "drop"]) {
    zone.addEventListener(type, () => zone.classList.remove("over"));
  }
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    const file = event.dataTransfer && event.dataTransfer.files[0];
    if (!file) {
      showError("Drop an image file (not a link or text).");
      return;
    }
    guarded(() => searchByImage(file));
  });
  document.addEventListener("paste", (event) => {
    const items = Array.from((event.clipboardData && event.clipboardData.items) || []);
    const image = items.find((item) => item.kind === "file" && item.type.startsWith("image/"));
    if (!image) return;
    event.preventDefault();
    showView("search");
    guarded(() => searchByImage(image.getAsFile()));
  });
}

// ---------------------------------------------------------------- browse

const browse = { tokens: [""], page: 0 };

async function showBrowsePage() {
  const params = new URLSearchParams({ page_size: $("browse-size").value });
  const filter = $("browse-filter").value.trim();
  if (filter) params.set("filter", filter);
  const pageToken = browse.tokens[browse.page];
  if (pageToken) params.set("page_token", pageToken);
  $("browse-status").textContent = "Loading…";
  let page;
  try {
    page = await apiJson(`v1/items?${params}`);
  } catch (error) {
    $("browse-status").textContent = "";
    throw error;
  }
  browse.tokens.length = browse.page + 1;
  if (page.next_page_token) browse.tokens.push(page.next_page_token);
  $("browse-grid").replaceChildren(...page.items.map((item) => tile(item)));
  $("browse-page").textContent = `page ${browse.page + 1}`;
  $("browse-prev").disabled = browse.page === 0;
  $("browse-next").disabled = !page.next_page_token;
  $("browse-status").textContent = page.items.length
    ? `${page.items.length} items in id order. Click one for more like it.`
    : "No items.";
}

function setUpBrowse() {
  $("browse-form").addEventListener("submit", (event) => {
    event.preventDefault();
    browse.tokens = [""];
    browse.page = 0;
    guarded(showBrowsePage);
  });
  $("browse-next").addEventListener("click", () => {
    browse.page += 1;
    guarded(showBrowsePage);
  });
  $("browse-prev").addEventListener("click", () => {
    browse.page = Math.max(0, browse.page - 1);
    guarded(showBrowsePage);
  });
}

// ---------------------------------------------------------------- duplicates

function showGroup(group, number) {
  const box = document.createElement("div");
  box.className = "group";
  const title = document.createElement("h3");
  title.textContent = `Group ${number}: ${group.items.length} items, weakest link ${group.min_score.toFixed(4)}`;
  const grid = document.createElement("div");
  grid.className = "grid";
  grid.append(...group.items.map((member) => tile(member, member.best_score)));
  box.append(title, grid);
  $("dup-groups").append(box);
}

function onDuplicatesEvent(event, counts) {
  const bar = $("dup-progress");
  if (event.progress) {
    bar.max = Math.max(1, event.progress.items_total);
    bar.value = event.progress.items_done;
    $("dup-status").textContent = `Scanned ${event.progress.items_done} of ${event.progress.items_total} items…`;
  } else if (event.group) {
    counts.groups += 1;
    showGroup(event.group, counts.groups);
  } else if (event.summary) {
    const s = event.summary;
    $("dup-status").textContent = s.groups
      ? `${s.groups} groups, ${s.items_in_groups} items in groups; scanned ${s.items_scanned} items in ${s.elapsed_s.toFixed(1)} s.`
      : `No duplicates among ${s.items_scanned} items (${s.elapsed_s.toFixed(1)} s).`;
  } else if (event.error) {
    throw new ApiError(`${event.error.message} (${event.error.code}).`);
  }
}

async function findDuplicates() {
  const button = $("dup-start");
  button.disabled = true;
  $("dup-groups").replaceChildren();
  $("dup-progress").hidden = false;
  $("dup-progress").value = 0;
  $("dup-status").textContent = "Starting…";
  const counts = { groups: 0 };
  try {
    const response = await api("v1/duplicates", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ threshold: Number($("dup-threshold").value), filter: $("dup-filter").value.trim() }),
    });
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let pending = "";
    for (;;) {
      const { value, done } = await reader.read();
      pending += decoder.decode(value || new Uint8Array(), { stream: !done });
      const lines = pending.split("\n");
      pending = lines.pop();
      for (const line of lines) if (line.trim()) onDuplicatesEvent(JSON.parse(line), counts);
      if (done) break;
    }
  } catch (error) {
    $("dup-status").textContent = "";
    throw error;
  } finally {
    button.disabled = false;
    $("dup-progress").hidden = true;
  }
}

function setUpDuplicates() {
  $("duplicates-form").addEventListener("submit", (event) => {
    event.preventDefault();
    guarded(findDuplicates);
  });
}

// ---------------------------------------------------------------- upload

function parseLabels(text) {
  const labels = {};
  for (const [number, raw] of text.split("\n").entries()) {
    const line = raw.trim();
    if (!line) continue;
    const at = line.indexOf("=");
    if (at < 1) throw new ApiError(`Labels, line ${number + 1}: write key=value.`);
    labels[line.slice(0, at).trim()] = line.slice(at + 1).trim();
  }
  return labels;
}

async function upload() {
  const file = $("upload-file").files[0];
  if (!file) throw new ApiError("Pick an image to insert.");
  await checkImageFile(file);
  const form = new FormData();
  form.append("image", file, file.name);
  form.append("id", $("upload-id").value.trim());
  form.append("uri", $("upload-uri").value.trim() || file.name);
  form.append("labels", JSON.stringify(parseLabels($("upload-labels").value)));
  $("upload-status").textContent = "Inserting…";
  try {
    const result = await apiJson("v1/items", { method: "POST", body: form });
    const warning = result.message ? ` (${result.message})` : "";
    $("upload-status").textContent = `Stored as ${result.id}${warning}.`;
    $("upload-form").reset();
  } catch (error) {
    $("upload-status").textContent = "";
    throw error;
  }
}

function setUpUpload() {
  $("upload-form").addEventListener("submit", (event) => {
    event.preventDefault();
    guarded(upload);
  });
}

// ---------------------------------------------------------------- views and token

const VIEWS = ["search", "browse", "duplicates", "upload"];

function showView(name) {
  const view = VIEWS.includes(name) ? name : "search";
  for (const section of document.querySelectorAll("main > section")) {
    section.hidden = section.dataset.view !== view;
  }
  for (const link of document.querySelectorAll("nav a[data-view]")) {
    if (link.dataset.view === view) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  if (location.hash !== `#${view}`) history.replaceState(null, "", `#${view}`);
  if (view === "browse" && !$("browse-grid").childElementCount) guarded(showBrowsePage);
}

function setUpToken() {
  const auth = $("auth");
  const refresh = () => auth.classList.toggle("on", Boolean(token()));
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = $("token").value.trim();
    if (value) sessionStorage.setItem(TOKEN_KEY, value);
    $("token").value = "";
    auth.open = false;
    refresh();
  });
  $("forget-token").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    refresh();
  });
  refresh();
}

document.addEventListener("DOMContentLoaded", () => {
  $("error-close").addEventListener("click", clearError);
  setUpToken();
  setUpSearch();
  setUpBrowse();
  setUpDuplicates();
  setUpUpload();
  window.addEventListener("hashchange", () => showView(location.hash.slice(1)));
  showView(location.hash.slice(1));
});
