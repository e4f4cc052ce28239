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
