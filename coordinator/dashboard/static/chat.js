// The chat panel: streams an answer from /v1/chat/completions (OpenAI SSE format)
// with fetch + ReadableStream, keeping the conversation for follow-ups.
import { el, latency } from "./format.js";
import { KEY as PAGE_KEY } from "./key.js";

const $ = (id) => document.getElementById(id);
const KEY_STORE = "parallax.apiKey";
const MAX_TOKENS = 256;

// Split an SSE byte stream into `data:` payloads; `buffer` keeps a partial event.
export function sseEvents(buffer, chunk) {
  const text = buffer + chunk;
  const parts = text.split(/\r?\n\r?\n/);
  const rest = parts.pop();
  const data = [];
  for (const part of parts) {
    const lines = part.split(/\r?\n/).filter((l) => l.startsWith("data:"));
    if (lines.length) data.push(lines.map((l) => l.slice(5).trimStart()).join("\n"));
  }
  return [data, rest];
}

export class Chat {
  constructor(modelName) {
    this.model = modelName;
    this.history = [];
    this.busy = false;
    this.log = $("chat-log");
    this.input = $("chat-input");
    this.key = $("chat-key");
    this.key.value = localStorage.getItem(KEY_STORE) || "";
    if (this.key.value) this.key.classList.remove("hidden");
    $("chat-form").addEventListener("submit", (e) => {
      e.preventDefault();
      this.send();
    });
    this.input.addEventListener("keydown", (e) => {
      if (e.key === "Enter" && !e.shiftKey) {
        e.preventDefault();
        this.send();
      }
    });
    $("chat-reset").addEventListener("click", () => this.reset());
  }

  reset() {
    if (this.busy) return;
    this.history = [];
    this.log.replaceChildren(el("div", { class: "chat-empty" }, "New conversation."));
  }

  bubble(role, text) {
    this.log.querySelector(".chat-empty")?.remove();
    const node = el("div", { class: `msg ${role}` }, text);
    this.log.append(node);
    this.log.scrollTop = this.log.scrollHeight;
    return node;
  }

  async send() {
    const text = this.input.value.trim();
    if (!text || this.busy || !this.model) return;
    this.busy = true;
    $("chat-send").disabled = true;
    this.input.value = "";
    this.bubble("user", text);
    const messages = [...this.history, { role: "user", content: text }];
    const out = this.bubble("assistant streaming", "");
    try {
      const answer = await this.stream(messages, out);
      this.history = [...messages, { role: "assistant", content: answer }];
    } catch (err) {
      // Keep what did arrive: a broken stream still shows how far the answer got.
      if (!out.textContent) out.remove();
      this.bubble("error", String(err.message || err));
    } finally {
      out.classList.remove("streaming");
      this.busy = false;
      $("chat-send").disabled = false;
      this.input.focus();
    }
  }

  async stream(messages, out) {
    const headers = { "Content-Type": "application/json" };
    const typed = this.key.value.trim();
    if (typed) localStorage.setItem(KEY_STORE, typed);
    // The key the page was opened with may be an API key: then the chat needs no other.
    const key = typed || PAGE_KEY;
    if (key) headers.Authorization = `Bearer ${key}`;
    const t0 = performance.now();
    const resp = await fetch("/v1/chat/completions", {
      method: "POST",
      headers,
      body: JSON.stringify({ model: this.model, messages, stream: true, max_tokens: MAX_TOKENS }),
    });
    if (resp.status === 401) {
      this.key.classList.remove("hidden");
      this.key.focus();
      throw new Error("This gateway needs an API key: enter it above and send again.");
    }
    if (!resp.ok) {
      const body = await resp.json().catch(() => ({}));
      throw new Error(body?.error?.message || `HTTP ${resp.status}`);
    }
    const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    let answer = "";
    let first = null;
    let tokens = 0;
    for (;;) {
      let chunk;
      try {
        chunk = await reader.read();
      } catch {
        throw new Error("The connection to the gateway broke mid-answer; see the coordinator's log.");
      }
      const { value, done } = chunk;
      if (done) break;
      let events;
      [events, buffer] = sseEvents(buffer, value);
      for (const data of events) {
        if (data === "[DONE]") continue;
        const msg = JSON.parse(data);
        if (msg.error) throw new Error(msg.error.message || "the cluster failed the request");
        const piece = msg.choices?.[0]?.delta?.content || "";
        if (piece) {
          if (first === null) first = performance.now();
          tokens += 1;
          answer += piece;
          out.textContent = answer;
          this.log.scrollTop = this.log.scrollHeight;
        }
      }
    }
    const total = (performance.now() - t0) / 1000;
    const ttft = first === null ? null : (first - t0) / 1000;
    out.append(el("span", { class: "meta" }, `first token ${latency(ttft)} · ${tokens} chunks in ${latency(total)}`));
    this.log.scrollTop = this.log.scrollHeight;
    return answer;
  }
}
