// The geocells page: drop photos, POST each to /locate, draw its top-k cells on the map.
// Plain JavaScript and the Leaflet served by this server; nothing from the network.
"use strict";

const COLOURS = ["#ff3b30", "#0a84ff", "#ffcc00", "#34c759", "#bf5af2", "#ff9f0a", "#64d2ff"];
const state = { photos: 0, layers: [], token: null, map: null, results: [] };

function readToken() {
  // A token given as #token=... is kept for this tab and sent as a cookie for map tiles.
  const match = location.hash.match(/token=([^&]+)/);
  if (match) {
    sessionStorage.setItem("geocells_token", decodeURIComponent(match[1]));
    history.replaceState(null, "", location.pathname);
  }
  state.token = sessionStorage.getItem("geocells_token");
  if (state.token) {
    document.cookie = `geocells_token=${encodeURIComponent(state.token)}; path=/; SameSite=Strict`;
  }
}

function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  if (state.token) headers.set("Authorization", `Bearer ${state.token}`);
  return fetch(path, { ...options, headers });
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function setStatus(text) {
  document.getElementById("status").textContent = text;
}

function percent(confidence) {
  return confidence === null ? "n/a" : `${(100 * confidence).toFixed(0)} %`;
}

async function initMap() {
  const map = L.map("map", { zoomControl: true, preferCanvas: false });
  state.map = map;
  map.setView([0, 0], 2);
  let response = await api("/info");
  while (response.status === 503) {  // the server is still loading its database and model
    const body = await response.json().catch(() => ({}));
    document.getElementById("database").textContent = body.error || "loading…";
    await new Promise((resolve) => setTimeout(resolve, 1000));
    response = await api("/info");
  }
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    document.getElementById("database").textContent = `error: ${body.error || response.status}`;
    return;
  }
  const info = await response.json();
  const region = info.region || {};
  document.getElementById("database").textContent =
    `${region.name || "region"} · ${info.cells.toLocaleString()} cells at level ` +
    `${info.levels ? info.levels.cell : "?"} · ${info.calibrated ? "calibrated" : "NOT calibrated"}`;
  document.getElementById("top-k").max = info.limits.max_top_k;
  if (info.tiles) {
    L.tileLayer("/tiles/{z}/{x}/{y}.png", {
      maxZoom: 21, attribution: "aerial imagery of this database",
    }).addTo(map);
  }
  if (region.bounds) {
    const [south, west, north, east] = region.bounds;
    const box = L.rectangle([[south, west], [north, east]],
      { color: "#ffffff", weight: 1, fill: false, dashArray: "4 4", interactive: false });
    box.addTo(map);
    map.fitBounds(box.getBounds());
  }
}

function candidateCard(prediction, colour, onPick) {
  const card = element("button", "candidate");
  card.type = "button";
  const tile = element("img");
  tile.alt = `aerial tile of cell ${prediction.token}`;
  tile.loading = "lazy";
  tile.src = `/cells/${prediction.token}/tile.png?px=128`;
  tile.onerror = () => { tile.style.visibility = "hidden"; };
  card.append(tile, element("div", "confidence", `#${prediction.rank} · ${percent(prediction.confidence)}`),
    element("div", "", `${prediction.lat.toFixed(5)}, ${prediction.lon.toFixed(5)}`));
  card.style.setProperty("--colour", colour);
  card.addEventListener("click", () => onPick(card));
  return card;
}

function drawPredictions(name, predictions, colour, list) {
  const group = L.layerGroup().addTo(state.map);
  state.layers.push(group);
  const cards = [];
  predictions.forEach((prediction) => {
    const ring = prediction.polygon.coordinates[0].map(([lon, lat]) => [lat, lon]);
    L.polygon(ring, { color: colour, weight: prediction.rank === 1 ? 3 : 1.5,
      fillOpacity: 0.12, className: "geocells-cell" }).addTo(group);
    const marker = L.circleMarker([prediction.lat, prediction.lon], {
      radius: prediction.rank === 1 ? 9 : 6, color: "#000", weight: 1, fillColor: colour,
      fillOpacity: 0.95, className: "geocells-marker",
    }).addTo(group);
    marker.bindTooltip(`${name} · #${prediction.rank} · ${percent(prediction.confidence)}`);
    const card = candidateCard(prediction, colour, (picked) => {
      cards.forEach((other) => other.classList.remove("active"));
      picked.classList.add("active");
      state.map.flyTo([prediction.lat, prediction.lon], Math.max(state.map.getZoom(), 17));
      marker.openTooltip();
    });
    marker.on("click", () => card.click());
    cards.push(card);
    list.append(card);
  });
  return group;
}

async function locatePhoto(file) {
  const colour = COLOURS[state.photos % COLOURS.length];
  state.photos += 1;
  const item = element("li", "photo");
  item.style.setProperty("--colour", colour);
  const header = element("header");
  const thumbnail = element("img");
  thumbnail.alt = file.name;
  thumbnail.src = URL.createObjectURL(file);
  thumbnail.onerror = () => { thumbnail.style.visibility = "hidden"; };
  const caption = element("div");
  const status = element("div", "", "locating…");
  caption.append(element("div", "name", file.name), status);
  header.append(thumbnail, caption);
  const candidates = element("div", "candidates");
  item.append(header, candidates);
  document.getElementById("photos").prepend(item);

  // The answer as the server gave it, under the name the user knows the photo by.
  const record = { index: state.photos - 1, filename: file.name, error: "locating" };
  state.results.push(record);
  const form = new FormData();
  form.append("files", file, file.name);
  const topK = document.getElementById("top-k").value || 5;
  try {
    const response = await api(`/locate?top_k=${encodeURIComponent(topK)}`, { method: "POST", body: form });
    const body = await response.json();
    const result = body.results ? body.results[0] : null;
    if (!response.ok || !result || result.error) {
      status.textContent = (result && result.error) || body.error || `HTTP ${response.status}`;
      status.className = "error";
      record.error = status.textContent;
      return false;
    }
    delete record.error;
    record.predictions = result.predictions;
    const best = result.predictions[0];
    status.textContent = `best: ${percent(best.confidence)} within 100 m`;
    drawPredictions(file.name, result.predictions, colour, candidates);
    return true;
  } catch (error) {
    status.textContent = `request failed: ${error}`;
    status.className = "error";
    record.error = status.textContent;
    return false;
  }
}

async function locateAll(files) {
  const images = Array.from(files);
  if (!images.length) return;
  setStatus(`locating ${images.length} photo(s)…`);
  // One request per photo: the server batches concurrent requests onto one encoder call.
  const outcomes = await Promise.all(images.map(locatePhoto));
  const located = outcomes.filter(Boolean).length;
  const drawn = L.featureGroup(state.layers.flatMap((group) => group.getLayers()));
  if (drawn.getLayers().length) state.map.fitBounds(drawn.getBounds().pad(0.15), { maxZoom: 17 });
  setStatus(`${located} of ${images.length} photo(s) located`);
  document.getElementById("downloads").hidden = state.results.length === 0;
  document.body.dataset.located = String(document.querySelectorAll(".photo").length);
}

function initDrop() {
  const drop = document.getElementById("drop");
  const picker = document.getElementById("picker");
  picker.addEventListener("change", () => { locateAll(picker.files); picker.value = ""; });
  ["dragenter", "dragover"].forEach((kind) => drop.addEventListener(kind, (event) => {
    event.preventDefault();
    drop.classList.add("over");
  }));
  ["dragleave", "drop"].forEach((kind) => drop.addEventListener(kind, () => drop.classList.remove("over")));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    locateAll(event.dataTransfer.files);
  });
  // Dropping a photo anywhere on the page must not navigate away from it.
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => {
    event.preventDefault();
    if (event.target !== drop && !drop.contains(event.target)) locateAll(event.dataTransfer.files);
  });
  document.getElementById("clear").addEventListener("click", () => {
    state.layers.forEach((layer) => layer.remove());
    state.layers = [];
    state.results = [];
    document.getElementById("downloads").hidden = true;
    document.getElementById("photos").replaceChildren();
    setStatus("");
  });
}

// -- downloads: every photo dropped so far, in the order dropped -------------------------

function scalarFields(prediction) {
  return Object.entries(prediction).filter(([, value]) => value === null || typeof value !== "object");
}

function resultsJson() {
  const failed = state.results.filter((r) => r.error).length;
  const topK = Number(document.getElementById("top-k").value) || 5;
  return { top_k: topK, located: state.results.length - failed, failed, results: state.results };
}

function resultsGeojson() {
  // As the server's format=geojson: per prediction a Point and its cell Polygon.
  const features = [];
  state.results.filter((r) => !r.error).forEach((r) => r.predictions.forEach((p) => {
    const properties = { index: r.index, filename: r.filename, ...Object.fromEntries(scalarFields(p)) };
    features.push({ type: "Feature", geometry: { type: "Point", coordinates: [p.lon, p.lat] },
      properties: { ...properties, kind: "prediction" } });
    if (p.polygon) {
      features.push({ type: "Feature", geometry: p.polygon, properties: { ...properties, kind: "cell" } });
    }
  }));
  const errors = state.results.filter((r) => r.error)
    .map((r) => ({ index: r.index, filename: r.filename, error: r.error }));
  return { type: "FeatureCollection", features, errors };
}

function csvCell(value) {
  const text = value === null || value === undefined ? "" : String(value);
  return /[",\n\r]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

function resultsCsv() {
  // One row per prediction (one per failed photo, with its error); the columns are the
  // predictions' own fields, so the file follows whatever the server answers.
  const columns = [];
  state.results.forEach((r) => (r.predictions || []).forEach((p) => scalarFields(p).forEach(([key]) => {
    if (!columns.includes(key)) columns.push(key);
  })));
  const header = ["index", "filename", ...columns.filter((c) => c !== "index" && c !== "filename"), "error"];
  const rows = [header];
  state.results.forEach((r) => {
    if (r.error) {
      rows.push(header.map((c) => (c === "index" ? r.index : c === "filename" ? r.filename : c === "error" ? r.error : "")));
    } else {
      r.predictions.forEach((p) => rows.push(header.map((c) =>
        (c === "index" ? r.index : c === "filename" ? r.filename : c === "error" ? "" : p[c]))));
    }
  });
  return rows.map((row) => row.map(csvCell).join(",")).join("\r\n") + "\r\n";
}

function download(format) {
  const builders = {
    json: [() => JSON.stringify(resultsJson(), null, 2), "application/json", "json"],
    geojson: [() => JSON.stringify(resultsGeojson()), "application/geo+json", "geojson"],
    csv: [resultsCsv, "text/csv", "csv"],
  };
  const [build, type, suffix] = builders[format];
  const link = element("a");
  link.href = URL.createObjectURL(new Blob([build()], { type }));
  link.download = `geocells-results.${suffix}`;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 10000);
}

function initDownloads() {
  document.querySelectorAll("#downloads button").forEach((button) =>
    button.addEventListener("click", () => download(button.dataset.format)));
}

readToken();
initDrop();
initDownloads();
initMap();
