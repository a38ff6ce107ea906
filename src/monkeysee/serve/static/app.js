// monkeysee web page: send a photo to /api/predict, show the answer and where the model looked.
// Plain JavaScript, no libraries; server text is always inserted with textContent, never as HTML.
"use strict";

const MAX_SIDE = 1600;          // photos are shrunk to this before upload (the model needs far less)
const SHRINK_ABOVE = 1.5e6;     // bytes; smaller files are sent as they are
const UNSURE_BELOW = 0.5;       // a best guess under this probability is worded as a doubt

const $ = (id) => document.getElementById(id);
const form = $("upload");
const input = $("photo");
const view = $("view");
const shown = $("shown");
const heat = $("heat");
const toggle = $("toggle");
const heatNote = $("heat-note");
const result = $("result");
const login = $("login");
const tokenInput = $("token");
const loginError = $("login-error");
const TOKEN_KEY = "monkeysee-token";  // sessionStorage: forgotten when the tab closes
let hasDetector = true;
let current = 0;                // id of the newest request; older answers are ignored
let shownUrl = null;
let asking = null;              // the pending token question, shared by requests that need it

// The server asks for a token when it is shared beyond its own computer (HTTP 401 on /api). Ask once,
// keep the answer for this tab, send it as a Bearer header, and ask again only if it is refused.
function askToken(refused) {
  if (!asking) {
    asking = new Promise((resolve) => {
      loginError.hidden = !refused;
      loginError.textContent = refused ? "That token was not accepted. Try again." : "";
      login.hidden = false;
      form.hidden = true;
      tokenInput.focus();
      login.addEventListener("submit", (e) => {
        e.preventDefault();
        sessionStorage.setItem(TOKEN_KEY, tokenInput.value.trim());
        tokenInput.value = "";
        login.hidden = true;
        form.hidden = false;
        asking = null;
        resolve();
      }, {once: true});
    });
  }
  return asking;
}

async function api(url, options = {}) {
  for (;;) {
    const token = sessionStorage.getItem(TOKEN_KEY);
    const headers = {...(options.headers || {}), ...(token ? {Authorization: `Bearer ${token}`} : {})};
    const response = await fetch(url, {...options, headers});
    if (response.status !== 401) return response;
    await askToken(Boolean(token));
  }
}

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = text;
  if (className) node.className = className;
  return node;
}

function percent(p) {
  const v = p * 100;
  return v >= 99.5 ? "over 99%" : v < 1 ? "under 1%" : `${Math.round(v)}%`;
}

function showPhoto(file) {
  if (shownUrl) URL.revokeObjectURL(shownUrl);
  shownUrl = URL.createObjectURL(file);
  shown.src = shownUrl;
  heat.hidden = true;
  heat.removeAttribute("src");
  toggle.disabled = true;
  heatNote.hidden = true;
  view.hidden = false;
}

// Shrink big photos in the browser: a phone's 12-megapixel JPEG uploads and decodes much faster at
// 1600 px, and the model looks at 224 px anyway. Anything the browser cannot draw is sent unchanged.
async function shrink(file) {
  if (file.size <= SHRINK_ABOVE || !window.HTMLCanvasElement) return file;
  const url = URL.createObjectURL(file);
  try {
    const img = new Image();
    img.src = url;
    await img.decode();
    const scale = Math.min(1, MAX_SIDE / Math.max(img.naturalWidth, img.naturalHeight));
    if (scale === 1) return file;
    const canvas = document.createElement("canvas");
    canvas.width = Math.round(img.naturalWidth * scale);
    canvas.height = Math.round(img.naturalHeight * scale);
    canvas.getContext("2d").drawImage(img, 0, 0, canvas.width, canvas.height);
    const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", 0.9));
    return blob ? new File([blob], file.name.replace(/\.[^.]*$/, "") + ".jpg", {type: "image/jpeg"}) : file;
  } catch {
    return file;
  } finally {
    URL.revokeObjectURL(url);
  }
}

async function send(file) {
  const id = ++current;
  showPhoto(file);
  result.replaceChildren(el("p", "Looking at your photo…", "busy"));
  result.setAttribute("aria-busy", "true");
  let answer;
  try {
    const body = new FormData();
    body.append("photo", await shrink(file), file.name || "photo");
    const response = await api("/api/predict?heatmap=true", {method: "POST", body});
    let data = null;
    try { data = await response.json(); } catch { /* not JSON: handled below */ }
    if (id !== current) return;
    if (!response.ok || !data) {
      showError(data && data.detail ? data.detail : `The server answered ${response.status}.`,
                data && data.fix);
      return;
    }
    answer = data;
  } catch (err) {
    if (id === current) showError("Could not reach the server.", "Check the connection and try again.");
    return;
  } finally {
    if (id === current) result.removeAttribute("aria-busy");
  }
  showAnswer(answer);
  document.dispatchEvent(new CustomEvent("monkeysee:answer", {detail: {file, answer}}));  // log.js
}

function showError(detail, fix) {
  const box = el("div", null, "error");
  box.setAttribute("role", "alert");
  box.append(el("p", "I could not use that photo."), el("p", detail));
  if (fix) box.append(el("p", fix, "fix"));
  result.replaceChildren(box);
}

function names(guess) {
  const span = el("span");
  span.append(el("span", guess.common_name, "common-inline"));
  if (guess.latin_name) span.append(" (", el("i", guess.latin_name), ")");
  return span;
}

function confidence(p) {
  const wrap = el("div", null, "confidence");
  const meter = el("meter");
  meter.min = 0; meter.max = 1; meter.value = p;
  meter.setAttribute("aria-hidden", "true");
  wrap.append(el("span", `${percent(p)} sure`), meter);
  return wrap;
}

function rankCard(a) {
  // an answer at a rank above species: the taxon, then the species it may be
  const card = el("div", null, "answer rank-answer");
  card.append(el("p", `This looks like a member of the ${a.rank}`, "lead"), el("h2", a.taxon, "common taxon"));
  card.append(confidence(a.taxon_probability));
  const doubt = el("p", "The species is uncertain: ", "doubt");
  doubt.append(a.top.map((g) => `${g.common_name} ${percent(g.probability)}`).join(", "));
  card.append(doubt);
  return card;
}

function showAnswer(a) {
  const parts = [];
  if (a.verdict === "retake") {
    const box = el("div", null, "unknown retake");
    const why = (a.quality && a.quality.problems.length) ? a.quality.problems.join(", ") : "too poor";
    box.append(
      el("h2", "Take another photo"),
      el("p", `I can't tell from this photo: it is ${why}. Try again closer, steadier or in better light.`),
    );
    const hint = el("p", null, "hint");
    hint.append("It looks most like ", names(a.top[0]), ", but treat that as a hint only.");
    box.append(hint);
    parts.push(box);
  } else if (a.unknown || a.verdict === "unknown") {
    const box = el("div", null, "unknown");
    box.append(
      el("h2", "Not one of my species"),
      el("p", a.unknown
        ? "This photo does not look like any of the monkeys I was trained on: it may be another animal."
        : "I am not confident enough to name it, not even its genus or family: it may be an animal " +
          "I do not know."),
    );
    const hint = el("p", null, "hint");
    hint.append("Nearest species I know: ", names(a.top[0]), ". Treat that as a hint only.");
    box.append(hint);
    parts.push(box);
  } else if (a.rank && a.rank !== "species") {
    parts.push(rankCard(a));
  } else {
    const card = el("div", null, "answer");
    card.append(el("p", "This looks like", "lead"), el("h2", a.species, "common"));
    if (a.latin_name) card.append(el("p", a.latin_name, "latin"));
    card.append(confidence(a.probability));
    if (a.probability < UNSURE_BELOW) {
      card.append(el("p", hasDetector
        ? "I am not sure: compare the other possibilities below."
        : "I am not sure. It could also be an animal I do not know: I cannot tell those apart.", "doubt"));
    }
    parts.push(card);
  }
  const others = a.top.slice(1);
  if (others.length) {
    const list = el("ol", null, "others");
    for (const g of others) {
      const li = el("li");
      li.append(names(g), el("span", percent(g.probability), "p"));
      list.append(li);
    }
    parts.push(el("h3", a.unknown || a.verdict === "retake" ? "Next nearest" : "Other possibilities"), list);
  }
  if (a.evidence) parts.push(evidenceBlock(a.evidence, a.verdict === "species"));
  result.replaceChildren(...parts);

  if (a.cam && a.cam.heatmap) {
    heat.src = a.cam.heatmap;
    heat.alt = `Heatmap: the brighter the colour, the more that part of the photo counted for ` +
               `“${a.cam.species}”`;
    toggle.disabled = false;
    heat.hidden = !toggle.checked;
    heatNote.hidden = !toggle.checked;
  }
}

// The training photos the answer is compared with: thumbnails fetched through `api` (with the token),
// shown as blob: URLs, which the page's content policy allows.
function evidenceBlock(ev, answered) {
  const box = el("section", null, "evidence");
  box.setAttribute("aria-label", "The training photos I compared it with");
  if (answered && ev.check) {
    box.append(el("p", `Check this one: the nearest photos I was trained on look more like ` +
                       `${ev.nearest_vote.common_name}.`, "check"));
  }
  for (const s of ev.species) {
    box.append(el("h3", `Nearest ${s.common_name} photos I was trained on`));
    const row = el("div", null, "thumbs");
    for (const n of s.nearest) {
      const fig = el("figure");
      const img = el("img");
      img.alt = `A training photo of ${s.common_name}, ${Math.round(n.similarity * 100)}% similar`;
      img.width = 96; img.height = 96;
      fig.append(img, el("figcaption", `${Math.round(n.similarity * 100)}% similar`));
      row.append(fig);
      api(`/api/evidence/${n.photo}`).then((r) => (r.ok ? r.blob() : null)).then((b) => {
        if (b) img.src = URL.createObjectURL(b);
      });
    }
    box.append(row);
  }
  if (ev.confused_with) {
    box.append(el("p", `Often confused with ${ev.confused_with.common_name}.`, "note"));
  }
  return box;
}

shown.addEventListener("error", () => { view.hidden = true; });  // not a picture the browser can show

toggle.addEventListener("change", () => {
  heat.hidden = !toggle.checked || !heat.getAttribute("src");
  heatNote.hidden = heat.hidden;
});

input.addEventListener("change", () => {
  if (input.files && input.files[0]) send(input.files[0]);
});

form.addEventListener("submit", (e) => e.preventDefault());
for (const type of ["dragenter", "dragover"]) {
  form.addEventListener(type, (e) => { e.preventDefault(); form.classList.add("over"); });
}
for (const type of ["dragleave", "drop"]) {
  form.addEventListener(type, () => form.classList.remove("over"));
}
form.addEventListener("drop", (e) => {
  e.preventDefault();
  const file = e.dataTransfer && e.dataTransfer.files[0];
  if (file) send(file);
});

async function describeModel() {
  try {
    const [health, species] = await Promise.all([
      fetch("/health").then((r) => r.json()),
      api("/api/species").then((r) => r.json()),
    ]);
    hasDetector = Boolean(health.detector);
    const list = $("species-list");
    const items = species.species.map((s) => {
      const li = el("li");
      li.append(names(s));
      li.dataset.search = `${s.common_name} ${s.latin_name || ""} ${s.label}`.toLowerCase();
      return li;
    });
    list.replaceChildren(...items);
    const search = $("species-search");
    const count = $("species-count");
    const filter = () => {
      const words = search.value.toLowerCase().split(/\s+/).filter(Boolean);
      let shown = 0;
      for (const li of items) {
        const hit = words.every((w) => li.dataset.search.includes(w));
        li.hidden = !hit;
        shown += hit;
      }
      count.textContent = words.length ? `${shown} of ${items.length} species` : `${items.length} species`;
    };
    search.addEventListener("input", filter);
    filter();
    if (!hasDetector) {
      $("known-note").textContent =
        "This model cannot tell when an animal is none of these: for other animals it will still name " +
        "the nearest one, usually with low confidence.";
    }
    $("about").textContent = `monkeysee ${health.version} · ${health.backbone} · ` +
                             `${health.species_count} species`;
  } catch {
    /* the page still works without the description */
  }
}
describeModel();
