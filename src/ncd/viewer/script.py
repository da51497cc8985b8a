"""The viewer's script, inlined into every page (no network, no build step).

The page holds the top view and one definition panel per block (:mod:`ncd.viewer.views`).
The script composes them: the *sheet* is the top view followed by the panel of every
expanded block, in tree order, packed into rows so that the sheet has the window's shape.
After every expand, collapse and ``Esc`` the whole sheet is fitted to the window at the first
paint's scale: the one at which the top view and every panel fit together, but not below the
drawings' own size (wire labels at 11 px), nor above the scale at which the top view with any one
block open (and the panels it is drawn in) fits.  When the open panels would need smaller text,
the blocks opened longest ago are closed, so the text is never smaller than at first paint and
all of what is open is on screen.  Labels are shown with ``textContent`` only.
"""

from __future__ import annotations

__all__ = ["SCRIPT", "MEASURE"]

SCRIPT = r"""
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("ncd-data").textContent);
  var stage = document.getElementById("ncd-stage"), canvas = document.getElementById("ncd-canvas");
  var tip = document.getElementById("ncd-tip"), crumbs = document.getElementById("ncd-crumbs");
  var search = document.getElementById("ncd-search"), results = document.getElementById("ncd-results");
  var views = {}, blocks = data.blocks, infos = data.infos, where = {};
  data.views.forEach(function (v) {
    views[v.key] = v;
    v.i.forEach(function (i) { (where[i] = where[i] || []).push(v.key); });
  });
  var GAP = 24, CAP = 1.5, NATURAL = 1, MARGIN = 0.96;
  var open = [], shown = {}, sheet = {w: 0, h: 0}, tx = 0, ty = 0, scale = 1, base = 1;

  function apply() { canvas.style.transform = "translate(" + tx + "px," + ty + "px) scale(" + scale + ")"; }

  // Parse a view's SVG as XML and drop anything active (defence in depth: the painter escapes text).
  function parse(text) {
    var doc = new DOMParser().parseFromString(text, "image/svg+xml");
    var root = doc.documentElement;
    if (root.nodeName !== "svg") { throw new Error("ncd viewer: a view is not SVG"); }
    root.querySelectorAll("script,foreignObject,iframe,object,embed").forEach(function (e) { e.remove(); });
    root.querySelectorAll("*").forEach(function (el) {
      Array.prototype.slice.call(el.attributes).forEach(function (a) {
        if (/^on/i.test(a.name) || (/href$/i.test(a.name) && !/^#/.test(a.value))) { el.removeAttribute(a.name); }
      });
    });
    return document.importNode(root, true);
  }

  function source(v) { return v.svg != null ? v.svg : document.getElementById("ncd-view-" + v.s).textContent; }

  function drawing(key) {  // the SVG element of a view, parsed once
    var v = views[key];
    if (!v.el) {
      var text = source(v.as != null ? data.views[v.as] : v);
      if (v.as != null) {  // an earlier panel's SVG with this panel's blocks in its blocks' places
        v.r.forEach(function (pair) { text = text.split(pair[0]).join(pair[1]); });
      }
      v.el = parse(text); v.el.setAttribute("width", v.w); v.el.setAttribute("height", v.h);
      v.el.setAttribute("data-view", key); v.el.classList.add("ncd-view");
    }
    return v.el;
  }

  function parentState(key) {  // the view in which block `key` is drawn collapsed
    var p = blocks[key] ? blocks[key].parent : "";
    while (p && !views[p]) { p = blocks[p] ? blocks[p].parent : ""; }
    return p;
  }
  function treeOrder(a, b) {
    var x = a ? a.split("/") : [], y = b ? b.split("/") : [];
    for (var k = 0; k < Math.min(x.length, y.length); k++) { if (x[k] !== y[k]) { return +x[k] - +y[k]; } }
    return x.length - y.length;
  }
  function visible() { return [""].concat(open.slice().sort(treeOrder)); }

  // -- packing the sheet: rows of views, the width chosen so the sheet has the stage's shape --------
  function place(rows, W, H) {  // rows of view keys -> positions, size and the scale that fits the stage
    var pos = {}, y = 0, w = 0;
    rows.forEach(function (row, n) {
      var x = 0, rowH = 0;
      if (n) { y += GAP; }
      row.forEach(function (k, m) {
        if (m) { x += GAP; }
        pos[k] = {x: x, y: y}; x += views[k].w; rowH = Math.max(rowH, views[k].h);
      });
      w = Math.max(w, x); y += rowH;
    });
    return {rows: rows, pos: pos, w: w, h: y, fit: Math.min(W / w, H / y)};
  }
  function better(a, b) { return !a || b.fit > a.fit + 1e-9 || (Math.abs(b.fit - a.fit) <= 1e-9 && b.w * b.h < a.w * a.h) ? b : a; }
  function pack(keys, W, H) {  // greedy rows in tree order, for several row widths
    var widest = Math.max.apply(null, keys.map(function (k) { return views[k].w; }));
    var candidates = [widest], best = null;
    for (var i = 0; i < keys.length && keys.length <= 40; i++) {
      for (var j = i, run = 0; j < keys.length; j++) {
        run += views[keys[j]].w + (j > i ? GAP : 0);
        if (run > widest) { candidates.push(run); }
      }
    }
    for (var f = 1.25; f < 12; f *= 1.25) { candidates.push(widest * f); }
    candidates.forEach(function (limit) {
      var rows = [[]], x = 0;
      keys.forEach(function (k) {
        var w = views[k].w;
        if (x > 0 && x + GAP + w > limit + 0.5) { rows.push([]); x = 0; }
        x += (x > 0 ? GAP : 0) + w; rows[rows.length - 1].push(k);
      });
      best = better(best, place(rows, W, H));
    });
    return best;
  }
  var everything = null;  // the packing of every view, for the current stage size
  function arrange(keys, W, H) {
    // Also try every view's packing with the closed ones taken out: never worse than with all open.
    var rows = everything.rows.map(function (r) { return r.filter(function (k) { return keys.indexOf(k) >= 0; }); });
    return better(pack(keys, W, H), place(rows.filter(function (r) { return r.length; }), W, H));
  }

  function stageSize() { return {w: stage.clientWidth, h: stage.clientHeight}; }

  function trailOf(key) {  // view `key` and the views it is drawn in (what opening it opens)
    var out = [];
    for (var k = key; k; k = parentState(k)) { if (views[k]) { out.push(k); } }
    return out;
  }
  function within(k, key) { return k === key || key.indexOf(k + "/") === 0; }  // k is key or an enclosing block

  // The first paint's scale: the one at which the top view and every panel fit together, but not below the
  // drawings' own size (1: wire labels at 11 px) — and never above the largest (up to CAP) at which the top view
  // with any one block open, and the panels it is drawn in, fits.  Opening blocks never makes text smaller
  // than this: when the open panels would not fit at it, the blocks opened longest ago are closed (refresh).
  function firstScale() {
    var st = stageSize(), one = CAP;
    everything = pack(Object.keys(views).sort(treeOrder), st.w, st.h);
    Object.keys(views).forEach(function (k) {
      one = Math.min(one, pack([""].concat(trailOf(k).sort(treeOrder)), st.w, st.h).fit * MARGIN);
    });
    return Math.min(one, Math.max(everything.fit * MARGIN, NATURAL));
  }

  // Lay the sheet out again and fit it: everything on screen, text never larger — nor smaller — than at first
  // paint. `keep`: the block just opened (default: the last opened), which stays open with its enclosing panels.
  function refresh(keep) {
    var st = stageSize();
    if (!st.w || !st.h) { requestAnimationFrame(function () { refresh(keep); }); return; }  // a notebook iframe sizing itself
    keep = keep || open[open.length - 1] || "";
    var keys = visible(), p = arrange(keys, st.w, st.h);
    while (p.fit * MARGIN < base - 1e-9) {  // too much open for the first paint's text size: close the oldest
      var old = open.filter(function (k) { return !within(k, keep); })[0];
      if (old === undefined) { break; }
      open = open.filter(function (k) { return !within(old, k); });
      keys = visible(); p = arrange(keys, st.w, st.h);
    }
    Object.keys(shown).forEach(function (k) { if (keys.indexOf(k) < 0) { shown[k].remove(); delete shown[k]; } });
    keys.forEach(function (k) {
      var el = drawing(k);
      el.style.left = p.pos[k].x + "px"; el.style.top = p.pos[k].y + "px";
      if (!shown[k]) { canvas.appendChild(el); shown[k] = el; }
    });
    sheet = {w: p.w, h: p.h};
    canvas.querySelectorAll(".ncd-comp.ncd-open").forEach(function (e) { e.classList.remove("ncd-open"); });
    open.forEach(function (k) { var c = comp(k); if (c) { c.classList.add("ncd-open"); } });
    canvas.querySelectorAll(".ncd-fence").forEach(function (f) {
      f.classList.toggle("ncd-open", open.indexOf(f.getAttribute("data-block")) >= 0);
    });
    fitSheet(base);
    drawCrumbs(); hideTip();
    stage.setAttribute("data-open", open.length);
  }

  function fitSheet(maxScale) {
    var st = stageSize();
    scale = Math.min(Math.min(st.w / sheet.w, st.h / sheet.h) * MARGIN, maxScale);
    tx = (st.w - sheet.w * scale) / 2; ty = (st.h - sheet.h * scale) / 2; apply();
  }

  function comp(key) {
    var v = shown[parentState(key)];
    return v ? v.querySelector(".ncd-comp[data-block=\"" + key + "\"]") : null;
  }
  function fence(key) {
    var v = shown[views[key] ? key : ""];
    return v ? v.querySelector(".ncd-fence[data-block=\"" + key + "\"]") : null;
  }

  // -- expanding and collapsing --------------------------------------------------------------------
  function openPath(key) {  // open `key`'s panel and the panels it is drawn in
    var changed = false;
    for (var k = key; k; k = parentState(k)) {
      if (views[k] && open.indexOf(k) < 0) { open.push(k); changed = true; }
    }
    return changed;
  }
  function expand(key) { if (views[key] && key && openPath(key)) { refresh(key); } }
  function collapse(key) {
    var before = open.length;
    open = open.filter(function (k) { return k !== key && k.indexOf(key + "/") !== 0; });
    if (open.length !== before) { refresh(); }
  }
  function toggle(key) { if (open.indexOf(key) >= 0) { collapse(key); } else { expand(key); } }

  function drawCrumbs() {
    crumbs.replaceChildren();
    var all = document.createElement("button");
    all.textContent = "top"; all.title = "collapse every block";
    if (!open.length) { all.setAttribute("aria-current", "page"); }
    else { all.addEventListener("click", function () { open = []; refresh(); }); }
    crumbs.appendChild(all);
    open.slice().sort(treeOrder).forEach(function (key) {
      var sep = document.createElement("span"); sep.textContent = "·"; crumbs.appendChild(sep);
      var b = document.createElement("button");
      b.textContent = blocks[key].name; b.title = "show this block";
      b.addEventListener("click", function () { var f = fence(key); unflash(); if (f) { reveal(f); flash(f); } });
      crumbs.appendChild(b);
    });
  }

  function zoomAt(factor, cx, cy) {
    var s = Math.min(Math.max(scale * factor, 0.02), 40); factor = s / scale;
    tx = cx - (cx - tx) * factor; ty = cy - (cy - ty) * factor; scale = s; apply();
  }

  function onScreen(el) {
    var r = el.getBoundingClientRect(), st = stage.getBoundingClientRect();
    return r.left >= st.left && r.right <= st.right && r.top >= st.top && r.bottom <= st.bottom;
  }
  function reveal(el) {  // centre `el` unless it is already on screen
    if (onScreen(el)) { return; }
    var r = el.getBoundingClientRect(), st = stage.getBoundingClientRect();
    tx += st.left + st.width / 2 - (r.left + r.width / 2); ty += st.top + st.height / 2 - (r.top + r.height / 2); apply();
  }

  // what a search or a crumb found stays highlighted until the next one, or a click on the drawing
  var flashed = [];
  function unflash() {
    flashed.forEach(function (e) { e.classList.remove("ncd-flash"); }); flashed = [];
  }
  function flash(el) { el.classList.add("ncd-flash"); flashed.push(el); }

  function goToBlock(key) {
    unflash();
    var state = blocks[key].state ? parentState(key) : "";
    if (state && openPath(state)) { refresh(); }
    var el = blocks[key].state ? comp(key) : fence(key);
    if (el) { reveal(el); flash(el); }
    return el;
  }
  function goToInfo(index, key) {  // every item of record `index` drawn in view `key`
    unflash();
    if (key && openPath(key)) { refresh(); }
    var els = shown[key] ? shown[key].querySelectorAll(".ncd-hit [data-i=\"" + index + "\"]") : [];
    if (els.length) { reveal(els[0]); }
    Array.prototype.forEach.call(els, flash);
    return els.length;
  }

  // -- click: expand a collapsed block, collapse an expanded one --------------------------------------
  function activate(target) {
    var key = target.getAttribute("data-block");
    if (key == null || !views[key]) { return; }
    if (target.classList.contains("ncd-comp")) { toggle(key); }
    else if (target.classList.contains("ncd-fence") && open.indexOf(key) >= 0) { collapse(key); }
  }

  // -- tooltips ------------------------------------------------------------------------------------
  function showTip(target, x, y) {
    var rec = infos[+target.getAttribute("data-i")];
    tip.replaceChildren();
    var head = document.createElement("b"); head.textContent = rec.title; tip.appendChild(head);
    var table = document.createElement("table");
    rec.rows.forEach(function (row) {
      var tr = document.createElement("tr");
      row.forEach(function (cell) { var td = document.createElement("td"); td.textContent = cell; tr.appendChild(td); });
      table.appendChild(tr);
    });
    tip.appendChild(table);
    var key = target.getAttribute("data-block");
    if (key != null && views[key]) {
      var isOpen = open.indexOf(key) >= 0, hint = null;
      if (target.classList.contains("ncd-comp")) { hint = isOpen ? "expanded below: click to collapse" : "click to expand"; }
      else if (isOpen) { hint = "click to collapse"; }
      if (hint) { var i = document.createElement("i"); i.textContent = hint; tip.appendChild(i); }
    }
    tip.hidden = false;
    var w = tip.offsetWidth, h = tip.offsetHeight;
    tip.style.left = Math.max(4, Math.min(x + 14, window.innerWidth - w - 4)) + "px";
    tip.style.top = Math.max(4, (y + 16 + h > window.innerHeight) ? y - h - 10 : y + 16) + "px";
  }
  function hideTip() { tip.hidden = true; }

  // -- pointer: drag to pan, click to toggle, wheel to zoom ------------------------------------------
  var drag = null;
  stage.addEventListener("pointerdown", function (e) {
    unflash();
    if (e.button !== 0) { return; }
    drag = {x: e.clientX, y: e.clientY, tx: tx, ty: ty, moved: false, target: e.target};
  });
  window.addEventListener("pointermove", function (e) {
    if (drag) {
      var dx = e.clientX - drag.x, dy = e.clientY - drag.y;
      if (!drag.moved && dx * dx + dy * dy > 16) { drag.moved = true; stage.classList.add("ncd-dragging"); hideTip(); }
      if (drag.moved) { tx = drag.tx + dx; ty = drag.ty + dy; apply(); return; }
    }
    var t = e.target && e.target.closest ? e.target.closest(".ncd-hit [data-i]") : null;
    if (t && stage.contains(t)) { showTip(t, e.clientX, e.clientY); } else { hideTip(); }
  });
  window.addEventListener("pointerup", function () {
    if (!drag) { return; }
    var d = drag; drag = null; stage.classList.remove("ncd-dragging");
    if (!d.moved && d.target && d.target.closest) {
      var t = d.target.closest(".ncd-hit [data-block]");
      if (t) { activate(t); }
    }
  });
  stage.addEventListener("pointerleave", function () { if (!drag) { hideTip(); } });
  stage.addEventListener("wheel", function (e) {
    e.preventDefault();
    var st = stage.getBoundingClientRect();
    zoomAt(Math.exp(-e.deltaY * (e.deltaMode === 1 ? 0.05 : 0.0015)), e.clientX - st.left, e.clientY - st.top);
  }, {passive: false});

  function button(id, fn) { document.getElementById(id).addEventListener("click", fn); }
  button("ncd-fit", function () { fitSheet(4); });
  button("ncd-zoom-in", function () { zoomAt(1.25, stage.clientWidth / 2, stage.clientHeight / 2); });
  button("ncd-zoom-out", function () { zoomAt(0.8, stage.clientWidth / 2, stage.clientHeight / 2); });

  // -- search: blocks, boxes (by label, primitive, family, parameters) and axes ---------------------
  var KIND = {block: "block", box: "box", wire: "axis"};
  function trail(key) {  // the blocks around view `key` (or block `key`), outermost first
    var names = [], p = key;
    while (p) { names.unshift(blocks[p].name); p = blocks[p].parent; }
    return names.join(" › ") || data.title;
  }
  function rank(rec, q) {
    var words = rec.find[0], more = rec.find[1];
    if (rec.title.toLowerCase() === q || words.split(" ").indexOf(q) >= 0) { return 0; }
    if ((" " + words).indexOf(" " + q) >= 0) { return 1; }
    if (words.indexOf(q) >= 0) { return 2; }
    if (more.indexOf(q) >= 0) { return 3; }
    return -1;
  }
  var found = [], active = 0;
  function runSearch() {
    var q = search.value.trim().toLowerCase();
    results.replaceChildren(); found = []; active = 0;
    if (!q) { results.hidden = true; return; }
    infos.forEach(function (rec, index) {
      var r = rec.find ? rank(rec, q) : -1;
      if (r < 0) { return; }
      var order = {block: 0, box: 1, wire: 2}[rec.kind];
      if (rec.kind === "block") {
        if (blocks[rec.key]) { found.push({r: r, o: order, rec: rec, block: rec.key, depth: blocks[rec.key].depth}); }
        return;
      }
      (where[index] || []).forEach(function (key) {
        found.push({r: r, o: order, rec: rec, index: index, view: key, depth: key ? key.split("/").length : 0});
      });
    });
    found.sort(function (a, b) { return a.r - b.r || a.o - b.o || a.depth - b.depth; });
    found = found.slice(0, 80);
    found.forEach(function (f, n) {
      var li = document.createElement("li"); li.textContent = f.rec.title;
      var kind = document.createElement("em"); kind.textContent = KIND[f.rec.kind]; li.appendChild(kind);
      var small = document.createElement("small");
      small.textContent = f.block != null ? trail(blocks[f.block].parent) : "in " + trail(f.view);
      li.appendChild(small);
      li.setAttribute("data-n", n);
      if (n === 0) { li.classList.add("ncd-active"); }
      li.addEventListener("mousedown", function (e) { e.preventDefault(); choose(n); });
      results.appendChild(li);
    });
    if (!found.length) {
      var none = document.createElement("li"); none.className = "ncd-none"; none.textContent = "nothing drawn is named like that";
      results.appendChild(none);
    }
    results.hidden = false;
  }
  function choose(n) {
    var f = found[n];
    results.hidden = true; search.blur();
    if (f.block != null) { goToBlock(f.block); } else { goToInfo(f.index, f.view); }
  }
  search.addEventListener("input", runSearch);
  search.addEventListener("focus", function () { if (search.value.trim()) { runSearch(); } });
  search.addEventListener("blur", function () { results.hidden = true; });
  search.addEventListener("keydown", function (e) {
    var items = results.querySelectorAll("li[data-n]");
    if (e.key === "ArrowDown" || e.key === "ArrowUp") {
      e.preventDefault();
      if (!items.length) { return; }
      items[active].classList.remove("ncd-active");
      active = (active + (e.key === "ArrowDown" ? 1 : items.length - 1)) % items.length;
      items[active].classList.add("ncd-active");
    } else if (e.key === "Enter" && items.length) { choose(active); }
    else if (e.key === "Escape") { results.hidden = true; search.blur(); }
  });
  document.addEventListener("keydown", function (e) {
    if (e.target === search) { return; }
    if (e.key === "/") { e.preventDefault(); search.focus(); }
    else if (e.key === "Escape" && open.length) { collapse(open[open.length - 1]); }
    else if (e.key === "0") { fitSheet(4); }
  });

  // -- export: the sheet as one SVG (the renderer's drawings without the overlay) ----------------------
  function cleanSvg() {
    var keys = visible(), out;
    function plain(key) {
      var copy = drawing(key).cloneNode(true);
      copy.querySelectorAll(".ncd-hit").forEach(function (g) { g.remove(); });
      copy.removeAttribute("style"); copy.removeAttribute("class"); copy.removeAttribute("data-view");
      return copy;
    }
    if (keys.length === 1) { out = plain(""); }
    else {
      out = document.createElementNS("http://www.w3.org/2000/svg", "svg");
      out.setAttribute("width", sheet.w); out.setAttribute("height", sheet.h);
      out.setAttribute("viewBox", "0 0 " + sheet.w + " " + sheet.h);
      var bg = document.createElementNS("http://www.w3.org/2000/svg", "rect");
      bg.setAttribute("width", sheet.w); bg.setAttribute("height", sheet.h); bg.setAttribute("fill", "#ffffff");
      out.appendChild(bg);
      keys.forEach(function (k) {
        var el = plain(k);
        el.setAttribute("x", parseFloat(shown[k].style.left)); el.setAttribute("y", parseFloat(shown[k].style.top));
        out.appendChild(el);
      });
    }
    var fonts = document.getElementById("ncd-fonts");  // the page's font subsets: the file looks the same anywhere
    if (fonts && fonts.textContent) {
      var style = document.createElementNS("http://www.w3.org/2000/svg", "style");
      style.textContent = fonts.textContent; out.insertBefore(style, out.firstChild);
    }
    return new XMLSerializer().serializeToString(out);
  }
  function fileName(ext) {
    var name = (open.length ? blocks[open[open.length - 1]].name : data.title) || "diagram";
    return name.replace(/[^A-Za-z0-9_.-]+/g, "_").slice(0, 60) + "." + ext;
  }
  function download(blob, name) {
    var a = document.createElement("a"); a.href = URL.createObjectURL(blob); a.download = name;
    document.body.appendChild(a); a.click(); a.remove();
    setTimeout(function () { URL.revokeObjectURL(a.href); }, 5000);
  }
  function exportSvg() { download(new Blob([cleanSvg()], {type: "image/svg+xml"}), fileName("svg")); }
  function exportPng() {
    var k = 2, img = new Image(), w = sheet.w, h = sheet.h;
    var url = URL.createObjectURL(new Blob([cleanSvg()], {type: "image/svg+xml"}));
    img.onload = function () {
      var c = document.createElement("canvas"); c.width = Math.ceil(w * k); c.height = Math.ceil(h * k);
      var g = c.getContext("2d"); g.fillStyle = "#fff"; g.fillRect(0, 0, c.width, c.height);
      g.drawImage(img, 0, 0, c.width, c.height); URL.revokeObjectURL(url);
      c.toBlob(function (blob) { download(blob, fileName("png")); }, "image/png");
    };
    img.src = url;
  }
  button("ncd-export-svg", exportSvg);
  button("ncd-export-png", exportPng);

  function start() {
    var st = stageSize();
    if (!st.w || !st.h) { requestAnimationFrame(start); return; }
    base = firstScale(); refresh();
    window.ncdViewer.ready = true; window.ncdViewer.readyAt = performance.now();
  }
  window.addEventListener("resize", function () { base = firstScale(); refresh(); });
  window.ncdViewer = {ready: false, expand: expand, collapse: collapse, toggle: toggle, goToBlock: goToBlock,
    goToInfo: goToInfo, fit: fitSheet, expanded: function () { return open.slice(); },
    shown: function () { return Object.keys(shown); }, base: function () { return base; },
    views: Object.keys(views), blocks: blocks, exportSvg: exportSvg, exportPng: exportPng, svgText: cleanSvg};
  start();
})();
"""

#: For tests and benchmarks (Playwright's ``page.evaluate``), not part of the page: what is on screen —
#: the share of the drawing (every shown view) inside the stage, the share of the stage it covers, and
#: the height of the wire labels (the renderer's smallest regular text, ``Style.label_size``; scripts
#: inside them are smaller by a fixed ratio), all from the browser's own bounding boxes.
MEASURE = """() => {
  const st = document.getElementById('ncd-stage').getBoundingClientRect();
  let area = 0, vis = 0;
  for (const v of document.querySelectorAll('#ncd-canvas svg.ncd-view')) {
    const r = v.getBoundingClientRect();
    const w = Math.max(0, Math.min(r.right, st.right) - Math.max(r.left, st.left));
    const h = Math.max(0, Math.min(r.bottom, st.bottom) - Math.max(r.top, st.top));
    area += r.width * r.height; vis += w * h;
  }
  const hs = [...document.querySelectorAll('#ncd-canvas svg.ncd-view text[font-size="11"]')]
    .map(t => t.getBoundingClientRect().height).filter(h => h > 0);
  return {on_screen: vis / area, cover: vis / (st.width * st.height), text: Math.min(...hs)};
}"""
