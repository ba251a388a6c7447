// The scalablejob dashboard: charts the scaler's history (server-sent events from /dashboard/events) with uPlot.
// The stream sends the last 30 minutes on connect ("history"), then each new sample ("sample") and the newest
// failures when they change ("failures"). What is drawn is kept in window.scalablejobDashboard (the charts, whose
// .data arrays are what uPlot plots, and the samples they came from), for the curious and for the browser test.
"use strict";

(function () {
  const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"];
  const CHANGE_COLORS = { up: "#2ca02c", down: "#ff7f0e", hold: "#999999" };
  const state = { windowS: 1800, samples: [], failures: [], events: [] };
  const charts = {};
  window.scalablejobDashboard = { state: state, charts: charts, series: series };

  // ---- what each chart draws, from the samples --------------------------------------------------------------

  function keysOf(samples, field) {
    const found = new Set();
    samples.forEach(function (s) { Object.keys(s[field]).forEach(function (k) { found.add(k); }); });
    return Array.from(found).sort();
  }

  function rate(count, dt) {
    return dt > 0 ? count / dt : null;
  }

  function part(value, index) {
    return value === null ? null : value[index];
  }

  // The series of every chart: {name: {labels: [...], data: [xs, ys...]}}.
  function series(samples) {
    const xs = samples.map(function (s) { return s.at; });
    const types = keysOf(samples, "depth");
    const hosts = keysOf(samples, "hosts");
    const many = hosts.length > 1;
    const workerLabels = [];
    const workerData = [];
    hosts.forEach(function (host) {
      ["desired", "running", "busy"].forEach(function (what, i) {
        workerLabels.push(many ? what + " (" + host + ")" : what);
        workerData.push(samples.map(function (s) { return host in s.hosts ? s.hosts[host][i] : null; }));
      });
    });
    return {
      depth: {
        labels: types,
        data: [xs].concat(types.map(function (t) {
          return samples.map(function (s) { return t in s.depth ? s.depth[t] : null; });
        })),
      },
      workers: { labels: workerLabels, data: [xs].concat(workerData) },
      rates: {
        labels: ["started/s", "finished/s"],
        data: [xs, samples.map(function (s) { return rate(s.started, s.dt); }),
               samples.map(function (s) { return rate(s.finished, s.dt); })],
      },
      times: {
        labels: ["wait p50", "wait p95", "run p50", "run p95"],
        data: [xs, samples.map(function (s) { return part(s.wait, 0); }),
               samples.map(function (s) { return part(s.wait, 1); }),
               samples.map(function (s) { return part(s.run, 0); }),
               samples.map(function (s) { return part(s.run, 1); })],
      },
    };
  }

  function decisions(samples) {
    const found = [];
    samples.forEach(function (s) {
      s.events.forEach(function (e) { found.push({ at: s.at, change: e[0], desired: e[1], reason: e[2] }); });
    });
    return found;
  }

  // ---- drawing ------------------------------------------------------------------------------------------------

  // Scale decisions as vertical lines; the one under the cursor (within 6 px) says its reason below the chart.
  function markers() {
    return {
      hooks: {
        draw: [function (u) {
          const ctx = u.ctx;
          ctx.save();
          ctx.lineWidth = 1.5 * devicePixelRatio;
          state.events.forEach(function (e) {
            const x = Math.round(u.valToPos(e.at, "x", true));
            if (x < u.bbox.left || x > u.bbox.left + u.bbox.width) return;
            ctx.strokeStyle = CHANGE_COLORS[e.change] || "#999999";
            ctx.setLineDash(e.change === "hold" ? [3, 3] : []);
            ctx.beginPath();
            ctx.moveTo(x, u.bbox.top);
            ctx.lineTo(x, u.bbox.top + u.bbox.height);
            ctx.stroke();
          });
          ctx.restore();
        }],
        setCursor: [function (u) {
          const left = u.cursor.left;
          const box = document.getElementById("decision");
          if (left === undefined || left < 0) return;
          let nearest = null;
          state.events.forEach(function (e) {
            const distance = Math.abs(u.valToPos(e.at, "x") - left);
            if (distance <= 6 && (nearest === null || distance < nearest.distance)) {
              nearest = { event: e, distance: distance };
            }
          });
          box.textContent = nearest === null ? "" : new Date(nearest.event.at * 1000).toLocaleTimeString() + " " +
            nearest.event.change + " to " + nearest.event.desired + ": " + nearest.event.reason;
        }],
      },
    };
  }

  function build(name, spec) {
    const element = document.getElementById("chart-" + name);
    const options = {
      width: Math.max(320, element.clientWidth),
      height: 200,
      scales: { x: { time: true } },
      series: [{}].concat(spec.labels.map(function (label, i) {
        return { label: label, stroke: COLORS[i % COLORS.length], width: 1.5, spanGaps: false };
      })),
      axes: [{}, { size: 50 }],
      plugins: name === "workers" ? [markers()] : [],
    };
    element.textContent = "";
    const chart = new uPlot(options, spec.data, element);
    chart.labels = spec.labels.slice();
    return chart;
  }

  function draw() {
    const all = series(state.samples);
    state.events = decisions(state.samples);
    Object.keys(all).forEach(function (name) {
      const spec = all[name];
      const chart = charts[name];
      if (chart && chart.labels.join("\u0000") === spec.labels.join("\u0000")) {
        chart.setData(spec.data);
      } else {  // a new task type or host: the chart is made again with its series
        if (chart) chart.destroy();
        charts[name] = build(name, spec);
      }
    });
  }

  function failuresTable(rows) {
    const body = document.querySelector("#failures tbody");
    body.textContent = "";
    rows.forEach(function (f) {
      const tr = document.createElement("tr");
      const cells = [f.finishedAt ? new Date(f.finishedAt * 1000).toLocaleTimeString() : "", f.requestId,
                     f.taskType, f.worker, f.exitCode === null ? "" : String(f.exitCode), f.error];
      cells.forEach(function (text, i) {
        const td = document.createElement("td");
        td.textContent = text;
        if (i === 5) td.className = "error";
        tr.appendChild(td);
      });
      body.appendChild(tr);
    });
  }

  function status(text) {
    document.getElementById("status").textContent = text;
  }

  // ---- the stream ---------------------------------------------------------------------------------------------

  function trim() {
    const last = state.samples.length ? state.samples[state.samples.length - 1].at : 0;
    while (state.samples.length && state.samples[0].at < last - state.windowS) state.samples.shift();
  }

  function shown() {
    const n = state.samples.length;
    const last = n ? new Date(state.samples[n - 1].at * 1000).toLocaleTimeString() : "none yet";
    status("live: " + n + " samples, last " + last);
  }

  function connect() {
    const source = new EventSource("/dashboard/events");
    source.addEventListener("history", function (message) {
      const history = JSON.parse(message.data);
      state.windowS = history.windowS;
      state.samples = history.samples;
      state.failures = history.failures;
      document.getElementById("service").textContent = history.service || "";
      draw();
      failuresTable(state.failures);
      shown();
    });
    source.addEventListener("sample", function (message) {
      state.samples.push(JSON.parse(message.data));
      trim();
      draw();
      shown();
    });
    source.addEventListener("failures", function (message) {
      state.failures = JSON.parse(message.data);
      failuresTable(state.failures);
    });
    source.onerror = function () {
      if (source.readyState === EventSource.CLOSED) {  // refused (a session gone with a restart): log in again
        status("disconnected: reloading...");
        setTimeout(function () { location.reload(); }, 5000);
      } else {
        status("reconnecting...");
      }
    };
  }

  connect();
})();
