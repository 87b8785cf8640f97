// The campaign page of the video farm: plain JS, no libraries, works offline.
//
// /dashboard                     the tenant's campaigns (GET /v1/campaigns)
// /dashboard/campaigns/{id}      progress by locale x format, throughput, ETA, failures,
//                                thumbnails of finished variants that open the video,
//                                the campaign job's state, and Resume when it died
//
// Data comes from the Api as JSON; the browser sends the farm_token cookie with every
// request. Text from the server is only ever set as textContent, never parsed as HTML.
"use strict";

(() => {
  const body = document.body;
  const base = body.dataset.base || "";
  const campaign = body.dataset.campaign || "";
  const app = document.getElementById("app");
  const REFRESH_MS = 5000;
  const STATUSES = ["queued", "in_progress", "completed", "failed", "cancelled"];

  // ---- helpers -------------------------------------------------------------------------

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else if (key.startsWith("data-")) node.setAttribute(key, String(value));
      else node.setAttribute(key, String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  async function getJSON(path, method = "GET") {
    const response = await fetch(base + path, {
      method,
      credentials: "same-origin",
      headers: { Accept: "application/json" },
    });
    if (response.status === 401) {
      location.reload(); // the page itself answers 401 with the token form
      throw new Error("not signed in");
    }
    const data = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(data.message || `${response.status} ${response.statusText}`);
    return data;
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "unknown";
    if (seconds <= 0) return "done";
    const s = Math.round(seconds);
    const h = Math.floor(s / 3600);
    const m = Math.floor((s % 3600) / 60);
    if (h) return `${h} h ${m} min`;
    if (m) return `${m} min ${s % 60} s`;
    return `${s} s`;
  }

  function number(n, digits = 0) {
    return Number(n || 0).toLocaleString("en-US", { maximumFractionDigits: digits });
  }

  function bar(done, failed, total) {
    const pct = (n) => (total ? (100 * n) / total : 0).toFixed(1) + "%";
    return el(
      "div",
      { class: "bar", role: "img", "aria-label": `${done} of ${total} completed` },
      el("span", { class: "bar-done", style: `width:${pct(done)}` }),
      el("span", { class: "bar-failed", style: `width:${pct(failed)}` }),
    );
  }

  function showError(error) {
    app.replaceChildren(el("p", { class: "error", role: "alert", text: String(error.message || error) }));
  }

  // ---- /dashboard ----------------------------------------------------------------------

  async function listPage() {
    const rows = await getJSON("/v1/campaigns");
    if (!rows.length) {
      app.replaceChildren(
        el("h1", { text: "Campaigns" }),
        el("p", { class: "muted", text: "No campaigns yet. Submit one with `farm campaign submit` or POST /v1/campaigns." }),
      );
      return;
    }
    const table = el(
      "table",
      { class: "grid-table", id: "campaigns" },
      el("thead", {}, el("tr", {}, ["Campaign", "State", "Variants", ...STATUSES, "Progress"].map((h) => el("th", { text: h.replace("_", " ") })))),
      el(
        "tbody",
        {},
        rows.map((row) =>
          el(
            "tr",
            { "data-campaign": row.campaign_id },
            el("td", {}, el("a", { href: `${base}/dashboard/campaigns/${encodeURIComponent(row.campaign_id)}`, text: row.name }), el("div", { class: "muted mono", text: row.campaign_id })),
            el("td", { class: "state", "data-state": row.state || "", text: row.state || "" }),
            el("td", { class: "num", text: number(row.total) }),
            STATUSES.map((s) => el("td", { class: "num", "data-status": s, text: number(row[s]) })),
            el("td", {}, bar(row.completed || 0, row.failed || 0, row.total || 0)),
          ),
        ),
      ),
    );
    app.replaceChildren(el("h1", { text: "Campaigns" }), table);
  }

  // ---- /dashboard/campaigns/{id} ---------------------------------------------------------

  // Estimated beside measured GPU-seconds of the finished variants: the estimate prices
  // their work by measured renders of the model (farm.campaign.cost), and says so.
  function costCard(cost) {
    const c = cost || {};
    const known = c.estimated_s !== null && c.estimated_s !== undefined;
    return el(
      "div",
      { class: "card", id: "gpu-estimate", "data-estimate": known ? c.estimated_s : "", "data-total": known ? c.estimated_total_s : "", title: c.basis || "" },
      el("div", { class: "card-value", text: known ? number(c.estimated_s, 1) : "n/a" }),
      el("div", { class: "card-label", text: "GPU-seconds estimated" }),
      el("div", { class: "muted small", text: known ? `all variants: ${number(c.estimated_total_s, 1)}` : c.basis || "" }),
    );
  }

  function summary(progress, cost) {
    const s = progress.by_status;
    const stalled = progress.state === "stalled";
    // With no live job, variants the manifest still has in progress are not rendering.
    const label = (status) => (stalled && status === "in_progress" ? "interrupted" : status.replace("_", " "));
    const cards = STATUSES.map((status) =>
      el(
        "div",
        { class: `card status-${status}`, "data-status": status },
        el("div", { class: "card-value", "data-count": s[status] || 0, text: number(s[status]) }),
        el("div", { class: "card-label", text: label(status) }),
      ),
    );
    const perMin = (progress.throughput_per_s || 0) * 60;
    return el(
      "section",
      { class: "summary", id: "summary" },
      el("div", { class: "card", "data-status": "total" }, el("div", { class: "card-value", "data-count": progress.total, text: number(progress.total) }), el("div", { class: "card-label", text: "variants" })),
      cards,
      el("div", { class: "card", id: "throughput" }, el("div", { class: "card-value", text: number(perMin, 1) }), el("div", { class: "card-label", text: "variants / min" })),
      el("div", { class: "card", id: "eta" }, el("div", { class: "card-value", text: stalled ? "none: not running" : duration(progress.eta_s) }), el("div", { class: "card-label", text: "ETA" })),
      el("div", { class: "card", id: "gpu-seconds", "data-measured": progress.completed_gpu_s }, el("div", { class: "card-value", text: number(progress.completed_gpu_s, 1) }), el("div", { class: "card-label", text: "GPU-seconds measured" })),
      costCard(cost),
    );
  }

  function matrix(progress) {
    // groups: [{status, locale, format, count}] -> cell per (locale, format)
    const cells = new Map();
    const locales = new Set();
    const formats = new Set();
    for (const g of progress.groups) {
      locales.add(g.locale);
      formats.add(g.format);
      const key = `${g.locale}\u0000${g.format}`;
      const cell = cells.get(key) || { total: 0 };
      cell[g.status] = (cell[g.status] || 0) + g.count;
      cell.total += g.count;
      cells.set(key, cell);
    }
    const fmts = [...formats].sort();
    const rows = [...locales].sort().map((locale) =>
      el(
        "tr",
        { "data-locale": locale },
        el("th", { scope: "row", text: locale }),
        fmts.map((format) => {
          const c = cells.get(`${locale}\u0000${format}`) || { total: 0 };
          const others = STATUSES.filter((s) => s !== "completed" && c[s]).map((s) => `${c[s]} ${s.replace("_", " ")}`);
          const attrs = { class: "cell", "data-locale": locale, "data-format": format, "data-total": c.total };
          for (const s of STATUSES) attrs[`data-${s.replace("_", "-")}`] = c[s] || 0;
          return el(
            "td",
            attrs,
            el("div", { class: "cell-count", text: `${c.completed || 0} / ${c.total}` }),
            bar(c.completed || 0, c.failed || 0, c.total),
            el("div", { class: "muted small", text: others.join(" · ") }),
          );
        }),
      ),
    );
    return el(
      "section",
      {},
      el("h2", { text: "Progress by locale × format" }),
      el(
        "table",
        { class: "grid-table", id: "progress-matrix" },
        el("thead", {}, el("tr", {}, el("th", { text: "locale \\ format" }), fmts.map((f) => el("th", { text: f })))),
        el("tbody", {}, rows),
      ),
    );
  }

  function failures(variants) {
    const reasons = Object.entries(variants.failure_reasons).sort((a, b) => b[1] - a[1]);
    if (!variants.failed_total) {
      return el("section", { id: "failures" }, el("h2", { text: "Failures" }), el("p", { class: "muted", text: "No failures." }));
    }
    return el(
      "section",
      { id: "failures" },
      el("h2", { text: `Failures (${number(variants.failed_total)})` }),
      el("div", { class: "chips" }, reasons.map(([code, n]) => el("span", { class: "chip", "data-reason": code, "data-count": n, text: `${code}: ${n}` }))),
      el(
        "table",
        { class: "grid-table" },
        el("thead", {}, el("tr", {}, ["Variant", "Locale", "Format", "Attempt", "Reason", "Message"].map((h) => el("th", { text: h })))),
        el(
          "tbody",
          {},
          variants.failed.map((v) =>
            el(
              "tr",
              { "data-variant": v.variant_id },
              el("td", { class: "mono", text: v.variant_id }),
              el("td", { text: v.locale }),
              el("td", { text: v.format }),
              el("td", { class: "num", text: v.attempt }),
              el("td", { class: "reason", text: v.error_code || "" }),
              el("td", { class: "message", text: v.error_message || "" }),
            ),
          ),
        ),
      ),
    );
  }

  function mediaUrl(variantId, ext) {
    return `${base}/dashboard/media/${encodeURIComponent(campaign)}/${encodeURIComponent(variantId)}.${ext}`;
  }

  // The player takes the variant's own shape (its format's width x height), as large as
  // fits the window, so the video fills it: no black strip beside or under the picture.
  function fitPlayer(dialog, video, width, height) {
    const bar = dialog.querySelector(".player-bar");
    dialog.style.width = "auto";
    const room = { w: 0.92 * window.innerWidth, h: 0.86 * window.innerHeight - (bar ? bar.offsetHeight : 0) };
    const scale = Math.min(room.w / width, room.h / height);
    const w = Math.max(1, Math.floor(width * scale));
    const h = Math.max(1, Math.floor(height * scale));
    video.style.width = `${w}px`;
    video.style.height = `${h}px`;
    video.style.aspectRatio = `${width} / ${height}`;
    dialog.style.width = `${w}px`; // the bar wraps to the video's width
  }

  function openVideo(variant) {
    const dialog = document.getElementById("player");
    const video = document.getElementById("player-video");
    const url = mediaUrl(variant.variant_id, "mp4");
    document.getElementById("player-title").textContent = `${variant.product_name} · ${variant.locale} · ${variant.format}`;
    document.getElementById("player-link").href = url;
    video.src = url;
    video.dataset.variant = variant.variant_id;
    if (!dialog.open) dialog.showModal();
    fitPlayer(dialog, video, variant.width, variant.height);
    video.play().catch(() => {}); // autoplay may be refused; the controls are there
  }

  function thumbnails(variants) {
    const shown = variants.completed.length;
    const title = shown < variants.completed_total ? `Finished (latest ${shown} of ${number(variants.completed_total)})` : `Finished (${number(shown)})`;
    return el(
      "section",
      { id: "finished" },
      el("h2", { text: title }),
      shown
        ? el(
            "div",
            { class: "thumbs", id: "thumbnails" },
            variants.completed.map((v) =>
              el(
                "a",
                {
                  class: "thumb",
                  href: mediaUrl(v.variant_id, "mp4"),
                  "data-variant": v.variant_id,
                  title: `${v.product_name} · ${v.locale} · ${v.format}`,
                  onclick: (event) => {
                    if (event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey) return;
                    event.preventDefault();
                    openVideo(v);
                  },
                },
                el("img", { src: mediaUrl(v.variant_id, "jpg"), alt: `${v.locale} ${v.format} ${v.product_name}`, decoding: "async" }),
                el("span", { class: "thumb-product", text: v.product_name }),
                el("span", { class: "thumb-label", text: `${v.locale} · ${v.format}` }),
              ),
            ),
          )
        : el("p", { class: "muted", text: "Nothing finished yet." }),
    );
  }

  // The campaign job as the Jobs API reports it; a dead job with work left offers Resume.
  function jobPanel(progress) {
    const job = progress.job || { status: "unknown" };
    const left = progress.pending || 0;
    const line = job.id ? `Job ${job.id}: ${job.status}` : `Job: ${job.status}`;
    const children = [el("p", { id: "job-status", "data-job-status": job.status, text: line })];
    if (job.message && job.status !== "running") children.push(el("p", { class: "message", id: "job-message", text: job.message }));
    if (progress.state === "stalled") {
      children.unshift(el("h2", { text: `Stalled: ${number(left)} variants left and no job is rendering them` }));
    }
    if (progress.resumable) {
      const button = el("button", {
        type: "button",
        id: "resume",
        onclick: async () => {
          button.disabled = true;
          try {
            await getJSON(`/v1/campaigns/${encodeURIComponent(campaign)}/resume`, "POST");
            await campaignPage();
          } catch (error) {
            button.disabled = false;
            showError(error);
          }
        },
        text: "Resume",
      });
      children.push(button);
    }
    const alert = progress.state === "stalled";
    return el("section", { id: "job", class: alert ? "job stalled" : "job", role: alert ? "alert" : null, "data-state": progress.state }, children);
  }

  let lastThumbs = "";
  let refresh = 0;

  async function campaignPage() {
    const id = encodeURIComponent(campaign);
    const [progress, variants] = await Promise.all([
      getJSON(`/v1/campaigns/${id}`),
      getJSON(`/dashboard/api/campaigns/${id}/variants`),
    ]);
    document.title = `${variants.name} · video farm`;
    const live = ["queued", "running", "cancelling"].includes(progress.state);
    const heading = el(
      "div",
      { class: "heading" },
      el("h1", { text: variants.name }),
      el("span", { class: "muted mono", text: progress.id }),
      // The server's state: the manifest and the job together (a dead job is never "running").
      el("span", { class: `badge state-${progress.state}${live ? " live" : ""}`, id: "state", text: progress.state }),
    );
    // Keep the thumbnail grid (and its loaded images) while the set of variants is the same.
    const key = variants.completed.map((v) => v.variant_id).join(",");
    const grid = key === lastThumbs && document.getElementById("finished") ? document.getElementById("finished") : thumbnails(variants);
    lastThumbs = key;
    app.replaceChildren(heading, jobPanel(progress), summary(progress, variants.cost), matrix(progress), failures(variants), grid);
    app.dataset.loaded = "true";
    clearTimeout(refresh);
    // Stalled or unknown may change (a resume from the CLI, the Jobs API back): keep asking.
    if (!["finished", "cancelled"].includes(progress.state)) refresh = setTimeout(() => campaignPage().catch(showError), REFRESH_MS);
  }

  document.getElementById("sign-out").addEventListener("click", () => {
    document.cookie = "farm_token=; path=/; max-age=0; SameSite=Strict";
    location.reload();
  });
  document.getElementById("player").addEventListener("close", () => {
    document.getElementById("player-video").pause();
  });

  (campaign ? campaignPage() : listPage().then(() => (app.dataset.loaded = "true"))).catch(showError);
})();
