// group-relay dashboard: sparklines (inline SVG) and auto-refresh of the live pages.
// Everything works without this script; it only draws and refreshes.
(function () {
  "use strict";
  var SVG = "http://www.w3.org/2000/svg";

  function sparkline(el) {
    var points = (el.getAttribute("data-points") || "").split(",").map(Number)
      .filter(function (n) { return isFinite(n); });
    if (points.length < 2) { return; }
    var width = 300, height = 40, pad = 2;
    var peak = Math.max.apply(null, points) || 1;
    var step = (width - 2 * pad) / (points.length - 1);
    var coords = points.map(function (n, i) {
      var x = pad + i * step, y = height - pad - (n / peak) * (height - 2 * pad);
      return x.toFixed(1) + "," + y.toFixed(1);
    });
    var svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("viewBox", "0 0 " + width + " " + height);
    svg.setAttribute("preserveAspectRatio", "none");
    svg.setAttribute("role", "img");
    var title = document.createElementNS(SVG, "title");
    title.textContent = (el.getAttribute("data-label") || "") + ": " + points.join(" ");
    svg.appendChild(title);
    var area = document.createElementNS(SVG, "polygon");
    area.setAttribute("points", pad + "," + (height - pad) + " " + coords.join(" ") + " " +
      (width - pad) + "," + (height - pad));
    area.setAttribute("fill", "currentColor");
    area.setAttribute("fill-opacity", "0.12");
    var line = document.createElementNS(SVG, "polyline");
    line.setAttribute("points", coords.join(" "));
    line.setAttribute("fill", "none");
    line.setAttribute("stroke", "currentColor");
    line.setAttribute("stroke-width", "1.5");
    line.setAttribute("vector-effect", "non-scaling-stroke");
    svg.appendChild(area);
    svg.appendChild(line);
    el.textContent = "";
    el.appendChild(svg);
  }

  function drawAll(root) {
    Array.prototype.forEach.call(root.querySelectorAll(".spark[data-points]"), sparkline);
  }

  // The parts of the page that refresh: every [data-live] element, matched in the fresh
  // page by id (else by position). One the operator is using (a ticked checkbox, the
  // focus inside) is left alone, so a refresh never drops a selection.
  function busy(el) {
    return el.querySelector("input:checked") !== null || el.contains(document.activeElement);
  }

  function swap(doc) {
    var fresh = doc.querySelectorAll("[data-live]");
    Array.prototype.forEach.call(document.querySelectorAll("[data-live]"), function (el, i) {
      var next = el.id ? doc.getElementById(el.id) : fresh[i];
      if (!next || busy(el)) { return; }
      el.replaceChildren.apply(el, Array.prototype.slice.call(next.childNodes));
      drawAll(el);
    });
  }

  function autoRefresh() {
    var seconds = Number(document.body.getAttribute("data-refresh"));
    var toggle = document.querySelector("[data-autorefresh]");
    if (!seconds || !document.querySelector("[data-live]")) { return; }
    if (toggle) {
      toggle.parentNode.hidden = false;
      toggle.checked = window.localStorage.getItem("relay.autorefresh") !== "off";
      toggle.addEventListener("change", function () {
        window.localStorage.setItem("relay.autorefresh", toggle.checked ? "on" : "off");
      });
    }
    var timer = window.setInterval(function () {
      if (document.hidden || (toggle && !toggle.checked)) { return; }
      window.fetch(window.location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } })
        .then(function (response) {
          if (response.redirected) { window.location.reload(); return null; }
          if (!response.ok) { return null; }
          return response.text();
        })
        .then(function (html) {
          if (html === null) { return; }
          var doc = new DOMParser().parseFromString(html, "text/html");
          swap(doc);
          // A page stops asking for refreshes once nothing on it moves (a followed
          // replay that has settled).
          if (!doc.body.getAttribute("data-refresh")) {
            window.clearInterval(timer);
            if (toggle) { toggle.parentNode.hidden = true; }
          }
        })
        .catch(function () { /* offline for a moment: try again at the next tick */ });
    }, seconds * 1000);
  }

  document.addEventListener("DOMContentLoaded", function () {
    drawAll(document);
    autoRefresh();
  });
}());
