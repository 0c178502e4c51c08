// The report's only script: sortable tables and the image explorer. It reads the JSON data
// block #explorer-data, loads images only when they scroll into view, and needs no network.
(function () {
  "use strict";
  var $ = function (sel, root) { return (root || document).querySelector(sel); };
  var el = function (tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  };

  // ------------------------------------------------------------ sortable tables
  function cellKey(td) {
    var t = td.textContent.trim().replace(/,/g, "");
    var n = parseFloat(t);
    return isNaN(n) || !/^[-+−]?[\d.]/.test(t) ? t.toLowerCase() : n;
  }
  document.querySelectorAll("table.sortable").forEach(function (table) {
    table.querySelectorAll("thead th").forEach(function (th, col) {
      th.tabIndex = 0;
      th.title = "sort by this column";
      var sort = function () {
        var body = table.tBodies[0];
        var asc = th.getAttribute("aria-sort") !== "ascending";
        table.querySelectorAll("thead th").forEach(function (h) { h.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", asc ? "ascending" : "descending");
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (a, b) {
          var x = cellKey(a.cells[col]), y = cellKey(b.cells[col]);
          if (typeof x !== typeof y) { x = String(x); y = String(y); }
          return (x < y ? -1 : x > y ? 1 : 0) * (asc ? 1 : -1);
        });
        rows.forEach(function (r) { body.appendChild(r); });
      };
      th.addEventListener("click", sort);
      th.addEventListener("keydown", function (e) { if (e.key === "Enter") sort(); });
    });
  });

  // The controls' rows of the grid fold away behind one button (shown only with the script,
  // so that without it every row stays visible); the controls line above sums them up.
  var gridTable = $("#top-grid"), toggle = $("#toggle-controls");
  if (gridTable && toggle) {
    gridTable.classList.add("js");
    toggle.hidden = false;
    var label = toggle.textContent;
    toggle.addEventListener("click", function () {
      var hide = gridTable.classList.toggle("hide-controls");
      toggle.textContent = hide ? label : "hide the controls' rows";
    });
  }

  // ------------------------------------------------------------ explorer
  var block = document.getElementById("explorer-data");
  var root = document.getElementById("explorer");
  if (!block || !root) { document.body.setAttribute("data-ready", "1"); return; }
  var data = JSON.parse(block.textContent);
  var images = data.images, methods = data.methods;
  var jpeg = function (b64) { return "data:image/jpeg;base64," + b64; };
  var png = function (b64) { return "data:image/png;base64," + b64; };
  var webp = function (b64) { return "data:image/webp;base64," + b64; };
  var grid = $("#ex-grid"), count = $("#ex-count");
  var filters = {
    true: $("#ex-true"), pred: $("#ex-pred"), correct: $("#ex-correct"), split: $("#ex-split")
  };
  var sortBy = $("#ex-sort");
  var shown = [];  // indices of the images that pass the filters, in display order

  function options(select, values) {
    values.forEach(function (v) { var o = el("option", null, v); o.value = v; select.appendChild(o); });
  }
  function distinct(key) {
    var seen = {};
    images.forEach(function (im) { seen[im[key]] = true; });
    return Object.keys(seen).sort();
  }
  options(filters.true, distinct("true"));
  options(filters.pred, distinct("pred"));
  options(filters.split, distinct("split"));

  // Thumbnails get their source when they come near the viewport.
  var observer = "IntersectionObserver" in window ? new IntersectionObserver(function (entries) {
    entries.forEach(function (e) {
      if (e.isIntersecting) {
        var img = e.target;
        img.src = jpeg(images[+img.dataset.index].t);
        observer.unobserve(img);
      }
    });
  }, { rootMargin: "300px" }) : null;

  var tiles = images.map(function (im, i) {
    var tile = el("button", "ex-tile" + (im.correct ? "" : " wrong"));
    tile.type = "button";
    tile.dataset.index = i;
    tile.dataset.id = im.id;
    var img = el("img");
    img.alt = im.id;
    img.width = 72; img.height = 72;
    img.dataset.index = i;
    if (observer) observer.observe(img); else img.src = jpeg(im.t);
    tile.appendChild(img);
    // true and predicted class on lines of their own, so neither is cut off
    tile.appendChild(el("span", "ex-cap", (im.correct ? "" : "✗ ") + im.true));
    tile.appendChild(el("span", "ex-cap", "→ " + im.pred));
    tile.appendChild(el("span", "ex-cap num", "p " + im.prob.toFixed(2) +
      (im.loss === null ? "" : " · loss " + im.loss.toFixed(2))));
    if (im.audited_only) { tile.classList.add("audited"); tile.appendChild(el("span", "ex-cap tag", "audited")); }
    tile.title = im.id + " · true " + im.true + " · predicted " + im.pred +
      (im.audited_only ? " · audited, not in the explained selection" : "");
    tile.addEventListener("click", function () { openViewer(i); });
    return tile;
  });

  // A scorecard cell's link narrows the grid to the explained images that audit scored.
  var cellFilter = null;  // {label, members: {index: true}}
  var cellNote = $("#ex-cell"), cellClear = $("#ex-cell-clear");
  document.querySelectorAll("#top-grid td[data-method]").forEach(function (td) {
    var key = td.dataset.method + "\t" + td.dataset.audit;
    var members = (data.cells || {})[key];
    if (!members || !members.length) return;
    var link = el("button", "imgs", members.length + " image" + (members.length > 1 ? "s" : "") + " ›");
    link.type = "button";
    link.title = "show the explained images behind this cell in the explorer";
    link.addEventListener("click", function () {
      var set = {};
      members.forEach(function (i) { set[i] = true; });
      cellFilter = { label: td.dataset.method + " · " + td.dataset.audit.replace(/_/g, " "), members: set };
      refresh();
      root.scrollIntoView();
    });
    td.appendChild(link);
  });
  if (cellClear) cellClear.addEventListener("click", function () { cellFilter = null; refresh(); });

  function passes(im, i) {
    var c = filters.correct.value;
    return (!cellFilter || cellFilter.members[i]) &&
      (!filters.true.value || im.true === filters.true.value) &&
      (!filters.pred.value || im.pred === filters.pred.value) &&
      (!filters.split.value || im.split === filters.split.value) &&
      (!c || (c === "correct") === im.correct);
  }
  var sorters = {
    id: function (a, b) { return a.id < b.id ? -1 : a.id > b.id ? 1 : 0; },
    "loss-desc": function (a, b) { return (b.loss || 0) - (a.loss || 0); },
    "prob-asc": function (a, b) { return a.prob - b.prob; },
    "prob-desc": function (a, b) { return b.prob - a.prob; }
  };
  function refresh() {
    shown = [];
    images.forEach(function (im, i) { if (passes(im, i)) shown.push(i); });
    var cmp = sorters[sortBy.value] || sorters.id;
    shown.sort(function (a, b) { return cmp(images[a], images[b]); });
    var frag = document.createDocumentFragment();
    shown.forEach(function (i) { frag.appendChild(tiles[i]); });
    grid.textContent = "";
    grid.appendChild(frag);
    count.textContent = shown.length + " of " + images.length + " images";
    count.dataset.count = shown.length;
    if (cellNote) {
      cellNote.hidden = !cellFilter;
      $("#ex-cell-label").textContent = cellFilter ? cellFilter.label : "";
    }
  }
  Object.keys(filters).forEach(function (k) { filters[k].addEventListener("change", refresh); });
  sortBy.addEventListener("change", refresh);

  // Arrow keys move between tiles; Enter or Space opens one (a button's own behaviour).
  grid.addEventListener("keydown", function (e) {
    var pos = shown.indexOf(+document.activeElement.dataset.index);
    if (pos < 0) return;
    var perRow = Math.max(1, Math.round(grid.clientWidth / tiles[shown[pos]].offsetWidth));
    var step = { ArrowRight: 1, ArrowLeft: -1, ArrowDown: perRow, ArrowUp: -perRow }[e.key];
    if (!step) return;
    var next = shown[Math.min(shown.length - 1, Math.max(0, pos + step))];
    tiles[next].focus();
    e.preventDefault();
  });

  // ------------------------------------------------------------ side-by-side viewer
  var viewer = $("#ex-viewer"), panels = $("#ex-panels"), opacity = $("#ex-opacity");
  var outline = $("#ex-outline"), current = -1, modes = {};

  function fmtScale(v) { return Math.abs(v) >= 0.01 && Math.abs(v) < 1000 ? v.toPrecision(3) : v.toExponential(1); }

  // The colour bar of one map: its scale (the map's own 99th percentile of |attribution|)
  // and, for a signed map, which colour raises and which lowers the explained class.
  function colourKey(signed, scale) {
    var key = el("div", "ex-key" + (signed ? " signed" : ""));
    key.appendChild(el("span", "ex-ramp"));
    var ticks = el("div", "ex-ticks num");
    (signed ? ["−" + fmtScale(scale), "0", "+" + fmtScale(scale)] : ["0", fmtScale(scale)])
      .forEach(function (t) { ticks.appendChild(el("span", null, t)); });
    key.appendChild(ticks);
    key.appendChild(el("div", "ex-sign", signed ? "red raises the class score, blue lowers it"
      : "|attribution|, brighter = stronger"));
    return key;
  }

  // Colour scales as the figures draw them: matplotlib's inferno (nine stops, interpolated)
  // for |map|, blue–white–red for a signed map.
  var INFERNO = [[0, 0, 4], [31, 12, 72], [85, 15, 109], [136, 34, 106], [186, 54, 85],
    [227, 89, 51], [249, 140, 10], [249, 201, 50], [252, 255, 164]];
  function inferno(t) {
    var x = t * (INFERNO.length - 1), i = Math.min(INFERNO.length - 2, Math.floor(x)), f = x - i;
    return [0, 1, 2].map(function (c) { return INFERNO[i][c] + f * (INFERNO[i + 1][c] - INFERNO[i][c]); });
  }
  function bwr(s) {  // s in [-1, 1]
    return s < 0 ? [255 * (1 + s), 255 * (1 + s), 255] : [255, 255 * (1 - s), 255 * (1 - s)];
  }
  // A grey-coded map (128 = 0, 0 and 255 = ∓ its scale) drawn in colour on a canvas, its
  // opacity the map's strength: weak areas (a gradient's noise floor) leave the photo clear.
  function colourMap(b64, signed, title) {
    var canvas = el("canvas", "ex-overlay");
    canvas.setAttribute("aria-label", title + " map");
    var img = new Image();
    img.onload = function () {
      canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
      var ctx = canvas.getContext("2d");
      ctx.drawImage(img, 0, 0);
      var px = ctx.getImageData(0, 0, canvas.width, canvas.height), d = px.data;
      for (var k = 0; k < d.length; k += 4) {
        var s = Math.max(-1, Math.min(1, (d[k] - 127.5) / 127.5));
        var rgb = signed ? bwr(s) : inferno(Math.abs(s));
        d[k] = rgb[0]; d[k + 1] = rgb[1]; d[k + 2] = rgb[2];
        d[k + 3] = 255 * Math.abs(s);
      }
      ctx.putImageData(px, 0, 0);
      canvas.dataset.drawn = "1";
    };
    img.src = webp(b64);
    return canvas;
  }

  function panel(title, base, coded, maskB64, method, signed, scale) {
    var box = el("figure", "ex-panel");
    var stack = el("div", "ex-stack");
    if (base) { var img = el("img"); img.src = base; img.alt = title; stack.appendChild(img); }
    if (coded) {
      var ov = colourMap(coded, signed, title);
      ov.style.opacity = opacity.value / 100; stack.appendChild(ov);
    }
    if (maskB64) {
      var mk = el("img", "ex-mask"); mk.src = png(maskB64); mk.alt = "mask outline";
      mk.hidden = !outline.checked; stack.appendChild(mk);
    }
    box.appendChild(stack);
    var cap = el("figcaption", null, title);
    if (method) cap.dataset.method = method;
    box.appendChild(cap);
    if (coded) box.appendChild(colourKey(signed, scale));
    return box;
  }

  function render() {
    var im = images[current];
    $("#ex-id").textContent = im.id;
    $("#ex-facts").textContent = "true " + im.true + " · predicted " + im.pred +
      " (p " + im.prob.toFixed(2) + ")" + (im.correct ? "" : " · misclassified") +
      " · maps explain the class: " + im.target +
      (im.audited_only ? " · audited, not in the explained selection" : "");
    panels.textContent = "";
    var base = im.o ? jpeg(im.o) : "";
    if (base) panels.appendChild(panel("original", base, null, im.k));
    methods.forEach(function (m) {
      var mode = m.signed && modes[m.label] === "signed" ? 1 : 0;
      var own = im.m[m.label];
      if (!own) {  // an audited image of a later round than the one that decided this method
        var none = el("figure", "ex-panel ex-none");
        none.appendChild(el("figcaption", null, m.label + ": not audited on this image (its " +
          "verdict was decided in an earlier round)"));
        panels.appendChild(none);
        return;
      }
      var box = panel(m.label + (mode ? " (signed)" : ""), base, own[0], im.k,
        m.label, !!mode, own[1]);
      if (m.signed) {
        var toggle = el("button", "ex-mode", mode ? "show |map|" : "show signed");
        toggle.type = "button";
        toggle.addEventListener("click", function () {
          modes[m.label] = mode ? "absolute" : "signed";
          render();
        });
        box.appendChild(toggle);
      }
      var vals = im.a[m.label];
      if (vals) {
        var dl = el("dl", "ex-audit");
        Object.keys(vals).forEach(function (k) {
          dl.appendChild(el("dt", null, k));
          dl.appendChild(el("dd", "num", vals[k] === null ? "–" : (+vals[k]).toFixed(3)));
        });
        box.appendChild(dl);
      }
      panels.appendChild(box);
      var truth = im.tm && im.tm[m.label];
      if (truth) {  // a wrong prediction: the true class's map beside the predicted class's
        var tbox = panel(m.label + " · true class " + im.true + (mode ? " (signed)" : ""),
          base, truth[0], im.k, null, !!mode, truth[1]);
        tbox.classList.add("ex-true");
        panels.appendChild(tbox);
      }
    });
    var pos = shown.indexOf(current);
    $("#ex-pos").textContent = (pos + 1) + " / " + shown.length;
  }
  function openViewer(i) {
    current = i;
    render();
    viewer.hidden = false;
    $("#ex-close").focus();
  }
  function closeViewer() {
    viewer.hidden = true;
    if (current >= 0) tiles[current].focus();
  }
  function move(step) {
    var pos = shown.indexOf(current);
    if (pos < 0 || !shown.length) return;
    current = shown[(pos + step + shown.length) % shown.length];
    render();
  }
  $("#ex-close").addEventListener("click", closeViewer);
  $("#ex-prev").addEventListener("click", function () { move(-1); });
  $("#ex-next").addEventListener("click", function () { move(1); });
  opacity.addEventListener("input", function () {
    panels.querySelectorAll(".ex-overlay").forEach(function (o) { o.style.opacity = opacity.value / 100; });
  });
  outline.addEventListener("change", function () {
    panels.querySelectorAll(".ex-mask").forEach(function (o) { o.hidden = !outline.checked; });
  });
  document.addEventListener("keydown", function (e) {
    if (viewer.hidden) return;
    if (e.key === "Escape") closeViewer();
    else if (e.key === "ArrowRight") move(1);
    else if (e.key === "ArrowLeft") move(-1);
    else return;
    e.preventDefault();
  });

  refresh();
  document.body.setAttribute("data-ready-ms", String(Math.round(performance.now())));
  document.body.setAttribute("data-ready", "1");
})();
