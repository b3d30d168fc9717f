// taskledger UI: the little that needs a script. Every page works without it; this adds the
// keyboard, the as-of slider and the auto-refresh switch.
(function () {
  "use strict";
  var PAUSED = "taskledger.refreshPaused";

  // Keyboard: j/k or arrows move between rows, Enter opens the row, x selects it, / searches.
  function rows() { return Array.prototype.slice.call(document.querySelectorAll("[data-row]")); }
  document.addEventListener("keydown", function (e) {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    var t = e.target;
    var typing = t.matches && t.matches("input:not([type=checkbox]):not([type=range]), textarea, select");
    if (typing) return;
    if (e.key === "/") {
      var search = document.querySelector("[data-search]");
      if (search) { search.focus(); e.preventDefault(); }
      return;
    }
    var list = rows();
    if (!list.length) return;
    var current = document.activeElement && document.activeElement.closest ? document.activeElement.closest("[data-row]") : null;
    var i = list.indexOf(current);
    if (e.key === "j" || e.key === "ArrowDown") {
      list[Math.min(i + 1, list.length - 1)].focus(); e.preventDefault();
    } else if (e.key === "k" || e.key === "ArrowUp") {
      list[Math.max(i - 1, 0)].focus(); e.preventDefault();
    } else if (e.key === "Enter" && current && t === current) {
      var link = current.querySelector("a[data-primary]");
      if (link) { e.preventDefault(); window.location.href = link.href; }
    } else if ((e.key === "x" || e.key === " ") && current) {
      var box = current.querySelector("input[type=checkbox]");
      if (box) { e.preventDefault(); box.checked = !box.checked; }
    }
  });
  document.addEventListener("focusin", function (e) {
    var row = e.target.closest && e.target.closest("[data-row]");
    if (row) rows().forEach(function (r) { r.setAttribute("tabindex", r === row ? "0" : "-1"); });
  });

  // The as-of slider steps through the task's event instants and shows the page as of each.
  var slider = document.getElementById("asof-step");
  if (slider) {
    var instants = (slider.getAttribute("data-instants") || "").split(" ").filter(Boolean);
    var label = document.getElementById("asof-label");
    var field = document.getElementById("asof");
    slider.addEventListener("input", function () { label.textContent = instants[slider.value] || ""; });
    slider.addEventListener("change", function () {
      var value = Number(slider.value);
      field.value = value >= instants.length - 1 ? "" : instants[value];
      if (field.value === "") window.location.href = document.getElementById("asof-form").action;
      else document.getElementById("asof-form").submit();
    });
  }

  // Auto-refresh of list pages, paused by the button (remembered for this browser session);
  // never while a row is selected or a field is being edited.
  var seconds = Number(document.body.getAttribute("data-refresh") || 0);
  var toggle = document.getElementById("refresh-toggle");
  function paused() { return sessionStorage.getItem(PAUSED) === "1"; }
  function show() {
    if (!toggle) return;
    toggle.setAttribute("aria-pressed", paused() ? "true" : "false");
    toggle.textContent = paused() ? "▶ Resume auto-refresh" : "⏸ Pause auto-refresh (" + seconds + " s)";
  }
  if (toggle) {
    toggle.addEventListener("click", function () {
      sessionStorage.setItem(PAUSED, paused() ? "0" : "1"); show();
    });
    show();
  }
  if (seconds > 0) {
    setInterval(function () {
      if (paused()) return;
      if (document.querySelector("input[type=checkbox]:checked")) return;
      var a = document.activeElement;
      if (a && a.matches && a.matches("input, select, textarea")) return;
      window.location.reload();
    }, seconds * 1000);
  }
})();
