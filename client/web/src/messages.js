// The message list: one DOM node per message id, updated in place, and a view that follows
// new messages unless the reader has scrolled up.

import { renderInto } from './markdown.js';
import { highlightMentions } from './mentions.js';

const FOLLOW_SLACK_PX = 48;

const timeFormat = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });

function formatTime(ms) {
  const date = new Date(typeof ms === 'number' ? ms : Date.now());
  return timeFormat.format(date);
}

function el(tag, className, testid) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (testid) node.dataset.testid = testid;
  return node;
}

export class MessageList {
  /** `container` scrolls; `empty` is the placeholder; `jump` is the "New messages" button. */
  constructor(container, empty, jump) {
    this.container = container;
    this.empty = empty;
    this.jump = jump;
    this.byId = new Map(); // id -> {msg, node, body, dirty}
    this.me = null;
    this.myName = null; // mentions of this nickname mark a message `mentions-me`
    this.mentionNames = () => []; // the names highlighted as @mentions
    this.following = true;
    this.pending = new Set();
    this.frame = 0;
    container.addEventListener('scroll', () => this.onScroll(), { passive: true });
    jump.addEventListener('click', () => this.scrollToBottom());
  }

  setMe(userId) {
    this.me = userId;
    for (const entry of this.byId.values()) this.applyOwnership(entry);
  }

  /** Who can be mentioned (`names()`, read at each render) and which nickname is yours. */
  setMentions(names, myName) {
    this.mentionNames = names;
    this.myName = myName;
  }

  /** Whether the message with this id mentions you (and is not your own). */
  mentionsMe(id) {
    return this.byId.get(id)?.node.classList.contains('mentions-me') ?? false;
  }

  has(id) {
    return this.byId.has(id);
  }

  get(id) {
    return this.byId.get(id)?.msg;
  }

  /** Add a message, or update the existing one with that id (content, incomplete). */
  upsert(msg, { after } = {}) {
    const existing = this.byId.get(msg.id);
    if (existing) {
      existing.msg = { ...existing.msg, ...msg };
      this.refresh(existing);
      return existing.node;
    }
    const entry = this.create(msg);
    this.insert(entry.node, after);
    return entry.node;
  }

  /** Merge a history list: keep what is shown, add what is missing where it belongs. */
  mergeHistory(list) {
    let anchor = null;
    for (const msg of list) {
      if (!msg || typeof msg.id !== 'string') continue;
      anchor = this.upsert(msg, { after: anchor ?? 'start' });
    }
  }

  /** Append text to a streaming message. */
  appendDelta(id, delta) {
    const entry = this.byId.get(id);
    if (!entry) return false;
    entry.msg.content = (entry.msg.content ?? '') + delta;
    this.scheduleRender(entry);
    return true;
  }

  /** A locally sent message got a different id from the server. */
  rename(oldId, newId) {
    const entry = this.byId.get(oldId);
    if (!entry || oldId === newId || this.byId.has(newId)) return;
    this.byId.delete(oldId);
    entry.msg.id = newId;
    entry.node.dataset.id = newId;
    this.byId.set(newId, entry);
  }

  remove(id) {
    const entry = this.byId.get(id);
    if (!entry) return;
    entry.node.remove();
    this.byId.delete(id);
    this.updateEmpty();
  }

  /** A centered line that is not a message (joins and leaves). */
  addEvent(text, kind) {
    const node = el('div', `event event-${kind}`, 'presence-line');
    node.textContent = `${text} · ${formatTime(Date.now())}`;
    this.insert(node);
  }

  // ----- rendering -----
  create(msg) {
    const role = ['user', 'assistant', 'system'].includes(msg.role) ? msg.role : 'user';
    const node = el('article', `msg msg-${role}`, 'message');
    node.dataset.id = msg.id;
    node.dataset.role = role;
    const bubble = el('div', 'bubble');
    const meta = el('div', 'meta');
    const name = el('span', 'name', 'message-name');
    const time = el('time', 'time', 'message-time');
    meta.append(name, time);
    const body = el('div', 'content', 'message-content');
    bubble.append(meta, body);
    node.append(bubble);
    const entry = { msg: { ...msg }, node, body, name, time, rendered: null };
    this.byId.set(msg.id, entry);
    this.refresh(entry);
    return entry;
  }

  refresh(entry) {
    const { msg, node, name, time } = entry;
    name.textContent = msg.role === 'system' ? 'system' : msg.name ?? '';
    time.textContent = formatTime(msg.created_at);
    if (typeof msg.created_at === 'number') time.dateTime = new Date(msg.created_at).toISOString();
    node.classList.toggle('streaming', Boolean(msg.streaming));
    this.applyOwnership(entry);
    this.applyIncomplete(entry);
    this.render(entry);
  }

  applyOwnership(entry) {
    const own = entry.msg.role === 'user' && this.me !== null && entry.msg.user_id === this.me;
    entry.node.classList.toggle('msg-own', own);
    entry.node.dataset.own = String(own);
  }

  applyIncomplete(entry) {
    let marker = entry.node.querySelector('.incomplete');
    if (entry.msg.incomplete && !marker) {
      marker = el('span', 'incomplete', 'incomplete-marker');
      marker.textContent = '(incomplete)';
      marker.title = 'This answer was cut short.';
      entry.node.querySelector('.meta').append(marker);
    } else if (!entry.msg.incomplete && marker) {
      marker.remove();
    }
  }

  render(entry) {
    const text = entry.msg.content ?? '';
    if (entry.rendered === text) return;
    entry.rendered = text;
    if (entry.msg.role === 'system') {
      entry.body.textContent = text;
    } else {
      renderInto(entry.body, text);
      const me = highlightMentions(entry.body, this.mentionNames(), this.myName);
      const own = entry.msg.role === 'user' && entry.msg.user_id === this.me;
      entry.node.classList.toggle('mentions-me', me && !own);
    }
    this.afterChange();
  }

  /** Coalesce deltas: render once per animation frame (at once when the tab is hidden). */
  scheduleRender(entry) {
    this.pending.add(entry);
    if (document.visibilityState !== 'visible') {
      this.flush();
      return;
    }
    if (!this.frame) this.frame = requestAnimationFrame(() => this.flush());
  }

  flush() {
    if (this.frame) cancelAnimationFrame(this.frame);
    this.frame = 0;
    for (const entry of this.pending) this.render(entry);
    this.pending.clear();
  }

  setStreaming(id, streaming) {
    const entry = this.byId.get(id);
    if (!entry) return;
    entry.msg.streaming = streaming;
    entry.node.classList.toggle('streaming', streaming);
  }

  insert(node, after) {
    if (after === 'start') {
      this.container.insertBefore(node, this.empty.nextSibling);
    } else if (after instanceof Node && after.parentNode === this.container) {
      after.after(node);
    } else {
      this.container.append(node);
    }
    this.updateEmpty();
    this.afterChange();
  }

  updateEmpty() {
    this.empty.hidden = this.byId.size > 0 || this.container.querySelector('.event') !== null;
  }

  // ----- following the bottom -----
  atBottom() {
    const c = this.container;
    return c.scrollHeight - c.scrollTop - c.clientHeight <= FOLLOW_SLACK_PX;
  }

  onScroll() {
    this.following = this.atBottom();
    if (this.following) this.jump.hidden = true;
  }

  afterChange() {
    if (this.following) {
      this.container.scrollTop = this.container.scrollHeight;
    } else {
      this.jump.hidden = false;
    }
  }

  scrollToBottom() {
    this.following = true;
    this.jump.hidden = true;
    this.container.scrollTop = this.container.scrollHeight;
  }
}
