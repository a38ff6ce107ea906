// The species map page: draws the points of #map-data on a canvas, with zoom (wheel), pan (drag),
// reset (double-click), a hover card (species, split, file, marks, thumbnail) and a legend that
// highlights one species. Written for monkeysee; no library, no network.
(function () {
  "use strict";
  const D = JSON.parse(document.getElementById("map-data").textContent);
  const canvas = document.getElementById("map");
  const ctx = canvas.getContext("2d");
  const tip = document.getElementById("tip");
  const legend = document.getElementById("legend");
  const n = D.x.length;
  const MISTAKE = 1, UNKNOWN = 2;
  const show = [true, true, true];  // by split code: train, val, test
  let onlyMarked = false, highlight = -1;
  let view = { s: 1, tx: 0, ty: 0 };
  let W = 0, H = 0, base = 1, ox = 0, oy = 0;

  function px(i) { return view.tx + view.s * (ox + D.x[i] * base); }
  function py(i) { return view.ty + view.s * (oy + (1 - D.y[i]) * base); }
  function visible(i) { return show[D.split[i]] && (!onlyMarked || D.flags[i] !== 0); }

  function resize() {
    const r = canvas.getBoundingClientRect(), dpr = window.devicePixelRatio || 1;
    W = r.width; H = r.height;
    canvas.width = Math.round(W * dpr); canvas.height = Math.round(H * dpr);
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    base = Math.max(10, Math.min(W, H) - 40); ox = (W - base) / 2; oy = (H - base) / 2;
    draw();
  }

  function dot(i, r) {
    ctx.beginPath();
    ctx.arc(px(i), py(i), D.split[i] === 2 ? r * 1.6 : r, 0, 2 * Math.PI);
    ctx.fill();
  }

  function draw() {
    ctx.clearRect(0, 0, W, H);
    const r = Math.max(1.5, Math.min(7, 1.8 * Math.sqrt(view.s)));
    const order = [];
    for (let i = 0; i < n; i++) if (visible(i)) order.push(i);
    // dimmed species first, so the highlighted one lies on top
    for (const dim of [true, false]) {
      for (const i of order) {
        const isDim = highlight >= 0 && D.target[i] !== highlight;
        if (isDim !== dim) continue;
        ctx.globalAlpha = isDim ? 0.08 : (D.split[i] === 2 ? 0.95 : 0.6);
        ctx.fillStyle = D.colours[D.target[i]];
        dot(i, r);
      }
    }
    ctx.globalAlpha = 1;
    for (const i of order) {
      if (highlight >= 0 && D.target[i] !== highlight) continue;
      const x = px(i), y = py(i), m = r + 3;
      if (D.flags[i] & UNKNOWN) {
        ctx.strokeStyle = "#000"; ctx.lineWidth = 1;
        ctx.beginPath(); ctx.arc(x, y, m + 1, 0, 2 * Math.PI); ctx.stroke();
      }
      if (D.flags[i] & MISTAKE) {
        ctx.strokeStyle = "#111"; ctx.lineWidth = 1.6;
        ctx.beginPath();
        ctx.moveTo(x - m, y - m); ctx.lineTo(x + m, y + m);
        ctx.moveTo(x - m, y + m); ctx.lineTo(x + m, y - m);
        ctx.stroke();
      }
    }
  }

  function nearest(mx, my) {
    let best = -1, bestD = 100;  // within 10 px
    for (let i = 0; i < n; i++) {
      if (!visible(i) || (highlight >= 0 && D.target[i] !== highlight)) continue;
      const dx = px(i) - mx, dy = py(i) - my, d = dx * dx + dy * dy;
      if (d < bestD) { bestD = d; best = i; }
    }
    return best;
  }

  function text(tag, content, style) {
    const el = document.createElement(tag);
    el.textContent = content;
    if (style) el.style.cssText = style;
    return el;
  }

  function card(i) {
    tip.replaceChildren();
    tip.appendChild(text("b", D.species[D.target[i]], "color:" + D.colours[D.target[i]]));
    tip.appendChild(text("div", D.splits[D.split[i]] + " photo"));
    if (D.flags[i] & MISTAKE) tip.appendChild(text("div", "predicted wrong: " + D.species[D.predicted[i]]));
    if (D.flags[i] & UNKNOWN) tip.appendChild(text("div", "\u201cnot one of my species\u201d", "color:#e0001b"));
    tip.appendChild(text("div", D.paths[i], "color:#555;word-break:break-all"));
    const uri = D.thumbs[String(i)];
    if (uri) {
      const img = document.createElement("img");
      img.src = uri; img.alt = D.paths[i];
      tip.appendChild(img);
    }
  }

  function hover(ev) {
    const r = canvas.getBoundingClientRect(), mx = ev.clientX - r.left, my = ev.clientY - r.top;
    const i = nearest(mx, my);
    if (i < 0) { tip.style.display = "none"; return; }
    card(i);
    tip.style.display = "block";
    const left = ev.clientX + 14, top = ev.clientY + 14;
    tip.style.left = Math.min(left, window.innerWidth - tip.offsetWidth - 8) + "px";
    tip.style.top = Math.min(top, window.innerHeight - tip.offsetHeight - 8) + "px";
  }

  let drag = null;
  canvas.addEventListener("mousedown", (ev) => {
    drag = { x: ev.clientX, y: ev.clientY, tx: view.tx, ty: view.ty };
    canvas.style.cursor = "grabbing";
  });
  window.addEventListener("mouseup", () => { drag = null; canvas.style.cursor = "grab"; });
  canvas.addEventListener("mousemove", (ev) => {
    if (drag) {
      view.tx = drag.tx + ev.clientX - drag.x; view.ty = drag.ty + ev.clientY - drag.y;
      tip.style.display = "none";
      draw();
    } else {
      hover(ev);
    }
  });
  canvas.addEventListener("mouseleave", () => { tip.style.display = "none"; });
  canvas.addEventListener("wheel", (ev) => {
    ev.preventDefault();
    const r = canvas.getBoundingClientRect(), mx = ev.clientX - r.left, my = ev.clientY - r.top;
    const f = Math.exp(-ev.deltaY * 0.0015), s = Math.min(200, Math.max(0.5, view.s * f));
    const k = s / view.s;
    view = { s: s, tx: mx - (mx - view.tx) * k, ty: my - (my - view.ty) * k };
    draw();
  }, { passive: false });
  canvas.addEventListener("dblclick", () => { view = { s: 1, tx: 0, ty: 0 }; draw(); });

  D.splits.forEach((name, code) => {
    const box = document.getElementById("show-" + name);
    if (box) box.addEventListener("change", () => { show[code] = box.checked; draw(); });
  });
  document.getElementById("only-marked").addEventListener("change", (ev) => {
    onlyMarked = ev.target.checked; draw();
  });

  const counts = D.species.map(() => 0);
  for (let i = 0; i < n; i++) counts[D.target[i]]++;
  D.species.forEach((name, s) => {
    const row = document.createElement("div");
    const swatch = document.createElement("span");
    swatch.style.background = D.colours[s];
    row.appendChild(swatch);
    row.appendChild(document.createTextNode(name + " (" + counts[s] + ")"));
    row.title = name;
    row.addEventListener("click", () => {
      highlight = highlight === s ? -1 : s;
      for (const el of legend.children) el.classList.remove("on");
      if (highlight >= 0) row.classList.add("on");
      draw();
    });
    legend.appendChild(row);
  });

  // for tests and scripts: where point i is drawn now
  window.speciesMap = { count: n, at: (i) => [px(i), py(i)], view: () => Object.assign({}, view) };
  window.addEventListener("resize", resize);
  resize();
})();
