/* camkit view and camkit report: the page's script. Plain ES2017, no dependency, no build step.
 *
 * Data comes from one of two backends with the same interface:
 *  - "api": the camkit view server (window.CAMKIT_VIEW.mode === "api"): pages are fetched from
 *    /api/records with the filters, so the browser holds one page at a time;
 *  - "static": an exported folder (file://) or one self-contained file (camkit report):
 *    data/records-NNNN.js scripts (or an inline block) fill window.CAMKIT_VIEW_CHUNKS, and the
 *    same filters run here.
 * Pages of 12 to 96 rows, or one scrolling list ("all, scrolling"): a virtual list that keeps about
 * WINDOW rows in the page and stands in for the others with two spacer rows of their height, so
 * a store of any size costs the browser the same.
 * Metric values and sanity verdicts, when the data has them, show under each map, in the detail
 * panel and in a summary table, and the sort menu offers every metric column (INFO.metrics).
 * A store's own verdicts (camkit run --sanity: INFO.sanity, method → {passed, similarity, title})
 * show as a badge next to each method's name, in the grid's header and the detail's method switch.
 * Every string of the data is put into the page with textContent or as an attribute value set
 * through the DOM, never parsed as HTML.
 */
(function () {
  "use strict";

  var INFO = window.CAMKIT_VIEW || { mode: "none", methods: [], records: 0, labels: [], preds: [] };
  window.CAMKIT_VIEW_CHUNKS = window.CAMKIT_VIEW_CHUNKS || [];

  var state = {
    offset: 0, limit: 24, q: "", show: "all", label: "", pred: "", sort: "name", metric: "", order: "asc",
    total: 0, records: [], selected: null, method: null, k: 0, opacity: 0.5, detailOpacity: 0.5, layer: "",
    virtual: false, row: 150, selectedRecord: null,
    loading: null,
  };

  /* The scrolling list: rows held in the page, and the rows kept beyond each edge of the screen. */
  var WINDOW = 80, MARGIN = 20;

  function $(id) { return document.getElementById(id); }

  function el(tag, props, children) {
    var node = document.createElement(tag);
    if (props) {
      Object.keys(props).forEach(function (name) {
        if (name === "text") { node.textContent = props[name]; }
        else if (name === "className") { node.className = props[name]; }
        else { node.setAttribute(name, props[name]); }
      });
    }
    (children || []).forEach(function (child) { if (child) { node.appendChild(child); } });
    return node;
  }

  function clear(node) { while (node.firstChild) { node.removeChild(node.firstChild); } }

  function pct(p) { return (100 * p).toFixed(1) + "%"; }

  /* ---------------------------------------------------------------- backends */

  function apiBackend() {
    return {
      page: function (s) {
        var params = new URLSearchParams({
          offset: s.offset, limit: s.limit, q: s.q, show: s.show, label: s.label, pred: s.pred,
          sort: s.sort, metric: s.metric, order: s.order,
        });
        return fetch("/api/records?" + params.toString()).then(function (r) {
          if (!r.ok) { throw new Error("the server answered " + r.status); }
          return r.json();
        });
      },
      agreement: function () {
        return fetch("/api/agreement?sample=64").then(function (r) { return r.json(); });
      },
    };
  }

  function loadScript(src) {
    return new Promise(function (resolve, reject) {
      var script = document.createElement("script");
      script.src = src;
      script.onload = resolve;
      script.onerror = function () { reject(new Error("cannot load " + src)); };
      document.body.appendChild(script);
    });
  }

  function staticBackend() {
    var all = null;
    function records() {
      if (all) { return Promise.resolve(all); }
      var loads = [];
      for (var c = 0; c < (INFO.chunks || 0); c++) {
        loads.push(loadScript("data/records-" + String(c).padStart(4, "0") + ".js"));
      }
      return Promise.all(loads).then(function () {
        all = [];
        window.CAMKIT_VIEW_CHUNKS.forEach(function (chunk) { all = all.concat(chunk || []); });
        return all;
      });
    }
    return {
      page: function (s) {
        return records().then(function (rows) {
          var chosen = rows.filter(function (r) { return matches(r, s); });
          chosen.sort(function (a, b) { return compare(a, b, s); });
          return { total: chosen.length, offset: s.offset, records: chosen.slice(s.offset, s.offset + s.limit) };
        });
      },
      agreement: function () { return Promise.resolve(INFO.agreement || null); },
    };
  }

  /* The filters of the server (camkit/viewer/_source.py), for the exported page. */
  function matches(r, s) {
    if (s.q && r.key.toLowerCase().indexOf(s.q.toLowerCase()) < 0) { return false; }
    if (s.show === "mistakes" && r.mistake !== true) { return false; }
    if (s.show === "correct" && r.mistake !== false) { return false; }
    if (s.label && r.label !== s.label) { return false; }
    if (s.pred && (!r.pred.length || String(r.pred[0][0]) !== s.pred)) { return false; }
    return true;
  }

  /* A metric column "method:name" (the name holds no ":"); a record without the value sorts as -infinity. */
  function metricValue(r, column) {
    var cut = column.lastIndexOf(":");
    var v = ((r.metrics || {})[column.slice(0, cut)] || {})[column.slice(cut + 1)];
    return typeof v === "number" && isFinite(v) ? v : -Infinity;
  }

  /* The server's order: the chosen value (reversed with order=desc), then the name, ascending. */
  function compare(a, b, s) {
    var sign = s.order === "desc" ? -1 : 1;
    var byKey = a.key < b.key ? -1 : (a.key > b.key ? 1 : 0);
    if (s.sort === "given") { return sign * ((a.index || 0) - (b.index || 0)); }
    if (s.sort === "confidence") {
      var pa = a.pred.length ? a.pred[0][1] : -1, pb = b.pred.length ? b.pred[0][1] : -1;
      if (pa !== pb) { return sign * (pa < pb ? -1 : 1); }
      return byKey;
    }
    if (s.sort === "metric") {
      var ma = metricValue(a, s.metric), mb = metricValue(b, s.metric);
      if (ma !== mb) { return sign * (ma < mb ? -1 : 1); }
      return byKey;
    }
    return sign * byKey;
  }

  var backend = INFO.mode === "static" ? staticBackend() : apiBackend();

  /* ---------------------------------------------------------------- header and filters */

  function fillSelect(select, entries) {
    entries.forEach(function (entry) {
      select.appendChild(el("option", { value: entry[0], text: entry[1] + " (" + entry[2] + ")" }));
    });
  }

  function columnText(column) {
    var cut = column.lastIndexOf(":");
    return column.slice(0, cut) + " " + column.slice(cut + 1);
  }

  function header() {
    $("title").textContent = INFO.title || "camkit view";
    document.title = INFO.title || "camkit view";
    $("subtitle").textContent = INFO.subtitle || "";
    $("agreement-button").hidden = INFO.mode === "static" && !INFO.agreement;
    if (INFO.kind === "report") {
      $("footer").textContent = "camkit report: one self-contained file; it loads nothing from the network.";
    }
    if (INFO.legend) {
      $("legend").hidden = false;
      $("legend-scale").src = INFO.legend;
    }
    if ((INFO.layers || []).length) {
      $("layer-choice").hidden = false;
      INFO.layers.forEach(function (layer) { $("layer").appendChild(el("option", { value: layer, text: layer })); });
    }
    (INFO.metrics || []).forEach(function (column) {
      var text = columnText(column);
      $("sort").appendChild(el("option", { value: "metric=" + column + ":desc", text: text + ", high first" }));
      $("sort").appendChild(el("option", { value: "metric=" + column + ":asc", text: text + ", low first" }));
    });
    if (INFO.given_order) {
      $("sort").insertBefore(el("option", { value: "given:asc", text: "as given" }), $("sort").firstChild);
      state.sort = "given";
    }
    $("sort").value = state.sort + ":asc";
    if (INFO.limit) {
      var size = String(INFO.limit);
      if (!Array.prototype.some.call($("page-size").options, function (o) { return o.value === size; })) {
        $("page-size").appendChild(el("option", { value: size, text: size }));
      }
      $("page-size").value = size;
      state.limit = INFO.limit;
    }
    summary(INFO.summary);
    fillSelect($("label"), INFO.labels || []);
    fillSelect($("pred"), INFO.preds || []);
    $("show").disabled = !INFO.has_labels;
    $("label").disabled = !(INFO.labels || []).length;
    var head = $("grid-head");
    clear(head);
    head.appendChild(el("th", { scope: "col", text: "image" }));
    head.appendChild(el("th", { scope: "col", text: "input" }));
    (INFO.methods || []).forEach(function (m) {
      var badge = sanityBadge(m);
      head.appendChild(badge ? el("th", { scope: "col" }, [el("span", { className: "method-name", text: m }), badge])
        : el("th", { scope: "col", text: m }));
    });
  }

  /* The store's sanity verdict of a method as a badge (pass/fail; the similarities in its title), or null. */
  function sanityBadge(m) {
    var s = (INFO.sanity || {})[m];
    if (!s) { return null; }
    return el("span", {
      className: "badge sanity " + (s.passed ? "pass" : "fail"),
      text: s.passed ? "sanity pass" : "sanity fail",
      title: s.title || verdict(s),
    });
  }

  function counts() {
    var text = state.total + " of " + INFO.records + " image" + (INFO.records === 1 ? "" : "s") + " shown";
    text += " · " + (INFO.methods || []).length + " method" + ((INFO.methods || []).length === 1 ? "" : "s");
    if (INFO.failed) { text += " · " + INFO.failed + " failed in the run"; }
    $("counts").textContent = text;
    document.querySelector(".pager").hidden = state.virtual;
    if (state.virtual) { return; }
    var pages = Math.max(1, Math.ceil(state.total / state.limit));
    var page = Math.floor(state.offset / state.limit) + 1;
    $("page-label").textContent = "page " + page + " of " + pages;
    $("prev").disabled = state.offset <= 0;
    $("next").disabled = state.offset + state.limit >= state.total;
  }

  /* ---------------------------------------------------------------- the grid */

  function thumb(imageUrl, heatUrl, alt) {
    var box = el("span", { className: heatUrl ? "stack" : "thumb" });
    if (imageUrl) { box.appendChild(el("img", { src: imageUrl, alt: heatUrl ? "" : alt, loading: "lazy" })); }
    if (heatUrl) { box.appendChild(el("img", { src: heatUrl, alt: alt, className: "heat", loading: "lazy" })); }
    return box;
  }

  function nameCell(r) {
    var cell = el("td", { className: "who" });
    cell.appendChild(el("span", { className: "name", text: r.key }));
    if (r.label_name !== null && r.label_name !== undefined) {
      cell.appendChild(el("span", { className: "sub label", text: "label: " + r.label_name }));
    }
    if (r.pred.length) {
      cell.appendChild(el("span", { className: "sub top", text: "predicted: " + r.pred[0][2] + " " + pct(r.pred[0][1]) }));
    }
    if (r.mistake === true) { cell.appendChild(el("span", { className: "badge mistake", text: "mistake" })); }
    if (r.mistake === false) { cell.appendChild(el("span", { className: "badge correct", text: "correct" })); }
    return cell;
  }

  /* The URLs of a record's maps of one method: of the chosen layer alone, or the method's own (reduced) maps. */
  function mapUrls(r, m) {
    if (state.layer) { return ((r.layer_maps || {})[state.layer] || {})[m] || []; }
    return (r.maps || {})[m] || [];
  }

  function number(v) {
    if (typeof v !== "number" || !isFinite(v)) { return "n/a"; }
    return String(Number(v.toPrecision(4)));
  }

  function verdict(s) {
    var parts = Object.keys(s.similarity || {}).map(function (n) { return n + " " + Number(s.similarity[n]).toFixed(2); });
    return [s.passed ? "pass" : "fail"].concat(parts).join(" ");
  }

  /* Under a map: its metric values and its sanity verdict on this record, when there are any. */
  function cellScores(r, m) {
    var values = (r.metrics || {})[m] || {}, sanity = (r.sanity || {})[m];
    var names = Object.keys(values);
    if (!names.length && !sanity) { return null; }
    var box = el("span", { className: "scores" });
    names.forEach(function (n) { box.appendChild(el("span", { className: "score", text: n + " " + number(values[n]) })); });
    if (sanity) {
      box.appendChild(el("span", { className: "score sanity " + (sanity.passed ? "pass" : "fail"), text: "sanity " + verdict(sanity) }));
    }
    return box;
  }

  /* The summary card: a table of means (and verdicts) per method, or a note that there are none. */
  function summary(table) {
    var card = $("summary");
    if (!table) { card.hidden = true; return; }
    card.hidden = false;
    $("summary-note").textContent = table.note || "";
    var holder = $("summary-table");
    clear(holder);
    var names = table.names || [], methods = table.methods || [];
    var sanity = table.sanity || {};
    var hasSanity = Object.keys(sanity).length > 0;
    if (!methods.length) { holder.hidden = true; return; }
    holder.appendChild(el("caption", { text: table.caption || "" }));
    var head = el("tr", {}, [el("th", { scope: "col", text: "method" })]);
    names.forEach(function (n) { head.appendChild(el("th", { scope: "col", text: n })); });
    if (hasSanity) { head.appendChild(el("th", { scope: "col", text: table.sanity_header || "sanity" })); }
    holder.appendChild(el("thead", {}, [head]));
    var body = el("tbody");
    methods.forEach(function (m) {
      var row = el("tr", {}, [el("th", { scope: "row", text: m })]);
      var values = (table.values || {})[m] || {};
      names.forEach(function (n) { row.appendChild(el("td", { text: n in values ? number(values[n]) : "–" })); });
      if (hasSanity) {
        var s = sanity[m];
        row.appendChild(el("td", { className: s ? (s.passed ? "pass" : "fail") : "", text: s ? verdict(s) : "–" }));
      }
      body.appendChild(row);
    });
    holder.appendChild(body);
  }

  function spacer(rows) {
    var cell = el("td", { colspan: String(2 + (INFO.methods || []).length) });
    cell.style.height = Math.max(0, rows * state.row) + "px";
    return el("tr", { className: "spacer", "aria-hidden": "true" }, [cell]);
  }

  /* In the scrolling list: the rows' real mean height, so that the spacers stand for as much. */
  function measure() {
    var rows = Array.prototype.filter.call($("grid-body").rows, function (r) { return !r.classList.contains("spacer"); });
    if (!rows.length) { return; }
    var mean = rows.reduce(function (sum, r) { return sum + r.getBoundingClientRect().height; }, 0) / rows.length;
    if (Math.abs(mean - state.row) > 0.5) {
      state.row = mean;
      var body = $("grid-body");
      body.replaceChild(spacer(state.offset), body.firstChild);
      body.replaceChild(spacer(state.total - state.offset - state.records.length), body.lastChild);
    }
  }

  function grid() {
    var body = $("grid-body");
    clear(body);
    if (state.virtual) { body.appendChild(spacer(state.offset)); }
    state.records.forEach(function (r, index) {
      var row = el("tr", { "data-index": String(index) });
      row.appendChild(nameCell(r));
      row.appendChild(el("td", {}, [thumb(r.image, null, "input: " + r.key)]));
      (INFO.methods || []).forEach(function (m) {
        var urls = mapUrls(r, m);
        row.appendChild(el("td", { className: "map", "data-method": m }, [
          urls[0] ? thumb(r.image, urls[0], m + " on " + r.key) : el("span", { className: "note", text: "no map" }),
          cellScores(r, m),
        ]));
      });
      row.tabIndex = 0;
      row.addEventListener("click", function (event) {
        var cell = event.target.closest ? event.target.closest("td.map") : null;
        select(index, cell ? cell.getAttribute("data-method") : null);
      });
      row.addEventListener("keydown", function (event) {
        if (event.key === "Enter" || event.key === " ") { event.preventDefault(); select(index, null); }
      });
      body.appendChild(row);
    });
    if (state.virtual) {
      body.appendChild(spacer(state.total - state.offset - state.records.length));
      measure();
    }
    $("empty").hidden = state.records.length > 0;
    counts();
  }

  /* The scrolling list: fetch the rows around the screen when it nears the edge of those held. */
  function scrolled() {
    if (!state.virtual) { return; }
    var wrap = $("grid-wrap");
    var first = Math.floor(wrap.scrollTop / state.row);
    var last = Math.ceil((wrap.scrollTop + wrap.clientHeight) / state.row);
    var held = state.offset + state.records.length;
    var nearTop = state.offset > 0 && first < state.offset + MARGIN / 2;
    var nearEnd = held < state.total && last > held - MARGIN / 2;
    var start = Math.max(0, Math.min(first - MARGIN, state.total - WINDOW));
    if ((nearTop || nearEnd) && start !== state.offset) {
      state.offset = start;
      load();
    }
  }

  function load() {
    var request = Object.assign({}, state);
    var ticket = {};
    state.loading = ticket;
    document.body.setAttribute("data-loading", "1");
    return backend.page(request).then(function (answer) {
      if (state.loading !== ticket) { return; }
      state.total = answer.total;
      state.records = answer.records;
      grid();
      if (state.virtual) { window.requestAnimationFrame(scrolled); }  // the screen may have moved meanwhile
      if (state.selected !== null) {
        var again = state.records.findIndex(function (r) { return r.key === state.selected; });
        if (again >= 0) { select(again, state.method); } else if (!state.virtual) { closeDetail(); }
      }
      document.body.setAttribute("data-loading", "0");
    }).catch(function (error) {
      $("counts").textContent = "could not load the records: " + error.message;
      document.body.setAttribute("data-loading", "error");
    });
  }

  /* ---------------------------------------------------------------- the detail panel */

  function current() {
    var r = state.records.find(function (r) { return r.key === state.selected; });
    return r || (state.virtual && state.selectedRecord && state.selectedRecord.key === state.selected ? state.selectedRecord : null);
  }

  function select(index, method) {
    var r = state.records[index];
    if (!r) { return; }
    if (state.selected !== r.key) { state.k = 0; }
    state.selected = r.key;
    state.selectedRecord = r;
    state.method = method || state.method || (INFO.methods || [])[0] || null;
    Array.prototype.forEach.call($("grid-body").rows, function (row) {
      row.classList.toggle("selected", row.getAttribute("data-index") === String(index));
    });
    detail();
  }

  function buttons(holder, entries, chosen, onPick) {
    clear(holder);
    entries.forEach(function (entry) {
      var b = el("button", { type: "button", text: entry.text, "aria-pressed": String(entry.value === chosen) });
      if (entry.badge) { b.appendChild(entry.badge); }
      b.setAttribute("data-value", String(entry.value));
      b.addEventListener("click", function () { onPick(entry.value); });
      holder.appendChild(b);
    });
  }

  function detail() {
    var r = current();
    var panel = $("detail");
    if (!r) { panel.hidden = true; return; }
    panel.hidden = false;
    var targets = r.targets.length ? r.targets : [[null, "explained class"]];
    if (state.k >= targets.length) { state.k = 0; }
    $("detail-title").textContent = r.key;
    var label = r.label_name !== null && r.label_name !== undefined ? "folder label: " + r.label_name : "no folder label";
    if (r.mistake === true) { label += " · mistake"; }
    if (r.mistake === false) { label += " · correct"; }
    $("detail-label").textContent = label;
    buttons($("detail-methods"), (INFO.methods || []).map(function (m) { return { value: m, text: m, badge: sanityBadge(m) }; }), state.method,
      function (m) { state.method = m; detail(); });
    buttons($("detail-classes"), targets.map(function (t, k) {
      return { value: k, text: t[0] === null ? t[1] : t[1] + " (" + t[0] + ")" };
    }), state.k, function (k) { state.k = k; detail(); });
    var urls = mapUrls(r, state.method);
    setImage($("detail-original"), r.image, "input: " + r.key);
    setImage($("detail-base"), r.image, "");
    setImage($("detail-heat"), urls[state.k] || null, state.method + " heatmap of " + r.key);
    $("detail-heat").style.opacity = String(state.detailOpacity);
    var t = targets[state.k];
    $("detail-caption").textContent = state.method + (state.layer ? " at " + state.layer : "") + " · " +
      (t[0] === null ? t[1] : t[1] + " (" + t[0] + ")");
    var preds = $("detail-preds");
    clear(preds);
    r.pred.slice(0, 5).forEach(function (p) {
      var bar = el("span");
      bar.style.width = Math.max(0, Math.min(100, 100 * p[1])).toFixed(1) + "%";
      preds.appendChild(el("li", {}, [
        el("span", { className: "label", text: p[0] === null ? p[2] : p[2] + " (" + p[0] + ")" }),
        el("span", { className: "pct", text: pct(p[1]) }),
        el("span", { className: "bar" }, [bar]),
      ]));
    });
    metrics(r);
  }

  function setImage(img, url, alt) {
    if (url) { img.src = url; img.hidden = false; } else { img.removeAttribute("src"); img.hidden = true; }
    img.alt = alt;
  }

  /* Metrics and sanity verdicts, when the data has them: {method: {metric: value}}, {method: {passed, similarity}}. */
  function metrics(r) {
    var holder = $("detail-metrics");
    clear(holder);
    var values = r.metrics || {}, sanity = r.sanity || {};
    var methods = Object.keys(values).concat(Object.keys(sanity).filter(function (m) { return !(m in values); }));
    if (!methods.length) { return; }
    var names = [];
    methods.forEach(function (m) {
      Object.keys(values[m] || {}).forEach(function (n) { if (names.indexOf(n) < 0) { names.push(n); } });
    });
    var hasSanity = Object.keys(sanity).length > 0;
    var head = el("tr", {}, [el("th", { text: "method" })]);
    names.forEach(function (n) { head.appendChild(el("th", { text: n })); });
    if (hasSanity) { head.appendChild(el("th", { text: "sanity" })); }
    var table = el("table", { className: "metrics" }, [el("caption", { text: "Metrics for this image" }), el("thead", {}, [head])]);
    var body = el("tbody");
    methods.forEach(function (m) {
      var row = el("tr", {}, [el("th", { scope: "row", text: m })]);
      names.forEach(function (n) {
        var v = (values[m] || {})[n];
        row.appendChild(el("td", { text: v === undefined ? "–" : number(v) }));
      });
      if (hasSanity) {
        var s = sanity[m];
        row.appendChild(el("td", { className: s ? (s.passed ? "pass" : "fail") : "", text: s ? verdict(s) : "–" }));
      }
      body.appendChild(row);
    });
    table.appendChild(body);
    holder.appendChild(table);
  }

  function closeDetail() {
    state.selected = null;
    $("detail").hidden = true;
    Array.prototype.forEach.call($("grid-body").rows, function (row) { row.classList.remove("selected"); });
  }

  /* ---------------------------------------------------------------- method agreement */

  function agreement() {
    var section = $("agreement");
    if (!section.hidden) { section.hidden = true; return; }
    section.hidden = false;
    $("agreement-note").textContent = "computing…";
    backend.agreement().then(function (table) {
      var holder = $("agreement-table");
      clear(holder);
      if (!table || !table.methods || table.methods.length < 2) {
        $("agreement-note").textContent = "Agreement needs at least two methods.";
        return;
      }
      $("agreement-note").textContent = "Spearman rank correlation of the methods' maps (first explained class), " +
        "mean over " + table.sample + " images spread over the store; 1: same ranking of the pixels.";
      var head = el("tr", {}, [el("th", { text: "" })]);
      table.methods.forEach(function (m) { head.appendChild(el("th", { scope: "col", text: m })); });
      holder.appendChild(el("thead", {}, [head]));
      var body = el("tbody");
      table.methods.forEach(function (m, i) {
        var row = el("tr", {}, [el("th", { scope: "row", text: m })]);
        table.rho[i].forEach(function (v) {
          row.appendChild(el("td", { className: "agree", text: v === null ? "–" : v.toFixed(2) }));
        });
        body.appendChild(row);
      });
      holder.appendChild(body);
    }).catch(function (error) { $("agreement-note").textContent = "could not compute: " + error.message; });
  }

  /* ---------------------------------------------------------------- wiring */

  function setOpacity(value) {
    state.opacity = value / 100;
    document.documentElement.style.setProperty("--heat", String(state.opacity));
    $("opacity-value").textContent = value + "%";
  }

  function setDetailOpacity(value) {
    state.detailOpacity = value / 100;
    $("detail-heat").style.opacity = String(state.detailOpacity);
    $("detail-opacity-value").textContent = value + "%";
  }

  function refilter() {
    state.offset = 0;
    $("grid-wrap").scrollTop = 0;
    load();
  }

  function wire() {
    var timer = null;
    $("search").addEventListener("input", function () {
      clearTimeout(timer);
      timer = setTimeout(function () { state.q = $("search").value; refilter(); }, 150);
    });
    $("show").addEventListener("change", function () { state.show = $("show").value; refilter(); });
    $("label").addEventListener("change", function () { state.label = $("label").value; refilter(); });
    $("pred").addEventListener("change", function () { state.pred = $("pred").value; refilter(); });
    $("layer").addEventListener("change", function () {
      state.layer = $("layer").value;
      grid();
      var again = state.records.findIndex(function (r) { return r.key === state.selected; });
      if (again >= 0) { select(again, state.method); }
    });
    $("sort").addEventListener("change", function () {
      var value = $("sort").value, cut = value.lastIndexOf(":");
      var sort = value.slice(0, cut);
      state.order = value.slice(cut + 1);
      state.sort = sort.indexOf("metric=") === 0 ? "metric" : sort;
      state.metric = state.sort === "metric" ? sort.slice("metric=".length) : "";
      refilter();
    });
    $("page-size").addEventListener("change", function () {
      state.virtual = $("page-size").value === "scroll";
      state.limit = state.virtual ? WINDOW : parseInt($("page-size").value, 10);
      $("grid-wrap").classList.toggle("scroller", state.virtual);
      refilter();
    });
    var pending = false;
    $("grid-wrap").addEventListener("scroll", function () {
      if (pending) { return; }
      pending = true;
      window.requestAnimationFrame(function () { pending = false; scrolled(); });
    });
    $("prev").addEventListener("click", function () { state.offset = Math.max(0, state.offset - state.limit); load(); });
    $("next").addEventListener("click", function () { state.offset += state.limit; load(); });
    $("opacity").addEventListener("input", function () {
      setOpacity(parseInt($("opacity").value, 10));
      $("detail-opacity").value = $("opacity").value;
      setDetailOpacity(parseInt($("opacity").value, 10));
    });
    $("detail-opacity").addEventListener("input", function () { setDetailOpacity(parseInt($("detail-opacity").value, 10)); });
    $("detail-close").addEventListener("click", closeDetail);
    $("agreement-button").addEventListener("click", agreement);
    document.addEventListener("keydown", function (event) {
      if (event.key === "Escape") { closeDetail(); }
    });
  }

  header();
  wire();
  var first = Math.round(100 * (typeof INFO.opacity === "number" ? INFO.opacity : 0.5));
  $("opacity").value = String(first);
  $("detail-opacity").value = String(first);
  setOpacity(first);
  setDetailOpacity(first);
  window.camkitView = { state: state, load: load, select: select };
  load();
}());
