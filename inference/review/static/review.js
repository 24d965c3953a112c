// parcelscan review: keyboard-first item view. Plain JavaScript, no build step.
// Items come from the JSON API; the next one is fetched (with its images) while the current one is
// on screen, so a decision shows the next parcel at once. Every decision waits for the server's
// acknowledgement (the database commit) before moving on, and says so in the status bar.
"use strict";

(function () {
  const root = document.getElementById("review");
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const query = root.dataset.query ? "?" + root.dataset.query : "";
  // The decisions, their keys and labels come from the page (rendered from DECISIONS in Python).
  const LABEL = {};
  const KEY_DECISION = {};
  for (const button of document.querySelectorAll("button.decision")) {
    LABEL[button.dataset.decision] = button.dataset.label.toUpperCase();
    KEY_DECISION[button.dataset.key] = button.dataset.decision;
  }
  const VIEWS = ["pseudo", "low", "high", "material"];
  const $ = (id) => document.getElementById(id);

  const state = { item: null, cache: new Map(), heat: true, view: "pseudo", busy: false, mark: null };

  // Click-to-mark: where the inspector saw the concealment, in scan pixels (row, col); sent with the decision.
  // The image is drawn with object-fit: contain, so the scan occupies a centred rectangle of the frame.
  function content() {
    const img = $("img-pseudo");
    const item = state.item;
    const w = img.clientWidth, h = img.clientHeight;
    const scale = Math.min(w / item.scan.cols, h / item.scan.rows);
    return { left: (w - item.scan.cols * scale) / 2, top: (h - item.scan.rows * scale) / 2, scale };
  }
  function place(element, row, col, rows, cols) {
    const c = content();
    element.style.top = (c.top + row * c.scale) + "px"; element.style.left = (c.left + col * c.scale) + "px";
    if (rows != null) { element.style.height = (rows * c.scale) + "px"; element.style.width = (cols * c.scale) + "px"; }
  }
  function showMark() {
    const item = state.item;
    const mark = $("mark");
    mark.hidden = !(item && state.mark && item.scan.rows && item.scan.cols);
    if (!mark.hidden) place(mark, state.mark[0] + 0.5, state.mark[1] + 0.5);
    $("mark-hint").textContent = state.mark ? "Marked at row " + state.mark[0] + ", column " + state.mark[1] +
      " (click again to move it)." : "Click the image where the concealment is: a seizure is marked there.";
  }
  $("frame-pseudo").addEventListener("click", (event) => {
    const item = state.item;
    if (!item || !item.scan.rows || !item.scan.cols) return;
    const box = $("img-pseudo").getBoundingClientRect();
    const c = content();
    const col = Math.floor((event.clientX - box.left - c.left) / c.scale);
    const row = Math.floor((event.clientY - box.top - c.top) / c.scale);
    if (row < 0 || row >= item.scan.rows || col < 0 || col >= item.scan.cols) return;
    state.mark = [row, col];
    showMark();
  });
  window.addEventListener("resize", () => { if (state.item) { showMark(); showTip(state.item); } });
  function showTip(item) {
    const reveal = $("tip-reveal");
    const box = $("tip-box");
    reveal.hidden = !item.tip;
    box.hidden = !item.tip;
    reveal.className = "tip-reveal" + (item.tip ? (item.tip.hit ? " hit" : " missed") : "");
    if (!item.tip) return;
    reveal.textContent = item.tip.text + ", here (outlined). " + item.tip.outcome + ".";
    const b = item.tip.box;
    place(box, b[0], b[1], b[2], b[3]);
  }

  function setStatus(text, kind) {
    const el = $("status");
    el.textContent = text;
    el.className = "status " + (kind || "");
  }

  async function api(method, url, body) {
    const options = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
    if (method !== "GET") {
      options.headers["X-CSRF-Token"] = csrf;
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body || {});
    }
    let response;
    try {
      response = await fetch(url, options);
    } catch (error) {
      throw new Error("server unreachable (" + error.message + ")");
    }
    if (response.status === 401) {
      window.location.href = "/login?next=" + encodeURIComponent(location.pathname + location.search);
      throw new Error("logged out");
    }
    let data = null;
    try { data = await response.json(); } catch (error) { data = null; }
    if (!response.ok) {
      const error = new Error((data && data.detail) || "HTTP " + response.status);
      error.status = response.status;
      throw error;
    }
    return data;
  }

  function fetchItem(id, fresh) {
    if (!fresh && state.cache.has(id)) return state.cache.get(id);
    const promise = api("GET", "/api/items/" + id + query);
    state.cache.set(id, promise);
    promise.catch(() => state.cache.delete(id));
    return promise;
  }

  function prefetch(id) {
    if (!id) return;
    fetchItem(id).then((item) => {
      for (const url of Object.values(item.images)) {
        if (url) { const img = new Image(); img.src = url; }
      }
    }).catch(() => {});
  }

  // Scores and thresholds: four decimals (a float32 threshold prints as 0.8891029357910156 otherwise),
  // the same for both so that a score just above its threshold does not read as equal or below it.
  function decimals(value) {
    if (value == null) return null;
    return typeof value === "number" && Number.isFinite(value) ? value.toFixed(4) : String(value);
  }

  function text(id, value) { $(id).textContent = value == null || value === "" ? "—" : String(value); }

  function li(parent, content, className) {
    const el = document.createElement("li");
    el.textContent = content;
    if (className) el.className = className;
    parent.appendChild(el);
    return el;
  }

  function setImage(id, url) {
    const img = $(id);
    if (url) { img.src = url; img.hidden = false; } else { img.removeAttribute("src"); img.hidden = true; }
  }

  // The customs declaration beside the image (inference/review/declaration_view.py); text only, never HTML.
  function renderDeclaration(d) {
    const box = $("declaration");
    if (!box) return;
    box.hidden = !d;
    if (!d) return;
    const badge = $("declaration-status");
    badge.textContent = d.status || "unknown";
    badge.className = "badge declaration-" + (d.status || "unknown");
    // an absent declaration has no head, no lines and (usually) no problems: their empty boxes stay hidden — an
    // empty problems list would otherwise show as a red error bar with nothing in it
    const declared = d.declared || {};
    const head = [declared.item_id, declared.category, declared.origin,
      declared.gross_weight_kg != null ? "gross " + declared.gross_weight_kg + " kg" : null].filter(Boolean).join(" · ");
    text("declaration-head", head);
    $("declaration-head").hidden = !head;
    const items = $("declaration-items");
    items.replaceChildren();
    $("declaration-table").hidden = !(declared.items && declared.items.length);
    for (const it of declared.items || []) {
      const tr = document.createElement("tr");
      for (const v of [it.description, it.hs_code, it.quantity, it.net_weight_kg, it.value]) {
        const td = document.createElement("td");
        td.textContent = v == null ? "—" : String(v);
        tr.appendChild(td);
      }
      items.appendChild(tr);
    }
    const reasons = $("declaration-reasons");
    reasons.replaceChildren();
    for (const r of d.reasons || []) li(reasons, r);
    const bodies = (d.bodies || []).map((b) => {
      // "≥": the beam is stopped over part of the body, its grams are a lower bound (physics.mass)
      const grams = (b.mass_lower_bound ? "≥ " : "≈ ") + (b.mass_g == null ? "?" : Math.round(b.mass_g)) + " g ";
      if (b.could_be && b.could_be.length) {  // what the core and weight allow, each with its own grams
        const masses = b.mass_as_g || {};
        const names = b.could_be.slice(0, 5).map((n) => masses[n] == null ? n : n + " " + Math.round(masses[n]) + " g");
        // the grams assume a material (the best-matching target): say which, and the nearest reading if it differs;
        // a reading d′ ≥ 4.2 from every reference matches none (clutter mixed in, or a material outside the table):
        // "nearest lead" alone would read as "lead"
        const nearest = b.nearest || b.could_be[0];
        const far = typeof b.d_prime === "number" && b.d_prime >= 4.2;
        const read = far ? "matches no listed material (nearest " + nearest + ", d′ " + b.d_prime.toFixed(1) + ")"
          : "nearest " + nearest;
        const label = !b.mass_material ? (far ? read : nearest) :
          (b.mass_material === nearest && !far ? "as " + nearest : "as " + b.mass_material + ", " + read);
        return grams + label + "; could be " + names.join(", ") + (b.could_be.length > 5 ? ", …" : "");
      }
      if (!b.nearest && b.mass_lower_bound) return grams + "no signature (the beam is stopped)";
      return grams + (b.nearest || "?") +
        (b.twins && b.twins.length > 1 ? " (or " + b.twins.slice(1, 4).join(", ") + ")" : "");
    });
    const xray = d.xray_mass_kg == null ? "" :
      "parcel " + (d.xray_mass_lower_bound ? "≥ " : "≈ ") + d.xray_mass_kg + " kg by X-ray";
    // no body: what the model localised none of — or, for a scan never analysed, nothing at all was seen
    const none = d.weighed_note ? "nothing weighed: " + d.weighed_note : "no powder body localised";
    text("declaration-seen", [bodies.join("; ") || none, xray].filter(Boolean).join(" · "));
    const problems = $("declaration-problems");
    problems.replaceChildren();
    for (const p of d.problems || []) li(problems, p);
    problems.hidden = !problems.children.length;
  }

  function render(item) {
    state.item = item;
    $("done").hidden = true;
    root.classList.remove("finished");
    text("scan-id", item.scan_id);
    text("score", item.score == null ? "none" : decimals(item.score));
    text("threshold", decimals(item.threshold));
    const verdict = $("verdict");
    verdict.textContent = item.verdict.replace("_", " ");
    verdict.className = "badge verdict-" + item.verdict;
    const st = $("state");
    st.textContent = item.state.replace("_", " ");
    st.className = "badge state-" + item.state;
    const pos = item.position;
    text("position", pos.index ? pos.index + " / " + pos.total : "not in this queue (" + pos.total + ")");
    const c = item.counts;
    text("counts", c.undecided + " undecided · " + c.conflict + " conflict · " + c.total + " in all");
    text("mine", "you (" + item.user + ") decided " + c.mine + " item(s)");

    const reasons = $("reasons");
    reasons.replaceChildren();
    for (const reason of item.reasons) li(reasons, reason);
    renderDeclaration(item.declaration);

    const errors = [item.verdict_error && "inspect: " + item.verdict_error,
      item.scan_error && "scan: " + item.scan_error, item.heatmap_error && "heatmap: " + item.heatmap_error,
      ...(item.problems || [])].filter(Boolean);
    $("errors").hidden = errors.length === 0;
    $("errors").textContent = errors.join(" · ");

    const meta = $("meta");
    meta.replaceChildren();
    const rows = [
      ["station", item.station], ["scanned", item.scanned_at],
      ["model", [item.model.name, item.model.version].filter(Boolean).join(" ")],
      ["model sha256", item.model.sha256 ? item.model.sha256.slice(0, 16) + "…" : null],
      ["size", item.scan.rows ? item.scan.cols + " × " + item.scan.rows + " px" : null],
      ["profile", item.scan.meta.profile], ["pitch", item.scan.meta.pixel_pitch_mm ? item.scan.meta.pixel_pitch_mm + " mm" : null],
      ["files", item.scan.files.join(", ")], ["ingested", item.ingested_at],
    ];
    for (const [k, v] of rows) {
      const dt = document.createElement("dt"); dt.textContent = k;
      const dd = document.createElement("dd"); dd.textContent = v == null || v === "" ? "—" : String(v);
      meta.append(dt, dd);
    }

    const decisions = $("decisions");
    decisions.replaceChildren();
    if (item.decisions.length === 0) li(decisions, "none yet", "muted");
    for (const d of item.decisions) {
      const extra = [d.material, d.scenario].filter(Boolean).join(", ");
      li(decisions, d.user + ": " + LABEL[d.decision] + (extra ? " (" + extra + ")" : "") +
        (d.notes ? " — " + d.notes : "") + " · " + d.created_at.replace("T", " ").slice(0, 19),
      "decision-" + d.decision);
    }
    const conflict = $("conflict");
    conflict.hidden = !item.conflict;
    conflict.textContent = item.conflict ? "CONFLICT: " + item.decisions.map((d) => d.user + " → " +
      LABEL[d.decision]).join(", ") : "";

    const history = $("history");
    history.replaceChildren();
    for (const h of item.history) {
      let what = h.action;
      if (h.action === "decide") what = "decided " + LABEL[h.decision] + (h.replaced_decision ? " (replacing " + LABEL[h.replaced_decision] + ")" : "");
      if (h.action === "undo") what = "undid " + LABEL[h.replaced_decision] + (h.decision ? " (back to " + LABEL[h.decision] + ")" : "");
      li(history, h.at.replace("T", " ").slice(0, 19) + " " + h.user + " " + what);
    }

    const mine = item.mine;
    $("material").value = mine && mine.material ? mine.material : "";
    $("scenario").value = mine && mine.scenario ? mine.scenario : "";
    $("notes").value = mine && mine.notes ? mine.notes : "";
    for (const button of document.querySelectorAll("button.decision")) {
      button.classList.toggle("chosen", !!mine && mine.decision === button.dataset.decision);
    }

    if (!state.item || state.mark === null || state.markItem !== item.id) state.mark = item.my_mark;
    state.markItem = item.id;
    showMark();
    showTip(item);
    setImage("img-pseudo", item.images.pseudo);
    setImage("img-heatmap", item.images.heatmap);
    setImage("img-low", item.images.low);
    setImage("img-high", item.images.high);
    setImage("img-material", item.images.material);
    setImage("thumb-low", item.images.low);
    setImage("thumb-high", item.images.high);
    setImage("thumb-material", item.images.material);
    const message = $("stage-message");
    message.hidden = !item.scan_error;
    message.textContent = item.scan_error ? "No image: " + item.scan_error : "";
    applyHeat();
    prefetch(pos.next_id);
  }

  function applyHeat() {
    const has = state.item && state.item.images.heatmap;
    $("img-heatmap").hidden = !(state.heat && has);
    $("heat-state").textContent = has ? (state.heat ? "on" : "off") : "none";
    $("heat-toggle").setAttribute("aria-pressed", String(state.heat));
    root.dataset.heatmap = state.heat && has ? "on" : "off";
  }

  function setView(view) {
    state.view = view;
    for (const v of VIEWS) $("frame-" + v).hidden = v !== view;
    for (const b of document.querySelectorAll(".views button[data-view]")) b.classList.toggle("active", b.dataset.view === view);
    root.dataset.view = view;
  }

  async function show(id, push, fresh) {
    try {
      const item = await fetchItem(id, fresh);
      render(item);
      if (push) history.pushState({ id }, "", "/review/" + id + query);
      // refresh in the background: another inspector may have decided meanwhile
      if (!fresh) fetchItem(id, true).then((latest) => { if (state.item && state.item.id === latest.id) render(latest); }).catch(() => {});
    } catch (error) {
      setStatus("Could not load item " + id + ": " + error.message, "error");
    }
  }

  function finished() {
    state.item = null;
    root.classList.add("finished");
    $("done").hidden = false;
    setStatus("Queue done: nothing more matches these filters.", "ok");
  }

  async function decide(decision) {
    if (state.busy || !state.item) return;
    const item = state.item;
    state.busy = true;
    setStatus("Saving " + LABEL[decision] + " for " + item.scan_id + "…", "pending");
    try {
      const body = { decision, notes: $("notes").value };
      if (state.mark) body.mark = state.mark;
      if (decision === "seizure") { body.material = $("material").value; body.scenario = $("scenario").value; }
      const result = await api("POST", "/api/items/" + item.id + "/decision" + query, body);
      state.cache.delete(item.id);
      setStatus("Saved: " + LABEL[decision] + " · " + item.scan_id +
        (result.state === "conflict" ? " — CONFLICT with another inspector" : ""), result.state === "conflict" ? "warn" : "ok");
      if (result.tip) {  // a test image: it reveals itself now; the inspector moves on with J
        setStatus("Saved: " + LABEL[decision] + " · " + result.tip.text + " — " + result.tip.outcome + ". Next: J", "warn");
        await show(item.id, false, true);
        return;
      }
      const next = result.position.next_id;
      if (next) await show(next, true); else finished();
    } catch (error) {
      setStatus("NOT saved (" + LABEL[decision] + " · " + item.scan_id + "): " + error.message, "error");
    } finally {
      state.busy = false;
    }
  }

  async function undo() {
    if (state.busy) return;
    state.busy = true;
    setStatus("Undoing your last decision…", "pending");
    try {
      const result = await api("POST", "/api/undo", {});
      state.cache.delete(result.item_id);
      setStatus("Undone: " + LABEL[result.undone] + " · " + result.scan_id +
        (result.restored ? " (back to " + LABEL[result.restored] + ")" : " (undecided again)"), "ok");
      await show(result.item_id, true, true);
    } catch (error) {
      setStatus(error.status === 409 ? "Nothing to undo." : "Undo failed: " + error.message, error.status === 409 ? "" : "error");
    } finally {
      state.busy = false;
    }
  }

  function go(delta) {
    if (!state.item) return;
    const id = delta > 0 ? state.item.position.next_id : state.item.position.prev_id;
    if (id) show(id, true); else setStatus(delta > 0 ? "Last item of this queue." : "First item of this queue.", "");
  }

  function toggleHelp(open) {
    const help = $("help");
    help.hidden = open === undefined ? !help.hidden : !open;
  }

  function inField(target) {
    return target && (target.tagName === "INPUT" || target.tagName === "TEXTAREA" || target.tagName === "SELECT");
  }

  document.addEventListener("keydown", (event) => {
    const key = event.key;
    if (!$("help").hidden) {
      if (key === "Escape" || key === "?") { toggleHelp(false); event.preventDefault(); }
      return;
    }
    if (inField(event.target)) {
      if (key === "Escape") { event.target.blur(); event.preventDefault(); }
      return; // typing, including the field's own Ctrl+Z
    }
    if ((event.ctrlKey || event.metaKey) && !event.altKey && key.toLowerCase() === "z") {
      event.preventDefault();
      if (!event.repeat) undo();
      return;
    }
    if (event.ctrlKey || event.metaKey || event.altKey) return; // leave browser shortcuts alone
    const lower = key.length === 1 ? key.toLowerCase() : key;
    if (KEY_DECISION[lower]) {
      event.preventDefault();
      if (!event.repeat) decide(KEY_DECISION[lower]); // a held key must not decide a run of parcels
      return;
    }
    const actions = {
      z: () => { if (!event.repeat) undo(); },
      h: () => { state.heat = !state.heat; applyHeat(); },
      "?": () => toggleHelp(true),
      j: () => go(1), ArrowRight: () => go(1), k: () => go(-1), ArrowLeft: () => go(-1),
      1: () => setView("pseudo"), 2: () => setView("low"), 3: () => setView("high"), 4: () => setView("material"),
      m: () => $("material").focus(), c: () => $("scenario").focus(), n: () => $("notes").focus(),
      q: () => { window.location.href = $("to-queue").getAttribute("href"); },
      Escape: () => toggleHelp(false),
    };
    if (actions[lower]) { event.preventDefault(); actions[lower](); }
  });

  for (const button of document.querySelectorAll("button.decision")) {
    button.addEventListener("click", () => decide(button.dataset.decision));
  }
  $("undo").addEventListener("click", undo);
  $("heat-toggle").addEventListener("click", () => { state.heat = !state.heat; applyHeat(); });
  $("help-button").addEventListener("click", () => toggleHelp());
  $("help").addEventListener("click", (event) => { if (event.target === $("help")) toggleHelp(false); });
  for (const b of document.querySelectorAll(".views button[data-view], .thumbs figure[data-view]")) {
    b.addEventListener("click", () => setView(b.dataset.view));
  }
  window.addEventListener("popstate", () => {
    const match = location.pathname.match(/^\/review\/(\d+)$/);
    if (match) show(Number(match[1]), false, true);
  });

  setView("pseudo");
  show(Number(root.dataset.itemId), false, true).then(() => { if (state.item) setStatus("Ready. Press ? for keys.", ""); });
})();
