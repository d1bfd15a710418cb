// edge-facedet's web page: polls the JSON API and updates the tiles. No framework, no inline
// script (the Content-Security-Policy forbids it), text only through textContent.
"use strict";

const POLL_MS = 1500;
const EVENTS_SHOWN = 30;
const tiles = new Map();
const thumbs = new Map();

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

async function getJson(path) {
  const response = await fetch(path, { cache: "no-store", credentials: "same-origin" });
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}

function stat(list, label) {
  const item = el("div");
  const value = el("dd", "", "–");
  item.append(el("dt", "", label), value);
  list.append(item);
  return value;
}

function makeTile(camera) {
  const root = el("article", "tile");
  root.dataset.camera = camera.id;
  const title = el("h3");
  const name = el("span", "name", camera.name);
  const state = el("span", "state");
  title.append(name, state);
  const view = el("div", "view");
  const placeholder = el("div", "placeholder");
  view.append(placeholder);
  const stats = el("dl", "stats");
  const tile = {
    root, state, view, placeholder, img: null, imageKey: null, loading: false, boxes: [],
    fps: stat(stats, "fps in / out"), frames: stat(stats, "frames"),
    faces: stat(stats, "faces now"), total: stat(stats, "faces total"),
    tracks: stat(stats, "open tracks"), images: stat(stats, "images"),
    error: el("div", "error"),
  };
  tile.faces.classList.add("faces");
  tile.total.classList.add("faces-total");
  root.append(title, view, stats, tile.error);
  document.getElementById("cameras").append(root);
  return tile;
}

function drawBoxes(tile, camera) {
  // Metadata-only cameras: the faces' boxes over an empty frame, never a picture.
  for (const box of tile.boxes) box.remove();
  tile.boxes = camera.boxes.map(({ box_norm: [x0, y0, x1, y1] }) => {
    const box = el("div", "box");
    box.style.left = `${x0 * 100}%`;
    box.style.top = `${y0 * 100}%`;
    box.style.width = `${(x1 - x0) * 100}%`;
    box.style.height = `${(y1 - y0) * 100}%`;
    tile.view.append(box);
    return box;
  });
}

function loadImage(tile, camera) {
  // A new frame is fetched only when the last one has arrived: a slow link never piles up
  // requests, and the shown picture is swapped only once the next one is complete.
  const key = camera.images === "crop" ? `${camera.open_tracks}-${camera.frames}` : camera.seq;
  if (tile.loading || key === tile.imageKey) return;
  tile.loading = true;
  const img = new Image();
  img.className = "tile-image";
  img.alt = `${camera.name}: latest ${camera.images === "crop" ? "face" : "frame"}`;
  img.onload = () => {
    tile.loading = false;
    tile.imageKey = key;
    if (tile.img) tile.img.replaceWith(img); else tile.view.append(img);
    tile.img = img;
    tile.placeholder.hidden = true;
  };
  img.onerror = () => { tile.loading = false; };
  img.src = `/api/cameras/${encodeURIComponent(camera.id)}/latest.jpg?seq=${camera.seq}`;
}

function updateTile(tile, camera) {
  tile.root.dataset.seq = camera.seq === null ? "" : String(camera.seq);
  tile.state.textContent = camera.state;
  tile.state.className = `state ${camera.state}`;
  tile.fps.textContent = `${camera.fps_in.toFixed(1)} / ${camera.fps_out.toFixed(1)}`;
  tile.frames.textContent = String(camera.frames);
  tile.faces.textContent = String(camera.faces);
  tile.total.textContent = String(camera.faces_total);
  tile.tracks.textContent = String(camera.open_tracks);
  tile.images.textContent = camera.images;
  tile.error.textContent = camera.last_error || "";
  if (camera.images === "off") {
    tile.placeholder.textContent = "images off: metadata only";
    drawBoxes(tile, camera);
  } else if (camera.image) {
    loadImage(tile, camera);
  } else if (!tile.img) {
    tile.placeholder.textContent = camera.images === "crop" ? "no face snapshot yet" : "no frame yet";
  }
}

function renderNode(node) {
  document.getElementById("node-id").textContent = node.id;
  const status = document.getElementById("node-status");
  status.textContent = `${node.healthy ? "healthy" : "not healthy"} · ` +
    `${node.cameras_streaming} streaming · v${node.version} · ${node.ts.slice(11, 19)} UTC`;
  status.className = `status ${node.healthy ? "ok" : "bad"}`;
}

function renderEvents(events) {
  const list = document.getElementById("events");
  const rows = [];
  const used = new Set();
  for (const event of events.slice(0, EVENTS_SHOWN)) {
    const row = el("li");
    row.dataset.event = event.event_id;
    const when = (event.end_ts || event.last_ts || event.start_ts || "").slice(11, 19);
    row.append(el("span", "type", event.type), el("span", "", event.camera),
      el("span", "meta", `${when} · ${event.duration_s.toFixed(1)} s · ` +
        `${event.frames_seen} frames · conf ${event.best.confidence.toFixed(2)}`));
    if (event.snapshot_url) {
      // One element per picture, moved between renders: a no-store image is not refetched.
      let img = thumbs.get(event.snapshot_url);
      if (!img) {
        img = el("img", "snapshot");
        img.alt = `snapshot of ${event.event_id}`;
        img.src = event.snapshot_url;
        thumbs.set(event.snapshot_url, img);
      }
      used.add(event.snapshot_url);
      row.prepend(img);
    }
    rows.push(row);
  }
  for (const url of [...thumbs.keys()]) if (!used.has(url)) thumbs.delete(url);
  list.replaceChildren(...rows);
}

async function poll() {
  try {
    const [cameras, events] = await Promise.all([getJson("/api/cameras"), getJson("/api/events")]);
    renderNode(cameras.node);
    for (const camera of cameras.cameras) {
      if (!tiles.has(camera.id)) tiles.set(camera.id, makeTile(camera));
      updateTile(tiles.get(camera.id), camera);
    }
    renderEvents(events.events);
  } catch (error) {
    const status = document.getElementById("node-status");
    status.textContent = `cannot reach the service: ${error.message}`;
    status.className = "status bad";
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

poll();
