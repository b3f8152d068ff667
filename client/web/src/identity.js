// The person's nickname and stable user id, remembered in localStorage between visits.

const NAME_KEY = 'roundtable.name';
const ID_KEY = 'roundtable.user_id';
const PASSWORD_KEY = 'roundtable.password';
const ROOM_PASSWORD_KEY = 'roundtable.room_password:'; // + the room's name ('' for the default)

/** Random hex from the CSPRNG (works on plain http too, unlike crypto.randomUUID). */
export function randomHex(bytes = 8) {
  const buf = new Uint8Array(bytes);
  crypto.getRandomValues(buf);
  return Array.from(buf, (b) => b.toString(16).padStart(2, '0')).join('');
}

function read(key) {
  try {
    return localStorage.getItem(key);
  } catch {
    return null; // storage disabled (private mode, policy): just don't remember
  }
}

function write(key, value) {
  try {
    localStorage.setItem(key, value);
  } catch {
    /* see read() */
  }
}

/** The id this browser uses, generated once (matches the server's safe-id rule). */
export function storedUserId() {
  let id = read(ID_KEY);
  if (!id || !/^[A-Za-z0-9_\-.:]{1,64}$/.test(id)) {
    id = `u-${randomHex(12)}`;
    write(ID_KEY, id);
  }
  return id;
}

export function storedName() {
  return read(NAME_KEY) || '';
}

export function rememberName(name) {
  write(NAME_KEY, name);
}

/** The room password lives for this tab's session only (sessionStorage), never longer. */
export function storedPassword() {
  try {
    return sessionStorage.getItem(PASSWORD_KEY) || '';
  } catch {
    return '';
  }
}

export function rememberPassword(password) {
  try {
    sessionStorage.setItem(PASSWORD_KEY, password);
  } catch {
    /* storage disabled: the password is kept in memory for this page only */
  }
}

/** A room's own password (rooms configured with one), per room, for this tab's session only. */
export function storedRoomPassword(room) {
  try {
    return sessionStorage.getItem(ROOM_PASSWORD_KEY + (room ?? '')) || '';
  } catch {
    return '';
  }
}

export function rememberRoomPassword(room, password) {
  try {
    sessionStorage.setItem(ROOM_PASSWORD_KEY + (room ?? ''), password);
  } catch {
    /* storage disabled: kept in memory for this page only */
  }
}

/** A fresh client-chosen message id (the server keeps it, so the history dedupes). */
export function newMessageId() {
  return `c_${randomHex(8)}`;
}
