// usnav web page: draws the pictures the bridge sends. It derives no state of its own: the
// state word and its reason come with each picture; the only local rule is the bridge's own
// "valid_for_ms": a picture not followed by another in time is covered by the bridge's
// "expired" words (the link to usnav web is gone, so nothing on screen is current). That time
// counts from when the picture was rendered: the bridge sends its age ("age_ms", by the
// bridge's clock alone; the page's clock may differ), and one already too old is never shown
// as current, not even for a moment.
"use strict";
(function () {
  const canvas = document.getElementById("view");
  const ctx = canvas.getContext("2d");
  const label = document.getElementById("state");
  const token = new URLSearchParams(location.search).get("token") || "";
  const stats = { drawn: 0, seq: 0, state: "WAITING", reason: "", ages_ms: [],
                  bridge_ms: [], draw_times: [], closed: 0, expired: 0 };
  window.usnavStats = stats;
  let expiry = null;
  let expiredWords = { state: "STALE", reason: "no picture from usnav web" };
  let busy = false;
  let pending = null;
  // each WebSocket connection is a stream of its own: a restarted usnav web numbers its
  // pictures from 1 again, so the order is checked within a connection only
  let connection = 0;
  let lastSeq = 0;

  function now_s() { return (performance.timeOrigin + performance.now()) / 1000; }

  function showState(state, reason) {
    stats.state = state;
    stats.reason = reason;
    label.dataset.state = state;
    label.textContent = reason ? state + ": " + reason : state;
  }

  function expire() {
    // cover the last picture: it no longer shows the present
    stats.expired += 1;
    const band = Math.max(46, Math.round(canvas.height * 0.064));
    ctx.fillStyle = "rgba(210, 30, 30, 0.92)";
    ctx.fillRect(0, 0, canvas.width, band);
    ctx.fillStyle = "#fff";
    ctx.font = "bold " + Math.round(band * 0.55) + "px sans-serif";
    ctx.textBaseline = "middle";
    ctx.fillText(expiredWords.state + ": " + expiredWords.reason, 12, band / 2);
    showState(expiredWords.state, expiredWords.reason);
  }

  function arm(ms) {
    if (expiry !== null) clearTimeout(expiry);
    expiry = setTimeout(expire, ms);
  }

  async function draw(message) {
    if (message.connection !== connection) return;  // from a connection since closed
    const data = message.data;
    const view = new DataView(data);
    const n = view.getUint32(0, true);
    const meta = JSON.parse(new TextDecoder().decode(new Uint8Array(data, 4, n)));
    if (meta.seq <= lastSeq) return;
    // when its validity ends, on this page's monotonic clock: from its arrival, less the age
    // it already had when the bridge sent it
    const until = message.arrived + meta.valid_for_ms - (meta.age_ms || 0);
    const bitmap = await createImageBitmap(new Blob([new Uint8Array(data, 4 + n)],
                                                    { type: "image/jpeg" }));
    if (canvas.width !== bitmap.width || canvas.height !== bitmap.height) {
      canvas.width = bitmap.width;
      canvas.height = bitmap.height;
    }
    ctx.drawImage(bitmap, 0, 0);
    bitmap.close();
    const t = now_s();
    lastSeq = meta.seq;
    stats.seq = meta.seq;
    stats.valid_for_ms = meta.valid_for_ms;
    stats.drawn += 1;
    stats.draw_times.push(t);
    if (meta.t_received !== null) {
      stats.ages_ms.push(1000 * (t - meta.t_received));
      stats.bridge_ms.push(1000 * (meta.t_rendered - meta.t_received));
    }
    if (stats.draw_times.length > 2000) stats.draw_times.splice(0, 1000);
    if (stats.ages_ms.length > 2000) stats.ages_ms.splice(0, 1000);
    if (stats.bridge_ms.length > 2000) stats.bridge_ms.splice(0, 1000);
    expiredWords = meta.expired;
    const left = until - performance.now();
    if (left > 0) {
      showState(meta.state, meta.reason);
      arm(left);
    } else {
      // already too old: drawn, and covered in the same task (no frame shows it uncovered)
      if (expiry !== null) clearTimeout(expiry);
      expiry = null;
      expire();
    }
  }

  // draw the newest message only: while one is being decoded, newer ones replace the pending
  async function pump() {
    if (busy) return;
    busy = true;
    while (pending !== null) {
      const data = pending;
      pending = null;
      try { await draw(data); } catch (e) { console.error(e); }
    }
    busy = false;
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    const query = token ? "?token=" + encodeURIComponent(token) : "";
    const ws = new WebSocket(scheme + location.host + "/ws" + query);
    connection += 1;
    lastSeq = 0;
    const mine = connection;
    ws.binaryType = "arraybuffer";
    ws.onmessage = (event) => {
      pending = { data: event.data, connection: mine, arrived: performance.now() };
      pump();
    };
    ws.onclose = () => {
      stats.closed += 1;
      // a picture of this connection still waiting to be drawn is not drawn: the link is
      // gone, and a display must not turn LIVE again after it went STALE for that
      if (connection === mine) connection += 1;
      if (stats.drawn > 0) expire();
      else showState("WAITING", "cannot reach usnav web (wrong token, or not running)");
      setTimeout(connect, 1000);
    };
  }
  connect();
})();
