// Rooms: which room this page is in (from the address, `/r/<name>`), the room's name in the
// header and tab title, and the rooms panel (the open rooms, open one by name, share this one).
// Room names only ever reach the page through textContent, attributes and input values.

export const ROOM_RULE = '1–40 characters: lower-case letters, digits, - and _';
const ROOM_RE = /^[a-z0-9_-]{1,40}$/;
const ROOM_PATH = /^\/r\/([^/]*)\/?$/;
const COPIED_MS = 2000;

/** The server's room-name rule: trimmed and lower-cased, then 1–40 of a–z 0–9 - _; or null. */
export function normaliseRoom(raw) {
  const name = String(raw ?? '').trim().toLowerCase();
  return ROOM_RE.test(name) ? name : null;
}

/**
 * The room the address asks for: `{room: null}` at `/` (the server's default room),
 * `{room: "design"}` at `/r/Design`, `{room: null, invalid: "<what was given>"}` when the
 * name in the address breaks the rule.
 */
export function roomFromPath(pathname) {
  const match = ROOM_PATH.exec(pathname);
  if (!match) return { room: null, invalid: null };
  let raw = match[1];
  try {
    raw = decodeURIComponent(raw);
  } catch {
    /* a malformed escape: judged as typed */
  }
  const room = normaliseRoom(raw);
  return room ? { room, invalid: null } : { room: null, invalid: raw };
}

export function roomPath(name) {
  return `/r/${encodeURIComponent(name)}`;
}

export function roomUrl(name) {
  return `${location.origin}${roomPath(name)}`;
}

/** "3 people", "1 person". */
export function peopleLabel(count) {
  const n = Number.isFinite(count) ? count : 0;
  return `${n} ${n === 1 ? 'person' : 'people'}`;
}

/** Show the room's name in the header and the tab title ("design · Roundtable"). */
export function showRoomName(label, name) {
  label.textContent = name ?? '';
  label.hidden = !name;
  document.title = name ? `${name} · Roundtable` : 'Roundtable';
}

/** Copy text to the clipboard: the async Clipboard API, else select + execCommand. */
export async function copyText(text, field) {
  if (navigator.clipboard?.writeText) {
    try {
      await navigator.clipboard.writeText(text);
      return true;
    } catch {
      /* permission refused or not focused: fall back */
    }
  }
  field.focus();
  field.select();
  try {
    return document.execCommand('copy');
  } catch {
    return false;
  }
}

export class RoomsPanel {
  /**
   * `els`: toggle, panel, list, status, openForm, openInput, openError, link, copy.
   * `authHeader()` returns the headers for GET /api/rooms (the server password, if any).
   */
  constructor(els, authHeader) {
    this.els = els;
    this.authHeader = authHeader;
    this.current = null;
    this.loading = 0;
    els.toggle.addEventListener('click', () => this.setOpen(els.panel.hidden));
    els.panel.addEventListener('keydown', (event) => {
      if (event.key === 'Escape') {
        this.setOpen(false);
        els.toggle.focus();
      }
    });
    els.openForm.addEventListener('submit', (event) => this.onOpen(event));
    els.openInput.addEventListener('input', () => this.showOpenError(null));
    els.copy.addEventListener('click', () => this.onCopy());
  }

  /** The room this page is in (null until known); sets the share link. */
  setCurrent(name) {
    this.current = name;
    this.els.link.value = name ? roomUrl(name) : '';
    this.els.copy.disabled = !name;
    if (!this.els.panel.hidden) this.refresh();
  }

  setOpen(open) {
    this.els.panel.hidden = !open;
    this.els.toggle.setAttribute('aria-expanded', String(open));
    if (open) this.refresh();
  }

  async refresh() {
    const ticket = ++this.loading;
    this.els.status.textContent = 'Loading rooms…';
    this.els.status.hidden = false;
    let rooms;
    try {
      const response = await fetch('/api/rooms', { headers: this.authHeader() });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      rooms = (await response.json())?.rooms;
      if (!Array.isArray(rooms)) throw new Error('no list');
    } catch {
      if (ticket === this.loading) this.els.status.textContent = 'Could not load the rooms.';
      return;
    }
    if (ticket !== this.loading) return; // a newer refresh is on its way
    this.render(rooms);
  }

  render(rooms) {
    const items = rooms.filter((r) => r && normaliseRoom(r.name) === r.name).map((r) => this.item(r));
    this.els.list.replaceChildren(...items);
    this.els.status.textContent = items.length ? '' : 'No rooms are open yet.';
    this.els.status.hidden = items.length > 0;
  }

  item(room) {
    const li = document.createElement('li');
    li.dataset.testid = 'room-item';
    li.dataset.room = room.name;
    const link = document.createElement('a');
    link.href = roomPath(room.name);
    link.className = 'room-link';
    link.textContent = room.name;
    if (room.name === this.current) {
      link.setAttribute('aria-current', 'page');
      li.classList.add('current');
    }
    const people = document.createElement('span');
    people.className = 'room-people';
    people.dataset.testid = 'room-people';
    people.textContent = peopleLabel(room.people);
    li.append(link, people);
    if (room.busy) {
      const busy = document.createElement('span');
      busy.className = 'room-busy';
      busy.dataset.testid = 'room-busy';
      busy.textContent = 'answering';
      busy.title = 'The assistant is answering in this room';
      li.append(busy);
    }
    return li;
  }

  onOpen(event) {
    event.preventDefault();
    const name = normaliseRoom(this.els.openInput.value);
    if (!name) {
      this.showOpenError(`Room names are ${ROOM_RULE}.`);
      this.els.openInput.focus();
      return;
    }
    location.assign(roomPath(name)); // a full page load joins the other room
  }

  showOpenError(text) {
    this.els.openError.textContent = text ?? '';
    this.els.openError.hidden = !text;
    this.els.openInput.setAttribute('aria-invalid', String(Boolean(text)));
  }

  async onCopy() {
    if (!this.current) return;
    const copied = await copyText(this.els.link.value, this.els.link);
    const button = this.els.copy;
    button.textContent = copied ? 'Copied' : 'Press Ctrl+C';
    clearTimeout(this.copyTimer);
    this.copyTimer = setTimeout(() => (button.textContent = 'Copy'), COPIED_MS);
  }
}
