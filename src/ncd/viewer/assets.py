"""The viewer's stylesheet and script, inlined into every page (no network, no build step)."""

from __future__ import annotations

__all__ = ["CSS", "SCRIPT"]

CSS = r"""
*{box-sizing:border-box}
html,body{margin:0;height:100%;color:#222;background:#fafafa;
  font:13px/1.35 system-ui,-apple-system,'Segoe UI','DejaVu Sans',sans-serif}
body{display:flex;flex-direction:column;overflow:hidden}
#ncd-bar{display:flex;align-items:center;gap:6px;padding:6px 8px;border-bottom:1px solid #ddd;background:#fff;
  flex:none;flex-wrap:wrap}
#ncd-name{font-weight:600;margin-right:4px;max-width:22em;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
#ncd-crumbs{display:flex;gap:2px;flex:1;min-width:8em;overflow:hidden;white-space:nowrap}
#ncd-crumbs button{border:none;background:none;color:#2a5db0;padding:2px 3px;cursor:pointer;font:inherit}
#ncd-crumbs button[aria-current]{color:#222;font-weight:600;cursor:default}
#ncd-crumbs span{color:#999}
#ncd-bar>button{font:inherit;padding:3px 8px;border:1px solid #ccc;border-radius:4px;background:#f6f6f6;cursor:pointer}
#ncd-bar>button:hover{background:#eaeaea}
#ncd-search-wrap{position:relative}
#ncd-search{font:inherit;padding:3px 6px;width:14em;border:1px solid #bbb;border-radius:4px}
#ncd-results{position:absolute;right:0;top:100%;z-index:20;margin:2px 0 0;padding:2px 0;list-style:none;background:#fff;
  border:1px solid #ccc;border-radius:4px;box-shadow:0 3px 10px rgba(0,0,0,.15);
  min-width:18em;max-width:min(40em,90vw);max-height:22em;overflow:auto}
#ncd-results li{padding:3px 8px;cursor:pointer;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
#ncd-results li.ncd-active,#ncd-results li:hover{background:#e8effa}
#ncd-results li small{color:#777;margin-left:6px}
#ncd-results li.ncd-none{color:#777;cursor:default;background:none}
#ncd-stage{flex:1;position:relative;overflow:hidden;cursor:grab;background:#fff;touch-action:none}
#ncd-stage.ncd-dragging{cursor:grabbing}
#ncd-canvas{position:absolute;left:0;top:0;transform-origin:0 0}
#ncd-canvas svg{display:block}
#ncd-help{flex:none;padding:3px 8px;color:#666;border-top:1px solid #e4e4e4;background:#fff;font-size:12px}
#ncd-tip{position:fixed;z-index:30;pointer-events:none;max-width:34em;background:#fffef6;border:1px solid #c9c2a0;
  border-radius:4px;box-shadow:0 3px 10px rgba(0,0,0,.18);padding:5px 8px;font-size:12px}
#ncd-tip b{display:block;margin-bottom:3px;font-size:13px}
#ncd-tip table{border-collapse:collapse}
#ncd-tip td{padding:1px 6px 1px 0;vertical-align:top;overflow-wrap:anywhere}
#ncd-tip td:first-child{color:#666;white-space:nowrap}
#ncd-tip i{display:block;color:#2a5db0;margin-top:3px;font-style:normal}
.ncd-hit rect{fill:#000;fill-opacity:0;stroke:none}
.ncd-hit .ncd-box:hover,.ncd-hit .ncd-comp:hover{fill:#2a5db0;fill-opacity:.10;stroke:#2a5db0;stroke-width:1}
.ncd-hit .ncd-comp,.ncd-hit .ncd-fence.ncd-open{cursor:pointer}
.ncd-hit .ncd-fence.ncd-open:hover{stroke:#2a5db0;stroke-width:1.2;stroke-dasharray:4 3}
.ncd-hit path{fill:none;stroke:#000;stroke-opacity:0;stroke-width:7;stroke-linecap:round}
.ncd-hit path:hover{stroke:#e07b00;stroke-opacity:.45;stroke-width:4}
.ncd-hit .ncd-flash{fill:#f5a623;fill-opacity:.25;stroke:#e07b00;stroke-width:2}
"""

SCRIPT = r"""
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("ncd-data").textContent);
  var stage = document.getElementById("ncd-stage"), canvas = document.getElementById("ncd-canvas");
  var tip = document.getElementById("ncd-tip"), crumbs = document.getElementById("ncd-crumbs");
  var search = document.getElementById("ncd-search"), results = document.getElementById("ncd-results");
  var views = {}, blocks = data.blocks, infos = data.infos;
  data.views.forEach(function (v) { views[v.key] = v; });
  var current = null, svg = null, tx = 0, ty = 0, scale = 1;

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

  function parentState(key) {  // the view in which block `key` is drawn collapsed
    var p = blocks[key] ? blocks[key].parent : "";
    while (p && !views[p]) { p = blocks[p] ? blocks[p].parent : ""; }
    return p;
  }

  function hit(key, kind) { return svg && svg.querySelector(".ncd-" + kind + "[data-block=\"" + key + "\"]"); }
  function findBlock(key) { return hit(key, "comp") || hit(key, "fence"); }

  function show(key, anchorKey) {
    var before = anchorKey != null ? findBlock(anchorKey) : null;
    var old = before ? before.getBoundingClientRect() : null;
    var v = views[key], el = parse(v.svg);
    el.setAttribute("width", v.w); el.setAttribute("height", v.h);
    canvas.replaceChildren(el); svg = el; current = key;
    svg.querySelectorAll(".ncd-fence").forEach(function (f) {
      if (views[f.getAttribute("data-block")]) { f.classList.add("ncd-open"); }
    });
    if (old) {  // keep the clicked block where it was on screen
      var now = findBlock(anchorKey);
      if (now) {
        var r = now.getBoundingClientRect(); tx += old.left - r.left; ty += old.top - r.top; apply();
        if (now.classList.contains("ncd-fence")) { keepInView(now); }
      }
    }
    drawCrumbs(); hideTip();
    stage.setAttribute("data-view", key);
  }

  function drawCrumbs() {
    var path = [], k = current;
    while (k) { path.unshift(k); k = parentState(k); }
    path.unshift("");
    crumbs.replaceChildren();
    path.forEach(function (key, n) {
      if (n) { var sep = document.createElement("span"); sep.textContent = "›"; crumbs.appendChild(sep); }
      var b = document.createElement("button");
      b.textContent = key ? blocks[key].name : "top";
      if (key === current) { b.setAttribute("aria-current", "page"); }
      else { b.addEventListener("click", function () { show(key, path[n + 1]); }); }
      crumbs.appendChild(b);
    });
  }

  function fit(maxScale) {
    var v = views[current], w = stage.clientWidth, h = stage.clientHeight;
    // not laid out yet (a notebook iframe still sizing itself): try again on the next frame
    if (!w || !h) { requestAnimationFrame(function () { fit(maxScale); }); return; }
    scale = Math.min(w / v.w, h / v.h, maxScale || 4) * 0.96;
    tx = (w - v.w * scale) / 2; ty = (h - v.h * scale) / 2; apply();
  }

  function zoomAt(factor, cx, cy) {
    var s = Math.min(Math.max(scale * factor, 0.02), 40); factor = s / scale;
    tx = cx - (cx - tx) * factor; ty = cy - (cy - ty) * factor; scale = s; apply();
  }

  function centre(el) {
    var r = el.getBoundingClientRect(), st = stage.getBoundingClientRect();
    tx += st.left + st.width / 2 - (r.left + r.width / 2); ty += st.top + st.height / 2 - (r.top + r.height / 2); apply();
  }

  // An expanded block that no longer fits: zoom out around its corner, then slide it into view.
  function keepInView(el) {
    var st = stage.getBoundingClientRect(), r = el.getBoundingClientRect(), m = 12;
    var f = Math.min(1, (st.width - 2 * m) / r.width, (st.height - 2 * m) / r.height);
    if (f < 1) { zoomAt(f, r.left - st.left, r.top - st.top); r = el.getBoundingClientRect(); }
    var dx = Math.min(0, st.right - m - r.right) || Math.max(0, st.left + m - r.left);
    var dy = Math.min(0, st.bottom - m - r.bottom) || Math.max(0, st.top + m - r.top);
    tx += dx; ty += dy; apply();
  }

  function flash(el) {
    el.classList.add("ncd-flash");
    setTimeout(function () { el.classList.remove("ncd-flash"); }, 2500);
  }

  function goToBlock(key) {
    var state = blocks[key].expandable ? parentState(key) : "";
    if (state !== current) { show(state); }
    var el = findBlock(key);
    if (el) { centre(el); flash(el); }
    return el;
  }

  // -- click: expand a collapsed block, collapse an expanded one --------------------------------
  function activate(target) {
    var key = target.getAttribute("data-block");
    if (key == null) { return; }
    if (target.classList.contains("ncd-comp") && views[key]) { show(key, key); }
    else if (target.classList.contains("ncd-fence") && views[key]) { show(parentState(key), key); }
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
      var hint = document.createElement("i");
      hint.textContent = target.classList.contains("ncd-comp") ? "click to expand" : "click to collapse";
      tip.appendChild(hint);
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
  window.addEventListener("pointerup", function (e) {
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
  button("ncd-fit", function () { fit(); });
  button("ncd-zoom-in", function () { zoomAt(1.25, stage.clientWidth / 2, stage.clientHeight / 2); });
  button("ncd-zoom-out", function () { zoomAt(0.8, stage.clientWidth / 2, stage.clientHeight / 2); });

  // -- search ---------------------------------------------------------------------------------------
  var found = [], active = 0;
  function trail(key) {
    var names = [], p = blocks[key].parent;
    while (p) { names.unshift(blocks[p].name); p = blocks[p].parent; }
    return names.join(" › ");
  }
  function runSearch() {
    var q = search.value.trim().toLowerCase();
    results.replaceChildren(); found = []; active = 0;
    if (!q) { results.hidden = true; return; }
    Object.keys(blocks).forEach(function (k) { if (blocks[k].name.toLowerCase().indexOf(q) >= 0) { found.push(k); } });
    found.sort(function (a, b) { return blocks[a].depth - blocks[b].depth || (a < b ? -1 : 1); });
    found.slice(0, 60).forEach(function (k, n) {
      var li = document.createElement("li"); li.textContent = blocks[k].name;
      var small = document.createElement("small"); small.textContent = trail(k); li.appendChild(small);
      li.setAttribute("data-block", k);
      if (n === 0) { li.classList.add("ncd-active"); }
      li.addEventListener("mousedown", function (e) { e.preventDefault(); choose(k); });
      results.appendChild(li);
    });
    if (!found.length) {
      var none = document.createElement("li"); none.className = "ncd-none"; none.textContent = "no block named like that";
      results.appendChild(none);
    }
    results.hidden = false;
  }
  function choose(key) { results.hidden = true; search.blur(); goToBlock(key); }
  search.addEventListener("input", runSearch);
  search.addEventListener("focus", function () { if (search.value.trim()) { runSearch(); } });
  search.addEventListener("blur", function () { results.hidden = true; });
  search.addEventListener("keydown", function (e) {
    var items = results.querySelectorAll("li[data-block]");
    if (e.key === "ArrowDown" || e.key === "ArrowUp") {
      e.preventDefault();
      if (!items.length) { return; }
      items[active].classList.remove("ncd-active");
      active = (active + (e.key === "ArrowDown" ? 1 : items.length - 1)) % items.length;
      items[active].classList.add("ncd-active");
    } else if (e.key === "Enter" && items.length) { choose(items[active].getAttribute("data-block")); }
    else if (e.key === "Escape") { results.hidden = true; search.blur(); }
  });
  document.addEventListener("keydown", function (e) {
    if (e.target === search) { return; }
    if (e.key === "/") { e.preventDefault(); search.focus(); }
    else if (e.key === "Escape" && current) { show(parentState(current), current); }
    else if (e.key === "0") { fit(); }
  });

  // -- export ---------------------------------------------------------------------------------------
  function cleanSvg() {
    var copy = svg.cloneNode(true);
    copy.querySelectorAll(".ncd-hit").forEach(function (g) { g.remove(); });
    var v = views[current];
    copy.setAttribute("width", v.w); copy.setAttribute("height", v.h);
    return new XMLSerializer().serializeToString(copy);
  }
  function fileName(ext) {
    var name = (current ? blocks[current].name : data.title) || "diagram";
    return name.replace(/[^A-Za-z0-9_.-]+/g, "_").slice(0, 60) + "." + ext;
  }
  function download(blob, name) {
    var a = document.createElement("a"); a.href = URL.createObjectURL(blob); a.download = name;
    document.body.appendChild(a); a.click(); a.remove();
    setTimeout(function () { URL.revokeObjectURL(a.href); }, 5000);
  }
  function exportSvg() { download(new Blob([cleanSvg()], {type: "image/svg+xml"}), fileName("svg")); }
  function exportPng() {
    var v = views[current], k = 2, img = new Image();
    var url = URL.createObjectURL(new Blob([cleanSvg()], {type: "image/svg+xml"}));
    img.onload = function () {
      var c = document.createElement("canvas"); c.width = Math.ceil(v.w * k); c.height = Math.ceil(v.h * k);
      var g = c.getContext("2d"); g.fillStyle = "#fff"; g.fillRect(0, 0, c.width, c.height);
      g.drawImage(img, 0, 0, c.width, c.height); URL.revokeObjectURL(url);
      c.toBlob(function (blob) { download(blob, fileName("png")); }, "image/png");
    };
    img.src = url;
  }
  button("ncd-export-svg", exportSvg);
  button("ncd-export-png", exportPng);

  show("");
  fit(2);
  window.addEventListener("resize", function () { if (current === "") { fit(2); } });
  window.ncdViewer = {ready: true, readyAt: performance.now(), show: show, goToBlock: goToBlock, fit: fit,
    current: function () { return current; }, views: Object.keys(views), blocks: blocks,
    exportSvg: exportSvg, exportPng: exportPng, svgText: cleanSvg};
})();
"""
