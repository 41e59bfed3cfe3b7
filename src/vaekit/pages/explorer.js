(function () {
  "use strict";
  var root = document.getElementById("vaekit-explorer");
  var spec = JSON.parse(document.getElementById("vaekit-explorer-data").textContent);
  var P = spec.program, L = P.latent;

  function half(h) {
    var s = (h & 0x8000) ? -1 : 1, e = (h >> 10) & 0x1f, f = h & 0x3ff;
    if (e === 0) return s * f * Math.pow(2, -24);
    if (e === 31) return f ? NaN : s * Infinity;
    return s * (1 + f / 1024) * Math.pow(2, e - 15);
  }
  var W = (function () {
    var text = atob(P.weights), bytes = new Uint8Array(text.length), i;
    for (i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
    var view = new DataView(bytes.buffer), out = new Float64Array(P.size);
    for (i = 0; i < P.size; i++) out[i] = P.dtype === "float16" ? half(view.getUint16(2 * i, true))
                                                                : view.getFloat32(4 * i, true);
    return out;
  })();

  function erf(x) {  // |error| < 1e-12: the Taylor series below 3, the asymptotic series of erfc above
    var a = Math.abs(x), s = x < 0 ? -1 : 1, x2 = a * a, sum = 0, t = a, n, k;
    if (a < 3) {
      for (n = 0; n < 80; n++) {
        var add = t / (2 * n + 1);
        sum += add;
        if (Math.abs(add) < 1e-17) break;
        t *= -x2 / (n + 1);
      }
      return s * 2 / Math.sqrt(Math.PI) * sum;
    }
    var term = 1, series = 1;
    for (k = 1; k < 10; k++) { term *= -(2 * k - 1) / (2 * x2); series += term; }
    return s * (1 - Math.exp(-x2) / (a * Math.sqrt(Math.PI)) * series);
  }
  function sigmoid(v) { var e = Math.exp(-Math.abs(v)); return v >= 0 ? 1 / (1 + e) : e / (1 + e); }
  function cbMean(p) {  // the mean of ContinuousBernoulli(p), as torch computes it
    var outside = p <= 0.499 || p > 0.501, c = outside ? p : 0.499, t = p - 0.5;
    return outside ? c / (2 * c - 1) + 1 / (Math.log1p(-c) - Math.log(c)) : 0.5 + (1 / 3 + 16 / 45 * t * t) * t;
  }
  function linear(op, x) {
    var y = new Float64Array(op.out), n = op["in"], o, i, acc, row;
    for (o = 0; o < op.out; o++) {
      acc = W[op.b + o];
      row = op.w + o * n;
      for (i = 0; i < n; i++) acc += W[row + i] * x[i];
      y[o] = acc;
    }
    return y;
  }
  function apply(op, x) {
    var i, v, y;
    if (op.op === "linear") return linear(op, x);
    if (op.op === "gated") {
      y = linear(op.h, x); v = linear(op.g, x);
      for (i = 0; i < y.length; i++) y[i] *= sigmoid(v[i]);
      return y;
    }
    y = new Float64Array(x.length);
    for (i = 0; i < x.length; i++) {
      v = x[i];
      if (op.op === "relu") y[i] = v > 0 ? v : 0;
      else if (op.op === "tanh") y[i] = Math.tanh(v);
      else if (op.op === "elu") y[i] = v > 0 ? v : op.alpha * Math.expm1(v);
      else if (op.op === "gelu") y[i] = op.approximate === "tanh"
        ? 0.5 * v * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (v + 0.044715 * v * v * v)))
        : 0.5 * v * (1 + erf(v / Math.SQRT2));
      else if (op.op === "softplus") {
        y[i] = op.beta * v > op.threshold ? v : Math.log1p(Math.exp(op.beta * v)) / op.beta;
      }
      else throw new Error("unknown operation " + op.op);
    }
    return y;
  }
  function decode(z, label) {  // E[x|z] (C*H*W values in [0, 1]) for a full code z of L numbers
    var x = new Float64Array(P.inputs), i;
    for (i = 0; i < L; i++) x[i] = z[i];
    if (P.condition) x[L + (label || 0)] = 1;
    for (i = 0; i < P.layers.length; i++) x = apply(P.layers[i], x);
    var n = P.mean.count, out = new Float64Array(n), p;
    for (i = 0; i < n; i++) {
      p = sigmoid(x[i]);
      if (P.mean.op === "continuous-bernoulli") p = cbMean(p);
      out[i] = Math.min(1, Math.max(0, p));
    }
    return out;
  }

  // -- the decoded image --
  var C = P.shape[0], H = P.shape[1], WD = P.shape[2], S = spec.scale;
  var native = document.createElement("canvas");
  native.width = WD; native.height = H;
  var nctx = native.getContext("2d"), pixels = nctx.createImageData(WD, H);
  var view = root.querySelector("canvas.image");
  view.width = WD * S; view.height = H * S;
  view.style.width = WD * S + "px"; view.style.height = H * S + "px";
  var vctx = view.getContext("2d");
  function draw(m) {
    var hw = H * WD, p, d = pixels.data;
    for (p = 0; p < hw; p++) {
      d[4 * p] = Math.round(255 * m[p]);
      d[4 * p + 1] = Math.round(255 * m[C === 3 ? hw + p : p]);
      d[4 * p + 2] = Math.round(255 * m[C === 3 ? 2 * hw + p : p]);
      d[4 * p + 3] = 255;
    }
    nctx.putImageData(pixels, 0, 0);
    vctx.imageSmoothingEnabled = false;
    vctx.drawImage(native, 0, 0, WD * S, H * S);
  }

  // -- the plane --
  var plane = root.querySelector("canvas.plane"), CW = 440, CH = 440, M = {l: 50, r: 12, t: 12, b: 42};
  var dpr = window.devicePixelRatio || 1, ex = spec.extent;
  plane.width = Math.round(CW * dpr); plane.height = Math.round(CH * dpr);
  plane.style.width = CW + "px"; plane.style.height = CH + "px";
  var ctx = plane.getContext("2d"), PW = CW - M.l - M.r, PH = CH - M.t - M.b;
  function toPx(a, b) {
    return [M.l + (a - ex[0][0]) / (ex[0][1] - ex[0][0]) * PW, M.t + (ex[1][1] - b) / (ex[1][1] - ex[1][0]) * PH];
  }
  function fromPx(px, py) {
    var u = (px - M.l) / PW, v = (py - M.t) / PH;
    if (!(u >= 0 && u <= 1 && v >= 0 && v <= 1)) return null;
    return [ex[0][0] + u * (ex[0][1] - ex[0][0]), ex[1][1] - v * (ex[1][1] - ex[1][0])];
  }
  function ticks(lo, hi) {
    var raw = (hi - lo) / 5, mag = Math.pow(10, Math.floor(Math.log10(raw))), f = raw / mag;
    var step = (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * mag, out = [], v;
    for (v = Math.ceil(lo / step) * step; v <= hi + 1e-9 * step; v += step) out.push(Math.abs(v) < 1e-9 * step ? 0 : v);
    return {values: out, digits: Math.max(0, -Math.floor(Math.log10(step)))};
  }
  var background = document.createElement("canvas");
  background.width = plane.width; background.height = plane.height;
  (function () {
    var g = background.getContext("2d"), i, t, p;
    g.scale(dpr, dpr);
    g.fillStyle = "#fff"; g.fillRect(0, 0, CW, CH);
    g.font = "11px sans-serif"; g.fillStyle = "#444"; g.strokeStyle = "#eee"; g.lineWidth = 1;
    t = ticks(ex[0][0], ex[0][1]); g.textAlign = "center"; g.textBaseline = "top";
    for (i = 0; i < t.values.length; i++) {
      p = toPx(t.values[i], ex[1][0]);
      g.beginPath(); g.moveTo(p[0], M.t); g.lineTo(p[0], M.t + PH); g.stroke();
      g.fillText(t.values[i].toFixed(t.digits), p[0], M.t + PH + 4);
    }
    t = ticks(ex[1][0], ex[1][1]); g.textAlign = "right"; g.textBaseline = "middle";
    for (i = 0; i < t.values.length; i++) {
      p = toPx(ex[0][0], t.values[i]);
      g.beginPath(); g.moveTo(M.l, p[1]); g.lineTo(M.l + PW, p[1]); g.stroke();
      g.fillText(t.values[i].toFixed(t.digits), M.l - 5, p[1]);
    }
    g.font = "12px sans-serif"; g.fillStyle = "#222"; g.textAlign = "center"; g.textBaseline = "bottom";
    g.fillText(spec.unitNames[0], M.l + PW / 2, CH - 2);
    g.save(); g.translate(12, M.t + PH / 2); g.rotate(-Math.PI / 2); g.textBaseline = "middle";
    g.fillText(spec.unitNames[1], 0, 0); g.restore();
    g.strokeStyle = "#bbb"; g.strokeRect(M.l, M.t, PW, PH);
    var pts = spec.points, lab = pts.label, cols = spec.colours;
    g.globalAlpha = 0.6;
    for (i = 0; i < pts.u.length; i++) {
      p = toPx(pts.u[i], pts.v[i]);
      if (p[0] < M.l || p[0] > M.l + PW || p[1] < M.t || p[1] > M.t + PH) continue;
      g.fillStyle = lab.length ? cols[lab[i] % cols.length] : "#1f77b4";
      g.beginPath(); g.arc(p[0], p[1], 2.2, 0, 2 * Math.PI); g.fill();
    }
    g.globalAlpha = 1;
  })();

  var baseSelect = root.querySelector("select.base"), labelSelect = root.querySelector("select.label");
  var readout = root.querySelector(".vx-readout");
  var api = {state: null, spec: spec};
  var base = spec.bases[0].z, label = 0, baseIndex = 0;
  function render(a, b) {
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.drawImage(background, 0, 0);
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    if (baseIndex > 0 && L > 2) {
      var q = toPx(base[spec.units[0]], base[spec.units[1]]);
      ctx.strokeStyle = "#000"; ctx.lineWidth = 1.5;
      ctx.beginPath(); ctx.arc(q[0], q[1], 6, 0, 2 * Math.PI); ctx.stroke();
    }
    var p = toPx(a, b);
    ctx.strokeStyle = "rgba(0, 0, 0, 0.45)"; ctx.lineWidth = 1;
    ctx.beginPath(); ctx.moveTo(p[0], M.t); ctx.lineTo(p[0], M.t + PH);
    ctx.moveTo(M.l, p[1]); ctx.lineTo(M.l + PW, p[1]); ctx.stroke();
    ctx.fillStyle = "#d00"; ctx.beginPath(); ctx.arc(p[0], p[1], 3.5, 0, 2 * Math.PI); ctx.fill();
  }
  function set(a, b) {
    var z = base.slice(), m;
    z[spec.units[0]] = a; z[spec.units[1]] = b;
    m = decode(z, label);
    draw(m);
    render(a, b);
    readout.textContent = spec.unitNames[0] + " = " + a.toFixed(3) + ", " + spec.unitNames[1] + " = " + b.toFixed(3)
      + (L > 2 ? "; the other " + (L - 2) + " units at " + spec.bases[baseIndex].name : "");
    api.state = {a: a, b: b, z: z, label: label, pixels: Array.prototype.slice.call(m)};
    return api.state;
  }
  function onPointer(ev) {
    var r = plane.getBoundingClientRect(), z = fromPx(ev.clientX - r.left, ev.clientY - r.top);
    if (z) set(z[0], z[1]);
  }
  plane.addEventListener("pointermove", onPointer);
  plane.addEventListener("pointerdown", onPointer);
  plane.addEventListener("keydown", function (ev) {
    var s = api.state, dx = (ex[0][1] - ex[0][0]) / 50, dy = (ex[1][1] - ex[1][0]) / 50;
    var moves = {ArrowLeft: [-dx, 0], ArrowRight: [dx, 0], ArrowUp: [0, dy], ArrowDown: [0, -dy]}, d = moves[ev.key];
    if (!d) return;
    ev.preventDefault();
    set(Math.min(ex[0][1], Math.max(ex[0][0], s.a + d[0])), Math.min(ex[1][1], Math.max(ex[1][0], s.b + d[1])));
  });
  if (baseSelect) baseSelect.addEventListener("change", function () {
    baseIndex = +baseSelect.value; base = spec.bases[baseIndex].z;
    set(base[spec.units[0]], base[spec.units[1]]);
  });
  if (labelSelect) labelSelect.addEventListener("change", function () {
    label = +labelSelect.value; set(api.state.a, api.state.b);
  });
  api.decode = function (z, y) { return Array.prototype.slice.call(decode(z, y === undefined ? label : y)); };
  api.set = set;
  api.toClient = function (a, b) {
    var r = plane.getBoundingClientRect(), p = toPx(a, b);
    return {x: r.left + p[0], y: r.top + p[1]};
  };
  api.imageBytes = function () {  // the drawn canvas, one RGB triple per decoded pixel (the centre of its block)
    var d = vctx.getImageData(0, 0, WD * S, H * S).data, out = [], r, c, k, i;
    for (r = 0; r < H; r++) for (c = 0; c < WD; c++) {
      i = 4 * ((r * S + (S >> 1)) * WD * S + c * S + (S >> 1));
      for (k = 0; k < 3; k++) out.push(d[i + k]);
    }
    return out;
  };
  window.vaekitExplorer = api;
  root.hidden = false;
  set(Math.min(ex[0][1], Math.max(ex[0][0], base[spec.units[0]])),
      Math.min(ex[1][1], Math.max(ex[1][0], base[spec.units[1]])));
})();
