// arx dashboard: live refresh of server-rendered fragments, and the uPlot charts.
//
// The server sends `ledger` (the database changed) or `progress` (a trainer logged a step) on
// /events. Elements with data-on="ledger progress" say which changes concern them: fragments
// (data-refresh) are fetched again as HTML the server has escaped; charts (data-chart) fetch
// their JSON again. Text from the ledger reaches the DOM here only through textContent.
"use strict";
(() => {
  const charts = {};
  window.arxCharts = charts; // for tests and the curious: the uPlot instances by name
  const BLUE = "#2563eb", GREY = "#a3aab5", ORANGE = "#f59e0b", RED = "#dc2626", GREEN = "#15803d", AMBER = "#b45309";
  const fmt = (digits) => (u, v) => (v == null ? "-" : v.toFixed(digits));

  async function refresh(el) {
    if (el.arxBusy) { el.arxAgain = true; return; }
    el.arxBusy = true;
    try {
      const r = await fetch(el.dataset.refresh, { headers: { accept: "text/html" }, cache: "no-store" });
      if (r.ok) {
        const open = [...el.querySelectorAll("details")].map((d) => d.open); // keep what the reader opened or closed
        el.innerHTML = await r.text();
        el.querySelectorAll("details").forEach((d, i) => { if (i < open.length) d.open = open[i]; });
      }
    } catch (e) { /* the server went away; the stream reconnects and we refresh then */ }
    el.arxBusy = false;
    if (el.arxAgain) { el.arxAgain = false; refresh(el); }
  }

  async function loadChart(el) {
    if (el.arxBusy) { el.arxAgain = true; return; }
    el.arxBusy = true;
    try {
      const r = await fetch(el.dataset.src, { cache: "no-store" });
      if (r.ok) draw(el, await r.json());
    } catch (e) { /* as above */ }
    el.arxBusy = false;
    if (el.arxAgain) { el.arxAgain = false; loadChart(el); }
  }

  function size(el) {
    return { width: Math.max(300, el.clientWidth), height: el.classList.contains("short") ? 200 : 320 };
  }

  function note(el, text) {
    if (charts[el.dataset.chart]) { charts[el.dataset.chart].destroy(); delete charts[el.dataset.chart]; }
    const p = document.createElement("p");
    p.className = "muted";
    p.textContent = text;
    el.replaceChildren(p);
  }

  function draw(el, d) {
    const build = BUILDERS[el.dataset.chart];
    const made = build(d, el);
    if (!made) return;
    const [opts, data] = made;
    const old = charts[el.dataset.chart];
    if (old && old.series.length === opts.series.length) {
      old.arxMeta = made[2]; // before setData: the y scale's range function reads the new range from it
      old.setData(data);
      return;
    }
    if (old) old.destroy();
    el.replaceChildren();
    const u = new uPlot({ ...size(el), ...opts }, data, el);
    u.arxMeta = made[2];
    charts[el.dataset.chart] = u;
  }

  function quantile(sorted, q) {
    return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
  }

  const points = (size, fill, stroke) => ({ show: true, size, fill, stroke: stroke || fill, width: 1 });
  const noLine = () => null;
  const STEPS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000];
  const xAxis = (label) => ({ label, incrs: STEPS, grid: { stroke: "#f0f1f3" }, values: (u, vs) => vs.map((v) => v.toLocaleString()) });

  const BUILDERS = {
    progress(d, el) {
      const info = document.getElementById("progress-info");
      if (!d.seq.length) { note(el, "no runs yet"); return null; }
      // The y range is worked out again at every draw, from the data of that draw (u.arxMeta.range is read by the
      // scale's range function): a page opened before the first score fills in, and one left open overnight
      // draws new bests below its first floor.
      const measured = [...d.kept, ...d.discarded, ...d.champion, ...d.candidate, ...d.set_aside, ...d.test];
      const scored = measured.filter((v) => v != null).sort((a, b) => a - b);
      const levels = d.best.filter((v) => v != null);
      const lo = Math.min(...(scored.length ? [scored[0]] : []), ...levels);
      // a diverged run (val_bpb far above the rest) would flatten the chart: cap the view at a high quantile
      const hi = Math.max(...(scored.length ? [quantile(scored, 0.97)] : []), ...levels);
      const known = Number.isFinite(lo) && Number.isFinite(hi);
      const pad = known ? (hi - lo) * 0.06 || 0.01 : 0.01;
      const floor = known ? lo - 2 * pad : 0;
      const range = known ? [floor - pad, hi + pad] : [-1, 1];
      const above = scored.filter((v) => v > hi + pad).length;
      const onFloor = (v) => (v == null ? null : floor);
      const upper = d.best.map((b, i) => (b == null || d.band[i] == null ? null : b + d.band[i]));
      const lower = d.best.map((b, i) => (b == null || d.band[i] == null ? null : b - d.band[i]));
      const band = d.band.some((b) => b != null);
      const data = [d.seq, upper, lower, d.best, d.discarded, d.kept, d.test, d.champion, d.candidate, d.set_aside,
                    d.failed.map(onFloor), d.unscored.map(onFloor)];
      const k = d.seq.length > 2000 ? 0.5 : 1; // smaller marks when thousands of runs share the width
      const opts = {
        scales: { x: { time: false }, y: { range: (u) => (u.arxMeta ? u.arxMeta.range : range) } },
        axes: [xAxis("run"), { label: "val_bpb", size: 64, grid: { stroke: "#f0f1f3" }, values: (u, vs) => vs.map((v) => v.toFixed(3)) }],
        series: [
          { label: "run", value: (u, v) => (v == null ? "-" : "#" + v) },
          { label: "best + band", stroke: "rgba(37,99,235,0.25)", width: 1, dash: [4, 4], paths: uPlot.paths.stepped({ align: 1 }), points: { show: false }, value: fmt(4) },
          { label: "best − band", stroke: "rgba(37,99,235,0.25)", width: 1, dash: [4, 4], paths: uPlot.paths.stepped({ align: 1 }), points: { show: false }, value: fmt(4) },
          { label: "running best (steps at keeps)", stroke: BLUE, width: 1.5, paths: uPlot.paths.stepped({ align: 1 }), points: { show: false }, value: fmt(4) },
          { label: "discarded", stroke: GREY, paths: noLine, points: points(5 * k, "#d5d9df", GREY), value: fmt(4) },
          { label: "kept", stroke: BLUE, paths: noLine, points: points(8 * k, BLUE), value: fmt(4) },
          { label: "test_bpb (kept)", stroke: ORANGE, paths: noLine, points: points(6 * k, ORANGE), value: fmt(4) },
          { label: "champion measured", stroke: BLUE, paths: noLine, points: points(6 * k, "#fff", BLUE), value: fmt(4) },
          { label: "re-run / waiting", stroke: GREY, paths: noLine, points: points(4 * k, "#fff", GREY), value: fmt(4) },
          { label: "set aside", stroke: AMBER, paths: noLine, points: points(5 * k, "#fff", AMBER), value: fmt(4) },
          { label: "crash / timeout / invalid", stroke: RED, paths: noLine, points: points(6 * k, RED), value: (u, v) => (v == null ? "" : "✕") },
          { label: "rejected / interrupted / running", stroke: GREY, paths: noLine, points: points(5 * k, "#fff", GREY), value: (u, v) => (v == null ? "" : "○") },
        ],
        bands: band ? [{ series: [1, 2], fill: "rgba(37,99,235,0.07)" }] : [],
        cursor: { points: { size: 9 } },
        hooks: {
          setCursor: [(u) => {
            const i = u.cursor.idx, m = u.arxMeta;
            if (!info) return;
            if (i == null) { info.textContent = m.above ? m.above + " run(s) above the chart's top" : ""; return; }
            const v = m.val[i];
            info.textContent = "#" + u.data[0][i] + "  " + m.status[i] + " (" + m.kind[i] + (m.aside[i] ? ", set aside" : "") + ")" + (v != null ? "  val_bpb " + v.toFixed(4) : "") + "  —  " + m.description[i];
          }],
          ready: [(u) => u.over.addEventListener("click", () => {
            const i = u.cursor.idx;
            if (i != null) window.location.href = "/run/" + u.arxMeta.id[i];
          })],
        },
      };
      const val = d.seq.map((s, i) => [d.kept, d.discarded, d.champion, d.candidate, d.set_aside].map((c) => c[i]).find((v) => v != null));
      if (info) info.textContent = above ? above + " run(s) above the chart's top" : "";
      return [opts, data, { id: d.id, status: d.status, kind: d.kind, aside: d.aside, description: d.description, val, range, above }];
    },

    cost(d, el) {
      if (!d.t.length) { note(el, "no LLM calls in this campaign (the offline agent calls none)"); return null; }
      const opts = {
        scales: { x: { time: true }, usd: {}, tok: {} },
        axes: [{ grid: { stroke: "#f0f1f3" } }, { scale: "usd", size: 72, values: (u, vs) => vs.map((v) => "$" + v.toFixed(2)), grid: { stroke: "#f0f1f3" } },
               { scale: "tok", side: 1, size: 60, grid: { show: false }, values: (u, vs) => vs.map((v) => (v >= 1e6 ? (v / 1e6).toFixed(1) + "M" : (v / 1e3).toFixed(0) + "k")) }],
        series: [{}, { label: "dollars", scale: "usd", stroke: GREEN, width: 1.5, paths: uPlot.paths.stepped({ align: 1 }), value: (u, v) => (v == null ? "-" : "$" + v.toFixed(4)) },
                 { label: "tokens", scale: "tok", stroke: GREY, width: 1, paths: uPlot.paths.stepped({ align: 1 }), value: (u, v) => (v == null ? "-" : v.toLocaleString()) }],
      };
      return [opts, [d.t, d.cost, d.tokens], {}];
    },

    loss(d, el) {
      if (!d.step.length) { note(el, "no training steps logged for this run"); return null; }
      const opts = {
        scales: { x: { time: false }, loss: {}, tok: {} },
        axes: [xAxis("step"), { scale: "loss", label: "loss", size: 56, grid: { stroke: "#f0f1f3" } },
               { scale: "tok", side: 1, size: 60, grid: { show: false }, values: (u, vs) => vs.map((v) => v.toLocaleString()) }],
        series: [{ label: "step" }, { label: "loss", scale: "loss", stroke: BLUE, width: 1.5, value: fmt(3) },
                 { label: "tok/s", scale: "tok", stroke: "#cbd0d8", width: 1, value: (u, v) => (v == null ? "-" : Math.round(v).toLocaleString()) }],
      };
      return [opts, [d.step, d.loss, d.tok_per_sec], {}];
    },
  };

  function changed(...kinds) {
    document.querySelectorAll("[data-on]").forEach((el) => {
      if (!el.dataset.on.split(" ").some((k) => kinds.includes(k))) return;
      if (el.dataset.refresh) refresh(el);
      else if (el.dataset.chart) loadChart(el);
    });
  }

  let source = null;
  function listen() {
    source = new EventSource("/events");
    // `hello` comes once the server watches: whatever changed since the page was rendered is fetched now
    source.addEventListener("hello", () => { document.body.dataset.live = "on"; drawn = true; changed("ledger", "progress"); });
    source.addEventListener("ledger", () => changed("ledger"));
    source.addEventListener("progress", () => changed("progress"));
    source.onerror = () => { document.body.dataset.live = "off"; drawOnce(); }; // EventSource reconnects by itself
  }

  // Charts are first drawn by the `hello` refresh (one fetch of their data, not two); without a
  // stream (hidden tab, or the stream failed) they are drawn once from here.
  let drawn = false;
  function drawOnce() {
    if (drawn) return;
    drawn = true;
    document.querySelectorAll("[data-chart]").forEach(loadChart);
  }

  let resizing = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizing);
    resizing = setTimeout(() => {
      document.querySelectorAll("[data-chart]").forEach((el) => charts[el.dataset.chart] && charts[el.dataset.chart].setSize(size(el)));
    }, 150);
  });

  // A browser allows about six connections to one server: a hidden tab gives its stream back,
  // and catches up (the `hello` refresh) when shown again.
  document.addEventListener("visibilitychange", () => {
    if (document.hidden && source) { source.close(); source = null; document.body.dataset.live = "off"; }
    else if (!document.hidden && !source) listen();
  });

  if (document.hidden) drawOnce();
  else listen();
})();
