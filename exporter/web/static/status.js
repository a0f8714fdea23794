// The status page's only script, served by the exporter itself. The page works without it;
// with it, each idle session's headroom counts down between reloads. The server wrote the
// headroom at collection time (data-headroom) and the collection's age when the page was
// made (data-collection-age on <body>); nothing is fetched.
"use strict";
(function () {
  var loaded = performance.now();
  var age = parseFloat(document.body.getAttribute("data-collection-age")) || 0;

  // The same format as exporter.status.format_duration.
  function duration(seconds) {
    if (seconds < 0) { return "-" + duration(-seconds); }
    if (seconds < 10) { return (Math.floor(seconds * 10) / 10).toFixed(1) + "s"; }
    var whole = Math.floor(seconds);
    function two(n) { return (n < 10 ? "0" : "") + n; }
    if (whole < 60) { return whole + "s"; }
    if (whole < 3600) { return Math.floor(whole / 60) + "m" + two(whole % 60) + "s"; }
    if (whole < 86400) { return Math.floor(whole / 3600) + "h" + two(Math.floor(whole % 3600 / 60)) + "m"; }
    return Math.floor(whole / 86400) + "d" + two(Math.floor(whole % 86400 / 3600)) + "h";
  }

  function tick() {
    var elapsed = age + (performance.now() - loaded) / 1000;
    var cells = document.querySelectorAll("td[data-headroom]");
    for (var i = 0; i < cells.length; i++) {
      var left = parseFloat(cells[i].getAttribute("data-headroom")) - elapsed;
      cells[i].textContent = left > 0 ? duration(left) : "due now";
      cells[i].classList.toggle("due", left <= 0);
    }
    var shown = document.getElementById("age");
    if (shown) { shown.textContent = duration(elapsed); }
  }

  tick();
  setInterval(tick, 200);
})();
