/* camkit view: the page's script. Plain ES2017, no dependency, no build step.
 *
 * Data comes from one of two backends with the same interface:
 *  - "api": the camkit view server (window.CAMKIT_VIEW.mode === "api"): pages are fetched from
 *    /api/records with the filters, so the browser holds one page at a time;
 *  - "static": an exported folder (file://): data/records-NNNN.js scripts fill
 *    window.CAMKIT_VIEW_CHUNKS, and the same filters run here.
 * Every string of the data is put into the page with textContent or as an attribute value set
 * through the DOM, never parsed as HTML.
 */
(function () {
  "use strict";

  var INFO = window.CAMKIT_VIEW || { mode: "none", methods: [], records: 0, labels: [], preds: [] };
  window.CAMKIT_VIEW_CHUNKS = window.CAMKIT_VIEW_CHUNKS || [];

  var state = {
    offset: 0, limit: 24, q: "", show: "all", label: "", pred: "", sort: "name", order: "asc",
    total: 0, records: [], selected: null, method: null, k: 0, opacity: 0.5, detailOpacity: 0.5,
    loading: null,
  };

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
          sort: s.sort, order: s.order,
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
          chosen.sort(function (a, b) { return compare(a, b, s.sort); });
          if (s.order === "desc") { chosen.reverse(); }
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

  function compare(a, b, sort) {
    if (sort === "confidence") {
      var pa = a.pred.length ? a.pred[0][1] : -1, pb = b.pred.length ? b.pred[0][1] : -1;
      if (pa !== pb) { return pa < pb ? -1 : 1; }
    }
    return a.key < b.key ? -1 : (a.key > b.key ? 1 : 0);
  }

  var backend = INFO.mode === "static" ? staticBackend() : apiBackend();

  /* ---------------------------------------------------------------- header and filters */

  function fillSelect(select, entries) {
    entries.forEach(function (entry) {
      select.appendChild(el("option", { value: entry[0], text: entry[1] + " (" + entry[2] + ")" }));
    });
  }

  function header() {
    $("title").textContent = INFO.title || "camkit view";
    document.title = INFO.title || "camkit view";
    $("subtitle").textContent = INFO.subtitle || "";
    fillSelect($("label"), INFO.labels || []);
    fillSelect($("pred"), INFO.preds || []);
    $("show").disabled = !INFO.has_labels;
    $("label").disabled = !(INFO.labels || []).length;
    var head = $("grid-head");
    clear(head);
    head.appendChild(el("th", { scope: "col", text: "image" }));
    head.appendChild(el("th", { scope: "col", text: "input" }));
    (INFO.methods || []).forEach(function (m) { head.appendChild(el("th", { scope: "col", text: m })); });
  }

  function counts() {
    var text = state.total + " of " + INFO.records + " image" + (INFO.records === 1 ? "" : "s") + " shown";
    text += " · " + (INFO.methods || []).length + " method" + ((INFO.methods || []).length === 1 ? "" : "s");
    if (INFO.failed) { text += " · " + INFO.failed + " failed in the run"; }
    $("counts").textContent = text;
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

  function grid() {
    var body = $("grid-body");
    clear(body);
    state.records.forEach(function (r, index) {
      var row = el("tr", { "data-index": String(index) });
      row.appendChild(nameCell(r));
      row.appendChild(el("td", {}, [thumb(r.image, null, "input: " + r.key)]));
      (INFO.methods || []).forEach(function (m) {
        var urls = (r.maps || {})[m] || [];
        row.appendChild(el("td", { className: "map", "data-method": m }, [thumb(r.image, urls[0], m + " on " + r.key)]));
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
    $("empty").hidden = state.records.length > 0;
    counts();
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
      if (state.selected !== null) {
        var again = state.records.findIndex(function (r) { return r.key === state.selected; });
        if (again >= 0) { select(again, state.method); } else { closeDetail(); }
      }
      document.body.setAttribute("data-loading", "0");
    }).catch(function (error) {
      $("counts").textContent = "could not load the records: " + error.message;
      document.body.setAttribute("data-loading", "error");
    });
  }

  /* ---------------------------------------------------------------- the detail panel */

  function current() {
    return state.records.find(function (r) { return r.key === state.selected; }) || null;
  }

  function select(index, method) {
    var r = state.records[index];
    if (!r) { return; }
    if (state.selected !== r.key) { state.k = 0; }
    state.selected = r.key;
    state.method = method || state.method || (INFO.methods || [])[0] || null;
    Array.prototype.forEach.call($("grid-body").rows, function (row, i) { row.classList.toggle("selected", i === index); });
    detail();
  }

  function buttons(holder, entries, chosen, onPick) {
    clear(holder);
    entries.forEach(function (entry) {
      var b = el("button", { type: "button", text: entry.text, "aria-pressed": String(entry.value === chosen) });
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
    buttons($("detail-methods"), (INFO.methods || []).map(function (m) { return { value: m, text: m }; }), state.method,
      function (m) { state.method = m; detail(); });
    buttons($("detail-classes"), targets.map(function (t, k) {
      return { value: k, text: t[0] === null ? t[1] : t[1] + " (" + t[0] + ")" };
    }), state.k, function (k) { state.k = k; detail(); });
    var urls = (r.maps || {})[state.method] || [];
    setImage($("detail-original"), r.image, "input: " + r.key);
    setImage($("detail-base"), r.image, "");
    setImage($("detail-heat"), urls[state.k] || null, state.method + " heatmap of " + r.key);
    $("detail-heat").style.opacity = String(state.detailOpacity);
    var t = targets[state.k];
    $("detail-caption").textContent = state.method + " · " + (t[0] === null ? t[1] : t[1] + " (" + t[0] + ")");
    var preds = $("detail-preds");
    clear(preds);
    r.pred.slice(0, 5).forEach(function (p) {
      var bar = el("span");
      bar.style.width = Math.max(0, Math.min(100, 100 * p[1])).toFixed(1) + "%";
      preds.appendChild(el("li", {}, [
        el("span", { className: "label", text: p[2] + " (" + p[0] + ")" }),
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
        row.appendChild(el("td", { text: typeof v === "number" ? v.toPrecision(4) : "–" }));
      });
      if (hasSanity) {
        var s = sanity[m];
        row.appendChild(el("td", { text: s ? (s.passed ? "pass" : "fail") : "–" }));
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

  function refilter() { state.offset = 0; load(); }

  function wire() {
    var timer = null;
    $("search").addEventListener("input", function () {
      clearTimeout(timer);
      timer = setTimeout(function () { state.q = $("search").value; refilter(); }, 150);
    });
    $("show").addEventListener("change", function () { state.show = $("show").value; refilter(); });
    $("label").addEventListener("change", function () { state.label = $("label").value; refilter(); });
    $("pred").addEventListener("change", function () { state.pred = $("pred").value; refilter(); });
    $("sort").addEventListener("change", function () {
      var parts = $("sort").value.split(":");
      state.sort = parts[0]; state.order = parts[1]; refilter();
    });
    $("page-size").addEventListener("change", function () { state.limit = parseInt($("page-size").value, 10); refilter(); });
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
  setOpacity(50);
  window.camkitView = { state: state, load: load, select: select };
  load();
}());
