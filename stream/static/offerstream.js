/* offerstream browser kit: consent, events and offers from a shop's page. No dependencies.
 *
 *   <script src="https://OFFERSTREAM-HOST/sdk/offerstream.js"></script>
 *   <script>
 *     const offers = Offerstream.init({ token: "TOKEN FROM YOUR BACKEND", container: "#offers" });
 *     offers.track("product_view", { item_id: "123", category: "PRODUCE", price: 0.59 });
 *   </script>
 *
 * What it does:
 * - consent: reads the TC string through the CMP (__tcfapi('addEventListener', 2, cb)), Global
 *   Privacy Control (navigator.globalPrivacyControl) and Google Consent Mode (gtag's
 *   `consent default|update` entries in window.dataLayer), and sends a `consent` event each time
 *   they change. Every score call also carries them, so a revocation or GPC counts in the very
 *   next answer, before the stream has applied the event.
 * - events: track() queues page and product events and sends them in batches, at the latest when
 *   the page is hidden (pagehide / visibilitychange). They go with fetch(..., {keepalive: true}),
 *   not navigator.sendBeacon: a beacon cannot carry the X-Offerstream-Token header the server
 *   requires, and keepalive fetch survives the page's unload just the same (it is limited to
 *   64 KiB in flight, so batches are cut below that).
 * - offers: refresh() asks POST /v1/score and renders the offers into the container the shop
 *   names, each with a "Not interested" button (an offer_dismiss event).
 *
 * The page never holds an API key and never names a customer: the token (minted by the shop's
 * backend, see README "On your web page") says who the customer is; the server fills it in.
 */
(function (global) {
  "use strict";

  var GCM_FIELDS = ["ad_storage", "analytics_storage", "ad_personalization", "ad_user_data"];
  var KEEPALIVE_BYTES = 60000;
  var MAX_BATCH = 50;
  var TOKEN_HEADER = "X-Offerstream-Token";
  var current = global.document && global.document.currentScript;
  var SCRIPT_ORIGIN = current && current.src ? new URL(current.src, global.location.href).origin : global.location.origin;

  var counter = 0;
  function newId(prefix) {
    if (global.crypto && typeof global.crypto.randomUUID === "function") return prefix + "-" + global.crypto.randomUUID();
    counter += 1;
    return prefix + "-" + Date.now().toString(36) + "-" + counter + "-" + Math.random().toString(36).slice(2, 10);
  }

  /* The two calls a page may make. `token` is a string or a function returning one (refreshed
   * tokens); `headers` (an object, or a function of the path) adds headers: the demo page's keys,
   * on a server of its own. A shop's page has no key and sets none. */
  function createClient(options) {
    var url = (options.url || SCRIPT_ORIGIN).replace(/\/+$/, "");
    function headers(path) {
      var h = { "Content-Type": "application/json" };
      var token = typeof options.token === "function" ? options.token() : options.token;
      if (token) h[TOKEN_HEADER] = token;
      var extra = typeof options.headers === "function" ? options.headers(path) : options.headers;
      if (extra) Object.keys(extra).forEach(function (k) { if (extra[k]) h[k] = extra[k]; });
      return h;
    }
    function post(path, body, keepalive) {
      return global.fetch(url + path, {
        method: "POST", headers: headers(path), body: JSON.stringify(body), keepalive: Boolean(keepalive),
        credentials: "omit", cache: "no-store",
      }).then(function (response) {
        return response.text().then(function (text) {
          var data = null;
          if (text) { try { data = JSON.parse(text); } catch (e) { data = { error: "not_json", detail: text.slice(0, 200) }; } }
          return { status: response.status, body: data };
        });
      });
    }
    return {
      url: url,
      score: function (body) { return post("/v1/score", body, false); },
      send: function (events, keepalive) { return post("/v1/events", events, keepalive); },
    };
  }

  /* Google Consent Mode state from gtag's `consent default|update` entries (null: none). */
  function readGcm(dataLayer) {
    if (!dataLayer || typeof dataLayer.length !== "number") return null;
    var state = null;
    for (var i = 0; i < dataLayer.length; i++) {
      var entry = dataLayer[i];
      if (!entry || entry[0] !== "consent" || (entry[1] !== "default" && entry[1] !== "update")) continue;
      var fields = entry[2] || {};
      GCM_FIELDS.forEach(function (f) {
        if (fields[f] === "granted" || fields[f] === "denied") { state = state || {}; state[f] = fields[f]; }
      });
    }
    return state;
  }

  function readGpc() {
    return Boolean(global.navigator && global.navigator.globalPrivacyControl === true);
  }

  function el(tag, attrs, text) {
    var node = global.document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined) node.textContent = text;
    return node;
  }

  /* Render a score answer into `container` (an element). `options.label(offer)` gives the text
   * of an offer (default: its offer_id); `options.item(offer, answer)` replaces the whole item;
   * `onDismiss(offer_id, decision_id)` is called by the "Not interested" button. */
  function renderOffers(container, answer, options) {
    options = options || {};
    container.dataset.decisionId = answer.decision_id;
    container.dataset.personalized = String(answer.personalized);
    container.dataset.offerstreamCustomer = answer.customer_id;
    var items = answer.offers.map(function (offer) {
      if (options.item) return options.item(offer, answer);
      var li = el("li", { "class": "offerstream-offer", "data-offer-id": offer.offer_id, "data-rank": String(offer.rank) });
      li.append(el("span", { "class": "offerstream-title" }, options.label ? options.label(offer) : offer.offer_id));
      var reasons = el("ul", { "class": "offerstream-reasons" });
      (offer.reasons || []).forEach(function (r) { reasons.append(el("li", {}, r)); });
      li.append(reasons);
      var button = el("button", { type: "button", "class": "offerstream-dismiss", "data-action": "dismiss",
        "data-offer-id": offer.offer_id }, options.dismissText || "Not interested");
      button.addEventListener("click", function () {
        if (options.onDismiss) options.onDismiss(offer.offer_id, answer.decision_id);
      });
      li.append(button);
      return li;
    });
    var list = container.tagName === "UL" || container.tagName === "OL" ? container : null;
    if (!list) {
      list = container.querySelector("ul.offerstream-offers") || el("ul", { "class": "offerstream-offers" });
      if (!list.parentNode) container.append(list);
    }
    list.replaceChildren.apply(list, items);
    return list;
  }

  function init(options) {
    options = options || {};
    var client = createClient(options);
    var container = typeof options.container === "string" ? global.document.querySelector(options.container) : options.container;
    var signals = { tcf: null, gcm: readGcm(global.dataLayer), gpc: readGpc(), flags: null };
    var queue = [];
    var lastConsent = "";
    var inflight = Promise.resolve();

    function event(type, fields) {
      var e = { event_id: newId("os"), type: type, ts: Date.now() };
      Object.keys(fields || {}).forEach(function (k) { e[k] = fields[k]; });
      return e;
    }

    function consentBody(withFlags) {
      var body = {};
      if (signals.tcf) body.tcf = signals.tcf;
      if (signals.gcm) body.gcm = signals.gcm;
      if (signals.gpc) body.gpc = true;
      if (withFlags && signals.flags) body.flags = signals.flags;
      return body;
    }

    /* Send the consent signals as a `consent` event if they changed; then new offers. */
    function consentChanged() {
      signals.gpc = readGpc();
      signals.gcm = readGcm(global.dataLayer);
      var body = consentBody(true);
      var key = JSON.stringify(body);
      if (key === "{}" || key === lastConsent) return inflight;
      lastConsent = key;
      inflight = client.send([event("consent", { consent: body })]).then(function (res) {
        if (res.status !== 202 && options.onError) options.onError(res);
        if (options.onConsent) options.onConsent(body, res);
        return container ? refresh() : res;
      });
      return inflight;
    }

    function setConsent(flags) {
      signals.flags = Object.assign({}, signals.flags || {}, flags);
      return consentChanged();
    }

    function track(type, fields) {
      queue.push(event(type, fields));
      if (queue.length >= (options.maxBatch || MAX_BATCH)) flush(false);
    }

    /* Send the queued events; at page hide with keepalive, in chunks under the keepalive limit. */
    function flush(keepalive) {
      var sends = [];
      while (queue.length) {
        var batch = [];
        var size = 2;
        while (queue.length && batch.length < MAX_BATCH) {
          var n = JSON.stringify(queue[0]).length + 1;
          if (batch.length && size + n > KEEPALIVE_BYTES) break;
          batch.push(queue.shift());
          size += n;
        }
        sends.push(client.send(batch, keepalive));
      }
      return Promise.all(sends);
    }

    function refresh() {
      if (!container) return Promise.resolve(null);
      var body = { k: options.k || 3, context: options.context || { channel: "web" } };
      var consent = consentBody(false);  // restrictive hints: count at once, never widen
      if (Object.keys(consent).length) body.consent = consent;
      return client.score(body).then(function (res) {
        if (res.status !== 200) {
          container.dataset.state = "error";
          if (options.onError) options.onError(res);
          return res;
        }
        container.dataset.state = "ready";
        renderOffers(container, res.body, { label: options.label, item: options.item, onDismiss: dismiss });
        if (options.impressions !== false) {
          res.body.offers.forEach(function (o) {
            track("offer_impression", { offer_id: o.offer_id, decision_id: res.body.decision_id, position: o.rank });
          });
        }
        if (options.onOffers) options.onOffers(res.body);
        return res;
      });
    }

    function dismiss(offerId, decisionId) {
      var node = container && container.querySelector('[data-offer-id="' + CSS.escape(offerId) + '"]');
      if (node) node.remove();
      return client.send([event("offer_dismiss", { offer_id: offerId, decision_id: decisionId })]);
    }

    global.addEventListener("pagehide", function () { flush(true); });
    global.document.addEventListener("visibilitychange", function () {
      if (global.document.visibilityState === "hidden") flush(true);
    });
    if (Array.isArray(global.dataLayer)) {  // gtag('consent', 'update', ...) pushes to dataLayer
      var dl = global.dataLayer;
      var push = dl.push;
      dl.push = function () {
        var out = push.apply(dl, arguments);
        var entry = arguments[0];
        if (entry && entry[0] === "consent") consentChanged();
        return out;
      };
    }
    var ready;
    if (typeof global.__tcfapi === "function") {
      ready = new Promise(function (resolve) {
        var first = true;
        global.__tcfapi("addEventListener", 2, function (tcData, success) {
          if (!success || !tcData) return;
          if (tcData.gdprApplies === false) signals.tcf = null;
          else if (tcData.eventStatus === "tcloaded" || tcData.eventStatus === "useractioncomplete") signals.tcf = tcData.tcString || null;
          else return;  // cmpuishown: the customer has not chosen yet
          var done = consentChanged();
          if (first) { first = false; resolve(done); }
        });
      });
    } else {
      ready = consentChanged();
    }
    var api = {
      client: client, track: track, flush: flush, refresh: refresh, setConsent: setConsent,
      consentChanged: consentChanged, dismiss: dismiss, signals: signals,
    };
    api.ready = Promise.resolve(ready).then(function () { return lastConsent ? null : refresh(); }).then(function () { return api; });
    return api;
  }

  global.Offerstream = { init: init, createClient: createClient, renderOffers: renderOffers, readGcm: readGcm, version: "1" };
})(window);
