// Drover console: progressive enhancement only. Every page works without
// this script; with it, parts marked data-live refresh themselves.
//
// <div id="x" data-live="2000"> ... </div>: every 2 s the page's own URL is
// fetched again and the element with the same id is replaced by the new
// one, until the new element has data-live-done (for example a command that
// ended). Polling pauses while the tab is hidden.
(function () {
  "use strict";
  function refresh(el) {
    var period = parseInt(el.getAttribute("data-live"), 10) || 2000;
    var timer = setTimeout(function tick() {
      if (document.hidden) { timer = setTimeout(tick, period); return; }
      fetch(window.location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } })
        .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
        .then(function (html) {
          var doc = new DOMParser().parseFromString(html, "text/html");
          var fresh = doc.getElementById(el.id);
          if (!fresh) { return; }
          el.replaceWith(fresh);
          el = fresh;
          if (!fresh.hasAttribute("data-live-done")) { timer = setTimeout(tick, period); }
        })
        .catch(function () { timer = setTimeout(tick, period * 2); });
    }, period);
  }
  function start() {
    document.querySelectorAll("[data-live][id]").forEach(function (el) {
      if (!el.hasAttribute("data-live-done")) { refresh(el); }
    });
    // Select every row checkbox of a table from its header checkbox.
    document.querySelectorAll("input[data-select-all]").forEach(function (box) {
      box.addEventListener("change", function () {
        document.querySelectorAll(box.getAttribute("data-select-all")).forEach(function (c) { c.checked = box.checked; });
      });
    });
  }
  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", start); } else { start(); }
})();

// ---- Logs (issue 14): the role page's log viewer and the log search page ----
// Log text comes from hosts and is untrusted: it is only ever set as
// textContent (never innerHTML), with ANSI escape sequences and other
// control characters removed first.
(function () {
  "use strict";
  // CSI (colours, cursor moves), OSC (titles, links; ended by BEL or ST),
  // two-character escapes, 8-bit CSI, then the remaining control characters
  // but tab.
  var ANSI = /\x1b\[[0-?]*[ -\/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[ -\/]*[0-~]|\x9b[0-?]*[ -\/]*[@-~]|[\x00-\x08\x0b-\x1f\x7f]/g;
  function clean(text) { return String(text == null ? "" : text).replace(ANSI, ""); }
  window.droverCleanLog = clean;

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) { e.className = cls; }
    if (text != null) { e.textContent = text; }
    return e;
  }
  // A case-insensitive RegExp of `pattern`, as a regex if it is one, else as
  // plain text; null for an empty pattern.
  function matcher(pattern) {
    if (!pattern) { return null; }
    try { return new RegExp(pattern, "gi"); } catch (e) {
      return new RegExp(pattern.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"), "gi");
    }
  }
  // Fills `target` with `text`, each match of `re` in a <mark>; all as text nodes.
  function highlight(target, text, re) {
    target.textContent = "";
    if (!re) { target.textContent = text; return false; }
    re.lastIndex = 0;
    var at = 0, found = false, m;
    while ((m = re.exec(text)) !== null) {
      if (m[0].length === 0) { re.lastIndex++; continue; }
      found = true;
      if (m.index > at) { target.appendChild(document.createTextNode(text.slice(at, m.index))); }
      target.appendChild(el("mark", null, m[0]));
      at = m.index + m[0].length;
    }
    if (at < text.length) { target.appendChild(document.createTextNode(text.slice(at))); }
    return found;
  }
  function shortTime(line) {
    if (!line.time) { return ""; }
    return String(line.time).replace("T", " ").replace(/Z$/, "");
  }
  // The message of a REST error answer, or its status.
  function apiError(resp) {
    return resp.json().then(function (b) {
      return (b && b.error && (b.error.message || b.error)) || ("HTTP " + resp.status);
    }, function () { return "HTTP " + resp.status; });
  }

  // ---------- the role page's viewer ----------
  function viewer(root) {
    var api = root.getAttribute("data-logs-api");
    var view = document.getElementById("log-view");
    var status = document.getElementById("log-status");
    var tailSel = document.getElementById("log-tail");
    var filter = document.getElementById("log-filter");
    var pauseBtn = document.getElementById("log-pause");
    var liveBtn = document.getElementById("log-live");
    var searchBtn = document.getElementById("log-server-search");
    var boxes = root.querySelectorAll("input[name=log-stream]");
    document.getElementById("log-controls").hidden = false;
    view.hidden = false;
    var source = null, paused = false, held = [], dropped = 0, mode = "live", ended = "";

    function max() { return parseInt(tailSel.value, 10) || 100; }
    function streams() {
      var s = [];
      boxes.forEach(function (b) { if (b.checked) { s.push(b.value); } });
      return s;
    }
    function query(extra) {
      var q = "tail=" + max() + "&stream=" + encodeURIComponent(streams().join(","));
      return api + "?" + q + (extra || "");
    }
    function shown() { return view.querySelectorAll(".log-line").length; }
    function say() {
      var parts = [];
      var n = shown();
      if (mode === "search") {
        parts.push("Server search: " + n + " matching line" + (n === 1 ? "" : "s") + " from every file of the role on the host.");
      } else if (ended) {
        parts.push(ended);
      } else if (paused) {
        parts.push("Paused: " + held.length + " new line" + (held.length === 1 ? "" : "s") + " held, shown on resume" +
          (dropped ? "; " + dropped + " older held line" + (dropped === 1 ? "" : "s") + " dropped (at most " + max() + " are held)" : "") + ".");
      } else {
        parts.push("Following: the last " + max() + " lines, new ones as they are written.");
      }
      var re = matcher(filter.value);
      if (re) {
        var hits = view.querySelectorAll(".log-line.hit").length;
        parts.push(hits + " of " + n + " lines shown match.");
      }
      status.textContent = parts.join(" ");
    }
    function render(row, line) {
      var re = matcher(filter.value);
      var text = row.querySelector(".text");
      var hit = highlight(text, row.__text, re);
      row.classList.toggle("hit", !!(re && hit));
      row.hidden = !!(re && !hit);
    }
    function add(line) {
      var stream = line.stream || "stdout";
      var row = el("div", "log-line stream-" + stream);
      row.__text = clean(line.text);
      var time = el("span", "time", shortTime(line));
      if (line.file) { time.title = line.file + (line.line ? ":" + line.line : ""); }
      row.appendChild(time);
      if (stream === "stderr") { row.appendChild(el("span", "stderr-mark", "stderr")); }
      if (line.level) { row.appendChild(el("span", "level level-" + clean(line.level).replace(/[^a-z]/gi, ""), clean(line.level))); }
      row.appendChild(el("span", "text"));
      render(row, line);
      var atEnd = view.scrollTop + view.clientHeight >= view.scrollHeight - 4;
      view.appendChild(row);
      while (shown() > max()) { view.removeChild(view.querySelector(".log-line")); }
      if (atEnd) { view.scrollTop = view.scrollHeight; }
    }
    function stop() { if (source) { source.close(); source = null; } }
    function live() {
      stop();
      mode = "live"; ended = ""; held = []; dropped = 0;
      liveBtn.hidden = true; pauseBtn.hidden = false;
      view.textContent = "";
      status.textContent = "Connecting…";
      var es = new EventSource(query("&follow=true"));
      source = es;
      es.addEventListener("line", function (ev) {
        var line;
        try { line = JSON.parse(ev.data); } catch (e) { return; }
        if (paused) {
          held.push(line);
          while (held.length > max()) { held.shift(); dropped++; }
        } else { add(line); }
        say();
      });
      es.addEventListener("open", function () { if (source === es) { say(); } });
      es.addEventListener("end", function (ev) {
        var why = "";
        try { why = JSON.parse(ev.data).error || ""; } catch (e) { /* no reason */ }
        es.close();
        if (source !== es) { return; }
        source = null;
        ended = "The host ended the stream" + (why ? ": " + clean(why) : "") + ". ";
        liveBtn.hidden = false; liveBtn.textContent = "Follow again";
        say();
      });
      es.onerror = function () {
        if (source !== es) { return; }
        es.close(); source = null;
        // EventSource does not show the answer's body: ask once more without
        // follow to learn why (a 4xx names the problem).
        fetch(query(""), { credentials: "same-origin", headers: { "Accept": "application/json" } })
          .then(function (r) { return r.ok ? r.json().then(function (b) { return b.error || "the connection was lost"; }) : apiError(r); })
          .catch(function () { return "the manager cannot be reached"; })
          .then(function (why) {
            ended = "Not following: " + clean(why) + ". ";
            liveBtn.hidden = false; liveBtn.textContent = "Follow again";
            say();
          });
      };
    }
    function serverSearch() {
      var q = filter.value;
      if (!q) { filter.focus(); status.textContent = "Type a pattern to search every file of the role on the host."; return; }
      stop();
      mode = "search"; paused = false; pauseBtn.textContent = "Pause"; pauseBtn.hidden = true;
      liveBtn.hidden = false; liveBtn.textContent = "Back to the live tail";
      status.textContent = "Searching every file on the host…";
      fetch(query("&grep=" + encodeURIComponent(q)), { credentials: "same-origin", headers: { "Accept": "application/json" } })
        .then(function (r) {
          if (!r.ok) { return apiError(r).then(function (m) { throw new Error(m); }); }
          return r.json();
        })
        .then(function (body) {
          view.textContent = "";
          (body.lines || []).forEach(add);
          say();
          if (body.truncated) { status.textContent += " More lines matched than shown."; }
          if (body.error) { status.textContent += " The host reported: " + clean(body.error); }
        })
        .catch(function (e) { status.textContent = "Search refused: " + clean(e.message); });
    }
    pauseBtn.addEventListener("click", function () {
      paused = !paused;
      pauseBtn.textContent = paused ? "Resume" : "Pause";
      pauseBtn.setAttribute("aria-pressed", paused ? "true" : "false");
      if (!paused) { held.forEach(add); held = []; dropped = 0; }
      say();
    });
    liveBtn.addEventListener("click", function () { paused = false; pauseBtn.textContent = "Pause"; live(); });
    searchBtn.addEventListener("click", serverSearch);
    filter.addEventListener("input", function () {
      view.querySelectorAll(".log-line").forEach(function (row) { render(row); });
      say();
    });
    filter.addEventListener("keydown", function (e) { if (e.key === "Enter") { e.preventDefault(); serverSearch(); } });
    tailSel.addEventListener("change", function () { if (mode === "live") { live(); } });
    boxes.forEach(function (b) { b.addEventListener("change", function () { if (mode === "live") { live(); } else { serverSearch(); } }); });
    window.addEventListener("pagehide", stop);
    live();
  }

  // ---------- the log search page ----------
  function search(root) {
    var status = document.getElementById("search-status");
    var errorBox = document.getElementById("search-error");
    var failedBox = document.getElementById("search-hosts-failed");
    var table = document.getElementById("search-results");
    var hostsBox = document.getElementById("search-hosts");
    if (root.getAttribute("data-searched") !== "yes") {
      status.textContent = "Set the filters and press Search.";
      return;
    }
    var params = new URLSearchParams(window.location.search);
    var q = new URLSearchParams();
    ["q", "role_type", "role", "host", "since", "until", "level", "limit"].forEach(function (k) {
      var v = params.get(k);
      if (v) { q.set(k, v); }
    });
    var re = matcher(params.get("q") || "");
    status.textContent = "Searching…";
    fetch(root.getAttribute("data-search-api") + "&" + q.toString(),
      { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (r) {
        if (!r.ok) { return apiError(r).then(function (m) { throw new Error(m); }); }
        return r.json();
      })
      .then(function (body) {
        var tbody = table.querySelector("tbody");
        (body.matches || []).forEach(function (m) {
          var tr = el("tr", "stream-" + (m.stream || "stdout"));
          tr.appendChild(el("td", "time", shortTime(m)));
          tr.appendChild(el("td", null, m.hostname));
          var role = el("td");
          var a = el("a", null, m.role);
          a.href = "/clusters/" + encodeURIComponent(m.cluster) + "/services/" + encodeURIComponent(m.service) +
            "/roles/" + encodeURIComponent(m.role);
          role.appendChild(a);
          role.appendChild(el("small", null, " " + (m.service || "")));
          tr.appendChild(role);
          var file = el("td", "file", (m.file || "") + (m.line ? ":" + m.line : ""));
          if (m.stream === "stderr") { file.appendChild(el("span", "stderr-mark", "stderr")); }
          tr.appendChild(file);
          tr.appendChild(el("td", m.level ? "level level-" + String(m.level).replace(/[^a-z]/gi, "") : null, m.level ? clean(m.level) : ""));
          var text = el("td", "text");
          highlight(text, clean(m.text), re);
          tr.appendChild(text);
          tbody.appendChild(tr);
        });
        table.hidden = (body.matches || []).length === 0;
        var failed = (body.hosts || []).filter(function (h) { return h.status !== "answered"; });
        if (failed.length) {
          failedBox.textContent = "";
          failedBox.appendChild(el("b", null, "Not every host answered: "));
          failed.forEach(function (h, i) {
            var what = (h.hostname || h.host_id) + " (" + String(h.status).replace("_", " ") + (h.error ? ": " + clean(h.error) : "") + ")";
            failedBox.appendChild(el("span", "failed-host", what + (i + 1 < failed.length ? "; " : "")));
          });
          failedBox.hidden = false;
        }
        var hb = hostsBox.querySelector("tbody");
        (body.hosts || []).forEach(function (h) {
          var tr = el("tr");
          [h.hostname || h.host_id, h.status, String(h.lines), String(h.scanned_bytes), h.error || ""].forEach(function (v) {
            tr.appendChild(el("td", null, clean(v)));
          });
          hb.appendChild(tr);
        });
        hostsBox.hidden = (body.hosts || []).length === 0;
        var n = (body.matches || []).length;
        status.textContent = (n ? n + " matching line" + (n === 1 ? "" : "s") : "No line matched") +
          " from " + (body.hosts || []).length + " host" + ((body.hosts || []).length === 1 ? "" : "s") +
          " in " + body.took_ms + " ms" + (body.truncated ? "; more lines matched than the limit, narrow the search" : "") + ".";
      })
      .catch(function (e) {
        status.textContent = "";
        errorBox.textContent = "The search was refused: " + clean(e.message);
        errorBox.hidden = false;
      });
  }

  function start() {
    var v = document.getElementById("log-viewer");
    if (v && v.hasAttribute("data-logs-api")) { viewer(v); }
    var s = document.getElementById("log-search");
    if (s && s.hasAttribute("data-search-api")) { search(s); }
  }
  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", start); } else { start(); }
})();
