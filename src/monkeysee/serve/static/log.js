// monkeysee keeper's log: save a sighting after an answer, the log with filters, the review queue,
// confirm or correct, a sighting's history, and the species overview with a small chart.
// Uses api(), el(), $() and shrink() of app.js; server text is inserted with textContent only.
"use strict";

const SVG = document.getElementById("svg-ns").namespaceURI;  // the page parses <svg> as SVG
const MORE_PHOTOS = 2;          // the answered photo plus these make a sighting's 1 to 3 photos
let me = null;                  // {name, role, local} from /api/log/me
let answered = null;            // {file, answer} of the photo last answered
let saveKey = null;             // one key per sighting being saved: a retry never saves it twice
let openId = null;              // the sighting shown in #detail
const blobs = [];               // object URLs of the detail's photos, revoked when it changes

async function logJson(url, options) {
  const response = await api(url, options);
  let data = null;
  try { data = await response.json(); } catch { /* handled below */ }
  if (!response.ok) {
    const why = data && data.detail ? data.detail : `The server answered ${response.status}.`;
    throw new Error(data && data.fix ? `${why} ${data.fix}` : why);
  }
  return data;
}

function logError(err) {
  const box = $("log-error");
  box.textContent = err ? String(err.message || err) : "";
  box.hidden = !err;
}

function when(iso) {
  return iso ? new Date(iso).toLocaleString() : "";
}

function describe(s) {
  const name = s.name || (s.verdict === "unknown" ? "not one of my species" : "no answer");
  const where = s.place || s.place_text || "somewhere";
  return `#${s.id} ${name} · ${where} · ${when(s.observed_at)}`;
}

async function refreshWho() {
  try {
    me = await logJson("/api/log/me");
    $("log-who").textContent = me.local
      ? "You are the local keeper: you can save sightings. Confirming or correcting needs a reviewer's token."
      : `You are ${me.name} (${me.role}).`;
    logError(null);
  } catch (err) {
    me = null;
    logError(err);
  }
}

async function loadNames() {
  const [names, places] = await Promise.all([logJson("/api/log/species"), logJson("/api/log/places")]);
  $("species-names").replaceChildren(...names.names.map((n) => { const o = el("option"); o.value = n; return o; }));
  const select = $("save-place");
  select.replaceChildren(select.options[0], ...places.places.map((p) => el("option", p.name)));
  $("place-names").replaceChildren(...places.places.map((p) => { const o = el("option"); o.value = p.name; return o; }));
}

function sightingItem(s, extra) {
  const li = el("li");
  const open = el("button", describe(s));
  open.type = "button";
  open.addEventListener("click", () => openDetail(s.id));
  li.append(open, " ", el("span", s.status + (s.reviewed_by ? ` by ${s.reviewed_by}` : ""), "status"));
  if (extra) li.append(" ", el("span", extra, "status"));
  li.dataset.id = s.id;
  return li;
}

async function loadLog() {
  const q = new URLSearchParams();
  for (const [key, id] of [["species", "f-species"], ["place", "f-place"], ["status", "f-status"]]) {
    if ($(id).value.trim()) q.set(key, $(id).value.trim());
  }
  const day = (id, plus) => {
    const d = new Date(`${$(id).value}T00:00:00`);
    d.setDate(d.getDate() + plus);
    return d.toISOString();
  };
  if ($("f-since").value) q.set("since", day("f-since", 0));
  if ($("f-until").value) q.set("until", day("f-until", 1));
  const data = await logJson(`/api/log/sightings?${q}`);
  $("log-list").replaceChildren(...data.sightings.map((s) => sightingItem(s)));
}

async function loadReview() {
  const data = await logJson("/api/log/review");
  $("review-list").replaceChildren(...data.queue.map((q) => sightingItem(q.sighting, q.reasons.join(", "))));
}

function weekChart(perWeek, label) {
  const weeks = Object.keys(perWeek).sort();
  const top = Math.max(1, ...Object.values(perWeek));
  const bar = 14, gap = 4, height = 48;
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("class", "chart");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", label);
  svg.setAttribute("width", String(Math.max(1, weeks.length) * (bar + gap)));
  svg.setAttribute("height", String(height + 12));
  weeks.forEach((w, i) => {
    const h = Math.max(2, Math.round((perWeek[w] / top) * height));
    const rect = document.createElementNS(SVG, "rect");
    for (const [k, v] of [["x", i * (bar + gap)], ["y", height - h], ["width", bar], ["height", h]]) {
      rect.setAttribute(k, String(v));
    }
    const title = document.createElementNS(SVG, "title");
    title.textContent = `${w}: ${perWeek[w]}`;
    rect.append(title);
    const text = document.createElementNS(SVG, "text");
    text.setAttribute("x", String(i * (bar + gap)));
    text.setAttribute("y", String(height + 10));
    text.textContent = w.slice(-3);
    svg.append(rect, text);
  });
  return svg;
}

async function loadOverview() {
  const data = await logJson("/api/log/overview");
  const rows = data.species.map((s) => {
    const tr = el("tr");
    const places = Object.entries(s.per_place).map(([p, n]) => `${p || "(no place)"}: ${n}`).join(", ");
    const chart = el("td");
    chart.append(weekChart(s.per_week, `${s.name}: sightings per week`));
    tr.append(el("td", s.name), el("td", String(s.sightings)), el("td", when(s.last_seen)), el("td", places),
              chart);
    tr.dataset.name = s.name;
    return tr;
  });
  $("overview").tBodies[0].replaceChildren(...rows);
}

async function openDetail(id) {
  openId = id;
  const [s, h] = await Promise.all([logJson(`/api/log/sightings/${id}`),
                                    logJson(`/api/log/sightings/${id}/history`)]);
  $("detail").hidden = false;
  $("detail-title").textContent = describe(s);
  const model = s.species_hint
    ? `The model said ${s.taxon || s.species_hint} (${s.rank || "no rank"}, ${percent(s.probability || 0)} sure, ` +
      `${s.verdict}).`
    : `The model gave no species (${s.verdict}).`;
  const people = s.species ? ` ${s.status} as ${s.species} by ${s.reviewed_by}.` : " Not reviewed yet.";
  $("detail-facts").textContent = `${model}${people} Recorded by ${s.recorded_by || "the local keeper"}.` +
    (s.notes ? ` Note: ${s.notes}` : "");
  $("history").replaceChildren(...h.history.map((e) => {
    const what = Object.entries(e.changes).map(([k, v]) => `${k}: ${v[0] ?? "—"} → ${v[1] ?? "—"}`).join("; ");
    return el("li", `${when(e.at)} · ${e.who || "local keeper"} · ${e.action}${what ? ` (${what})` : ""}`);
  }));
  $("review-form").hidden = !(me && me.role === "reviewer");
  $("correct-species").value = s.species || s.species_hint || "";
  while (blobs.length) URL.revokeObjectURL(blobs.pop());
  const imgs = await Promise.all(s.photos.map(async (p, i) => {
    const img = el("img");
    img.alt = `Photo ${i + 1} of sighting ${s.id}`;
    const response = await api(p.url);
    if (response.ok) { const url = URL.createObjectURL(await response.blob()); blobs.push(url); img.src = url; }
    return img;
  }));
  $("detail-photos").replaceChildren(...imgs);
}

async function review(action) {
  const options = {method: "POST"};
  if (action === "correct") {
    options.body = JSON.stringify({species: $("correct-species").value.trim()});
    options.headers = {"content-type": "application/json"};
  }
  try {
    await logJson(`/api/log/sightings/${openId}/${action}`, options);
    logError(null);
    await Promise.all([openDetail(openId), refreshLists()]);
  } catch (err) {
    logError(err);
  }
}

async function refreshLists() {
  try {
    await Promise.all([loadLog(), loadReview(), loadOverview(), loadNames()]);
  } catch (err) {
    logError(err);
  }
}

async function saveSighting(e) {
  e.preventDefault();
  const status = $("save-status");
  const more = Array.from($("save-more").files || []);
  if (more.length > MORE_PHOTOS) {
    status.textContent = `At most ${MORE_PHOTOS} more photos: a sighting has 1 to 3.`;
    return;
  }
  saveKey = saveKey || (crypto.randomUUID ? crypto.randomUUID().replaceAll("-", "") : String(Date.now()));
  const body = new FormData();
  for (const file of [answered.file, ...more]) body.append("photos", await shrink(file), file.name || "photo");
  body.append("place", $("save-place").value);
  body.append("place_text", $("save-place-text").value.trim());
  body.append("notes", $("save-notes").value);
  body.append("key", saveKey);
  status.textContent = "Saving…";
  try {
    const s = await logJson("/api/log/sightings", {method: "POST", body});
    saveKey = null;
    $("save-form").reset();
    await refreshLists();
    status.textContent = `Saved as sighting #${s.id}.`;
  } catch (err) {
    status.textContent = `Not saved: ${err.message}`;
  }
}

function showTab(name) {
  for (const tab of ["log", "review", "overview"]) {
    $(`tab-${tab}`).setAttribute("aria-selected", String(tab === name));
    $(`panel-${tab}`).hidden = tab !== name;
  }
}

document.addEventListener("monkeysee:answer", (e) => {
  answered = e.detail;
  saveKey = null;
  $("save-status").textContent = "";
  $("save-sighting").hidden = false;
});
$("save-form").addEventListener("submit", saveSighting);
$("log-filter").addEventListener("submit", (e) => { e.preventDefault(); loadLog().catch(logError); });
$("review-form").addEventListener("submit", (e) => { e.preventDefault(); review("correct"); });
$("confirm-button").addEventListener("click", () => review("confirm"));
for (const tab of ["log", "review", "overview"]) $(`tab-${tab}`).addEventListener("click", () => showTab(tab));
$("keeper-login").addEventListener("submit", async (e) => {
  e.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $("keeper-token").value.trim());
  $("keeper-token").value = "";
  await refreshWho();
  await refreshLists();
  if (openId) await openDetail(openId);
});

refreshWho().then(() => (me ? refreshLists() : null));
