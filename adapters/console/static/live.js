// The console's live page: follows /live/events (server-sent events) and keeps one row per
// reply, its text growing as it streams. Text is only ever set as text (textContent), never
// parsed as markup: a reply may contain anything.
"use strict";

(() => {
  const list = document.getElementById("live-replies");
  const rowTemplate = document.getElementById("live-row");
  const state = document.getElementById("live-state");
  const counts = document.getElementById("live-counts");
  const empty = document.getElementById("live-empty");
  if (!list || !rowTemplate || !state || !counts || !empty) {
    return;
  }
  const url = list.dataset.events || "/live/events";
  // id -> {row, elapsed (seconds when last told), at (performance.now() then), ended, cut (the
  // characters before the text shown)}
  const rows = new Map();

  function duration(seconds) {
    const whole = Math.max(Math.floor(seconds), 0);
    if (whole < 60) {
      return `${whole} s`;
    }
    const rest = String(whole % 60).padStart(2, "0");
    return `${Math.floor(whole / 60)} min ${rest} s`;
  }

  function part(row, selector) {
    return row.querySelector(selector);
  }

  function tick() {
    const now = performance.now();
    for (const kept of rows.values()) {
      const seconds = kept.ended ? kept.elapsed : kept.elapsed + (now - kept.at) / 1000;
      part(kept.row, ".elapsed").textContent = duration(seconds);
    }
  }

  function recount() {
    let streaming = 0;
    for (const kept of rows.values()) {
      if (!kept.ended) {
        streaming += 1;
      }
    }
    counts.textContent = `${streaming} streaming now · ${rows.size - streaming} ended recently`;
    empty.hidden = rows.size > 0;
  }

  function fill(row, reply, now) {
    const ended = reply.ended_at !== null;
    row.id = `reply-${reply.id}`;
    row.dataset.id = String(reply.id);
    row.className = `live-reply status-${reply.status}${ended ? " ended" : ""}`;
    const status = part(row, ".status");
    status.className = `status status-${reply.status}`;
    status.textContent = reply.label;
    part(row, ".platform").textContent = reply.platform;
    const place = part(row, ".place");
    place.textContent = reply.place;
    place.href = `/conversations/${Number(reply.chat_id)}`;
    part(row, ".user").textContent = reply.user;
    part(row, ".model").textContent = reply.model;
    part(row, ".updates").textContent = String(reply.updates);
    part(row, ".limited-count").textContent = String(reply.rate_limited);
    part(row, ".limited").classList.toggle("hot", reply.rate_limited > 0);
    const error = part(row, ".error");
    error.textContent = reply.error || "";
    error.hidden = !reply.error;
    part(row, ".cut").hidden = !reply.cut;
    part(row, ".cut-chars").textContent = String(reply.cut);
    const text = part(row, ".text");
    let shown = reply.text;
    if (reply.append !== undefined) {
      // Only what was appended since the version this page holds, from the text's absolute
      // position `at`; the page keeps the end the server keeps (from `cut` on).
      // Positions count characters (code points), as the server does: an emoji is one, not
      // the two UTF-16 units of a JavaScript string's length.
      const kept = rows.get(reply.id);
      const held = Array.from(text.textContent);
      if (!kept || kept.cut + held.length !== reply.at) {
        return false; // this page missed a version: only a fresh start can mend it
      }
      shown = held
        .concat(Array.from(reply.append))
        .slice(reply.cut - kept.cut)
        .join("");
    }
    if (text.textContent !== shown) {
      // Follow the end of a growing text, unless the reader scrolled up in it.
      const atEnd = text.scrollHeight - text.scrollTop - text.clientHeight < 24;
      text.textContent = shown;
      if (atEnd) {
        text.scrollTop = text.scrollHeight;
      }
    }
    const elapsed = (ended ? reply.ended_at : now) - reply.started_at;
    rows.set(reply.id, { row, elapsed, at: performance.now(), ended, cut: reply.cut });
    part(row, ".elapsed").textContent = duration(elapsed);
    return true;
  }

  // False when the reply came as an append this page cannot place (it must start afresh).
  function upsert(reply, now) {
    const kept = rows.get(reply.id);
    if (kept) {
      return fill(kept.row, reply, now);
    }
    if (reply.append !== undefined) {
      return false;
    }
    const row = rowTemplate.content.firstElementChild.cloneNode(true);
    fill(row, reply, now);
    // Newest first: a reply that begins goes on top.
    list.prepend(row);
    return true;
  }

  function remove(id) {
    const kept = rows.get(id);
    if (kept) {
      kept.row.remove();
      rows.delete(id);
    }
  }

  function reset(message) {
    const seen = new Set();
    // The server lists them newest first: added in reverse, each new one goes on top.
    for (const reply of [...message.replies].reverse()) {
      seen.add(reply.id);
      upsert(reply, message.now);
    }
    for (const id of [...rows.keys()]) {
      if (!seen.has(id)) {
        remove(id);
      }
    }
  }

  function show(name, text) {
    state.dataset.state = name;
    state.textContent = text;
  }

  // The rows the server rendered: their elapsed time ticks from now on.
  for (const row of list.querySelectorAll(".live-reply")) {
    const id = Number(row.dataset.id);
    rows.set(id, {
      row,
      elapsed: Number.parseFloat(row.dataset.elapsed) || 0,
      at: performance.now(),
      ended: row.dataset.ended === "true",
    });
  }

  let source = null;
  let retry = 2000;

  function connect() {
    show("connecting", "connecting…");
    source = new EventSource(url);
    source.addEventListener("open", () => {
      retry = 2000;
      show("live", "live");
    });
    source.addEventListener("reset", (event) => {
      reset(JSON.parse(event.data));
      recount();
    });
    source.addEventListener("reply", (event) => {
      const message = JSON.parse(event.data);
      if (!upsert(message.reply, message.now)) {
        // A new stream starts with everything (its first event resets the page).
        source.close();
        connect();
        return;
      }
      recount();
    });
    source.addEventListener("gone", (event) => {
      remove(JSON.parse(event.data).id);
      recount();
    });
    source.addEventListener("error", () => {
      if (source.readyState === EventSource.CLOSED) {
        // Refused (too many pages open, the console stopping, a session that ended): the
        // browser gives up on its own, so try again later, less and less often.
        source.close();
        show("down", `not live: reconnecting in ${Math.round(retry / 1000)} s (or reload the page)`);
        setTimeout(connect, retry);
        retry = Math.min(retry * 2, 60000);
      } else {
        show("connecting", "reconnecting…");
      }
    });
  }

  connect();
  setInterval(tick, 1000);
})();
