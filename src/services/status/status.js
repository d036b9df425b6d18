// status.js - reactord's status page.  One script for three views chosen
// by the path: / (the overview), /operations/NAME and /builds/ID.  Data
// comes from /api/... as JSON; /events (server-sent events) says when
// something changed, and the view is fetched again (one fetch in flight,
// one more queued at most; no timers).  Every value is put in the page
// as text (textContent, text nodes): build parameters and command lines
// are user input, so nothing here ever parses data as HTML.
"use strict";

(function () {
  // ---- DOM helpers -------------------------------------------------------

  // el("td", {cls: "num", href: url}, child...): children are nodes or
  // values shown as text.
  function el(tag, attrs) {
    const e = document.createElement(tag);
    if (attrs) {
      if (attrs.cls) e.className = attrs.cls;
      if (attrs.href) e.setAttribute("href", attrs.href);
      if (attrs.title) e.setAttribute("title", attrs.title);
      if (attrs.id) e.id = attrs.id;
    }
    for (let i = 2; i < arguments.length; i++) add(e, arguments[i]);
    return e;
  }
  function add(e, c) {
    if (c === null || c === undefined) return;
    if (Array.isArray(c)) { c.forEach(function (x) { add(e, x); }); return; }
    if (c instanceof Node) e.appendChild(c);
    else e.appendChild(document.createTextNode(String(c)));
  }
  function link(href, text) { return el("a", { href: href }, text); }
  function badge(text, cls) { return el("span", { cls: "badge " + (cls || "st-" + text) }, text); }
  function table(heads, rows, empty) {
    if (!rows.length) return el("p", { cls: "muted" }, empty || "none");
    const t = el("table", null, el("thead", null, el("tr", null, heads.map(function (h) {
      return el("th", null, h);
    }))));
    const b = el("tbody");
    rows.forEach(function (r) { b.appendChild(el("tr", null, r)); });
    t.appendChild(b);
    return t;
  }
  function td(v, cls) { return el("td", cls ? { cls: cls } : null, v); }
  // Operation names hold slashes ("operations/UUID"): each part encoded.
  function opHref(name) { return "/operations/" + String(name).split("/").map(encodeURIComponent).join("/"); }
  function buildHref(id) { return "/builds/" + encodeURIComponent(id); }
  function logHref(digest, instance) {
    return "/api/logs/" + encodeURIComponent(String(digest).replace("/", "-")) +
      "?instance=" + encodeURIComponent(instance || "");
  }

  // ---- formatting --------------------------------------------------------

  let serverNowUs = 0;
  function ago(us) {
    if (!us) return "";
    let s = Math.max(0, Math.round((serverNowUs - us) / 1e6));
    if (s < 60) return s + "s ago";
    if (s < 3600) return Math.floor(s / 60) + "m ago";
    if (s < 86400) return Math.floor(s / 3600) + "h ago";
    return Math.floor(s / 86400) + "d ago";
  }
  function dur(s) {
    s = Math.round(s);
    if (s < 60) return s + "s";
    if (s < 3600) return Math.floor(s / 60) + "m " + (s % 60) + "s";
    return Math.floor(s / 3600) + "h " + Math.floor((s % 3600) / 60) + "m";
  }
  function when(us) { return us ? new Date(us / 1000).toISOString().replace("T", " ").replace("Z", "") : ""; }
  function tsAgo(us) { return us ? el("span", { title: when(us) }, ago(us)) : ""; }
  function shortName(s) {
    s = String(s || "");
    s = s.slice(s.lastIndexOf("/") + 1);
    return s.length > 14 ? s.slice(0, 13) + "…" : s;
  }
  function parseJSON(s) { try { return s ? JSON.parse(s) : null; } catch (e) { return null; } }
  function opOutcome(o) {
    if (o.stage !== "COMPLETED") return "";
    if (o.status !== 0) return "status " + o.status + (o.message ? ": " + o.message : "");
    if (o.exit_code !== null && o.exit_code !== undefined) return "exit " + o.exit_code + (o.cached ? " (cached)" : "");
    return o.cached ? "cached" : "ok";
  }
  function opFailed(o) {
    return o.stage === "COMPLETED" && (o.status !== 0 || (o.exit_code !== null && o.exit_code !== undefined && o.exit_code !== 0));
  }
  function builderOf(b) {
    const p = parseJSON(b.parameters_json);
    return p && typeof p === "object" ? (p.builder_name || p.builder || "") : "";
  }

  // ---- views -------------------------------------------------------------

  function setHeader(s) {
    serverNowUs = s.now_us || serverNowUs;
    const v = document.getElementById("version");
    v.textContent = s.version ? "version " + s.version : "";
    const h = document.getElementById("health");
    h.textContent = s.health;
    h.className = "badge " + (s.health === "SERVING" ? "ok" : "bad");
    document.getElementById("uptime").textContent = "up " + dur(s.uptime_s || 0);
  }

  function card(n, label) { return el("div", { cls: "card" }, el("div", { cls: "n" }, n), el("div", { cls: "l" }, label)); }

  function renderOverview(s) {
    setHeader(s);
    const out = [];
    const insts = s.instances || [];
    let queued = 0, bots = 0, busy = 0, running = 0;
    (s.instance_sums || []).forEach(function (i) { queued += i.queued; bots += i.bots; busy += i.bots_busy; });
    running = s.jobs_executing || 0;
    out.push(el("div", { cls: "cards", id: "cards" },
      card(queued, "queued jobs"), card(running, "executing"), card(bots, "bots"),
      card(busy, "bots busy"), card((s.buckets || []).length, "buckets"),
      card(s.master ? s.master_leases : "—", "master leases")));
    if (!s.redis_up) out.push(el("p", { cls: "error" }, "Redis is down: " + (s.redis_error || "")));
    if (s.summary_error) out.push(el("p", { cls: "error" }, "partial data: " + s.summary_error));

    // Queues.
    out.push(el("h2", null, "Queues"));
    const qrows = [];
    insts.forEach(function (i) {
      (i.queues || []).forEach(function (q) {
        qrows.push([td(i.name || "(default)"), td(q.platform || "(any)", "mono"), td(q.queued, "num"),
          td(tsAgo(q.oldest_us)), td(q.bots, "num"), td(q.bots_busy, "num")]);
      });
    });
    out.push(table(["instance", "platform", "queued", "oldest", "bots", "busy"], qrows, "no queued work"));

    // Operations.
    const ops = [];
    insts.forEach(function (i) { (i.ops || []).forEach(function (o) { o.instance = i.name; ops.push(o); }); });
    const opRow = function (o) {
      return [td(link(opHref(o.name), shortName(o.name)), "mono"), td(o.instance || "(default)"),
        td(badge(o.stage, o.stage === "COMPLETED" ? (opFailed(o) ? "st-COMPLETED-bad" : "st-COMPLETED-ok") : null)),
        td(tsAgo(o.created_us)), td(o.bot_id), td(opOutcome(o)), td(o.owner)];
    };
    const heads = ["operation", "instance", "stage", "age", "worker", "result", "owner"];
    out.push(el("h2", null, "Running operations"));
    out.push(el("div", { id: "ops-running" }, table(heads, ops.filter(function (o) { return o.stage !== "COMPLETED"; }).map(opRow), "nothing running")));
    out.push(el("h2", null, "Recent operations"));
    out.push(el("div", { id: "ops-recent" }, table(heads, ops.filter(function (o) { return o.stage === "COMPLETED"; }).map(opRow), "none yet")));

    // Bots.
    out.push(el("h2", null, "Bots"));
    const brows = [];
    insts.forEach(function (i) {
      (i.bots || []).forEach(function (b) {
        brows.push([td(b.bot_id, "mono"), td(i.name || "(default)"), td(badge(b.state, b.state === "OK" ? "ok" : "bad")),
          td(b.busy ? link(opHref((b.lease_ops || [])[0] || ""), "busy") : "idle"),
          td(b.props, "mono"), td(tsAgo(b.last_seen_us)), td(b.owner)]);
      });
    });
    out.push(table(["bot", "instance", "state", "lease", "properties", "last seen", "owner"], brows, "no bots connected"));

    // Buckets and builds.
    out.push(el("h2", null, "Buckets"));
    out.push(table(["bucket", "scheduled", "started", "completed"], (s.buckets || []).map(function (b) {
      return [td(b.name), td(b.scheduled, "num"), td(b.started, "num"), td(b.completed, "num")];
    }), "no buckets"));
    out.push(el("h3", null, "Recent builds"));
    if (s.builds_error) out.push(el("p", { cls: "error" }, s.builds_error));
    const builds = s.builds || [];
    out.push(el("div", { id: "builds" }, table(["build", "bucket", "builder", "status", "result", "created", "leased by", "parameters"],
      builds.map(function (b) {
        return [td(link(buildHref(b.id), b.id)), td(b.bucket), td(builderOf(b)), td(badge(b.status)),
          td(b.result !== "RESULT_UNSPECIFIED" ? badge(b.result) : ""), td(tsAgo(b.created_ts)),
          td(b.leasee), td(b.parameters_json, "mono")];
      }), "no builds")));

    // Master.
    out.push(el("h2", null, "Master"));
    if (s.master) {
      const leased = builds.filter(function (b) { return b.leasee === s.master && b.status !== "COMPLETED"; });
      out.push(el("p", null, "This reactord is master ", el("span", { cls: "mono" }, s.master), " holding " + s.master_leases + " lease(s)."));
      out.push(table(["build", "bucket", "status", "lease expires"], leased.map(function (b) {
        return [td(link(buildHref(b.id), b.id)), td(b.bucket), td(badge(b.status)), td(when(b.lease_expiration_ts))];
      }), "no leases held"));
    } else {
      out.push(el("p", { cls: "muted" }, "No master runs in this reactord (" + (s.builds_leased || 0) + " build(s) leased by others)."));
    }

    // Recent failures.
    out.push(el("h2", null, "Recent failures"));
    const frows = [];
    ops.filter(opFailed).forEach(function (o) {
      frows.push([td("operation"), td(link(opHref(o.name), shortName(o.name)), "mono"), td(tsAgo(o.completed_us || o.created_us)), td(opOutcome(o))]);
    });
    builds.filter(function (b) { return b.result === "FAILURE" || b.result === "CANCELED"; }).forEach(function (b) {
      frows.push([td("build"), td(link(buildHref(b.id), b.id)), td(tsAgo(b.completed_ts)),
        td(b.result + (b.failure_reason !== "FAILURE_REASON_UNSPECIFIED" ? " (" + b.failure_reason + ")" : ""))]);
    });
    out.push(el("div", { id: "failures" }, table(["kind", "what", "when", "outcome"], frows, "no recent failures")));
    return out;
  }

  function kv(pairs) {
    const d = el("dl");
    pairs.forEach(function (p) { if (p[1] !== null && p[1] !== undefined && p[1] !== "") { d.appendChild(el("dt", null, p[0])); d.appendChild(el("dd", null, p[1])); } });
    return d;
  }

  function logBlock(title, log, instance) {
    const out = [el("h3", null, title)];
    if (!log) return out;
    if (log.error) out.push(el("p", { cls: "error" }, log.error));
    out.push(el("pre", { cls: "log" }, log.text || ""));
    if (log.truncated && log.digest) out.push(el("p", null, "Truncated; ", link(logHref(log.digest, instance), "whole log (first 1 MiB)")));
    return out;
  }

  function renderOperation(o) {
    serverNowUs = Date.now() * 1000;
    const out = [el("h2", null, "Operation ", el("span", { cls: "mono" }, o.name))];
    out.push(kv([["stage", badge(o.stage)], ["instance", o.instance || "(default)"], ["status", o.status ? String(o.status) : "OK"],
      ["message", o.message], ["cached", o.cached ? "yes" : "no"], ["owner", o.owner], ["worker", o.bot || (o.result && o.result.worker)],
      ["attempts", o.attempts], ["action", el("span", { cls: "mono" }, o.action_digest)], ["job", el("span", { cls: "mono" }, o.job)]]));
    out.push(el("h2", null, "Command"));
    if (o.command) {
      out.push(el("pre", { cls: "mono", id: "argv" }, o.command.arguments.map(function (a) {
        return /^[A-Za-z0-9_./=:,+-]+$/.test(a) ? a : "'" + a.replace(/'/g, "'\\''") + "'";
      }).join(" ")));
      out.push(kv([["working directory", o.command.working_directory]]));
      out.push(el("h3", null, "Environment"));
      out.push(table(["name", "value"], o.command.environment.map(function (e) { return [td(e.name, "mono"), td(e.value, "mono")]; }), "empty"));
      out.push(el("h3", null, "Platform"));
      const plat = o.action ? o.action.platform : [];
      out.push(table(["property", "value"], plat.map(function (p) { return [td(p.name), td(p.value, "mono")]; }), "any"));
      out.push(el("h3", null, "Outputs"));
      out.push(o.command.output_paths.length ? el("p", { cls: "mono" }, o.command.output_paths.join(" "))
        : el("p", { cls: "muted" }, "none declared"));
    } else {
      out.push(el("p", { cls: "muted" }, "The Action or Command is not in this server's CAS."));
    }
    if (o.action) out.push(kv([["timeout", o.action.timeout_s ? o.action.timeout_s + "s" : "none"], ["do not cache", o.action.do_not_cache ? "yes" : "no"],
      ["input root", el("span", { cls: "mono" }, o.action.input_root_digest)]]));
    out.push(el("h2", null, "Timeline"));
    const t0 = o.timeline.length ? Math.min.apply(null, o.timeline.map(function (e) { return e.us; })) : 0;
    out.push(table(["event", "at", "+", "by"], o.timeline.slice().sort(function (a, b) { return a.us - b.us; }).map(function (e) {
      return [td(e.event), td(when(e.us), "mono"), td(((e.us - t0) / 1e6).toFixed(3) + "s", "num"), td(e.by)];
    }), "no times recorded"));
    out.push(el("h2", null, "Result"));
    if (o.result) {
      out.push(kv([["exit code", String(o.result.exit_code)], ["worker", o.result.worker]]));
      out.push(table(["output", "digest"], o.result.output_files.concat(o.result.output_directories).map(function (f) {
        return [td(f.path, "mono"), td(f.digest, "mono")];
      }), "no outputs"));
      add(out, logBlock("stdout", o.result.stdout, o.instance));
      add(out, logBlock("stderr", o.result.stderr, o.instance));
    } else {
      out.push(el("p", { cls: "muted" }, "No result yet."));
    }
    return out;
  }

  function renderBuild(r) {
    serverNowUs = Date.now() * 1000;
    const b = r.build;
    const out = [el("h2", null, "Build " + b.id)];
    out.push(kv([["bucket", b.bucket], ["builder", builderOf(b)], ["status", badge(b.status)],
      ["result", b.result !== "RESULT_UNSPECIFIED" ? badge(b.result) : ""],
      ["failure", b.failure_reason !== "FAILURE_REASON_UNSPECIFIED" ? b.failure_reason : ""],
      ["cancelation", b.cancelation_reason !== "CANCELATION_REASON_UNSPECIFIED" ? b.cancelation_reason : ""],
      ["created by", b.created_by], ["leased by", b.leasee], ["url", b.url], ["tags", b.tags.join(", ")],
      ["retry of", b.retry_of ? link(buildHref(b.retry_of), String(b.retry_of)) : ""]]));
    out.push(el("h2", null, "Parameters"));
    const p = parseJSON(b.parameters_json);
    out.push(el("pre", { cls: "mono", id: "params" }, p !== null ? JSON.stringify(p, null, 2) : b.parameters_json));
    const d = parseJSON(b.result_details_json);
    out.push(el("h2", null, "Steps"));
    let steps = d && Array.isArray(d.steps) ? d.steps : [];
    if (!steps.length && Array.isArray(r.live_steps)) {
      // A running build: the master's step records (strings from Redis).
      steps = r.live_steps.map(function (s) {
        return { name: s.name, status: s.status, exit_code: s.status === "RUNNING" ? "" : s.exit_code,
          duration_us: s.duration_us ? Number(s.duration_us) : null, cached: s.cached === "1",
          worker: s.worker, stdout_digest: s.stdout, stderr_digest: s.stderr, running: s.status === "RUNNING" };
      });
    }
    out.push(el("div", { id: "steps" }, table(["step", "status", "exit", "duration", "cached", "worker", "logs"], steps.map(function (s) {
      const logs = [];
      if (s.stdout_digest) logs.push(link(logHref(s.stdout_digest, r.log_instance), "stdout"), " ");
      if (s.stderr_digest) logs.push(link(logHref(s.stderr_digest, r.log_instance), "stderr"));
      if (s.running && r.current_op) logs.push(link(opHref(r.current_op), "operation"));
      return [td(s.name), td(badge(String(s.status))), td(s.exit_code, "num"),
        td(typeof s.duration_us === "number" ? (s.duration_us / 1e6).toFixed(1) + "s" : "", "num"),
        td(s.cached ? "yes" : ""), td(s.worker), td(logs)];
    }), b.status === "SCHEDULED" ? "not started" : "no steps recorded")));
    if (d && d.error) out.push(el("p", { cls: "error" }, d.error));
    out.push(el("h2", null, "Timeline"));
    const t = [["created", b.created_ts], ["started", b.started_ts], ["status changed", b.status_changed_ts],
      ["completed", b.completed_ts], ["updated", b.updated_ts]].filter(function (x) { return x[1]; });
    out.push(table(["event", "at", "when"], t.map(function (x) { return [td(x[0]), td(when(x[1]), "mono"), td(tsAgo(x[1]))]; })));
    return out;
  }

  // ---- fetching and live updates ------------------------------------------

  const path = location.pathname;
  let view;
  if (path.indexOf("/operations/") === 0) {
    view = { api: "/api/operations/" + path.slice(12), render: renderOperation, wants: function () { return true; } };
  } else if (path.indexOf("/builds/") === 0) {
    const id = decodeURIComponent(path.slice(8));
    view = { api: "/api/builds/" + path.slice(8), render: renderBuild,
      wants: function (ev, data) { return ev !== "build" || !data || String(data.id) === id; } };
  } else {
    view = { api: "/api/status", render: renderOverview, wants: function () { return true; } };
  }

  let inflight = false, again = false;
  function refresh() {
    if (inflight) { again = true; return; }
    inflight = true;
    fetch(view.api, { headers: { Accept: "application/json" }, cache: "no-store" })
      .then(function (r) {
        return r.json().then(function (j) { return { ok: r.ok, status: r.status, body: j }; });
      })
      .then(function (r) {
        const main = document.getElementById("main");
        if (!r.ok) {
          main.replaceChildren(el("p", { cls: "error" }, "HTTP " + r.status + ": " + ((r.body && r.body.error) || "")));
        } else {
          main.replaceChildren.apply(main, view.render(r.body));
        }
        document.body.setAttribute("data-updated", String(Date.now()));
      })
      .catch(function (e) {
        document.getElementById("main").replaceChildren(el("p", { cls: "error" }, "cannot load " + view.api + ": " + e));
      })
      .then(function () {
        inflight = false;
        if (again) { again = false; refresh(); }
      });
  }

  function follow() {
    const live = document.getElementById("live");
    const es = new EventSource("/events");
    es.addEventListener("open", function () { live.textContent = "live"; live.className = "badge ok"; });
    es.addEventListener("error", function () { live.textContent = "reconnecting"; live.className = "badge off"; });
    es.addEventListener("hello", function () { refresh(); });
    ["op", "build", "refresh"].forEach(function (ev) {
      es.addEventListener(ev, function (m) {
        if (view.wants(ev, parseJSON(m.data))) refresh();
      });
    });
  }

  if (view.api !== "/api/status")
    fetch("/api/status", { cache: "no-store" }).then(function (r) { return r.json(); }).then(setHeader, function () {});
  refresh();
  follow();
})();
