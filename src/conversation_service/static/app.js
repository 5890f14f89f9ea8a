// Conversation Service chat page: a client of the public API, in plain JavaScript (no build).
//
// REST (/api/v1) for conversations, messages, summary and sessions; the realtime WebSocket
// (/api/v1/ws) for everything that happens afterwards. Every logged event carries the
// conversation's event id; the page remembers the last one it saw and, after a reconnect,
// subscribes with `after: <that id>`, so the server replays exactly what was missed: no token is
// lost and none is shown twice. The first subscription asks from "0-0", which the service answers
// with a snapshot (the newest messages, streaming ones with their partial text) and then live
// events.
//
// Who spoke: each assistant or tool message names its agent (the message's `agent_id`), shown by
// name with an avatar whose colour is derived from the id, so one agent keeps one colour
// everywhere. A handoff (a `system` message with `metadata.type = "handoff"`) is drawn as a line
// between the agents' replies; the `conversation.agent_changed` event moves the header to the new
// agent at once and fetches the line if the page has not seen it.
//
// Branches: the page shows the conversation's active path. A pencil on a user message edits it
// (the next message sent follows the edited message's parent), a reply can be regenerated, and
// "‹ i/n ›" switches between siblings (PUT …/active-leaf). Whenever the shown path changes (a
// message that does not follow the newest one shown, or conversation.branch_changed) the page
// reloads the active path over REST.

const API = "/api/v1";
const TOKEN_KEY = "conversation-service.token";
const MAX_BACKOFF_MS = 8000;
const SILENCE_LIMIT_MS = 60000; // the server sends a heartbeat after 25 s of silence

const $ = (id) => document.getElementById(id);

const state = {
  token: null,
  user: null,
  tenant: null,
  conversations: [],
  current: null, // the selected conversation
  messages: new Map(), // id -> message (with .deltas: Map index -> text, .base: text before deltas)
  lastEventId: {}, // conversation id -> last event id seen
  socket: null,
  connection: "connecting",
  attempt: 0,
  reconnectTimer: null,
  silenceTimer: null,
  subscribedTo: null,
  awaitingReply: false,
  refreshTimers: [],
  editing: null, // the user message being edited: the next message sent becomes its sibling
};

// What the page observed, for people debugging and for the browser test.
const stats = {
  deltas: 0,
  duplicateDeltas: 0,
  completed: 0,
  streamedMismatches: 0,
  reconnects: 0,
  snapshots: 0,
  agentChanges: 0,
  pathReloads: 0,
};

// -- tokens and REST ---------------------------------------------------------------------------

async function obtainToken(force = false) {
  if (!force) {
    const saved = sessionStorage.getItem(TOKEN_KEY) || localStorage.getItem(TOKEN_KEY);
    if (saved) return saved;
  }
  const response = await fetch("/dev/token");
  if (response.ok) {
    const body = await response.json();
    sessionStorage.setItem(TOKEN_KEY, body.token);
    return body.token;
  }
  // Outside development there is no token endpoint: ask for a JWT (sub + tenant).
  const pasted = window.prompt("Paste a user token (JWT with sub and tenant):");
  if (!pasted) throw new Error("a user token is required");
  localStorage.setItem(TOKEN_KEY, pasted.trim());
  return pasted.trim();
}

function decodeClaims(token) {
  try {
    const payload = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(payload));
  } catch {
    return {};
  }
}

async function api(path, { method = "GET", body, headers = {}, retried = false } = {}) {
  const response = await fetch(API + path, {
    method,
    headers: {
      Authorization: `Bearer ${state.token}`,
      ...(body === undefined ? {} : { "Content-Type": "application/json" }),
      ...headers,
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.status === 401 && !retried) {
    sessionStorage.removeItem(TOKEN_KEY);
    localStorage.removeItem(TOKEN_KEY);
    state.token = await obtainToken(true);
    return api(path, { method, body, headers, retried: true });
  }
  if (response.status === 204) return null;
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    const error = new Error((data && (data.detail || data.title)) || `HTTP ${response.status}`);
    error.status = response.status;
    error.problem = data;
    throw error;
  }
  return data;
}

async function optional(path) {
  try {
    return await api(path);
  } catch (error) {
    if (error.status === 404) return null;
    throw error;
  }
}

// -- formatting --------------------------------------------------------------------------------

function timeOf(iso) {
  if (!iso) return "";
  return new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

function relative(iso) {
  if (!iso) return "";
  const seconds = Math.round((Date.now() - new Date(iso).getTime()) / 1000);
  if (seconds < 60) return "just now";
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ago`;
  return new Date(iso).toLocaleDateString();
}

function sentimentChip(sentiment, prefix = "") {
  const chip = document.createElement("span");
  const label = sentiment.label || "neutral";
  chip.className = `chip chip-${label}`;
  const score = Number(sentiment.score || 0);
  const signed = `${score >= 0 ? "+" : ""}${score.toFixed(2)}`;
  chip.textContent = `${prefix}${label} ${signed}`;
  chip.title = sentiment.model ? `sentiment by ${sentiment.model}` : "sentiment";
  chip.dataset.testid = "sentiment";
  return chip;
}

function toast(text, ms = 2500) {
  const node = $("toast");
  node.textContent = text;
  node.hidden = false;
  clearTimeout(node._timer);
  node._timer = setTimeout(() => (node.hidden = true), ms);
}

// -- agents ----------------------------------------------------------------------------------

// A display name: the label the page knows for the agent, else its id in words.
function agentName(agentId) {
  if (!agentId) return "Agent";
  const known = [...document.querySelectorAll("#agent-options option")].find((o) => o.value === agentId);
  if (known && known.textContent.trim()) return known.textContent.trim();
  const words = agentId.split(/[-_.\s]+/).filter(Boolean);
  return words.map((word) => word.charAt(0).toUpperCase() + word.slice(1)).join(" ") || agentId;
}

// A hue from the id (FNV-1a), so an agent has the same colour on every page and every visit.
function agentColour(agentId) {
  let hash = 2166136261;
  for (const char of agentId || "") {
    hash ^= char.codePointAt(0);
    hash = Math.imul(hash, 16777619);
  }
  return `hsl(${(hash >>> 0) % 360}, 62%, 44%)`;
}

function agentInitials(name) {
  const words = name.split(/\s+/).filter(Boolean);
  return words.slice(0, 2).map((word) => word.charAt(0).toUpperCase()).join("") || "AI";
}

function authorOf(message) {
  return message.agent_id || state.current?.agent_id || null;
}

function isHandoff(message) {
  return message.role === "system" && message.metadata && message.metadata.type === "handoff";
}

// -- sidebar -----------------------------------------------------------------------------------

async function loadConversations() {
  const page = await api("/conversations?limit=50");
  state.conversations = page.data || page.items || [];
  renderConversationList();
}

function renderConversationList() {
  const list = $("conversation-list");
  list.replaceChildren();
  if (!state.conversations.length) {
    const empty = document.createElement("div");
    empty.className = "list-empty";
    empty.textContent = "No conversations yet.";
    list.append(empty);
    return;
  }
  for (const conversation of state.conversations) {
    const item = document.createElement("button");
    item.className = "conversation-item";
    item.dataset.id = conversation.id;
    item.dataset.testid = "conversation-item";
    item.setAttribute("aria-current", String(state.current?.id === conversation.id));
    const title = document.createElement("div");
    title.className = "ci-title";
    title.textContent = conversation.title || "New conversation";
    const meta = document.createElement("div");
    meta.className = "ci-meta";
    const agent = document.createElement("span");
    agent.textContent = agentName(conversation.agent_id);
    agent.title = conversation.agent_id;
    const when = document.createElement("span");
    when.textContent = relative(conversation.last_message_at || conversation.created_at);
    meta.append(agent, when);
    item.append(title, meta);
    item.addEventListener("click", () => selectConversation(conversation.id));
    list.append(item);
  }
}

function upsertConversation(conversation) {
  const index = state.conversations.findIndex((c) => c.id === conversation.id);
  if (index >= 0) state.conversations[index] = { ...state.conversations[index], ...conversation };
  else state.conversations.unshift(conversation);
  if (state.current?.id === conversation.id) {
    state.current = { ...state.current, ...conversation };
    renderHeader();
  }
  renderConversationList();
}

// -- header, summary, session ------------------------------------------------------------------

function renderHeader() {
  const conversation = state.current;
  $("conversation-title").textContent = conversation ? conversation.title || "New conversation" : "Welcome";
  const agent = $("agent-chip");
  agent.hidden = !conversation;
  if (conversation) {
    agent.textContent = `Agent · ${agentName(conversation.agent_id)}`;
    agent.title = conversation.agent_id;
    agent.dataset.agentId = conversation.agent_id;
    agent.style.setProperty("--agent-colour", agentColour(conversation.agent_id));
  }
  const mood = $("conversation-sentiment");
  mood.hidden = !(conversation && conversation.sentiment);
  if (conversation && conversation.sentiment) {
    const chip = sentimentChip(conversation.sentiment, "Mood · ");
    mood.className = chip.className;
    mood.textContent = chip.textContent;
    mood.title = "Rolling sentiment of the conversation";
  }
}

function renderSession(session) {
  const chip = $("session-chip");
  if (!state.current) {
    chip.hidden = true;
    return;
  }
  chip.hidden = false;
  if (session && session.active) {
    chip.className = "chip chip-session-active";
    const via = session.channel ? ` · ${session.channel}` : "";
    chip.textContent = `Session active${via} · since ${timeOf(session.started_at)}`;
    chip.title = `Session ${session.id}${session.locale ? ` (${session.locale})` : ""}`;
  } else {
    chip.className = "chip";
    chip.textContent = "No active session";
    chip.title = "A session starts with your next activity";
  }
}

function renderSummary(summary) {
  const box = $("summary");
  if (!state.current) {
    box.hidden = true;
    return;
  }
  box.hidden = false;
  if (summary) {
    $("summary-meta").textContent = `v${summary.version} · covers messages 1–${summary.covers_until_seq}`;
    $("summary-text").textContent = summary.text;
  } else {
    $("summary-meta").textContent = "none yet";
    $("summary-text").textContent =
      "A summary appears once the conversation outgrows its memory window; the agent reads it on every turn.";
  }
}

async function refreshSidePanels() {
  const conversation = state.current;
  if (!conversation) return;
  const id = conversation.id;
  const [fresh, summary, session, page] = await Promise.all([
    api(`/conversations/${id}`),
    optional(`/conversations/${id}/summary`),
    optional(`/conversations/${id}/sessions/current`),
    api(`/conversations/${id}/messages?order=desc&limit=50`),
  ]);
  if (state.current?.id !== id) return;
  upsertConversation(fresh);
  renderSummary(summary);
  renderSession(session);
  for (const message of page.data || page.items || []) {
    const known = state.messages.get(message.id);
    if (!known) continue;
    // Sentiment and language arrive from background jobs after the message itself.
    if (JSON.stringify(known.sentiment) !== JSON.stringify(message.sentiment) || known.language !== message.language) {
      known.sentiment = message.sentiment;
      known.language = message.language;
      renderMessage(known);
    }
  }
}

function scheduleRefresh() {
  for (const timer of state.refreshTimers) clearTimeout(timer);
  state.refreshTimers = [800, 2500, 6000].map((ms) =>
    setTimeout(() => refreshSidePanels().catch(() => {}), ms),
  );
}

// -- messages ----------------------------------------------------------------------------------

function contentOf(message) {
  if (!message.deltas || !message.deltas.size) return message.content;
  const indexes = [...message.deltas.keys()].sort((a, b) => a - b);
  return message.base + indexes.map((i) => message.deltas.get(i)).join("");
}

function upsertMessage(incoming, { fromSnapshot = false } = {}) {
  const known = state.messages.get(incoming.id);
  // Events carry no reader's feedback: keep what this page learnt from its own reads.
  if (known && known.feedbackKnown) incoming = { ...incoming, feedback: known.feedback };
  // Only history pages and snapshots carry siblings; events keep the place already known.
  if (known && incoming.siblings == null) incoming = { ...incoming, siblings: known.siblings };
  const message = known ? Object.assign(known, incoming) : { ...incoming };
  if (incoming.status === "streaming") {
    if (!message.deltas) {
      message.deltas = new Map();
      message.base = incoming.content || "";
      message.fromSnapshot = fromSnapshot;
    }
  } else if (message.deltas) {
    // Final content: the streamed text must have been exactly this.
    if (message.deltas.size && !message.fromSnapshot && incoming.status === "completed") {
      stats.completed += 1;
      if (contentOf({ ...message, content: "" }) !== incoming.content) stats.streamedMismatches += 1;
    }
    delete message.deltas;
    delete message.base;
  }
  state.messages.set(message.id, message);
  renderMessage(message);
  if (message.role === "assistant") {
    setAwaitingReply(false);
  }
  return message;
}

function applyDelta({ message_id: id, index, text }) {
  const message = state.messages.get(id);
  if (!message || !message.deltas) return;
  if (message.deltas.has(index)) {
    stats.duplicateDeltas += 1;
    return;
  }
  stats.deltas += 1;
  message.deltas.set(index, text);
  renderMessage(message);
}

function renderHandoff(message) {
  const container = $("messages");
  $("empty-state").hidden = true;
  let node = container.querySelector(`[data-message-id="${message.id}"]`);
  if (!node) {
    node = document.createElement("div");
    node.className = "handoff";
    node.dataset.messageId = message.id;
    node.dataset.testid = "handoff";
    node.setAttribute("role", "separator");
    insertInOrder(container, node, message.seq);
  }
  node.dataset.seq = message.seq;
  const { from_agent_id: from, to_agent_id: to, reason } = message.metadata;
  node.dataset.from = from || "";
  node.dataset.to = to || "";
  const label = document.createElement("span");
  label.className = "handoff-label";
  const fromName = document.createElement("strong");
  fromName.textContent = agentName(from);
  fromName.style.color = agentColour(from);
  const toName = document.createElement("strong");
  toName.textContent = agentName(to);
  toName.style.color = agentColour(to);
  label.append(fromName, " handed the conversation to ", toName);
  if (reason) label.append(` · ${reason}`);
  label.title = `${timeOf(message.created_at)} · ${message.content}`;
  node.replaceChildren(label);
  stickToBottom();
}

function renderMessage(message) {
  if (isHandoff(message)) {
    renderHandoff(message);
    return;
  }
  const container = $("messages");
  $("empty-state").hidden = true;
  let node = container.querySelector(`[data-message-id="${message.id}"]`);
  if (!node) {
    node = document.createElement("article");
    node.dataset.messageId = message.id;
    node.dataset.testid = "message";
    const avatar = document.createElement("div");
    const wrap = document.createElement("div");
    wrap.className = "bubble-wrap";
    const bubble = document.createElement("div");
    bubble.className = "bubble";
    const meta = document.createElement("div");
    meta.className = "message-meta";
    wrap.append(bubble, meta);
    node.append(avatar, wrap);
    insertInOrder(container, node, message.seq);
  }
  node.className = `message message-${message.role}`;
  node.dataset.role = message.role;
  node.dataset.status = message.status;
  node.dataset.seq = message.seq;
  const avatar = node.firstChild;
  avatar.className = `avatar ${message.role === "user" ? "avatar-user" : "avatar-agent"}`;
  const author = message.role === "assistant" || message.role === "tool" ? authorOf(message) : null;
  if (author) {
    node.dataset.agentId = author;
    avatar.textContent = agentInitials(agentName(author));
    avatar.title = agentName(author);
    avatar.style.background = agentColour(author);
    avatar.dataset.testid = "agent-avatar";
  } else {
    avatar.textContent = message.role === "user" ? initial(state.user) : "AI";
  }
  const bubble = node.querySelector(".bubble");
  const text = contentOf(message);
  if (bubble.textContent !== text) bubble.textContent = text;
  const meta = node.querySelector(".message-meta");
  const parts = [];
  if (author) {
    const name = document.createElement("span");
    name.className = "agent-name";
    name.dataset.testid = "agent-name";
    name.textContent = agentName(author);
    name.style.color = agentColour(author);
    parts.push(name);
  }
  const when = document.createElement("span");
  when.textContent = timeOf(message.created_at);
  parts.push(when);
  if (message.status === "streaming") {
    const live = document.createElement("span");
    live.textContent = "streaming…";
    parts.push(live);
  } else if (message.status === "failed" || message.status === "incomplete") {
    const failed = document.createElement("span");
    failed.className = "chip chip-negative";
    failed.textContent = message.status;
    failed.title = (message.metadata && message.metadata.error) || "";
    parts.push(failed);
  }
  if (message.language) {
    const language = document.createElement("span");
    language.className = "chip";
    language.textContent = message.language.toUpperCase();
    language.title = "detected language";
    parts.push(language);
  }
  if (message.sentiment) parts.push(sentimentChip(message.sentiment));
  if (message.role === "assistant" && message.status === "completed") parts.push(thumbs(message));
  parts.push(...branchControls(message));
  meta.replaceChildren(...parts);
  stickToBottom();
}

// Thumbs up or down on a reply: pressing the pressed one again withdraws the feedback.
function thumbs(message) {
  const group = document.createElement("span");
  group.className = "thumbs";
  const rating = message.feedback ? message.feedback.rating : 0;
  for (const [value, label, testid] of [[1, "👍", "thumb-up"], [-1, "👎", "thumb-down"]]) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "thumb";
    button.textContent = label;
    button.dataset.testid = testid;
    button.title = value === 1 ? "Good reply" : "Bad reply";
    button.setAttribute("aria-pressed", String(rating === value));
    button.addEventListener("click", () => rate(message, rating === value ? 0 : value));
    group.append(button);
  }
  return group;
}

async function rate(message, value) {
  const path = `/conversations/${message.conversation_id}/messages/${message.id}/feedback`;
  try {
    message.feedback = value ? await api(path, { method: "PUT", body: { rating: value } }) : (await api(path, { method: "DELETE" }), null);
    message.feedbackKnown = true;
    renderMessage(message);
  } catch (error) {
    toast(error.message);
  }
}

function button(label, testid, title, onClick) {
  const node = document.createElement("button");
  node.type = "button";
  node.className = "message-action";
  node.textContent = label;
  node.title = title;
  node.dataset.testid = testid;
  node.addEventListener("click", () => onClick().catch((error) => toast(error.message)));
  return node;
}

function branchControls(message) {
  const controls = [];
  const siblings = message.siblings;
  if (siblings && siblings.count > 1) {
    const label = document.createElement("span");
    label.className = "siblings";
    label.dataset.testid = "siblings";
    label.textContent = `${siblings.index}/${siblings.count}`;
    controls.push(
      button("‹", "sibling-prev", "Previous version", () => switchSibling(message, -1)),
      label,
      button("›", "sibling-next", "Next version", () => switchSibling(message, +1)),
    );
  }
  if (message.role === "user") {
    controls.push(button("✎", "edit", "Edit and resend", async () => startEditing(message)));
  } else if (message.role === "assistant" && message.status !== "streaming") {
    controls.push(button("↻", "regenerate", "Regenerate this reply", () => regenerate(message)));
  }
  return controls;
}

// -- branches ----------------------------------------------------------------------------------

function shownLeaf() {
  let leaf = null;
  for (const message of state.messages.values()) if (!leaf || message.seq > leaf.seq) leaf = message;
  return leaf;
}

async function reloadPath() {
  const conversation = state.current;
  if (!conversation) return;
  const page = await api(`/conversations/${conversation.id}/messages?order=desc&limit=50`);
  if (state.current?.id !== conversation.id) return;
  stats.pathReloads += 1;
  clearMessages();
  // Like a snapshot: a streaming reply's earlier deltas are not in this copy.
  for (const message of (page.data || []).reverse()) upsertMessage(message, { fromSnapshot: true });
}

async function switchSibling(message, step) {
  const id = state.current.id;
  const list = await api(`/conversations/${id}/messages/${message.id}/siblings`);
  const target = list.data[message.siblings.index - 1 + step];
  if (!target) return;
  await api(`/conversations/${id}/active-leaf`, { method: "PUT", body: { message_id: target.id } });
  await reloadPath();
}

function startEditing(message) {
  state.editing = message;
  const input = $("composer-input");
  input.value = message.content;
  input.dataset.editing = "true";
  input.placeholder = "Edit your message (Esc cancels)";
  input.focus();
}

function stopEditing() {
  state.editing = null;
  const input = $("composer-input");
  delete input.dataset.editing;
  input.placeholder = "Write a message… (Enter to send, Shift+Enter for a new line)";
}

async function regenerate(message) {
  await api(`/conversations/${state.current.id}/messages/${message.id}/regenerate`, { method: "POST" });
  setAwaitingReply(true);
}

function insertInOrder(container, node, seq) {
  const after = [...container.querySelectorAll("[data-message-id]")].find((other) => Number(other.dataset.seq) > seq);
  container.insertBefore(node, after || null);
}

function initial(name) {
  return (name || "?").trim().charAt(0).toUpperCase() || "?";
}

function clearMessages() {
  state.messages.clear();
  const container = $("messages");
  for (const node of container.querySelectorAll("[data-message-id]")) node.remove();
  $("empty-state").hidden = Boolean(state.current);
}

let pinnedToBottom = true;
function stickToBottom() {
  const container = $("messages");
  if (pinnedToBottom) container.scrollTop = container.scrollHeight;
}

function setAwaitingReply(waiting) {
  state.awaitingReply = waiting;
  $("typing").hidden = !waiting;
  if (waiting && state.current) $("typing-label").textContent = `${agentName(state.current.agent_id)} is thinking…`;
}

// -- realtime ----------------------------------------------------------------------------------

function setConnection(kind, detail = "") {
  state.connection = kind;
  const pill = $("connection");
  pill.dataset.state = kind;
  const labels = { connecting: "Connecting…", live: "Live", reconnecting: "Reconnecting…", offline: "Offline" };
  pill.querySelector(".connection-label").textContent = labels[kind] + (detail ? ` ${detail}` : "");
  const banner = $("banner");
  if (kind === "reconnecting") {
    banner.dataset.kind = "warn";
    banner.textContent = `Connection lost — reconnecting${state.attempt > 1 ? ` (attempt ${state.attempt})` : ""}… Nothing you missed will be lost.`;
    banner.hidden = false;
  }
}

function connect() {
  clearTimeout(state.reconnectTimer);
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const socket = new WebSocket(`${scheme}://${location.host}${API}/ws?token=${encodeURIComponent(state.token)}`);
  state.socket = socket;
  state.subscribedTo = null;
  socket.addEventListener("open", () => {
    const recovering = state.attempt > 0;
    state.attempt = 0;
    setConnection("live");
    watchSilence();
    if (state.current) subscribe(state.current.id);
    if (recovering) {
      stats.reconnects += 1;
      const banner = $("banner");
      banner.dataset.kind = "ok";
      banner.textContent = "Reconnected — caught up from where you left off.";
      banner.hidden = false;
      setTimeout(() => {
        if (state.connection === "live") banner.hidden = true;
      }, 2500);
    }
  });
  socket.addEventListener("message", (event) => {
    watchSilence();
    let frame;
    try {
      frame = JSON.parse(event.data);
    } catch {
      return;
    }
    handleFrame(frame);
  });
  socket.addEventListener("close", async (event) => {
    if (state.socket !== socket) return;
    clearTimeout(state.silenceTimer);
    state.socket = null;
    if (event.code === 4401) {
      sessionStorage.removeItem(TOKEN_KEY);
      try {
        state.token = await obtainToken(true);
      } catch {
        setConnection("offline");
        return;
      }
    }
    scheduleReconnect();
  });
}

function scheduleReconnect() {
  state.attempt += 1;
  setConnection("reconnecting");
  const delay = Math.min(MAX_BACKOFF_MS, 400 * 2 ** (state.attempt - 1)) + Math.random() * 250;
  state.reconnectTimer = setTimeout(connect, delay);
}

function watchSilence() {
  clearTimeout(state.silenceTimer);
  state.silenceTimer = setTimeout(() => state.socket && state.socket.close(4000, "silent"), SILENCE_LIMIT_MS);
}

function send(frame) {
  if (state.socket && state.socket.readyState === WebSocket.OPEN) state.socket.send(JSON.stringify(frame));
}

function subscribe(conversationId) {
  if (state.subscribedTo && state.subscribedTo !== conversationId) {
    send({ type: "unsubscribe", conversation_id: state.subscribedTo });
  }
  state.subscribedTo = conversationId;
  // "0-0" on first view: older than anything in the log, so the service answers with a snapshot.
  send({ type: "subscribe", conversation_id: conversationId, after: state.lastEventId[conversationId] || "0-0" });
}

function handleFrame(frame) {
  const conversationId = frame.conversation_id;
  if (frame.type === "error") {
    const data = frame.data || {};
    if (data.code === "unavailable") {
      toast("Live updates are unavailable; retrying…");
      if (state.socket) state.socket.close(4000, "retry");
    } else if (data.code !== "not_subscribed") {
      toast(data.detail || "Something went wrong");
    }
    return;
  }
  if (!conversationId || conversationId !== state.current?.id) return;
  if (frame.id) state.lastEventId[conversationId] = frame.id;
  const data = frame.data || {};
  switch (frame.type) {
    case "snapshot":
      stats.snapshots += 1;
      clearMessages();
      upsertConversation(data.conversation);
      for (const message of data.messages) upsertMessage(message, { fromSnapshot: true });
      if (![...state.messages.values()].some((m) => m.status === "streaming")) setAwaitingReply(false);
      break;
    case "message.created": {
      const leaf = shownLeaf();
      const follows = !leaf || data.message.parent_id === leaf.id || state.messages.has(data.message.id);
      if (follows) upsertMessage(data.message);
      else reloadPath().catch(() => {});
      if (data.message.role === "user") setAwaitingReply(true);
      break;
    }
    case "conversation.branch_changed":
      reloadPath().catch(() => {});
      break;
    case "message.updated":
      upsertMessage(data.message);
      if (data.message.role === "user" && frame.type === "message.created") setAwaitingReply(true);
      break;
    case "message.delta":
      applyDelta(data);
      break;
    case "message.completed":
    case "message.failed":
      upsertMessage(data.message);
      scheduleRefresh();
      break;
    case "message.deleted": {
      state.messages.delete(data.message_id);
      const node = $("messages").querySelector(`[data-message-id="${data.message_id}"]`);
      if (node) node.remove();
      break;
    }
    case "conversation.updated":
      upsertConversation(data.conversation);
      break;
    case "message.feedback": {
      const message = state.messages.get(data.message_id);
      if (message) {
        message.feedback = data.feedback;
        message.feedbackKnown = true;
        renderMessage(message);
      }
      break;
    }
    case "conversation.agent_changed":
      stats.agentChanges += 1;
      upsertConversation({ id: conversationId, agent_id: data.to_agent_id, agents: data.agents });
      if (data.message_id && !state.messages.has(data.message_id)) {
        api(`/conversations/${conversationId}/messages/${data.message_id}`)
          .then((line) => {
            if (state.current?.id === conversationId) upsertMessage(line);
          })
          .catch(() => {});
      }
      break;
    case "session.started":
    case "session.ended":
      renderSession(data.session);
      break;
    case "summary.updated":
      renderSummary(data.summary || data);
      break;
    case "sentiment.updated":
      scheduleRefresh();
      break;
    default:
      break;
  }
}

// -- actions -----------------------------------------------------------------------------------

async function selectConversation(id) {
  const conversation = state.conversations.find((c) => c.id === id) || (await api(`/conversations/${id}`));
  state.current = conversation;
  history.replaceState(null, "", `#${id}`);
  clearMessages();
  stopEditing();
  renderHeader();
  renderConversationList();
  renderSummary(null);
  renderSession(null);
  setAwaitingReply(false);
  $("composer-input").disabled = false;
  $("send").disabled = false;
  $("composer-input").focus();
  pinnedToBottom = true;
  // A fresh view starts from a snapshot; only a reconnect resumes from the last event id.
  delete state.lastEventId[id];
  subscribe(id);
  refreshSidePanels().catch(() => {});
  loadFeedback(id).catch(() => {});
}

// The live stream carries no reader's feedback; the history pages do (the newest 100 replies).
async function loadFeedback(id) {
  const page = await api(`/conversations/${id}/messages?order=desc&limit=100`);
  if (state.current?.id !== id) return;
  for (const item of page.data) {
    const message = state.messages.get(item.id);
    if (message && !message.feedbackKnown) {
      message.feedback = item.feedback;
      message.feedbackKnown = true;
      renderMessage(message);
    }
  }
}

function openNewDialog() {
  $("new-error").hidden = true;
  $("new-title").value = "";
  $("new-dialog").showModal();
  $("new-agent").select();
}

async function createConversation(agentId, title) {
  const body = {
    agent_id: agentId,
    // A small window, so that the summary appears after a few turns of the demo.
    memory_policy: { strategy: "summary_buffer", max_tokens: 300 },
    metadata: { source: "chat-page" },
  };
  if (title) body.title = title;
  const conversation = await api("/conversations", { method: "POST", body });
  upsertConversation(conversation);
  await selectConversation(conversation.id);
  return conversation;
}

async function sendMessage(text) {
  const conversation = state.current;
  if (!conversation || !text.trim()) return;
  const body = {
    content: text,
    metadata: { channel: "web", client: "chat-page", locale: navigator.language || "en" },
  };
  const edited = state.editing;
  if (edited) body.parent_id = edited.parent_id; // null for the first message: a new root
  const message = await api(`/conversations/${conversation.id}/messages`, {
    method: "POST",
    headers: { "Idempotency-Key": crypto.randomUUID() },
    body,
  });
  if (edited) {
    stopEditing();
    await reloadPath();
  } else {
    upsertMessage(message);
  }
  setAwaitingReply(true);
  if (!conversation.title) {
    const title = text.trim().replace(/\s+/g, " ").slice(0, 60);
    api(`/conversations/${conversation.id}`, { method: "PATCH", body: { title } })
      .then(upsertConversation)
      .catch(() => {});
  }
  upsertConversation({ id: conversation.id, last_message_at: message.created_at });
  scheduleRefresh();
}

function wireUi() {
  $("new-conversation").addEventListener("click", openNewDialog);
  $("empty-new").addEventListener("click", openNewDialog);
  $("new-form").addEventListener("submit", async (event) => {
    if (event.submitter && event.submitter.value === "cancel") return;
    event.preventDefault();
    const submit = $("new-submit");
    submit.disabled = true;
    try {
      await createConversation($("new-agent").value.trim(), $("new-title").value.trim());
      $("new-dialog").close();
    } catch (error) {
      const box = $("new-error");
      box.textContent = error.message;
      box.hidden = false;
    } finally {
      submit.disabled = false;
    }
  });
  const input = $("composer-input");
  input.addEventListener("input", () => {
    input.style.height = "auto";
    input.style.height = `${Math.min(input.scrollHeight, 160)}px`;
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && state.editing) {
      stopEditing();
      input.value = "";
      return;
    }
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $("composer").requestSubmit();
    }
  });
  $("composer").addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = input.value;
    if (!text.trim()) return;
    input.value = "";
    input.style.height = "auto";
    try {
      await sendMessage(text);
    } catch (error) {
      input.value = text;
      toast(error.message);
    }
  });
  $("messages").addEventListener("scroll", () => {
    const container = $("messages");
    pinnedToBottom = container.scrollHeight - container.scrollTop - container.clientHeight < 60;
  });
  $("connection").addEventListener("click", () => dropConnection());
  window.addEventListener("online", () => {
    if (!state.socket) connect();
  });
}

// Drop the socket as a network failure would; the page reconnects and resumes.
function dropConnection() {
  if (state.socket) state.socket.close(4000, "dropped by the user");
}

async function start() {
  wireUi();
  state.token = await obtainToken();
  const claims = decodeClaims(state.token);
  state.user = claims.sub || "you";
  state.tenant = claims.tenant || "";
  $("user-name").textContent = state.user;
  $("user-tenant").textContent = state.tenant ? `tenant ${state.tenant}` : "";
  $("user-avatar").textContent = initial(state.user);
  await loadConversations();
  connect();
  const wanted = location.hash.slice(1);
  if (wanted && state.conversations.some((c) => c.id === wanted)) await selectConversation(wanted);
}

const ready = start().catch((error) => {
  setConnection("offline");
  toast(`Could not start: ${error.message}`, 10000);
  throw error;
});

window.chatApp = {
  state,
  stats,
  ready,
  dropConnection,
  createConversation,
  sendMessage,
  selectConversation,
  reloadPath,
};
