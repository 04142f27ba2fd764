// Orchestra console: swaps in the server-rendered fragments sent over SSE, posts actions, and
// streams a chat in the playground. No framework, no build step.
(function () {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const live = $("live");
  const result = $("action-result");

  // ---- live feed ------------------------------------------------------------------------------
  function openDetails() {
    const open = new Set();
    document.querySelectorAll("#model-rows details[open]").forEach((d) => open.add(d.dataset.key));
    return open;
  }

  window.consoleUpdates = 0;  // how many live updates the page applied

  function apply(update) {
    window.consoleUpdates += 1;
    const open = openDetails();
    $("model-rows").innerHTML = update.html.models;
    $("swaps").innerHTML = update.html.swaps;
    $("notice").textContent = update.notice || "";
    document.querySelectorAll("#model-rows details").forEach((d) => {
      if (open.has(d.dataset.key)) d.open = true;
    });
  }

  function connect() {
    const source = new EventSource("/console/events");
    source.addEventListener("open", () => {
      live.textContent = "live";
      live.classList.remove("off");
    });
    source.addEventListener("update", (event) => apply(JSON.parse(event.data)));
    source.addEventListener("error", () => {
      live.textContent = "reconnecting…";
      live.classList.add("off");
    });
  }

  // ---- actions --------------------------------------------------------------------------------
  async function act(button) {
    const model = button.dataset.model;
    const action = button.dataset.action;
    button.disabled = true;
    result.textContent = `${action} ${model}…`;
    try {
      const path = `/console/api/models/${encodeURIComponent(model)}/${action}`;
      const reply = await fetch(path, { method: "POST" });
      const body = await reply.json();
      result.textContent = reply.ok
        ? `${action} ${model}: ${body.state}`
        : `${action} ${model} failed: ${(body.error || {}).message || reply.status}`;
    } catch (err) {
      result.textContent = `${action} ${model} failed: ${err}`;
    } finally {
      button.disabled = false;
    }
  }

  $("model-rows").addEventListener("click", (event) => {
    const button = event.target.closest("button[data-action]");
    if (button) act(button);
  });

  // ---- playground -----------------------------------------------------------------------------
  let controller = null;

  function handleEvent(raw, out) {
    // one SSE event: `data:` lines (comments, starting with ':', are progress notes)
    let data = "";
    for (const line of raw.split("\n")) {
      if (line.startsWith(":")) {
        $("pg-status").textContent = line.slice(1).trim();
      } else if (line.startsWith("data:")) {
        data += line.slice(5).trim();
      }
    }
    if (!data || data === "[DONE]") return data === "[DONE]";
    const chunk = JSON.parse(data);
    if (chunk.error) {
      out.textContent += `\n[error] ${chunk.error.message}`;
      return true;
    }
    for (const choice of chunk.choices || []) {
      const delta = choice.delta || {};
      if (delta.content) out.textContent += delta.content;
    }
    if (chunk.usage) {
      $("pg-status").textContent = `${chunk.usage.completion_tokens} tokens`;
    }
    return false;
  }

  async function send(event) {
    event.preventDefault();
    const out = $("pg-output");
    out.textContent = "";
    delete out.dataset.done;
    $("pg-status").textContent = "waiting…";
    $("pg-send").disabled = true;
    $("pg-stop").disabled = false;
    controller = new AbortController();
    const headers = { "content-type": "application/json" };
    const key = $("pg-key").value.trim();
    if (key) headers.authorization = `Bearer ${key}`;
    const body = {
      model: $("pg-model").value,
      messages: [{ role: "user", content: $("pg-prompt").value }],
      max_tokens: Number($("pg-max").value) || 128,
      stream: true,
      stream_options: { include_usage: true },
    };
    try {
      const reply = await fetch("/v1/chat/completions", {
        method: "POST", headers, body: JSON.stringify(body), signal: controller.signal,
      });
      if (!reply.ok) {
        const error = await reply.json().catch(() => ({}));
        out.textContent = `[HTTP ${reply.status}] ${(error.error || {}).message || ""}`;
        $("pg-status").textContent = "";
        return;
      }
      const reader = reply.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      let done = false;
      while (!done) {
        const { value, done: ended } = await reader.read();
        if (ended) break;
        buffer += decoder.decode(value, { stream: true }).replace(/\r\n/g, "\n");
        let cut;
        while (!done && (cut = buffer.indexOf("\n\n")) >= 0) {
          done = handleEvent(buffer.slice(0, cut), out);
          buffer = buffer.slice(cut + 2);
        }
      }
      out.dataset.done = "1";
      if ($("pg-status").textContent === "waiting…") $("pg-status").textContent = "done";
    } catch (err) {
      if (err.name !== "AbortError") out.textContent += `\n[error] ${err}`;
    } finally {
      $("pg-send").disabled = false;
      $("pg-stop").disabled = true;
      controller = null;
    }
  }

  // ---- usage (GET /console/api/usage: totals per key and model, last 24 h) --------------------
  const USAGE_REFRESH_MS = 10000;

  function cell(text) {
    const td = document.createElement("td");
    td.textContent = text;
    return td;
  }

  async function refreshUsage() {
    try {
      const reply = await fetch("/console/api/usage");
      if (!reply.ok) return;
      const rows = await reply.json();
      const body = $("usage-rows");
      body.replaceChildren();
      for (const row of rows) {
        const tr = document.createElement("tr");
        for (const name of ["key", "model", "requests", "errors", "prompt_tokens",
                            "completion_tokens", "cached_tokens"]) {
          tr.appendChild(cell(String(row[name])));
        }
        tr.appendChild(cell(Number(row.cost).toFixed(4)));
        body.appendChild(tr);
      }
    } catch (err) {
      // the next refresh tries again
    }
  }

  $("playground").addEventListener("submit", send);
  refreshUsage();
  setInterval(refreshUsage, USAGE_REFRESH_MS);
  $("pg-stop").addEventListener("click", () => controller && controller.abort());
  connect();
})();
