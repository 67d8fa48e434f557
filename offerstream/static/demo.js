/* offerstream demo shop: plain JavaScript against the real HTTP API of the worker serving it.
 *
 * Nothing here is mocked. Events go to POST /v1/events and offers come from POST /v1/score through
 * the browser kit's client (/sdk/offerstream.js), which also renders the offer list; consent
 * goes through PUT /v1/customers/{id}/consent, "what is stored" is GET /v1/customers/{id}, and
 * "Erase me" is DELETE /v1/customers/{id}. Events are applied asynchronously by the stream, so
 * after an action the page re-reads the customer and the offers for a short while until the
 * change is visible (or about two seconds have passed).
 *
 * Access keys, if the server asks for them (401), are kept in this script's memory only. The demo
 * is an operator's tool on the worker's own origin: it names the customer and may hold keys. A
 * shop's page holds a customer token instead (README, "On your web page").
 */
(() => {
  "use strict";

  const FLAGS = [
    ["profile", "Profile", "build and keep a behavioural profile"],
    ["personalize", "Personalize", "use the profile to choose offers"],
    ["marketing", "Marketing", "direct-marketing offers"],
    ["measurement", "Measurement", "log impressions and clicks for evaluation"],
    ["training", "Training", "use my data to train models"],
    ["sharing", "Sharing", "third-party and partner offers"],
  ];

  // Products shown for the Complete Journey departments; other categories get generic items.
  const PRODUCTS = {
    "GROCERY": [["Whole milk, 1 gal", 3.49], ["Breakfast cereal", 4.29], ["Coffee beans, 12 oz", 8.99]],
    "DRUG GM": [["Pain reliever, 100 ct", 8.99], ["Vitamin C, 250 mg", 6.49], ["Toothpaste", 3.79]],
    "COSMETICS": [["Lipstick", 9.99], ["Face cream", 14.5], ["Nail polish", 5.99]],
    "PRODUCE": [["Bananas, 1 lb", 0.59], ["Honeycrisp apples, 3 lb", 5.99], ["Baby spinach", 3.29]],
    "KIOSK-GAS": [["Regular fuel, 10 gal", 34.9], ["Car wash", 9.0], ["Windshield fluid", 4.49]],
    "MEAT": [["Chicken breast, 1 lb", 4.99], ["Ground beef, 1 lb", 5.49], ["Pork chops", 6.99]],
    "MEAT-PCKGD": [["Sliced ham", 4.49], ["Bacon", 6.29], ["Hot dogs", 3.99]],
    "DELI": [["Turkey sandwich", 6.99], ["Potato salad", 3.49], ["Rotisserie chicken", 7.99]],
    "PASTRY": [["Croissants, 4 ct", 4.99], ["Bagels, 6 ct", 3.99], ["Blueberry muffin", 2.49]],
    "NUTRITION": [["Protein bar", 2.29], ["Almond milk", 3.79], ["Granola", 5.49]],
    "SEAFOOD-PCKGD": [["Smoked salmon", 7.99], ["Tuna, 5 oz", 1.49], ["Fish sticks", 4.99]],
  };
  const PRODUCTS_PER_CATEGORY = 2;
  const SETTLE_MS = 2000;
  const POLL_MS = 200;

  const state = {
    customerId: "",
    apiKey: "",
    scoreKey: "",
    offers: new Map(),       // offer_id -> offer from GET /v1/offers
    products: new Map(),     // item_id -> {item_id, name, category, price}
    catalogueLoaded: false,
    customer: null,          // last GET /v1/customers/{id} body, or null (404: nothing stored)
    score: null,             // last POST /v1/score body
    prevScores: new Map(),   // offer_id -> score shown before the last burst of actions
    generation: 0,           // raised by every user action; stale polling loops stop
    expectedEvents: 0,       // profile events expected once every event sent is applied
    scoreSeq: 0,             // only the newest score answer is rendered
    customerSeq: 0,
    refreshes: 0,
    renderedContent: "",
    activeSettles: 0,        // polling loops still running (a burst of clicks in progress)
  };

  const $ = (id) => document.getElementById(id);

  // The kit's client for the two calls a page makes; the demo adds its keys (a shop's page has none).
  const kit = window.Offerstream.createClient({
    url: window.location.origin,
    headers: (path) => {
      const key = path === "/v1/score" ? (state.scoreKey || state.apiKey) : state.apiKey;
      return key ? { "Authorization": `Bearer ${key}` } : {};
    },
  });

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs)) {
      if (value === undefined || value === null || value === false) continue;
      if (name === "class") node.className = value;
      else if (name === "text") node.textContent = value;
      else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  let counter = 0;
  function newId(prefix) {
    if (window.crypto && typeof window.crypto.randomUUID === "function") {
      return `${prefix}-${window.crypto.randomUUID()}`;
    }
    counter += 1;
    return `${prefix}-${Date.now().toString(36)}-${counter}-${Math.random().toString(36).slice(2, 10)}`;
  }

  function guestId() {
    return `guest-${Math.random().toString(36).slice(2, 8)}${Date.now().toString(36).slice(-3)}`;
  }

  function setStatus(text, kind = "info") {
    const node = $("status");
    node.textContent = text;
    node.dataset.kind = kind;
  }

  // ---- HTTP ----------------------------------------------------------------------------------

  class AuthError extends Error {}

  async function api(method, path, body, { score = false } = {}) {
    const headers = { "Accept": "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const key = score ? (state.scoreKey || state.apiKey) : state.apiKey;
    if (key) headers["Authorization"] = `Bearer ${key}`;
    let response;
    let data = null;
    try {
      if (method === "POST" && path === "/v1/score") response = await kit.score(body);
      else if (method === "POST" && path === "/v1/events") response = await kit.send(body);
      else response = await fetch(path, {
        method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: "no-store",
      });
    } catch (err) {
      setStatus(`The server did not answer ${method} ${path}: ${err.message}`, "error");
      throw err;
    }
    if (response instanceof Response) {
      const text = await response.text();
      if (text) {
        try { data = JSON.parse(text); } catch { data = { error: "not_json", detail: text.slice(0, 200) }; }
      }
    } else {
      data = response.body;  // the kit's client answers {status, body}
    }
    if (response.status === 401) {
      showAuth(score ? "score" : "api");
      throw new AuthError(`${method} ${path}: 401 ${data && data.detail ? data.detail : "unauthorized"}`);
    }
    if (response.status === 503) {
      setStatus(`The worker is not ready (${data && data.detail ? data.detail : "503"}); retrying shortly.`, "warn");
    }
    return { status: response.status, body: data };
  }

  function errorText(res) {
    if (!res.body) return `HTTP ${res.status}`;
    const field = res.body.field ? ` (field ${res.body.field})` : "";
    return `${res.body.detail || res.body.error || "error"}${field}`;
  }

  // ---- access keys -----------------------------------------------------------------------------

  function showAuth(which) {
    const panel = $("auth");
    const wasHidden = panel.hidden;
    panel.hidden = false;
    setStatus(`The server requires ${which === "score" ? "a score key" : "an API key"} (401). ` +
              "Enter the keys in the form above.", "error");
    if (wasHidden) $(which === "score" ? "score-key" : "api-key").focus();
  }

  function onAuthSubmit(event) {
    event.preventDefault();
    state.apiKey = $("api-key").value.trim();
    state.scoreKey = $("score-key").value.trim();
    $("auth").hidden = true;
    setStatus("Keys set for this page (memory only). Reloading…");
    start().catch(report);
  }

  function report(err) {
    if (err instanceof AuthError) return;  // the key form is already showing
    setStatus(`Something went wrong: ${err.message}`, "error");
    console.error(err);
  }

  // ---- catalogue and shop --------------------------------------------------------------------

  function productsFor(category) {
    const known = PRODUCTS[category.toUpperCase()];
    const slug = category.toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-|-$/g, "") || "item";
    const list = known || [1, 2, 3].map((i) => [`${category} item ${i}`, 2.5 + (slug.length * 7 + i * 3) % 20]);
    return list.slice(0, PRODUCTS_PER_CATEGORY).map(([name, price], i) => ({
      item_id: `${slug}-${i + 1}`, name, category, price,
    }));
  }

  async function loadCatalogue() {
    const res = await api("GET", "/v1/offers");
    if (res.status !== 200) throw new Error(`GET /v1/offers: ${errorText(res)}`);
    state.offers = new Map(res.body.offers.map((o) => [o.offer_id, o]));
    const byCategory = new Map();
    for (const offer of res.body.offers) {
      byCategory.set(offer.category, (byCategory.get(offer.category) || 0) + 1);
    }
    const root = $("catalogue");
    root.replaceChildren();
    state.products.clear();
    if (byCategory.size === 0) {
      root.append(el("p", { class: "empty", text: "The catalogue is empty: load offers with PUT /v1/offers/{id}." }));
    }
    for (const [category, n] of [...byCategory.entries()].sort((a, b) => a[0].localeCompare(b[0]))) {
      const headingId = `cat-${category.toLowerCase().replace(/[^a-z0-9]+/g, "-")}`;
      const tiles = productsFor(category).map((p) => {
        state.products.set(p.item_id, p);
        return productTile(p);
      });
      root.append(el("section", { class: "category", "aria-labelledby": headingId, "data-category": category },
        el("h3", { id: headingId }, category, " ",
          el("span", { class: "count", text: `${n} offer${n === 1 ? "" : "s"}` })),
        el("ul", { class: "tiles" }, tiles)));
    }
    state.catalogueLoaded = true;
  }

  function productTile(p) {
    const action = (kind, label, cls) => el("button", {
      type: "button", class: `btn ${cls || ""}`, "data-action": kind, "data-item-id": p.item_id,
      "data-category": p.category, "aria-label": `${label}: ${p.name}`, text: label,
      onclick: () => shop(kind, p).catch(report),
    });
    return el("li", { class: "tile", "data-item-id": p.item_id, "data-category": p.category },
      el("p", { class: "name", text: p.name }),
      el("p", { class: "price", text: `$${p.price.toFixed(2)}` }),
      el("div", { class: "actions" },
        action("view", "View"),
        action("cart", "Add to cart"),
        action("buy", "Buy", "primary"),
        action("store", "Buy in store")));
  }

  async function shop(kind, p) {
    const item = { item_id: p.item_id, category: p.category, price: p.price, quantity: 1 };
    let event;
    if (kind === "view") {
      event = { type: "product_view", item_id: p.item_id, category: p.category, price: p.price };
    } else if (kind === "cart") {
      event = { type: "add_to_cart", ...item };
    } else {
      const channel = kind === "store" ? "store" : "web";
      event = { type: "purchase", channel, order_id: newId(channel === "store" ? "pos" : "order"),
                items: [item], total: p.price };
    }
    await sendEvent(event, `${p.name} (${p.category})`);
  }

  // ---- events ----------------------------------------------------------------------------------

  /* The arrows beside the scores compare with the answer shown before a burst of actions. */
  function beginAction() {
    if (state.activeSettles === 0 && state.score && state.score.customer_id === state.customerId) {
      state.prevScores = new Map(state.score.offers.map((o) => [o.offer_id, o.score]));
    }
  }

  async function sendEvent(fields, label) {
    beginAction();
    const event = { event_id: newId("demo"), customer_id: state.customerId, ts: Date.now(), channel: "web", ...fields };
    if (!["purchase", "return"].includes(event.type)) delete event.channel;
    const before = profileEvents(state.customer);
    const generation = ++state.generation;
    const res = await api("POST", "/v1/events", event);
    const ok = res.status === 202 && res.body.accepted === 1;
    logEvent(event, label, ok ? "accepted" : `rejected: ${errorText(res)}`, ok);
    if (!ok) {
      setStatus(`The event was rejected: ${errorText(res)}`, "error");
      return;
    }
    setStatus(`Sent ${event.type}${label ? ` for ${label}` : ""}; updating the offers…`);
    let check;
    if (event.type === "offer_dismiss") {
      check = (_c, s) => s && s.filtered.some((f) => f.offer_id === event.offer_id && f.reason === "dismissed");
    } else if (flagOn("profile")) {
      // Several clicks may be in flight: wait for all of them, not just for "one more".
      state.expectedEvents = Math.max(state.expectedEvents, before) + 1;
      const target = state.expectedEvents;
      check = (c) => profileEvents(c) >= target;
    } else {
      check = null;  // without profile consent nothing is stored: one refresh shows that
    }
    const seen = await settle(generation, check);
    if (generation === state.generation) {
      setStatus(seen || check === null ? `Offers updated after ${event.type}.` :
        `Sent ${event.type}; the stream has not applied it yet. Use “Refresh offers” in a moment.`);
    }
  }

  function logEvent(event, label, outcome, ok) {
    const list = $("event-log");
    const time = new Date(event.ts).toLocaleTimeString();
    const channel = event.channel ? ` · ${event.channel}` : "";
    list.prepend(el("li", { class: ok ? "ok" : "bad", "data-type": event.type },
      el("span", { class: "etype", text: event.type }), channel,
      label ? ` · ${label}` : "", el("span", { class: "outcome", text: ` → ${outcome}` }),
      el("time", { text: ` ${time}` })));
    while (list.children.length > 12) list.lastElementChild.remove();
  }

  // ---- reading the customer and the offers -----------------------------------------------------

  function profileEvents(customer) {
    return customer && customer.profile ? customer.profile.n_events : 0;
  }

  function flagOn(flag) {
    const flags = state.customer && state.customer.consent ? state.customer.consent.flags : null;
    return Boolean(flags && flags[flag]);
  }

  async function loadCustomer() {
    const seq = ++state.customerSeq;
    const cid = state.customerId;
    const res = await api("GET", `/v1/customers/${encodeURIComponent(cid)}`);
    if (seq !== state.customerSeq || cid !== state.customerId) return state.customer;
    if (res.status === 404) state.customer = null;
    else if (res.status === 200) state.customer = res.body;
    else throw new Error(`GET /v1/customers/${cid}: ${errorText(res)}`);
    renderCustomer();
    return state.customer;
  }

  async function loadScore() {
    const seq = ++state.scoreSeq;
    const cid = state.customerId;
    const section = $("offers");
    $("offers-live").setAttribute("aria-busy", "true");
    const body = { customer_id: cid, k: Number($("k").value), context: { channel: "web" } };
    const res = await api("POST", "/v1/score", body, { score: true });
    if (seq !== state.scoreSeq || cid !== state.customerId) return state.score;
    $("offers-live").setAttribute("aria-busy", "false");
    if (res.status !== 200) {
      section.dataset.state = "error";
      throw new Error(`POST /v1/score: ${errorText(res)}`);
    }
    renderScore(res.body);
    return state.score;
  }

  /* The customer first, then the offers: the answer shown is at least as new as the profile shown. */
  async function refresh() {
    const customer = await loadCustomer();
    const score = await loadScore();
    return [customer, score];
  }

  /* Re-read customer and offers until `check` holds, a newer action starts, or SETTLE_MS passes. */
  async function settle(generation, check) {
    const deadline = performance.now() + SETTLE_MS;
    document.body.dataset.settling = "true";
    state.activeSettles += 1;
    try {
      for (;;) {
        const [customer, score] = await refresh();
        if (check === null || check(customer, score)) return true;
        if (generation !== state.generation || performance.now() > deadline) return false;
        await sleep(POLL_MS);
      }
    } finally {
      state.activeSettles -= 1;
      if (state.activeSettles === 0) document.body.dataset.settling = "false";
    }
  }

  // ---- rendering -------------------------------------------------------------------------------

  function renderCustomer() {
    const c = state.customer;
    const flags = c && c.consent ? c.consent.flags : {};
    for (const [flag] of FLAGS) {
      const box = $(`flag-${flag}`);
      if (!box.dataset.pending) box.checked = Boolean(flags[flag]);
    }
    const fieldset = $("consent-flags");
    fieldset.dataset.epoch = c && c.consent ? c.consent.epoch : 0;
    if (!c) {
      $("consent-summary").textContent = "nothing stored (all off)";
    } else {
      const granted = FLAGS.map(([f]) => f).filter((f) => flags[f]);
      const sources = [...new Set(Object.entries(c.consent.sources || {})
        .filter(([, s]) => s !== "default").map(([, s]) => s))];
      $("consent-summary").textContent = `epoch ${c.consent.epoch} · ` +
        (granted.length ? `granted: ${granted.join(", ")}` : "all off") +
        (sources.length ? ` · from ${sources.join(", ")}` : "");
    }
    $("stored-events").textContent = c && c.profile ? String(c.profile.n_events) :
      (c ? "no profile" : "none: nothing is stored");
    const dismissed = c && c.choices ? c.choices.dismissed : [];
    $("stored-dismissed").textContent = dismissed && dismissed.length ?
      dismissed.map((id) => offerTitle(id)).join("; ") : "none";
  }

  function offerTitle(id) {
    const offer = state.offers.get(id);
    return offer ? offer.title : id;
  }

  function renderScore(score) {
    state.score = score;
    state.refreshes += 1;
    const section = $("offers");
    section.dataset.state = "ready";
    section.dataset.personalized = String(score.personalized);
    section.dataset.decisionId = score.decision_id;
    section.dataset.modelVersion = score.model_version;
    section.dataset.refreshes = String(state.refreshes);
    $("decision-id").textContent = score.decision_id;
    // Same content as shown: leave the live region alone (no repeated announcements).
    const content = JSON.stringify([score.customer_id, score.personalized, score.model_version, score.offers,
      score.filtered, [...state.prevScores]]);
    if (content === state.renderedContent) return;
    state.renderedContent = content;
    const badge = $("personalized-badge");
    badge.textContent = score.personalized ? "Personalized for you" : "Not personalized (contextual)";
    badge.className = `badge ${score.personalized ? "on" : "off"}`;
    badge.dataset.personalized = String(score.personalized);
    $("model-version").textContent = score.model_version;

    const list = $("offer-list");
    window.Offerstream.renderOffers(list, score, { item: (o) => offerItem(o, score) });
    if (score.offers.length === 0) {
      list.append(el("li", { class: "empty", text: "No offer is available to this customer right now." }));
    }
    $("filtered-count").textContent = `${score.filtered.length} offer${score.filtered.length === 1 ? "" : "s"}`;
    $("filtered-list").replaceChildren(...score.filtered.map((f) => el("li", {
      "data-offer-id": f.offer_id, "data-reason": f.reason,
    }, el("span", { class: "ftitle", text: offerTitle(f.offer_id) }), " ",
    el("code", { class: `reason ${f.reason.replace(/[^a-z]+/g, "-")}`, text: f.reason }))));
  }

  function offerItem(o, score) {
    const offer = state.offers.get(o.offer_id) || { title: o.offer_id, category: "?", kind: "?", discount_pct: 0 };
    const before = state.prevScores.get(o.offer_id);
    let delta = null;
    if (before !== undefined && Math.abs(o.score - before) >= 0.0005) {
      const up = o.score > before;
      delta = el("span", { class: `delta ${up ? "up" : "down"}`,
        "aria-label": `${up ? "up" : "down"} ${Math.abs(o.score - before).toFixed(3)} since your last actions`,
        title: `was ${before.toFixed(4)} before your last actions`,
        text: `${up ? "▲" : "▼"} ${Math.abs(o.score - before).toFixed(3)}` });
    }
    const titleId = `offer-title-${o.rank}`;
    return el("li", {
      class: "offer", "data-offer-id": o.offer_id, "data-rank": o.rank, "data-score": o.score,
      "data-category": offer.category, "data-personalized": String(score.personalized),
      "aria-labelledby": titleId,
    },
    el("div", { class: "offer-head" },
      el("span", { class: "rank", "aria-label": `rank ${o.rank}`, text: `#${o.rank}` }),
      el("h3", { id: titleId, class: "otitle", text: offer.title })),
    el("p", { class: "ometa" },
      el("span", { class: "cat", text: offer.category }), ` · ${offer.kind}`,
      offer.discount_pct ? ` · ${offer.discount_pct}% off` : "",
      (offer.requires && offer.requires.length) ? ` · needs ${offer.requires.join(", ")}` : ""),
    el("p", { class: "oscore" }, "score ", el("strong", { class: "score", text: o.score.toFixed(4) }), " ", delta,
      " ", el("span", { class: `pflag ${score.personalized ? "on" : "off"}`,
        text: score.personalized ? "personalized" : "contextual" })),
    el("ul", { class: "reasons", "aria-label": "why this offer" }, o.reasons.map((r) => el("li", { text: r }))),
    el("button", {
      type: "button", class: "btn dismiss", "data-action": "dismiss", "data-offer-id": o.offer_id,
      "aria-label": `Not interested: ${offer.title}`, text: "Not interested",
      onclick: () => dismiss(o.offer_id, score.decision_id).catch(report),
    }));
  }

  // ---- actions ---------------------------------------------------------------------------------

  async function dismiss(offerId, decisionId) {
    await sendEvent({ type: "offer_dismiss", offer_id: offerId, decision_id: decisionId }, offerTitle(offerId));
    $("offers-heading").focus({ preventScroll: true });
  }

  async function setFlag(flag, value) {
    const box = $(`flag-${flag}`);
    box.dataset.pending = "true";
    box.disabled = true;
    state.generation += 1;
    beginAction();
    try {
      await putConsent({ flags: { [flag]: value } });
    } finally {
      delete box.dataset.pending;
      box.disabled = false;
    }
  }

  async function putConsent(body) {
    const message = $("consent-message");
    const cid = state.customerId;
    const res = await api("PUT", `/v1/customers/${encodeURIComponent(cid)}/consent`, body);
    if (res.status !== 200) {
      message.textContent = `Consent not changed: ${errorText(res)}`;
      message.dataset.kind = "error";
      await loadCustomer();
      return false;
    }
    const r = res.body;
    const parts = [];
    if (r.granted.length) parts.push(`granted ${r.granted.join(", ")}`);
    if (r.revoked.length) parts.push(`revoked ${r.revoked.join(", ")}`);
    if (r.ignored.length) parts.push(`ignored ${r.ignored.join(", ")} (older than a revocation)`);
    if (r.profile_erased) parts.push("profile erased");
    message.textContent = `Consent epoch ${r.consent.epoch}: ${parts.join("; ") || "no change"}. In force now.`;
    message.dataset.kind = "ok";
    if (r.profile_erased) state.expectedEvents = 0;
    await refresh();
    return true;
  }

  async function applyTcf(event) {
    event.preventDefault();
    const tc = $("tcf-string").value.trim();
    if (!tc) {
      $("consent-message").textContent = "Enter a TC string first.";
      $("consent-message").dataset.kind = "error";
      return;
    }
    await putConsent({ tcf: tc });
  }

  async function erase() {
    const cid = state.customerId;
    const res = await api("DELETE", `/v1/customers/${encodeURIComponent(cid)}`);
    const box = $("erase-receipt");
    if (res.status !== 200) {
      box.replaceChildren(el("p", { class: "message", "data-kind": "error", text: `Not erased: ${errorText(res)}` }));
      return;
    }
    const r = res.body;
    box.replaceChildren(
      el("h3", { text: `Erasure receipt for ${r.customer_id}` }),
      el("p", { text: `Erased at ${new Date(r.erased_at).toLocaleString()}` }),
      el("ul", {}, (r.stores || []).map((s) => el("li", { "data-store": s.store }, describeStore(s)))),
      r.ledger_hash ? el("p", {}, "Ledger entry ", el("code", { text: r.ledger_hash })) : null,
      el("details", {}, el("summary", { text: "Receipt as JSON" }),
        el("pre", { text: JSON.stringify(r, null, 2) })));
    box.dataset.erased = "true";
    state.prevScores.clear();
    state.expectedEvents = 0;
    state.generation += 1;
    await refresh();
    setStatus(`Everything stored about ${r.customer_id} was erased.`);
  }

  /* One line of the erasure receipt, whatever fields the store reports. */
  function describeStore(s) {
    const parts = [];
    if ("removed" in s) parts.push(s.removed ? "removed" : "nothing stored");
    if (s.changelog_tombstone) parts.push("tombstone written to the changelog");
    if ("removed_events" in s) parts.push(`${s.removed_events} archived event${s.removed_events === 1 ? "" : "s"} deleted`);
    if (s.added) parts.push("id added (as a keyed hash), so replays never bring it back");
    if (s.replicated_to) parts.push(`replicated to topic ${s.replicated_to}`);
    const known = new Set(["store", "removed", "changelog_tombstone", "removed_events", "added", "replicated_to"]);
    for (const [k, v] of Object.entries(s)) if (!known.has(k)) parts.push(`${k}: ${JSON.stringify(v)}`);
    return `${s.store}: ${parts.join(", ") || "done"}`;
  }

  async function switchCustomer(id) {
    const cid = (id || "").trim() || guestId();
    state.customerId = cid;
    state.customer = null;
    state.score = null;
    state.prevScores.clear();
    state.generation += 1;
    state.expectedEvents = 0;
    $("customer-id").value = cid;
    $("current-customer").textContent = cid;
    $("erase-receipt").replaceChildren();
    delete $("erase-receipt").dataset.erased;
    $("consent-message").textContent = "";
    $("offers").dataset.customerId = cid;
    const arm = $("experiment-arm");  // the previous customer's arm stays until this one's answer
    if (arm) {
      arm.textContent = "";
      arm.dataset.arm = "";
    }
    renderCustomer();
    await refresh();
    setStatus(`Shopping as ${cid}.`);
  }

  // ---- start -----------------------------------------------------------------------------------

  function buildFlagSwitches() {
    const fieldset = $("consent-flags");
    for (const [flag, label, help] of FLAGS) {
      const box = el("input", {
        type: "checkbox", role: "switch", id: `flag-${flag}`, "data-flag": flag,
        "aria-describedby": `flag-${flag}-help`,
      });
      box.addEventListener("change", () => setFlag(flag, box.checked).catch(report));
      fieldset.append(el("div", { class: "flag" },
        box,
        el("label", { for: `flag-${flag}` }, el("span", { class: "fname", text: label }),
          el("span", { class: "fhelp", id: `flag-${flag}-help`, text: help }))));
    }
  }

  async function start() {
    if (!state.catalogueLoaded) await loadCatalogue();
    await switchCustomer(state.customerId || $("customer-id").value);
    document.body.dataset.ready = "true";
  }

  function init() {
    buildFlagSwitches();
    $("customer-id").value = guestId();
    $("customer-select").addEventListener("change", (e) => {
      switchCustomer(e.target.value).catch(report);
    });
    $("customer-form").addEventListener("submit", (e) => {
      e.preventDefault();
      switchCustomer($("customer-id").value).catch(report);
    });
    $("tcf-form").addEventListener("submit", (e) => applyTcf(e).catch(report));
    $("auth-form").addEventListener("submit", onAuthSubmit);
    $("erase").addEventListener("click", () => erase().catch(report));
    $("refresh").addEventListener("click", () => refresh().catch(report));
    $("k").addEventListener("change", () => loadScore().catch(report));
    document.body.dataset.settling = "false";
    start().catch(report);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();

// Experiments (issue 15): which arm served the customer, next to the model version. The kit's
// renderer is wrapped, so every answer the page shows also updates the arm.
(function showExperimentArm() {
  const kit = window.Offerstream;
  if (!kit || typeof kit.renderOffers !== "function") return;
  const render = kit.renderOffers;
  kit.renderOffers = function (container, answer, options) {
    const out = render(container, answer, options);
    const model = document.getElementById("model-version");
    let tag = document.getElementById("experiment-arm");
    if (!tag && model && model.parentNode) {
      tag = document.createElement("span");
      tag.id = "experiment-arm";
      tag.className = "model";
      model.parentNode.after(tag);
    }
    if (tag) {
      const exp = answer.experiment;
      tag.textContent = exp ? ` experiment ${exp.id}: arm ${exp.arm}` : "";
      tag.dataset.arm = exp ? exp.arm : "";
    }
    return out;
  };
})();
