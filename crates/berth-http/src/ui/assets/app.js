// berth's web page. Plain JavaScript, no framework and no build step.
//
// Every view is one request to the browse API (/berth/v1/browse/...).
// Everything shown comes from users (names, tags, labels, annotations), so the
// DOM is only ever built with text nodes and setAttribute, never innerHTML.
"use strict";

const API = "/berth/v1/browse/";
const AUTH_KEY = "berth.basic";

// ---------------------------------------------------------------- helpers

/** Builds an element: attrs are set with setAttribute (or as listeners for
 * on* functions); children are nodes or strings (which become text). */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function formatSize(bytes) {
  if (bytes === null || bytes === undefined) return "";
  const units = ["B", "kB", "MB", "GB", "TB"];
  let v = bytes, i = 0;
  while (v >= 1000 && i < units.length - 1) { v /= 1000; i++; }
  return i === 0 ? `${v} B` : `${v.toFixed(v < 10 ? 2 : 1)} ${units[i]}`;
}

function sizeCell(bytes) {
  return h("td", { class: "num", "data-bytes": bytes, title: `${bytes} bytes` }, formatSize(bytes));
}

function formatTime(unixSeconds) {
  if (!unixSeconds) return "";
  return new Date(unixSeconds * 1000).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
}

function ago(unixSeconds) {
  if (!unixSeconds) return "–";
  const s = Math.max(0, Date.now() / 1000 - unixSeconds);
  if (s < 60) return "just now";
  const steps = [[60, "minute"], [3600, "hour"], [86400, "day"], [2592000, "month"], [31536000, "year"]];
  let [div, unit] = steps[0];
  for (const step of steps) if (s >= step[0]) [div, unit] = step;
  const n = Math.floor(s / div);
  return `${n} ${unit}${n === 1 ? "" : "s"} ago`;
}

function timeCell(unixSeconds) {
  return h("td", { "data-time": unixSeconds || 0 },
    unixSeconds ? h("time", { datetime: new Date(unixSeconds * 1000).toISOString(), title: formatTime(unixSeconds) }, ago(unixSeconds)) : "–");
}

function shortDigest(d) {
  const [alg, hex] = String(d).split(":");
  return hex ? `${alg}:${hex.slice(0, 12)}` : String(d);
}

function repoHref(name) { return "#/r/" + encodeURIComponent(name); }
function imageHref(name, ref) { return "#/i/" + encodeURIComponent(name) + "@" + encodeURIComponent(ref); }
function listHref(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v) q.set(k, v);
  const s = q.toString();
  return "#/" + (s ? "?" + s : "");
}

function say(message) {
  const s = document.getElementById("status");
  s.textContent = message;
  clearTimeout(say.timer);
  say.timer = setTimeout(() => { s.textContent = ""; }, 4000);
}

const collator = new Intl.Collator(undefined, { numeric: true, sensitivity: "base" });

// ---------------------------------------------------------------- API

function authHeaders() {
  const basic = sessionStorage.getItem(AUTH_KEY);
  return basic ? { Authorization: "Basic " + basic } : {};
}

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(path, options) {
  const resp = await fetch(path, { ...(options || {}), headers: { Accept: "application/json", ...authHeaders() } });
  if (!resp.ok) {
    let message = `${resp.status} ${resp.statusText}`;
    try {
      const body = await resp.json();
      if (body.errors && body.errors[0]) message = body.errors[0].message || body.errors[0].code;
    } catch (_) { /* not JSON */ }
    throw new ApiError(resp.status, message);
  }
  return resp.status === 202 || resp.status === 204 ? null : resp.json();
}

// ---------------------------------------------------------------- copy

/** Copies text to the clipboard; where the browser refuses (no permission,
 * not a secure context) selects it in its field so that Ctrl+C copies it. */
async function copy(text, button, field) {
  let copied = false;
  try {
    if (navigator.clipboard && window.isSecureContext) {
      // A browser may leave the promise pending while it asks for permission.
      const timeout = new Promise((_, reject) => setTimeout(() => reject(new Error("timeout")), 1500));
      await Promise.race([navigator.clipboard.writeText(text), timeout]);
      copied = true;
    }
  } catch (_) { /* fall back below */ }
  if (!copied && field) {
    field.focus();
    field.select();
    try { copied = document.execCommand("copy"); } catch (_) { copied = false; }
  }
  button.dataset.copied = text;
  button.textContent = copied ? "Copied" : "Selected";
  say(copied ? `Copied: ${text}` : `Press Ctrl+C to copy: ${text}`);
  setTimeout(() => { button.textContent = "Copy"; }, 2500);
}

function pullLine(label, command) {
  const field = h("input", { type: "text", readonly: true, value: command, "aria-label": label, class: "pull-command" });
  const button = h("button", { type: "button", class: "copy", "aria-label": `Copy: ${command}` }, "Copy");
  button.addEventListener("click", () => copy(command, button, field));
  return h("div", { class: "pull" }, field, button);
}

// ---------------------------------------------------------------- views

const main = () => document.getElementById("main");

/** Replaces the view, unless another view was asked for meanwhile. */
function show(token, title, ...nodes) {
  if (token !== routing) return;
  document.title = title ? `${title} · berth` : "berth";
  const m = main();
  m.replaceChildren(...nodes.flat(Infinity).filter(Boolean));
}

function showError(e) {
  const nodes = [h("h1", {}, "Cannot show this"), h("p", { class: "error", role: "alert" }, e.message)];
  if (e.status === 401) nodes.push(h("p", {}, h("a", { href: "#/login" }, "Sign in"), " to see it."));
  show(routing, "Error", nodes);
}

async function viewRepositories(params) {
  const mine = routing;
  const q = params.get("q") || "";
  const prefix = (params.get("prefix") || "").replace(/^\/+|\/+$/g, "");
  const offset = Math.max(0, parseInt(params.get("offset") || "0", 10) || 0);
  const n = 100;
  const query = new URLSearchParams({ q, prefix, offset: String(offset), n: String(n) });
  const page = await api(API + "repositories?" + query);

  const search = h("input", { type: "search", id: "search", value: q, placeholder: "Search repositories", "aria-label": "Search repositories", autocomplete: "off" });
  let timer;
  search.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(() => { location.hash = listHref({ q: search.value, prefix }); }, 250);
  });
  search.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter") { clearTimeout(timer); location.hash = listHref({ q: search.value, prefix }); }
  });

  // The namespace tree, one level at a time: where we are, and what is below.
  const crumbs = h("nav", { class: "crumbs", "aria-label": "Namespace" }, h("a", { href: listHref({ q }) }, "all"));
  let path = "";
  for (const part of prefix ? prefix.split("/") : []) {
    path = path ? `${path}/${part}` : part;
    crumbs.append(" / ", h("a", { href: listHref({ q, prefix: path }) }, part));
  }
  const namespaces = page.namespaces.length
    ? h("ul", { class: "ns", "aria-label": "Namespaces" }, page.namespaces.map((ns) =>
      h("li", {}, h("a", { href: listHref({ q, prefix: ns.name }), class: "namespace" },
        ns.name.slice(prefix ? prefix.length + 1 : 0) + "/", " ", h("span", { class: "muted" }, `(${ns.repositories})`)))))
    : null;

  const rows = page.repositories.map((r) => h("tr", { class: "repository" },
    h("td", {}, h("a", { href: repoHref(r.name), class: "repo-link" }, r.name)),
    h("td", { class: "num tag-count" }, r.tags),
    timeCell(r.last_push),
    sizeCell(r.size)));
  const table = rows.length
    ? h("div", { class: "table-wrap" }, h("table", { id: "repositories" },
      h("caption", { class: "muted" }, `${page.total} repositor${page.total === 1 ? "y" : "ies"}${q ? ` matching “${q}”` : ""}`),
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Repository"), h("th", { scope: "col", class: "num" }, "Tags"),
        h("th", { scope: "col" }, "Last push"), h("th", { scope: "col", class: "num" }, "Size"))),
      h("tbody", {}, rows)))
    : h("p", { class: "muted", id: "no-repositories" }, q ? `No repository matches “${q}”.` : "No repositories yet.");

  const pager = h("nav", { class: "toolbar", "aria-label": "Pages" });
  if (offset > 0) pager.append(h("a", { href: listHref({ q, prefix, offset: String(Math.max(0, offset - n)) }), rel: "prev" }, "← Previous"));
  if (page.total > 0) pager.append(h("span", { class: "muted" }, `${offset + 1}–${Math.min(offset + n, page.total)} of ${page.total}`));
  if (offset + n < page.total) pager.append(h("a", { href: listHref({ q, prefix, offset: String(offset + n) }), rel: "next" }, "Next →"));

  show(mine, prefix || "Repositories", h("h1", {}, prefix ? `${prefix}/` : "Repositories"),
    h("div", { class: "toolbar", role: "search" }, search), crumbs, namespaces, table, pager);
  if (viewRepositories.refocus) { search.focus(); search.setSelectionRange(q.length, q.length); }
}

function deleteControl(name, tag, onDeleted) {
  const cell = h("span", { class: "delete" });
  const start = h("button", { type: "button", class: "danger delete-tag", "aria-label": `Delete tag ${tag}` }, "Delete");
  start.addEventListener("click", () => {
    const confirm = h("button", { type: "button", class: "danger confirm-delete", "aria-label": `Confirm: delete tag ${tag}` }, `Delete ${tag}`);
    const cancel = h("button", { type: "button", class: "cancel" }, "Cancel");
    cancel.addEventListener("click", () => { cell.replaceChildren(start); start.focus(); });
    confirm.addEventListener("click", async () => {
      confirm.disabled = true;
      try {
        // The tag alone: other tags of the same manifest stay.
        await api(`/v2/${name}/manifests/${encodeURIComponent(tag)}`, { method: "DELETE" });
        say(`Deleted tag ${tag}`);
        onDeleted();
      } catch (e) {
        say(`Deleting ${tag} failed: ${e.message}`);
        confirm.disabled = false;
      }
    });
    cell.replaceChildren(confirm, " ", cancel);
    confirm.focus();
  });
  cell.append(start);
  return cell;
}

function platformPills(platforms) {
  return h("span", { class: "pills platforms" }, platforms.map((p) => h("span", {}, p)));
}

function referrerRows(name, referrers, columns) {
  return referrers.map((r) => h("tr", { class: "referrer" },
    h("td", { colspan: columns }, "↳ ", h("span", { class: "muted" }, r.artifactType || r.mediaType), " ",
      h("a", { href: imageHref(name, r.digest), class: "referrer-link" }, shortDigest(r.digest)),
      " ", h("span", { class: "muted" }, formatSize(r.size)))));
}

async function viewRepository(name) {
  const mine = routing;
  const repo = await api(API + "repository?" + new URLSearchParams({ name }));
  let sortKey = "name", descending = false;
  const tbody = h("tbody", {});
  const headers = {};

  function sortButton(key, label) {
    const b = h("button", { type: "button", class: `sort-${key}` }, label);
    b.addEventListener("click", () => {
      descending = sortKey === key ? !descending : key === "pushed";
      sortKey = key;
      render();
    });
    return b;
  }
  headers.name = h("th", { scope: "col" }, sortButton("name", "Tag"));
  headers.pushed = h("th", { scope: "col" }, sortButton("pushed", "Pushed"));

  function render() {
    const tags = repo.tags.slice();
    tags.sort((a, b) => sortKey === "name" ? collator.compare(a.name, b.name) : ((a.pushed || 0) - (b.pushed || 0)) || collator.compare(a.name, b.name));
    if (descending) tags.reverse();
    for (const k of Object.keys(headers)) headers[k].setAttribute("aria-sort", k === sortKey ? (descending ? "descending" : "ascending") : "none");
    const rows = [];
    for (const t of tags) {
      rows.push(h("tr", { class: "tag", "data-tag": t.name },
        h("td", {}, h("a", { href: imageHref(name, t.name), class: "tag-link" }, t.name)),
        h("td", { class: "hide-narrow" }, h("a", { href: imageHref(name, t.digest), class: "digest" }, h("code", {}, shortDigest(t.digest)))),
        sizeCell(t.size),
        h("td", {}, platformPills(t.platforms), t.kind === "index" ? h("span", { class: "muted" }, " (index)") : null),
        timeCell(t.pushed),
        h("td", {}, repo.may_delete ? deleteControl(name, t.name, () => { repo.tags = repo.tags.filter((x) => x.name !== t.name); render(); }) : null)));
      rows.push(...referrerRows(name, t.referrers, 6));
    }
    tbody.replaceChildren(...rows);
    count.textContent = `${repo.tags.length} tag${repo.tags.length === 1 ? "" : "s"}`;
  }
  const count = h("p", { class: "muted", id: "tag-count" });
  const table = h("div", { class: "table-wrap" }, h("table", { id: "tags" },
    h("thead", {}, h("tr", {}, headers.name, h("th", { scope: "col", class: "hide-narrow" }, "Digest"),
      h("th", { scope: "col", class: "num" }, "Size"), h("th", { scope: "col" }, "Platforms"), headers.pushed,
      h("th", { scope: "col" }, h("span", { class: "hide-narrow" }, "Actions")))),
    tbody));
  render();
  const crumbs = h("nav", { class: "crumbs", "aria-label": "Namespace" }, h("a", { href: "#/" }, "all"));
  const parts = name.split("/");
  let path = "";
  for (const part of parts.slice(0, -1)) {
    path = path ? `${path}/${part}` : part;
    crumbs.append(" / ", h("a", { href: listHref({ prefix: path }) }, part));
  }
  show(mine, name, crumbs, h("h1", {}, name), repo.read_only ? h("p", { class: "muted" }, "Served read-only.") : null, count,
    pullLine(`Pull command for ${name}`, `docker pull ${location.host}/${name}`), table);
}

function facts(pairs) {
  const dl = h("dl", { class: "facts" });
  for (const [k, v] of pairs) {
    if (v === null || v === undefined || v === "" || (Array.isArray(v) && v.length === 0)) continue;
    dl.append(h("dt", {}, k), h("dd", {}, v instanceof Node ? v : Array.isArray(v) ? h("code", {}, JSON.stringify(v)) : String(v)));
  }
  return dl;
}

function mapTable(id, caption, map) {
  const entries = Object.entries(map || {});
  if (!entries.length) return null;
  return [h("h2", {}, caption), h("div", { class: "table-wrap" }, h("table", { id },
    h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Key"), h("th", { scope: "col" }, "Value"))),
    h("tbody", {}, entries.map(([k, v]) => h("tr", {}, h("td", {}, h("code", {}, k)), h("td", {}, v))))))];
}

async function viewImage(name, reference) {
  const mine = routing;
  const img = await api(API + "image?" + new URLSearchParams({ name, reference }));
  const host = location.host;
  const pulls = [pullLine(`Pull ${name} by digest`, `docker pull ${host}/${name}@${img.digest}`)];
  for (const t of img.tags) pulls.push(pullLine(`Pull ${name} by tag ${t}`, `docker pull ${host}/${name}:${t}`));

  const tagList = h("span", { class: "pills" }, img.tags.map((t) => h("span", { class: "image-tag" }, t,
    img.may_delete ? [" ", deleteControl(name, t, () => { location.hash = repoHref(name); })] : null)));

  const out = [
    h("nav", { class: "crumbs", "aria-label": "Repository" }, h("a", { href: "#/" }, "all"), " / ", h("a", { href: repoHref(name) }, name)),
    h("h1", {}, `${name}@${shortDigest(img.digest)}`),
    facts([
      ["Digest", h("code", { id: "image-digest" }, img.digest)],
      ["Media type", img.media_type],
      ["Kind", img.kind + (img.artifact_type && img.kind === "image" && !/image\.config|container\.image/.test(img.artifact_type) ? ` (artifact: ${img.artifact_type})` : "")],
      ["Size", h("span", { id: "image-size", "data-bytes": img.size, title: `${img.size} bytes` }, formatSize(img.size))],
      ["Platforms", img.platforms.length ? platformPills(img.platforms) : null],
      ["Tags", img.tags.length ? tagList : null],
      ["Subject", img.subject ? h("a", { href: imageHref(name, img.subject.digest) }, shortDigest(img.subject.digest)) : null],
    ]),
    h("h2", {}, "Pull"), pulls,
  ];

  if (img.manifests.length) {
    out.push(h("h2", {}, "Platforms"), h("div", { class: "table-wrap" }, h("table", { id: "platforms" },
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Platform"), h("th", { scope: "col" }, "Digest"), h("th", { scope: "col", class: "num" }, "Size"))),
      h("tbody", {}, img.manifests.map((m) => h("tr", { class: "platform", "data-platform": m.platform || "" },
        h("td", {}, m.platform || "–", m.annotations && m.annotations["vnd.docker.reference.type"] ? h("span", { class: "muted" }, ` (${m.annotations["vnd.docker.reference.type"]})`) : null),
        h("td", {}, m.present ? h("a", { href: imageHref(name, m.digest) }, h("code", {}, shortDigest(m.digest))) : h("code", { title: "not in this repository" }, shortDigest(m.digest))),
        sizeCell(m.size)))))));
  }

  const c = img.config;
  if (c) {
    out.push(h("h2", {}, "Config"), facts([
      ["Created", c.created],
      ["Author", c.author],
      ["Platform", [c.os, c.architecture, c.variant].filter(Boolean).join("/")],
      ["User", c.user],
      ["Working dir", c.working_dir],
      ["Entrypoint", c.entrypoint],
      ["Cmd", c.cmd],
      ["Exposed ports", c.exposed_ports.join(", ")],
      ["Stop signal", c.stop_signal],
    ]));
    if (c.env.length) out.push(h("h2", {}, "Environment"), h("ul", { id: "env" }, c.env.map((e) => h("li", {}, h("code", {}, e)))));
    out.push(mapTable("labels", "Labels", c.labels));
  }
  out.push(mapTable("annotations", "Annotations", img.annotations));

  if (img.layers.length) {
    out.push(h("h2", {}, "Layers"), h("div", { class: "table-wrap" }, h("table", { id: "layers" },
      h("thead", {}, h("tr", {}, h("th", { scope: "col", class: "num" }, "#"), h("th", { scope: "col" }, "Digest"),
        h("th", { scope: "col", class: "num" }, "Size"), h("th", { scope: "col" }, "Created by"))),
      h("tbody", {}, img.layers.map((l, i) => h("tr", { class: "layer" }, h("td", { class: "num" }, i + 1),
        h("td", {}, h("code", { title: l.digest }, shortDigest(l.digest))), sizeCell(l.size),
        h("td", {}, l.created_by ? h("code", {}, l.created_by) : h("span", { class: "muted" }, l.media_type))))))));
  }
  if (img.history.length) {
    out.push(h("h2", {}, "History"), h("div", { class: "table-wrap" }, h("table", { id: "history" },
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Created"), h("th", { scope: "col" }, "Created by"), h("th", { scope: "col" }, "Layer"))),
      h("tbody", {}, img.history.map((e) => h("tr", {}, h("td", {}, e.created || ""),
        h("td", {}, h("code", {}, e.created_by || e.comment || "")), h("td", {}, e.empty_layer ? "empty" : "yes")))))));
  }
  if (img.referrers.length) {
    out.push(h("h2", {}, "Referrers"), h("ul", { id: "referrers" }, img.referrers.map((r) => h("li", {},
      h("span", { class: "muted" }, r.artifactType || r.mediaType), " ",
      h("a", { href: imageHref(name, r.digest) }, shortDigest(r.digest)), " ", formatSize(r.size)))));
  }
  let pretty = img.manifest;
  try { pretty = JSON.stringify(JSON.parse(img.manifest), null, 2); } catch (_) { /* shown as stored */ }
  out.push(h("h2", {}, "Manifest"), h("pre", { id: "manifest", tabindex: "0", "aria-label": "Manifest JSON" }, pretty));
  show(mine, `${name}@${shortDigest(img.digest)}`, out);
}

async function viewLogin() {
  const mine = routing;
  const session = await api(API + "session");
  const user = h("input", { type: "text", id: "user", name: "user", autocomplete: "username", required: true });
  const pass = h("input", { type: "password", id: "password", name: "password", autocomplete: "current-password", required: true });
  const message = h("p", { role: "alert", class: "error" });
  const form = h("form", { class: "login" },
    h("label", { for: "user" }, "User"), user, h("label", { for: "password" }, "Password"), pass,
    h("button", { type: "submit" }, "Sign in"), message);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const basic = btoa(unescape(encodeURIComponent(`${user.value}:${pass.value}`)));
    const old = sessionStorage.getItem(AUTH_KEY);
    sessionStorage.setItem(AUTH_KEY, basic);
    try {
      const s = await api(API + "session");
      if (!s.user) throw new ApiError(401, "not signed in");
      await updateSession();
      location.hash = "#/";
    } catch (e) {
      if (old) sessionStorage.setItem(AUTH_KEY, old); else sessionStorage.removeItem(AUTH_KEY);
      message.textContent = e.status === 401 ? "Wrong user name or password." : e.message;
    }
  });
  const nodes = [h("h1", {}, "Sign in")];
  if (!session.auth) nodes.push(h("p", { class: "muted" }, "This registry does not ask for credentials."));
  else if (session.user) {
    const out = h("button", { type: "button", id: "sign-out" }, "Sign out");
    out.addEventListener("click", async () => { sessionStorage.removeItem(AUTH_KEY); await updateSession(); route(); });
    nodes.push(h("p", {}, `Signed in as ${session.user}. `, out));
  } else nodes.push(form);
  show(mine, "Sign in", nodes);
  if (session.auth && !session.user) user.focus();
}

async function viewGc() {
  const mine = routing;
  const nodes = [h("h1", {}, "Garbage collection preview")];
  try {
    const r = await api("/berth/v1/gc");
    nodes.push(h("p", { class: "muted" }, "What a garbage collection pass would free now (a dry run: nothing was deleted)."),
      facts([
        ["Repositories", r.repositories], ["Blobs in use", r.blobs_marked], ["Blobs to delete", r.blobs_deleted],
        ["Bytes to free", `${formatSize(r.bytes_freed)} (${r.bytes_freed} bytes)`], ["Layer links to delete", r.layer_links_deleted],
        ["Manifests to delete", r.manifests_deleted], ["Stale uploads", r.uploads_purged], ["Spared (in use)", r.spared_in_use],
        ["Took", `${r.duration_ms} ms`],
      ]));
  } catch (e) {
    nodes.push(h("p", { class: "muted", id: "gc-unavailable" }, `The preview is not available here (${e.message}).`));
  }
  show(mine, "GC preview", nodes);
}

// ---------------------------------------------------------------- router

async function updateSession() {
  const link = document.getElementById("session-link");
  try {
    const s = await api(API + "session");
    link.hidden = !s.auth;
    link.textContent = s.user ? `Signed in: ${s.user}` : "Sign in";
  } catch (e) {
    if (e.status === 401) sessionStorage.removeItem(AUTH_KEY);
    link.textContent = "Sign in";
  }
}

let routing = 0;
async function route() {
  const token = ++routing;
  const hash = location.hash.replace(/^#/, "") || "/";
  const [path, query] = hash.split("?");
  const refocus = document.activeElement && document.activeElement.id === "search";
  try {
    if (path.startsWith("/r/")) await viewRepository(decodeURIComponent(path.slice(3)));
    else if (path.startsWith("/i/")) {
      const rest = path.slice(3);
      const at = rest.indexOf("@");
      await viewImage(decodeURIComponent(rest.slice(0, at)), decodeURIComponent(rest.slice(at + 1)));
    } else if (path === "/login") await viewLogin();
    else if (path === "/gc") await viewGc();
    else {
      viewRepositories.refocus = refocus;
      await viewRepositories(new URLSearchParams(query || ""));
    }
  } catch (e) {
    if (token === routing) showError(e);
  }
  if (token === routing) {
    document.body.dataset.view = path.split("/")[1] || "list";
    document.body.dataset.ready = String(token);
    if (!refocus && !main().contains(document.activeElement)) main().focus({ preventScroll: true });
  }
}

window.addEventListener("hashchange", route);
window.addEventListener("DOMContentLoaded", () => { updateSession(); route(); });
