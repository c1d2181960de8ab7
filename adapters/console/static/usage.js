/* The usage page's charts: drawn with Chart.js (static/vendor) from the page's JSON block
   (#usage-data). No inline script, no eval: it runs under the console's CSP (script-src 'self').
   Without Chart.js (or without script) the page's tables still hold every number. */
(function () {
  "use strict";

  var COLORS = { slack: "#611f69", discord: "#5865f2" };
  var SPARE = ["#1e6b3a", "#b3261e", "#8a5a00", "#2457c5", "#5d6777"];

  function colorOf(platform, index) {
    return COLORS[platform] || SPARE[index % SPARE.length];
  }

  function options(stacked, title) {
    return {
      responsive: true,
      maintainAspectRatio: false,
      animation: false,
      interaction: { mode: "index", intersect: false },
      plugins: { legend: { position: "bottom" } },
      scales: {
        x: {
          stacked: stacked,
          // "03-14" under the axis (the tooltip names the whole day): narrow charts stay legible.
          ticks: {
            maxRotation: 0,
            autoSkip: true,
            maxTicksLimit: 8,
            callback: function (value) {
              return String(this.getLabelForValue(value)).slice(5);
            }
          }
        },
        y: {
          stacked: stacked,
          beginAtZero: true,
          title: { display: true, text: title },
          ticks: { precision: 0 }
        }
      }
    };
  }

  function bars(canvas, data, field, title) {
    var datasets = data.series.map(function (series, index) {
      return {
        label: series.platform,
        data: series[field],
        backgroundColor: colorOf(series.platform, index)
      };
    });
    return new window.Chart(canvas, {
      type: "bar",
      data: { labels: data.days, datasets: datasets },
      options: options(true, title)
    });
  }

  function errors(canvas, data) {
    var datasets = [];
    data.series.forEach(function (series, index) {
      var color = colorOf(series.platform, index);
      datasets.push({
        label: series.platform + " failed replies",
        data: series.failed,
        borderColor: color,
        backgroundColor: color,
        pointRadius: 2,
        tension: 0
      });
      datasets.push({
        label: series.platform + " 429s",
        data: series.rate_limited, // null: not counted that day (a gap)
        borderColor: color,
        backgroundColor: color,
        borderDash: [6, 4],
        pointRadius: 2,
        spanGaps: false,
        tension: 0
      });
    });
    return new window.Chart(canvas, {
      type: "line",
      data: { labels: data.days, datasets: datasets },
      options: options(false, "count")
    });
  }

  function draw() {
    var source = document.getElementById("usage-data");
    if (!source || typeof window.Chart === "undefined") {
      return;
    }
    var data;
    try {
      data = JSON.parse(source.textContent);
    } catch (error) {
      return;
    }
    var tokens = document.getElementById("chart-tokens");
    var replies = document.getElementById("chart-replies");
    var failed = document.getElementById("chart-errors");
    if (tokens) { bars(tokens, data, "tokens", "tokens"); }
    if (replies) { bars(replies, data, "replies", "replies"); }
    if (failed) { errors(failed, data); }
    document.documentElement.setAttribute("data-usage-charts", "drawn");
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", draw);
  } else {
    draw();
  }
})();
