/* The report's explorer, sortable tables and lazy thumbnails: plain JavaScript, no framework, nothing loaded.
   Reads the inline JSON of the pairs section (#sa-stimuli: stimulus id -> base64 PNG) and of the attribution
   section (#sa-explorer: methods, metrics, neurons, pairs with their quantised maps and scores). Every string from
   the run is put on the page as text (textContent), never as markup. Maps are drawn only when chosen. */
(function () {
  "use strict";
  var PNG = "data:image/png;base64,";

  function readJSON(id) {
    var el = document.getElementById(id);
    return el ? JSON.parse(el.textContent) : null;
  }
  function make(tag, cls, text) {
    var el = document.createElement(tag);
    if (cls) el.className = cls;
    if (text !== undefined) el.textContent = text;
    return el;
  }
  var stimuli = readJSON("sa-stimuli") || {};

  /* -- thumbnails: filled when their table is shown ------------------------------------------------------ */
  function fillThumbs(root) {
    var imgs = root.querySelectorAll("img[data-stimulus]");
    for (var i = 0; i < imgs.length; i++) {
      var b = stimuli[imgs[i].getAttribute("data-stimulus")];
      if (b && !imgs[i].getAttribute("src")) imgs[i].src = PNG + b;
    }
  }
  var details = document.querySelectorAll("details");
  for (var d = 0; d < details.length; d++) {
    details[d].addEventListener("toggle", function (e) {
      if (e.target.open) fillThumbs(e.target);
    });
    if (details[d].open) fillThumbs(details[d]);
  }

  /* -- sortable tables: click (or Enter on) a header to sort by it; again to reverse ------------------------ */
  function sortKey(cell) {
    var text = cell ? cell.textContent.trim() : "";
    var m = text.replace("\u2212", "-").match(/^[-+]?(\d+\.?\d*|\.\d+)(e[-+]?\d+)?/i);
    return m ? { num: parseFloat(m[0]), text: text } : { num: null, text: text };
  }
  function blank(key) {
    return key.text === "" || key.text === "\u2013";
  }
  function compare(a, b) {
    if (a.num !== null && b.num !== null) return a.num - b.num;
    if ((a.num === null) !== (b.num === null)) return a.num === null ? 1 : -1;
    return a.text < b.text ? -1 : a.text > b.text ? 1 : 0;
  }
  function sortBy(table, th, col) {
    var body = table.tBodies[0];
    var descending = th.getAttribute("aria-sort") === "ascending";
    var heads = table.tHead.rows[0].cells;
    for (var h = 0; h < heads.length; h++) heads[h].removeAttribute("aria-sort");
    th.setAttribute("aria-sort", descending ? "descending" : "ascending");
    var rows = [], fixed = [];
    for (var r = 0; r < body.rows.length; r++) {
      (body.rows[r].classList.contains("fixed") ? fixed : rows).push(body.rows[r]);
    }
    var keyed = rows.map(function (row, i) {
      return { row: row, key: sortKey(row.cells[col]), i: i };
    });
    keyed.sort(function (a, b) {
      if (blank(a.key) !== blank(b.key)) return blank(a.key) ? 1 : -1; /* empty cells last, either way */
      var c = compare(a.key, b.key);
      return (descending ? -c : c) || a.i - b.i;
    });
    keyed.forEach(function (k) { body.appendChild(k.row); });
    fixed.forEach(function (row) { body.appendChild(row); });
  }
  var tables = document.querySelectorAll("table.sortable");
  for (var t = 0; t < tables.length; t++) {
    (function (table) {
      if (!table.tHead || !table.tBodies.length) return;
      var heads = table.tHead.rows[0].cells;
      for (var c = 0; c < heads.length; c++) {
        (function (th, col) {
          if (th.classList.contains("nosort") || th.colSpan > 1) return;
          th.classList.add("sort");
          th.tabIndex = 0;
          th.title = "sort by this column";
          th.addEventListener("click", function () { sortBy(table, th, col); });
          th.addEventListener("keydown", function (e) {
            if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sortBy(table, th, col); }
          });
        })(heads[c], c);
      }
    })(tables[t]);
  }

  /* -- the explorer -------------------------------------------------------------------------------------- */
  var data = readJSON("sa-explorer");
  var root = document.getElementById("explorer");
  if (!data || !root) {
    var buttons = document.querySelectorAll("button.explore");
    for (var b = 0; b < buttons.length; b++) buttons[b].hidden = true;
    return;
  }
  var neuronSel = document.getElementById("ex-neuron");
  var pairSel = document.getElementById("ex-pair");
  var overlay = document.getElementById("ex-overlay");
  var opacity = document.getElementById("ex-opacity");
  var opacityOut = document.getElementById("ex-opacity-value");
  var scores = document.getElementById("ex-scores");
  var head = document.getElementById("ex-head");
  var cards = document.getElementById("ex-cards");
  var boxes = root.querySelectorAll("input[name=ex-method]");

  /* A quantised map (a grey PNG of samples neutral + round(levels t), which the decoder scales by decoded_step)
     coloured blue (t < 0) / red (t > 0) on white, its opacity growing with |t| as the run's figures draw it. */
  var code = data.encoding;
  function drawMap(canvas, b64) {
    var img = new Image();
    img.onload = function () {
      var w = img.naturalWidth, h = img.naturalHeight;
      canvas.width = w;
      canvas.height = h;
      var ctx = canvas.getContext("2d");
      ctx.drawImage(img, 0, 0);
      var pixels = ctx.getImageData(0, 0, w, h);
      var px = pixels.data;
      for (var i = 0; i < px.length; i += 4) {
        var v = (Math.round(px[i] / code.decoded_step) - code.neutral) / code.levels;
        v = Math.max(-1, Math.min(1, v));
        var a = Math.abs(v);
        px[i] = v < 0 ? Math.round(255 * (1 - a)) : 255;
        px[i + 1] = Math.round(255 * (1 - a));
        px[i + 2] = v > 0 ? Math.round(255 * (1 - a)) : 255;
        px[i + 3] = Math.round(255 * 0.9 * Math.pow(a, 0.6));
      }
      ctx.putImageData(pixels, 0, 0);
      canvas.setAttribute("data-drawn", "1");
    };
    img.src = PNG + b64;
  }

  function choosePairs() {
    var neuron = data.neurons[+neuronSel.value];
    while (pairSel.firstChild) pairSel.removeChild(pairSel.firstChild);
    neuron.pairs.forEach(function (p) {
      var q = data.pairs[p];
      var o = make("option", "", "ref. rank " + q.rank + ": " + q.driver + " \u2192 " + q.reference);
      o.value = String(p);
      pairSel.appendChild(o);
    });
  }

  function chosenMethods() {
    var out = [];
    for (var i = 0; i < boxes.length; i++) if (boxes[i].checked) out.push(+boxes[i].value);
    return out;
  }

  function mapCell(pair, which, b64) {
    var fig = make("figure", "map");
    var stack = make("div", "stack");
    var stimulus = stimuli[pair[which]];
    if (stimulus) {
      var under = make("img", "under");
      under.alt = which + " " + pair[which];
      under.src = PNG + stimulus;
      stack.appendChild(under);
    }
    if (b64) {
      var canvas = make("canvas", "map");
      canvas.setAttribute("aria-label", which + " map");
      stack.appendChild(canvas);
      drawMap(canvas, b64);
    } else {
      stack.appendChild(make("span", "na", "not computed"));
    }
    fig.appendChild(stack);
    fig.appendChild(make("figcaption", "", which));
    return fig;
  }

  function scoreTable(pair, m) {
    var table = make("table", "pair-scores");
    var tr = make("tr");
    tr.appendChild(make("th", "", "metric"));
    data.images.forEach(function (which) { tr.appendChild(make("th", "num", which)); });
    var thead = make("thead");
    thead.appendChild(tr);
    table.appendChild(thead);
    var body = make("tbody");
    data.metrics.forEach(function (metric, k) {
      var row = make("tr");
      row.appendChild(make("td", "", metric.label + " " + metric.arrow));
      data.images.forEach(function (which, w) { row.appendChild(make("td", "num", pair.scores[m][w][k])); });
      body.appendChild(row);
    });
    table.appendChild(body);
    return table;
  }

  function show() {
    var p = +pairSel.value;
    var pair = data.pairs[p];
    head.textContent = "neuron " + pair.neuron + ": driver " + pair.driver + " (" + pair.category + ", response " +
      pair.response + ") \u2192 reference " + pair.reference + " (ref. rank " + pair.rank + ", similarity " +
      pair.similarity + ")";
    while (cards.firstChild) cards.removeChild(cards.firstChild);
    chosenMethods().forEach(function (m) {
      var method = data.methods[m];
      var card = make("div", method.pairwise ? "card pairwise" : "card");
      card.setAttribute("data-method", method.label);
      card.appendChild(make("div", "card-title", method.label));
      if (method.definition) {
        card.appendChild(make("div", "card-definition", method.definition));
      }
      var row = make("div", "maps");
      data.images.forEach(function (which, w) { row.appendChild(mapCell(pair, which, pair.maps[m][w])); });
      card.appendChild(row);
      if (data.metrics.length) card.appendChild(scoreTable(pair, m));
      cards.appendChild(card);
    });
    if (!cards.firstChild) cards.appendChild(make("p", "note", "No method is chosen: tick one above."));
    style();
  }

  function style() {
    var value = +opacity.value;
    opacityOut.textContent = value + "%";
    root.style.setProperty("--map-opacity", String(value / 100));
    root.classList.toggle("no-underlay", !overlay.checked);
    root.classList.toggle("no-scores", !scores.checked);
  }

  function setAll(checked) {
    for (var i = 0; i < boxes.length; i++) boxes[i].checked = checked;
    show();
  }

  neuronSel.addEventListener("change", function () { choosePairs(); show(); });
  pairSel.addEventListener("change", show);
  for (var i = 0; i < boxes.length; i++) boxes[i].addEventListener("change", show);
  document.getElementById("ex-all").addEventListener("click", function () { setAll(true); });
  document.getElementById("ex-none").addEventListener("click", function () { setAll(false); });
  overlay.addEventListener("change", style);
  opacity.addEventListener("input", style);
  scores.addEventListener("change", style);

  var explore = document.querySelectorAll("button.explore");
  for (var e = 0; e < explore.length; e++) {
    explore[e].addEventListener("click", function (ev) {
      var p = +ev.currentTarget.getAttribute("data-pair");
      data.neurons.forEach(function (n, k) { if (n.pairs.indexOf(p) >= 0) neuronSel.value = String(k); });
      choosePairs();
      pairSel.value = String(p);
      show();
      root.scrollIntoView();
    });
  }

  choosePairs();
  show();
})();
