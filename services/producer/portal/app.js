// hookfleet's web portal: plain JavaScript, no build step, no dependency.
//
// Safety rules this file keeps:
// - every value from the API (payloads, URLs, headers, errors) reaches the
//   page through textContent or an attribute set with setAttribute, never
//   as HTML (there is no innerHTML in this file);
// - the session token comes from the URL fragment (#session=...), which the
//   browser never sends, is kept in sessionStorage for this tab only and is
//   sent as a bearer token; there is no cookie;
// - the page's Content-Security-Policy allows no inline script and no eval.
"use strict";

(function () {
  const STORE = "hookfleet.portal.session";
  const main = document.getElementById("main");
  let token = null;
  let session = null; // the session's claims, for the UI only (the API enforces them)
  let timers = []; // polling of the current page, stopped on navigation
  const secretsShown = new Map(); // endpoint id -> secret shown once in this tab

  // --- Session ---------------------------------------------------------
  function takeSession() {
    const hash = window.location.hash;
    if (hash.startsWith("#session=")) {
      const value = decodeURIComponent(hash.slice("#session=".length));
      sessionStorage.setItem(STORE, value);
      history.replaceState(null, "", window.location.pathname + "#/endpoints");
    }
    token = sessionStorage.getItem(STORE);
    if (!token) return false;
    try {
      const claims = token.slice(4).split(".")[0].replace(/-/g, "+").replace(/_/g, "/");
      session = JSON.parse(atob(claims));
    } catch (e) {
      session = null;
    }
    return session !== null;
  }

  const readOnly = () => Boolean(session && session.read_only);
  const limited = () => Boolean(session && session.endpoint_ids);

  // --- DOM helpers (text only) ----------------------------------------
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "onclick" || key === "onsubmit" || key === "onchange" || key === "oninput") {
        el.addEventListener(key.slice(2), value);
      } else if (key === "class") {
        el.className = value;
      } else {
        el.setAttribute(key, value === true ? "" : String(value));
      }
    }
    for (const child of children.flat()) {
      if (child === undefined || child === null || child === false) continue;
      el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return el;
  }

  /// A button that changes something: not drawn at all in a read-only session.
  function writeButton(label, onclick, extra) {
    if (readOnly()) return null;
    return h("button", Object.assign({ "data-write": "true", onclick }, extra || {}), label);
  }

  function toast(message, isError) {
    const el = document.getElementById("toast");
    el.textContent = message;
    el.className = "show" + (isError ? " error" : "");
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => { el.className = ""; }, 4000);
  }

  function render(...nodes) {
    main.replaceChildren(...nodes);
  }

  function badge(text, kind) {
    return h("span", { class: "badge " + (kind || text) }, text);
  }

  function when(iso) {
    if (!iso) return "";
    const d = new Date(iso);
    return isNaN(d) ? iso : d.toLocaleString();
  }

  function every(ms, fn) {
    const id = setInterval(fn, ms);
    timers.push(id);
  }

  // --- API -------------------------------------------------------------
  class ApiError extends Error {
    constructor(status, body) {
      super((body && body.error && body.error.message) || "HTTP " + status);
      this.status = status;
      this.code = body && body.error && body.error.code;
    }
  }

  async function api(method, path, body) {
    const headers = { Authorization: "Bearer " + token };
    const init = { method, headers, cache: "no-store", credentials: "omit" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(path, init);
    const text = await response.text();
    let data = null;
    if (text) {
      try { data = JSON.parse(text); } catch (e) { data = null; }
    }
    if (!response.ok) {
      const error = new ApiError(response.status, data);
      if (response.status === 401) refuse(error.message);
      throw error;
    }
    return data;
  }

  const q = (params) => {
    const parts = Object.entries(params)
      .filter(([, v]) => v !== undefined && v !== null && v !== "")
      .map(([k, v]) => encodeURIComponent(k) + "=" + encodeURIComponent(v));
    return parts.length ? "?" + parts.join("&") : "";
  };
  const seg = encodeURIComponent;

  function failed(error) {
    if (error && error.status === 401) return;
    toast(error.message || String(error), true);
  }

  function refuse(message) {
    stopTimers();
    sessionStorage.removeItem(STORE);
    render(h("div", { class: "refused card", id: "refused" },
      h("h1", {}, "This portal link no longer works"),
      h("p", {}, message || "The session has expired."),
      h("p", { class: "muted" }, "Ask for a new link.")));
  }

  // --- Endpoints -------------------------------------------------------
  async function allEndpoints() {
    let out = [];
    let after;
    for (let i = 0; i < 20; i++) {
      const page = await api("GET", "/v1/endpoints" + q({ limit: 500, after }));
      out = out.concat(page.data);
      if (!page.next) break;
      after = page.next;
    }
    return out;
  }

  function target(ep) {
    if (ep.url) return ep.url;
    if (ep.destination) {
      const d = ep.destination; // another broker's url comes masked
      return "amqp: " + (d.exchange || "") + " " + (d.routing_key || "") + (d.url ? " at " + d.url : "");
    }
    return "";
  }

  async function endpointsPage() {
    const endpoints = await allEndpoints();
    const rows = endpoints.map((ep) => {
      const rate = h("span", { class: "badge", "data-rate-for": ep.id }, "…");
      api("GET", "/v1/endpoints/" + seg(ep.id) + "/stats").then((s) => {
        if (s.success_rate === null || s.success_rate === undefined) {
          rate.textContent = "no attempts";
        } else {
          const pct = Math.round(s.success_rate * 1000) / 10;
          rate.textContent = pct + "% ok";
          rate.className = "badge " + (pct >= 99 ? "ok" : pct >= 90 ? "retrying" : "bad");
        }
      }).catch(() => { rate.textContent = "?"; });
      return h("tr", { class: "clickable endpoint-row", "data-id": ep.id, onclick: () => go("#/endpoints/" + ep.id) },
        h("td", { class: "mono" }, target(ep), ep.description ? h("div", { class: "muted" }, ep.description) : null),
        h("td", {}, ep.event_types.join(", ")),
        h("td", {}, ep.enabled ? badge("active") : badge("disabled")),
        h("td", {}, rate));
    });
    render(
      h("h1", {}, "Endpoints"),
      h("div", { class: "actions" },
        limited() ? null : writeButton("New endpoint", () => go("#/endpoints/new"), { id: "new-endpoint", class: "primary" })),
      endpoints.length === 0
        ? h("p", { class: "muted" }, "No endpoints yet.")
        : h("table", {},
          h("thead", {}, h("tr", {}, h("th", {}, "Endpoint"), h("th", {}, "Event types"), h("th", {}, "State"), h("th", {}, "24 h success"))),
          h("tbody", {}, rows)));
  }

  async function endpointForm(id) {
    const [existing, catalogue] = await Promise.all([
      id ? api("GET", "/v1/endpoints/" + seg(id)) : Promise.resolve(null),
      api("GET", "/v1/event-types?limit=500").then((p) => p.data).catch(() => []),
    ]);
    const chosen = new Set(existing ? existing.event_types : []);
    const known = new Set(catalogue.map((t) => t.name));
    const boxes = catalogue.map((t) => h("label", { class: "inline" },
      h("input", { type: "checkbox", class: "ep-type", value: t.name, checked: chosen.has(t.name) }),
      t.name));
    const typed = [...chosen].filter((t) => !known.has(t));
    const url = h("input", { id: "ep-url", type: "url", required: true, size: 60, value: existing ? existing.url || "" : "" });
    const description = h("input", { id: "ep-description", value: existing ? existing.description : "" });
    const types = h("input", { id: "ep-types", placeholder: "order.paid, invoice.*", value: typed.join(", ") });
    const headerLines = existing ? Object.keys(existing.headers).map((k) => k + ": " + existing.headers[k]).join("\n") : "";
    const ordered = h("input", { id: "ep-ordered", type: "checkbox", checked: existing ? existing.ordered : false });
    const rateLimit = h("input", {
      id: "ep-rate-limit", type: "number", min: 1, max: 10000, placeholder: "none",
      value: existing && existing.rate_limit ? existing.rate_limit : "",
    });
    const headers = h("textarea", { id: "ep-headers", placeholder: "X-Api-Key: value" });
    headers.value = headerLines;
    const form = h("form", {
      id: "endpoint-form", class: "card form-grid",
      onsubmit: async (e) => {
        e.preventDefault();
        const eventTypes = [...form.querySelectorAll(".ep-type:checked")].map((b) => b.value)
          .concat(types.value.split(",").map((s) => s.trim()).filter(Boolean));
        const body = {
          url: url.value.trim(), description: description.value, event_types: eventTypes,
          ordered: ordered.checked,
          rate_limit: rateLimit.value.trim() ? Number(rateLimit.value) : null,
        };
        if (headers.value !== headerLines) {
          const parsed = {};
          for (const line of headers.value.split("\n")) {
            const at = line.indexOf(":");
            if (at > 0) parsed[line.slice(0, at).trim()] = line.slice(at + 1).trim();
          }
          body.headers = parsed;
        }
        try {
          if (id) {
            await api("PATCH", "/v1/endpoints/" + seg(id), body);
            toast("Saved");
            go("#/endpoints/" + id);
          } else {
            const created = await api("POST", "/v1/endpoints", body);
            secretsShown.set(created.id, created.secret);
            toast("Created");
            go("#/endpoints/" + created.id + "/verify");
          }
        } catch (error) { failed(error); }
      },
    },
    h("label", {}, "URL", url),
    h("label", {}, "Description", description),
    h("div", {}, h("div", { class: "muted" }, "Event types from the catalogue"),
      boxes.length ? h("div", { class: "types" }, boxes) : h("div", { class: "muted" }, "The catalogue is empty.")),
    h("label", {}, "More event types (comma-separated; * matches one level)", types),
    h("label", { class: "inline" }, ordered, "Ordered: events with the same ordering_key arrive in the order they were accepted"),
    h("label", {}, "Rate limit (attempts per second across the fleet, 1 to 10000; empty: none)", rateLimit),
    h("label", {}, "Headers sent with every delivery (one per line, Name: value; values show as ****)", headers),
    h("div", { class: "actions" }, h("button", { id: "ep-save", class: "primary", type: "submit", "data-write": "true" }, id ? "Save" : "Create"),
      h("a", { class: "button", href: id ? "#/endpoints/" + id : "#/endpoints" }, "Cancel")));
    render(h("h1", {}, id ? "Edit endpoint" : "New endpoint"), form);
  }

  async function endpointPage(id) {
    const ep = await api("GET", "/v1/endpoints/" + seg(id));
    const actions = h("div", { class: "actions" },
      writeButton("Edit", () => go("#/endpoints/" + id + "/edit"), { id: "edit" }),
      writeButton("Rotate secret", () => rotate(id), { id: "rotate-secret" }),
      ep.enabled
        ? writeButton("Disable", () => act("POST", "/v1/endpoints/" + seg(id) + "/disable", "Disabled"), { id: "disable" })
        : writeButton("Enable", () => act("POST", "/v1/endpoints/" + seg(id) + "/enable", "Enabled"), { id: "enable" }),
      limited() ? null : writeButton("Send example event", () => sendExample(ep), { id: "send-example" }),
      writeButton("Delete", async () => {
        if (!window.confirm("Delete this endpoint? It receives nothing more.")) return;
        try { await api("DELETE", "/v1/endpoints/" + seg(id)); toast("Deleted"); go("#/endpoints"); } catch (e) { failed(e); }
      }, { id: "delete", class: "danger" }),
      h("a", { class: "button", href: "#/endpoints/" + id + "/verify" }, "How to verify"),
      h("a", { class: "button", href: "#/log?endpoint=" + encodeURIComponent(id) }, "Delivery log"));
    const chartBox = h("div", { id: "chart-box" });
    const tabs = h("div", { class: "actions tabs" },
      h("button", { id: "chart-24h", class: "active", onclick: (e) => { pick(e.target); drawChart(id, 24, chartBox); } }, "24 h"),
      h("button", { id: "chart-7d", onclick: (e) => { pick(e.target); drawChart(id, 24 * 7, chartBox); } }, "7 d"));
    function pick(button) { for (const b of tabs.children) b.classList.toggle("active", b === button); }
    render(
      h("h1", {}, "Endpoint"),
      h("div", { class: "card", "data-endpoint": ep.id },
        h("div", { class: "mono" }, target(ep)),
        ep.description ? h("div", { class: "muted" }, ep.description) : null,
        h("p", {}, ep.enabled ? badge("active") : badge("disabled"),
          ep.disabled_reason ? h("span", { class: "muted" }, " " + ep.disabled_reason) : null),
        h("div", {}, "Event types: ", ep.event_types.join(", ")),
        h("div", { id: "ep-delivery-rules" }, (ep.ordered ? "Ordered per key" : "Unordered") + ", "
          + (ep.rate_limit ? "at most " + ep.rate_limit + " attempts/s" : "no rate limit")),
        Object.keys(ep.headers).length ? h("div", {}, "Headers: ", Object.keys(ep.headers).join(", ")) : null,
        h("div", { class: "muted mono" }, ep.id),
        actions),
      h("h2", {}, "Success rate and latency per hour"), tabs, chartBox,
      recoverSection(id),
      parkedSection(id));
    drawChart(id, 24, chartBox);
  }

  async function act(method, path, done) {
    try { await api(method, path); toast(done); route(); } catch (e) { failed(e); }
  }

  async function rotate(id) {
    try {
      const rotated = await api("POST", "/v1/endpoints/" + seg(id) + "/secret/rotate");
      secretsShown.set(id, rotated.secret);
      toast("Secret rotated: it is shown once, on the next page");
      go("#/endpoints/" + id + "/verify");
    } catch (e) { failed(e); }
  }

  async function sendExample(ep) {
    const exact = ep.event_types.filter((t) => !t.includes("*"));
    let type = exact[0] || "portal.example";
    let payload = { example: true, sent_from: "portal", at: new Date().toISOString() };
    try {
      const described = await api("GET", "/v1/event-types/" + seg(type));
      if (Array.isArray(described.examples) && described.examples.length) payload = described.examples[0];
    } catch (e) { /* not in the catalogue: the generic example */ }
    try {
      const sent = await api("POST", "/v1/events", { type, payload });
      toast("Sent " + sent.type + " " + sent.id);
      go("#/events/" + sent.id);
    } catch (e) { failed(e); }
  }

  // --- The chart ------------------------------------------------------
  async function drawChart(id, hours, box) {
    box.replaceChildren(h("p", { class: "muted" }, "Loading…"));
    const end = Math.ceil(Date.now() / 3600000) * 3600000;
    const windows = [];
    for (let i = hours; i > 0; i--) windows.push([end - i * 3600000, end - (i - 1) * 3600000]);
    const points = new Array(windows.length);
    let next = 0;
    async function worker() {
      while (next < windows.length) {
        const i = next++;
        const [from, to] = windows[i];
        try {
          points[i] = await api("GET", "/v1/endpoints/" + seg(id) + "/stats" +
            q({ since: new Date(from).toISOString(), until: new Date(to).toISOString() }));
        } catch (e) { points[i] = null; }
      }
    }
    await Promise.all([worker(), worker(), worker(), worker()]);
    box.replaceChildren(chart(windows, points));
  }

  function chart(windows, points) {
    const NS = "http://www.w3.org/2000/svg";
    const W = 900, H = 240, L = 48, R = 56, T = 14, B = 30;
    const s = (tag, attrs, text) => {
      const el = document.createElementNS(NS, tag);
      for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
      if (text !== undefined) el.textContent = text;
      return el;
    };
    const svg = s("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "success rate and latency per hour" });
    const n = windows.length;
    const x = (i) => L + ((W - L - R) * (i + 0.5)) / n;
    const maxMs = Math.max(1, ...points.filter(Boolean).map((p) => p.latency_p95_ms || 0));
    const yRate = (r) => T + (H - T - B) * (1 - r);
    const yMs = (ms) => T + (H - T - B) * (1 - ms / maxMs);
    for (const r of [0, 0.5, 1]) {
      svg.append(s("line", { x1: L, x2: W - R, y1: yRate(r), y2: yRate(r), stroke: "#e3e6ec" }));
      svg.append(s("text", { x: L - 6, y: yRate(r) + 3, "text-anchor": "end" }, Math.round(r * 100) + "%"));
      svg.append(s("text", { x: W - R + 6, y: yRate(r) + 3 }, Math.round(maxMs * r) + " ms"));
    }
    const step = Math.max(1, Math.round(n / 8));
    for (let i = 0; i < n; i += step) {
      const d = new Date(windows[i][0]);
      const label = n > 48 ? (d.getMonth() + 1) + "/" + d.getDate() + " " + d.getHours() + "h" : d.getHours() + ":00";
      svg.append(s("text", { x: x(i), y: H - 10, "text-anchor": "middle" }, label));
    }
    const series = [
      ["latency_p95_ms", "#e2a03f", yMs, "p95-point"],
      ["latency_p50_ms", "#8e6adf", yMs, "p50-point"],
      ["success_rate", "#19803d", yRate, "rate-point"],
    ];
    let drawn = 0;
    for (const [key, color, y, cls] of series) {
      let path = "";
      points.forEach((p, i) => {
        if (!p || p.attempts === 0 || p[key] === null || p[key] === undefined) return;
        path += (path ? " L " : "M ") + x(i).toFixed(1) + " " + y(p[key]).toFixed(1);
        const dot = s("circle", { class: cls, cx: x(i).toFixed(1), cy: y(p[key]).toFixed(1), r: 3, fill: color });
        dot.append(s("title", {}, new Date(windows[i][0]).toLocaleString() + ": " + key + " " +
          (key === "success_rate" ? Math.round(p[key] * 1000) / 10 + "%" : Math.round(p[key]) + " ms") +
          " (" + p.attempts + " attempts)"));
        svg.append(dot);
        drawn++;
      });
      if (path) svg.insertBefore(s("path", { d: path, fill: "none", stroke: color, "stroke-width": 2 }), svg.firstChild.nextSibling);
    }
    if (!drawn) svg.append(s("text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, "No attempts in this window"));
    const legend = h("div", { class: "legend" },
      ...series.slice().reverse().map(([key, color]) => h("span", {}, swatch(color), key.replace("latency_", "").replace("_ms", " latency").replace("_", " "))));
    return h("div", { "data-points": String(drawn) }, svg, legend);
  }

  function swatch(color) {
    const el = h("span", { class: "swatch" });
    el.style.background = color; // CSSOM, not an inline style attribute: allowed by the CSP
    return el;
  }

  // --- Recovery --------------------------------------------------------
  function recoverSection(id) {
    if (readOnly()) return h("div", {});
    const since = h("input", { id: "recover-since", type: "datetime-local" });
    const d = new Date(Date.now() - 24 * 3600000);
    since.value = new Date(d.getTime() - d.getTimezoneOffset() * 60000).toISOString().slice(0, 16);
    const bar = h("div", {});
    const progress = h("div", { class: "progress", id: "recover-progress", "data-state": "idle" }, bar);
    const state = h("span", { id: "recover-state", class: "muted" });
    const start = writeButton("Recover", async () => {
      try {
        start.disabled = true;
        const r = await api("POST", "/v1/endpoints/" + seg(id) + "/recover", { since: new Date(since.value).toISOString() });
        follow(r.id);
      } catch (e) { start.disabled = false; failed(e); }
    }, { id: "recover-start" });
    function show(r) {
      const pct = r.total > 0 ? Math.round((100 * r.sent) / r.total) : (r.state === "done" ? 100 : 0);
      bar.style.width = pct + "%";
      progress.setAttribute("data-state", r.state);
      progress.classList.toggle("done", r.state === "done");
      state.textContent = r.state + ": " + r.sent + " of " + r.total + " resent" + (r.error ? " (" + r.error + ")" : "");
    }
    async function follow(rid) {
      const poll = async () => {
        try {
          const r = await api("GET", "/v1/recoveries/" + seg(rid));
          show(r);
          if (r.state !== "running") { clearInterval(t); start.disabled = false; }
        } catch (e) { clearInterval(t); failed(e); }
      };
      const t = setInterval(poll, 700);
      timers.push(t);
      poll();
    }
    return h("div", {}, h("h2", {}, "Recover"),
      h("div", { class: "card" },
        h("p", { class: "muted" }, "Resend every event this endpoint has not received since a time."),
        h("div", { class: "actions" }, h("label", {}, "Since", since), start),
        progress, state));
  }

  // --- Parked messages -------------------------------------------------
  function parkedSection(id) {
    const box = h("div", { id: "parked" }, h("p", { class: "muted" }, "Loading…"));
    api("GET", "/v1/dlq" + q({ limit: 200, endpoint_id: id })).then((list) => {
      const mine = list.data;
      if (!mine.length) { box.replaceChildren(h("p", { class: "muted" }, "No parked messages.")); return; }
      box.replaceChildren(h("table", {},
        h("thead", {}, h("tr", {}, h("th", {}, "Event"), h("th", {}, "Reason"), h("th", {}, ""))),
        h("tbody", {}, mine.map((m) => h("tr", { class: "parked-row" },
          h("td", { class: "mono" }, m.event_id || m.message_id || ""),
          h("td", {}, m.reason || ""),
          h("td", {}, limited() || !m.message_id ? null : writeButton("Requeue", async () => {
            try { await api("POST", "/v1/dlq/requeue", { message_ids: [m.message_id] }); toast("Requeued"); route(); } catch (e) { failed(e); }
          }, { class: "requeue" })))))));
    }).catch((e) => box.replaceChildren(h("p", { class: "muted" }, "Parked messages unavailable: " + e.message)));
    return h("div", {}, h("h2", {}, "Parked messages"), box);
  }

  // --- How to verify ---------------------------------------------------
  async function verifyPage(id) {
    const ep = await api("GET", "/v1/endpoints/" + seg(id));
    const secret = secretsShown.get(id);
    let secretBox;
    if (secret) {
      const value = h("div", { class: "secret", id: "new-secret", hidden: true }, secret);
      const reveal = h("button", {
        id: "reveal-secret",
        onclick: () => { value.hidden = !value.hidden; reveal.textContent = value.hidden ? "Reveal secret" : "Hide secret"; },
      }, "Reveal secret");
      secretBox = h("div", {}, h("p", {}, "The signing secret. hookfleet shows it only now: copy it into your receiver."), reveal, value);
    } else {
      secretBox = h("div", {},
        h("p", {}, "hookfleet stores signing secrets sealed and shows one only when it is made. Rotate to get a new one (the old one keeps signing during the grace period)."),
        writeButton("Rotate secret", () => rotate(id), { id: "rotate-secret" }));
    }
    const snippets = [
      ["Python", `import base64, hashlib, hmac

def verify(secret: str, headers, body: bytes) -> bool:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return any(hmac.compare_digest("v1," + expected, s)
               for s in headers["webhook-signature"].split(" "))`],
      ["Node.js", `const crypto = require("crypto");

function verify(secret, headers, body /* Buffer, as received */) {
  const key = Buffer.from(secret.replace(/^whsec_/, ""), "base64");
  const signed = Buffer.concat([
    Buffer.from(headers["webhook-id"] + "." + headers["webhook-timestamp"] + "."), body]);
  const expected = "v1," + crypto.createHmac("sha256", key).update(signed).digest("base64");
  return headers["webhook-signature"].split(" ").some((s) =>
    s.length === expected.length && crypto.timingSafeEqual(Buffer.from(s), Buffer.from(expected)));
}`],
      ["Go", `func verify(secret string, h http.Header, body []byte) bool {
	key, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(h.Get("webhook-id") + "." + h.Get("webhook-timestamp") + "."))
	mac.Write(body)
	expected := "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
	for _, s := range strings.Split(h.Get("webhook-signature"), " ") {
		if hmac.Equal([]byte(s), []byte(expected)) {
			return true
		}
	}
	return false
}`],
    ];
    render(
      h("h1", {}, "How to verify"),
      h("div", { class: "card" }, h("div", { class: "mono" }, target(ep)), secretBox),
      h("p", {}, "Every delivery carries webhook-id, webhook-timestamp and webhook-signature (Standard Webhooks). Check the signature over id.timestamp.body with the raw body as received, and refuse timestamps more than five minutes old. webhook-id stays the same across retries: use it to drop duplicates."),
      ...snippets.map(([lang, code]) => h("div", {}, h("h2", {}, lang), h("pre", {}, code))),
      h("p", {}, h("a", { href: "#/endpoints/" + id }, "Back to the endpoint")));
  }

  // --- Delivery log ----------------------------------------------------
  function attemptRow(a, names) {
    return h("tr", { class: "clickable attempt-row", "data-event-id": a.event_id, "data-attempt-id": a.id,
      "data-endpoint-id": a.endpoint_id, "data-result": a.result, onclick: () => go("#/events/" + a.event_id) },
      h("td", {}, when(a.started_at)),
      h("td", { class: "mono" }, h("a", { class: "event-link", href: "#/events/" + encodeURIComponent(a.event_id) }, a.event_id)),
      h("td", { class: "mono" }, names.get(a.endpoint_id) || a.endpoint_id),
      h("td", {}, String(a.attempt)),
      h("td", {}, badge(a.result)),
      h("td", {}, a.status_code === null ? "" : String(a.status_code)),
      h("td", {}, a.duration_ms + " ms"),
      h("td", { class: "mono" }, a.error || ""));
  }

  async function logPage(params) {
    const endpoints = await allEndpoints().catch(() => []);
    const names = new Map(endpoints.map((e) => [e.id, target(e)]));
    const f = {
      endpoint: h("select", { id: "f-endpoint" }, h("option", { value: "" }, "All endpoints"),
        endpoints.map((e) => h("option", { value: e.id, selected: params.get("endpoint") === e.id }, target(e)))),
      result: h("select", { id: "f-result" }, ["", "succeeded", "retrying", "exhausted", "cancelled"].map((r) =>
        h("option", { value: r, selected: params.get("result") === r }, r || "Any result"))),
      type: h("input", { id: "f-type", placeholder: "order.paid", value: params.get("event_type") || "" }),
      since: h("input", { id: "f-since", type: "datetime-local", value: params.get("since") || "" }),
      until: h("input", { id: "f-until", type: "datetime-local", value: params.get("until") || "" }),
      event: h("input", { id: "f-event", placeholder: "event id", value: params.get("event") || "" }),
    };
    const live = h("input", { id: "f-live", type: "checkbox", checked: true });
    const form = h("form", {
      class: "filters card",
      onsubmit: (e) => {
        e.preventDefault();
        const p = new URLSearchParams();
        if (f.endpoint.value) p.set("endpoint", f.endpoint.value);
        if (f.result.value) p.set("result", f.result.value);
        if (f.type.value.trim()) p.set("event_type", f.type.value.trim());
        if (f.since.value) p.set("since", f.since.value);
        if (f.until.value) p.set("until", f.until.value);
        if (f.event.value.trim()) p.set("event", f.event.value.trim());
        go("#/log" + (p.toString() ? "?" + p.toString() : ""));
      },
    },
    h("label", {}, "Endpoint", f.endpoint), h("label", {}, "Result", f.result), h("label", {}, "Event type", f.type),
    h("label", {}, "From", f.since), h("label", {}, "To", f.until), h("label", {}, "Event id", f.event),
    h("button", { type: "submit", class: "primary", id: "f-apply" }, "Filter"),
    h("label", { class: "inline" }, live, "Follow live"));
    const tbody = h("tbody", { id: "log-rows" });
    const more = h("button", { id: "log-more", hidden: true }, "Older attempts");
    const iso = (local) => (local ? new Date(local).toISOString() : undefined);
    const query = {
      result: params.get("result"), event_type: params.get("event_type"),
      since: iso(params.get("since")), until: iso(params.get("until")), limit: 50,
    };
    const eventId = params.get("event");
    const endpoint = params.get("endpoint");
    const base = eventId ? "/v1/events/" + seg(eventId) + "/attempts"
      : endpoint ? "/v1/endpoints/" + seg(endpoint) + "/attempts" : "/v1/attempts";
    const shown = new Set();
    let cursor = null;

    function keep(a) {
      // The event's attempts have no server-side filters: apply them here.
      if (!eventId) return true;
      return (!endpoint || a.endpoint_id === endpoint) && (!query.result || a.result === query.result);
    }
    async function load(after) {
      const page = await api("GET", base + q(Object.assign({}, eventId ? {} : query, { after })));
      let data = page.data.filter(keep);
      if (eventId) data = data.slice().reverse(); // the event's attempts come oldest first
      for (const a of data) { if (!shown.has(a.id)) { shown.add(a.id); tbody.append(attemptRow(a, names)); } }
      cursor = page.next;
      more.hidden = !cursor;
    }
    async function refresh() {
      if (!live.checked) return;
      try {
        const page = await api("GET", base + q(Object.assign({}, eventId ? {} : query)));
        const fresh = page.data.filter((a) => keep(a) && !shown.has(a.id));
        // Each new one goes on top, oldest first (the event's come oldest first).
        if (!eventId) fresh.reverse();
        for (const a of fresh) { shown.add(a.id); tbody.prepend(attemptRow(a, names)); }
      } catch (e) { /* a missed poll: the next one catches up */ }
    }
    more.addEventListener("click", () => load(cursor).catch(failed));
    render(h("h1", {}, "Delivery log"), form,
      h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "Time"), h("th", {}, "Event"), h("th", {}, "Endpoint"), h("th", {}, "#"),
        h("th", {}, "Result"), h("th", {}, "Status"), h("th", {}, "Duration"), h("th", {}, "Error"))), tbody),
      h("div", { class: "actions" }, more));
    await load(null);
    every(2000, refresh);
  }

  // --- Event -----------------------------------------------------------
  async function eventPage(id) {
    // An event just sent reaches the ledger a moment after it is accepted.
    let ev = null;
    for (let tries = 0; ev === null; tries++) {
      try {
        ev = await api("GET", "/v1/events/" + seg(id));
      } catch (error) {
        if (error.status !== 404 || tries >= 20) throw error;
        render(h("p", { class: "muted" }, "The event is on its way to the ledger…"));
        await new Promise((resolve) => setTimeout(resolve, 500));
      }
    }
    let payload;
    try { payload = JSON.stringify(ev.payload, null, 2); } catch (e) { payload = String(ev.payload); }
    const attempts = h("tbody", { id: "event-attempts" });
    const deliveries = h("tbody", { id: "event-deliveries" });
    function fill(e) {
      deliveries.replaceChildren(...e.deliveries.map((d) => h("tr", { class: "delivery-row", "data-endpoint-id": d.endpoint_id },
        h("td", { class: "mono" }, h("a", { href: "#/endpoints/" + encodeURIComponent(d.endpoint_id) }, d.endpoint_id)),
        h("td", {}, badge(d.state)),
        h("td", {}, String(d.attempts)),
        h("td", {}, d.last_status_code === null ? "" : String(d.last_status_code)),
        h("td", { class: "mono" }, d.last_error || ""),
        h("td", {}, when(d.next_attempt_at)),
        h("td", {}, writeButton("Replay", () => replay(d.endpoint_id), { class: "replay" })))));
      attempts.replaceChildren(...e.attempts.slice().reverse().map((a) => h("tr", { class: "attempt-row", "data-attempt-id": a.id },
        h("td", {}, when(a.started_at)),
        h("td", { class: "mono" }, a.endpoint_id),
        h("td", {}, String(a.attempt)),
        h("td", {}, badge(a.result)),
        h("td", {}, a.status_code === null ? "" : String(a.status_code)),
        h("td", {}, a.duration_ms + " ms"),
        h("td", { class: "mono" }, a.response_excerpt || ""),
        h("td", { class: "mono" }, a.error || ""))));
    }
    async function replay(endpointId) {
      try {
        const r = await api("POST", "/v1/events/" + seg(id) + "/replay", endpointId ? { endpoint_id: endpointId } : {});
        toast("Replayed to " + r.data.length + " endpoint(s)");
      } catch (e) { failed(e); }
    }
    render(
      h("h1", {}, "Event"),
      h("div", { class: "card" },
        h("div", {}, h("strong", {}, ev.type), " ", h("span", { class: "muted mono" }, ev.id)),
        h("div", { class: "muted" }, "Created " + when(ev.created_at) + (ev.source ? " · from " + ev.source : "")),
        h("div", { class: "actions" }, limited() ? null : writeButton("Replay to every endpoint", () => replay(null), { id: "replay-all" }))),
      h("h2", {}, "Payload"), h("pre", { id: "payload" }, payload),
      h("h2", {}, "Endpoints"),
      h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "Endpoint"), h("th", {}, "State"), h("th", {}, "Attempts"),
        h("th", {}, "Last status"), h("th", {}, "Last error"), h("th", {}, "Next attempt"), h("th", {}, ""))), deliveries),
      h("h2", {}, "Attempts"),
      h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "Time"), h("th", {}, "Endpoint"), h("th", {}, "#"), h("th", {}, "Result"),
        h("th", {}, "Status"), h("th", {}, "Duration"), h("th", {}, "Response"), h("th", {}, "Error"))), attempts));
    fill(ev);
    every(2000, async () => { try { fill(await api("GET", "/v1/events/" + seg(id))); } catch (e) { /* next time */ } });
  }

  // --- Routing ---------------------------------------------------------
  function stopTimers() {
    for (const t of timers) clearInterval(t);
    timers = [];
  }

  function go(hash) {
    if (window.location.hash === hash) route();
    else window.location.hash = hash;
  }

  async function route() {
    stopTimers();
    const hash = window.location.hash || "#/endpoints";
    const [path, query] = hash.slice(1).split("?");
    const params = new URLSearchParams(query || "");
    const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
    document.getElementById("nav-endpoints").classList.toggle("active", parts[0] === "endpoints");
    document.getElementById("nav-log").classList.toggle("active", parts[0] === "log" || parts[0] === "events");
    try {
      if (parts[0] === "log") await logPage(params);
      else if (parts[0] === "events" && parts[1]) await eventPage(parts[1]);
      else if (parts[0] === "endpoints" && parts[1] === "new") await endpointForm(null);
      else if (parts[0] === "endpoints" && parts[1] && parts[2] === "edit") await endpointForm(parts[1]);
      else if (parts[0] === "endpoints" && parts[1] && parts[2] === "verify") await verifyPage(parts[1]);
      else if (parts[0] === "endpoints" && parts[1]) await endpointPage(parts[1]);
      else await endpointsPage();
    } catch (error) {
      if (error.status === 401) return;
      render(h("div", { class: "card" }, h("h1", {}, "Could not load this page"), h("p", { id: "page-error" }, error.message)));
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    if (!takeSession()) {
      refuse("Open the portal with a link from your provider (it carries a session).");
      return;
    }
    const info = document.getElementById("session-info");
    const bits = ["tenant " + session.tenant];
    if (session.read_only) bits.push("read-only");
    if (session.endpoint_ids) bits.push(session.endpoint_ids.length + " endpoint(s)");
    bits.push("until " + new Date(session.expires_at * 1000).toLocaleString());
    info.textContent = bits.join(" · ");
    if (session.expires_at * 1000 <= Date.now()) {
      refuse("The session has expired.");
      return;
    }
    window.addEventListener("hashchange", route);
    route();
  });
})();
