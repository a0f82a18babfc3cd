// amqptrace report page: swimlanes and unacked-vs-prefetch charts on <canvas>.
// Data: the JSON block #amqptrace-data (columnar, see docs/report.md). Marks are
// bucketed per pixel when there are more than fit, so a million events draw in
// milliseconds. Test hook: window.__amqptrace (ready, lanes, charts, markPos, selected).
(function () {
  'use strict';
  var t_start = performance.now();
  var D = JSON.parse(document.getElementById('amqptrace-data').textContent);
  var N = D.ev.t.length;

  // ---- decode the columns -------------------------------------------------
  var T = new Float64Array(N), FRAME = new Float64Array(N);
  var LANE = Uint32Array.from(D.ev.lane), KIND = Uint16Array.from(D.ev.kind);
  var DIR = Uint8Array.from(D.ev.dir), S = Uint32Array.from(D.ev.s), TAG = D.ev.tag;
  var acc = 0, accf = 0, i;
  for (i = 0; i < N; i++) { acc += D.ev.t[i]; T[i] = acc; accf += D.ev.frame[i]; FRAME[i] = accf; }
  var NL = D.lanes.length;
  var laneCount = new Uint32Array(NL);
  for (i = 0; i < N; i++) laneCount[LANE[i]]++;
  var laneIdx = [], laneT = [], fill = new Uint32Array(NL);
  for (var l = 0; l < NL; l++) { laneIdx.push(new Uint32Array(laneCount[l])); laneT.push(new Float64Array(laneCount[l])); }
  for (i = 0; i < N; i++) { var ln = LANE[i], k = fill[ln]++; laneIdx[ln][k] = i; laneT[ln][k] = T[i]; }
  var series = D.consumers.map(function (c) {
    var t = new Float64Array(c.t.length), a = 0;
    for (var j = 0; j < c.t.length; j++) { a += c.t[j]; t[j] = a; }
    return { t: t, v: Uint32Array.from(c.v) };
  });

  // ---- what a method looks like -------------------------------------------
  var CATS = [
    { id: 'deliver', color: '#1e88e5', label: 'deliver / get-ok', prio: 5 },
    { id: 'ack', color: '#43a047', label: 'ack', prio: 4 },
    { id: 'nack', color: '#fb8c00', label: 'nack / reject', prio: 6 },
    { id: 'publish', color: '#8e24aa', label: 'publish', prio: 3 },
    { id: 'consume', color: '#00897b', label: 'consume / consume-ok / cancel / qos', prio: 7 },
    { id: 'flow', color: '#6d4c41', label: 'flow / blocked', prio: 8 },
    { id: 'close', color: '#d32f2f', label: 'close / reset', prio: 9 },
    { id: 'gap', color: '#000000', label: 'gap / error', prio: 10 },
    { id: 'other', color: '#9aa3af', label: 'other (open, declare, heartbeat, tcp)', prio: 1 }
  ];
  function catOf(name) {
    switch (name) {
      case 'basic.deliver': case 'basic.get-ok': return 0;
      case 'basic.ack': return 1;
      case 'basic.nack': case 'basic.reject': return 2;
      case 'basic.publish': case 'basic.return': return 3;
      case 'basic.consume': case 'basic.consume-ok': case 'basic.cancel': case 'basic.cancel-ok':
      case 'basic.qos': case 'basic.qos-ok': return 4;
      case 'channel.flow': case 'channel.flow-ok': case 'connection.blocked': case 'connection.unblocked': return 5;
      case 'connection.close': case 'channel.close': case 'tcp.reset': case 'tcp.close': return 6;
      case 'gap': case 'error': return 7;
      default: return 8;
    }
  }
  var KCAT = Uint8Array.from(D.kinds.map(catOf));

  // ---- layout and view ----------------------------------------------------
  var LABEL_W = 320, LANE_H = 20, AXIS_H = 22, CHART_H = 74;
  var tl = document.getElementById('timeline'), ch = document.getElementById('charts');
  var tip = document.getElementById('tooltip'), selBox = document.getElementById('selected');
  var fConn = document.getElementById('f-conn'), fCons = document.getElementById('f-consumer');
  var span = Math.max(D.end_us, 1);
  var view = { a: -span * 0.01, b: span * 1.01 };
  var rows = [], chartRows = [];
  var hook = window.__amqptrace = { ready: null, lanes: [], charts: [], events: N, selected: null };

  D.conns.forEach(function (c, j) { var o = document.createElement('option'); o.value = String(j); o.textContent = c; fConn.appendChild(o); });
  D.consumers.forEach(function (c, j) {
    var o = document.createElement('option'); o.value = String(j);
    o.textContent = c.consumer_tag + (c.queue ? ' ← ' + c.queue : '') + (c.verdict ? '  [' + c.verdict + ']' : '');
    fCons.appendChild(o);
  });
  var legend = document.getElementById('legend');
  CATS.forEach(function (c) { var s = document.createElement('span'); s.innerHTML = '<i></i>'; s.firstChild.style.background = c.color; s.appendChild(document.createTextNode(c.label)); legend.appendChild(s); });
  var sl = document.createElement('span'); sl.innerHTML = '<i style="background:rgba(198,40,40,.25)"></i>stall (from the verdict\'s "since")'; legend.appendChild(sl);

  function computeRows() {
    var conn = fConn.value === '' ? -1 : +fConn.value, cons = fCons.value === '' ? -1 : +fCons.value;
    var c = cons >= 0 ? D.consumers[cons] : null;
    rows = D.lane_order.filter(function (li) {
      var L = D.lanes[li];
      if (conn >= 0 && L.conn !== conn) return false;
      if (c) {
        if (L.conn !== c.conn) return false;
        if (L.channel === null) return true;
        if (L.channel !== c.channel) return false;
        return L.consumer === null || L.consumer === cons;
      }
      return true;
    });
    chartRows = [];
    D.consumers.forEach(function (cc, j) {
      if (cc.no_ack) return;
      if (conn >= 0 && cc.conn !== conn) return;
      if (cons >= 0 && j !== cons) return;
      chartRows.push(j);
    });
  }

  function sizeCanvas(cv, h) {
    var dpr = window.devicePixelRatio || 1, w = cv.clientWidth;
    cv.style.height = h + 'px';
    if (cv.width !== Math.round(w * dpr) || cv.height !== Math.round(h * dpr)) { cv.width = Math.round(w * dpr); cv.height = Math.round(h * dpr); }
    var g = cv.getContext('2d'); g.setTransform(dpr, 0, 0, dpr, 0, 0); return { g: g, w: w, h: h };
  }
  function plotW(w) { return Math.max(w - LABEL_W - 8, 10); }
  function xOf(t, w) { return LABEL_W + (t - view.a) / (view.b - view.a) * plotW(w); }
  function tOf(x, w) { return view.a + (x - LABEL_W) / plotW(w) * (view.b - view.a); }
  function lower(arr, v) { var lo = 0, hi = arr.length; while (lo < hi) { var m = (lo + hi) >> 1; if (arr[m] < v) lo = m + 1; else hi = m; } return lo; }
  function upper(arr, v) { var lo = 0, hi = arr.length; while (lo < hi) { var m = (lo + hi) >> 1; if (arr[m] <= v) lo = m + 1; else hi = m; } return lo; }
  function fmtDur(us) {
    var a = Math.abs(us);
    if (a >= 1e6) return (us / 1e6).toFixed(a >= 1e7 ? 1 : 3) + ' s';
    if (a >= 1e3) return (us / 1e3).toFixed(a >= 1e4 ? 1 : 3) + ' ms';
    return us.toFixed(0) + ' µs';
  }
  function iso(us) {
    var ms = D.t0_ms + us / 1000, d = new Date(Math.floor(ms));
    var micro = Math.round((ms - Math.floor(ms)) * 1000);
    var s = d.toISOString(); // ...ss.mmmZ
    return s.slice(0, 23) + String(micro).padStart(3, '0') + 'Z';
  }
  /** `text` shortened in its middle until it fits `maxW` pixels. */
  function fit(g, text, maxW) {
    if (g.measureText(text).width <= maxW) return text;
    var keep = text.length;
    while (keep > 4) {
      keep--;
      var head = Math.ceil(keep * 0.6), t = text.slice(0, head) + '…' + text.slice(text.length - (keep - head));
      if (g.measureText(t).width <= maxW) return t;
    }
    return text.slice(0, 4) + '…';
  }
  function laneLabel(L) {
    var base = L.label;
    if (L.consumer !== null) {
      var c = D.consumers[L.consumer], tag = c.consumer_tag;
      if (tag.length > 22) tag = tag.slice(0, 12) + '…' + tag.slice(-6);
      base = 'consumer ' + tag + (c.queue ? ' ← ' + c.queue : '');
    }
    // A stalled lane is red with a red band; its verdict is spelled out above and in the chart.
    return (L.verdict ? '⚠ ' : '') + base;
  }
  function niceStep(rangeUs, px) {
    var raw = rangeUs / Math.max(px / 110, 1), p = Math.pow(10, Math.floor(Math.log10(raw)));
    var m = raw / p; return (m < 2 ? 2 : m < 5 ? 5 : 10) * p;
  }
  function axis(g, w, y0, h) {
    var step = niceStep(view.b - view.a, plotW(w));
    g.fillStyle = '#5b6575'; g.font = '11px system-ui, sans-serif'; g.strokeStyle = '#eef0f3'; g.lineWidth = 1;
    for (var t = Math.ceil(view.a / step) * step; t <= view.b; t += step) {
      var x = Math.round(xOf(t, w)) + 0.5;
      g.beginPath(); g.moveTo(x, y0); g.lineTo(x, y0 + h); g.stroke();
      g.fillText('+' + fmtDur(t), x + 2, 14);
    }
  }

  // ---- the swimlanes --------------------------------------------------------
  var bucketPrio = new Int16Array(0), bucketCat = new Uint8Array(0);
  function drawTimeline() {
    var H = AXIS_H + rows.length * LANE_H + 4, c = sizeCanvas(tl, H), g = c.g, w = c.w, pw = plotW(w);
    g.clearRect(0, 0, w, H);
    axis(g, w, AXIS_H, H - AXIS_H);
    if (bucketPrio.length < pw + 2) { bucketPrio = new Int16Array(Math.ceil(pw) + 2); bucketCat = new Uint8Array(Math.ceil(pw) + 2); }
    hook.lanes = [];
    for (var r = 0; r < rows.length; r++) {
      var li = rows[r], L = D.lanes[li], y = AXIS_H + r * LANE_H;
      if (r % 2) { g.fillStyle = '#f6f7f9'; g.fillRect(0, y, w, LANE_H); }
      if (L.verdict && L.since_us !== null) {
        var sx = Math.max(xOf(L.since_us, w), LABEL_W);
        g.fillStyle = 'rgba(198,40,40,0.16)'; g.fillRect(sx, y, LABEL_W + pw - sx, LANE_H);
      }
      g.fillStyle = L.verdict ? '#c62828' : '#1d2430';
      g.font = (L.channel === null ? '600 ' : '') + '12px system-ui, sans-serif';
      var indent = L.channel === null ? 4 : L.consumer === null ? 16 : 28;
      g.save(); g.beginPath(); g.rect(0, y, LABEL_W - 6, LANE_H); g.clip();
      g.fillText(fit(g, laneLabel(L), LABEL_W - 8 - indent), indent, y + 14); g.restore();
      var idx = laneIdx[li], lt = laneT[li], i0 = lower(lt, view.a), i1 = upper(lt, view.b), n = i1 - i0, drawn = 0;
      g.save(); g.beginPath(); g.rect(LABEL_W, y, pw, LANE_H); g.clip();
      if (n > pw * 1.5) {
        // Zoomed out: one bar per pixel column, in the colour of its most telling mark.
        bucketPrio.fill(-1);
        for (var j = i0; j < i1; j++) {
          var e = idx[j], px = Math.floor((lt[j] - view.a) / (view.b - view.a) * pw), cat = KCAT[KIND[e]], pr = CATS[cat].prio;
          if (px >= 0 && px < bucketPrio.length && pr > bucketPrio[px]) { bucketPrio[px] = pr; bucketCat[px] = cat; }
        }
        for (var p = 0; p < pw; p++) if (bucketPrio[p] >= 0) { g.fillStyle = CATS[bucketCat[p]].color; g.fillRect(LABEL_W + p, y + 3, 1, LANE_H - 6); drawn++; }
      } else {
        for (var q = i0; q < i1; q++) {
          var ev = idx[q], x = xOf(lt[q], w), ct = KCAT[KIND[ev]];
          g.fillStyle = CATS[ct].color;
          // Broker → client marks in the upper half, client → broker in the lower half.
          if (ct >= 4 && ct <= 7) g.fillRect(x - 1.5, y + 2, 3, LANE_H - 4);
          else g.fillRect(x - 1.5, DIR[ev] ? y + 2 : y + LANE_H / 2, 3, LANE_H / 2 - 2);
          drawn++;
        }
      }
      g.restore();
      hook.lanes.push({ lane: li, label: L.label, verdict: L.verdict, marks: n, drawn: drawn });
    }
    g.strokeStyle = '#dde1e7'; g.beginPath(); g.moveTo(LABEL_W - 0.5, 0); g.lineTo(LABEL_W - 0.5, H); g.stroke();
    document.getElementById('range').textContent = 'showing ' + fmtDur(view.b - view.a) + ' from +' + fmtDur(Math.max(view.a, 0));
  }

  // ---- unacked against prefetch, per consumer -------------------------------
  function valueAt(s, t) { var j = upper(s.t, t) - 1; return j >= 0 ? s.v[j] : 0; }
  function drawCharts() {
    var H = Math.max(chartRows.length * CHART_H, 30) + 4, c = sizeCanvas(ch, H), g = c.g, w = c.w, pw = plotW(w);
    g.clearRect(0, 0, w, H);
    hook.charts = [];
    if (!chartRows.length) { g.fillStyle = '#5b6575'; g.font = '12px system-ui'; g.fillText('No acknowledging consumer in view.', 8, 20); return; }
    for (var r = 0; r < chartRows.length; r++) {
      var ci = chartRows[r], C = D.consumers[ci], s = series[ci], y0 = r * CHART_H, top = y0 + 16, bot = y0 + CHART_H - 6;
      var limit = C.prefetch_count || C.channel_prefetch_count || 0;
      var ymax = Math.max(limit, C.max_unacked, 1) * 1.1;
      var yOf = function (v) { return bot - v / ymax * (bot - top); };
      g.strokeStyle = '#dde1e7'; g.beginPath(); g.moveTo(0, y0 + 0.5); g.lineTo(w, y0 + 0.5); g.stroke();
      if (C.verdict && C.since_us !== null) {
        var sx = Math.max(xOf(C.since_us, w), LABEL_W);
        g.fillStyle = 'rgba(198,40,40,0.18)'; g.fillRect(sx, top, LABEL_W + pw - sx, bot - top);
      }
      g.fillStyle = C.verdict ? '#c62828' : '#1d2430'; g.font = '600 12px system-ui, sans-serif';
      g.save(); g.beginPath(); g.rect(0, y0, LABEL_W - 6, CHART_H); g.clip();
      g.fillText(fit(g, C.consumer_tag, LABEL_W - 12), 4, y0 + 15);
      g.font = '11px system-ui, sans-serif'; g.fillStyle = '#5b6575';
      g.fillText(fit(g, C.queue ? 'queue ' + C.queue : 'queue unknown', LABEL_W - 12), 4, y0 + 29);
      g.fillText('max unacked ' + C.max_unacked + (limit ? ' / prefetch ' + limit : ' (no prefetch limit)'), 4, y0 + 43);
      if (C.verdict) { g.fillStyle = '#c62828'; g.fillText('⚠ ' + C.verdict + (C.since_us !== null ? ' since +' + fmtDur(C.since_us) : ''), 4, y0 + 57); }
      g.restore();
      g.save(); g.beginPath(); g.rect(LABEL_W, y0, pw, CHART_H); g.clip();
      if (limit) {
        g.strokeStyle = '#c62828'; g.setLineDash([5, 4]); g.beginPath(); g.moveTo(LABEL_W, yOf(limit)); g.lineTo(LABEL_W + pw, yOf(limit)); g.stroke(); g.setLineDash([]);
        g.fillStyle = '#c62828'; g.font = '10px system-ui'; g.fillText('prefetch ' + limit, LABEL_W + pw - 70, yOf(limit) - 3);
      }
      var j0 = lower(s.t, view.a), j1 = upper(s.t, view.b), n = j1 - j0, v = valueAt(s, view.a);
      g.strokeStyle = '#1e88e5'; g.fillStyle = 'rgba(30,136,229,0.15)'; g.lineWidth = 1.5;
      if (n > pw * 2) {
        // Zoomed out: the range of values per pixel column.
        var lo = new Float64Array(Math.ceil(pw) + 1).fill(Infinity), hi = new Float64Array(Math.ceil(pw) + 1).fill(-Infinity);
        for (var j = j0; j < j1; j++) { var px = Math.floor((s.t[j] - view.a) / (view.b - view.a) * pw); if (s.v[j] < lo[px]) lo[px] = s.v[j]; if (s.v[j] > hi[px]) hi[px] = s.v[j]; }
        g.beginPath();
        for (var p = 0; p < lo.length; p++) {
          if (hi[p] < 0) { lo[p] = hi[p] = v; } else { if (v < lo[p]) lo[p] = v; if (v > hi[p]) hi[p] = v; }
          g.moveTo(LABEL_W + p + 0.5, yOf(lo[p])); g.lineTo(LABEL_W + p + 0.5, yOf(hi[p]) - 0.5);
          v = valueAt(s, tOf(LABEL_W + p + 1, w));
        }
        g.stroke();
      } else {
        g.beginPath(); g.moveTo(LABEL_W, yOf(v));
        for (var q = j0; q < j1; q++) { var x = xOf(s.t[q], w); g.lineTo(x, yOf(v)); v = s.v[q]; g.lineTo(x, yOf(v)); }
        g.lineTo(LABEL_W + pw, yOf(v)); g.stroke();
        g.lineTo(LABEL_W + pw, bot); g.lineTo(LABEL_W, bot); g.closePath(); g.fill();
      }
      g.lineWidth = 1; g.restore();
      hook.charts.push({ consumer: ci, consumer_tag: C.consumer_tag, points: s.t.length, limit: limit, max_unacked: C.max_unacked, verdict: C.verdict });
    }
  }

  function draw() { drawTimeline(); drawCharts(); }

  // ---- fields of one event ----------------------------------------------------
  function fields(e) {
    var L = D.lanes[LANE[e]], name = D.kinds[KIND[e]];
    var f = { frame: FRAME[e], ts: iso(T[e]), conn: D.conns[L.conn], dir: DIR[e] ? 's2c' : 'c2s' };
    if (L.channel !== null) f.channel = L.channel;
    f.method = name;
    if (TAG[e] || /deliver|ack|reject|get-ok/.test(name)) f.delivery_tag = TAG[e];
    var extra = D.strings[S[e]];
    if (extra) { var o = JSON.parse(extra); for (var k in o) f[k] = o[k]; }
    f['+t'] = fmtDur(T[e]);
    return f;
  }
  function show(f) { return Object.keys(f).map(function (k) { return k + ': ' + (typeof f[k] === 'string' ? f[k] : JSON.stringify(f[k])); }).join('\n'); }
  function hit(ev) {
    var rect = tl.getBoundingClientRect(), x = ev.clientX - rect.left, y = ev.clientY - rect.top, w = rect.width;
    var r = Math.floor((y - AXIS_H) / LANE_H);
    if (r < 0 || r >= rows.length || x < LABEL_W) return -1;
    var li = rows[r], lt = laneT[li], t = tOf(x, w), tol = 4 / plotW(w) * (view.b - view.a);
    var j = lower(lt, t), best = -1, bd = Infinity;
    for (var c = j - 1; c <= j; c++) if (c >= 0 && c < lt.length) { var d = Math.abs(lt[c] - t); if (d < bd) { bd = d; best = c; } }
    return best >= 0 && bd <= tol ? laneIdx[li][best] : -1;
  }

  // ---- zoom, pan, hover, click ----------------------------------------------------
  var drag = null, raf = 0;
  function redraw() { if (!raf) raf = requestAnimationFrame(function () { raf = 0; draw(); }); }
  function onWheel(ev) {
    ev.preventDefault();
    var rect = ev.currentTarget.getBoundingClientRect(), x = ev.clientX - rect.left;
    if (x < LABEL_W) return;
    var t = tOf(x, rect.width), f = Math.pow(1.0015, ev.deltaY), minSpan = 1;
    var a = t - (t - view.a) * f, b = t + (view.b - t) * f;
    if (b - a < minSpan) return;
    view.a = a; view.b = b; redraw();
  }
  function onDown(ev) { drag = { x: ev.clientX, a: view.a, b: view.b, moved: false, cv: ev.currentTarget }; ev.currentTarget.classList.add('dragging'); }
  function onMove(ev) {
    if (drag) {
      var dx = ev.clientX - drag.x; if (Math.abs(dx) > 2) drag.moved = true;
      var dt = dx / plotW(drag.cv.getBoundingClientRect().width) * (drag.b - drag.a);
      view.a = drag.a - dt; view.b = drag.b - dt; redraw(); return;
    }
    if (ev.currentTarget !== tl) return;
    var e = hit(ev);
    if (e < 0) { tip.hidden = true; return; }
    tip.textContent = show(fields(e)); tip.hidden = false;
    tip.style.left = Math.min(ev.clientX + 14, window.innerWidth - 420) + 'px'; tip.style.top = (ev.clientY + 14) + 'px';
  }
  function onUp(ev) {
    var d = drag; drag = null; if (d) d.cv.classList.remove('dragging');
    if (d && !d.moved && d.cv === tl) {
      var e = hit(ev);
      if (e >= 0) { var f = fields(e); hook.selected = f; selBox.textContent = show(f); }
    }
  }
  [tl, ch].forEach(function (cv) {
    cv.addEventListener('wheel', onWheel, { passive: false });
    cv.addEventListener('mousedown', onDown);
    cv.addEventListener('mousemove', onMove);
    cv.addEventListener('mouseleave', function () { tip.hidden = true; });
  });
  window.addEventListener('mousemove', function (ev) { if (drag) onMove(ev); });
  window.addEventListener('mouseup', onUp);
  window.addEventListener('resize', redraw);
  document.getElementById('reset').addEventListener('click', function () { view.a = -span * 0.01; view.b = span * 1.01; redraw(); });
  fConn.addEventListener('change', function () { computeRows(); draw(); });
  fCons.addEventListener('change', function () { computeRows(); draw(); });

  /** Client coordinates of the first drawn mark of `method` (in a lane whose label contains `laneText`). */
  hook.markPos = function (method, laneText) {
    var rect = tl.getBoundingClientRect();
    for (var r = 0; r < rows.length; r++) {
      var li = rows[r];
      if (laneText && D.lanes[li].label.indexOf(laneText) < 0) continue;
      var idx = laneIdx[li];
      for (var j = 0; j < idx.length; j++) {
        var e = idx[j];
        if (D.kinds[KIND[e]] !== method || T[e] < view.a || T[e] > view.b) continue;
        var y = AXIS_H + r * LANE_H + (DIR[e] ? 6 : LANE_H - 6);
        return { x: rect.left + xOf(T[e], rect.width), y: rect.top + y, delivery_tag: TAG[e], frame: FRAME[e] };
      }
    }
    return null;
  };

  computeRows();
  draw();
  hook.ready = performance.now();
  hook.build_ms = hook.ready - t_start;
  document.body.setAttribute('data-ready-ms', hook.ready.toFixed(1));
})();
